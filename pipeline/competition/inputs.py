"""Reading and checking a competition folder (train.csv, test.csv, images/) before any work."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from pipeline.config.paths import data_root, is_synthetic_root
from pipeline.data.images import IMAGE_SUFFIXES, ImageReadError, load_image
from pipeline.data.tables import not_a_file, read_text_csv
from pipeline.io.console import PipelineError, format_problems, progress
from pipeline.io.files import file_md5

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


COLUMN_KEYS = "set data.image_col / data.label_col in params.yaml"


def read_table(path: Path, required: list[str], fix: str = COLUMN_KEYS) -> pd.DataFrame:
    """`read_whole_table`'s `required` columns (`fix`: what to do when one is missing)."""
    frame = read_whole_table(path)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        if looks_like_a_row(frame.columns):
            fix = f"its first line looks like a row: add the header line {','.join(required)}"
        elif fix == COLUMN_KEYS and len(frame.columns) == len(required):
            fix = column_keys_for(frame)
        raise InputDataError(
            f"{path}: missing column(s) {missing}; found {list(frame.columns)} ({fix})"
        )
    return frame[required]


def column_keys_for(frame: pd.DataFrame) -> str:
    """The settings naming a table's own columns: its image column, the one of most distinct
    values (an image is listed once, a label many times), and its label column."""
    image_col = max(frame.columns, key=lambda column: frame[column].nunique())
    labels = [column for column in frame.columns if column != image_col]
    return f"set data.image_col: {image_col}" + "".join(
        f" and data.label_col: {column}" for column in labels
    )


def read_whole_table(path: Path) -> pd.DataFrame:
    """Read a CSV as strings, BOM, padding and blank lines dropped (a row's index + 2 is still
    its line in the file)."""
    if not path.is_file():
        raise InputDataError(
            f"{not_a_file(path)} (check data.root and the CSV names in params.yaml"
            f"{tables_beside(path)})"
        )
    if path.stat().st_size == 0:
        raise InputDataError(f"{path}: empty file (0 bytes); expected a CSV with a header row")
    frame = read_text_csv(path, error=InputDataError)
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.apply(lambda column: column.str.strip())
    return frame[(frame != "").any(axis=1)]


def tables_beside(path: Path) -> str:
    """`; <folder> holds a.csv, b.csv` (the CSVs where `path` was looked for), or ''."""
    folder = path.parent
    tables = sorted(table.name for table in folder.glob("*.csv")) if folder.is_dir() else []
    return f"; {folder} holds {', '.join(tables)}" if tables else ""


def looks_like_a_row(header: list[str]) -> bool:
    """A header line with a path or an image's file name in it: the CSV was written without one.
    (A dotted column name, `label.name` or pandas' `label.1`, is a column.)"""
    return any(
        "/" in column or "\\" in column or Path(column).suffix.lower() in IMAGE_SUFFIXES
        for column in header
    )


def row_label(index: int) -> str:
    return f"row {index + 2}"  # +1 for the header, +1 for 1-based line numbers


def raise_problems(path: Path, problems: list[str]) -> None:
    if problems:
        raise InputDataError(f"{path}: {len(problems)} problem(s):\n{format_problems(problems)}")


def check_cells(frame: pd.DataFrame, path: Path, columns: list[str]) -> None:
    """No empty cells."""
    raise_problems(
        path,
        [
            f"{row_label(i)}: empty {column!r}"
            for column in columns
            for i in frame.index[frame[column] == ""]
        ],
    )


def check_labels(labels: pd.Series, path: Path, column: str) -> None:
    """No label spelled as a missing value (`NaN`, `NA`, `null`, ...)."""
    marked = labels[labels.str.casefold().isin(MISSING_MARKERS)]
    raise_problems(
        path,
        [
            f"{row_label(i)}: {column!r} is {label!r}, a missing-value marker; give the class name "
            "or drop the row"
            for i, label in marked.items()
        ],
    )


# How many class names a message lists before it gives only the count.
CLASSES_SHOWN = 5


def check_not_empty(frame: pd.DataFrame, path: Path, what: str) -> None:
    """At least one row below the header."""
    if frame.empty:
        raise InputDataError(f"{path}: no {what}s, only a header; list at least one per row")


def check_classes(labels: pd.Series, path: Path, column: str) -> None:
    """At least two classes, and no two labels that differ only in case (`Acer`, `acer`)."""
    names = sorted(labels.unique())
    if len(names) < 2:
        raise InputDataError(
            f"{path}: every row has {column} {names[0]!r}; a classifier needs at least 2 classes"
        )
    spellings: dict[str, list[str]] = {}
    for name in names:
        spellings.setdefault(name.casefold(), []).append(name)
    clashes = [group for group in spellings.values() if len(group) > 1]
    if clashes:
        listed = "; ".join(" and ".join(map(repr, group)) for group in clashes[:CLASSES_SHOWN])
        if len(clashes) > CLASSES_SHOWN:
            listed += f"; and {len(clashes) - CLASSES_SHOWN} more"
        raise InputDataError(
            f"{path}: {len(clashes)} group(s) of {column}s differ only in case: {listed}; "
            "they would be separate classes: spell each class one way"
        )


def check_duplicates(frame: pd.DataFrame, path: Path) -> None:
    """No image file listed twice, whatever the spelling (`images/1.jpg`, `./images/1.jpg`)."""
    duplicated = frame[frame["path"].duplicated(keep=False)]
    raise_problems(
        path,
        [
            f"{frame.image[rows[0]]!r} is listed more than once "
            f"({', '.join(map(row_label, rows))}): keep one row of it"
            for _, rows in duplicated.groupby("path").groups.items()
        ],
    )


def check_disjoint(
    train: pd.DataFrame, test: pd.DataFrame, image_col: str, train_path: Path, test_path: Path
) -> None:
    """No image file is both a training and a test image, whatever the spelling (`path`)."""
    shared = test[test["path"].isin(set(train["path"]))]
    raise_problems(
        test_path,
        [
            f"{row_label(i)}: {image!r} is a training image too ({train_path}); "
            "keep it in one table"
            for i, image in shared[image_col].items()
        ],
    )


def check_images(paths: pd.Series, table: Path, desc: str, max_megapixels: float) -> list[str]:
    """Hash every image and decode it once; return the md5 hashes in order."""

    def check(path: str) -> str | Exception:
        try:
            digest = file_md5(path)
            load_image(path, min_side=CHECK_DECODE_SIDE, max_megapixels=max_megapixels)
            return digest
        except FileNotFoundError:
            return ImageReadError(f"{path}: image file not found")
        except OSError as err:  # a directory, no permission, ...
            return ImageReadError(f"{path}: cannot read image ({err})")
        except ImageReadError as err:
            return err

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(progress(pool.map(check, paths), total=len(paths), desc=desc, unit="img"))
    raise_problems(
        table,
        [
            f"{row_label(i)}: {result}"
            for i, result in zip(paths.index, results, strict=False)
            if isinstance(result, Exception)
        ],
    )
    return results  # type: ignore[return-value]


def check_test_table(path: Path, root: Path, sample: str | None) -> None:
    """A competition without a test.csv (Cassava) lists its test images in the sample
    submission: say so, instead of only `not found`."""
    if not path.is_file() and sample and (root / sample).is_file():
        raise InputDataError(
            f"{not_a_file(path)}; the competition may list its test images in its sample "
            f"submission only: set data.test_csv: {sample}"
        )


def check_sample_submission(path: Path, test_images: pd.Series, header: list[str]) -> None:
    """The sample submission, when shipped, must have the submission's columns and list test.csv's
    images, in any order: Kaggle matches a submission's rows by image (ours follow test.csv's)."""
    sample = read_whole_table(path)
    if sorted(sample.columns) != sorted(header):
        raise InputDataError(f"{path}: {sample_header_problem(sample, header, test_images)}")
    image_col, label_col = header
    if lists_all(sample[label_col], test_images) and not lists_all(sample[image_col], test_images):
        raise InputDataError(
            f"{path}: its {label_col!r} column lists test.csv's images, not {image_col!r}: set "
            f"data.submission_columns: [{label_col}, {image_col}], the image column first"
        )
    listed = sample[image_col]
    extra = listed[~listed.isin(set(test_images))]
    missing = test_images[~test_images.isin(set(listed))]
    if extra.empty and missing.empty and len(listed) == len(test_images):
        return
    if not extra.empty:
        detail = f"{row_label(extra.index[0])} is {extra.iloc[0]!r}, which test.csv does not list"
    elif not missing.empty:
        detail = f"it lacks test.csv's {missing.iloc[0]!r}"
    else:
        detail = f"{len(listed)} rows against test.csv's {len(test_images)}"
    raise InputDataError(
        f"{path}: its {image_col!r} column does not list test.csv's images ({detail}); set "
        "data.sample_submission: null to skip this check"
    )


def lists_all(column: pd.Series, images: pd.Series) -> bool:
    return images.isin(set(column)).all()


def sample_header_problem(sample: pd.DataFrame, header: list[str], test_images: pd.Series) -> str:
    """Why the sample's columns are not the submission's, and the setting that would match them."""
    found = list(sample.columns)
    shown = found if len(found) <= 6 else [*found[:5], f"... {len(found) - 5} more"]
    problem = f"its header is {shown}, the submission's would be {header}"
    if looks_like_a_row(found):
        return (
            f"{problem}: its first line looks like a row; add the header line "
            f"{','.join(header)}, or set data.sample_submission: null to skip this check"
        )
    if len(found) != 2:
        return (
            f"{problem}: the competition wants {len(found)} columns, and this pipeline writes "
            "two, an image and its label"
        )
    image_col = max(found, key=lambda column: sample[column].isin(set(test_images)).sum())
    label_col = next(column for column in found if column != image_col)
    return (
        f"{problem}: set data.submission_columns: [{image_col}, {label_col}] to write the "
        "sample's (train.csv and test.csv keep theirs, data.image_col and data.label_col), or "
        "data.sample_submission: null to skip this check"
    )


def check_data_root(root: str) -> None:
    """`data.root` is a folder, or the one stage generate writes (it does not exist before).

    Stage check runs this, so a missing competition folder stops the pipeline before DVC
    deletes stage prepare's outputs to rerun it.
    """
    path = data_root(root)
    if path.is_dir() or is_synthetic_root(root):
        return
    raise PipelineError(
        f"data.root = {root!r}: no such folder ({path.resolve()}). Get the competition: "
        "`leaf kaggle download` (Classify Leaves, into data/classify-leaves), `dvc pull` (a "
        "folder that was dvc-added and pushed to a remote), or set data.root to the folder "
        "holding train.csv, test.csv and images/"
    )
