"""The training device: its choice, determinism, precision, memory format, compile, workers."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import nn

from pipeline.io.console import PipelineError


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then CPU; an explicit device must exist, and a
    numbered GPU (`cuda:1`) becomes the process's current one."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"train.device = {name!r} but CUDA is not available; use auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise PipelineError(
            "train.device = 'mps' but Apple MPS is not available on this machine; use auto or cpu"
        )
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None:
        if device.index >= torch.cuda.device_count():
            raise PipelineError(
                f"train.device = {name!r} but this machine has {torch.cuda.device_count()} "
                "CUDA device(s), numbered from 0"
            )
        torch.cuda.set_device(device)  # streams, events and pinned memory follow it, not GPU 0
    return device


def resolve_num_workers(
    setting: int | str, device: torch.device, cores: int | None = None
) -> tuple[int, str]:
    """`train.loader.num_workers` for this machine, and why: `auto` counts the CPU cores.

    Under torchrun the cores of the machine are shared among its processes. The worker count
    never changes the data stream (see pipeline.data.loaders), so `auto` is safe for resuming too.

    Args:
        setting: a count, or `auto`.
        device: the training device.
        cores: the machine's CPU cores; by default os.cpu_count().
    """
    if setting != "auto":
        return int(setting), "train.loader.num_workers"
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    cores = max(1, (cores or os.cpu_count() or 1) // processes)
    if device.type == "cuda":
        return min(cores, 16), f"auto: {cores} CPU cores for a CUDA device"
    if cores <= 2:  # workers would only take cores from the training threads
        return 0, f"auto: {cores} CPU cores, all for training on {device.type}"
    return min(4, cores // 2), f"auto: half of {cores} CPU cores, the rest train on {device.type}"


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic kernels everywhere, or let cuDNN benchmark and pick the fastest ones.

    Args:
        deterministic: `train.deterministic` from params.yaml.
        device: the training device; CUDA also needs a fixed cuBLAS workspace.
    """
    if deterministic and device.type == "cuda":
        # cuBLAS reads this when it creates its first handle, i.e. before the first matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic != torch.are_deterministic_algorithms_enabled():
        # the call imports torch._inductor (over a second of each cell's start-up) to set
        # its flag too, which is already off unless it was turned on
        torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype on CUDA: bf16 where the GPU computes in it, else fp16; None: fp32
    (elsewhere). Before Ampere (Kaggle's T4 and P100, V100) bf16 is only emulated: slow, and
    cuDNN has no bf16 convolutions there."""
    if not enabled or device.type != "cuda":
        return None
    return (
        torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    )


def amp_context(device: torch.device, enabled: bool) -> tuple[Callable, torch.amp.GradScaler]:
    """Autocast for CUDA: bf16 where supported, else fp16 with a GradScaler; fp32 elsewhere.

    The scaler is enabled for fp16 only; a disabled one passes the loss and the step through
    unchanged, so callers need no branch for it.
    """
    dtype = amp_dtype(device, enabled)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    if dtype is None:
        return contextlib.nullcontext, scaler
    return partial(torch.autocast, device_type="cuda", dtype=dtype), scaler


def use_channels_last(setting: str | bool, device: torch.device) -> bool:
    """`train.channels_last`: `auto` means on CUDA only (on CPU it is often slower)."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def compile_model(model: nn.Module, eval_batch_size: int, **compile_kwargs) -> None:
    """torch.compile `model`'s forward in place, with one graph per mode and no recompiles.

    Training batches all have one shape (the train loader drops its last partial batch). An
    eval batch smaller than `eval_batch_size` is zero-padded up to it and the padding's outputs
    dropped; in eval mode every sample passes on its own (BatchNorm uses running statistics),
    so the kept outputs are unchanged. The module itself (and its state_dict) is not wrapped.

    Args:
        model: the network, on its device and memory format, with any EMA copy already made.
        eval_batch_size: the batch size of the validation and test loaders.
        **compile_kwargs: passed to torch.compile (e.g. `mode`, or `backend` in tests).
    """
    compiled = torch.compile(model.forward, dynamic=False, **compile_kwargs)

    def forward(images: torch.Tensor) -> torch.Tensor:
        missing = eval_batch_size - len(images)
        if model.training or missing <= 0:
            return compiled(images)
        padded = torch.cat([images, images.new_zeros((missing, *images.shape[1:]))])
        if images.is_contiguous(memory_format=torch.channels_last):
            padded = padded.contiguous(memory_format=torch.channels_last)
        return compiled(padded)[: len(images)]

    model.forward = forward


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
