"""Stage `prepare`: check the competition folder and write clean tables and the class list.

    python -m pipeline.prepare

Reads `data.root` (a Kaggle Classify Leaves style folder: train.csv, test.csv, images/,
optionally sample_submission.csv) and writes data/prepared/:
- classes.json: the sorted species names; a label's index there is its target;
- train.csv: image, label, target, path, md5;
- test.csv: image, path, md5.
`path` is where the image file is, relative to the project; `md5` is its content hash, so any
change to an image reaches the stages that follow even though the tables keep the same rows.
Every problem in the input stops the stage with the file and row named, before anything is
written.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import pandas as pd

from pipeline.cli import PipelineError, format_problems, progress, run
from pipeline.config import DataParams, load_params
from pipeline.data import ImageReadError, load_image, not_utf8_message
from pipeline.files import PREPARED_DIR, atomic_path, file_md5, write_csv, write_json

# pandas' default missing-value markers (read_csv's na_values), compared case-insensitively. Kept
# as text by read_table, but a label spelled like this is a missing label, not a class "NaN".
MISSING_MARKERS = frozenset(
    {"#n/a", "#n/a n/a", "#na", "-1.#ind", "-1.#qnan", "-nan", "1.#ind", "1.#qnan", "<na>"}
    | {"n/a", "na", "nan", "null", "none"}
)
# Decoding at a reduced DCT scale still walks the whole JPEG stream, so truncation is caught.
CHECK_DECODE_SIDE = 32


class InputDataError(PipelineError):
    """The competition data is inconsistent; the message names the file and rows."""


def read_table(path: Path, required: list[str]) -> pd.DataFrame:
    """Read a CSV as strings (BOM and padding stripped) and check its columns."""
    if not path.is_file():
        raise InputDataError(
            f"{path}: file not found (check data.root and the CSV names in params.yaml)"
        )
    try:
        # Blank lines are kept while reading so that row numbers in messages match the file.
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding="utf-8-sig", skip_blank_lines=False
        )
    except UnicodeDecodeError:
        raise InputDataError(not_utf8_message(path)) from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputDataError(f"{path}: not a readable CSV ({err})") from None
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas turns the extra first cells into an index instead of complaining.
        raise InputDataError(
            f"{path}: row 2 has more cells than the header {list(frame.columns)} "
            "(an unquoted comma?)"
        )
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputDataError(
            f"{path}: missing column(s) {missing}; found {list(frame.columns)} "
            "(set data.image_col / data.label_col in params.yaml)"
        )
    frame = frame[required].apply(lambda column: column.str.strip())
    return frame[(frame != "").any(axis=1)]  # drop blank lines, keeping each row's line number


def _row(index: int) -> str:
    return f"row {index + 2}"  # +1 for the header, +1 for 1-based line numbers


def _fail(path: Path, problems: list[str]) -> None:
    if problems:
        raise InputDataError(f"{path}: {len(problems)} problem(s):\n{format_problems(problems)}")


def check_cells(frame: pd.DataFrame, path: Path, columns: list[str]) -> None:
    """No empty cells."""
    _fail(
        path,
        [
            f"{_row(i)}: empty {column!r}"
            for column in columns
            for i in frame.index[frame[column] == ""]
        ],
    )


def check_labels(labels: pd.Series, path: Path, column: str) -> None:
    """No label spelled as a missing value (`NaN`, `NA`, `null`, ...)."""
    marked = labels[labels.str.casefold().isin(MISSING_MARKERS)]
    _fail(
        path,
        [
            f"{_row(i)}: {column!r} is {label!r}, a missing-value marker; give the class name "
            "or drop the row"
            for i, label in marked.items()
        ],
    )


def check_duplicates(frame: pd.DataFrame, path: Path) -> None:
    """No image file listed twice, whatever the spelling (`images/1.jpg`, `./images/1.jpg`)."""
    duplicated = frame[frame["path"].duplicated(keep=False)]
    _fail(
        path,
        [
            f"{frame.image[rows[0]]!r} is listed more than once ({', '.join(map(_row, rows))})"
            for _, rows in duplicated.groupby("path").groups.items()
        ],
    )


def resolve_paths(images: pd.Series, root: Path, table: Path) -> list[str]:
    """Image cells → file paths under `root`; a path that leaves the root is refused."""
    problems, paths = [], []
    for i, image in images.items():
        relative = PurePosixPath(image.replace("\\", "/"))
        if relative.is_absolute() or ".." in relative.parts:
            problems.append(f"{_row(i)}: image path {image!r} must stay inside {root}")
        paths.append(os.path.normpath(root / relative))
    _fail(table, problems)
    return paths


def check_images(paths: pd.Series, table: Path, desc: str) -> list[str]:
    """Hash every image and decode it once; return the md5 hashes in order."""

    def check(path: str) -> str | Exception:
        try:
            digest = file_md5(path)
            load_image(path, min_side=CHECK_DECODE_SIDE)
            return digest
        except FileNotFoundError:
            return ImageReadError(f"{path}: image file not found")
        except OSError as err:  # a directory, no permission, ...
            return ImageReadError(f"{path}: cannot read image ({err})")
        except ImageReadError as err:
            return err

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(progress(pool.map(check, paths), total=len(paths), desc=desc, unit="img"))
    _fail(
        table,
        [
            f"{_row(i)}: {result}"
            for i, result in zip(paths.index, results, strict=False)
            if isinstance(result, Exception)
        ],
    )
    return results  # type: ignore[return-value]


def check_sample_submission(path: Path, test_images: pd.Series, columns: list[str]) -> None:
    """The sample submission, when shipped, must list test.csv's images in the same order."""
    sample = read_table(path, columns)
    if not sample[columns[0]].reset_index(drop=True).equals(test_images.reset_index(drop=True)):
        raise InputDataError(
            f"{path}: its {columns[0]!r} column does not match test.csv row for row"
        )


def prepare(params: DataParams) -> tuple[list[str], pd.DataFrame, pd.DataFrame]:
    """Check the competition folder; return (classes, train table, test table)."""
    root = Path(params.root)
    if not root.is_dir():
        raise InputDataError(f"data.root = {params.root!r}: no such folder")
    train_path, test_path = root / params.train_csv, root / params.test_csv
    image_col, label_col = params.image_col, params.label_col

    train = read_table(train_path, [image_col, label_col])
    test = read_table(test_path, [image_col])
    check_cells(train, train_path, [image_col, label_col])
    check_cells(test, test_path, [image_col])
    check_labels(train[label_col], train_path, label_col)
    if params.sample_submission and (root / params.sample_submission).is_file():
        check_sample_submission(
            root / params.sample_submission, test[image_col], [image_col, label_col]
        )

    train["path"] = resolve_paths(train[image_col], root, train_path)
    test["path"] = resolve_paths(test[image_col], root, test_path)
    check_duplicates(train.rename(columns={image_col: "image"}), train_path)
    check_duplicates(test.rename(columns={image_col: "image"}), test_path)
    overlap = sorted(set(train["path"]) & set(test["path"]))
    if overlap:
        raise InputDataError(
            f"{test_path}: {len(overlap)} image(s) also in {train_path}, e.g. {overlap[:3]}"
        )
    train["md5"] = check_images(train["path"], train_path, "checking train images")
    test["md5"] = check_images(test["path"], test_path, "checking test images")

    classes = sorted(train[label_col].unique())
    train["target"] = train[label_col].map({name: i for i, name in enumerate(classes)})
    train = train.rename(columns={image_col: "image", label_col: "label"})
    test = test.rename(columns={image_col: "image"})
    columns = ["image", "label", "target", "path", "md5"]
    return classes, train[columns].reset_index(drop=True), test.reset_index(drop=True)


def main(argv: list[str] | None = None) -> None:
    params = load_params()
    classes, train, test = prepare(params.data)
    with atomic_path(PREPARED_DIR) as out:
        out.mkdir()
        write_json(out / "classes.json", classes)
        write_csv(out / "train.csv", train)
        write_csv(out / "test.csv", test)
    print(
        f"prepare: {len(train)} train images in {len(classes)} classes, "
        f"{len(test)} test images -> {PREPARED_DIR}"
    )


if __name__ == "__main__":
    run(main)
