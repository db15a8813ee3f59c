"""Samplers: each epoch's order as a pure function of (seed, epoch), and the shares of the
processes under torchrun."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[tuple[int, int]]):
    """A fresh order every epoch, as a pure function of (seed, epoch), yielding (index, epoch).

    Like DistributedSampler, call `set_epoch()` before iterating: the order no longer depends
    on how many epochs the process has run, so a resumed run sees what an uninterrupted one saw.

    Shared among `world_size` processes (under torchrun), the epoch's order is cut into whole
    global batches of `batch_size` and process `rank` yields its contiguous slice of each, so
    the processes' batches together are the ones a single process would train on.
    """

    def __init__(
        self, size: int, seed: int, *, batch_size: int = 1, rank: int = 0, world_size: int = 1
    ):
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} does not split among {world_size} ranks")
        self.size = size
        self.seed = seed
        self.epoch = 0
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.size
        return self.size // self.batch_size * (self.batch_size // self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        if self.world_size > 1:
            order = self.share(order)
        return iter([(index, self.epoch) for index in order])

    def share(self, order: list[int]) -> list[int]:
        """This rank's slice of each whole global batch of `order` (a partial one is dropped)."""
        local = self.batch_size // self.world_size
        starts = range(0, len(order) - self.batch_size + 1, self.batch_size)
        offset = self.rank * local
        return [
            index for start in starts for index in order[start + offset : start + offset + local]
        ]


def shard_range(size: int, rank: int, world_size: int) -> range:
    """Process `rank`'s contiguous share of `size` items; shard lengths differ by one at most."""
    return range(size * rank // world_size, size * (rank + 1) // world_size)
