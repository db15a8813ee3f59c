"""Stage `cache`: decode every image once, into one memory-mapped uint8 array.

    python -m pipeline.cache

Reads the `path` and `md5` columns of data/prepared/train.csv and test.csv, decodes each image
once and fits it to S = `cache.image_size` (long side S, aspect kept; null: the largest model's
image_size) the way training fits images, then writes data/cache/, atomically:
- images.npy: (N, S, S, 3) uint8; image i fills the top-left (height, width) corner of row i,
  the rest is zero;
- index.csv: path, md5, height, width of row i (train images first, then test);
- manifest.json: enabled, image_size, images.
Training and prediction open images.npy with np.load(mmap_mode="r") and crop each row, so no
epoch decodes a JPEG. With `cache.enabled: false` only manifest.json is written and training
decodes the files every epoch. DVC reruns the stage when the images or these params change.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cli import progress, run
from pipeline.config import load_params, resolve_cache_size
from pipeline.data import fit_long_side, load_image, load_table
from pipeline.files import (
    CACHE_DIR,
    CACHE_IMAGES,
    CACHE_INDEX,
    CACHE_MANIFEST,
    PREPARED_TEST,
    PREPARED_TRAIN,
    atomic_path,
    remove_stale_temps,
    write_csv,
    write_json,
)


def images_to_cache() -> pd.DataFrame:
    """The prepared train images, then the test images: columns path and md5, no repeats."""
    tables = [load_table(PREPARED_TRAIN), load_table(PREPARED_TEST)]
    return pd.concat([t[["path", "md5"]] for t in tables]).drop_duplicates(ignore_index=True)


def fit_image(path: str, size: int) -> np.ndarray:
    """An image as training sees it before padding: decoded, its long side fitted to `size`."""
    return fit_long_side(load_image(path, min_side=size), size)


def write_images(table: pd.DataFrame, size: int, path: Path) -> pd.DataFrame:
    """Decode `table`'s images into an (N, size, size, 3) uint8 .npy at `path`.

    Returns:
        `table` with each image's `height` and `width` in the array.
    """
    images = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.uint8, shape=(len(table), size, size, 3)
    )
    shapes = np.zeros((len(table), 2), dtype=np.int64)

    def store(row: int) -> None:
        image = fit_image(table.path.iloc[row], size)
        shapes[row] = image.shape[:2]
        images[row, : image.shape[0], : image.shape[1]] = image

    # PIL and OpenCV release the GIL while decoding and resizing, so threads use every core.
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        done = pool.map(store, range(len(table)))
        for _ in progress(done, total=len(table), desc="cache", unit="img"):
            pass
    images.flush()
    return table.assign(height=shapes[:, 0], width=shapes[:, 1])


def main(argv: list[str] | None = None) -> dict:
    params = load_params()
    size = resolve_cache_size(params)
    remove_stale_temps(CACHE_DIR)  # what a killed run was writing
    manifest = {"enabled": size is not None, "image_size": size, "images": 0}
    with atomic_path(CACHE_DIR) as out:
        out.mkdir()
        if size is not None:
            index = write_images(images_to_cache(), size, out / CACHE_IMAGES.name)
            write_csv(out / CACHE_INDEX.name, index)
            manifest["images"] = len(index)
        write_json(out / CACHE_MANIFEST.name, manifest)
    if size is None:
        print(f"cache: off (cache.enabled is false); training decodes the images -> {CACHE_DIR}")
    else:
        megabytes = manifest["images"] * size * size * 3 / 2**20
        print(
            f"cache: {manifest['images']} images fitted to {size} px, {megabytes:.0f} MiB "
            f"-> {CACHE_IMAGES}"
        )
    return manifest


if __name__ == "__main__":
    run(main)
