"""The device data path's batch augmentation, on CPU tensors: the colour ops against a plain
per-image reference (torchvision's or albumentations' functional ops), within the tolerance each
test states, the whole policy, and the counter-based random numbers' purity. The geometric ops:
test_batch_geometry.py."""

from __future__ import annotations

import albucore
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from helpers.batches import MEAN, STD, full_sizes, random_images, spec

from pipeline.data.batch_augment import BatchAugment, batch_form_gap, mix32, normalise, uniforms
from pipeline.data.batch_colour import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    brightness_contrast,
)

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
