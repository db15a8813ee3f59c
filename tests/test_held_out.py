"""benchmarks/held_out.py: a held-out split keeps every labelled row once, and a run is scored
on exactly the held-out images."""

from __future__ import annotations

import json
from pathlib import Path

import held_out
import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def in_finished_run(finished_run, monkeypatch) -> Path:
    """The finished tiny run as the cwd (read-only: the tests write under tmp_path)."""
    monkeypatch.chdir(finished_run)
    return finished_run


def test_a_split_holds_out_each_class_alike_and_loses_no_row(in_finished_run, tmp_path):
    source = in_finished_run / "data/synthetic"
    out = tmp_path / "held"
    n_train, n_held = held_out.split_labelled(source, out, per_class=1, seed=0)

    labelled = pd.read_csv(source / "train.csv")
    train, test = pd.read_csv(out / "train.csv"), pd.read_csv(out / "test.csv")
    answers = pd.read_csv(out / held_out.ANSWERS_NAME)
    assert (len(train), len(test)) == (n_train, n_held)
    assert n_held == labelled["label"].nunique() and list(test.columns) == ["image"]
    assert answers["label"].value_counts().eq(1).all()
    rejoined = pd.concat([train, answers]).sort_values("image", ignore_index=True)
    assert rejoined.equals(labelled.sort_values("image", ignore_index=True))
    assert (out / "images").resolve() == (source / "images").resolve()


def test_a_split_that_would_leave_a_class_empty_is_refused(in_finished_run, tmp_path):
    source = in_finished_run / "data/synthetic"
    most = pd.read_csv(source / "train.csv")["label"].value_counts().min()
    with pytest.raises(SystemExit, match="lower --per-class"):
        held_out.split_labelled(source, tmp_path / "held", per_class=most, seed=0)
    assert not (tmp_path / "held").exists()


def test_the_synthetic_answers_label_exactly_the_test_images(in_finished_run, tmp_path):
    answers_file = tmp_path / "answers.csv"
    held_out.synthetic_answers(answers_file)
    answers = pd.read_csv(answers_file)
    test = pd.read_csv(in_finished_run / "data/synthetic/test.csv")
    assert sorted(answers["image"]) == sorted(test["image"])
    labelled = pd.read_csv(in_finished_run / "data/synthetic/train.csv")
    assert set(answers["label"]) <= set(labelled["label"])


def test_each_score_is_the_share_of_its_predictions_the_answers_call_right(in_finished_run):
    submission = pd.read_csv("submissions/submission.csv")
    classes = json.loads(Path("data/prepared/classes.json").read_text())
    folds = [np.load(f"models/d2l_resnet11/fold{k}/test_logits.npy") for k in (0, 1)]
    network = [
        classes[i] for i in np.mean(folds, axis=0).argmax(axis=1)
    ]  # ensemble.average: logits

    as_submitted = submission[["image", "label"]]
    scores = held_out.held_out_scores(as_submitted)
    assert set(scores) == {"d2l_resnet11", "meta", "submission"}
    assert scores["submission"] == 1.0
    assert (
        held_out.held_out_scores(submission[["image"]].assign(label=network))["d2l_resnet11"] == 1.0
    )

    one_wrong = as_submitted.copy()
    one_wrong.loc[0, "label"] = next(c for c in classes if c != one_wrong.loc[0, "label"])
    assert held_out.held_out_scores(one_wrong)["submission"] == pytest.approx(
        1 - 1 / len(submission)
    )
    some = as_submitted.iloc[:2]  # only the held-out images count
    assert held_out.held_out_scores(some)["submission"] == 1.0


def test_a_submission_without_the_held_out_images_is_refused(in_finished_run, tmp_path):
    answers = pd.DataFrame({"image": ["images/not-there.jpg"], "label": ["x"]})
    with pytest.raises(SystemExit, match="lacks 1 held-out image"):
        held_out.held_out_scores(answers)
