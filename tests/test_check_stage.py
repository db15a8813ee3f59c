"""End to end: stage check stops a bad setting before DVC deletes any output, and stage collect
keeps stale cells in models/ from making ensemble or pseudo look changed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from conftest import run
from helpers.processes import child_env

pytestmark = pytest.mark.e2e

# One fold keeps the run to a single trained cell.
CELL = "models/d2l_resnet11/fold0"
KEPT = [
    CELL + "/best.pt",
    "checkpoints/d2l_resnet11/fold0/last.pt",
    "results/train/d2l_resnet11/fold0/metrics.json",
    "results/train/d2l_resnet11/fold0/plots/metrics/valid/acc.tsv",
    "results/ensemble/metrics.json",
    "submissions/submission.csv",
    "submissions/submission.json",
    "data/params_checked.txt",
]


@pytest.fixture
def tiny_params(tiny_params):
    tiny_params["train"]["folds"] = [0]
    return tiny_params


def dvc(project, *args: str) -> subprocess.CompletedProcess:
    """Run dvc in `project` without failing the test on a non-zero exit (see conftest.run)."""
    env = child_env(project, DVC_NO_ANALYTICS="1")
    return subprocess.run(["dvc", *args], cwd=project, capture_output=True, text=True, env=env)


def changed_stages(project) -> dict:
    """`dvc status --json`: {stage: [changes]} of the stages that would rerun."""
    return json.loads(run(["dvc", "status", "--json"], project).stdout or "{}")


def test_rejected_setting_and_stale_cells_cost_nothing(reproduced, reproduced_project):
    project = reproduced_project  # a copy of a project after its first `dvc repro`
    ran = set(re.findall(r"Running stage '([^']+)'", reproduced[1]))
    assert {"check", "train@d2l_resnet11-0", "collect", "ensemble", "submit"} <= ran
    assert changed_stages(project) == {}
    marker = (project / "data/params_checked.txt").read_bytes()
    lock = (project / "dvc.lock").read_text()
    params = (project / "params.yaml").read_text()

    # 1. A rejected setting fails in stage check, before DVC deletes any output.
    failed = dvc(project, "exp", "run", "-S", "train.defaults.epochs=-1")
    assert failed.returncode != 0
    assert "train.defaults.epochs" in failed.stdout + failed.stderr
    assert "Running stage 'check'" in failed.stdout
    assert "Running stage 'train" not in failed.stdout
    for path in KEPT:
        assert (project / path).is_file(), f"{path} was deleted"
    status = run(["dvc", "status"], project).stdout
    assert "deleted" not in status and "not in cache" not in status, status

    # The marker never changes: with the params back, nothing is out of date.
    (project / "params.yaml").write_text(params)
    assert (project / "data/params_checked.txt").read_bytes() == marker
    assert changed_stages(project) == {}
    assert (project / "dvc.lock").read_text() == lock

    # 2. A stale cell of a model no longer listed (as `dvc exp apply` of a run with another
    # model list leaves it) changes only the cheap manifest stage, which writes the same bytes.
    shutil.copytree(project / CELL, project / "models/old_model/fold0")
    assert set(changed_stages(project)) == {"collect"}
    output = run(["dvc", "repro"], project).stdout
    assert set(re.findall(r"Running stage '([^']+)'", output)) == {"collect"}
    assert changed_stages(project) == {}

    # 3. A rerun of a finished fold gives the same cell; the resume state is in no lock.
    lock = (project / "dvc.lock").read_text()
    run(["dvc", "repro", "--force", "--single-item", "train@d2l_resnet11-0"], project)
    after = (project / "dvc.lock").read_text()
    cell = re.compile(r"path: models/d2l_resnet11/fold0\n\s+hash: md5\n\s+md5: (\S+)")
    assert cell.search(after).group(1) == cell.search(lock).group(1)
    assert "last.pt" not in after
