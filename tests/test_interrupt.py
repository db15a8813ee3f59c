"""Ctrl-C, then the same `dvc exp run`: training resumes where it stopped, in a real DVC repo.

`dvc exp run` restores every cached output of the baseline over the workspace before it runs;
last.pt is no DVC output, so that DVC has no copy of it to restore, and the epoch a Ctrl-C
interrupted is all that is lost.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
import yaml
from conftest import run
from helpers.training_runs import LAST, cell_outputs, saved_epoch, start_training

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXPERIMENT = [
    "dvc",
    "exp",
    "run",
    "-S",
    "train.defaults.epochs=12",
    "-S",
    "train.deterministic=true",
]


def start(project) -> subprocess.Popen:
    """The experiment, as Ctrl-C in a terminal would reach it: its own process group."""
    return start_training(project, EXPERIMENT, code=project)


def interrupt_after_epoch(process: subprocess.Popen, checkpoint, epoch: int) -> int:
    """SIGINT the experiment's process group, as Ctrl-C does, once `epoch` is saved."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        saved = saved_epoch(checkpoint)
        if saved is not None and saved >= epoch:
            os.killpg(process.pid, signal.SIGINT)
            process.communicate(timeout=120)
            assert process.returncode != 0, "the experiment finished before the interrupt"
            return saved_epoch(checkpoint)
        time.sleep(0.01)
    raise AssertionError(f"the experiment ended (or hung) before epoch {epoch} was saved")


def finish(process: subprocess.Popen, project) -> str:
    out, _ = process.communicate(timeout=900)
    assert process.returncode == 0, f"{out[-3000:]}\n{(project / 'stderr.log').read_text()[-3000:]}"
    return out


def committed_baseline(project) -> None:
    """A finished training run, committed: had last.pt been a cached output, dvc.lock would
    record each cell's finished marker and `dvc exp run` would restore it from the cache."""
    run(["dvc", "repro", "train"], project)  # the cells; what follows them is not needed
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], project)


def test_ctrl_c_then_the_same_exp_run_resumes_bit_identically(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["folds"] = [0]  # the baseline trains the one cell the experiment changes
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    committed_baseline(project)
    reference = project.parent / f"{project.name}-reference"
    shutil.copytree(project, reference)
    uninterrupted = start(reference)

    stopped_at = interrupt_after_epoch(start(project), project / LAST, epoch=3)
    assert stopped_at < 12
    out = finish(start(project), project)
    finish(uninterrupted, reference)

    assert f"resuming d2l_resnet11 fold 0 from epoch {stopped_at + 1}" in out
    assert "training from scratch" not in out
    expected, resumed = cell_outputs(reference), cell_outputs(project)
    assert resumed["epoch"] == expected["epoch"]
    for name, tensor in expected["state_dict"].items():
        assert (resumed["state_dict"][name] == tensor).all(), name
    for name in ("oof_rows", "oof_logits", "test_logits"):
        assert (resumed[name] == expected[name]).all(), name
