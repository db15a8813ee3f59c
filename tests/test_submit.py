import numpy as np
import pandas as pd
import pytest

from pipeline.submit import make_submission, submission_problems

CLASSES = ["acer", "betula", "quercus"]
COLUMNS = ["image", "label"]
TEST = pd.Series(["images/5.jpg", "images/2.jpg", "images/9.jpg"])


def valid() -> pd.DataFrame:
    return pd.DataFrame({"image": TEST, "label": ["acer", "quercus", "acer"]})


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


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda s: s.rename(columns={"label": "species"}), "header is ['image', 'species']"),
        (lambda s: s.iloc[:2], "2 rows, test.csv has 3"),
        (lambda s: s.iloc[[1, 0, 2]], "rows differ from test.csv's order, first at row 2"),
        (lambda s: s.assign(label=["acer", "", "acer"]), "1 empty labels, first at row 3"),
        (lambda s: s.assign(label=["acer", None, "acer"]), "1 empty labels"),
        (lambda s: s.assign(label=["acer", "pinus", "acer"]), "not among the training classes"),
        (lambda s: s.assign(image=["images/5.jpg"] * 3), "duplicate images"),
    ],
)
def test_each_problem_is_reported(corrupt, expected):
    problems = submission_problems(corrupt(valid()), TEST, CLASSES, COLUMNS)
    assert any(expected in p for p in problems), problems
