"""How the stages and `leaf` tools end and report: quiet mode for progress bars, output into a
closed pipe, a Ctrl-C while a stage still imports its libraries, a SIGTERM or a hang-up, and a
stop that comes after the work is done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from helpers.processes import REPO_ROOT, child_env, run_python

from pipeline.io.console import end_quietly_on_ctrl_c, progress, quiet, run


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("LEAF_QUIET", raising=False)
    monkeypatch.delenv("CI", raising=False)


def test_bars_show_by_default(capsys):
    assert not quiet()
    assert list(progress(range(3), desc="work")) == [0, 1, 2]
    assert "work: 100%" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LEAF_QUIET": "1"}, True),
        ({"LEAF_QUIET": "true"}, True),
        ({"CI": "true"}, True),  # pytest captures stderr, so it is not a terminal here
        ({"CI": "true", "LEAF_QUIET": "0"}, False),
        ({"LEAF_QUIET": ""}, False),
    ],
)
def test_quiet_from_the_environment(monkeypatch, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert quiet() is expected


def test_quiet_bars_print_nothing_and_still_iterate(monkeypatch, capsys):
    monkeypatch.setenv("LEAF_QUIET", "1")
    bar = progress(iter("abc"), total=3, desc="work")
    assert list(bar) == ["a", "b", "c"]
    bar.set_postfix(loss=0.1)  # callers may still update a disabled bar
    assert capsys.readouterr().err == ""
    assert list(progress([1], disable=True)) == [1]


def test_output_into_a_closed_pipe_ends_quietly():
    # `leaf preset classify-leaves-gpu --show | head -1`, with head gone before the first write
    read_end, write_end = os.pipe()
    os.close(read_end)
    leaf = "import sys; from pipeline.tools.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", leaf, "preset", "classify-leaves-gpu", "--show"],
        cwd=REPO_ROOT,
        env=child_env(),
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")


def test_a_ctrl_c_while_a_stage_imports_ends_it_quietly():
    # `python3 -m pipeline.stages.NAME` imports pipeline.stages with sys.argv == ["-m"]
    starting_stage = (
        "import sys; sys.argv[:1] = ['-m']; import pipeline.stages, os, signal, time; "
        "os.kill(os.getpid(), signal.SIGINT); time.sleep(30)"
    )
    result = run_python(["-c", starting_stage], REPO_ROOT, timeout=120)
    assert (result.returncode, result.stderr) == (130, "interrupted\n")


def test_importing_the_stages_elsewhere_keeps_python_s_ctrl_c():
    import pipeline.stages  # noqa: F401  (pytest's argv is no `-m`)

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_stage_s_main_gets_keyboard_interrupt_back_for_its_cleanups():
    seen = []
    end_quietly_on_ctrl_c()
    try:
        run(lambda _argv: seen.append(signal.getsignal(signal.SIGINT)))
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert seen == [signal.default_int_handler]


# A stage whose main writes "done", then takes the signal the test names: during main (while
# "working"), or just after main, as if it came while Python exits.
STOPPED_STAGE = """
import atexit, os, pathlib, signal, sys, time
from pipeline.io.console import run
stop, when = getattr(signal, sys.argv[1]), sys.argv[2]
if sys.argv[1] == "SIGHUP":  # as from a terminal, though this test may run under nohup
    signal.signal(stop, signal.SIG_DFL)

def exiting():  # atexit runs this after run's own hooks; Python resets its handlers after it
    if when == "exiting":
        os.kill(os.getpid(), stop)
        time.sleep(0.3)
        print(signal.getsignal(stop) is signal.SIG_IGN, end="")

atexit.register(exiting)

def main(argv):
    try:
        if when == "working":
            os.kill(os.getpid(), stop)
            time.sleep(30)
    finally:
        pathlib.Path("cleaned").write_text("cleaned up")

run(main)
if when == "finished":
    os.kill(os.getpid(), stop)
    time.sleep(0.5)
"""


@pytest.mark.parametrize(
    ("stop", "when", "code", "said"),
    [
        ("SIGTERM", "working", 143, "terminated\n"),
        ("SIGHUP", "working", 129, "hung up\n"),  # the terminal closed
        ("SIGINT", "working", 130, "interrupted\n"),
        (
            "SIGINT",
            "finished",
            0,
            "Ctrl-C came after this command finished: its outputs are kept\n",
        ),
        (
            "SIGTERM",
            "finished",
            0,
            "SIGTERM came after this command finished: its outputs are kept\n",
        ),
        (
            "SIGHUP",
            "finished",
            0,
            "SIGHUP came after this command finished: its outputs are kept\n",
        ),
        ("SIGINT", "exiting", 0, ""),  # ignored: a Python handler would not outlive the exit
    ],
)
def test_a_stop_runs_the_cleanups_and_one_after_the_work_keeps_it(tmp_path, stop, when, code, said):
    # After main, a failed exit would make DVC throw the outputs away (a train cell retrains).
    result = run_python(["-c", STOPPED_STAGE, stop, when], tmp_path, timeout=120)
    assert (result.returncode, result.stderr) == (code, said)
    assert (tmp_path / "cleaned").read_text() == "cleaned up"
    assert result.stdout == ("True" if when == "exiting" else "")


def test_a_stage_started_by_nohup_still_ignores_a_hang_up(tmp_path):
    ignoring_stage = (
        "import os, signal\n"
        "from pipeline.io.console import run\n"
        "signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts it\n"
        "def main(argv):\n"
        "    os.kill(os.getpid(), signal.SIGHUP)\n"
        "    print('worked on')\n"
        "run(main)\n"
    )
    result = run_python(["-c", ignoring_stage], tmp_path, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, "worked on\n", "")


def test_a_forked_child_ends_on_sigterm_as_it_always_did():
    # A loader worker forked from a stage inherits its handlers: only the stage says `terminated`.
    forking_stage = (
        "import os, signal, sys, time\n"
        "from pipeline.io.console import run\n"
        "def main(argv):\n"
        "    child = os.fork()\n"
        "    if child == 0:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(5)\n"
        "        os._exit(0)\n"
        "    _, status = os.waitpid(child, 0)\n"
        "    print(os.WTERMSIG(status) if os.WIFSIGNALED(status) else 'exited')\n"
        "run(main)\n"
    )
    result = run_python(["-c", forking_stage], REPO_ROOT, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{signal.SIGTERM.value}\n", "")
