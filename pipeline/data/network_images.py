"""An image as the networks read it: decoded, cut to the leaf (`crop_to_leaf`), its long side
fitted; and stage cache's writer of its uint8 array of them (read back by images.ImageCache)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.images import fit_long_side, load_image
from pipeline.ensemble.contours import cut_to_leaf
from pipeline.io.console import progress

# A leaf cut from a frame this many times its size keeps the resolution of a whole image.
CROP_DECODE_FACTOR = 4


def load_network_image(path: Path | str, size: int | None, crop_to_leaf: bool) -> np.ndarray:
    """An image as a network reads it before fitting it to `size`: decoded and, with
    `crop_to_leaf`, cut to the leaf's box (contours.leaf_box). A JPEG is decoded at the smallest
    DCT scale that keeps both sides at least `size`, or CROP_DECODE_FACTOR times that when it
    is cropped, so that a leaf filling a part of the frame keeps its resolution."""
    if not crop_to_leaf:
        return load_image(path, min_side=size)
    return cut_to_leaf(load_image(path, min_side=size and CROP_DECODE_FACTOR * size))


def fit_image(path: str, size: int, crop_to_leaf: bool = False) -> np.ndarray:
    """An image as training sees it before padding: read (`load_network_image`), its long side
    fitted to `size`."""
    return fit_long_side(load_network_image(path, size, crop_to_leaf), size)


def write_images(
    table: pd.DataFrame, size: int, path: Path, crop_to_leaf: bool = False
) -> pd.DataFrame:
    """Decode `table`'s images into an (N, size, size, 3) uint8 .npy at `path`, each cut to
    its leaf first with `crop_to_leaf`.

    Returns:
        `table` with each image's `height` and `width` in the array.
    """
    images = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.uint8, shape=(len(table), size, size, 3)
    )
    shapes = np.zeros((len(table), 2), dtype=np.int64)

    def store(row: int) -> None:
        image = fit_image(table.path.iloc[row], size, crop_to_leaf)
        shapes[row] = image.shape[:2]
        images[row, : image.shape[0], : image.shape[1]] = image

    # PIL and OpenCV release the GIL while decoding and resizing, so threads use every core.
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        done = pool.map(store, range(len(table)))
        for _ in progress(done, total=len(table), desc="cache", unit="img"):
            pass
    images.flush()
    return table.assign(height=shapes[:, 0], width=shapes[:, 1])
