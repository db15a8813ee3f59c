"""Folders the whole test session shares, each built once however many workers ask for it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder `name`, made by `build` once in the whole test session.

    Under pytest-xdist the first worker to ask builds it in the folder the workers share, while
    the others wait on its lock, then every worker reads the same one. A failed build leaves no
    `.done` mark, so the next to ask builds it again (and fails the same way).
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(shared / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder
