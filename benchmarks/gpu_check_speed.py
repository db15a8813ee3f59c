"""gpu_check's speed checks (part b): images/s through the real training code.

Ours: the uint8 cache (pipeline.data.images) read by LeafDataset/create_loader workers and
DeviceLoader (pipeline.data.loaders, via throughput_data.our_loader), one epoch of
pipeline.training.engine.train_one_epoch after a warm-up epoch (which compiles, when compile is on).
Beside it in the same run: throughput.py's naive baseline (PIL decode per image, no workers,
fp32) and the ceiling: the same engine epoch on one synthetic batch already on the GPU.
Inference: pipeline.training.tta.predict_logits with the TTA views over the cached validation
loader.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
from gpu_check_project import ROOT  # noqa: F401 - puts the project and benchmarks/ on sys.path
from throughput_data import (
    CLASSES,
    batches,
    naive_loader,
    our_loader,
    synchronize,
    write_jpegs,
)
from throughput_models import time_steps

from pipeline.config.model_settings import ModelParams, TtaParams
from pipeline.data.images import ImageCache
from pipeline.data.network_images import write_images
from pipeline.models.registry import create_model
from pipeline.training.device import compile_model, configure_determinism, seed_everything
from pipeline.training.engine import create_trainer, train_one_epoch
from pipeline.training.tta import predict_logits

TTA_VIEWS = ["identity", "hflip"]


class SyntheticLoader:
    """One batch already on the device, `steps` times an epoch, shaped like a DeviceLoader."""

    class _Sampler:
        def set_epoch(self, epoch: int) -> None:
            pass

    def __init__(self, batch: int, size: int, steps: int, device: torch.device):
        self.images = torch.randn(batch, 3, size, size, device=device).contiguous(
            memory_format=torch.channels_last
        )
        self.targets = torch.randint(0, CLASSES, (batch,), device=device)
        self.steps, self.sampler = steps, self._Sampler()

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return iter([(self.images, self.targets)] * self.steps)


def build_cache(folder, count: int, size: int) -> tuple[list[str], ImageCache]:
    (folder / "jpegs").mkdir()
    paths = write_jpegs(folder / "jpegs", count, seed=0)
    index = write_images(pd.DataFrame({"path": paths, "md5": ""}), size, folder / "cache.npy")
    return paths, ImageCache(folder / "cache.npy", index.assign(row=np.arange(len(index))))


def engine_epoch_img_s(trainer, loader, epoch: int) -> float:
    synchronize(trainer.device)
    start = time.perf_counter()
    train_one_epoch(trainer, loader, epoch, "speed")
    synchronize(trainer.device)
    return len(loader) * loader.batch_size / (time.perf_counter() - start)


def ours_train(model_name, batch, compiled, cfg, data, device) -> dict:
    """Train images/s of ours and the ceiling through the engine, and TTA inference."""
    paths, cache, targets = data
    args = argparse.Namespace(
        image_size=cfg.speed_size, batch_size=batch, num_workers=cfg.workers, seed=0
    )
    configure_determinism(False, device)  # cuDNN autotuning: the naive run turns it off
    seed_everything(0)
    model = create_model(model_name, CLASSES).to(device).to(memory_format=torch.channels_last)
    hp = ModelParams(image_size=cfg.speed_size, batch_size=batch, epochs=3, amp=True)
    loader = our_loader(cache, paths, targets, args, True, device)
    trainer = create_trainer(model, hp, len(loader), device)
    if compiled:
        torch._dynamo.reset()
        compile_model(model, 2 * batch)
    warm_start = time.perf_counter()
    engine_epoch_img_s(trainer, loader, 0)  # warm-up: workers, cuDNN autotuning, compile
    row = {"warmup_s": round(time.perf_counter() - warm_start, 1)}
    row["train_ours_img_s"] = round(engine_epoch_img_s(trainer, loader, 1), 1)
    ceiling = SyntheticLoader(batch, cfg.speed_size, len(loader), device)
    ceiling.batch_size = batch
    row["ceiling_img_s"] = round(engine_epoch_img_s(trainer, ceiling, 2), 1)
    if not compiled:  # an eval-mode compile would cost another warm-up
        valid = our_loader(cache, paths, targets, args, False, device)
        tta = TtaParams(views=TTA_VIEWS)
        predict_logits(model, valid, trainer.autocast, tta)
        synchronize(device)
        start = time.perf_counter()
        predict_logits(model, valid, trainer.autocast, tta)
        synchronize(device)
        row["infer_tta_img_s"] = round(len(paths) / (time.perf_counter() - start), 1)
    row["loader_share_of_ceiling"] = round(row["train_ours_img_s"] / row["ceiling_img_s"], 3)
    return row


def naive_train(model_name, batch, cfg, data, device) -> float:
    """throughput.py's naive baseline: fp32, no channels_last, PIL decode, no workers."""
    paths, _, targets = data
    args = argparse.Namespace(
        image_size=cfg.speed_size, batch_size=batch, steps=cfg.naive_steps, warmup_steps=1
    )
    seed_everything(0)
    model = create_model(model_name, CLASSES).to(device)
    stream = batches(naive_loader(paths, targets, cfg.speed_size, batch, True), device)
    return round(time_steps(model, stream, args, device, True, False), 1)


def check_speed(cfg, device, budget) -> dict:
    """Every (model, batch, compile) variant of cfg.speed_variants, until the budget runs out."""
    import tempfile
    from pathlib import Path

    configure_determinism(False, device)
    rows, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="gpu-check-speed-") as folder:
        paths, cache = build_cache(Path(folder), cfg.speed_images, cfg.speed_size)
        targets = np.random.default_rng(0).integers(0, CLASSES, len(paths))
        data = (paths, cache, targets)
        naive_done = set()
        for model_name, batch, compiled in cfg.speed_variants:
            name = f"{model_name} b{batch} {'compile' if compiled else 'eager'}"
            if budget.left() < cfg.speed_reserve_s:
                skipped.append(name)
                continue
            start = time.perf_counter()
            row = {"model": model_name, "batch": batch, "compile": compiled}
            row |= ours_train(model_name, batch, compiled, cfg, data, device)
            if model_name not in naive_done:
                row["train_naive_img_s"] = naive_train(model_name, batch, cfg, data, device)
                row["ours_over_naive"] = round(
                    row["train_ours_img_s"] / row["train_naive_img_s"], 2
                )
                naive_done.add(model_name)
            row["seconds"] = round(time.perf_counter() - start, 1)
            print(f"  speed {name}: {row}", flush=True)
            rows.append(row)
    ok = bool(rows) and all(row["train_ours_img_s"] > 0 for row in rows)
    return {
        "status": "pass" if ok else "fail",
        "rows": rows,
        "skipped_over_budget": skipped,
        "image_size": cfg.speed_size,
        "images": cfg.speed_images,
        "workers": cfg.workers,
    }
