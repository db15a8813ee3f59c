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


def _as_ctrl_c(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_to_its_end(cmd: list[str]) -> int:
    """Run `cmd` and return its exit code, passing each Ctrl-C on to it and to the processes
    it started, then waiting while it stops on its own terms.

    subprocess.run kills the command 0.25 s after a Ctrl-C: `dvc exp run`, killed in its
    cleanup, leaves its stash in the git index and the stage it started running on. Here the
    command has a process group of its own, so that a Ctrl-C reaches it once, from us, whether
    it came from the terminal or from a signal to this process alone. A SIGTERM or SIGHUP (the
    terminal closed) to us stops it the same way: it would not reach the group otherwise, and
    the command would run on unseen.
    """
    posix = os.name == "posix"  # elsewhere a console's Ctrl-C reaches every process in it
    process = subprocess.Popen(cmd, **({"process_group": 0} if posix else {}))
    stops = (signal.SIGTERM, signal.SIGHUP) if posix else ()
    previous = {stop: signal.signal(stop, _as_ctrl_c) for stop in stops}
    try:
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:
                if posix:
                    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                        os.killpg(process.pid, signal.SIGINT)
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)
