"""End to end: the real `dvc repro` on a tiny configuration, then incremental re-runs."""

import re

import pandas as pd
import pytest
import yaml
from conftest import run

from pipeline.submission import submission_problems

pytestmark = pytest.mark.e2e


def repro(project) -> set[str]:
    """Run `dvc repro`; return the names of the stages it ran."""
    output = run(["dvc", "repro"], project).stdout
    return set(re.findall(r"Running stage '([^']+)'", output))


def edit_params(project, change) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_dvc_repro_end_to_end_and_incremental(project):
    # 1. A fresh clone reproduces everything and ends with a valid submission.
    ran = repro(project)
    assert ran == {
        "check",
        "generate",
        "prepare",
        "split",
        "cache",
        "train@d2l_resnet11-0",
        "train@d2l_resnet11-1",
        "meta",
        "collect",
        "ensemble",
        "pseudo",
        "submit",
    }
    submission = pd.read_csv(project / "submissions/submission.csv")
    test = pd.read_csv(project / "data/synthetic/test.csv")
    classes = yaml.safe_load((project / "data/prepared/classes.json").read_text())
    assert submission_problems(submission, test["image"], classes, ["image", "label"]) == []
    metrics = yaml.safe_load((project / "results/ensemble/metrics.json").read_text())
    assert set(metrics["models"]) == {"d2l_resnet11", "meta"}  # stage meta is on by default
    assert 0.0 <= metrics["oof_accuracy"] <= 1.0
    for fold in (0, 1):
        cell = project / f"models/d2l_resnet11/fold{fold}"
        assert {p.name for p in cell.iterdir()} == {"best.pt", "oof.npz", "test_logits.npy"}
        live = project / f"results/train/d2l_resnet11/fold{fold}"
        assert (live / "plots/metrics/valid/acc.tsv").is_file()
        assert "oof_acc" in (live / "metrics.json").read_text()

    # 2. Nothing changed: nothing runs.
    assert repro(project) == set()

    # 3. Adding a backbone trains only the new one (then re-ensembles). The cache stage reruns
    # (it reads every model's image_size) but writes the same bytes, so no other cell reruns;
    # so does stage check (every param change), whose marker never changes.
    resnet10t_and_after = {
        "check",
        "cache",
        "train@resnet10t-0",
        "train@resnet10t-1",
        "collect",
        "ensemble",
        "pseudo",
        "submit",
    }
    edit_params(project, lambda p: p["train"]["models"].update({"resnet10t": {}}))
    assert repro(project) == resnet10t_and_after

    # 4. Changing one model's params re-runs only that model's cells and what follows.
    edit_params(
        project, lambda p: p["train"]["models"].update({"resnet10t": {"optimizer": {"lr": 0.01}}})
    )
    assert repro(project) == resnet10t_and_after
    metrics = yaml.safe_load((project / "results/ensemble/metrics.json").read_text())
    assert set(metrics["models"]) == {"d2l_resnet11", "resnet10t", "meta"}

    # 5. Turning off stage meta's logistic regression drops it from the ensemble; no network
    # reruns.
    edit_params(project, lambda p: p["meta"].update({"enabled": False}))
    assert repro(project) == {"check", "meta", "collect", "ensemble", "pseudo", "submit"}
    metrics = yaml.safe_load((project / "results/ensemble/metrics.json").read_text())
    assert set(metrics["models"]) == {"d2l_resnet11", "resnet10t"}

    # 6. `dvc exp show` and `dvc plots show` see the DVCLive metrics and plots.
    shown = run(["dvc", "metrics", "show", "--json"], project).stdout
    assert "oof_accuracy" in shown and "best_valid_acc" in shown
    run(["dvc", "plots", "show", "-o", "plots_html"], project)
    assert (project / "plots_html/index.html").is_file()
