"""DVC the way its users work: competition data dvc-added inside the project, experiments
queued (`dvc exp run --queue`, `dvc queue start`) and run in a temp workspace (`--temp`), and a
remote that a fresh clone pulls a finished run from."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest
import yaml
from conftest import run

from pipeline.tools.leaderboard import leaderboard

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COMP = "data/comp"
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
ENSEMBLE = "results/ensemble/metrics.json"
QUEUE_WAIT_S = 1800  # a bound for a stuck queue, not a timing assertion


def commit(project, message: str) -> None:
    run(["git", "add", "-A"], project)
    run([*GIT, "commit", "-qm", message], project)


def dvc_added_competition(project):
    """data/comp: the synthetic generator's folder, dvc-added and committed as data.root."""
    run(["python3", "-m", "pipeline.stages.generate"], project)
    shutil.move(project / "data/synthetic", project / COMP)
    run(["dvc", "add", COMP], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["root"] = COMP
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(project, "data: comp under DVC")


def experiments(project) -> dict[str, dict]:
    """name -> (state, data) of the baseline commit's experiments in `dvc exp show --json`."""
    entries = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    commit_entry = next(e for e in entries if e["rev"] != "workspace")
    return {
        (exp.get("name") or exp["revs"][0]["name"]): {
            "state": (exp.get("executor") or {}).get("state"),
            "data": exp["revs"][0]["data"],
        }
        for exp in commit_entry.get("experiments") or []
    }


def ensemble_metrics(data: dict) -> dict:
    return data["metrics"][ENSEMBLE]["data"]


def test_queued_and_temp_experiments_on_dvc_added_data(project):
    dvc_added_competition(project)
    run(
        ["dvc", "exp", "run", "--queue", "-n", "lr-a", "-S", "train.defaults.optimizer.lr=0.003"],
        project,
    )
    run(
        [
            "dvc",
            "exp",
            "run",
            "--queue",
            "-n",
            "lr-b",
            "-S",
            "train.defaults.optimizer.lr=0.01",
            "-S",
            "train.defaults.image_size=24",
        ],
        project,
    )
    run(["dvc", "queue", "start", "-j", "1"], project)
    deadline = time.monotonic() + QUEUE_WAIT_S
    while re.search(r"Queued|Running", run(["dvc", "queue", "status"], project).stdout):
        assert time.monotonic() < deadline, "the queue did not finish"
        time.sleep(5)
    run(["dvc", "exp", "run", "--temp", "-n", "folds-1", "-S", "train.folds=[0]"], project)

    found = experiments(project)
    assert {"lr-a", "lr-b", "folds-1"} <= set(found)
    assert found["lr-a"]["state"] == found["lr-b"]["state"] == "success"
    assert found["folds-1"]["state"] in (None, "success")  # DVC names no executor for --temp
    for name in ("lr-a", "lr-b", "folds-1"):
        metrics = ensemble_metrics(found[name]["data"])
        assert 0.0 <= metrics["oof_accuracy"] <= 1.0
    assert ensemble_metrics(found["folds-1"]["data"])["num_folds"] == 1
    assert ensemble_metrics(found["lr-a"]["data"])["num_folds"] == 2
    # Each experiment's setup.* columns (the first after the accuracies) are its own settings.
    setup = ensemble_metrics(found["lr-b"]["data"])["setup"]
    assert setup == {"models": "d2l_resnet11+meta", "image_size": 24, "epochs": 1, "lr": 0.01}
    assert ensemble_metrics(found["lr-a"]["data"])["setup"]["lr"] == 0.003
    params = {n: found[n]["data"]["params"]["params.yaml"]["data"] for n in found}
    assert params["lr-b"]["train"]["defaults"]["image_size"] == 24
    assert params["lr-a"]["data"]["root"] == COMP
    # The workspace is left alone, and the leaderboard reads the same JSON.
    assert not (project / "results/ensemble/metrics.json").exists()
    entries = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    rows = {row[0]: row for row in leaderboard(entries)}
    assert rows["lr-b"].changes == [
        "train.defaults.image_size=24",
        "train.defaults.optimizer.lr=0.01",
    ]
    assert rows["lr-a"].accuracy is not None and rows["lr-a"].folds == 2
    # One fold with fitted weights ranks by its equal weights' OOF accuracy, after the rest.
    equal = ensemble_metrics(found["folds-1"]["data"])["oof_accuracy_equal"]
    assert (rows["folds-1"].accuracy, rows["folds-1"].folds) == (equal, 1) and list(rows)[
        -1
    ] == "folds-1"
    plots = run(["dvc", "plots", "diff", "lr-a", "lr-b", "--json"], project).stdout
    assert "results/train/d2l_resnet11/fold0/plots/metrics" in plots


def test_a_fresh_clone_pulls_the_run_from_a_remote(reproduced_project, tmp_path_factory):
    project = reproduced_project  # a copy of a project after its first `dvc repro`
    remote = tmp_path_factory.mktemp("remote")
    run(["dvc", "remote", "add", "-d", "storage", str(remote)], project)
    commit(project, "run")
    assert run(["git", "status", "--porcelain"], project).stdout == ""
    run(["dvc", "push"], project)

    clone = tmp_path_factory.mktemp("clone") / "project"
    run(["git", "clone", "-q", str(project), str(clone)], clone.parent)
    run(["dvc", "remote", "add", "-f", "-d", "storage", str(remote)], clone)
    run(["dvc", "pull"], clone)
    output = run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in output
    assert "up to date" in output
    submission = "submissions/submission.csv"
    assert (clone / submission).read_bytes() == (project / submission).read_bytes()
    assert (clone / ENSEMBLE).read_bytes() == (project / ENSEMBLE).read_bytes()
