"""A cell's trainer, built one way for stage train and the pseudo-label round's fine-tuning."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config.model_settings import ModelParams
from pipeline.training import distributed
from pipeline.training.device import compile_model
from pipeline.training.engine import Trainer, create_trainer


def create_cell_trainer(
    model: nn.Module,
    hp: ModelParams,
    loaders: dict,
    device: torch.device,
    channels_last: bool,
    compile: bool,
) -> Trainer:
    """`model` on `device` and in its memory format, synced BatchNorm, its trainer, compiled.

    The order is the project's: model → device → channels_last → sync BatchNorm → trainer (the
    optimiser is built on the moved weights, EMA copied) → compile.

    Args:
        model: the network, built (`create_model`) or loaded (`load_trained`), on any device.
        hp: the cell's settings.
        loaders: the fold's `train` and `valid` batches (steps per epoch, eval batch size).
        device: where it trains.
        channels_last: whether the model runs in channels_last (DataSettings decided it).
        compile: `train.compile`.
    """
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = distributed.sync_batchnorm(model, device)
    trainer = create_trainer(model, hp, len(loaders["train"]), device)
    if compile:  # after create_trainer: its EMA copy must stay uncompiled
        compile_model(model, loaders["valid"].batch_size)
    return trainer
