"""Stage `submit`: turn the ensemble's test logits into submissions/submission.csv.

    python -m pipeline.submit

Rows follow test.csv's order with its image names as given; labels are training classes; the
header is `data.image_col,data.label_col`. The file is checked (by `pipeline.validate`, the
same check `python -m pipeline.validate` runs) before it is written, and written atomically,
so an invalid submission never reaches submissions/.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.cli import PipelineError, format_problems, run
from pipeline.config import load_params
from pipeline.files import ENSEMBLE_DIR, SUBMISSION_FILE, write_csv
from pipeline.validate import (
    SubmissionError,
    load_reference,
    submission_problems,
)

TEST_LOGITS = ENSEMBLE_DIR / "test_logits.npy"


def load_test_logits(num_rows: int, num_classes: int) -> np.ndarray:
    """The ensemble's test logits, checked against test.csv's rows and the class count."""
    if not TEST_LOGITS.is_file():
        raise PipelineError(f"{TEST_LOGITS}: not found; run `dvc repro` to produce it")
    logits = np.load(TEST_LOGITS)
    if logits.shape != (num_rows, num_classes):
        raise PipelineError(
            f"{TEST_LOGITS}: shape {logits.shape}, expected ({num_rows}, {num_classes}) for "
            "test.csv's rows and classes.json; the ensemble is stale: run `dvc repro`"
        )
    return logits


def make_submission(
    test_logits: np.ndarray, test_images: pd.Series, classes: list[str], columns: list[str]
) -> pd.DataFrame:
    """One row per test image, in order, labelled with its highest-scoring class.

    Args:
        test_logits: (num test images, num classes) scores.
        test_images: test.csv's image column.
        classes: class names; column k of the logits is classes[k].
        columns: the header, [image column, label column].
    """
    labels = np.asarray(classes, dtype=object)[test_logits.argmax(axis=1)]
    return pd.DataFrame({columns[0]: test_images.to_numpy(), columns[1]: labels})


def main(argv: list[str] | None = None) -> pd.DataFrame:
    params = load_params()
    columns = [params.data.image_col, params.data.label_col]
    test_images, classes = load_reference(None, None, None, columns)
    test_logits = load_test_logits(len(test_images), len(classes))
    submission = make_submission(test_logits, test_images, classes, columns)
    problems = submission_problems(submission, test_images, classes, columns)
    if problems:
        raise SubmissionError(
            f"submission not written, {len(problems)} problem(s):\n{format_problems(problems)}"
        )
    write_csv(SUBMISSION_FILE, submission)
    distinct = submission[columns[1]].nunique()
    print(f"submit: {len(submission)} rows, {distinct} distinct labels -> {SUBMISSION_FILE}")
    return submission


if __name__ == "__main__":
    run(main)
