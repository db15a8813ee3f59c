"""Atomic writes, JSON and CSV helpers, file hashes and writability checks.

Every stage writes through the helpers here, so a failed or killed stage never leaves a
half-written file: data goes to a temporary sibling first and is renamed into place.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    Works for files and directories alike: whatever the block creates at the yielded path
    replaces `path` in one rename, and on error it is removed, `path` is left untouched and the
    parent folders this call created are removed again if they are still empty. What a killed
    process left of an earlier write of `path` is removed first.
    """
    path = Path(path)
    created = [parent for parent in path.parents if not parent.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.rmdir()  # the caller creates a file or a directory here
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)  # os.replace cannot replace a non-empty directory
        os.replace(tmp, path)
        created = []
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        for parent in created:  # innermost first
            with contextlib.suppress(OSError):  # not empty: something else wrote there
                parent.rmdir()


def remove_empty_folders(root: Path | str) -> list[Path]:
    """Delete the empty folders under `root` (not `root` itself), innermost first; returns them.

    `dvc exp run` creates the parent folder of every out it could not check out, so a run that
    fails at stage check would otherwise leave an empty `models/<name>/` behind.
    """
    removed = []
    for folder, _, _ in os.walk(root, topdown=False):  # a folder after everything inside it
        folder = Path(folder)
        if folder != Path(root) and not any(folder.iterdir()):
            folder.rmdir()
            removed.append(folder)
    return removed


def remove_stale_temps(path: Path | str) -> None:
    """Delete the temporary siblings of `path` that a killed `atomic_path` block left behind."""
    path = Path(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def file_md5(path: Path | str) -> str:
    """The md5 hex digest of a file's bytes."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: Path | str, data: bytes | memoryview) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path | str, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_csv(path: Path | str, frame) -> None:
    """Write a pandas DataFrame as CSV without its index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def check_writable(path: Path | str, option: str) -> Path:
    """`path`, checked to be a file a tool can write (its folders are made as needed).

    Args:
        option: the command-line option that named it, for the message (`--csv`).

    Raises:
        PipelineError: `path` is a folder, or a file or unwritable folder stands in its way.
    """
    from pipeline.io.console import PipelineError

    path = Path(path)
    if path.is_dir():
        raise PipelineError(f"{option} {path}: a folder; give a file name, e.g. {path / 'out'}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise PipelineError(f"{option} {path}: cannot write there, {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PipelineError(f"{option} {path}: cannot write there, {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise PipelineError(f"{option} {path}: the file is not writable")
    return path
