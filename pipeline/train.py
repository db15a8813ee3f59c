"""Stage `train`: train one model on one fold, keep its best epoch, predict OOF and test logits.

    python -m pipeline.train --model d2l_resnet11 --fold 0

dvc.yaml runs this once per (model, fold) cell of the `train` matrix. The command line carries
only those coordinates; every hyperparameter is `train.defaults` merged with
`train.models.<model>` from params.yaml. Writes, each atomically:
- models/<model>/fold<k>/: best.pt (weights, params, classes), oof.npz (row, logits),
  test_logits.npy
- results/train/<model>/fold<k>/: DVCLive per-epoch metrics (train/valid loss and accuracy, lr)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd
import torch
from dvclive import Live
from torch import nn
from tqdm import tqdm

from pipeline.cli import PipelineError, run
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
    fold_dir,
    fold_results_dir,
    read_json,
    seed_everything,
)
from pipeline.models import create_model


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


def train_one_epoch(
    model, loader, loss_fn, optimizer, scheduler, scaler, autocast, device: torch.device, desc: str
) -> dict[str, float]:
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=desc, leave=False, unit="batch")
    for images, targets in bar:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = model(images)
            loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(targets)
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
    for images, _ in tqdm(loader, desc=desc, leave=False, unit="batch"):
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
    train_tf = build_transforms(model_params, train=True, seed=seed)
    eval_tf = build_transforms(model_params, train=False, seed=seed)
    datasets = {
        "train": LeafDataset(folds.path[is_train], folds.target[is_train], train_tf, size),
        "valid": LeafDataset(folds.path[~is_train], folds.target[~is_train], eval_tf, size),
        "test": LeafDataset(test.path, None, eval_tf, size),
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


def fit(
    model,
    loaders: dict,
    hp: ModelParams,
    valid_targets: np.ndarray,
    device: torch.device,
    live: Live,
) -> dict:
    """The training loop; returns the best epoch's validation accuracy, number and weights."""
    optimizer = create_optimizer(model, hp.optimizer)
    steps_per_epoch = len(loaders["train"])
    scheduler = create_scheduler(
        optimizer, hp.scheduler, hp.epochs * steps_per_epoch, steps_per_epoch
    )
    autocast, scaler = amp_context(device, hp.amp)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
    best = {"acc": -1.0, "epoch": 0, "state": None}
    for epoch in range(1, hp.epochs + 1):
        start = time.perf_counter()
        train_metrics = train_one_epoch(
            model,
            loaders["train"],
            loss_fn,
            optimizer,
            scheduler,
            scaler,
            autocast,
            device,
            f"epoch {epoch}/{hp.epochs}",
        )
        valid_logits = predict(model, loaders["valid"], autocast, device, ["identity"], "valid")
        valid_metrics = evaluate(valid_logits, valid_targets, loss_fn)
        lr = optimizer.param_groups[0]["lr"]
        for split, metrics in (("train", train_metrics), ("valid", valid_metrics)):
            for name, value in metrics.items():
                live.log_metric(f"{split}/{name}", value)
        live.log_metric("lr", lr)
        live.next_step()
        improved = valid_metrics["acc"] > best["acc"]
        if improved:
            best = {
                "acc": valid_metrics["acc"],
                "epoch": epoch,
                "state": copy.deepcopy(model.state_dict()),
            }
        print(
            f"epoch {epoch:>3}/{hp.epochs}  train loss {train_metrics['loss']:.4f} "
            f"acc {train_metrics['acc']:.4f} | valid loss {valid_metrics['loss']:.4f} "
            f"acc {valid_metrics['acc']:.4f} | lr {lr:.2e} | "
            f"{time.perf_counter() - start:.1f}s{'  *' if improved else ''}"
        )
    return best


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

    # 1. Data: this fold's split of the prepared images, plus the test set.
    classes = read_json(CLASSES_FILE)
    folds, test = load_table(FOLDS_FILE), load_table(PREPARED_TEST)
    device = resolve_device(params.train.device)
    loaders = build_loaders(params, hp, folds, test, args.fold, pin_memory=device.type == "cuda")
    valid_rows = np.flatnonzero(folds["fold"].to_numpy() == args.fold)
    valid_targets = folds["target"].to_numpy()[valid_rows]

    # 2. Model, then device and memory format (the optimiser is built on the moved weights).
    model = create_model(
        hp.backbone or args.model, len(classes), hp.pretrained, drop_rate=hp.drop_rate
    ).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    print(
        f"train {args.model} fold {args.fold}: {len(loaders['train'].dataset)} train / "
        f"{len(valid_rows)} valid images, {len(classes)} classes, {hp.epochs} epochs on {device}"
    )

    # 3. Train, then predict OOF and test logits with the best weights and the TTA views.
    with (
        atomic_path(fold_results_dir(args.model, args.fold)) as live_dir,
        Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live,
    ):
        best = fit(model, loaders, hp, valid_targets, device, live)
        model.load_state_dict(best["state"])
        autocast, _ = amp_context(device, hp.amp)
        oof_logits = predict(model, loaders["valid"], autocast, device, hp.tta, "OOF (TTA)")
        test_logits = predict(model, loaders["test"], autocast, device, hp.tta, "test (TTA)")
        oof = evaluate(
            oof_logits, valid_targets, nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
        )
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
    print(
        f"train {args.model} fold {args.fold}: best epoch {best['epoch']}, "
        f"OOF accuracy {oof['acc']:.4f} with TTA {hp.tta}"
    )
    return summary


if __name__ == "__main__":
    run(main)
