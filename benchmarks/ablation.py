"""What each ingredient of a preset buys: train one (model, fold) cell per variant, side by side.

    python benchmarks/ablation.py                    # presets/leaf-silhouettes.yaml, fold 0
    python benchmarks/ablation.py --preset presets/leaf-silhouettes.yaml --model d2l_resnet11_slim

Needs the preset's prepared data, folds and cache (run benchmarks/leaf_silhouettes.sh first).
Each variant is the preset laid over params.yaml (as `leaf preset` runs it) with one change to
train.defaults, trained by the train stage's own code in a scratch folder that links the
project's data/, so the project's outputs are never touched. Prints a table and, last, one
JSON line: per variant the kept epoch's validation accuracy without TTA (train.defaults.keep
says which), the OOF accuracy with the preset's TTA views, and the seconds the cell took.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config.presets import load_preset, merged_params  # noqa: E402
from pipeline.config.schema import deep_merge  # noqa: E402

# name -> overrides of train.defaults, laid over the preset's.
VARIANTS = {
    "preset": {},
    "no augmentation": {"augment": {"train": []}},
    "shipped params.yaml augmentation": "shipped",
    "+ MixUp 0.2 / CutMix 1.0": {"mixup": {"mixup_alpha": 0.2, "cutmix_alpha": 1.0}},
    "EMA on, decay 0.995": {"ema": {"enabled": True, "decay": 0.995}},
}


def preset_params(preset_file: str) -> dict:
    """The whole params of a preset run: the preset laid over params.yaml, as `leaf preset` does."""
    return merged_params(load_preset(preset_file), shipped_params())


def shipped_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def variant_params(preset: dict, model: str, fold: int, override: dict | str) -> dict:
    """`preset` (whole params) training only (`model`, `fold`), with `override` laid over its
    train.defaults ("shipped": params.yaml's own augmentation)."""
    if override == "shipped":
        shipped = shipped_params()
        override = {"augment": {"train": shipped["train"]["defaults"]["augment"]["train"]}}
    params = copy.deepcopy(preset)
    params["train"]["models"] = {model: preset["train"]["models"].get(model) or {}}
    params["train"]["folds"] = [fold]
    params["train"]["defaults"] = deep_merge(params["train"]["defaults"], override)
    return params


def train_cell(params: dict, model: str, fold: int) -> dict:
    """Run the train stage for one cell in a scratch folder; returns its summary and time."""
    with tempfile.TemporaryDirectory(prefix="ablation-") as scratch:
        work = Path(scratch)
        (work / "data").symlink_to(ROOT / "data")
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LEAF_QUIET": "1"}
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "pipeline.stages.train", "--model", model, "--fold", str(fold)],
            cwd=work,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - start
        summary = json.loads(
            (work / "results/train" / model / f"fold{fold}" / "metrics.json").read_text()
        )
    return {**summary, "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=str(ROOT / "presets/leaf-silhouettes.yaml"))
    parser.add_argument("--model", default="d2l_resnet11_slim")
    parser.add_argument("--fold", type=int, default=0)
    args = parser.parse_args()
    if not (ROOT / "data/folds.csv").is_file():
        sys.exit("error: data/folds.csv not found; run benchmarks/leaf_silhouettes.sh first")
    preset = preset_params(args.preset)

    results = {}
    print(f"{'variant':<36} {'valid acc':>9} {'OOF (TTA)':>9} {'seconds':>8}")
    for name, override in VARIANTS.items():
        params = variant_params(preset, args.model, args.fold, override)
        result = train_cell(params, args.model, args.fold)
        results[name] = {
            "valid_acc_no_tta": result["best_valid_acc"],
            "oof_acc_tta": result["oof_acc"],
            "best_weights": result["best_weights"],
            "seconds": result["seconds"],
        }
        print(
            f"{name:<36} {result['best_valid_acc']:>9.4f} {result['oof_acc']:>9.4f} "
            f"{result['seconds']:>8.1f}",
            flush=True,
        )
    print(json.dumps({"preset": args.preset, "model": args.model, "fold": args.fold, **results}))


if __name__ == "__main__":
    main()
