"""Reading the project's CSV tables as text, with errors that name the file."""

from __future__ import annotations

import codecs
from pathlib import Path

import pandas as pd

from pipeline.io.console import PipelineError


def load_table(path: Path | str) -> pd.DataFrame:
    """Read a table the pipeline wrote (prepared, folds) with its text columns kept as text."""
    import pandas as pd

    text = {"image": str, "label": str, "path": str, "md5": str}
    return pd.read_csv(path, dtype=text, keep_default_na=False)


def not_utf8_message(path: Path) -> str:
    """Where a CSV stops being UTF-8, as a message (pandas counts offsets in its read buffer)."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        return (
            f"{path}: not UTF-8 text (line {line}: byte {data[err.start]:#04x}); save it as UTF-8"
        )
    return f"{path}: not UTF-8 text; save it as UTF-8"


def not_a_file(path: Path, what: str = "file") -> str:
    """Why `path`, which is no file, cannot be read: a folder, or nothing there."""
    return f"{path}: a folder, not a {what}" if path.is_dir() else f"{path}: {what} not found"


def read_text_csv(
    path: Path | str, what: str = "CSV", error: type[PipelineError] = PipelineError
) -> pd.DataFrame:
    """Read a CSV with every cell as text (empty cells are ""), without guessing missing values.

    A byte-order mark is dropped. Blank lines are dropped too, but the index still counts them,
    so index + 2 is a row's line in the file.

    Raises:
        error: the file is missing or not a readable UTF-8 CSV.
    """
    path = Path(path)
    if not path.is_file():
        raise error(not_a_file(path, what))
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding="utf-8-sig", skip_blank_lines=False
        )
    except UnicodeDecodeError:
        raise error(not_utf8_message(path)) from None
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise error(f"{path}: not a readable CSV ({str(err).strip()})") from None
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas turns the extra first cells into an index instead of complaining.
        raise error(
            f"{path}: row 2 has more cells than the header {list(frame.columns)} "
            "(an unquoted comma?)"
        )
    return frame[(frame != "").any(axis=1)]


# Reading what one stage hands another. Every stage reads its upstream files through these, so a
# missing, empty or damaged input ends in one `error:` line that names the file and the stage of
# dvc.yaml that makes it, before anything is written.

# Path prefixes (most specific first) and the dvc.yaml stage that writes them.
PRODUCERS = (
    ("data/synthetic", "generate"),
    ("data/prepared", "prepare"),
    ("data/folds.csv", "split"),
    ("data/cache", "cache"),
    ("models/meta", "meta"),
    ("models", "train"),
    ("data/ensemble", "ensemble"),
    ("data/pseudo", "pseudo"),
)

# Integer columns of the pipeline's tables: a damaged file often parses, but not as numbers.
INTEGER_COLUMNS = frozenset({"target", "fold", "height", "width"})


def producer(path: Path | str) -> str | None:
    """The dvc.yaml stage that writes `path`, or None for a file no stage makes."""
    text = Path(path).as_posix()
    for prefix, stage in PRODUCERS:
        if text == prefix or text.startswith(prefix + "/"):
            return stage
    return None


def rerun_hint(path: Path | str, stage: str | None = None) -> str:
    """`run `dvc repro <stage>`` for the stage that makes `path`."""
    stage = stage or producer(path)
    return f"run `dvc repro {stage}`" if stage else "run `dvc repro`"


def corrupt(path: Path | str, detail: str, stage: str | None = None) -> PipelineError:
    """The error for an input that exists but cannot be used as it is."""
    return PipelineError(f"{path}: corrupt ({detail}); {rerun_hint(path, stage)} to rewrite it")


def require_file(path: Path | str, stage: str | None = None) -> Path:
    """`path`, checked to be a non-empty file.

    Raises:
        PipelineError: it is missing, a folder, or empty; the message names the stage to rerun.
    """
    path = Path(path)
    if path.is_dir():
        raise PipelineError(f"{path}: a folder, expected a file; {rerun_hint(path, stage)}")
    if not path.is_file():
        raise PipelineError(f"{path}: not found; {rerun_hint(path, stage)}")
    if path.stat().st_size == 0:
        raise PipelineError(f"{path}: empty (0 bytes); {rerun_hint(path, stage)}")
    return path


def require_dir(path: Path | str, stage: str | None = None) -> Path:
    """`path`, checked to be a folder (see `require_file`)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PipelineError(f"{path}: a file, expected a folder; {rerun_hint(path, stage)}")
    if not path.is_dir():
        raise PipelineError(f"{path}: folder not found; {rerun_hint(path, stage)}")
    return path


def read_input_table(
    path: Path | str,
    columns: tuple[str, ...] | list[str] = (),
    stage: str | None = None,
    allow_empty: bool = False,
) -> pd.DataFrame:
    """A table another stage wrote (see `load_table`), checked to have `columns` and rows.

    Raises:
        PipelineError: it is missing, empty, not a CSV, lacks a column, holds text where a
            number belongs, or has no rows (unless `allow_empty`).
    """
    path = require_file(path, stage)
    try:
        frame = load_table(path)
    except UnicodeDecodeError:
        raise corrupt(path, "not UTF-8 text", stage) from None
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise corrupt(path, f"not a readable CSV: {str(err).splitlines()[0]}", stage) from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = [str(c)[:40] for c in frame.columns[:8]]
        raise corrupt(path, f"no column(s) {missing}; found {found}", stage)
    not_numbers = [
        c for c in columns if c in INTEGER_COLUMNS and not pd.api.types.is_integer_dtype(frame[c])
    ]
    if not_numbers:
        raise corrupt(path, f"column(s) {not_numbers} are not whole numbers", stage)
    if frame.empty and not allow_empty:
        raise PipelineError(f"{path}: no rows, only a header; {rerun_hint(path, stage)}")
    return frame


def read_input_json(path: Path | str, stage: str | None = None):
    """A JSON file another stage wrote (see `require_file`)."""
    import json

    path = require_file(path, stage)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise corrupt(path, "not UTF-8 text", stage) from None
    except ValueError as err:
        raise corrupt(path, f"not JSON: {err}", stage) from None


def read_class_list(path: Path | str, stage: str | None = None) -> list[str]:
    """data/prepared/classes.json: a non-empty JSON list of class names."""
    classes = read_input_json(path, stage)
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise corrupt(path, "expected a non-empty JSON list of class names", stage)
    return classes


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


def load_input_array(
    path: Path | str, stage: str | None = None, ndim: int | None = None, mmap: bool = False
):
    """A .npy array another stage wrote, checked to be one (and to have `ndim` axes if given).

    Args:
        mmap: memory-map it read-only instead of reading it (stage cache's images).
    """
    import numpy as np

    path = require_file(path, stage)
    with open(path, "rb") as file:
        if file.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise corrupt(path, "not a NumPy .npy file", stage)
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise corrupt(path, f"truncated or damaged: {str(err).splitlines()[0]}", stage) from None
    if ndim is not None and array.ndim != ndim:
        raise corrupt(
            path, f"{array.ndim}-D array of shape {array.shape}, expected {ndim}-D", stage
        )
    return array


def load_input_arrays(path: Path | str, keys: tuple[str, ...], stage: str | None = None) -> dict:
    """The arrays `keys` of a .npz archive another stage wrote (see `load_input_array`)."""
    import zipfile
    import zlib

    import numpy as np

    path = require_file(path, stage)
    with open(path, "rb") as file:
        if file.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            raise corrupt(path, "not a NumPy .npz archive", stage)
    try:
        with np.load(path, allow_pickle=False) as saved:
            missing = [key for key in keys if key not in saved.files]
            if missing:
                raise corrupt(path, f"no array(s) {missing}; found {saved.files}", stage)
            return {key: saved[key] for key in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise corrupt(path, f"truncated or damaged: {str(err).splitlines()[0]}", stage) from None


def check_targets(frame: pd.DataFrame, num_classes: int, path: Path | str) -> None:
    """Every `target` of a table (folds.csv) indexes the class list."""
    targets = frame["target"]
    outside = targets[(targets < 0) | (targets >= num_classes)]
    if len(outside):
        raise PipelineError(
            f"{path}: target {outside.iloc[0]} (row {outside.index[0] + 2}) is outside the "
            f"{num_classes} classes of data/prepared/classes.json; the files are out of step: "
            "run `dvc repro split`"
        )
