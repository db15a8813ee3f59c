"""Images and datasets for the cache and loader tests: odd shapes and modes, and a LeafDataset
built as training builds it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.config.model_settings import ModelParams
from pipeline.data.loaders import LeafDataset
from pipeline.data.transforms import build_transforms


def dataset(table: pd.DataFrame, hp: ModelParams, *, train: bool, images=None) -> LeafDataset:
    transform = build_transforms(hp, train=train)
    return LeafDataset(
        table.path,
        None,
        transform,
        hp.image_size,
        seed=3,
        cache=images,
        crop_to_leaf=hp.crop_to_leaf,
    )


def write_odd_images(folder: Path) -> pd.DataFrame:
    """Wide, tall, smaller-than-the-cache, grayscale and RGBA images, as a path/md5 table."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    shapes = {"wide.jpg": (30, 70), "tall.jpg": (90, 40), "small.png": (12, 20)}
    for name, shape in shapes.items():
        pixels = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
    Image.fromarray(rng.integers(0, 256, (50, 45), dtype=np.uint8)).save(folder / "grey.png")
    rgba = rng.integers(0, 256, (40, 60, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(folder / "alpha.png")
    paths = sorted(str(p) for p in folder.iterdir())
    return pd.DataFrame({"path": paths, "md5": [f"m{i}" for i in range(len(paths))]})
