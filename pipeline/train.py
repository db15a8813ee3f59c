"""Stage `train`: train one model on one fold, keep its best epoch, predict OOF and test logits.

    python -m pipeline.train --model d2l_resnet11 --fold 0
    torchrun --nproc_per_node=4 -m pipeline.train --model d2l_resnet11 --fold 0   # on 4 GPUs

dvc.yaml runs this once per (model, fold) cell of the `train` matrix. The command line carries
only those coordinates; every hyperparameter is `train.defaults` merged with
`train.models.<model>` from params.yaml. Writes, each atomically:
- models/<model>/fold<k>/: best.pt (weights, params, classes), oof.npz (row, logits),
  test_logits.npy
- results/train/<model>/fold<k>/: DVCLive per-epoch metrics (train/valid loss and accuracy, lr;
  valid_ema/ for the EMA weights) and a summary naming the best epoch and its `best_weights`
- checkpoints/<model>/fold<k>/last.pt: everything needed to continue after the last finished
  epoch, rewritten every epoch. A run stopped at any moment (Ctrl-C, SIGKILL, a crash) resumes
  from it on the next run if it was made with the same settings and data; once the outputs are
  written it shrinks to a marker of the finished run, and the next run starts over.

With `train.deterministic: true` a resumed run is bit-identical to an uninterrupted one on CPU:
data order and augmentation are pure functions of (seed, epoch, sample), see pipeline.data.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import pickle
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from dvclive import Live
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader

from pipeline import distributed
from pipeline.cli import PipelineError, progress, run
from pipeline.config import (
    MixupParams,
    ModelParams,
    OptimizerParams,
    Params,
    SchedulerParams,
    TtaParams,
    load_params,
    resolve_cache_size,
)
from pipeline.data import (
    DeviceLoader,
    LeafDataset,
    apply_view,
    average_views,
    build_transforms,
    create_loader,
    load_image_cache,
    load_table,
    loader_kwargs,
)
from pipeline.files import (
    CHECKPOINT_NAME,
    CLASSES_FILE,
    FOLDS_FILE,
    OOF_NAME,
    PREPARED_TEST,
    TEST_LOGITS_NAME,
    atomic_path,
    file_md5,
    fold_dir,
    fold_results_dir,
    last_checkpoint_path,
    read_json,
    remove_stale_temps,
    seed_everything,
)
from pipeline.models import create_model, head_parameters


class DivergedError(Exception):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, steps: int, loss: float):
        super().__init__(f"loss {loss} at epoch {epoch}, step {step}/{steps}")
        self.epoch, self.step, self.steps, self.loss = epoch, step, steps, loss


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train one (model, fold) cell of the matrix.")
    parser.add_argument("--model", required=True, help="a key of train.models in params.yaml")
    parser.add_argument("--fold", required=True, type=int, help="the validation fold")
    return parser.parse_args(argv)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"train.device = {name!r} but CUDA is not available; use auto or cpu")
    return torch.device(name)


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic kernels everywhere, or let cuDNN benchmark and pick the fastest ones.

    Args:
        deterministic: `train.deterministic` from params.yaml.
        device: the training device; CUDA also needs a fixed cuBLAS workspace.
    """
    if deterministic and device.type == "cuda":
        # cuBLAS reads this when it creates its first handle, i.e. before the first matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def amp_context(
    device: torch.device, enabled: bool
) -> tuple[Callable, torch.amp.GradScaler | None]:
    """Autocast for CUDA: bf16 where supported, else fp16 with a GradScaler; fp32 elsewhere."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return partial(torch.autocast, device_type="cuda", dtype=dtype), scaler


def create_optimizer(model: nn.Module, params: OptimizerParams) -> torch.optim.Optimizer:
    """Weight decay on weights only: biases and norm scales (1-D tensors) are not decayed.

    With `head_lr` set, the classifier head (see `models.head_parameters`) trains at that rate,
    the rest at `lr`; param_groups[0] is always the body's decayed weights.
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
    if params.name == "sgd":
        return torch.optim.SGD(groups, lr=params.lr, momentum=params.momentum, nesterov=True)
    optimizer_class = torch.optim.AdamW if params.name == "adamw" else torch.optim.Adam
    return optimizer_class(groups, lr=params.lr)


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


@dataclass
class Trainer:
    """The model and everything that updates it; its state_dict is what a resume restores.

    `loss_fn` scores hard labels (validation, and training without mixing); while `mixup` mixes
    the training batches, `train_loss_fn` is cross-entropy against their soft targets. Under
    torchrun `ddp` wraps `model` for training steps (it averages the gradients of the
    processes); `model` itself is what is evaluated, averaged and saved.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    autocast: Callable
    loss_fn: nn.Module
    train_loss_fn: nn.Module
    mixup: Mixup | None
    ema: ModelEmaV3 | None
    grad_clip_norm: float | None
    device: torch.device
    ddp: nn.Module | None = None

    def state_dict(self) -> dict[str, Any]:
        # Mixup has no state of its own: it draws from numpy's global RNG, saved beside this.
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


def create_mixup(params: MixupParams, label_smoothing: float, num_classes: int) -> Mixup | None:
    """timm's MixUp/CutMix in batch mode, with label smoothing in its soft targets; None if off."""
    if not params.enabled:
        return None
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
    """Optimiser, per-step schedule, mixed precision, mixing, EMA and losses for `model`.

    Args:
        model: the network, moved to `device` (the optimiser and the EMA copy are built on the
            moved weights).
        hp: the cell's merged settings.
        steps_per_epoch: batches in one training epoch.
        device: the training device.
    """
    optimizer = create_optimizer(model, hp.optimizer)
    scheduler = create_scheduler(
        optimizer, hp.scheduler, hp.epochs * steps_per_epoch, steps_per_epoch
    )
    autocast, scaler = amp_context(device, hp.amp)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
    num_classes = head_parameters(model)[-1].shape[0]  # the head's last bias or weight: a row each
    mixup = create_mixup(hp.mixup, hp.label_smoothing, num_classes)
    ema = None
    if hp.ema.enabled:  # made after the model is on its device, as timm does
        ema = ModelEmaV3(model, decay=hp.ema.decay, use_warmup=hp.ema.warmup)
    ddp = distributed.wrap(model, device)  # after the EMA copy, as timm does
    return Trainer(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        autocast=autocast,
        loss_fn=loss_fn,
        train_loss_fn=SoftTargetCrossEntropy() if mixup is not None else loss_fn,
        mixup=mixup,
        ema=ema,
        grad_clip_norm=hp.grad_clip_norm,
        device=device,
        ddp=ddp,
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
    mixed, soft = mixup(images[:-1], targets[:-1])
    last = mixup_target(targets[-1:], mixup.num_classes, smoothing=mixup.label_smoothing)
    return torch.cat([mixed, images[-1:]]), torch.cat([soft, last])


def optimizer_step(trainer: Trainer, loss: torch.Tensor) -> None:
    """Backpropagate `loss`, then step the weights, the lr schedule and the EMA once."""
    optimizer, scaler = trainer.optimizer, trainer.scaler
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if trainer.grad_clip_norm is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
        nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.grad_clip_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    trainer.scheduler.step()
    if trainer.ema is not None:
        trainer.ema.update(trainer.model, step=trainer.scheduler.last_epoch)


def train_one_epoch(
    trainer: Trainer, loader: DataLoader, epoch: int, desc: str
) -> dict[str, float]:
    """One pass over the training loader (in this epoch's order); returns its loss and accuracy.

    With mixing on, a prediction counts as correct when it is the label with the largest share
    of its image's soft target (for CutMix, the larger area). Under torchrun both are over the
    batches of every process.

    Raises:
        DivergedError: the loss of a step was NaN or infinite.
    """
    model = trainer.ddp if trainer.ddp is not None else trainer.model
    device = trainer.device
    model.train()
    loader.sampler.set_epoch(epoch)
    total_loss, correct, seen = 0.0, 0, 0
    bar = progress(loader, desc=desc, leave=False, unit="batch")
    for step, (images, targets) in enumerate(bar, start=1):
        images = images.to(device, non_blocking=True)
        targets = loss_targets = targets.to(device, non_blocking=True)
        if trainer.mixup is not None:
            images, loss_targets = mix_batch(trainer.mixup, images, targets)
            targets = loss_targets.argmax(1)
        with trainer.autocast():
            logits = model(images)
            loss = trainer.train_loss_fn(logits, loss_targets)
        optimizer_step(trainer, loss)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise DivergedError(epoch, step, len(loader), loss_value)
        total_loss += loss_value * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    total_loss, correct, seen = distributed.sum_across((total_loss, correct, seen))
    return {"loss": total_loss / seen, "acc": correct / seen}


@torch.no_grad()
def predict(
    model, loader, autocast, device: torch.device, tta: TtaParams, desc: str = "predict"
) -> np.ndarray:
    """Logits for every image in loader order, averaged over `tta.views` in `tta.average`'s
    space (so log-probabilities when that is `probs`)."""
    model.eval()
    outputs = []
    for images, _ in progress(loader, desc=desc, leave=False, unit="batch"):
        images = images.to(device, non_blocking=True)  # in the model's memory format already
        with autocast():
            views = torch.stack([model(apply_view(images, v)).float() for v in tta.views])
        outputs.append(average_views(views, tta.average).cpu())
    return torch.cat(outputs).numpy()


def predict_gathered(
    model: nn.Module, loader: DataLoader, trainer: Trainer, tta: TtaParams, desc: str
) -> np.ndarray:
    """`predict`, on this process's shard of the loader's images under torchrun; every process
    gets the logits of all of them, in dataset order."""
    logits = predict(model, loader, trainer.autocast, trainer.device, tta, desc)
    return distributed.gather_rows(logits)


def evaluate(logits: np.ndarray, targets: np.ndarray, loss_fn: nn.Module) -> dict[str, float]:
    loss = loss_fn(torch.from_numpy(logits), torch.from_numpy(targets)).item()
    return {"loss": loss, "acc": float((logits.argmax(1) == targets).mean())}


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


def build_loaders(
    params: Params,
    model_params: ModelParams,
    folds: pd.DataFrame,
    test: pd.DataFrame,
    fold: int,
    device: torch.device,
) -> dict[str, DeviceLoader]:
    """Train, validation and test loaders for one fold, reading stage cache's array if it is on.

    Workers send uint8 images; the batches are normalised on `device` (see DeviceLoader).

    Args:
        params: the whole validated params.yaml (seed, train.loader, cache).
        model_params: the cell's merged settings (image_size, batch_size, augmentation).
        folds: folds.csv's table (path, md5, target, fold); fold `fold` is validation.
        test: the test table (path, md5).
        fold: the validation fold.
        device: where the batches go (pinned memory and channels_last apply on CUDA).
    """
    seed, batch = params.base.seed, model_params.batch_size
    cache = load_image_cache(resolve_cache_size(params))
    channels_last = use_channels_last(params.train.channels_last, device)
    is_train = folds["fold"] != fold
    tables = {"train": folds[is_train], "valid": folds[~is_train], "test": test}
    loaders = {}
    for name, table in tables.items():
        train = name == "train"
        dataset = LeafDataset(
            table.path,
            None if name == "test" else table.target,
            build_transforms(model_params, train=train, normalize=False),
            model_params.image_size,
            seed=seed,
            cache=cache.select(table) if cache else None,
        )
        loader = create_loader(
            dataset,
            batch if train else 2 * batch,
            train=train,
            seed=seed,
            **loader_kwargs(params.train.loader, device),
            rank=distributed.rank(),  # under torchrun: this process's share (see create_loader)
            world_size=distributed.world_size(),
        )
        loaders[name] = DeviceLoader(loader, device, channels_last)
    return loaders


def check_cell(params: Params, model: str, fold: int) -> ModelParams:
    """The merged settings of one matrix cell, after checking the cell exists."""
    if model not in params.train.models:
        raise PipelineError(
            f"--model {model!r} is not a key of train.models ({', '.join(params.train.models)})"
        )
    if not 0 <= fold < params.split.n_splits:
        raise PipelineError(f"--fold {fold}: allowed 0..{params.split.n_splits - 1}")
    return params.train.for_model(model)


def run_fingerprint(
    params: Params, hp: ModelParams, model: str, fold: int, device: torch.device
) -> dict[str, Any]:
    """What one cell's training depends on: a checkpoint is resumed only if all of it matches.

    `train.loader` is left out: the data stream does not depend on it (see pipeline.data).

    Args:
        params: the whole validated params.yaml.
        hp: the cell's merged settings.
        model: the cell's key of train.models.
        fold: the cell's validation fold.
        device: the resolved training device.
    """
    return {
        "model": model,
        "fold": fold,
        "seed": params.base.seed,
        "model_params": hp.model_dump(mode="json"),
        "device": device.type,
        "world_size": distributed.world_size(),  # the steps match, the float rounding does not
        "deterministic": params.train.deterministic,
        "cache_size": resolve_cache_size(params),  # cached pixels differ from decoded ones
        "folds_md5": file_md5(FOLDS_FILE),
        "test_md5": file_md5(PREPARED_TEST),
    }


def rng_states(device: torch.device) -> dict[str, Any]:
    """The global RNG states a resumed run must continue from (dropout draws from torch's).

    Of the GPUs only the training device's: under torchrun every process restores rank 0's
    states, which equal its own, and its GPU is not rank 0's.
    """
    return {
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(device)] if device.type == "cuda" else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state(states["cuda"][0], device)
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write a checkpoint atomically: a kill mid-write leaves the previous one in place."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_resumable(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at `path` if training can continue from it, else None (saying why).

    Args:
        path: the cell's last.pt.
        fingerprint: this run's `run_fingerprint`; the checkpoint's must be equal.
    """
    if not path.is_file():
        return None
    try:
        # Our own file; it holds numpy and python RNG states, which weights_only refuses.
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        print(f"{path}: unreadable ({err}); training from scratch")
        return None
    saved = checkpoint.get("fingerprint", {})
    changed = [key for key, value in fingerprint.items() if saved.get(key) != value]
    if changed:
        print(f"{path} is from a run with other {', '.join(changed)}; training from scratch")
        return None
    if checkpoint.get("complete"):
        print(f"{path} is from a finished run; training from scratch")
        return None
    return checkpoint


def log_epoch(live: Live, metrics: dict[str, float]) -> None:
    for name, value in metrics.items():
        live.log_metric(name, value)
    live.next_step()


def resume(
    trainer: Trainer, live: Live, checkpoint_path: Path, fingerprint: dict[str, Any], epochs: int
) -> tuple[int, dict, list[dict[str, float]]]:
    """Restore the training state from `checkpoint_path` if it matches and is unfinished.

    Restores the model, optimiser, scheduler, scaler, EMA and RNG states, and replays the
    finished epochs' metrics into `live` (DVCLive starts a fresh folder). Under torchrun rank 0
    reads the checkpoint it wrote and sends it to the others, which need no shared disk.

    Returns:
        The number of finished epochs, the best epoch so far and the metric history; 0, no best
        and no history when training starts from scratch.
    """
    checkpoint = load_resumable(checkpoint_path, fingerprint) if distributed.is_main() else None
    checkpoint = distributed.broadcast(checkpoint)
    if checkpoint is None:
        return 0, {"acc": -1.0, "loss": math.inf, "epoch": 0, "weights": None, "state": None}, []
    trainer.load_state_dict(checkpoint["trainer"])
    set_rng_states(checkpoint["rng"], trainer.device)
    for metrics in checkpoint["history"]:
        log_epoch(live, metrics)
    done, cell = checkpoint["epoch"], f"{fingerprint['model']} fold {fingerprint['fold']}"
    if done < epochs:
        print(f"resuming {cell} from epoch {done + 1}")
    else:
        print(f"resuming {cell} after its last epoch: predicting with the best weights")
    return done, checkpoint["best"], checkpoint["history"]


def validate(trainer: Trainer, loader: DataLoader, targets: np.ndarray) -> dict[str, float]:
    """Validation loss and accuracy of the weights (`valid/`) and of their EMA (`valid_ema/`)."""
    weights = {"valid": trainer.model}
    if trainer.ema is not None:
        weights["valid_ema"] = trainer.ema.module
    metrics = {}
    for prefix, model in weights.items():
        logits = predict_gathered(model, loader, trainer, TtaParams(), prefix)
        for name, value in evaluate(logits, targets, trainer.loss_fn).items():
            metrics[f"{prefix}/{name}"] = value
    return metrics


def run_epoch(
    trainer: Trainer, loaders: dict, valid_targets: np.ndarray, epoch: int, epochs: int
) -> dict[str, float]:
    """Train one epoch, then validate; returns the epoch's metrics as DVCLive logs them."""
    train = train_one_epoch(trainer, loaders["train"], epoch, f"epoch {epoch}/{epochs}")
    return {
        **{f"train/{name}": value for name, value in train.items()},
        **validate(trainer, loaders["valid"], valid_targets),
        "lr": trainer.optimizer.param_groups[0]["lr"],
    }


def epoch_best(metrics: dict[str, float]) -> tuple[str, float, float]:
    """This epoch's better weights, `raw` or `ema`, with their validation accuracy and loss.

    Accuracy decides; a tie goes to the lower loss, then to the raw weights.
    """
    candidates = [("raw", metrics["valid/acc"], metrics["valid/loss"])]
    if "valid_ema/acc" in metrics:
        candidates.append(("ema", metrics["valid_ema/acc"], metrics["valid_ema/loss"]))
    return max(candidates, key=lambda candidate: (candidate[1], -candidate[2]))


def describe_epoch(metrics: dict[str, float]) -> str:
    ema = f" (ema {metrics['valid_ema/acc']:.4f})" if "valid_ema/acc" in metrics else ""
    return (
        f"train loss {metrics['train/loss']:.4f} acc {metrics['train/acc']:.4f} | valid loss "
        f"{metrics['valid/loss']:.4f} acc {metrics['valid/acc']:.4f}{ema} | lr "
        f"{metrics['lr']:.2e}"
    )


def fit(
    trainer: Trainer,
    loaders: dict,
    hp: ModelParams,
    valid_targets: np.ndarray,
    live: Live,
    checkpoint_path: Path,
    fingerprint: dict[str, Any],
) -> dict:
    """The training loop: resumes from `checkpoint_path`, and saves it after every epoch.

    The best epoch has the highest validation accuracy (then the lowest loss) of the raw
    weights or, with `ema.enabled`, of their moving average, whichever validates better.

    Returns:
        The best epoch's validation accuracy (`acc`) and loss (`loss`), number (`epoch`),
        which weights won (`weights`: `raw` or `ema`) and those weights (`state`).
    """
    done, best, history = resume(trainer, live, checkpoint_path, fingerprint, hp.epochs)
    for epoch in range(done + 1, hp.epochs + 1):
        start = time.perf_counter()
        metrics = run_epoch(trainer, loaders, valid_targets, epoch, hp.epochs)
        log_epoch(live, metrics)
        history.append(metrics)
        weights, acc, loss = epoch_best(metrics)
        improved = (acc, -loss) > (best["acc"], -best["loss"])
        if improved:
            model = trainer.ema.module if weights == "ema" else trainer.model
            state = copy.deepcopy(model.state_dict())
            best = {"acc": acc, "loss": loss, "epoch": epoch, "weights": weights, "state": state}
        if distributed.is_main():  # every process holds the same state: rank 0 saves it
            save_checkpoint(
                checkpoint_path,
                {
                    "fingerprint": fingerprint,
                    "complete": False,
                    "epoch": epoch,
                    "best": best,
                    "history": history,
                    "trainer": trainer.state_dict(),
                    "rng": rng_states(trainer.device),
                },
            )
        seconds = time.perf_counter() - start
        marker = ("  *" + (" ema" if weights == "ema" else "")) if improved else ""
        print(f"epoch {epoch:>3}/{hp.epochs}  {describe_epoch(metrics)} | {seconds:.1f}s{marker}")
    return best


class NoLive:
    """What processes other than rank 0 log to under torchrun: nothing (rank 0 logs the same)."""

    def __init__(self):
        self.summary: dict[str, Any] = {}

    def log_metric(self, name: str, value: float) -> None:
        pass

    def next_step(self) -> None:
        pass


@contextlib.contextmanager
def open_live(model: str, fold: int) -> Iterator[Live | NoLive]:
    """The cell's DVCLive run, renamed into place as the block ends; rank 0's only."""
    if not distributed.is_main():
        yield NoLive()
        return
    with (
        atomic_path(fold_results_dir(model, fold)) as live_dir,
        Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live,
    ):
        yield live


def mark_complete(path: Path, fingerprint: dict[str, Any], epochs: int) -> None:
    """Shrink the checkpoint to a marker of the finished run.

    A finished run is never resumed (a new run of the stage starts over), so its weights and
    optimiser state would only take disk space.
    """
    save_checkpoint(path, {"fingerprint": fingerprint, "complete": True, "epoch": epochs})


@contextlib.contextmanager
def explain_failures(model: str, hp: ModelParams, checkpoint_path: Path) -> Iterator[None]:
    """Turn known training failures into errors that say what to change in params.yaml.

    They are a diverged loss, running out of GPU memory, and an operation without a
    deterministic implementation when `train.deterministic` is true.
    """
    key = f"train.models.{model}"
    try:
        yield
    except DivergedError as err:
        kept = f"; {checkpoint_path} keeps epoch {err.epoch - 1}" if err.epoch > 1 else ""
        raise PipelineError(
            f"training {model} diverged: the loss was {err.loss} at epoch {err.epoch}, step "
            f"{err.step}/{err.steps}. Lower the learning rate ({key}.optimizer.lr, now "
            f"{hp.optimizer.lr:g})" + (" or set amp: false" if hp.amp else "") + kept
        ) from None
    except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError (any device) from torch 2.5
        raise PipelineError(
            f"out of GPU memory training {model} with batch_size {hp.batch_size} at image_size "
            f"{hp.image_size}: lower {key}.batch_size (e.g. {max(1, hp.batch_size // 2)}) or "
            f"{key}.image_size in params.yaml" + ("" if hp.amp else ", or set amp: true")
        ) from None
    except RuntimeError as err:
        if "does not have a deterministic implementation" not in str(err):
            raise
        raise PipelineError(
            f"train.deterministic is true, but {model} uses an operation without a "
            f"deterministic implementation on this device ({str(err).splitlines()[0]}); "
            "set train.deterministic: false"
        ) from None


def save_cell(
    model_name: str,
    fold: int,
    checkpoint: dict,
    valid_rows: np.ndarray,
    oof_logits: np.ndarray,
    test_logits: np.ndarray,
) -> None:
    """Write best.pt, oof.npz and test_logits.npy into the cell's folder, all or nothing."""
    with atomic_path(fold_dir(model_name, fold)) as out:
        out.mkdir()
        torch.save(checkpoint, out / CHECKPOINT_NAME)
        np.savez(out / OOF_NAME, row=valid_rows, logits=oof_logits)
        np.save(out / TEST_LOGITS_NAME, test_logits)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    params = load_params()
    hp = check_cell(params, args.model, args.fold)
    seed_everything(params.base.seed)
    device = distributed.setup(resolve_device(params.train.device))  # joins torchrun's group
    configure_determinism(params.train.deterministic, device)
    checkpoint_path = last_checkpoint_path(args.model, args.fold)
    outputs = (fold_dir(args.model, args.fold), fold_results_dir(args.model, args.fold))
    if distributed.is_main():  # rank 0 writes the outputs, and cleans up after itself
        for path in (*outputs, checkpoint_path):
            remove_stale_temps(path)  # what a killed run was writing

    # 1. Data: this fold's split of the prepared images, plus the test set.
    classes = read_json(CLASSES_FILE)
    folds, test = load_table(FOLDS_FILE), load_table(PREPARED_TEST)
    train_images = int((folds["fold"] != args.fold).sum())
    distributed.check_batch_size(hp.batch_size, train_images, f"train.models.{args.model}")
    loaders = build_loaders(params, hp, folds, test, args.fold, device)
    valid_rows = np.flatnonzero(folds["fold"].to_numpy() == args.fold)
    valid_targets = folds["target"].to_numpy()[valid_rows]

    # 2. Model, then device and memory format (the optimiser is built on the moved weights).
    model = create_model(
        hp.backbone or args.model, len(classes), hp.pretrained, drop_rate=hp.drop_rate
    ).to(device)
    if use_channels_last(params.train.channels_last, device):
        model = model.to(memory_format=torch.channels_last)
    model = distributed.sync_batchnorm(model, device)
    trainer = create_trainer(model, hp, len(loaders["train"]), device)
    if params.train.compile:  # after create_trainer: its EMA copy must stay uncompiled
        compile_model(model, loaders["valid"].batch_size)
    fingerprint = run_fingerprint(params, hp, args.model, args.fold, device)
    print(
        f"train {args.model} fold {args.fold}: {len(loaders['train'].dataset)} train / "
        f"{len(valid_rows)} valid images, {len(classes)} classes, {hp.epochs} epochs on {device}"
    )

    # 3. Train (or resume), then predict OOF and test logits with the best weights and TTA.
    with (
        explain_failures(args.model, hp, checkpoint_path),
        open_live(args.model, args.fold) as live,
    ):
        best = fit(trainer, loaders, hp, valid_targets, live, checkpoint_path, fingerprint)
        model.load_state_dict(best["state"])
        oof_logits = predict_gathered(model, loaders["valid"], trainer, hp.tta, "OOF (TTA)")
        test_logits = predict_gathered(model, loaders["test"], trainer, hp.tta, "test (TTA)")
        oof = evaluate(oof_logits, valid_targets, trainer.loss_fn)
        summary = {
            "best_epoch": best["epoch"],
            "best_valid_acc": best["acc"],
            "best_weights": best["weights"],  # raw, or ema when the moving average won
            "oof_acc": oof["acc"],
            "oof_loss": oof["loss"],
        }
        live.summary.update(summary)

        # 4. The cell's outputs; the DVCLive folder is renamed into place as the block ends.
        checkpoint = {
            "model": args.model,
            "backbone": hp.backbone or args.model,
            "classes": classes,
            "params": params.model_dump(mode="json"),
            "model_params": hp.model_dump(mode="json"),
            "epoch": best["epoch"],
            "weights": best["weights"],
            "state_dict": best["state"],
        }
        if distributed.is_main():
            save_cell(args.model, args.fold, checkpoint, valid_rows, oof_logits, test_logits)
    if distributed.is_main():
        mark_complete(checkpoint_path, fingerprint, hp.epochs)
    distributed.barrier()  # every process returns once the outputs are in place
    print(
        f"train {args.model} fold {args.fold}: best epoch {best['epoch']} ({best['weights']}), "
        f"OOF accuracy {oof['acc']:.4f} with TTA {hp.tta}"
    )
    return summary


if __name__ == "__main__":
    run(main)
