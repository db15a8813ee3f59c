"""One training cell of the tiny run (tests/conftest.py `finished_run`), run in a child
process and killed, resumed or read back: shared by the resume, interrupt, recipe and device
data tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from helpers.processes import REPO_ROOT, child_env
from pipeline.config.paths import fold_dir, fold_results_dir, last_checkpoint_path

MODEL, FOLD = "d2l_resnet11", 0
TRAIN = [sys.executable, "-m", "pipeline.stages.train", "--model", MODEL, "--fold", str(FOLD)]
LAST = last_checkpoint_path(MODEL, FOLD)


def write_params(workdir: Path, source: Path, **changes) -> None:
    """`source`'s params.yaml in `workdir`, with keys of `train` or `train.defaults` changed."""
    params = yaml.safe_load((source / "params.yaml").read_text())
    for key, value in changes.items():
        group = params["train"] if key in params["train"] else params["train"]["defaults"]
        group[key] = {**group[key], **value} if isinstance(value, dict) else value
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def copy_run(finished_run: Path, workdir: Path, **changes) -> Path:
    """A new project folder with the tiny run's prepared data and its params, changed."""
    shutil.copytree(finished_run / "data", workdir / "data", ignore=shutil.ignore_patterns("ens*"))
    write_params(workdir, finished_run, **changes)
    return workdir


def start_training(
    workdir: Path, command: list[str] = TRAIN, code: Path = REPO_ROOT, **extra: str
) -> subprocess.Popen:
    """`command` in `workdir` importing the project from `code`, in its own process group
    (SIGKILL or SIGINT reaches its workers or stages too), with `extra` in its environment,
    stdout piped, stderr to a log."""
    # One thread each: the reference run shares the two cores, and OpenMP threads that wait for
    # a busy core spin (bit-identity holds for any thread count, as long as both runs agree).
    env = child_env(code, OMP_NUM_THREADS="1", DVC_NO_ANALYTICS="1", **extra)
    with open(workdir / "stderr.log", "a") as stderr:  # progress bars: too much for a pipe
        return subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
            preexec_fn=ctrl_c_as_in_a_terminal,
        )


def ctrl_c_as_in_a_terminal() -> None:
    """SIGINT's default action in the child, as in a terminal. A suite started as a background
    job of a shell without job control (`cmd &` in a script) inherits SIGINT ignored, and Python
    then never raises KeyboardInterrupt: the Ctrl-C tests would test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def finish(process: subprocess.Popen, workdir: Path) -> str:
    out, _ = process.communicate(timeout=300)
    err = (workdir / "stderr.log").read_text()
    assert process.returncode == 0, f"{out[-2000:]}\n{err[-2000:]}"
    return out


def saved_epoch(path: Path) -> int | None:
    """The epoch of the checkpoint at `path`, or None while there is none."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)["epoch"]
    except FileNotFoundError:
        return None


def kill_after_epoch(process: subprocess.Popen, checkpoint: Path, epoch: int) -> int:
    """SIGKILL the run as soon as `checkpoint` holds `epoch` or later; return that epoch."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        saved = saved_epoch(checkpoint)
        if saved is not None and saved >= epoch:
            with contextlib.suppress(ProcessLookupError):  # it may have just finished
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            assert process.returncode == -signal.SIGKILL, "the run finished before the kill"
            return saved_epoch(checkpoint)  # another epoch may have ended before the kill
        time.sleep(0.01)
    raise AssertionError(f"the run ended (or hung) before epoch {epoch} was saved")


def cell_outputs(workdir: Path) -> dict:
    cell = workdir / fold_dir(MODEL, FOLD)
    best = torch.load(cell / "best.pt", map_location="cpu", weights_only=False)
    oof = np.load(cell / "oof.npz")
    return {
        "epoch": best["epoch"],
        "state_dict": best["state_dict"],
        "oof_rows": oof["row"],
        "oof_logits": oof["logits"],
        "test_logits": np.load(cell / "test_logits.npy"),
    }


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def metric_history(workdir: Path) -> dict[str, str]:
    """Every DVCLive per-epoch metric file of the cell, by name."""
    plots = workdir / fold_results_dir(MODEL, FOLD) / "plots/metrics"
    return {str(p.relative_to(plots)): p.read_text() for p in sorted(plots.rglob("*.tsv"))}
