"""The project's Python run in a child process, as DVC and a user's shell run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def python_path(code: Path = REPO_ROOT) -> str:
    """PYTHONPATH with `code` first, so a child imports the project from there."""
    return os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))


def child_env(code: Path = REPO_ROOT, **extra: str) -> dict[str, str]:
    """This process's environment for a child that imports the project from `code`, plus `extra`
    (e.g. DVC_NO_ANALYTICS, LEAF_QUIET, OMP_NUM_THREADS)."""
    return {**os.environ, "PYTHONPATH": python_path(code), **extra}


def run_python(
    args: list[str], cwd: Path, timeout: float = 300, **extra: str
) -> subprocess.CompletedProcess:
    """`python <args>` in `cwd` with the repository first on PYTHONPATH and `extra` in its
    environment; its output captured."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=child_env(**extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
