"""Check a submission file against test.csv and the training classes before you upload it.

    leaf validate submissions/submission.csv
    leaf validate my.csv --test-csv data/classify-leaves/test.csv \
        --train-csv data/classify-leaves/train.csv

The header must be `data.submission_columns` (params.yaml; null:
`data.image_col,data.label_col`; `image,label` where there is no params.yaml); the rows must
list test.csv's images once each, in test.csv's order; every label must be a training class. The
reference is the prepared data (data/prepared/test.csv, classes.json) unless `--test-csv` (a
competition test.csv) and `--classes` (a JSON list) or `--train-csv` (a competition train.csv)
are given.
Every cell is read as text, so `NA` or `null` stay labels (and are reported as unknown ones).
A byte-order mark and blank lines are ignored. Exit code 0 with a one-line summary when the
file is valid; 2 with the first problems listed otherwise.

`submission_problems` is the same check the `submit` stage runs before it writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from pipeline.competition.submission import check_submission, load_reference
from pipeline.config.params import PARAMS_FILE, load_params
from pipeline.config.schema import DataParams
from pipeline.io import console
from pipeline.io.console import command_parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submission", type=Path, help="the submission CSV to check")
    add_reference_arguments(parser)


def add_reference_arguments(parser: argparse.ArgumentParser) -> None:
    """--test-csv and --classes | --train-csv: what a submission is checked against."""
    parser.add_argument(
        "--test-csv", type=Path, help="a competition test.csv (default: data/prepared/test.csv)"
    )
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument(
        "--classes", type=Path, help="a JSON list of classes (default: data/prepared/classes.json)"
    )
    classes.add_argument("--train-csv", type=Path, help="a competition train.csv: its labels")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return command_parser("leaf validate", __doc__, add_arguments).parse_args(argv)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    return run(parse_args(argv))


def data_params() -> DataParams:
    """params.yaml's `data` (the header to expect); the defaults when there is no params.yaml,
    so a submission can be checked with --test-csv and --train-csv outside the project."""
    return load_params().data if PARAMS_FILE.is_file() else DataParams()


def run(args: argparse.Namespace) -> pd.DataFrame:
    data = data_params()
    tables, columns = [data.image_col, data.label_col], data.submission_header
    test_images, classes = load_reference(args.test_csv, args.classes, args.train_csv, tables)
    submission = check_submission(args.submission, test_images, classes, columns)
    print(
        f"OK: {args.submission}: {len(submission)} rows, "
        f"{submission[columns[1]].nunique()} distinct labels ({len(classes)} classes)"
    )
    return submission


if __name__ == "__main__":
    console.run(main)
