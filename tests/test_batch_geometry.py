"""The device data path's batch geometry (pipeline.data.batch_geometry through BatchAugment), on
CPU tensors: padding, stretching, flips, quarter turns, crops and Affine, each against a plain
per-image reference (torch, torchvision or albumentations), within the tolerance each test
states."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from helpers.batches import MEAN, STD, full_sizes, random_images, spec

from pipeline.data.batch_augment import BatchAugment
from pipeline.data.batch_geometry import sample
from pipeline.data.images import pad_to_square

EYE = torch.eye(2).expand(1, 2, 2)


def reference_input(image: np.ndarray) -> torch.Tensor:
    """A (H, W, 3) uint8 image as the model's normalised float input, plainly."""
    return (torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1) / 255 - MEAN) / STD


# -- geometry -------------------------------------------------------------------------------


def test_no_transform_is_the_plain_normalised_image():
    images = random_images(3, 32)
    out = BatchAugment([], 32, True, seed=0)(images, full_sizes(3, 32), torch.arange(3), 0)
    for image, result in zip(images, out, strict=True):
        torch.testing.assert_close(result, reference_input(image.numpy()), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("height", "width"), [(20, 32), (32, 11), (31, 32), (32, 32)])
def test_keep_aspect_pads_as_pad_to_square_does(height, width):
    images = random_images(1, 32)
    sizes = torch.tensor([[height, width]])
    out = BatchAugment([], 32, True, seed=0)(images, sizes, torch.arange(1), 0)
    expected = pad_to_square(images[0, :height, :width].numpy(), 32)
    torch.testing.assert_close(out[0], reference_input(expected), atol=1e-5, rtol=0)


def test_stretching_fills_the_square_without_padding():
    images = random_images(1, 32)
    images[0, :16] = 200  # an image 16 rows high whose top half differs from its padding
    out = BatchAugment([], 32, False, seed=0)(images, torch.tensor([[16, 32]]), torch.arange(1), 0)
    expected = TF.resize(images[0, :16].permute(2, 0, 1), [32, 32], antialias=False)
    torch.testing.assert_close(out[0], reference_input(expected.permute(1, 2, 0).numpy()))


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("HorizontalFlip", lambda x: x.flip(-1)),
        ("VerticalFlip", lambda x: x.flip(-2)),
        ("Transpose", lambda x: x.transpose(-1, -2)),
    ],
)
def test_flips_and_transpose_match_tensor_ops_exactly(name, reference):
    images = random_images(4, 16)
    plain = BatchAugment([], 16, True, seed=0)(images, full_sizes(4, 16), torch.arange(4), 0)
    flipped = BatchAugment([spec(name, p=1.0)], 16, True, seed=0)
    out = flipped(images, full_sizes(4, 16), torch.arange(4), 0)
    torch.testing.assert_close(out, reference(plain), atol=1e-5, rtol=0)


def test_rotate90_turns_each_image_by_a_whole_quarter_and_every_quarter_occurs():
    images = random_images(64, 8)
    plain = BatchAugment([], 8, True, seed=0)(images, full_sizes(64, 8), torch.arange(64), 0)
    turned = BatchAugment([spec("RandomRotate90", p=1.0)], 8, True, seed=5)
    out = turned(images, full_sizes(64, 8), torch.arange(64), 1)
    quarters = []
    for before, after in zip(plain, out, strict=True):
        matches = [k for k in range(4) if torch.allclose(torch.rot90(before, k, (1, 2)), after)]
        assert len(matches) == 1
        quarters += matches
    assert set(quarters) == {0, 1, 2, 3}


def test_a_crop_samples_as_torchvision_resized_crop_does_inside_the_crop():
    """A crop of the centre 16 x 16 pixels enlarged to 32: the same bilinear points as
    torchvision's resized_crop; the outermost output pixels differ (torchvision clamps to the
    crop's edge, the batch form reads the pixels just outside it), so they are left out."""
    images = random_images(1, 32)
    out = sample(images, full_sizes(1, 32), EYE * 0.5, torch.zeros(1, 2), 32, True)
    expected = TF.resized_crop(images[0].permute(2, 0, 1).float(), 8, 8, 16, 16, [32, 32])
    torch.testing.assert_close(
        out[0, :, 1:-1, 1:-1], expected[:, 1:-1, 1:-1] / 255, atol=1e-4, rtol=0
    )


def test_random_resized_crop_keeps_area_and_ratio_within_their_ranges():
    """A linear ramp stays linear through bilinear sampling, so each output's slope is the
    crop's side (as a share of the image's): its square is the area, their quotient the ratio."""
    side = 64
    ramp = torch.arange(side, dtype=torch.float32).repeat(side, 1)
    images = torch.stack([ramp, ramp.T, torch.zeros_like(ramp)], -1).to(torch.uint8)
    images = images.expand(200, side, side, 3).contiguous()
    crop = BatchAugment(
        [spec("RandomResizedCrop", scale=[0.3, 0.9], ratio=[0.5, 2.0])], 32, True, 1
    )
    out = crop(images, full_sizes(200, side), torch.arange(200), 0) * STD + MEAN
    width = (out[:, 0, 5, -3] - out[:, 0, 5, 2]) * 255 / (27 / 32 * side)
    height = (out[:, 1, -3, 5] - out[:, 1, 2, 5]) * 255 / (27 / 32 * side)
    area, ratio = width * height, width / height
    assert area.min() > 0.3 - 0.01 and area.max() < 0.9 + 0.01
    assert ratio.min() > 0.5 - 0.02 and ratio.max() < 2.0 + 0.05
    assert width.max() <= 1.0 + 1e-3 and height.max() <= 1.0 + 1e-3


def bar_image() -> torch.Tensor:
    """A 48 px image of an L-shaped white bar on black: turns, scales and shifts show."""
    image = torch.zeros(1, 48, 48, 3, dtype=torch.uint8)
    image[0, 12:36, 20:28] = 255
    image[0, 12:16, 20:40] = 255
    return image


def albumentations_affine(image: torch.Tensor, **kwargs) -> torch.Tensor:
    transform = A.Affine(p=1.0, **kwargs)
    transform.set_random_seed(0)
    result = transform(image=image[0].numpy())["image"]
    return torch.from_numpy(result).permute(2, 0, 1).float() / 255


@pytest.mark.parametrize(
    "kwargs",
    [{"rotate": (30, 30)}, {"scale": (1.3, 1.3)}, {"rotate": (-20, -20), "scale": (0.8, 0.8)}],
)
def test_affine_turns_and_scales_as_albumentations_does(kwargs):
    """The same turn (direction included) and scale, filled with 0 outside: within a uint8
    step at any pixel (both bilinear, rounded differently)."""
    image = bar_image()
    affine = BatchAugment([spec("Affine", p=1.0, **kwargs)], 48, True, seed=0)
    out = affine(image, full_sizes(1, 48), torch.arange(1), 0)[0] * STD + MEAN
    expected = albumentations_affine(image, **kwargs)
    assert (out - expected).abs().max() < 2 / 255
    assert (out - expected).abs().mean() < 1e-3


def test_affine_shifts_as_albumentations_does_to_the_pixel():
    """albumentations rounds a shift to whole pixels (0.1 x 48 = 4.8 -> 4); the batch form
    shifts by 4.8: the bar's edges agree within a pixel, in the same direction."""
    image = bar_image()
    affine = BatchAugment([spec("Affine", p=1.0, translate_percent=(0.1, 0.1))], 48, True, 0)
    out = affine(image, full_sizes(1, 48), torch.arange(1), 0)[0] * STD + MEAN
    expected = albumentations_affine(image, translate_percent=(0.1, 0.1))
    for result in (out, expected):
        rows = (result[0] > 0.5).any(1).nonzero().flatten()
        cols = (result[0] > 0.5).any(0).nonzero().flatten()
        assert abs(rows.min() - 16) <= 1 and abs(cols.min() - 24) <= 1  # moved by +4.8 / +4
