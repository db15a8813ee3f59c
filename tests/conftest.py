"""Shared fixtures: a tiny configuration and a throwaway copy of the project to run DVC in."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import yaml
from helpers.processes import REPO_ROOT, child_env
from helpers.session_folders import built_once

from pipeline.config.presets import merged_params
from pipeline.io.console import TERMINATIONS

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))  # the benchmark scripts the tests call
# Two workers (pytest-xdist) share the 2 cores: torch's default of a thread per core in each
# puts 4 busy threads on 2 cores, where OpenMP's threads spin waiting on each other (the suite
# took 12 min 26 s so, 9 min 05 s with one each: BENCHMARKS.md "Test suite"). Set before any
# test module imports torch; the dvc, stage and torchrun processes the tests start inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# The fixtures `workdir` and `comp` of stage prepare's tests (tests/test_prepare*.py).
pytest_plugins = ["helpers.prepare"]

# The smallest run that still exercises every stage: 3 species, 2 folds, 1 epoch, 32 px.
# Laid over the project's params.yaml key by key, so every other setting stays as shipped.
TINY_OVERRIDES = {
    "base": {"seed": 7},
    "generate": {
        "num_species": 3,
        "images_per_species": 8,
        "image_size": 48,
        "test_share": 0.25,
        "seed": 1,
    },
    "split": {"n_splits": 2, "shuffle": True},
    "train": {
        "models": {"d2l_resnet11": {}},
        "folds": [0, 1],
        "device": "cpu",
        "loader": {"num_workers": 0},
        "defaults": {
            "image_size": 32,
            "epochs": 1,
            "batch_size": 8,
            "amp": False,
            "tta": {"views": ["identity", "hflip"], "average": "logits"},
            "augment": {"train": [{"name": "HorizontalFlip", "p": 0.5}], "eval": []},
        },
    },
}


@pytest.fixture(autouse=True, scope="session")
def _run_from_project_root():
    """Tests read params.yaml and import `pipeline` relative to the project root."""
    os.chdir(REPO_ROOT)


@pytest.fixture(autouse=True)
def _keep_pytest_s_signal_handlers():
    """`console.run` in-process (a tool's exit code) sets the handlers a finished stage keeps."""
    handlers = {stop: signal.getsignal(stop) for stop in (signal.SIGINT, *TERMINATIONS)}
    yield
    for stop, handler in handlers.items():
        signal.signal(stop, handler)


def tiny_run_params() -> dict:
    """The project's params.yaml with TINY_OVERRIDES laid over it (a fresh copy each call)."""
    shipped = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    return merged_params(yaml.safe_load(yaml.safe_dump(TINY_OVERRIDES)), shipped)


@pytest.fixture
def tiny_params() -> dict:
    return tiny_run_params()


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = child_env(cwd, DVC_NO_ANALYTICS="1")
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def make_project(folder: Path, params: dict) -> Path:
    """A fresh git + DVC checkout of the project in `folder`, with `params`."""
    # .gitignore too: a run's git-tracked outputs (metrics, plots: cache: false) get committed
    # like the project's own, and checkpoints/ stays out of git.
    for name in ("pipeline", "dvc.yaml", ".gitignore"):
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, folder / name)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], folder)
    run(["dvc", "init", "-q"], folder)
    run(["dvc", "config", "core.autostage", "false"], folder)
    run(["git", "add", "-A"], folder)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], folder)
    return folder


@pytest.fixture
def project(tmp_path, tiny_params):
    """A fresh git + DVC checkout of the project in tmp_path, with the tiny params."""
    return make_project(tmp_path, tiny_params)


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory) -> tuple[Path, str]:
    """A `project` after its first `dvc repro` (outputs not committed), and that run's output.
    Read-only: the end-to-end tests that start from a finished run copy it (`reproduced_project`)
    instead of each paying for the same first run."""

    def first_repro(folder: Path) -> None:
        make_project(folder, tiny_run_params())
        folder.with_suffix(".out").write_text(run(["dvc", "repro"], folder).stdout)

    folder = built_once(tmp_path_factory, "reproduced", first_repro)
    return folder, folder.with_suffix(".out").read_text()


@pytest.fixture
def reproduced_project(reproduced, tmp_path) -> Path:
    """A writable copy of `reproduced`: git history, DVC cache, outputs and lock included."""
    return Path(shutil.copytree(reproduced[0], tmp_path / "project", symlinks=True))


def run_stages(workdir: Path, params: dict) -> None:
    """Run every stage's main() in-process in `workdir`, in dvc.yaml's order (no DVC)."""
    from pipeline.stages import (
        cache,
        ensemble,
        generate,
        meta,
        prepare,
        pseudo,
        split,
        submit,
        train,
    )

    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        generate.main([])
        prepare.main([])
        split.main([])
        cache.main([])
        for model in params["train"]["models"]:
            for fold in params["train"]["folds"]:
                train.main(["--model", model, "--fold", str(fold)])
        meta.main([])
        ensemble.main([])
        pseudo.main([])
        submit.main([])
    finally:
        os.chdir(previous)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A project folder holding every output of a tiny run (read-only: copy it to change it)."""
    return built_once(
        tmp_path_factory, "finished_run", partial(run_stages, params=tiny_run_params())
    )


@pytest.fixture
def run_copy(finished_run, tmp_path, monkeypatch) -> Path:
    """A writable copy of the finished tiny run, as the cwd."""
    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir)
    monkeypatch.chdir(workdir)
    return workdir
