"""gpu_check's temporary projects, stage train run in them, and the OOM and torchrun checks.

A project is a folder holding a Classify-Leaves-style competition folder (train.csv, test.csv,
images/ of generated 224 px JPEGs, from benchmarks/throughput_data.py's generator), a params.yaml
(the shipped one with overrides laid over it) and, once `prepare_project` ran stages prepare,
split and cache in it, data/prepared, folds and the uint8 cache. The train stage then runs in
a subprocess, as dvc.yaml runs it, or through gpu_check_runner.py, which lays a GPU memory cap
or a timer of the training passes over it without touching the project's code.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
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

from gpu_check_runner import TRAIN_SECONDS_PREFIX  # noqa: E402
from throughput_data import write_jpegs  # noqa: E402

from pipeline.config.presets import merged_params  # noqa: E402

EPOCH_LINE = re.compile(r"^epoch\s+(\d+)/(\d+) .*\| ([\d.]+)s", re.MULTILINE)
TRAIN_SECONDS_LINE = re.compile(rf"^{re.escape(TRAIN_SECONDS_PREFIX)} ([\d.]+)$", re.MULTILINE)
COMPETITION = "data/leaves"
BASE_PARAMS = "gpu_check_base_params.yaml"  # params.yaml as prepared; each run starts from it
# The OOM check's cap: a few GiB on any card, so that its workload fails as fast everywhere.
OOM_GPU_MEMORY_GIB = 3


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
    for name in ("params.yaml", BASE_PARAMS):
        (root / name).write_text(yaml.safe_dump(params, sort_keys=False))


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


def run_process(command: list[str], cwd: Path, env: dict, timeout: float):
    """`command`'s CompletedProcess; on timeout its whole process group (data loader workers
    too) is killed, and the output so far comes back with exit code 124."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        returncode = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        returncode = 124
    return subprocess.CompletedProcess(command, returncode, stdout, stderr)


def stage_environment() -> dict:
    """os.environ with the project first on PYTHONPATH, and output unbuffered."""
    # Keep what the caller had after it (on the device machine: the carried wheels).
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1", "LEAF_QUIET": "1"}


def run_stage(
    root: Path,
    model: str,
    timeout: float,
    launcher: list[str] | None = None,
    gpu_memory_gib: float | None = None,
    time_train: bool = False,
) -> subprocess.CompletedProcess:
    """Stage train `--model <model> --fold 0` in project `root`: under `launcher -m` if given,
    else through gpu_check_runner.py with its instruments."""
    stage_args = ["--model", model, "--fold", "0"]
    if launcher is not None:
        command = [*launcher, "-m", "pipeline.stages.train", *stage_args]
    else:
        command = [sys.executable, str(ROOT / "benchmarks" / "gpu_check_runner.py")]
        if gpu_memory_gib is not None:
            command += ["--gpu-memory-gib", str(gpu_memory_gib)]
        if time_train:
            command.append("--time-train")
        command += ["--", *stage_args]
    return run_process(command, root, stage_environment(), timeout)


def set_run(root: Path, overrides: dict) -> None:
    """The project's params as prepared with `overrides` laid over them, and no earlier run."""
    params = yaml.safe_load((root / BASE_PARAMS).read_text())
    (root / "params.yaml").write_text(
        yaml.safe_dump(merged_params(overrides, params), sort_keys=False)
    )
    for folder in ("models", "results", "checkpoints"):
        subprocess.run(["rm", "-rf", str(root / folder)], check=True)


def epoch_seconds(stdout: str) -> list[float]:
    """The seconds of each epoch (training and validation) from the stage's epoch lines."""
    return [float(match.group(3)) for match in EPOCH_LINE.finditer(stdout)]


def train_seconds(stdout: str) -> list[float]:
    """The seconds of each training pass, from gpu_check_runner.py's --time-train lines."""
    return [float(match.group(1)) for match in TRAIN_SECONDS_LINE.finditer(stdout)]


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


def leaves_project(cfg, device, folder: Path) -> tuple[Path, float | None]:
    """One Classify-Leaves-sized project per run (5 folds, the cache at the check size), shared
    by the anchor, stage_resnet50* and preset checks; with its build seconds when this call
    built it (it takes the seconds from the budget of the first check that needs it)."""
    root = folder / "leaves"
    if (root / "params.yaml").exists():
        return root, None
    overrides = {
        "split": {"n_splits": 5},
        "cache": {"image_size": cfg.leaves_size},
        "train": {
            "models": {cfg.stage_speed_model: {}},
            "folds": [0],
            "device": device.type,
            "defaults": {"image_size": cfg.leaves_size},
        },
    }
    start = time.perf_counter()
    prepare_project(root, cfg.leaves_images, cfg.leaves_classes, overrides)
    return root, round(time.perf_counter() - start, 1)


def check_leaves_project(cfg, device, budget, folder: Path) -> dict:
    """Builds the leaves project (stages prepare, split and cache of 18,353 generated JPEGs)
    for the checks after it, so that none of their budgets pays for it."""
    root, built_s = leaves_project(cfg, device, folder)
    return {
        "status": "pass",
        "images": cfg.leaves_images,
        "classes": cfg.leaves_classes,
        "image_size": cfg.leaves_size,
        "build_s": built_s if built_s is not None else "built earlier",
        "fold0_train_images": fold_train_images(root),
    }


def fold_train_images(root: Path, fold: int = 0) -> int:
    """How many of the project's images train when `fold` validates."""
    from pipeline.config.paths import FOLDS_FILE

    return int((pd.read_csv(root / FOLDS_FILE)["fold"] != fold).sum())


def check_oom(cfg, device, budget, folder: Path) -> dict:
    """A real out-of-memory under a GPU memory cap: the stage ends with its message, exit 2."""
    if device.type != "cuda":
        return {"status": "skipped: no CUDA"}
    root = small_project(cfg, device, folder)
    # ResNet-50 at 1024 px, fp32, batch 32: the stem's first two activations alone take 4 GiB,
    # more than the cap, so the first training step fails whatever the card.
    huge = {"image_size": 1024, "batch_size": cfg.small_images // 2, "amp": False}
    # Without the cache: it holds the images at the small size, and the stage would refuse it.
    train = {"models": {"resnet50": {}}, "defaults": huge}
    set_run(root, {"cache": {"enabled": False}, "train": train})
    result = run_stage(root, "resnet50", budget.left(), gpu_memory_gib=OOM_GPU_MEMORY_GIB)
    message = "out of GPU memory training" in result.stderr
    traceback = "Traceback" in result.stderr
    return {
        "status": "pass" if result.returncode == 2 and message and not traceback else "fail",
        "gpu_memory_cap_gib": OOM_GPU_MEMORY_GIB,
        "exit_code": result.returncode,
        "message": result.stderr.strip().splitlines()[-1][:300] if result.stderr else "",
        **({} if result.returncode == 2 else {"output_tail": tail(result)}),
    }


def check_torchrun(cfg, device, budget, folder: Path) -> dict:
    """`torchrun --nproc_per_node=1` trains one fold (NCCL on CUDA; gloo, the same path, on CPU)."""
    root = small_project(cfg, device, folder)
    set_run(
        root,
        {
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
    result = run_stage(root, cfg.stage_model, budget.left(), launcher=launcher)
    written = (root / "models" / cfg.stage_model / "fold0" / "best.pt").exists()
    return {
        "status": "pass" if result.returncode == 0 and written else "fail",
        "backend": "nccl" if device.type == "cuda" else "gloo",
        "exit_code": result.returncode,
        "best_pt_written": written,
        **({} if result.returncode == 0 else {"output_tail": tail(result)}),
    }
