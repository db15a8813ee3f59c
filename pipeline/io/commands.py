"""Running an external command (dvc, kaggle) whose failure is one clean error."""

from __future__ import annotations

import contextlib
import os
import signal
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


def run_to_its_end(cmd: list[str]) -> int:
    """Run `cmd` and return its exit code, passing each Ctrl-C on to it and to the processes
    it started, then waiting while it stops on its own terms.

    subprocess.run kills the command 0.25 s after a Ctrl-C: `dvc exp run`, killed in its
    cleanup, leaves its stash in the git index and the stage it started running on. Here the
    command has a process group of its own, so that a Ctrl-C reaches it once, from us, whether
    it came from the terminal or from a signal to this process alone.
    """
    posix = os.name == "posix"  # elsewhere a console's Ctrl-C reaches every process in it
    process = subprocess.Popen(cmd, **({"process_group": 0} if posix else {}))
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            if posix:
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    os.killpg(process.pid, signal.SIGINT)
