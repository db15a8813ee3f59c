"""Datasets and loaders: a data stream that is a pure function of (seed, epoch, image).

The order of each epoch is pipeline.data.samplers'.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.config.model_settings import ModelParams
from pipeline.config.schema import LoaderParams
from pipeline.data.images import ImageCache
from pipeline.data.network_images import load_network_image
from pipeline.data.samplers import EpochSampler, shard_range
from pipeline.data.settings import DataSettings
from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from pipeline.training import distributed


class LeafDataset(Dataset):
    """Images by path with integer targets (-1 where unknown, as for the test set).

    Items are `dataset[index]` or `dataset[(index, epoch)]` (as EpochSampler yields them); the
    augmentation of an item is a function of (seed, epoch, index) only, and plain indices count
    as epoch 0. With a `cache` (holding the same images in the same order) the pixels come from
    it and no file is decoded; without one, each file is read as stage cache reads it
    (`load_network_image`: cut to its leaf with `crop_to_leaf`).
    """

    def __init__(
        self,
        paths: Sequence[str],
        targets: Sequence[int] | None,
        transform: A.Compose,
        decode_side: int | None = None,
        seed: int = 0,
        cache: ImageCache | None = None,
        crop_to_leaf: bool = False,
    ):
        self.paths = list(paths)
        self.targets = list(targets) if targets is not None else [-1] * len(self.paths)
        self.transform = transform
        self.decode_side = decode_side
        self.crop_to_leaf = crop_to_leaf
        self.seed = seed
        if cache is not None and len(cache) != len(self.paths):
            raise ValueError(f"the cache holds {len(cache)} images for {len(self.paths)} paths")
        self.cache = cache

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> np.ndarray:
        """The RGB pixels of item `index`: from the cache if there is one, else its file."""
        if self.cache is not None:
            return self.cache[index]
        return load_network_image(self.paths[index], self.decode_side, self.crop_to_leaf)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        image = self.read(index)
        # Reseeding per item makes its augmentation independent of which worker draws it and of
        # what was drawn before, so the worker count and resuming cannot change the stream. All
        # transforms share one generator: Compose.set_random_seed would give each the same seed,
        # and then HorizontalFlip and VerticalFlip (both p=0.5) always fire together.
        rng = np.random.default_rng([self.seed % 2**64, epoch, index])
        self.transform.set_random_state(rng, random.Random(int(rng.integers(2**63))))
        image = self.transform(image=image)["image"]
        if isinstance(image, np.ndarray):  # not normalised: uint8 (H, W, 3), see DeviceLoader
            image = torch.from_numpy(np.require(image, requirements="CW"))  # may be PIL's
        return image, self.targets[index]


def loader_kwargs(params: LoaderParams, device: torch.device, workers: int) -> dict[str, Any]:
    """`create_loader`'s settings from `train.loader` and the worker count a run decided
    (DataSettings.workers), for batches that go to `device`."""
    return {
        "num_workers": workers,
        "pin_memory": params.pin_memory and device.type == "cuda",
        "persistent_workers": params.persistent_workers,
        "prefetch_factor": params.prefetch_factor,
    }


def create_loader(
    dataset: LeafDataset,
    batch_size: int,
    *,
    train: bool,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = True,
    prefetch_factor: int = 2,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader whose batches depend only on the seed and the epoch, not on the workers.

    Training loaders shuffle through an EpochSampler (call `loader.sampler.set_epoch(epoch)`
    before each epoch) and, when the set holds more than one batch, drop the last partial one,
    so every training batch has one shape (torch.compile then never recompiles); other loaders
    keep the dataset's order.
    `persistent_workers` and `prefetch_factor` apply only with workers.

    Under torchrun, process `rank` of `world_size` gets its share of every global batch of
    `batch_size` (see EpochSampler) or, for other loaders, its contiguous shard of the dataset
    (see shard_range), in batches of `batch_size // world_size`.
    """
    workers = num_workers > 0
    if workers:
        # Workers then hand batches over by shared-memory file name instead of passing a file
        # descriptor through a Unix socket per batch: 13% more batches/s with 2 workers on a
        # 2-core CPU (BENCHMARKS.md). torch's shm manager deletes what a killed run leaves.
        torch.multiprocessing.set_sharing_strategy("file_system")
    if train:
        shares = {"batch_size": batch_size, "rank": rank, "world_size": world_size}
        sampler = EpochSampler(len(dataset), seed, **shares)
    else:
        sampler = shard_range(len(dataset), rank, world_size) if world_size > 1 else None
    return DataLoader(
        dataset,
        batch_size=batch_size // world_size,
        sampler=sampler,
        drop_last=train and len(dataset) > batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and workers,
        prefetch_factor=prefetch_factor if workers else None,
        # Each new iterator draws a base seed from this generator; without one it would draw
        # from the global torch RNG (which dropout uses) and a resume would shift that stream.
        generator=torch.Generator().manual_seed(seed),
    )


class DeviceLoader:
    """A loader of uint8 (N, H, W, 3) image batches that yields them ready for the model.

    Each batch goes to `device` as uint8, a quarter of the bytes of float32: copying batches
    between processes is what limits DataLoader workers, and pinned uint8 batches copy to a GPU
    four times faster. There it becomes (N, 3, H, W) float, normalised with the ImageNet
    statistics (as `build_transforms` would), in the model's memory format. On CUDA the next
    batch is copied on a side stream while the current one computes (from pinned memory, see
    `loader_kwargs`); elsewhere batches are copied as they are needed. Attributes such as
    `sampler`, `dataset` and `batch_size` are the wrapped DataLoader's.
    """

    def __init__(self, loader: DataLoader, device: torch.device, channels_last: bool = False):
        self.loader, self.device = loader, torch.device(device)
        self.copies: torch.cuda.Stream | None = None
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # (x / 255 - mean) / std, as x * scale + shift.
        std = torch.tensor(IMAGENET_STD, device=self.device).view(3, 1, 1)
        self.scale = 1 / (255 * std)
        self.shift = -torch.tensor(IMAGENET_MEAN, device=self.device).view(3, 1, 1) / std

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_images(self) -> int:
        return len(self.loader.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet: avoid recursing
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.device.type == "cuda":
            yield from self.prefetched()
            return
        for images, targets in self.loader:
            yield self.ready(images), targets.to(self.device, non_blocking=True)

    def prefetched(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """CUDA batches, each copied on a side stream while the one before it computes."""
        if self.copies is None:  # one side stream for every pass, made on first use
            self.copies = torch.cuda.Stream(self.device)
        compute, copies = torch.cuda.current_stream(self.device), self.copies

        def copy(batch: tuple[torch.Tensor, torch.Tensor] | None) -> tuple | None:
            if batch is None:
                return None
            with torch.cuda.stream(copies):
                return tuple(tensor.to(self.device, non_blocking=True) for tensor in batch)

        batches = iter(self.loader)
        upcoming = copy(next(batches, None))
        while upcoming is not None:
            compute.wait_stream(copies)  # the batch has arrived before the model reads it
            images, targets = upcoming
            for tensor in upcoming:  # made on `copies`, used on `compute`: keep until it is done
                tensor.record_stream(compute)
            upcoming = copy(next(batches, None))
            yield self.ready(images), targets

    def ready(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W) on the device."""
        images = images.to(self.device, non_blocking=True)
        # Planar before normalising: broadcasting over a last dimension of 3 is slow on CPUs. One
        # pass converts to float and transposes, instead of copying the uint8 planes first.
        planar = images.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        images = planar.mul_(self.scale).add_(self.shift)
        return images.contiguous(memory_format=self.memory_format)


def fold_tables(folds: pd.DataFrame, test: pd.DataFrame, fold: int) -> dict[str, pd.DataFrame]:
    """The `train`, `valid` and `test` tables of a fold: fold `fold` is validation."""
    is_train = folds["fold"] != fold
    return {"train": folds[is_train], "valid": folds[~is_train], "test": test}


def build_loaders(
    hp: ModelParams, tables: dict[str, pd.DataFrame], data: DataSettings
) -> dict[str, DeviceLoader]:
    """Train, validation and test loaders for one fold, reading stage cache's array if it is on.

    Workers send uint8 images; the batches are normalised on `device` (see DeviceLoader).

    Args:
        hp: the cell's merged settings (image_size, batch_size, augmentation).
        tables: the fold's `train`, `valid` (path, md5, target) and `test` (path, md5) tables
            (fold_tables).
        data: the run's device (pinned memory applies on CUDA), seed, loader settings,
            workers, memory format and cache.
    """
    loaders = {}
    for name, table in tables.items():
        train = name == "train"
        dataset = LeafDataset(
            table.path,
            None if name == "test" else table.target,
            build_transforms(hp, train=train, normalize=False),
            hp.image_size,
            seed=data.seed,
            cache=data.cache.select(table) if data.cache else None,
            crop_to_leaf=hp.crop_to_leaf,
        )
        loader = create_loader(
            dataset,
            hp.batch_size if train else 2 * hp.batch_size,
            train=train,
            seed=data.seed,
            **loader_kwargs(data.loader, data.device, data.workers[0]),
            rank=distributed.rank(),  # under torchrun: this process's share (see create_loader)
            world_size=distributed.world_size(),
        )
        loaders[name] = DeviceLoader(loader, data.device, data.channels_last)
    return loaders
