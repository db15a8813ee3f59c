"""gpu_check's stage train speed checks on the Classify-Leaves-sized project (part c).

Both run stage train on fold 0 of gpu_check_project.leaves_project (18,353 generated 224 px
JPEGs, 176 classes, 5 folds, the uint8 cache) through gpu_check_runner.py --time-train, which
prints the seconds of each training pass beside the stage's own whole-epoch seconds. The last
of 2 epochs is the steady one: the first also pays for cuDNN autotuning, compiling and the
loader's start.
- stage_resnet50 and stage_resnet50_compiled: ResNet-50 at 224, batch 256, bf16,
  channels_last, no EMA or mixing (the shipped defaults), with `train.loader.augment_on: device`
  (augmentation in batches on the GPU from a GPU-resident cache) where this pipeline's params
  know that key; eager, and with `train.compile: true`. Steady img/s = fold 0's train images /
  the steady epoch's training-pass seconds.
- preset: each network of presets/classify-leaves-gpu.yaml with the preset's settings, except
  pretrained: false, fold 0 and 2 epochs: the steady epoch's seconds (training and validation)
  and the projected 5 folds x 30 epochs = 5 x (this run's seconds + 28 more steady epochs).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import yaml
from gpu_check_project import (
    ROOT,
    epoch_seconds,
    fold_train_images,
    leaves_project,
    run_stage,
    set_run,
    tail,
    train_seconds,
)

from pipeline.config.presets import merged_params

PRESET = ROOT / "presets" / "classify-leaves-gpu.yaml"
FOLDS, FULL_EPOCHS = 5, 30  # what the preset trains per network


def data_path(stdout: str) -> str:
    """Where stage train said it augmented: `device`, `workers`, or `unknown`."""
    match = re.search(r"^augmented on the (\w+):", stdout, re.MULTILINE)
    return match[1] if match else "unknown"


def steady_figures(result, train_images: int) -> dict:
    """Exit code, per-epoch seconds and the steady epoch's training img/s of one stage run."""
    whole, passes = epoch_seconds(result.stdout), train_seconds(result.stdout)
    row = {"exit_code": result.returncode, "epoch_s": whole}
    if passes:
        row["train_pass_s"] = passes
    if len(passes) >= 2:
        row["img_s"] = round(train_images / passes[-1], 1)
        row["img_s_from"] = "training pass"
    elif len(whole) >= 2:
        row["img_s"] = round(train_images / whole[-1], 1)
        row["img_s_from"] = "whole epoch incl. validation (no training-pass time printed)"
    if result.returncode != 0:
        row["output_tail"] = tail(result)
    return row


# --- stage_resnet50 ---------------------------------------------------------------------------


def speed_overrides(cfg, device, compiled: bool) -> dict:
    return {
        "train": {
            "models": {cfg.stage_speed_model: {}},
            "device": device.type,
            "compile": compiled,
            "loader": {"num_workers": cfg.workers, "augment_on": "device"},
            "defaults": {
                "image_size": cfg.leaves_size,
                "epochs": cfg.stage_epochs,
                "batch_size": cfg.stage_speed_batch,
                "amp": True,
                "tta": {"views": ["identity"]},  # prediction comes after the timed epochs
            },
        }
    }


def stage_speed(cfg, device, budget, folder: Path, compiled: bool) -> dict:
    """Steady training img/s of stage train with ResNet-50, eager or compiled."""
    root, _ = leaves_project(cfg, device, folder)
    train_images = fold_train_images(root)
    set_run(root, speed_overrides(cfg, device, compiled))
    result = run_stage(root, cfg.stage_speed_model, budget.left(), time_train=True)
    figures = steady_figures(result, train_images)
    return {
        "status": "pass" if result.returncode == 0 and "img_s" in figures else "fail",
        "model": cfg.stage_speed_model,
        "batch": cfg.stage_speed_batch,
        "augmented_on": data_path(result.stdout),
        "train_images": train_images,
        **figures,
    }


def check_stage_resnet50(cfg, device, budget, folder: Path) -> dict:
    return stage_speed(cfg, device, budget, folder, compiled=False)


def check_stage_resnet50_compiled(cfg, device, budget, folder: Path) -> dict:
    if not cfg.stage_speed_compiled:
        return {"status": "skipped: inductor on CPU needs a C++ toolchain and minutes"}
    return stage_speed(cfg, device, budget, folder, compiled=True)


# --- preset -----------------------------------------------------------------------------------


def preset_networks(cfg) -> tuple[dict, dict]:
    """The preset without its data folder, and its networks (name -> settings) to measure."""
    preset = yaml.safe_load(PRESET.read_text())
    preset.pop("data", None)
    networks = dict(list(preset["train"]["models"].items())[: cfg.preset_networks])
    if cfg.preset_backbone:  # the smoke run: the preset's names and settings, a tiny network
        networks = {
            name: {**(hp or {}), "backbone": cfg.preset_backbone} for name, hp in networks.items()
        }
    return preset, networks


def network_overrides(cfg, device, preset: dict, name: str, settings: dict | None) -> dict:
    defaults = {"pretrained": False, "epochs": cfg.stage_epochs, "image_size": cfg.leaves_size}
    if cfg.preset_batch is not None:
        defaults["batch_size"] = cfg.preset_batch
    train = {"models": {name: settings or {}}, "folds": [0], "device": device.type}
    train["defaults"] = defaults
    if cfg.preset_workers is not None:
        train["loader"] = {"num_workers": cfg.preset_workers}
    return merged_params({"train": train}, preset)


def projected_minutes(run_s: float, steady_epoch_s: float, epochs_run: int) -> float:
    """5 folds, each this run plus the steady epochs up to 30."""
    return round(FOLDS * (run_s + (FULL_EPOCHS - epochs_run) * steady_epoch_s) / 60, 1)


def measure_network(cfg, device, root: Path, preset: dict, name: str, settings, timeout) -> dict:
    set_run(root, network_overrides(cfg, device, preset, name, settings))
    start = time.perf_counter()
    result = run_stage(root, name, timeout, time_train=True)
    run_s = round(time.perf_counter() - start, 1)
    row = {"network": name, "run_s": run_s, **steady_figures(result, fold_train_images(root))}
    if len(row["epoch_s"]) >= 2:
        row["steady_epoch_s"] = row["epoch_s"][-1]
    if result.returncode == 0 and "steady_epoch_s" in row:  # else run_s is not a whole run's
        row["projected_min"] = projected_minutes(run_s, row["steady_epoch_s"], cfg.stage_epochs)
    return row


def check_preset(cfg, device, budget, folder: Path) -> dict:
    """Each preset network's steady epoch and projected 5 x 30 minutes, and their sum."""
    root, _ = leaves_project(cfg, device, folder)
    preset, networks = preset_networks(cfg)
    rows, skipped = [], []
    for name, settings in networks.items():
        if budget.left() < cfg.stage_reserve_s:
            skipped.append(name)
            continue
        row = measure_network(cfg, device, root, preset, name, settings, budget.left())
        print(f"  preset {name}: {row}", flush=True)
        rows.append(row)
    projected = [row["projected_min"] for row in rows if "projected_min" in row]
    complete = len(projected) == len(networks)
    ok = complete and all(row["exit_code"] == 0 for row in rows)
    return {
        "status": "pass" if ok else "fail",
        "preset": PRESET.name,
        "rows": rows,
        "skipped_over_budget": skipped,
        # A sum over fewer networks than the preset's would understate it.
        "projected_total_min": round(sum(projected), 1) if complete else None,
        "train_images": fold_train_images(root),
    }
