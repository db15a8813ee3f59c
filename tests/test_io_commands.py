"""External commands: a Ctrl-C reaches the command and the processes it started, and we wait
while they stop on their own terms (as `dvc exp run` must, to clean up after itself)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from pipeline.io.commands import run_to_its_end

# A stand-in for dvc: it ignores SIGINT while its stage runs (as DVC does) and exits with the
# stage's code; the stage, on SIGINT, takes longer to clean up than subprocess.run would wait.
DVC = """
import signal, subprocess, sys
stage = subprocess.Popen([sys.executable, __file__.replace("dvc.py", "stage.py"), *sys.argv[1:]])
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.exit(stage.wait())
"""
STAGE = """
import pathlib, signal, sys, time
ready, cleaned = map(pathlib.Path, sys.argv[1:])

def clean_up_and_stop(*_):
    time.sleep(1.0)
    cleaned.write_text("cleaned up")
    sys.exit(130)

signal.signal(signal.SIGINT, clean_up_and_stop)
ready.write_text("ready")
time.sleep(60)
sys.exit(0)
"""


def interrupt_when(path, stop: int = signal.SIGINT, timeout: float = 30) -> threading.Thread:
    """A thread that sends this process `stop` (SIGINT: a Ctrl-C) once `path` exists (none if it
    never does: the command then runs to its end and the test fails on its exit code)."""

    def wait_then_interrupt():
        deadline = time.monotonic() + timeout
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if path.exists():
            os.kill(os.getpid(), stop)

    thread = threading.Thread(target=wait_then_interrupt, daemon=True)
    thread.start()
    return thread


class StoppedTheCaller(Exception):
    pass


def stop_the_caller(signum, frame):
    raise StoppedTheCaller


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
@pytest.mark.parametrize(
    "stop", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"]
)
def test_a_stop_reaches_the_command_s_children_as_a_ctrl_c_and_waits_for_their_cleanup(
    tmp_path, stop
):
    (tmp_path / "dvc.py").write_text(DVC, encoding="utf-8")
    (tmp_path / "stage.py").write_text(STAGE, encoding="utf-8")
    ready, cleaned = tmp_path / "ready", tmp_path / "cleaned"
    handlers = {
        other: signal.signal(other, stop_the_caller) for other in (signal.SIGTERM, signal.SIGHUP)
    }
    thread = interrupt_when(ready, stop)
    try:
        code = run_to_its_end([sys.executable, str(tmp_path / "dvc.py"), str(ready), str(cleaned)])
        assert signal.getsignal(signal.SIGTERM) is stop_the_caller  # put back after the command
    except (KeyboardInterrupt, StoppedTheCaller):
        pytest.fail(f"{signal.Signals(stop).name} stopped the caller, not the command")
    finally:
        for other, handler in handlers.items():
            signal.signal(other, handler)
    thread.join()
    assert code == 130
    assert cleaned.read_text() == "cleaned up"


def test_the_command_s_exit_code_is_returned(tmp_path):
    assert run_to_its_end([sys.executable, "-c", "raise SystemExit(3)"]) == 3
