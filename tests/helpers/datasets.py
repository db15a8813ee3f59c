"""Images and datasets for the cache, loader and engine tests: odd shapes and modes, a
LeafDataset built as training builds it, and random points for the training loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

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


class Points(Dataset):
    """Random 4-d points with 3 classes, indexed by (index, epoch) as EpochSampler yields."""

    def __init__(self, size: int):
        generator = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(size, 4, generator=generator), torch.arange(size) % 3

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, item):
        index = item[0] if isinstance(item, tuple) else item
        return self.x[index], int(self.y[index])
