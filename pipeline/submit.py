"""Stage `submit`: turn the ensemble's test logits into submissions/submission.csv.

    python -m pipeline.submit

Rows follow test.csv's order with its image names as given; labels are training classes; the
header is `data.image_col,data.label_col`. The file is checked before it is written, and
written atomically, so an invalid submission never reaches submissions/.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.cli import PipelineError, run
from pipeline.config import load_params
from pipeline.data import load_table
from pipeline.files import (
    CLASSES_FILE,
    ENSEMBLE_DIR,
    PREPARED_TEST,
    SUBMISSION_FILE,
    read_json,
    write_csv,
)


class SubmissionError(PipelineError):
    """The submission does not match test.csv or the class list."""


def submission_problems(
    submission: pd.DataFrame, test_images: pd.Series, classes: list[str], columns: list[str]
) -> list[str]:
    """Everything wrong with a submission, as messages (empty when it is valid)."""
    image_col, label_col = columns
    if list(submission.columns) != columns:
        return [f"header is {list(submission.columns)}, expected {columns}"]
    problems = []
    if len(submission) != len(test_images):
        problems.append(f"{len(submission)} rows, test.csv has {len(test_images)}")
    images = submission[image_col].astype(str).reset_index(drop=True)
    expected = test_images.astype(str).reset_index(drop=True)
    mismatched = [i for i in range(min(len(images), len(expected))) if images[i] != expected[i]]
    if mismatched:
        i = mismatched[0]
        problems.append(
            f"{len(mismatched)} rows differ from test.csv's order, first at row "
            f"{i + 2}: {images[i]!r} instead of {expected[i]!r}"
        )
    if images.duplicated().any():
        problems.append(f"duplicate images, e.g. {images[images.duplicated()].iloc[0]!r}")
    labels = submission[label_col]
    empty = labels.isna() | (labels.astype(str).str.strip() == "")
    if empty.any():
        problems.append(
            f"{int(empty.sum())} empty labels, first at row {int(np.argmax(empty)) + 2}"
        )
    unknown = sorted(set(labels[~empty].astype(str)) - set(classes))
    if unknown:
        problems.append(f"labels not among the training classes: {unknown[:5]}")
    return problems


def make_submission(
    test_logits: np.ndarray, test_images: pd.Series, classes: list[str], columns: list[str]
) -> pd.DataFrame:
    labels = np.asarray(classes, dtype=object)[test_logits.argmax(axis=1)]
    return pd.DataFrame({columns[0]: test_images.to_numpy(), columns[1]: labels})


def main(argv: list[str] | None = None) -> pd.DataFrame:
    params = load_params()
    columns = [params.data.image_col, params.data.label_col]
    classes = read_json(CLASSES_FILE)
    test_images = load_table(PREPARED_TEST)["image"]
    test_logits = np.load(ENSEMBLE_DIR / "test_logits.npy")
    submission = make_submission(test_logits, test_images, classes, columns)
    problems = submission_problems(submission, test_images, classes, columns)
    if problems:
        raise SubmissionError("submission not written:\n" + "\n".join(f"  - {p}" for p in problems))
    write_csv(SUBMISSION_FILE, submission)
    top = submission[columns[1]].value_counts()
    print(f"submit: {len(submission)} rows, {top.size} distinct labels -> {SUBMISSION_FILE}")
    return submission


if __name__ == "__main__":
    run(main)
