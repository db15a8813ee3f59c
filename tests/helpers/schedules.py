"""The learning rates a scheduler steps through, for the scheduler tests."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config.model_settings import SchedulerParams
from pipeline.training.optim import create_scheduler


def lrs(params: SchedulerParams, epochs=10, steps=4) -> list[float]:
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = create_scheduler(optimizer, params, epochs * steps, steps)
    seen = []
    for _ in range(epochs * steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen
