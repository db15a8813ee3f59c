"""pipeline.data: image decoding in every mode, transforms built from params, TTA views, tables."""

from __future__ import annotations

import pickle
import warnings

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from pipeline.config.model_settings import ModelParams, TransformSpec
from pipeline.data.images import ImageReadError, load_image, to_rgb
from pipeline.data.tables import load_table
from pipeline.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FitSquare,
    build_transforms,
    create_transform,
    fit_long_side,
)
from pipeline.training.tta import apply_view

try:
    from helpers import images as imgs
except ImportError:  # tests/ is a package (tests/__init__.py): import through it
    from tests.helpers import images as imgs


def assert_rgb(array: np.ndarray, height: int, width: int) -> None:
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.uint8
    assert array.shape == (height, width, 3)


# ----------------------------------------------------------------------------------------------
# load_image: modes


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_grayscale_becomes_rgb(tmp_path, suffix):
    array = load_image(imgs.write_grayscale(tmp_path / f"g.{suffix}", size=32, value=100))
    assert_rgb(array, 32, 32)
    assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()
    assert abs(int(array[2, 2, 0]) - 100) <= 2  # background
    assert abs(int(array[12, 12, 0]) - 220) <= 3  # the square


def test_rgba_transparent_pixels_become_white(tmp_path):
    array = load_image(imgs.write_rgba(tmp_path / "a.png", size=32, colour=(200, 30, 40)))
    assert_rgb(array, 32, 32)
    assert (array[:, :16] == (200, 30, 40)).all()  # opaque half keeps its colour
    assert (array[:, 16:] == 255).all()  # transparent (black) half is white, not black


def test_palette_with_transparency(tmp_path):
    array = load_image(imgs.write_palette(tmp_path / "p.png", size=32, transparency=True))
    assert_rgb(array, 32, 32)
    assert (array[:16] == 255).all()  # transparent index → white
    assert (array[16:, :16] == (0, 200, 0)).all()
    assert (array[16:, 16:] == (0, 0, 200)).all()


def test_palette_without_transparency(tmp_path):
    array = load_image(imgs.write_palette(tmp_path / "p.png", size=32, transparency=False))
    assert_rgb(array, 32, 32)
    assert (array[:16] == 0).all()  # index 0 is plain black here
    assert (array[16:, :16] == (0, 200, 0)).all()
    assert (array[16:, 16:] == (0, 0, 200)).all()


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = imgs.write_cmyk_jpeg(tmp_path / "c.jpg", size=32, cmyk=(0, 255, 255, 0))
    with Image.open(path) as img:
        assert img.mode == "CMYK"
    array = load_image(path)
    assert_rgb(array, 32, 32)
    red = array.reshape(-1, 3).mean(axis=0)
    assert red[0] > 240 and red[1] < 15 and red[2] < 15


def test_16bit_gradient_is_scaled_not_clipped(tmp_path):
    path = imgs.write_16bit_png(tmp_path / "g16.png", width=64, height=8)
    with Image.open(path) as img:
        assert img.mode.startswith("I")
    array = load_image(path)
    assert_rgb(array, 8, 64)
    row = array[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert (np.diff(row) >= 0).all()  # still a gradient, left to right
    assert len(np.unique(row)) > 50  # not clipped to 255 after the first few pixels
    assert abs(row[32] - 128) <= 3  # the middle stays mid-grey


def test_exif_orientation_is_applied(tmp_path):
    path = imgs.write_exif_rotated_jpeg(tmp_path / "e.jpg", width=40, height=20)
    with Image.open(path) as img:
        assert img.size == (40, 20)  # stored landscape
    array = load_image(path)
    assert_rgb(array, 40, 20)  # displayed portrait: 20 wide, 40 tall
    top, bottom = array[5, 10].astype(int), array[-5, 10].astype(int)
    assert top[0] > 200 and top[2] < 50  # stored left half (red) is on top after 90° CW
    assert bottom[2] > 200 and bottom[0] < 50


def test_exif_orientation_is_applied_with_draft_decoding(tmp_path):
    path = imgs.write_exif_rotated_jpeg(tmp_path / "e.jpg", width=400, height=200)
    array = load_image(path, min_side=50)
    assert array.shape[0] > array.shape[1]  # still portrait
    assert min(array.shape[:2]) >= 50


def test_to_rgb_keeps_rgb_pixels():
    img = imgs.distinct_image(3, size=16)
    assert np.array_equal(np.asarray(to_rgb(img)), np.asarray(img))


@pytest.mark.parametrize("min_side", [32, 100, 200])
def test_min_side_draft_decoding(tmp_path, min_side):
    path = imgs.write_large_jpeg(tmp_path / "big.jpg", width=1024, height=768)
    full = load_image(path)
    assert_rgb(full, 768, 1024)
    small = load_image(path, min_side=min_side)
    assert small.dtype == np.uint8 and small.shape[2] == 3
    height, width = small.shape[:2]
    assert height >= min_side and width >= min_side
    assert height < 768 and width < 1024
    assert abs(width / height - 1024 / 768) < 0.05  # scaled, not cropped


def test_min_side_is_ignored_for_png(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200), (10, 20, 30)).save(path)
    assert_rgb(load_image(path, min_side=32), 200, 300)


# ----------------------------------------------------------------------------------------------
# load_image: refusals


@pytest.mark.parametrize("kind", ["missing", "truncated", "zero_bytes", "text", "directory"])
def test_unreadable_files_raise_image_read_error_naming_the_path(tmp_path, kind):
    path = tmp_path / "leaf.jpg"
    if kind == "truncated":
        imgs.write_truncated_jpeg(path)
    elif kind == "zero_bytes":
        imgs.write_empty(path)
    elif kind == "text":
        imgs.write_text_file(path)
    elif kind == "directory":
        path.mkdir()
    for min_side in (None, 32):
        with pytest.raises(ImageReadError) as info:
            load_image(path, min_side=min_side)
        assert str(path) in str(info.value)
        if kind == "missing":
            assert "not found" in str(info.value)


@pytest.mark.parametrize("size", [(30000, 30000), (7000, 7000)], ids=["error", "warning"])
def test_decompression_bomb_is_refused_before_decoding(tmp_path, size, monkeypatch):
    # 900 Mpx is over twice PIL's own limit (where PIL would raise); 49 Mpx is over it but under
    # twice (where PIL would only warn). Both are refused from the header by data.max_megapixels.
    path = imgs.write_bomb_png(tmp_path / "bomb.png", *size)
    assert path.stat().st_size < 1_000_000
    filters_before = list(warnings.filters)

    def no_decoding(self):
        raise AssertionError("decoded an image over the limit")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(ImageReadError) as info:
        load_image(path, max_megapixels=40)
    assert str(path) in str(info.value)
    assert "40 megapixels (data.max_megapixels" in str(info.value)
    assert warnings.filters == filters_before  # PIL's warning is not turned on or off


def test_the_pixel_limit_is_the_setting(tmp_path):
    path = imgs.write_jpeg(tmp_path / "leaf.jpg", size=100)  # 0.01 megapixels
    assert load_image(path, max_megapixels=0.01).shape == (100, 100, 3)
    with pytest.raises(ImageReadError, match="100x100 pixels is over the limit of 0.0099 mega"):
        load_image(path, max_megapixels=0.0099)


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


# ----------------------------------------------------------------------------------------------
# load_table


def test_load_table_keeps_text_columns_as_text(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        "image,label,target,path,md5\n0123.jpg,1e5,0,data/0123.jpg,1234e5\n7.jpg,NA,1,007,000123\n",
        encoding="utf-8",
    )
    table = load_table(path)
    assert list(table["md5"]) == ["1234e5", "000123"]
    assert list(table["label"]) == ["1e5", "NA"]
    assert list(table["image"]) == ["0123.jpg", "7.jpg"]
    assert list(table["path"]) == ["data/0123.jpg", "007"]
    assert list(table["target"]) == [0, 1]
    assert all(
        isinstance(v, str) for column in ("image", "label", "path", "md5") for v in table[column]
    )
