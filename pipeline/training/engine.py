"""The engine: the Trainer, one optimisation step, one epoch, validation and the epoch loop."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pipeline.config.model_settings import MixupParams, ModelParams, TtaParams
from pipeline.io.console import progress
from pipeline.models.registry import head_parameters
from pipeline.training import distributed
from pipeline.training.device import amp_context
from pipeline.training.optim import create_optimizer, create_scheduler
from pipeline.training.running_metrics import HostCopy, RunningMetrics, checked, look
from pipeline.training.tta import predict_gathered

# timm (and the torchvision it loads) is imported where mixing or EMA is built: both are off in
# params.yaml, and the import costs every training process about 1.7 s on a 2-core box.
if TYPE_CHECKING:
    from timm.data import Mixup
    from timm.utils import ModelEmaV3


@dataclass
class Trainer:
    """The model and everything that updates it; its state_dict is what a resume restores.

    `loss_fn` scores hard labels (validation, and training without mixing); while `mixup` mixes
    the training batches, `train_loss_fn` is cross-entropy against their soft targets. Under
    torchrun `ddp` wraps `model` for training steps (it averages the gradients of the
    processes); `model` itself is what is evaluated, averaged and saved. The weights step once
    every `grad_accum_steps` batches, on their gradients' mean.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler  # disabled but for fp16
    autocast: Callable
    loss_fn: nn.Module
    train_loss_fn: nn.Module
    mixup: Mixup | None
    ema: ModelEmaV3 | None
    grad_clip_norm: float | None
    device: torch.device
    ddp: nn.Module | None = None
    grad_accum_steps: int = 1

    def state_dict(self) -> dict[str, Any]:
        # Mixup has no state of its own: it draws from numpy's global RNG, saved beside this.
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])  # a disabled scaler ignores it
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


def create_mixup(params: MixupParams, label_smoothing: float, num_classes: int) -> Mixup | None:
    """timm's MixUp/CutMix in batch mode, with label smoothing in its soft targets; None if off."""
    if not params.enabled:
        return None
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=params.mixup_alpha,
        cutmix_alpha=params.cutmix_alpha,
        prob=params.prob,
        switch_prob=params.switch_prob,
        mode="batch",
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )


def create_trainer(
    model: nn.Module, hp: ModelParams, steps_per_epoch: int, device: torch.device
) -> Trainer:
    """Optimiser, schedule (per optimiser step), mixed precision, mixing, EMA and losses.

    Args:
        model: the network, moved to `device` (the optimiser and the EMA copy are built on the
            moved weights).
        hp: the cell's merged settings.
        steps_per_epoch: batches in one training epoch.
        device: the training device.
    """
    optimizer = create_optimizer(model, hp.optimizer)
    updates_per_epoch = math.ceil(steps_per_epoch / hp.grad_accum_steps)
    scheduler = create_scheduler(
        optimizer, hp.scheduler, hp.epochs * updates_per_epoch, updates_per_epoch
    )
    autocast, scaler = amp_context(device, hp.amp)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
    num_classes = head_parameters(model)[-1].shape[0]  # the head's last bias or weight: a row each
    mixup = create_mixup(hp.mixup, hp.label_smoothing, num_classes)
    train_loss_fn = loss_fn
    if mixup is not None:  # cross-entropy against the mixed batches' soft targets
        from timm.loss import SoftTargetCrossEntropy

        train_loss_fn = SoftTargetCrossEntropy()
    ema = None
    if hp.ema.enabled:  # made after the model is on its device, as timm does
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=hp.ema.decay, use_warmup=hp.ema.warmup)
    ddp = distributed.wrap(model, device)  # after the EMA copy, as timm does
    return Trainer(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        autocast=autocast,
        loss_fn=loss_fn,
        train_loss_fn=train_loss_fn,
        mixup=mixup,
        ema=ema,
        grad_clip_norm=hp.grad_clip_norm,
        device=device,
        ddp=ddp,
        grad_accum_steps=hp.grad_accum_steps,
    )


def mix_batch(
    mixup: Mixup, images: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch in place; returns it and its soft targets (each row sums to one).

    Batch mode mixes row i with row n-1-i, so it needs an even batch. The schema keeps
    batch_size even; the one odd batch is a training set smaller than it, whose last row
    stays unmixed.
    """
    if len(images) % 2 == 0:
        return mixup(images, targets)
    from timm.data.mixup import mixup_target

    mixed, soft = mixup(images[:-1], targets[:-1])
    last = mixup_target(targets[-1:], mixup.num_classes, smoothing=mixup.label_smoothing)
    return torch.cat([mixed, images[-1:]]), torch.cat([soft, last])


def backward(trainer: Trainer, loss: torch.Tensor) -> None:
    """Add `loss`'s gradients (scaled for fp16) to those already gathered."""
    trainer.scaler.scale(loss).backward()


def optimizer_step(trainer: Trainer) -> None:
    """Step the weights once from the gradients gathered since the last zero_grad, then the lr
    schedule and the EMA; the gradients stay (clipped) until the next zero_grad."""
    optimizer, scaler = trainer.optimizer, trainer.scaler
    if trainer.grad_clip_norm is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
        nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.grad_clip_norm)
    scaler.step(optimizer)
    scaler.update()
    trainer.scheduler.step()
    if trainer.ema is not None:
        trainer.ema.update(trainer.model, step=trainer.scheduler.last_epoch)


def accumulation_group(step: int, steps: int, accum_steps: int) -> range:
    """The batches (numbered from 1, of `steps`) whose gradients add up with batch `step`'s to
    one optimiser step: `accum_steps` of them, the epoch's last group perhaps fewer."""
    first = (step - 1) // accum_steps * accum_steps + 1
    return range(first, min(first + accum_steps, steps + 1))


def gradient_sync(trainer: Trainer, syncs: bool) -> AbstractContextManager:
    """Under torchrun, a batch whose gradients wait for the rest of their group skips DDP's
    all-reduce (`no_sync`); the group's last batch averages them across the processes."""
    return trainer.ddp.no_sync() if trainer.ddp is not None and not syncs else nullcontext()


# Steps between looks at the running metrics by device type (1 elsewhere). On CUDA a look
# starts a copy to the host and shows the previous one if it has arrived, so no step waits for
# the device; elsewhere it reads them at once. A look also checks for a non-finite loss.
SYNC_EVERY = {"cuda": 20}


def train_one_epoch(
    trainer: Trainer, loader: DataLoader, epoch: int, desc: str
) -> dict[str, float]:
    """One pass over the training loader (in this epoch's order); returns its loss and accuracy.

    The weights step after every `grad_accum_steps` batches (`accumulation_group`), on the mean
    of their losses' gradients, as timm's train.py does. With mixing on, a prediction counts as
    correct when it is the label with the largest share of its image's soft target (for CutMix,
    the larger area). Under torchrun both are over the batches of every process. The metrics
    stay on the device between reads (SYNC_EVERY).

    Raises:
        DivergedError: the loss of a step was NaN or infinite.
    """
    model = trainer.ddp if trainer.ddp is not None else trainer.model
    device = trainer.device
    model.train()
    loader.sampler.set_epoch(epoch)
    metrics, sync_every = RunningMetrics(device), SYNC_EVERY.get(device.type, 1)
    copy = HostCopy(device)
    bar = progress(loader, desc=desc, leave=False, unit="batch")
    for step, (images, targets) in enumerate(bar, start=1):
        loss_targets = targets  # the loader has put both on the device
        if trainer.mixup is not None:
            images, loss_targets = mix_batch(trainer.mixup, images, targets)
            targets = loss_targets.argmax(1)
        group = accumulation_group(step, len(loader), trainer.grad_accum_steps)
        if step == group[0]:
            trainer.optimizer.zero_grad(set_to_none=True)
        with gradient_sync(trainer, syncs=step == group[-1]):
            with trainer.autocast():
                logits = model(images)
                loss = trainer.train_loss_fn(logits, loss_targets)
            backward(trainer, loss / len(group) if len(group) > 1 else loss)
        if step == group[-1]:
            optimizer_step(trainer)
        metrics.add(step, loss, logits, targets)
        if step % sync_every == 0:
            look(metrics, copy, bar, epoch, len(loader))
    loss_sum, correct = checked(metrics.read(), epoch, len(loader))  # one wait, per epoch
    loss_sum, correct, seen = distributed.sum_across((loss_sum, correct, metrics.seen))
    return {"loss": loss_sum / seen, "acc": correct / seen}


def evaluate(logits: np.ndarray, targets: np.ndarray, loss_fn: nn.Module) -> dict[str, float]:
    loss = loss_fn(torch.from_numpy(logits), torch.from_numpy(targets)).item()
    return {"loss": loss, "acc": float((logits.argmax(1) == targets).mean())}


def validate(trainer: Trainer, loader: DataLoader, targets: np.ndarray) -> dict[str, float]:
    """Validation loss and accuracy of the weights (`valid/`) and of their EMA (`valid_ema/`)."""
    weights = {"valid": trainer.model}
    if trainer.ema is not None:
        weights["valid_ema"] = trainer.ema.module
    metrics = {}
    for prefix, model in weights.items():
        logits = predict_gathered(model, loader, trainer.autocast, TtaParams(), prefix)
        for name, value in evaluate(logits, targets, trainer.loss_fn).items():
            metrics[f"{prefix}/{name}"] = value
    return metrics


def run_epoch(
    trainer: Trainer, loaders: dict, valid_targets: np.ndarray, epoch: int, epochs: int
) -> dict[str, float]:
    """Train one epoch, then validate; returns the epoch's metrics as DVCLive logs them."""
    train = train_one_epoch(trainer, loaders["train"], epoch, f"epoch {epoch}/{epochs}")
    averaged = [trainer.ema.module] if trainer.ema is not None else []
    distributed.share_buffers(trainer.device, trainer.model, *averaged)
    return {
        **{f"train/{name}": value for name, value in train.items()},
        **validate(trainer, loaders["valid"], valid_targets),
        "lr": trainer.optimizer.param_groups[0]["lr"],
    }
