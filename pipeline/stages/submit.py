"""Stage `submit`: turn the final test logits into submissions/submission.csv.

    python -m pipeline.stages.submit

The logits are the ensemble's (data/ensemble/), or the pseudo-label round's (data/pseudo/) when
`pseudo.enabled` is true and the round fine-tuned the models; the printed line says which.

Rows follow test.csv's order with its image names as given; labels are training classes; the
header is `data.submission_columns` (null: `data.image_col,data.label_col`). The file is checked (by
`pipeline.competition.submission`, the same check `leaf validate` runs) before it is written,
and written atomically, so an invalid submission never reaches submissions/. Next to it,
submissions/submission.json records the params and OOF accuracy it was made with and its md5:
what `leaf kaggle submit` describes the upload with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.competition.submission import (
    SubmissionError,
    load_reference,
    submission_problems,
    submission_record,
)
from pipeline.config.params import load_params
from pipeline.config.paths import (
    ENSEMBLE_DIR,
    ENSEMBLE_METRICS,
    PSEUDO_DIR,
    PSEUDO_MANIFEST,
    SUBMISSION_FILE,
    SUBMISSION_RECORD,
    TEST_LOGITS_NAME,
)
from pipeline.data.tables import corrupt, load_input_array, read_input_json
from pipeline.io.console import PipelineError, format_problems, parse_stage_args, run
from pipeline.io.files import write_csv, write_json


def choose_predictions(pseudo_enabled: bool) -> tuple[Path, str]:
    """Which stage's test logits to submit, and why, from `pseudo.enabled` and the round's manifest.

    Raises:
        PipelineError: the round is enabled but data/pseudo/ is missing or from a disabled run.
    """
    if not pseudo_enabled:
        return ENSEMBLE_DIR, "the ensemble; pseudo-label round off"
    if not PSEUDO_MANIFEST.is_file():
        raise PipelineError(
            f"pseudo.enabled is true but {PSEUDO_MANIFEST} is not found; run `dvc repro`"
        )
    manifest = read_input_json(PSEUDO_MANIFEST)
    if not isinstance(manifest, dict):
        raise corrupt(PSEUDO_MANIFEST, "expected a JSON object")
    if not manifest.get("enabled"):
        raise PipelineError(
            f"pseudo.enabled is true but {PSEUDO_MANIFEST} is from a run with the round off; "
            "run `dvc repro`"
        )
    if not manifest.get("fine_tuned"):
        return ENSEMBLE_DIR, "the ensemble; no test image reached pseudo.threshold"
    return PSEUDO_DIR, "the pseudo-label round"


def load_test_logits(source: Path, num_rows: int, num_classes: int) -> np.ndarray:
    """The test logits in `source`, checked against test.csv's rows and the class count."""
    path = source / TEST_LOGITS_NAME
    logits = load_input_array(path)
    if logits.shape != (num_rows, num_classes):
        raise PipelineError(
            f"{path}: shape {logits.shape}, expected ({num_rows}, {num_classes}) for "
            f"test.csv's rows and classes.json; {source} is stale: run `dvc repro`"
        )
    return logits


def ensemble_oof_accuracies() -> dict[str, float | None]:
    """The ensemble's OOF accuracy with the weights fitted on every fold (`oof_accuracy`),
    cross-fitted (`oof_accuracy_fitted_cross`, absent with one fold scored) and equal
    (`oof_accuracy_equal`), from results/ensemble/metrics.json; None for each it has not."""
    keys = ("oof_accuracy", "oof_accuracy_fitted_cross", "oof_accuracy_equal")
    try:
        metrics = read_input_json(ENSEMBLE_METRICS)
    except PipelineError:
        return dict.fromkeys(keys)
    return {
        key: number_or_none(metrics.get(key) if isinstance(metrics, dict) else None) for key in keys
    }


def number_or_none(value: object) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


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
    parse_stage_args(argv, __doc__, "python3 -m pipeline.stages.submit")
    params = load_params()
    columns = params.data.submission_header
    tables = [params.data.image_col, params.data.label_col]
    test_images, classes = load_reference(None, None, None, tables, flags=False)
    source, reason = choose_predictions(params.pseudo.enabled)
    test_logits = load_test_logits(source, len(test_images), len(classes))
    submission = make_submission(test_logits, test_images, classes, columns)
    problems = submission_problems(submission, test_images, classes, columns)
    if problems:
        raise SubmissionError(
            f"submission not written, {len(problems)} problem(s):\n{format_problems(problems)}"
        )
    write_csv(SUBMISSION_FILE, submission)
    write_json(
        SUBMISSION_RECORD,
        submission_record(params, SUBMISSION_FILE, source, ensemble_oof_accuracies()),
    )
    distinct = submission[columns[1]].nunique()
    print(
        f"submit: {len(submission)} rows, {distinct} distinct labels from {source} ({reason}) "
        f"-> {SUBMISSION_FILE}, {SUBMISSION_RECORD}"
    )
    return submission


if __name__ == "__main__":
    run(main)
