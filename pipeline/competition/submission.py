"""Checking a submission against test.csv and the training classes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config.paths import CLASSES_FILE, PREPARED_TEST
from pipeline.config.schema import Params
from pipeline.data.tables import not_a_file, read_text_csv
from pipeline.io.console import PipelineError, format_problems
from pipeline.io.files import file_md5


class SubmissionError(PipelineError):
    """The submission does not match test.csv or the class list, or cannot be read."""


def _row(index: int) -> str:
    return f"row {index + 2}"  # +1 for the header, +1 for 1-based line numbers


def read_submission(path: Path | str) -> pd.DataFrame:
    """Read a submission as text cells (see `read_text_csv`)."""
    return read_text_csv(path, "submission", SubmissionError)


def _cells(column: pd.Series) -> pd.Series:
    return column.fillna("").astype(str)


def _whitespace_hint(value: str, known: set[str]) -> str:
    return " (it has surrounding whitespace)" if value.strip() in known else ""


def image_problems(images: pd.Series, test_images: pd.Series, column: str) -> list[str]:
    """Rows that are not test.csv's images, once each, in test.csv's order."""
    images, expected = _cells(images), _cells(test_images).reset_index(drop=True)
    known, first_row, problems = set(expected), {}, []
    for i, image in images.items():
        if not image.strip():
            problems.append(f"{_row(i)}: empty {column!r}")
        elif image in first_row:
            problems.append(f"{_row(i)}: {column} {image!r} repeats {_row(first_row[image])}")
        elif image not in known:
            problems.append(
                f"{_row(i)}: {column} {image!r} is not in test.csv{_whitespace_hint(image, known)}"
            )
        first_row.setdefault(image, i)
    missing = [image for image in expected if image not in first_row]
    summary = []
    if len(images) != len(expected):
        summary.append(f"{len(images)} rows, test.csv has {len(expected)}")
    if missing:
        summary.append(f"{len(missing)} test.csv image(s) missing, first {missing[0]!r}")
    if not summary and not problems:
        # The same images, each once: only their order can still be wrong.
        differ = [p for p, (a, b) in enumerate(zip(images, expected, strict=True)) if a != b]
        if differ:
            p = differ[0]
            summary.append(
                f"{len(differ)} rows differ from test.csv's order, first at "
                f"{_row(images.index[p])}: {images.iloc[p]!r} instead of {expected[p]!r}"
            )
    return summary + problems


def _rows(indices: list[int]) -> str:
    """`row 5`, `rows 5, 9, 12` or `rows 5, 9, 12 and 35 more`."""
    if len(indices) == 1:
        return _row(indices[0])
    listed = ", ".join(str(i + 2) for i in indices[:3])
    return f"rows {listed}" + (f" and {len(indices) - 3} more" if len(indices) > 3 else "")


def label_problems(labels: pd.Series, classes: list[str], column: str) -> list[str]:
    """Empty labels and labels not among `classes`, one message per distinct value."""
    known, rows_by_label = set(classes), {}
    for i, label in _cells(labels).items():
        if not label.strip():
            rows_by_label.setdefault("", []).append(i)
        elif label not in known:
            rows_by_label.setdefault(label, []).append(i)
    return [
        f"{_rows(rows)}: empty {column!r}"
        if not label
        else f"{_rows(rows)}: {column} {label!r} is not a training class"
        + _whitespace_hint(label, known)
        for label, rows in rows_by_label.items()
    ]


def submission_problems(
    submission: pd.DataFrame, test_images: pd.Series, classes: list[str], columns: list[str]
) -> list[str]:
    """Everything wrong with a submission, as messages (empty when it is valid).

    Args:
        submission: the submission; row messages name index + 2, its line when read by
            `read_submission` (or by position for a default index).
        test_images: test.csv's image column, in its order.
        classes: the training classes.
        columns: the expected header, [image column, label column].
    """
    if list(submission.columns) != list(columns):
        return [f"header is {list(submission.columns)}, expected {list(columns)}"]
    image_col, label_col = columns
    return image_problems(submission[image_col], test_images, image_col) + label_problems(
        submission[label_col], classes, label_col
    )


def load_classes(path: Path | str) -> list[str]:
    """A JSON list of class names, like data/prepared/classes.json."""
    path = Path(path)
    try:
        classes = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        hint = "; run `dvc repro prepare`" if path == CLASSES_FILE else ""
        raise SubmissionError(f"{path}: class list not found{hint}") from None
    except (OSError, ValueError) as err:
        raise SubmissionError(f"{path}: not a readable JSON file ({err})") from None
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise SubmissionError(f"{path}: expected a non-empty JSON list of class names")
    return classes


def load_reference(
    test_csv: Path | None,
    classes: Path | None,
    train_csv: Path | None,
    columns: list[str],
    flags: bool = True,
) -> tuple[pd.Series, list[str]]:
    """test.csv's images and the training classes: prepared ones unless files are given.

    `flags`: whether the caller has --test-csv (the tools do, stage submit does not), so a
    missing prepared test.csv suggests only what the user can do.
    """
    if test_csv:
        test_images = _competition_column(test_csv, [columns[0]], columns[0])
    else:
        test_images = _prepared_test_images(", or pass --test-csv" if flags else "")
    if train_csv:
        names = sorted(set(_competition_column(train_csv, columns, columns[1])) - {""})
    else:
        names = load_classes(classes or CLASSES_FILE)
    return test_images, names


def _competition_column(path: Path, columns: list[str], column: str) -> pd.Series:
    # Read as `prepare` reads it (BOM, padding), so cells compare equal to what it would write;
    # imported here because prepare loads the image libraries.
    from pipeline.competition.inputs import read_table

    if not path.is_file():
        raise SubmissionError(not_a_file(path))
    return read_table(path, columns)[column]


def _prepared_test_images(hint: str) -> pd.Series:
    if not PREPARED_TEST.is_file():
        raise SubmissionError(f"{PREPARED_TEST}: not found; run `dvc repro prepare` first{hint}")
    table = read_text_csv(PREPARED_TEST, error=SubmissionError)
    if "image" not in table.columns:
        raise SubmissionError(
            f"{PREPARED_TEST}: corrupt (no column 'image'); run `dvc repro prepare` to rewrite it"
        )
    return table["image"]


def check_submission(
    path: Path | str, test_images: pd.Series, classes: list[str], columns: list[str]
) -> pd.DataFrame:
    """Read and check a submission file; return it, or raise SubmissionError listing problems."""
    submission = read_submission(path)
    problems = submission_problems(submission, test_images, classes, columns)
    if problems:
        raise SubmissionError(f"{path}: {len(problems)} problem(s):\n{format_problems(problems)}")
    return submission


def submission_record(
    params: Params, csv: Path, predictions: Path, accuracies: dict[str, float | None]
) -> dict[str, Any]:
    """What stage submit writes next to the CSV (submissions/submission.json): the params and
    scores the file was made with (`accuracies`: the ensemble's `oof_accuracy`,
    `oof_accuracy_fitted_cross` and `oof_accuracy_equal`), and its md5, so
    `pipeline.tools.kaggle submit` describes and checks the file it uploads, not whatever
    params.yaml says now."""
    return {
        "file": Path(csv).as_posix(),
        "md5": file_md5(csv),
        "predictions": Path(predictions).as_posix(),
        "data": {
            "root": params.data.root,
            "image_col": params.data.image_col,
            "label_col": params.data.label_col,
            "submission_columns": params.data.submission_header,
        },
        "models": {
            name: {"epochs": hp.epochs, "image_size": hp.image_size}
            for name, hp in ((name, params.train.for_model(name)) for name in params.train.models)
        },
        "folds": list(params.train.folds),
        **accuracies,
    }


def read_record(path: Path | str) -> dict[str, Any] | None:
    """A submission record written by stage submit, or None when there is none (or unreadable)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
