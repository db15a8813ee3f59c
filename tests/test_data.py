"""pipeline.data: image decoding in every mode and its refusals, and tables. Transforms and TTA
views: test_data_transforms.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import images as imgs
from PIL import Image

from pipeline.data.images import ImageReadError, load_image, to_rgb
from pipeline.data.tables import load_table


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
