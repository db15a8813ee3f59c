"""End to end: the real `dvc repro` on a tiny configuration, then incremental re-runs."""

import csv
import io
import json
import re

import pandas as pd
import pytest
import yaml
from conftest import run
from helpers.images import write_competition, write_csv

from pipeline.competition.submission import submission_problems

pytestmark = pytest.mark.e2e

# `dvc exp show --csv`'s own columns, before the metrics.
SHOW_FIXED_COLUMNS = {"Experiment", "rev", "typ", "Created", "parent", "State", "Executor"}


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def repro(project) -> set[str]:
    """Run `dvc repro`; return the names of the stages it ran."""
    return stages_run(run(["dvc", "repro"], project).stdout)


def edit_params(project, change) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_dvc_repro_end_to_end_and_incremental(reproduced, reproduced_project):
    # 1. A fresh clone reproduces everything and ends with a valid submission (the first run is
    # shared with the other end-to-end tests; this is a copy of its project).
    project = reproduced_project
    assert stages_run(reproduced[1]) == {
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

    # 6. Plain `dvc exp show` opens with the OOF accuracies and the run's setup (the ensemble's
    # metrics.json is the only metrics file before pseudo's); `dvc metrics show` has the
    # per-fold accuracies; `dvc plots show` renders the DVCLive learning curves.
    table = csv.DictReader(io.StringIO(run(["dvc", "exp", "show", "--csv"], project).stdout))
    workspace, header = next(table), table.fieldnames
    columns = [name for name in header if name not in SHOW_FIXED_COLUMNS]
    setup = ["setup.models", "setup.image_size", "setup.epochs", "setup.lr"]
    accuracies = ["oof_accuracy", "oof_accuracy_fitted_cross", "oof_accuracy_fitted"]
    assert columns[:7] == accuracies + setup
    assert not [name for name in header if "results/train" in name or "best_valid_acc" in name]
    assert workspace["setup.models"] == "d2l_resnet11+resnet10t"
    assert workspace["setup.lr"] == f"{metrics['setup']['lr']}" and "/0.01" in workspace["setup.lr"]
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    files = shown[""]["data"]
    assert list(files) == ["results/ensemble/metrics.json", "results/pseudo/metrics.json"]
    folds = files["results/ensemble/metrics.json"]["data"]["models"]["resnet10t"]["folds"]
    assert set(folds) == {"0", "1"}
    run(["dvc", "plots", "show", "-o", "plots_html"], project)
    assert (project / "plots_html/index.html").is_file()


def test_an_edit_to_tables_outside_data_root_reruns_prepare(project, tmp_path_factory):
    # Image cells without images/ (docs/real-data.md): the root is the images folder and the
    # tables lie beside it, out of the root's hash.
    comp = write_competition(tmp_path_factory.mktemp("bare"))
    write_csv(comp.train_csv, ["image", "label"], [(i[len("images/") :], c) for i, c in comp.train])
    write_csv(comp.test_csv, ["image"], [[i[len("images/") :]] for i in comp.test])
    data = {"root": str(comp.root / "images"), "train_csv": "../train.csv"}
    data.update(test_csv="../test.csv", sample_submission=None)
    edit_params(project, lambda p: p["data"].update(data))
    run(["dvc", "repro", "prepare"], project)
    assert "up to date" in run(["dvc", "status", "prepare"], project).stdout
    write_csv(comp.test_csv, ["image"], [[i[len("images/") :]] for i in comp.test[:-1]])
    assert "modified:" in run(["dvc", "status", "prepare"], project).stdout
