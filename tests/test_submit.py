"""Stage `submit`: argmax labels in test.csv's order, checked before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.projects import write_prepared_project
from helpers.submissions import CLASSES, COLUMNS, TEST

from pipeline.competition.submission import SubmissionError, submission_problems
from pipeline.config.params import load_params
from pipeline.io.console import PipelineError
from pipeline.io.files import file_md5
from pipeline.stages import submit as submit_stage
from pipeline.stages.submit import make_submission


def test_labels_come_from_argmax_in_test_order():
    logits = np.array([[0, 1, 0], [5, 0, 0], [0, 0, 2]], dtype=float)
    submission = make_submission(logits, TEST, CLASSES, COLUMNS)
    assert submission.columns.tolist() == COLUMNS
    assert submission["image"].tolist() == TEST.tolist()
    assert submission["label"].tolist() == ["betula", "acer", "quercus"]
    assert submission_problems(submission, TEST, CLASSES, COLUMNS) == []


def test_custom_header_follows_params():
    submission = make_submission(np.eye(3), TEST, CLASSES, ["id", "species"])
    assert submission.columns.tolist() == ["id", "species"]
    assert submission_problems(submission, TEST, CLASSES, ["id", "species"]) == []


def test_submission_problems_is_still_importable_from_submit():
    # tests/test_pipeline.py (and users' scripts) import it from here.
    from pipeline.competition.submission import submission_problems as from_submit

    assert from_submit is submission_problems


# ----------------------------------------------------------------------------------------------
# The stage


@pytest.fixture
def ensembled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder holding what submit reads: prepared test.csv, classes.json, logits."""
    monkeypatch.chdir(tmp_path)
    write_prepared_project(tmp_path, CLASSES, TEST)
    (tmp_path / "data/ensemble").mkdir()
    np.save(tmp_path / "data/ensemble/test_logits.npy", np.eye(3)[[2, 0, 1]])
    return tmp_path


def test_stage_writes_the_submission(ensembled, capsys):
    submit_stage.main([])
    written = pd.read_csv(ensembled / "submissions/submission.csv", dtype=str)
    assert written["image"].tolist() == TEST.tolist()
    assert written["label"].tolist() == ["quercus", "acer", "betula"]
    assert "3 rows, 3 distinct labels" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("stale_logits", "shape (2, 3), expected (3, 3)"),
        ("no_logits", "data/ensemble/test_logits.npy: not found"),
        ("no_prepared", "data/prepared/test.csv: not found"),
        ("no_classes", "data/prepared/classes.json: class list not found"),
    ],
)
def test_stage_refuses_missing_or_stale_inputs_and_writes_nothing(ensembled, breakage, expected):
    if breakage == "stale_logits":
        np.save(ensembled / "data/ensemble/test_logits.npy", np.eye(3)[:2])
    elif breakage == "no_logits":
        (ensembled / "data/ensemble/test_logits.npy").unlink()
    elif breakage == "no_prepared":
        (ensembled / "data/prepared/test.csv").unlink()
    else:
        (ensembled / "data/prepared/classes.json").unlink()
    with pytest.raises(PipelineError) as info:
        submit_stage.main([])
    assert expected in str(info.value)
    assert "--test-csv" not in str(info.value)  # a flag of the tools, not of this stage
    assert not (ensembled / "submissions").exists()


def test_stage_refuses_an_invalid_submission_and_keeps_the_previous_one(ensembled, monkeypatch):
    submit_stage.main([])
    before = (ensembled / "submissions/submission.csv").read_bytes()
    record = (ensembled / "submissions/submission.json").read_bytes()
    # A class list naming a test image's class as empty: the check must stop the write.
    (ensembled / "data/prepared/classes.json").write_text(json.dumps(["acer", "", "quercus"]))
    with pytest.raises(SubmissionError, match="submission not written, 1 problem"):
        submit_stage.main([])
    assert (ensembled / "submissions/submission.csv").read_bytes() == before
    assert (ensembled / "submissions/submission.json").read_bytes() == record
    names = sorted(p.name for p in (ensembled / "submissions").iterdir())
    assert names == ["submission.csv", "submission.json"]


def test_stage_writes_the_header_the_sample_names(ensembled):
    params = {"data": {"submission_columns": ["id", "category"]}}
    params["train"] = {"models": {"d2l_resnet11": {}}}
    (ensembled / "params.yaml").write_text(json.dumps(params))  # JSON is YAML
    submit_stage.main([])
    written = pd.read_csv(ensembled / "submissions/submission.csv", dtype=str)
    assert written.columns.tolist() == ["id", "category"]
    assert written["id"].tolist() == TEST.tolist()
    record = json.loads((ensembled / "submissions/submission.json").read_text())
    assert record["data"]["submission_columns"] == ["id", "category"]


def test_stage_records_what_the_submission_was_made_with(ensembled):
    submit_stage.main([])
    record = json.loads((ensembled / "submissions/submission.json").read_text())
    assert record["oof_accuracy"] is record["oof_accuracy_fitted_cross"] is None  # no metrics
    assert record["oof_accuracy_equal"] is None
    metrics = {"oof_accuracy": 0.75, "oof_accuracy_fitted_cross": 0.625, "oof_images": 8}
    metrics["oof_accuracy_equal"] = 0.5
    (ensembled / "results/ensemble").mkdir(parents=True)
    (ensembled / "results/ensemble/metrics.json").write_text(json.dumps(metrics))
    submit_stage.main([])
    record = json.loads((ensembled / "submissions/submission.json").read_text())
    assert (record["oof_accuracy"], record["oof_accuracy_fitted_cross"]) == (0.75, 0.625)
    assert record["oof_accuracy_equal"] == 0.5
    assert record["md5"] == file_md5(ensembled / "submissions/submission.csv")
    assert record["data"] == {
        "root": "data/synthetic",
        "image_col": "image",
        "label_col": "label",
        "submission_columns": ["image", "label"],
    }
    assert record["predictions"] == "data/ensemble"
    assert set(record["models"]) == set(load_params().train.models)
    assert set(record["models"]["d2l_resnet11"]) == {"epochs", "image_size"}
