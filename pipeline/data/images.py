"""Image decoding (any mode to 8-bit RGB), fitting, and stage cache's uint8 array: its reader
(its writer: network_images.write_images).

Image modes: every image is converted to 8-bit RGB as it is read. Grayscale, palette and CMYK
images are converted; 16-bit images are scaled to 8 bits; images with transparency are
composited onto white; EXIF orientation is applied. Nothing is rejected for its mode.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from pipeline.config.paths import CACHE_DIR, CACHE_IMAGES, CACHE_INDEX, CACHE_MANIFEST
from pipeline.data.tables import corrupt, load_input_array, read_input_json, read_input_table
from pipeline.io.console import PipelineError

# Our own limit (data.max_megapixels) replaces PIL's: it is checked on the header before
# decoding, while PIL's only warns below twice its limit, and turning that warning into an error
# is not thread-safe (prepare decodes in threads).
Image.MAX_IMAGE_PIXELS = None

# What `leaf predict` takes from a folder, and where stage prepare looks for a misnamed cell's file.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageReadError(PipelineError):
    """An image file is missing, truncated or not an image."""


def load_image(
    path: Path | str, min_side: int | None = None, max_megapixels: float | None = None
) -> np.ndarray:
    """Read an image as an RGB uint8 array (H, W, 3), whatever its mode.

    Args:
        path: the image file.
        min_side: if given, JPEGs are decoded at the smallest DCT scale that keeps both sides at
            least this long (much faster for large photos); the pixels are not resized further.
        max_megapixels: if given, a bigger image is refused from its header, before decoding
            (a decompression bomb?). Stage prepare and `leaf predict` pass data.max_megapixels;
            the stages after prepare read only images it has checked.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            if max_megapixels is not None and width * height > max_megapixels * 1e6:
                raise ImageReadError(
                    f"{path}: {width}x{height} pixels is over the limit of {max_megapixels:g} "
                    "megapixels (data.max_megapixels in params.yaml; a decompression bomb?)"
                )
            if min_side and img.format == "JPEG":
                img.draft("RGB", (min_side, min_side))
            img.load()
            return np.asarray(to_rgb(img))
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError) as err:
        if _is_empty_file(path):
            raise ImageReadError(f"{path}: cannot read image: empty file (0 bytes)") from None
        raise ImageReadError(f"{path}: cannot read image ({err})") from None


def _is_empty_file(path: Path | str) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB (see the module docstring for the rules)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale the full range to 8 bits instead of clipping.
        array = np.asarray(img, dtype=np.float64)
        top = array.max() or 1.0
        img = Image.fromarray(np.round(array * (255.0 / top)).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("RGB") if img.mode != "RGB" else img


def fit_long_side(image: np.ndarray, size: int) -> np.ndarray:
    """Scale an (H, W, 3) image, aspect kept, so that its long side is `size`.

    Stage cache stores images fitted by this, and FitSquare fits by it, so the two cannot
    drift apart. The sides are rounded as A.LongestMaxSize(interpolation=INTER_AREA) rounds
    them, and an image already that size is returned as it is: the pixels are bit-identical.
    """
    height, width = image.shape[:2]
    scale = size / max(height, width)
    fitted = max(1, round(height * scale)), max(1, round(width * scale))
    if fitted == (height, width):
        return image
    return cv2.resize(image, fitted[::-1], interpolation=cv2.INTER_AREA)


def pad_to_square(image: np.ndarray, size: int, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Centre an image no larger than `size` on a `size` x `size` square, its border replicated
    (or filled as `border`, an OpenCV border type: BORDER_CONSTANT pads with zeros).

    An odd padding puts the extra row below and the extra column on the right, as
    A.PadIfNeeded(position="center") does.
    """
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    top, left = (size - height) // 2, (size - width) // 2
    bottom, right = size - height - top, size - width - left
    return cv2.copyMakeBorder(image, top, bottom, left, right, border)


# Pages read through a mapping count towards the process's resident memory (what getrusage and
# the OOM killer see) until they are unmapped, so an epoch would grow every worker's RSS to the
# whole array; unmapped pages stay in the OS page cache, shared by all. A page fault may map
# every cached page around it within its page table, which spans 2 MiB on x86-64 and arm64.
FAULT_WINDOW_BYTES = 2 * 2**20


class ImageCache:
    """Images that stage `cache` decoded once, read from its memory-mapped uint8 array.

    The array is (N, S, S, 3): image i fills the top-left (height, width) corner of row i, its
    long side S. `cache[k]` is the k-th image this cache holds, cropped to its own size; `select`
    gives the images of a table's rows. Each process maps the array on first use, so DataLoader
    workers map it themselves instead of receiving a pickled copy.
    """

    def __init__(self, path: Path | str, index: pd.DataFrame, size: int | None = None):
        """
        Args:
            path: the .npy array.
            index: the images held, in order: the array `row`, `path`, `md5`, `height`, `width`.
            size: the side S the images were fitted to, as the cache's manifest.json records it.
        """
        self.path = Path(path)
        self.size = size
        self.index = index.reset_index(drop=True)
        self.rows = self.index["row"].to_numpy()
        self.shapes = self.index[["height", "width"]].to_numpy()
        self._array: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        height, width = self.shapes[item]
        image = np.array(self._array[self.rows[item], :height, :width])  # a copy: see below
        self._drop_pages(self.rows[item])
        return image

    def _drop_pages(self, row: int) -> None:
        """Unmap what reading `row` mapped (see FAULT_WINDOW_BYTES); a later read maps it again."""
        mapping = getattr(self._array, "_mmap", None)  # numpy's own mmap object
        if mapping is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        # numpy maps the file from the allocation-granularity boundary below the array's offset.
        start = self._array.offset % mmap.ALLOCATIONGRANULARITY + row * self._array.strides[0]
        first = max(0, start - FAULT_WINDOW_BYTES)
        first -= first % mmap.PAGESIZE
        end = min(len(mapping), start + self._array.strides[0] + FAULT_WINDOW_BYTES)
        mapping.madvise(mmap.MADV_DONTNEED, first, end - first)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def select(self, table: pd.DataFrame) -> ImageCache:
        """The cached images of `table`'s rows (in its order), matched by `path` and `md5`.

        Raises:
            PipelineError: an image is not in the cache, or has changed since it was cached.
        """
        position = {
            key: i for i, key in enumerate(zip(self.index.path, self.index.md5, strict=True))
        }
        keys = list(zip(table["path"], table["md5"], strict=True))
        missing = [path for path, md5 in keys if (path, md5) not in position]
        if missing:
            raise PipelineError(
                f"{len(missing)} image(s) are not in {CACHE_DIR} or changed since it was built "
                f"(first: {missing[0]}); rebuild it: dvc repro cache"
            )
        selected = self.index.iloc[[position[key] for key in keys]]
        return ImageCache(self.path, selected, self.size)


def read_cache_manifest() -> dict[str, Any]:
    """Stage `cache`'s manifest.json: enabled, image_size, images and crop_to_leaf (False in a
    cache built before the key existed).

    Raises:
        PipelineError: the cache was not built, or its manifest is not one stage cache writes.
    """
    if not CACHE_MANIFEST.exists():
        raise PipelineError(
            f"{CACHE_MANIFEST} not found: build the cache (dvc repro cache, or python -m "
            "pipeline.stages.cache) or set cache.enabled: false"
        )
    manifest = read_input_json(CACHE_MANIFEST)
    if not (isinstance(manifest, dict) and {"enabled", "image_size"} <= manifest.keys()):
        raise corrupt(CACHE_MANIFEST, "expected a JSON object with enabled and image_size")
    return {"crop_to_leaf": False, **manifest}


def load_image_cache(wanted: int | None, crop_to_leaf: bool) -> ImageCache | None:
    """Stage `cache`'s images, at the size its manifest.json records; None when `wanted` is None.

    Args:
        wanted: the size the params ask for (pipeline.config.params.resolve_cache_size; None:
            cache.enabled is false); a cache built at another is stale.
        crop_to_leaf: whether the params ask for images cut to the leaf
            (pipeline.config.params.resolve_crop_to_leaf); a cache built otherwise is stale.

    Raises:
        PipelineError: the cache was not built, or was built with other settings.
    """
    if wanted is None:
        return None
    manifest = read_cache_manifest()
    size = manifest["image_size"] if manifest["enabled"] else None
    if size != wanted:
        held = f"{size} px images" if size else "no images (cache.enabled was false)"
        raise PipelineError(
            f"{CACHE_DIR} holds {held} but the params ask for {wanted} px; rebuild it: "
            "dvc repro cache"
        )
    if manifest["crop_to_leaf"] != crop_to_leaf:
        held = "images cut to the leaf" if manifest["crop_to_leaf"] else "whole images"
        raise PipelineError(
            f"{CACHE_DIR} holds {held} but the params ask for crop_to_leaf: "
            f"{str(crop_to_leaf).lower()}; rebuild it: dvc repro cache"
        )
    index = read_input_table(CACHE_INDEX, ("path", "md5", "height", "width"))
    images = load_input_array(CACHE_IMAGES, mmap=True)
    expected = (len(index), size, size, 3)
    if images.shape != expected or images.dtype != np.uint8:
        raise corrupt(
            CACHE_IMAGES,
            f"{images.dtype} array of shape {images.shape}, expected uint8 {expected} for "
            f"{CACHE_INDEX}'s rows",
        )
    del images  # each process maps it again on first use
    return ImageCache(CACHE_IMAGES, index.assign(row=np.arange(len(index))), size)
