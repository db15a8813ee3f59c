"""gpu_check's temporary projects, and the checks that run the real train stage in them.

A project is a folder holding a Classify-Leaves-style competition folder (train.csv, test.csv,
images/ of generated 224 px JPEGs, from benchmarks/throughput.py's generator), a params.yaml
(the shipped one with overrides laid over it) and, once `prepare_project` ran stages prepare,
split and cache in it, data/prepared, folds and the uint8 cache. The train stage then runs in
a subprocess, exactly as dvc.yaml runs it.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from throughput import write_jpegs  # noqa: E402

from pipeline.tools.presets import merged_params  # noqa: E402

EPOCH_LINE = re.compile(r"^epoch\s+(\d+)/(\d+) .*\| ([\d.]+)s", re.MULTILINE)
COMPETITION = "data/leaves"


def write_competition(root: Path, num_images: int, num_classes: int, test_images: int) -> None:
    """train.csv (image, label), test.csv (image) and images/ under root/COMPETITION."""
    folder = root / COMPETITION
    (folder / "images").mkdir(parents=True)
    paths = write_jpegs(folder / "images", num_images + test_images, seed=0)
    names = [f"images/{Path(path).name}" for path in paths]
    labels = [f"species_{index % num_classes:03d}" for index in range(num_images)]
    pd.DataFrame({"image": names[:num_images], "label": labels}).to_csv(
        folder / "train.csv", index=False
    )
    pd.DataFrame({"image": names[num_images:]}).to_csv(folder / "test.csv", index=False)


def write_params(root: Path, overrides: dict) -> None:
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    base = {"data": {"root": COMPETITION, "sample_submission": None}}
    params = merged_params(overrides, merged_params(base, shipped))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def prepare_project(
    root: Path, num_images: int, num_classes: int, overrides: dict, test_images: int = 8
) -> Path:
    """A project in `root` ready for stage train: images, params, prepared tables and cache."""
    from pipeline.stages import cache, prepare, split

    root.mkdir(parents=True, exist_ok=True)
    write_competition(root, num_images, num_classes, test_images)
    write_params(root, overrides)
    with working_directory(root):
        for stage in (prepare, split, cache):
            stage.main([])
    return root


def run_train(
    root: Path, model: str, launcher: list[str], timeout: float
) -> subprocess.CompletedProcess:
    """`<launcher> -m pipeline.stages.train --model <model> --fold 0` in project `root`."""
    # The project first; keep what the caller had (on the device machine: the carried wheels).
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1", "LEAF_QUIET": "1"}
    command = [*launcher, "-m", "pipeline.stages.train", "--model", model, "--fold", "0"]
    return subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout
    )


def set_train(root: Path, overrides: dict) -> None:
    """Lay `overrides` over the project's params.yaml and forget any earlier training run."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(
        yaml.safe_dump(merged_params(overrides, params), sort_keys=False)
    )
    for folder in ("models", "results", "checkpoints"):
        subprocess.run(["rm", "-rf", str(root / folder)], check=True)


def epoch_seconds(stdout: str) -> list[float]:
    """The seconds of each epoch (training and validation) from the stage's epoch lines."""
    return [float(match.group(3)) for match in EPOCH_LINE.finditer(stdout)]


def tail(result: subprocess.CompletedProcess, chars: int = 600) -> str:
    return (result.stdout + result.stderr)[-chars:]


# --- The checks that run stage train ---------------------------------------------------------


def small_project(cfg, device, folder: Path) -> Path:
    """One small project per run, shared by the OOM and torchrun checks (built on first use)."""
    root = folder / "small"
    if not (root / "params.yaml").exists():
        overrides = {
            "split": {"n_splits": 2},
            "train": {
                "models": {cfg.stage_model: {}},
                "folds": [0],
                "device": device.type,
                "loader": {"num_workers": 0},
                "defaults": {
                    "image_size": cfg.small_size,
                    "epochs": 1,
                    "batch_size": cfg.small_batch,
                    "tta": {"views": ["identity"]},
                },
            },
        }
        prepare_project(root, cfg.small_images, 4, overrides)
    return root


def check_oom(cfg, device, budget, folder: Path) -> dict:
    """A real out-of-memory: the stage ends with its message and exit code 2."""
    if device.type != "cuda":
        return {"status": "skipped: no CUDA"}
    root = small_project(cfg, device, folder)
    huge = {"image_size": 1024, "batch_size": cfg.small_images // 2, "amp": False}
    # Without the cache: it holds the images at the small size, and the stage would refuse it.
    train = {"models": {"wide_resnet101_2": {}}, "defaults": huge}
    set_train(root, {"cache": {"enabled": False}, "train": train})
    result = run_train(root, "wide_resnet101_2", [sys.executable], budget.left())
    message = "out of GPU memory training" in result.stderr
    traceback = "Traceback" in result.stderr
    return {
        "status": "pass" if result.returncode == 2 and message and not traceback else "fail",
        "exit_code": result.returncode,
        "message": result.stderr.strip().splitlines()[-1][:300] if result.stderr else "",
        **({} if result.returncode == 2 else {"output_tail": tail(result)}),
    }


def check_torchrun(cfg, device, budget, folder: Path) -> dict:
    """`torchrun --nproc_per_node=1` trains one fold (NCCL on CUDA; gloo, the same path, on CPU)."""
    root = small_project(cfg, device, folder)
    set_train(
        root,
        {
            "cache": {"enabled": True},
            "train": {
                "models": {cfg.stage_model: {}},
                "defaults": {
                    "image_size": cfg.small_size,
                    "batch_size": cfg.small_batch,
                    "amp": True,
                },
            },
        },
    )
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1"]
    result = run_train(root, cfg.stage_model, launcher, budget.left())
    written = (root / "models" / cfg.stage_model / "fold0" / "best.pt").exists()
    return {
        "status": "pass" if result.returncode == 0 and written else "fail",
        "backend": "nccl" if device.type == "cuda" else "gloo",
        "exit_code": result.returncode,
        "best_pt_written": written,
        **({} if result.returncode == 0 else {"output_tail": tail(result)}),
    }


def check_epoch(cfg, device, budget, folder: Path) -> dict:
    """A Classify-Leaves-sized epoch through stage train; projects 5 folds x 30 epochs."""
    overrides = {
        "split": {"n_splits": 5},
        "train": {
            "models": {cfg.epoch_model: {}},
            "folds": [0],
            "device": device.type,
            "loader": {"num_workers": cfg.workers},
            "defaults": {
                "image_size": cfg.epoch_size,
                "epochs": cfg.epoch_epochs,
                "batch_size": cfg.epoch_batch,
                "tta": {"views": ["identity", "hflip"]},
            },
        },
    }
    start = time.perf_counter()
    root = prepare_project(folder / "epoch", cfg.epoch_images, cfg.epoch_classes, overrides)
    prepared_s = time.perf_counter() - start
    result = run_train(root, cfg.epoch_model, [sys.executable], budget.left())
    seconds = epoch_seconds(result.stdout)
    if result.returncode != 0 or not seconds:
        return {"status": "fail", "exit_code": result.returncode, "output_tail": tail(result)}
    steady = seconds[-1]  # the first epoch also pays for cuDNN autotuning and worker start
    return {
        "status": "pass",
        "model": cfg.epoch_model,
        "train_images": cfg.epoch_images * 4 // 5,
        "valid_images": cfg.epoch_images - cfg.epoch_images * 4 // 5,
        "epoch_seconds_train_and_valid": seconds,
        "project_prepare_s": round(prepared_s, 1),
        "projected_5_folds_x_30_epochs_min": round(steady * 150 / 60, 1),
    }
