"""Training one cell on several processes (GPUs, machines) with torch.distributed.

    torchrun --nproc_per_node=4 -m pipeline.stages.train --model d2l_resnet11 --fold 0

torchrun starts the processes and gives each RANK (its place among all of them), WORLD_SIZE
(how many there are) and LOCAL_RANK (its place on its machine). Without those variables every
helper here describes a single process and no process group is made, so `python -m
pipeline.stages.train` runs as it always did.

The processes share each global batch of `batch_size` (see pipeline.data.samplers) and average
their gradients (DistributedDataParallel), so together they take the steps one process would.
Evaluation splits a dataset into contiguous shards, one per process, and `gather_rows` puts
the predictions back together in dataset order.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.io.console import QUIET_ENV, PipelineError
from pipeline.training.device import seed_everything

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched() -> bool:
    """Whether torchrun started this process."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def setup(device: torch.device) -> torch.device:
    """Join torchrun's process group if torchrun started this process; returns its device.

    CUDA processes talk through NCCL, each on GPU `LOCAL_RANK`; CPU processes through gloo.
    Only rank 0 prints and shows progress bars, so the log reads as one process's.

    Args:
        device: `train.device`, resolved.

    Raises:
        PipelineError: the device cannot be shared out among the processes.
    """
    if not launched():
        return device
    device = process_device(device, int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    atexit.register(cleanup)
    if not is_main():
        os.environ[QUIET_ENV] = "1"
        sys.stdout = open(os.devnull, "w")  # for the life of the process
    return device


def process_device(device: torch.device, local_rank: int) -> torch.device:
    """The device of process `local_rank` on its machine: its own GPU, or the CPU."""
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise PipelineError(
            f"train.device resolves to {device.type}, which torchrun cannot share among "
            "processes; set train.device to cuda or cpu"
        )
    if device.index is not None:
        raise PipelineError(
            f"train.device = '{device}' pins one GPU, but under torchrun each process uses "
            "cuda:LOCAL_RANK; set train.device to cuda (or auto)"
        )
    visible = torch.cuda.device_count()
    if local_rank >= visible:
        raise PipelineError(
            f"torchrun started a process with LOCAL_RANK={local_rank}, but this machine has "
            f"{visible} visible GPU(s); set --nproc_per_node to at most {visible}"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def cleanup() -> None:
    """Leave the process group (registered to run at exit by `setup`)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes the outputs: rank 0, or the only process."""
    return rank() == 0


def seed_process(seed: int) -> None:
    """Give each process its own random draws from here on: dropout, drop-path, MixUp's ratio.

    Called once the model is built and wrapped, so every process starts from the same weights.
    Rank r > 0 reseeds with `seed + r`, as timm's train.py seeds each rank; rank 0 keeps its
    stream, so it draws as a single process does. A resume restores each process's own states
    (see pipeline.training.checkpoint).
    """
    if rank() > 0:
        seed_everything(seed + rank())


def barrier() -> None:
    """Wait until every process gets here (no-op in a single process)."""
    if not dist.is_initialized():
        return
    on_gpu = dist.get_backend() == "nccl"
    dist.barrier(device_ids=[torch.cuda.current_device()] if on_gpu else None)


def gather(obj: Any) -> list[Any]:
    """Every process's `obj`, in rank order; `[obj]` in a single process."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj`, on every process; `obj` itself in a single process."""
    if not dist.is_initialized():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_rows(rows: np.ndarray) -> np.ndarray:
    """Every process's `rows` (of any length) stacked in rank order, e.g. a shard's predictions.

    For the shards of `pipeline.data.samplers.shard_range` that is the dataset's order.
    """
    parts = gather(rows)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def sum_across(values: tuple[float, ...]) -> tuple[float, ...]:
    """Each of `values` summed over the processes (e.g. losses and counts of their batches)."""
    return tuple(sum(column) for column in zip(*gather(values), strict=True))


def check_batch_size(
    batch_size: int,
    train_images: int,
    key: str,
    processes: int | None = None,
    mixing: bool = False,
) -> None:
    """Check that a global batch splits evenly among the processes and that the fold holds one.

    Args:
        batch_size: the global batch size.
        train_images: the images of the fold's training split.
        key: the params key of the batch size, for the message.
        processes: how many share the batch; by default the world size.
        mixing: MixUp/CutMix is on: it pairs the rows of each process's share, so each share
            must be even.
    """
    processes = processes or world_size()
    if batch_size % processes:
        raise PipelineError(
            f"{key}.batch_size = {batch_size} does not split evenly among the {processes} "
            f"processes torchrun started; make it a multiple of {processes}"
        )
    if mixing and batch_size // processes % 2:
        raise PipelineError(
            f"{key}.batch_size = {batch_size} gives each of the {processes} processes "
            f"{batch_size // processes} images a batch, and MixUp/CutMix pairs them; make it a "
            f"multiple of {2 * processes}"
        )
    if processes > 1 and train_images < batch_size:
        raise PipelineError(
            f"{key}.batch_size = {batch_size} is more than the {train_images} training images "
            f"of the fold, and {processes} processes train on whole batches only; lower it"
        )


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm statistics over the global batch rather than each process's share.

    timm's converter, not torch's: torch's turns timm's BatchNormAct2d (EfficientNet's, RegNet's)
    into a plain SyncBatchNorm and silently drops its activation. CUDA only: SyncBatchNorm has
    no CPU kernel, so on CPU (gloo) each process normalises with its own share's statistics.
    """
    if not dist.is_initialized() or device.type != "cuda":
        return model
    from timm.layers import convert_sync_batchnorm

    return convert_sync_batchnorm(model)


def share_buffers(device: torch.device, *modules: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) in every process's `modules`.

    Off CUDA, where BatchNorm is not synced, each process's statistics follow its own share of
    the batches; rank 0 saves its own, so the others should validate and predict with them too.
    """
    if not dist.is_initialized() or device.type == "cuda":
        return
    for module in modules:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def wrap(model: nn.Module, device: torch.device) -> DistributedDataParallel | None:
    """`model` in DistributedDataParallel, which averages gradients; None in a single process."""
    if not dist.is_initialized():
        return None
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )
