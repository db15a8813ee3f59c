"""The optimiser and its per-step learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.config.model_settings import OptimizerParams, SchedulerParams
from pipeline.models.registry import head_parameters


def create_optimizer(model: nn.Module, params: OptimizerParams) -> torch.optim.Optimizer:
    """Weight decay on weights only: biases and norm scales (1-D tensors) are not decayed.

    With `head_lr` set, the classifier head (see `pipeline.models.registry.head_parameters`)
    trains at that rate, the rest at `lr`; param_groups[0] is always the body's decayed weights.
    """
    head = {id(p) for p in head_parameters(model)} if params.head_lr is not None else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = []
    for lr, in_head in ((params.lr, False), (params.head_lr, True)):
        members = [p for p in trainable if (id(p) in head) == in_head]
        if in_head and not members:
            continue  # no head_lr: the body's groups hold every parameter
        decayed = [p for p in members if p.ndim > 1]
        groups += [
            {"params": decayed, "weight_decay": params.weight_decay, "lr": lr},
            {"params": [p for p in members if p.ndim <= 1], "weight_decay": 0.0, "lr": lr},
        ]
    fast = fast_kwargs(trainable)
    if params.name == "sgd":
        return torch.optim.SGD(
            groups, lr=params.lr, momentum=params.momentum, nesterov=True, **fast
        )
    optimizer_class = torch.optim.AdamW if params.name == "adamw" else torch.optim.Adam
    return optimizer_class(groups, lr=params.lr, **fast)


def fast_kwargs(parameters: list[torch.Tensor]) -> dict[str, bool]:
    """On CUDA, one fused kernel per step (it also spares GradScaler a sync); elsewhere torch's
    defaults, so CPU results stay what they were.
    """
    on_cuda = bool(parameters) and all(p.is_cuda and p.is_floating_point() for p in parameters)
    return {"fused": True} if on_cuda else {}


def annealed(progress: float, floor: float) -> float:
    """Half a cosine from 1 (progress 0) down to `floor` (progress 1)."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def create_scheduler(
    optimizer: torch.optim.Optimizer,
    params: SchedulerParams,
    total_steps: int,
    steps_per_epoch: int,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step lr factor: W warmup steps, then `annealed(t)` over t = (step - W) / (total - W).

    cosine: linear warmup (step + 1) / (W + 1), then cosine down to `min_lr_ratio`. onecycle
    (torch's OneCycleLR): a rising half-cosine from 1 / div_factor to 1, then cosine down to
    1 / (div_factor * final_div_factor). constant: linear warmup, then 1.
    """
    warmup = min(round(params.warmup_epochs * steps_per_epoch), total_steps - 1)
    start = 1 / params.div_factor
    floors = {"cosine": params.min_lr_ratio, "onecycle": start / params.final_div_factor}
    floor = floors.get(params.name, 1.0)

    def factor(step: int) -> float:
        if step < warmup and params.name == "onecycle":
            return annealed(1 - step / warmup, start)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return annealed((step - warmup) / max(1, total_steps - warmup), floor)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
