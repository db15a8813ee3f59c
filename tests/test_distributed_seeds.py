"""torchrun and randomness: each process draws its own dropout masks, and a killed run resumes
each process's own draws, to the bit (gloo on CPU here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from helpers.training_runs import (
    LAST,
    cell_outputs,
    copy_run,
    finish,
    metric_history,
    saved_epoch,
    start_training,
)

# Logs a digest of torch's and numpy's global RNG states as each epoch starts (a line per
# epoch, in a file per rank), then runs stage train as -m would. With STOP_AT, every process
# stops as that epoch starts, as a kill between epochs would: the checkpoint before it is saved.
RECORD_DRAWS = """
import hashlib
import os
import numpy as np
import torch
from pipeline.io.console import run
from pipeline.stages import train
from pipeline.training import fitting

run_epoch = fitting.run_epoch

def recorded(trainer, loaders, valid_targets, epoch, epochs):
    if epoch == int(os.environ.get("STOP_AT", 0)):
        raise SystemExit(f"stopped before epoch {epoch}")
    state = torch.get_rng_state().numpy().tobytes() + np.random.get_state()[1].tobytes()
    with open(f"draws.{os.environ.get('RANK', 'single')}.txt", "a") as log:
        print(epoch, hashlib.md5(state).hexdigest(), file=log)
    return run_epoch(trainer, loaders, valid_targets, epoch, epochs)

fitting.run_epoch = recorded
run(train.main)
"""
ARGS = ["--model", "d2l_resnet11", "--fold", "0"]
TORCHRUN = ["-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]


def draws(workdir: Path, rank: str) -> dict[int, str]:
    """Each epoch's digest, by epoch."""
    lines = (workdir / f"draws.{rank}.txt").read_text().split("\n")
    return {int(epoch): digest for epoch, digest in (line.split() for line in lines if line)}


def prepared(finished_run: Path, workdir: Path) -> Path:
    copy_run(finished_run, workdir, epochs=3, drop_rate=0.5, deterministic=True)
    (workdir / "record_draws.py").write_text(RECORD_DRAWS)
    return workdir


@pytest.mark.slow
def test_processes_draw_their_own_dropout_and_a_killed_run_resumes_them(finished_run, tmp_path):
    reference = prepared(finished_run, tmp_path / "reference")
    single = prepared(finished_run, tmp_path / "single")
    stopped = prepared(finished_run, tmp_path / "stopped")
    torchrun = [sys.executable, *TORCHRUN, "record_draws.py", *ARGS]
    runs = [
        start_training(reference, torchrun),
        start_training(single, [sys.executable, "record_draws.py", *ARGS]),
    ]
    for process, workdir in zip(runs, (reference, single), strict=True):
        finish(process, workdir)

    # Rank 0 starts from a single process's stream; rank 1 from its own, every epoch.
    ranks = [draws(reference, "0"), draws(reference, "1")]
    assert ranks[0][1] == draws(single, "single")[1]
    assert all(ranks[0][epoch] != ranks[1][epoch] for epoch in (1, 2, 3)), ranks

    # Stopped after epoch 2, then run again: every rank goes on with its own draws.
    stop = start_training(stopped, torchrun, STOP_AT="3")
    stop.communicate(timeout=300)
    assert stop.returncode != 0 and saved_epoch(stopped / LAST) == 2
    out = finish(start_training(stopped, torchrun), stopped)
    assert "resuming d2l_resnet11 fold 0 from epoch 3" in out
    assert [draws(stopped, "0"), draws(stopped, "1")] == ranks
    assert metric_history(stopped) == metric_history(reference)
    expected, resumed = cell_outputs(reference), cell_outputs(stopped)
    assert resumed["epoch"] == expected["epoch"]
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name
    for name in ("oof_logits", "test_logits"):
        assert (resumed[name] == expected[name]).all(), name
