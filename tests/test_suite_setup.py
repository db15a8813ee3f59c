"""How the suite runs itself: one torch thread per xdist worker, and shared folders built once."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.session_folders import built_once


def test_each_xdist_worker_runs_torch_on_one_thread():
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("runs in one process (-n 0): torch keeps its thread per core")
    import torch

    # "1" unless you set it before pytest (conftest.py), and set before torch read it.
    assert torch.get_num_threads() == int(os.environ["OMP_NUM_THREADS"])


def factory_at(folder: Path) -> SimpleNamespace:
    """A stand-in for pytest's tmp_path_factory whose session folder is `folder`."""
    return SimpleNamespace(getbasetemp=lambda: folder / "popen-gw0")


def test_a_shared_folder_is_built_once_and_a_failed_build_is_built_again(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    builds = []

    def build(folder: Path) -> None:
        builds.append(folder)
        (folder / "made").write_text(str(len(builds)))
        if len(builds) == 1:
            raise RuntimeError("the first build fails")

    with pytest.raises(RuntimeError):
        built_once(factory_at(tmp_path), "run", build)
    folder = built_once(factory_at(tmp_path), "run", build)
    again = built_once(factory_at(tmp_path), "run", build)

    assert folder == again == tmp_path / "run"  # beside every worker's own folder, not in it
    assert len(builds) == 2 and (folder / "made").read_text() == "2"
