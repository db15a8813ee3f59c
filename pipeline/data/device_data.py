"""The device data path: stage cache's images held on the training device, batches cut there.

On a GPU, DataLoader workers decoding, augmenting and copying each image are the ceiling of
training (about 1,500 images/s with 4 workers for Classify Leaves). Here the uint8 cache (train
and test, 4.1 GB for Classify Leaves at 224 px) is copied to the device once per process; each
batch is gathered from it by index and augmented as a batch (pipeline.data.batch_augment). No
workers, pinned memory or shared memory, and nothing is refilled between epochs or passes.
On a CPU the images are held in memory the same way, and a batch costs less than
albumentations image by image in the training process (BENCHMARKS.md).

The data stream is the workers path's in structure: the same EpochSampler order, a pure function of
(seed, epoch), and each image's augmentation a pure function of (seed, epoch, index).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.config.model_settings import ModelParams
from pipeline.data.batch_augment import BatchAugment, batch_form_gap
from pipeline.data.images import ImageCache
from pipeline.data.loaders import build_loaders
from pipeline.data.samplers import EpochSampler, shard_range
from pipeline.data.settings import DataSettings
from pipeline.io.console import PipelineError
from pipeline.training import distributed
from pipeline.training.device import amp_dtype

UPLOAD_CHUNK = 1024  # images per host-to-device copy while loading the cache


def augment_path(
    setting: str, device: torch.device, hp: ModelParams, cache_on: bool
) -> tuple[str, str]:
    """`train.loader.augment_on` for this cell: `device` or `workers`, and why.

    Raises:
        ValueError: `device` was asked for but this policy or setup has no device form.
    """
    gap = batch_form_gap(hp.augment.train) or batch_form_gap(hp.augment.eval)
    if not cache_on:
        gap = gap or "the device path reads stage cache's images, and cache.enabled is false"
    if setting == "device":
        if gap:
            raise ValueError(f"train.loader.augment_on is device, but {gap}")
        return "device", "train.loader.augment_on: device"
    if setting == "workers":
        return "workers", "train.loader.augment_on: workers"
    if gap:
        return "workers", f"auto: {gap}; DataLoader workers augment instead"
    # On every device alike, so that a params.yaml draws the same data stream on a CPU and a
    # GPU; on a CPU the batches are also cheaper than albumentations image by image.
    return "device", f"auto: the whole policy runs in batches on the {device.type}"


class ResidentImages:
    """Every image of stage cache's array on `device`: (N, S, S, 3) uint8 plus heights, widths.

    Where the models' `image_size` is smaller than the cache's S, the images are shrunk to it
    on the way in (antialiased), so the device holds no more than training reads.
    """

    def __init__(self, cache: ImageCache, device: torch.device, image_size: int):
        """`cache`: load_image_cache's whole cache (its k-th image is array row k)."""
        array = np.load(cache.path, mmap_mode="r")
        slot = array.shape[1]
        factor = min(1.0, image_size / slot)
        side = round(slot * factor)
        self.images = torch.empty((len(cache), side, side, 3), dtype=torch.uint8, device=device)
        for start in range(0, len(cache), UPLOAD_CHUNK):
            rows = cache.rows[start : start + UPLOAD_CHUNK]
            chunk = torch.from_numpy(np.ascontiguousarray(array[rows]))
            self.images[start : start + len(chunk)] = shrink(chunk.to(device), side)
        sizes = np.maximum(1, np.round(cache.shapes * factor)).astype(np.int64)
        self.sizes = torch.from_numpy(sizes).to(device)

    def rows_of(self, selected: ImageCache) -> torch.Tensor:
        """Where the images of `cache.select(table)` are in this array, on the device."""
        return torch.from_numpy(selected.rows.astype(np.int64)).to(self.images.device)


def shrink(images: torch.Tensor, side: int) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, side, side, 3) uint8, antialiased; unchanged when side == S."""
    if images.shape[1] == side:
        return images
    planes = images.permute(0, 3, 1, 2).float()
    small = F.interpolate(planes, size=(side, side), mode="bilinear", antialias=True)
    return small.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


class DeviceBatches:
    """Batches of one table's images, augmented and normalised on the device.

    It stands in for a DeviceLoader: `len()` batches, `sampler.set_epoch()` for training,
    `batch_size`, `num_images`, and iteration yields (images, targets) on the device. Training
    batches follow EpochSampler (under torchrun, this process's share of each global batch)
    and drop a last partial batch; other tables keep their order (this process's shard).
    """

    def __init__(
        self,
        resident: ResidentImages,
        rows: torch.Tensor,
        targets: torch.Tensor,
        augment: BatchAugment,
        batch_size: int,
        *,
        train: bool,
        seed: int,
        dtype: torch.dtype,
        memory_format: torch.memory_format,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.resident, self.rows, self.targets, self.augment = resident, rows, targets, augment
        self.batch_size = batch_size // world_size
        self.train, self.dtype, self.memory_format = train, dtype, memory_format
        self.num_images = len(rows)
        shares = {"batch_size": batch_size, "rank": rank, "world_size": world_size}
        self.sampler = EpochSampler(len(rows), seed, **shares) if train else None
        self.shard = shard_range(len(rows), rank, world_size)

    def order(self) -> tuple[list[int], int]:
        """This pass's dataset indices and the epoch their augmentation is drawn for."""
        if self.sampler is None:
            return list(self.shard), 0
        pairs = list(self.sampler)
        return [index for index, _ in pairs], self.sampler.epoch

    def __len__(self) -> int:
        count = len(self.sampler) if self.sampler is not None else len(self.shard)
        if self.train and self.num_images > self.batch_size:
            return count // self.batch_size  # drop_last, as create_loader does
        return -(-count // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices, epoch = self.order()
        device = self.rows.device
        indices = torch.tensor(indices, dtype=torch.int64).to(device, non_blocking=True)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = indices[start : start + self.batch_size]
            rows = self.rows[batch]
            images = self.resident.images.index_select(0, rows)
            sizes = self.resident.sizes.index_select(0, rows)
            inputs = self.augment(images, sizes, batch, epoch, self.dtype, self.memory_format)
            yield inputs, self.targets[batch]


def build_device_batches(
    hp: ModelParams, tables: dict[str, pd.DataFrame], data: DataSettings
) -> dict[str, DeviceBatches]:
    """Train, validation and test batches for one fold, from the cache held on the device.

    The counterpart of loaders.build_loaders (same arguments, same tables and batch sizes).
    """
    device = data.device
    resident = ResidentImages(data.cache, device, hp.image_size)
    dtype = amp_dtype(device, hp.amp) or torch.float32
    memory_format = torch.channels_last if data.channels_last else torch.contiguous_format
    batches = {}
    for name, table in tables.items():
        train = name == "train"
        specs = hp.augment.train if train else hp.augment.eval
        targets = table.target.to_numpy() if name != "test" else np.full(len(table), -1)
        batches[name] = DeviceBatches(
            resident,
            resident.rows_of(data.cache.select(table)),
            torch.from_numpy(targets.astype(np.int64)).to(device),
            BatchAugment(specs, hp.image_size, hp.keep_aspect, data.seed),
            hp.batch_size if train else 2 * hp.batch_size,
            train=train,
            seed=data.seed,
            dtype=dtype,
            memory_format=memory_format,
            rank=distributed.rank(),
            world_size=distributed.world_size(),
        )
    return batches


def fold_data(
    hp: ModelParams, tables: dict[str, pd.DataFrame], data: DataSettings
) -> tuple[dict, str, str]:
    """One fold's train, validation and test batches by `train.loader.augment_on`.

    Returns:
        The batches, the path taken (`device` or `workers`) and a line saying why.

    Raises:
        PipelineError: `augment_on: device` where the policy or the setup has no device form.
    """
    try:
        path, why = augment_path(data.loader.augment_on, data.device, hp, data.cache is not None)
    except ValueError as err:
        raise PipelineError(f"{err}; set train.loader.augment_on: auto or workers") from None
    if path == "device":
        return build_device_batches(hp, tables, data), path, why
    workers, workers_why = data.workers
    loaders = build_loaders(hp, tables, data)
    return loaders, path, f"{why}; {workers} workers ({workers_why})"
