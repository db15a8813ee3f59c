"""Check a submission file against test.csv and the training classes before you upload it.

    python -m pipeline.validate submissions/submission.csv
    python -m pipeline.validate my.csv --test-csv data/classify-leaves/test.csv \\
        --train-csv data/classify-leaves/train.csv

The header must be `data.image_col,data.label_col` (params.yaml); the rows must list test.csv's
images once each, in test.csv's order; every label must be a training class. The reference is
the prepared data (data/prepared/test.csv, classes.json) unless `--test-csv` (a competition
test.csv) and `--classes` (a JSON list) or `--train-csv` (a competition train.csv) are given.
Every cell is read as text, so `NA` or `null` stay labels (and are reported as unknown ones).
A byte-order mark and blank lines are ignored. Exit code 0 with a one-line summary when the
file is valid; 2 with the first problems listed otherwise.

`submission_problems` is the same check the `submit` stage runs before it writes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from pipeline.cli import PipelineError, format_problems, run
from pipeline.config import load_params
from pipeline.data import not_utf8_message
from pipeline.files import CLASSES_FILE, PREPARED_TEST


class SubmissionError(PipelineError):
    """The submission does not match test.csv or the class list, or cannot be read."""


def _row(index: int) -> str:
    return f"row {index + 2}"  # +1 for the header, +1 for 1-based line numbers


def read_text_csv(path: Path | str, what: str = "CSV") -> pd.DataFrame:
    """Read a CSV with every cell as text (empty cells are ""), without guessing missing values.

    A byte-order mark is dropped. Blank lines are dropped too, but the index still counts them,
    so index + 2 is a row's line in the file.

    Raises:
        SubmissionError: the file is missing or not a readable UTF-8 CSV.
    """
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: {what} not found")
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding="utf-8-sig", skip_blank_lines=False
        )
    except UnicodeDecodeError:
        raise SubmissionError(not_utf8_message(path)) from None
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise SubmissionError(f"{path}: not a readable CSV ({err})") from None
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas turns the extra first cells into an index instead of complaining.
        raise SubmissionError(
            f"{path}: row 2 has more cells than the header {list(frame.columns)} "
            "(an unquoted comma?)"
        )
    return frame[(frame != "").any(axis=1)]


def read_submission(path: Path | str) -> pd.DataFrame:
    """Read a submission as text cells (see `read_text_csv`)."""
    return read_text_csv(path, "submission")


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
        raise SubmissionError(f"{path}: class list not found") from None
    except (OSError, ValueError) as err:
        raise SubmissionError(f"{path}: not a readable JSON file ({err})") from None
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise SubmissionError(f"{path}: expected a non-empty JSON list of class names")
    return classes


def load_reference(
    test_csv: Path | None, classes: Path | None, train_csv: Path | None, columns: list[str]
) -> tuple[pd.Series, list[str]]:
    """test.csv's images and the training classes: prepared ones unless files are given."""
    if test_csv:
        test_images = _competition_column(test_csv, [columns[0]], columns[0])
    else:
        test_images = _prepared_test_images()
    if train_csv:
        names = sorted(set(_competition_column(train_csv, columns, columns[1])) - {""})
    else:
        names = load_classes(classes or CLASSES_FILE)
    return test_images, names


def _competition_column(path: Path, columns: list[str], column: str) -> pd.Series:
    # Read as `prepare` reads it (BOM, padding), so cells compare equal to what it would write;
    # imported here because prepare loads the image libraries.
    from pipeline.prepare import read_table

    if not path.is_file():
        raise SubmissionError(f"{path}: not found")
    return read_table(path, columns)[column]


def _prepared_test_images() -> pd.Series:
    if not PREPARED_TEST.is_file():
        raise SubmissionError(
            f"{PREPARED_TEST}: not found; run `dvc repro prepare` first, or pass --test-csv"
        )
    return read_text_csv(PREPARED_TEST)["image"]


def check_submission(
    path: Path | str, test_images: pd.Series, classes: list[str], columns: list[str]
) -> pd.DataFrame:
    """Read and check a submission file; return it, or raise SubmissionError listing problems."""
    submission = read_submission(path)
    problems = submission_problems(submission, test_images, classes, columns)
    if problems:
        raise SubmissionError(f"{path}: {len(problems)} problem(s):\n{format_problems(problems)}")
    return submission


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.validate",
        description="Check a submission CSV against test.csv and the training classes.",
    )
    parser.add_argument("submission", type=Path, help="the submission CSV to check")
    parser.add_argument(
        "--test-csv", type=Path, help="a competition test.csv (default: data/prepared/test.csv)"
    )
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument(
        "--classes", type=Path, help="a JSON list of classes (default: data/prepared/classes.json)"
    )
    classes.add_argument("--train-csv", type=Path, help="a competition train.csv: its labels")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse_args(argv)
    data = load_params().data
    columns = [data.image_col, data.label_col]
    test_images, classes = load_reference(args.test_csv, args.classes, args.train_csv, columns)
    submission = check_submission(args.submission, test_images, classes, columns)
    print(
        f"OK: {args.submission}: {len(submission)} rows, "
        f"{submission[data.label_col].nunique()} distinct labels ({len(classes)} classes)"
    )
    return submission


if __name__ == "__main__":
    run(main)
