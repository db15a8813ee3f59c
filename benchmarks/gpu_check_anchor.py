"""gpu_check's anchor (part d): timm's own train.py, on the same machine in the same call.

timm's train.py and the timm package it was written for (../shared/anchors/timm, see
../shared/anchors/README.md) run as a separate process, never imported, with PYTHONPATH
pointing at that folder so that its timm is the one imported. The folder is the first of:
$GPU_CHECK_ANCHOR_TIMM (gpu_check.py --anchor-timm sets it), .anchor/timm in the checkout (where
the device machine gets a carried copy), ../shared/anchors/timm beside the checkout.

It trains ResNet-50 on an ImageFolder of the leaves project's generated 224 px JPEGs (hard
links) with the flags a Kaggle user would pass: --amp --amp-dtype bfloat16 --channels-last
-b 256 -j 12 --pin-mem, AdamW, cosine. It logs every step (--log-interval 1) and each step's
rate comes after a `loss.item()`, so the steady img/s, the last epoch's images over the sum of
its step times, is honest. `side_by_side` sets stage train's figures against it.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pandas as pd
from gpu_check_project import COMPETITION, ROOT, leaves_project, run_process, tail

ANCHOR_ENV = "GPU_CHECK_ANCHOR_TIMM"
# timm train.py's step lines: "Train: 1 [  24/50 ( 50%)]  Loss: ... Time: 0.057s, 4480.12/s ..."
STEP_LINE = re.compile(r"Train: (\d+) \[\s*\d+/\d+.*?Time: [\d.]+s,\s+([\d.]+)/s")
TARGET_RATIO = 1.3  # stage train's steady img/s over the anchor's
TARGET_PRESET_MIN = 30  # the preset's projected 5 folds x 30 epochs, all networks
STAGE_VARIANTS = {"eager": "stage_resnet50", "compiled": "stage_resnet50_compiled"}


def anchor_candidates() -> list[Path]:
    if os.environ.get(ANCHOR_ENV):
        return [Path(os.environ[ANCHOR_ENV])]
    return [ROOT / ".anchor" / "timm", ROOT.parent / "shared" / "anchors" / "timm"]


def find_anchor() -> Path | None:
    """The first candidate folder holding train.py and the timm package, or None."""
    for folder in anchor_candidates():
        if (folder / "train.py").is_file() and (folder / "timm").is_dir():
            return folder.resolve()
    return None


def write_image_folder(root: Path, out: Path, train_count: int, valid_count: int) -> int:
    """out/{train,validation}/<label>/ of the project's first train images; the class count."""
    table = pd.read_csv(root / COMPETITION / "train.csv")
    if len(table) < train_count + valid_count:
        raise ValueError(f"{len(table)} images, fewer than {train_count} + {valid_count}")
    splits = {"train": table[:train_count], "validation": table[train_count:][:valid_count]}
    for split, rows in splits.items():
        for image, label in zip(rows["image"], rows["label"], strict=True):
            target = out / split / label / Path(image).name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(root / COMPETITION / image, target)
    return splits["train"]["label"].nunique()


def anchor_command(cfg, device, data: Path, output: Path, classes: int) -> list[str]:
    command = [
        sys.executable, "train.py", "--data-dir", str(data), "--model", cfg.anchor_model,
        "--num-classes", str(classes), "--img-size", str(cfg.leaves_size),
        "-b", str(cfg.anchor_batch), "--epochs", str(cfg.anchor_epochs),
        "--opt", "adamw", "--lr", "1e-3", "--sched", "cosine", "--warmup-epochs", "0",
        "-j", str(max(1, cfg.workers)),  # timm's loader refuses 0 workers
        "--log-interval", "1", "--output", str(output), "--checkpoint-hist", "1", "--seed", "0",
    ]  # fmt: skip
    if device.type == "cuda":
        return command + ["--amp", "--amp-dtype", "bfloat16", "--channels-last", "--pin-mem"]
    return command + ["--device", "cpu"]


def steady_rates(log: str) -> dict:
    """The last epoch's step count, img/s (images over the sum of step times) and median."""
    steps: dict[int, list[float]] = {}
    for match in STEP_LINE.finditer(log):
        steps.setdefault(int(match.group(1)), []).append(float(match.group(2)))
    if not steps or max(steps) == 0:  # no epoch after the first (warm-up) one
        return {"epochs_logged": len(steps)}
    rates = steps[max(steps)]
    # Every step has the same batch, so images / total time is the rates' harmonic mean.
    mean = len(rates) / sum(1 / rate for rate in rates)
    median = sorted(rates)[len(rates) // 2]
    return {
        "epochs_logged": len(steps),
        "steady_steps": len(rates),
        "img_s": round(mean, 1),
        "img_s_median_step": round(median, 1),
    }


def check_anchor(cfg, device, budget, folder: Path) -> dict:
    """timm train.py's steady training img/s on the leaves project's JPEGs."""
    anchor = find_anchor()
    if anchor is None:
        looked = ", ".join(str(path) for path in anchor_candidates())
        return {"status": f"skipped: no timm anchor (train.py and timm/) in {looked}"}
    if device.type != "cuda" and not cfg.anchor_on_cpu:
        return {"status": "skipped: no CUDA"}
    root, _ = leaves_project(cfg, device, folder)
    data = folder / "anchor-images"
    classes = write_image_folder(root, data, cfg.anchor_images, cfg.anchor_valid_images)
    python_path = os.pathsep.join(filter(None, [str(anchor), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1"}
    command = anchor_command(cfg, device, data, folder / "anchor-output", classes)
    result = run_process(command, anchor, env, budget.left())
    figures = steady_rates(result.stdout + result.stderr)  # timm logs to stderr
    ok = result.returncode == 0 and "img_s" in figures
    return {
        "status": "pass" if ok else "fail",
        "anchor": str(anchor),
        "model": cfg.anchor_model,
        "images": cfg.anchor_images,
        "batch": cfg.anchor_batch,
        "workers": max(1, cfg.workers),
        **figures,
        "exit_code": result.returncode,
        **({} if ok else {"output_tail": tail(result)}),
    }


# --- Stage train against the anchor, from one call's results ----------------------------------


def side_by_side(checks: dict) -> dict:
    """Stage train's ResNet-50 img/s over the anchor's, and the preset's total, with targets."""
    anchor = checks.get("anchor", {}).get("img_s")
    summary = {"anchor_img_s": anchor, "target_ratio": TARGET_RATIO}
    for variant, check in STAGE_VARIANTS.items():
        img_s = checks.get(check, {}).get("img_s")
        summary[f"stage_{variant}_img_s"] = img_s
        if anchor and img_s:
            summary[f"stage_{variant}_over_anchor"] = round(img_s / anchor, 2)
    summary["preset_projected_total_min"] = checks.get("preset", {}).get("projected_total_min")
    summary["target_preset_min"] = TARGET_PRESET_MIN
    return summary


def verdict(value, target, at_least: bool) -> str:
    if value is None:
        return "not measured"
    met = value >= target if at_least else value <= target
    return "met" if met else "NOT met"


def img_s_text(img_s) -> str:
    return "not measured" if img_s is None else f"{img_s} img/s"


def print_side_by_side(summary: dict, smoke: bool) -> None:
    note = " (smoke: CPU, tiny sizes; the figures mean nothing)" if smoke else ""
    print(f"\nSide by side, measured in this call{note}")
    print(f"  timm train.py (anchor): {img_s_text(summary['anchor_img_s'])}")
    for variant in STAGE_VARIANTS:
        ratio = summary.get(f"stage_{variant}_over_anchor")
        ratio_text = "" if ratio is None else f" = {ratio}x the anchor"
        print(
            f"  stage train {variant}: {img_s_text(summary[f'stage_{variant}_img_s'])}"
            f"{ratio_text} (target >= {TARGET_RATIO}x: {verdict(ratio, TARGET_RATIO, True)})"
        )
    total = summary["preset_projected_total_min"]
    total_text = "not measured" if total is None else f"{total} min"
    print(
        f"  preset, 5 folds x 30 epochs of all its networks: {total_text} "
        f"(target <= {TARGET_PRESET_MIN} min: {verdict(total, TARGET_PRESET_MIN, False)})"
    )
