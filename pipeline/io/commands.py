"""Running an external command (dvc, kaggle) whose failure is one clean error."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.io.console import PipelineError


def run_command(
    cmd: list[str],
    failure: Callable[[subprocess.CompletedProcess], str],
    **kwargs: Any,
) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, **kwargs)`; a command that cannot start, or exits non-zero, is a
    PipelineError (`failure` words the second from the finished process)."""
    try:
        result = subprocess.run(cmd, **kwargs)
    except OSError as err:
        raise PipelineError(f"cannot run {Path(cmd[0]).name}: {err}") from None
    if result.returncode != 0:
        raise PipelineError(failure(result))
    return result
