"""`pipeline.tools.cli`: quiet mode for progress bars; output into a closed pipe."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers.processes import REPO_ROOT, child_env

from pipeline.io.console import progress, quiet


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
