"""Stage `cache`: decode every image once, into one memory-mapped uint8 array.

    python -m pipeline.stages.cache

Reads the `path` and `md5` columns of data/prepared/train.csv and test.csv, decodes each image
once, cuts it to its leaf (with the models' `crop_to_leaf`) and fits it to S =
`cache.image_size` (long side S, aspect kept; null: the largest model's image_size) the way
training reads images, then writes data/cache/, atomically:
- images.npy: (N, S, S, 3) uint8; image i fills the top-left (height, width) corner of row i,
  the rest is zero;
- index.csv: path, md5, height, width of row i (train images first, then test);
- manifest.json: enabled, image_size, images, crop_to_leaf;
- orientation.json: whether the training leaves stand upright, from their mean object mask
  (pipeline.data.orientation), which `augment.upright: auto` follows.
Training and prediction open images.npy with np.load(mmap_mode="r") and crop each row, so no
epoch decodes a JPEG. With `cache.enabled: false` only manifest.json and orientation.json are
written, and training decodes the files every epoch. DVC reruns the stage when the images or
these params change.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from pipeline.config.params import load_params, resolve_cache_size, resolve_crop_to_leaf
from pipeline.config.paths import (
    CACHE_DIR,
    CACHE_IMAGES,
    CACHE_INDEX,
    CACHE_MANIFEST,
    CACHE_ORIENTATION,
    PREPARED_TEST,
    PREPARED_TRAIN,
)
from pipeline.data.images import ImageCache
from pipeline.data.network_images import fit_image, write_images
from pipeline.data.orientation import MASK_SIZE, describe_orientation, measure_orientation
from pipeline.data.tables import read_input_table
from pipeline.io.console import parse_stage_args, progress, run
from pipeline.io.files import atomic_path, write_csv, write_json


def images_to_cache(train: pd.DataFrame) -> pd.DataFrame:
    """The prepared train images, then the test images: columns path and md5, no repeats."""
    test = read_input_table(PREPARED_TEST, ("path", "md5"))
    return pd.concat([t[["path", "md5"]] for t in (train, test)]).drop_duplicates(ignore_index=True)


def training_images(
    cache: ImageCache | None, train: pd.DataFrame, crop_to_leaf: bool
) -> Iterator[np.ndarray]:
    """The training images, from the cache just written, else read as the networks read them,
    at the mask's size."""
    if cache is not None:
        cached = cache.select(train)
        return (cached[i] for i in range(len(cached)))
    decoded = (fit_image(path, MASK_SIZE, crop_to_leaf) for path in train.path)
    return progress(decoded, total=len(train), desc="orientation", unit="img")


def main(argv: list[str] | None = None) -> dict:
    parse_stage_args(argv, __doc__, "python3 -m pipeline.stages.cache")
    params = load_params()
    size, crop_to_leaf = resolve_cache_size(params), resolve_crop_to_leaf(params)
    manifest = {
        "enabled": size is not None,
        "image_size": size,
        "images": 0,
        "crop_to_leaf": crop_to_leaf,
    }
    # The tables are checked before anything is written.
    train = read_input_table(PREPARED_TRAIN, ("path", "md5"))
    table = None if size is None else images_to_cache(train)
    with atomic_path(CACHE_DIR) as out:
        out.mkdir()
        cache = None
        if size is not None:
            index = write_images(table, size, out / CACHE_IMAGES.name, crop_to_leaf)
            write_csv(out / CACHE_INDEX.name, index)
            manifest["images"] = len(index)
            cache = ImageCache(out / CACHE_IMAGES.name, index.assign(row=np.arange(len(index))))
        orientation = measure_orientation(training_images(cache, train, crop_to_leaf))
        write_json(out / CACHE_ORIENTATION.name, orientation)
        write_json(out / CACHE_MANIFEST.name, manifest)
    if size is None:
        print(f"cache: off (cache.enabled is false); training decodes the images -> {CACHE_DIR}")
    else:
        megabytes = manifest["images"] * size * size * 3 / 2**20
        cut = ", each cut to its leaf," if crop_to_leaf else ""
        print(
            f"cache: {manifest['images']} images{cut} fitted to {size} px, {megabytes:.0f} MiB "
            f"-> {CACHE_IMAGES}"
        )
    print(f"cache: {describe_orientation(orientation)} -> {CACHE_ORIENTATION}")
    return manifest


if __name__ == "__main__":
    run(main)
