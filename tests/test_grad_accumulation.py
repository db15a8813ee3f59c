"""Gradient accumulation (`grad_accum_steps`): which batches add up to a step, and that they
train what one batch of them would, the schedule counting optimiser steps."""

from __future__ import annotations

import pytest
import torch
from helpers.datasets import Points
from torch import nn

from pipeline.config.model_settings import ModelParams
from pipeline.data.loaders import create_loader
from pipeline.training.engine import (
    Trainer,
    accumulation_group,
    create_trainer,
    train_one_epoch,
)

CPU = torch.device("cpu")


def test_an_epoch_groups_its_batches_for_accumulation():
    groups = [accumulation_group(step, 5, 2) for step in range(1, 6)]
    assert groups == [range(1, 3), range(1, 3), range(3, 5), range(3, 5), range(5, 6)]
    assert [accumulation_group(step, 5, 1) for step in (1, 5)] == [range(1, 2), range(5, 6)]


def accumulating_trainer(batch_size: int, grad_accum_steps: int, loader) -> Trainer:
    torch.manual_seed(0)
    hp = ModelParams(
        amp=False,
        epochs=2,
        batch_size=batch_size,
        grad_accum_steps=grad_accum_steps,
        optimizer={"name": "sgd", "lr": 0.5, "weight_decay": 0.0},
        scheduler={"name": "cosine", "warmup_epochs": 0.5, "min_lr_ratio": 0.1},
    )
    return create_trainer(nn.Linear(4, 3), hp, len(loader), CPU)


@pytest.mark.parametrize(("batch_size", "grad_accum_steps"), [(4, 2), (2, 4)])
def test_accumulated_batches_train_what_one_batch_of_them_trains(batch_size, grad_accum_steps):
    # 16 points in the same order (EpochSampler's order does not depend on the batch size):
    # two batches of 8 an epoch, or as many steps from batches of 4 or 2 added up
    trained = []
    for size, accum in ((8, 1), (batch_size, grad_accum_steps)):
        loader = create_loader(Points(16), size, train=True, seed=0)
        trainer = accumulating_trainer(size, accum, loader)
        for epoch in (1, 2):
            train_one_epoch(trainer, loader, epoch, "test")
        trained.append(trainer)
    whole, accumulated = trained
    assert accumulated.scheduler.last_epoch == whole.scheduler.last_epoch == 4
    for name, weight in whole.model.state_dict().items():
        torch.testing.assert_close(accumulated.model.state_dict()[name], weight)


def test_a_short_last_group_still_steps_and_the_schedule_ends_on_time():
    loader = create_loader(Points(20), 4, train=True, seed=0)  # 5 batches: 2 + 2 + 1
    trainer = accumulating_trainer(4, 2, loader)
    train_one_epoch(trainer, loader, 1, "test")
    assert trainer.scheduler.last_epoch == 3
    train_one_epoch(trainer, loader, 2, "test")
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * 0.1)  # cosine's floor
