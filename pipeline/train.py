"""Stage `train`: train one model on one fold, keep its best epoch, predict OOF and test logits.

    python -m pipeline.train --model d2l_resnet11 --fold 0

dvc.yaml runs this once per (model, fold) cell of the `train` matrix. The command line carries
only those coordinates; every hyperparameter is `train.defaults` merged with
`train.models.<model>` from params.yaml. Writes, each atomically:
- models/<model>/fold<k>/: best.pt (weights, params, classes), oof.npz (row, logits),
  test_logits.npy
- results/train/<model>/fold<k>/: DVCLive per-epoch metrics (train/valid loss and accuracy, lr)
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
from torch import nn
from torch.utils.data import DataLoader

from pipeline.cli import PipelineError, progress, run
from pipeline.config import ModelParams, OptimizerParams, Params, SchedulerParams, load_params
from pipeline.data import LeafDataset, apply_view, build_transforms, create_loader, load_table
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
from pipeline.models import create_model


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
    """Weight decay on weights only: biases and norm scales (1-D tensors) are not decayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": params.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if params.name == "sgd":
        return torch.optim.SGD(groups, lr=params.lr, momentum=params.momentum, nesterov=True)
    optimizer_class = torch.optim.AdamW if params.name == "adamw" else torch.optim.Adam
    return optimizer_class(groups, lr=params.lr)


def create_scheduler(
    optimizer: torch.optim.Optimizer,
    params: SchedulerParams,
    total_steps: int,
    steps_per_epoch: int,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: linear warmup, then cosine decay to `min_lr_ratio` (or constant)."""
    warmup = min(round(params.warmup_epochs * steps_per_epoch), total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if params.name == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return params.min_lr_ratio + (1 - params.min_lr_ratio) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class Trainer:
    """The model and everything that updates it; its state_dict is what a resume restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    autocast: Callable
    loss_fn: nn.Module
    device: torch.device

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])


def create_trainer(
    model: nn.Module, hp: ModelParams, steps_per_epoch: int, device: torch.device
) -> Trainer:
    """Optimiser, per-step schedule, mixed precision and loss for `model` (already on `device`).

    Args:
        model: the network, moved to `device` (the optimiser is built on the moved weights).
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
    return Trainer(model, optimizer, scheduler, scaler, autocast, loss_fn, device)


def train_one_epoch(
    trainer: Trainer, loader: DataLoader, epoch: int, desc: str
) -> dict[str, float]:
    """One pass over the training loader (in this epoch's order); returns its loss and accuracy.

    Raises:
        DivergedError: the loss of a step was NaN or infinite.
    """
    model, device = trainer.model, trainer.device
    model.train()
    loader.sampler.set_epoch(epoch)
    total_loss, correct, seen = 0.0, 0, 0
    bar = progress(loader, desc=desc, leave=False, unit="batch")
    for step, (images, targets) in enumerate(bar, start=1):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with trainer.autocast():
            logits = model(images)
            loss = trainer.loss_fn(logits, targets)
        trainer.optimizer.zero_grad(set_to_none=True)
        if trainer.scaler is not None:
            trainer.scaler.scale(loss).backward()
            trainer.scaler.step(trainer.optimizer)
            trainer.scaler.update()
        else:
            loss.backward()
            trainer.optimizer.step()
        trainer.scheduler.step()
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise DivergedError(epoch, step, len(loader), loss_value)
        total_loss += loss_value * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    return {"loss": total_loss / seen, "acc": correct / seen}


@torch.no_grad()
def predict(
    model, loader, autocast, device: torch.device, views: list[str], desc: str = "predict"
) -> np.ndarray:
    """Logits for every image in loader order, averaged over the TTA views."""
    model.eval()
    outputs = []
    for images, _ in progress(loader, desc=desc, leave=False, unit="batch"):
        images = images.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = torch.stack([model(apply_view(images, v)).float() for v in views]).mean(0)
        outputs.append(logits.cpu())
    return torch.cat(outputs).numpy()


def evaluate(logits: np.ndarray, targets: np.ndarray, loss_fn: nn.Module) -> dict[str, float]:
    loss = loss_fn(torch.from_numpy(logits), torch.from_numpy(targets)).item()
    return {"loss": loss, "acc": float((logits.argmax(1) == targets).mean())}


def build_loaders(
    params: Params,
    model_params: ModelParams,
    folds: pd.DataFrame,
    test: pd.DataFrame,
    fold: int,
    pin_memory: bool,
) -> dict:
    """Train, validation and test loaders for one fold."""
    seed, workers = params.base.seed, params.train.num_workers
    size, batch = model_params.image_size, model_params.batch_size
    is_train = folds["fold"] != fold
    train_tf = build_transforms(model_params, train=True)
    eval_tf = build_transforms(model_params, train=False)
    datasets = {
        "train": LeafDataset(
            folds.path[is_train], folds.target[is_train], train_tf, size, seed=seed
        ),
        "valid": LeafDataset(
            folds.path[~is_train], folds.target[~is_train], eval_tf, size, seed=seed
        ),
        "test": LeafDataset(test.path, None, eval_tf, size, seed=seed),
    }
    return {
        name: create_loader(
            ds,
            batch if name == "train" else 2 * batch,
            train=name == "train",
            num_workers=workers,
            seed=seed,
            pin_memory=pin_memory,
        )
        for name, ds in datasets.items()
    }


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

    `train.num_workers` is left out: the data stream does not depend on it (see pipeline.data).

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
        "deterministic": params.train.deterministic,
        "folds_md5": file_md5(FOLDS_FILE),
        "test_md5": file_md5(PREPARED_TEST),
    }


def rng_states(device: torch.device) -> dict[str, Any]:
    """The global RNG states a resumed run must continue from (dropout draws from torch's)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
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

    Restores the model, optimiser, scheduler, scaler and RNG states, and replays the finished
    epochs' metrics into `live` (DVCLive starts a fresh folder).

    Returns:
        The number of finished epochs, the best epoch so far and the metric history; 0, no best
        and no history when training starts from scratch.
    """
    checkpoint = load_resumable(checkpoint_path, fingerprint)
    if checkpoint is None:
        return 0, {"acc": -1.0, "epoch": 0, "state": None}, []
    trainer.load_state_dict(checkpoint["trainer"])
    set_rng_states(checkpoint["rng"])
    for metrics in checkpoint["history"]:
        log_epoch(live, metrics)
    done, cell = checkpoint["epoch"], f"{fingerprint['model']} fold {fingerprint['fold']}"
    if done < epochs:
        print(f"resuming {cell} from epoch {done + 1}")
    else:
        print(f"resuming {cell} after its last epoch: predicting with the best weights")
    return done, checkpoint["best"], checkpoint["history"]


def run_epoch(
    trainer: Trainer, loaders: dict, valid_targets: np.ndarray, epoch: int, epochs: int
) -> dict[str, float]:
    """Train one epoch, then validate; returns the epoch's metrics as DVCLive logs them."""
    train = train_one_epoch(trainer, loaders["train"], epoch, f"epoch {epoch}/{epochs}")
    valid_logits = predict(
        trainer.model, loaders["valid"], trainer.autocast, trainer.device, ["identity"], "valid"
    )
    valid = evaluate(valid_logits, valid_targets, trainer.loss_fn)
    return {
        **{f"train/{name}": value for name, value in train.items()},
        **{f"valid/{name}": value for name, value in valid.items()},
        "lr": trainer.optimizer.param_groups[0]["lr"],
    }


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

    Returns:
        The best epoch's validation accuracy (`acc`), number (`epoch`) and weights (`state`).
    """
    done, best, history = resume(trainer, live, checkpoint_path, fingerprint, hp.epochs)
    for epoch in range(done + 1, hp.epochs + 1):
        start = time.perf_counter()
        metrics = run_epoch(trainer, loaders, valid_targets, epoch, hp.epochs)
        log_epoch(live, metrics)
        history.append(metrics)
        improved = metrics["valid/acc"] > best["acc"]
        if improved:
            state = copy.deepcopy(trainer.model.state_dict())
            best = {"acc": metrics["valid/acc"], "epoch": epoch, "state": state}
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
        print(
            f"epoch {epoch:>3}/{hp.epochs}  train loss {metrics['train/loss']:.4f} "
            f"acc {metrics['train/acc']:.4f} | valid loss {metrics['valid/loss']:.4f} "
            f"acc {metrics['valid/acc']:.4f} | lr {metrics['lr']:.2e} | "
            f"{time.perf_counter() - start:.1f}s{'  *' if improved else ''}"
        )
    return best


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
    device = resolve_device(params.train.device)
    configure_determinism(params.train.deterministic, device)
    checkpoint_path = last_checkpoint_path(args.model, args.fold)
    outputs = (fold_dir(args.model, args.fold), fold_results_dir(args.model, args.fold))
    for path in (*outputs, checkpoint_path):
        remove_stale_temps(path)  # what a killed run was writing

    # 1. Data: this fold's split of the prepared images, plus the test set.
    classes = read_json(CLASSES_FILE)
    folds, test = load_table(FOLDS_FILE), load_table(PREPARED_TEST)
    loaders = build_loaders(params, hp, folds, test, args.fold, pin_memory=device.type == "cuda")
    valid_rows = np.flatnonzero(folds["fold"].to_numpy() == args.fold)
    valid_targets = folds["target"].to_numpy()[valid_rows]

    # 2. Model, then device and memory format (the optimiser is built on the moved weights).
    model = create_model(
        hp.backbone or args.model, len(classes), hp.pretrained, drop_rate=hp.drop_rate
    ).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    trainer = create_trainer(model, hp, len(loaders["train"]), device)
    fingerprint = run_fingerprint(params, hp, args.model, args.fold, device)
    print(
        f"train {args.model} fold {args.fold}: {len(loaders['train'].dataset)} train / "
        f"{len(valid_rows)} valid images, {len(classes)} classes, {hp.epochs} epochs on {device}"
    )

    # 3. Train (or resume), then predict OOF and test logits with the best weights and TTA.
    with (
        explain_failures(args.model, hp, checkpoint_path),
        atomic_path(fold_results_dir(args.model, args.fold)) as live_dir,
        Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live,
    ):
        best = fit(trainer, loaders, hp, valid_targets, live, checkpoint_path, fingerprint)
        model.load_state_dict(best["state"])
        oof_logits = predict(model, loaders["valid"], trainer.autocast, device, hp.tta, "OOF (TTA)")
        test_logits = predict(
            model, loaders["test"], trainer.autocast, device, hp.tta, "test (TTA)"
        )
        oof = evaluate(oof_logits, valid_targets, trainer.loss_fn)
        summary = {
            "best_epoch": best["epoch"],
            "best_valid_acc": best["acc"],
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
            "state_dict": best["state"],
        }
        save_cell(args.model, args.fold, checkpoint, valid_rows, oof_logits, test_logits)
    mark_complete(checkpoint_path, fingerprint, hp.epochs)
    print(
        f"train {args.model} fold {args.fold}: best epoch {best['epoch']}, "
        f"OOF accuracy {oof['acc']:.4f} with TTA {hp.tta}"
    )
    return summary


if __name__ == "__main__":
    run(main)
