"""Stage `cache`: decode every image once, into one memory-mapped uint8 array.

    python -m pipeline.stages.cache

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

import pandas as pd

from pipeline.config.params import load_params, resolve_cache_size
from pipeline.config.paths import (
    CACHE_DIR,
    CACHE_IMAGES,
    CACHE_INDEX,
    CACHE_MANIFEST,
    PREPARED_TEST,
    PREPARED_TRAIN,
)
from pipeline.data.images import write_images
from pipeline.data.tables import read_input_table
from pipeline.io.console import parse_stage_args, run
from pipeline.io.files import atomic_path, remove_stale_temps, write_csv, write_json


def images_to_cache() -> pd.DataFrame:
    """The prepared train images, then the test images: columns path and md5, no repeats."""
    tables = [read_input_table(path, ("path", "md5")) for path in (PREPARED_TRAIN, PREPARED_TEST)]
    return pd.concat([t[["path", "md5"]] for t in tables]).drop_duplicates(ignore_index=True)


def main(argv: list[str] | None = None) -> dict:
    parse_stage_args(argv, __doc__, "python3 -m pipeline.stages.cache")
    params = load_params()
    size = resolve_cache_size(params)
    remove_stale_temps(CACHE_DIR)  # what a killed run was writing
    manifest = {"enabled": size is not None, "image_size": size, "images": 0}
    table = None if size is None else images_to_cache()  # checked before anything is written
    with atomic_path(CACHE_DIR) as out:
        out.mkdir()
        if size is not None:
            index = write_images(table, size, out / CACHE_IMAGES.name)
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
