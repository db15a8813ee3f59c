"""Batches of random images, and the normalisation, for the batch augmentation tests
(tests/test_batch_augment.py, tests/test_batch_geometry.py)."""

from __future__ import annotations

import torch

from pipeline.config.model_settings import TransformSpec

MEAN = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)


def spec(name: str, **kwargs) -> TransformSpec:
    return TransformSpec(name=name, **kwargs)


def random_images(count: int, side: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, side, side, 3), dtype=torch.uint8, generator=generator)


def full_sizes(count: int, side: int) -> torch.Tensor:
    return torch.full((count, 2), side, dtype=torch.int64)
