"""Properties that hold for any input (hypothesis): the split, and the submission writer with its
validator (the ensemble average's: test_scoring.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.competition.submission import read_submission, submission_problems
from pipeline.io.files import write_csv
from pipeline.stages.split import assign_folds
from pipeline.stages.submit import make_submission

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------------------------
# Split


@st.composite
def split_cases(draw) -> tuple[pd.DataFrame, int, bool, int]:
    """(train table with rows in random class order, n_splits, shuffle, seed)."""
    n_splits = draw(st.integers(2, 6))
    counts = draw(st.lists(st.integers(n_splits, 4 * n_splits), min_size=1, max_size=8))
    labels = [f"class{c}" for c, n in enumerate(counts) for _ in range(n)]
    labels = draw(st.permutations(labels))
    classes = sorted(set(labels))
    train = pd.DataFrame(
        {
            "image": [f"images/{i}.jpg" for i in range(len(labels))],
            "label": labels,
            "target": [classes.index(label) for label in labels],
        }
    )
    return train, n_splits, draw(st.booleans()), draw(st.integers(0, 2**32 - 1))


@SETTINGS
@given(split_cases())
def test_split_partitions_rows_and_stratifies_every_class(case):
    train, n_splits, shuffle, seed = case
    folds = assign_folds(train, n_splits, shuffle, seed)

    # Every row once, in its place, with exactly one valid fold.
    assert folds["image"].tolist() == train["image"].tolist()
    assert folds["fold"].isin(range(n_splits)).all()
    valid_sets = [set(folds.image[folds.fold == k]) for k in range(n_splits)]
    assert sum(map(len, valid_sets)) == len(train)
    assert set().union(*valid_sets) == set(train["image"])

    # Each class spread evenly: present in every validation fold, counts within one.
    counts = folds.groupby(["label", "fold"]).size().unstack(fill_value=0)
    assert counts.shape == (train["label"].nunique(), n_splits)
    assert (counts.min(axis=1) >= 1).all()
    assert (counts.max(axis=1) - counts.min(axis=1) <= 1).all()

    again = assign_folds(train, n_splits, shuffle, seed)
    assert again["fold"].tolist() == folds["fold"].tolist()


# ----------------------------------------------------------------------------------------------
# Submission writer and validator

# Names as prepare leaves them (stripped, non-empty), with pandas' missing-value markers and
# number-like names mixed in: read back as text they must stay themselves.
NAMES = st.one_of(
    st.sampled_from(["NA", "NaN", "null", "None", "", "1", "1.0", "007", "a,b", 'say "x"']),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12),
).map(str.strip)
UNIQUE_NAMES = st.lists(NAMES.filter(bool), min_size=1, max_size=12, unique=True)


@st.composite
def submission_cases(draw) -> tuple[np.ndarray, pd.Series, list[str], list[str]]:
    """(logits, test images, classes, header) for make_submission."""
    classes = draw(UNIQUE_NAMES)
    images = pd.Series(draw(st.lists(NAMES.filter(bool), min_size=1, max_size=30, unique=True)))
    columns = draw(st.lists(NAMES.filter(bool), min_size=2, max_size=2, unique=True))
    logits = draw(
        hnp.arrays(
            np.float32,
            (len(images), len(classes)),
            elements=st.floats(-10, 10, width=32),
        )
    )
    return logits, images, classes, columns


def write_and_read(submission: pd.DataFrame) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "submission.csv"
        write_csv(path, submission)
        return read_submission(path)


@SETTINGS
@given(submission_cases())
def test_written_submission_validates_in_test_order_with_argmax_labels(case):
    logits, images, classes, columns = case
    written = write_and_read(make_submission(logits, images, classes, columns))

    assert submission_problems(written, images, classes, columns) == []
    assert written.columns.tolist() == columns
    assert written[columns[0]].tolist() == images.tolist()
    for row, label in zip(logits, written[columns[1]], strict=True):
        assert row[classes.index(label)] == row.max()


CORRUPTIONS = ["swap_rows", "drop_row", "repeat_row", "unknown_label", "empty_label"]


@SETTINGS
@given(submission_cases(), st.sampled_from(CORRUPTIONS), st.randoms(use_true_random=False))
def test_any_corrupted_submission_is_refused(case, corruption, random):
    logits, images, classes, columns = case
    submission = make_submission(logits, images, classes, columns)
    image_col, label_col = columns
    i = random.randrange(len(submission))
    if corruption == "swap_rows":
        if len(submission) < 2:
            return
        j = random.choice([k for k in range(len(submission)) if k != i])
        order = list(range(len(submission)))
        order[i], order[j] = j, i
        submission = submission.iloc[order].reset_index(drop=True)
    elif corruption == "drop_row":
        submission = submission.drop(index=i).reset_index(drop=True)
    elif corruption == "repeat_row":
        submission = pd.concat([submission, submission.iloc[[i]]], ignore_index=True)
    elif corruption == "unknown_label":
        submission.loc[i, label_col] = "not a class " + "x" * max(map(len, classes))
    else:
        submission.loc[i, label_col] = ""
    written = write_and_read(submission)
    assert submission_problems(written, images, classes, columns) != []
