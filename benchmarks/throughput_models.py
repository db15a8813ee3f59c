"""throughput.py's model measurements: training and inference images/s of --model fed by each
data path, and its ceiling on one synthetic batch already on the device.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from functools import partial

import torch
from throughput_data import CLASSES, batches, synchronize
from torch import nn

from pipeline.models.registry import create_model
from pipeline.training.device import amp_context, compile_model, use_channels_last


def time_steps(
    model: nn.Module,
    stream: Iterator[tuple[torch.Tensor, ...]],
    args: argparse.Namespace,
    device: torch.device,
    train: bool,
    ours: bool,
) -> float:
    """Images per second of training (SGD steps) or inference on the batches of `stream`.

    Ours runs with the pipeline's settings: autocast (bf16 or fp16 on CUDA) and cuDNN's
    fastest kernels (train.deterministic: false); naive in fp32 with PyTorch's defaults.
    """
    torch.backends.cudnn.benchmark = ours
    autocast, scaler = amp_context(device, ours)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train(train)
    seen, start = 0, 0.0
    for step in range(args.warmup_steps + args.steps):
        if step == args.warmup_steps:
            synchronize(device)
            seen, start = 0, time.perf_counter()
        images, targets = next(stream)
        with torch.set_grad_enabled(train), autocast():
            logits = model(images)
            loss = loss_fn(logits, targets)
        if train:
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # a disabled scaler passes both through
            scaler.step(optimizer)
            scaler.update()
        seen += len(images)
    synchronize(device)
    return seen / (time.perf_counter() - start)


def fresh_model(args: argparse.Namespace, device: torch.device, ours: bool) -> nn.Module:
    """The same initial weights every time; ours in the pipeline's memory format (and compiled)."""
    torch.manual_seed(args.seed)
    model = create_model(args.model, CLASSES).to(device)
    if ours and use_channels_last("auto", device):
        model = model.to(memory_format=torch.channels_last)
    if ours and args.compile:
        compile_model(model, args.batch_size)
    return model


def synthetic(args, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One batch already on the device, forever: the model's ceiling."""
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if use_channels_last("auto", device):
        images = images.contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, CLASSES, (args.batch_size,), device=device)
    while True:
        yield images, targets


def best_of(repeats: int, measures: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Each measure's best images/s over `repeats` interleaved rounds.

    Other jobs on a shared machine only ever slow a round down, so the best round is the
    closest to what the code can do, and interleaving exposes both sides to the same load.
    """
    best = dict.fromkeys(measures, 0.0)
    for _ in range(repeats):
        for name, measure in measures.items():
            best[name] = max(best[name], measure())
            print(f"{name}: {best[name]:.1f} img/s (best so far)", flush=True)
    return best


def measure_models(loaders: dict, args, device: torch.device) -> dict[str, float]:
    """(b) and (c): training and inference images/s for each feed, and on a synthetic batch."""
    results = {}
    for train, kind in ((True, "train"), (False, "infer")):
        ceiling = "ceiling_img_s" if train else "ceiling_infer_img_s"
        feeds = {
            f"{kind}_naive_img_s": (False, batches(loaders["naive", train], device)),
            f"{kind}_ours_img_s": (True, batches(loaders["ours", train], device)),
            ceiling: (True, synthetic(args, device)),
        }
        measures = {
            key: partial(
                time_steps, fresh_model(args, device, ours), stream, args, device, train, ours
            )
            for key, (ours, stream) in feeds.items()
        }
        results.update(best_of(args.repeats, measures))
    return results
