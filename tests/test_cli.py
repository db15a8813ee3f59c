"""`pipeline.tools.cli`: quiet mode for progress bars."""

from __future__ import annotations

import pytest

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
