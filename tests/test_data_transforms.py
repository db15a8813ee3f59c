"""pipeline.data.transforms: transforms built from params (create_transform, build_transforms,
FitSquare), and pipeline.training.tta's views of a batch."""

from __future__ import annotations

import pickle

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from pipeline.config.model_settings import ModelParams, TransformSpec
from pipeline.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FitSquare,
    build_transforms,
    create_transform,
    fit_long_side,
)
from pipeline.training.tta import apply_view

# ----------------------------------------------------------------------------------------------
# create_transform


def spec(name: str, **kwargs) -> TransformSpec:
    """A TransformSpec without running its own validation (which calls create_transform)."""
    return TransformSpec.model_construct(name=name, **kwargs)


@pytest.mark.parametrize("name", ["NoSuchTransform", "Compose", "numpy"])
def test_unknown_transform_name(name):
    with pytest.raises(ValueError, match=repr(name)):
        create_transform(spec(name), image_size=32)


def test_unknown_transform_name_through_params_validation():
    from pipeline.config.checks import CHECKS
    from pipeline.config.params import ParamsError, parse_params

    augment = {"train": [{"name": "NoSuchTransform"}]}
    raw = {"train": {"models": {"d2l_resnet11": {"augment": augment}}}}
    with pytest.raises(ParamsError, match=r"train.models.d2l_resnet11.augment.train.0 = 'NoSuch"):
        parse_params(raw, checks=CHECKS)


def test_unknown_argument_is_named():
    with pytest.raises(ValueError, match="probability") as info:
        create_transform(spec("HorizontalFlip", probability=0.5), image_size=32)
    assert "HorizontalFlip" in str(info.value)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("HorizontalFlip", {"p": 5}),
        ("RandomResizedCrop", {"scale": [1.0, 0.5]}),
        ("RandomResizedCrop", {"scale": "abc"}),
        ("Rotate", {"limit": "abc"}),
    ],
)
def test_bad_argument_value(name, kwargs):
    with pytest.raises(ValueError) as info:
        create_transform(spec(name, **kwargs), image_size=32)
    assert name in str(info.value)
    assert next(iter(kwargs)) in str(info.value)


def test_valid_transform_is_built():
    transform = create_transform(spec("HorizontalFlip", p=0.25), image_size=32)
    assert isinstance(transform, A.HorizontalFlip)
    assert transform.p == 0.25


def test_random_resized_crop_gets_image_size():
    transform = create_transform(spec("RandomResizedCrop", scale=[0.6, 1.0]), image_size=48)
    assert isinstance(transform, A.RandomResizedCrop)
    assert tuple(transform.size) == (48, 48)
    out = transform(image=np.zeros((100, 70, 3), np.uint8))["image"]
    assert out.shape == (48, 48, 3)


def test_explicit_size_is_kept():
    transform = create_transform(spec("RandomResizedCrop", size=[20, 24]), image_size=48)
    assert tuple(transform.size) == (20, 24)


def test_resize_gets_height_and_width():
    transform = create_transform(spec("CenterCrop"), image_size=24)
    out = transform(image=np.zeros((40, 50, 3), np.uint8))["image"]
    assert out.shape == (24, 24, 3)


# ----------------------------------------------------------------------------------------------
# build_transforms


def white_image_with_leaf(height: int = 20, width: int = 50) -> np.ndarray:
    """White background, dark green ellipse away from the border (the silhouette look)."""
    img = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(img).ellipse(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(20, 90, 20)
    )
    return np.array(img)  # writable


def unnormalise(tensor: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return tensor * std + mean


@pytest.mark.parametrize("keep_aspect", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_build_transforms_output(keep_aspect, train):
    params = ModelParams(image_size=32, keep_aspect=keep_aspect)
    transform = build_transforms(params, train=train, seed=0)
    out = transform(image=white_image_with_leaf(20, 50))["image"]
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32
    assert tuple(out.shape) == (3, 32, 32)
    pixels = unnormalise(out)
    centre = pixels[:, 16, 16]
    assert centre[1] < 0.5  # the leaf is in the middle
    assert torch.allclose(pixels[:, 16, 1], torch.ones(3), atol=0.02)  # white at the sides


def test_keep_aspect_pads_by_replicating_the_white_border():
    params = ModelParams(image_size=32, keep_aspect=True)
    out = build_transforms(params, train=False)(image=white_image_with_leaf())["image"]
    pixels = unnormalise(out)
    # 50×20 scales to 32×13: about 9-10 rows of padding above and below the content.
    padding = torch.cat([pixels[:, :8], pixels[:, -8:]], dim=1)
    assert torch.allclose(padding, torch.ones_like(padding), atol=0.02)  # white, not black
    assert pixels[1, 16, 16] < 0.5  # the leaf is still there, undistorted in the middle


def test_keep_aspect_replicates_a_coloured_border():
    params = ModelParams(image_size=32, keep_aspect=True)
    image = np.zeros((20, 50, 3), np.uint8)
    image[:] = (30, 160, 90)
    pixels = unnormalise(build_transforms(params, train=False)(image=image)["image"])
    expected = torch.tensor([30, 160, 90], dtype=torch.float32).view(3, 1, 1) / 255
    assert torch.allclose(pixels, expected.expand_as(pixels), atol=0.02)


def test_stretch_fills_the_square_without_padding():
    params = ModelParams(image_size=32, keep_aspect=False)
    image = np.zeros((20, 50, 3), np.uint8)  # black everywhere: stretching keeps it black
    pixels = unnormalise(build_transforms(params, train=False)(image=image)["image"])
    assert torch.allclose(pixels, torch.zeros_like(pixels), atol=0.02)


def test_build_transforms_uses_the_augment_lists():
    params = ModelParams(
        image_size=32, augment={"train": [{"name": "HorizontalFlip", "p": 1.0}], "eval": []}
    )
    image = white_image_with_leaf()
    image[:, :5] = 0  # a black band on the left
    flipped = unnormalise(build_transforms(params, train=True)(image=image)["image"])
    plain = unnormalise(build_transforms(params, train=False)(image=image)["image"])
    assert torch.allclose(flipped, plain.flip(2), atol=1e-5)


# ----------------------------------------------------------------------------------------------
# FitSquare


def fit_shapes(size: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Odd and even sides, portrait and landscape, smaller and larger than `size`, already
    fitted (long side `size`), square, one pixel thin, and some at random."""
    sides = sorted({1, 2, size // 3, size - 1, size, size + 1, 2 * size + 1, 3 * size} - {0})
    grid = [(height, width) for height in sides for width in sides]
    return grid + [tuple(int(side) for side in rng.integers(1, 4 * size, 2)) for _ in range(30)]


@pytest.mark.parametrize("size", [7, 31, 32, 128])
def test_fit_square_is_bit_identical_to_longest_max_size_then_pad(size):
    longest = A.LongestMaxSize(max_size=size, interpolation=cv2.INTER_AREA)
    pair = A.Compose(
        [longest, A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_REPLICATE)]
    )
    fit = pickle.loads(pickle.dumps(A.Compose([FitSquare(size)])))  # as workers may get it
    rng = np.random.default_rng(size)
    for height, width in fit_shapes(size, rng):
        colour = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        gray = np.repeat(colour[..., :1], 3, axis=2)
        for image in (colour, gray):
            got = fit(image=image)["image"]
            assert got.shape == (size, size, 3), (height, width)
            assert np.array_equal(got, pair(image=image)["image"]), (height, width)
            # What stage cache stores: the same fit, unpadded.
            cached = fit_long_side(image, size)
            assert np.array_equal(cached, longest(image=image)["image"]), (height, width)


def test_build_transforms_fits_with_one_transform():
    transform = build_transforms(ModelParams(image_size=32, keep_aspect=True), train=False)
    assert isinstance(transform.transforms[0], FitSquare)
    assert not any(isinstance(t, A.PadIfNeeded | A.LongestMaxSize) for t in transform.transforms)


# ----------------------------------------------------------------------------------------------
# apply_view


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "views",
    [
        ["hflip", "hflip"],
        ["vflip", "vflip"],
        ["rot90"] * 4,
        ["rot90", "rot270"],
        ["rot180", "rot180"],
        ["transpose", "transpose"],
        ["identity"],
    ],
)
def test_view_sequences_are_identity(batch, views):
    out = batch
    for view in views:
        out = apply_view(out, view)
    assert torch.equal(out, batch)


@pytest.mark.parametrize("view", ["hflip", "vflip", "rot90", "rot180", "rot270", "transpose"])
def test_views_change_the_batch_and_keep_its_shape(batch, view):
    out = apply_view(batch, view)
    assert out.shape == batch.shape
    assert not torch.equal(out, batch)


def test_rot90_twice_is_rot180(batch):
    assert torch.equal(apply_view(apply_view(batch, "rot90"), "rot90"), apply_view(batch, "rot180"))


def test_unknown_view(batch):
    with pytest.raises(ValueError, match="mirror"):
        apply_view(batch, "mirror")
