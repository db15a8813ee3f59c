"""The device data path's batch augmentation, on CPU tensors: each op against a plain per-image
reference (torchvision's or albumentations' functional ops, or pipeline.data.images), within the
tolerance each test states, plus the counter-based random numbers' purity."""

from __future__ import annotations

import albucore
import albumentations as A
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from pipeline.config.model_settings import TransformSpec
from pipeline.data.batch_augment import BatchAugment, batch_form_gap, mix32, normalise, uniforms
from pipeline.data.batch_colour import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    brightness_contrast,
)
from pipeline.data.batch_geometry import sample
from pipeline.data.images import pad_to_square

MEAN = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
EYE = torch.eye(2).expand(1, 2, 2)


def spec(name: str, **kwargs) -> TransformSpec:
    return TransformSpec(name=name, **kwargs)


def random_images(count: int, side: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, side, side, 3), dtype=torch.uint8, generator=generator)


def full_sizes(count: int, side: int) -> torch.Tensor:
    return torch.full((count, 2), side, dtype=torch.int64)


def reference_input(image: np.ndarray) -> torch.Tensor:
    """A (H, W, 3) uint8 image as the model's normalised float input, plainly."""
    return (torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1) / 255 - MEAN) / STD


# -- the random numbers ---------------------------------------------------------------------


def test_the_hash_is_the_same_on_ints_and_tensors():
    values = [0, 1, 12345, 2**31 - 1, 2**32 - 1]
    hashed = mix32(torch.tensor(values, dtype=torch.int64)).tolist()
    assert hashed == [mix32(value) for value in values]
    assert len(set(hashed)) == len(values)


def test_an_images_numbers_depend_only_on_seed_epoch_and_index():
    whole = uniforms(42, 3, torch.arange(100), 8)
    part = uniforms(42, 3, torch.tensor([70, 5, 99]), 8)
    assert torch.equal(part, whole[[70, 5, 99]])  # whatever else is in the batch
    assert not torch.equal(uniforms(42, 4, torch.arange(100), 8), whole)
    assert not torch.equal(uniforms(43, 3, torch.arange(100), 8), whole)
    assert not torch.equal(uniforms(42 + 2**32, 3, torch.arange(100), 8), whole)


def test_the_numbers_are_uniform_and_uncorrelated():
    u = uniforms(0, 1, torch.arange(50_000), 4)
    assert 0 <= u.min() and u.max() < 1
    assert u.mean().item() == pytest.approx(0.5, abs=0.005)
    assert u.std().item() == pytest.approx(12**-0.5, abs=0.005)
    correlation = torch.corrcoef(u.T)
    assert (correlation - torch.eye(4)).abs().max() < 0.02
    counts = torch.bincount((u[:, 0] * 10).long(), minlength=10)
    assert counts.min() > 4_700 and counts.max() < 5_300


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


# -- colour ---------------------------------------------------------------------------------


def float_images(count: int = 4, side: int = 12) -> torch.Tensor:
    return random_images(count, side).permute(0, 3, 1, 2).float() / 255


FACTORS = torch.tensor([0.7, 1.0, 1.25, 1.5])


@pytest.mark.parametrize(
    ("ours", "theirs", "tolerance"),
    [
        (adjust_brightness, TF.adjust_brightness, 1e-6),
        # torchvision's grey weighs red 0.2989, ours (and OpenCV's, albumentations') 0.299
        (adjust_contrast, TF.adjust_contrast, 1e-3),
        (adjust_saturation, TF.adjust_saturation, 1e-3),
    ],
)
def test_colour_factors_match_torchvision_per_image(ours, theirs, tolerance):
    images = float_images()
    out = ours(images, FACTORS)
    for image, factor, result in zip(images, FACTORS, out, strict=True):
        torch.testing.assert_close(result, theirs(image, factor.item()), atol=tolerance, rtol=0)


def test_hue_matches_torchvision_per_image():
    images, shifts = float_images(), torch.tensor([-0.5, -0.02, 0.1, 0.45])
    out = adjust_hue(images, shifts)
    for image, shift, result in zip(images, shifts, out, strict=True):
        torch.testing.assert_close(result, TF.adjust_hue(image, shift.item()), atol=1e-5, rtol=0)


def test_brightness_contrast_matches_albumentations_within_a_uint8_step():
    images = random_images(3, 12)
    u = torch.tensor([[0.0, 0.9, 0.1], [0.0, 0.2, 0.8], [0.0, 0.5, 0.5]])
    args = {"contrast": (-0.2, 0.2), "brightness": (-0.2, 0.2)}
    out = brightness_contrast(images.permute(0, 3, 1, 2).float() / 255, args, u)
    for image, draws, result in zip(images, u, out, strict=True):
        alpha, beta = 1 + (-0.2 + 0.4 * draws[1].item()), -0.2 + 0.4 * draws[2].item()
        expected = albucore.multiply_add(image.numpy(), alpha, beta * 255, inplace=False)
        expected = torch.from_numpy(expected).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(result, expected, atol=1 / 255 + 1e-6, rtol=0)


def test_a_transform_fires_with_its_probability():
    images = random_images(2000, 4)
    flips = BatchAugment([spec("HorizontalFlip", p=0.3)], 4, True, seed=7)
    plain = BatchAugment([], 4, True, seed=7)
    changed = flips(images, full_sizes(2000, 4), torch.arange(2000), 1) != plain(
        images, full_sizes(2000, 4), torch.arange(2000), 1
    )
    assert changed.flatten(1).any(1).float().mean().item() == pytest.approx(0.3, abs=0.03)


# -- the policy -----------------------------------------------------------------------------

POLICY = [
    spec("RandomResizedCrop", scale=[0.6, 1.0]),
    spec("HorizontalFlip", p=0.5),
    spec("VerticalFlip", p=0.5),
    spec("RandomRotate90", p=0.5),
    spec("ColorJitter", brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
]


def test_a_batch_is_a_pure_function_of_seed_epoch_and_indices():
    images, sizes = random_images(16, 24), full_sizes(16, 24)
    augment = BatchAugment(POLICY, 16, True, seed=3)
    first = augment(images, sizes, torch.arange(16), 2)
    assert torch.equal(first, augment(images, sizes, torch.arange(16), 2))
    part = augment(images[4:9], sizes[4:9], torch.arange(4, 9), 2)
    assert torch.equal(part, first[4:9])  # batch composition does not matter
    assert not torch.equal(first, augment(images, sizes, torch.arange(16), 3))
    assert first.shape == (16, 3, 16, 16)


def test_the_output_has_the_models_dtype_and_memory_format():
    augment = BatchAugment(POLICY, 16, True, seed=3)
    out = augment(
        random_images(2, 16),
        full_sizes(2, 16),
        torch.arange(2),
        1,
        torch.bfloat16,
        torch.channels_last,
    )
    assert out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last)
    plain = normalise(torch.full((1, 3, 2, 2), 0.5), torch.float32, torch.contiguous_format)
    torch.testing.assert_close(plain[0, :, 0, 0], ((0.5 - MEAN) / STD).flatten())


def test_the_gap_names_the_transform_without_a_batch_form():
    assert batch_form_gap(POLICY) is None
    assert "GaussNoise has no batch form" in batch_form_gap([*POLICY, spec("GaussNoise")])
    assert "shear" in batch_form_gap([spec("Affine", shear=10)])
    assert "border_mode" in batch_form_gap([spec("Affine", border_mode=4)])
    with pytest.raises(ValueError, match="CLAHE has no batch form"):
        BatchAugment([spec("CLAHE")], 16, True, seed=0)
