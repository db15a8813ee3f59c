"""Stage prepare's tests (tests/test_prepare*.py): a competition folder in a throwaway project,
and what a run of the stage must leave (or, on bad input, must not).

The fixtures `workdir` and `comp` reach the tests through `pytest_plugins` in tests/conftest.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.competition.inputs import InputDataError
from pipeline.data.tables import load_table
from pipeline.io.console import PipelineError
from pipeline.stages import prepare as prepare_stage

from . import images as imgs
from .processes import run_python

COMP = "comp"  # data.root, relative to the project (the test's cwd)
PREPARED = Path("data/prepared")


def write_params(workdir: Path, **data) -> None:
    params = {"data": {"root": COMP, **data}, "train": {"models": {"d2l_resnet11": {}}}}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder (the cwd) with a minimal params.yaml reading `comp/`."""
    # Not named `project`: conftest.py has a fixture of that name (a DVC checkout).
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    return tmp_path


@pytest.fixture
def comp(workdir: Path) -> imgs.Competition:
    """A valid competition folder at workdir/comp: 3 classes × 6 train images, 4 test images."""
    return imgs.write_competition(workdir / COMP)


def leftovers(workdir: Path) -> list[str]:
    """Temporary siblings atomic_path may have left next to data/prepared."""
    data = workdir / "data"
    return sorted(p.name for p in data.glob(".prepared.*")) if data.is_dir() else []


def assert_nothing_written(workdir: Path) -> None:
    assert not (workdir / PREPARED).exists(), "data/prepared was written despite the error"
    assert leftovers(workdir) == []


def has_row(message: str, number: int) -> bool:
    return re.search(rf"\brow {number}\b", message) is not None


def fails(workdir: Path, *fragments: str, rows: tuple[int, ...] = ()) -> str:
    """Run main(); it must raise InputDataError naming every fragment and row; nothing written."""
    with pytest.raises(PipelineError) as info:
        prepare_stage.main([])
    assert isinstance(info.value, InputDataError)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in message:\n{message}"
    for number in rows:
        assert has_row(message, number), f"'row {number}' not in message:\n{message}"
    assert_nothing_written(workdir)
    return message


def rel(comp: imgs.Competition, image: str) -> str:
    """How prepare names an image file: data.root joined with the CSV cell."""
    return os.path.normpath(Path(COMP) / image)


def table_name(comp: imgs.Competition, name: str) -> str:
    return str(Path(COMP) / name)


def run_cli(workdir: Path) -> subprocess.CompletedProcess:
    """`python -m pipeline.stages.prepare` in workdir, as DVC runs it."""
    return run_python(["-m", "pipeline.stages.prepare"], workdir, timeout=180)


def read_prepared(workdir: Path):
    classes = json.loads((workdir / PREPARED / "classes.json").read_text(encoding="utf-8"))
    train = load_table(workdir / PREPARED / "train.csv")
    test = load_table(workdir / PREPARED / "test.csv")
    return classes, train, test


def check_consistent(workdir: Path, classes, train, test) -> None:
    assert classes == sorted(classes) and len(set(classes)) == len(classes)
    assert list(train.columns) == ["image", "label", "target", "path", "md5"]
    assert list(test.columns) == ["image", "path", "md5"]
    assert set(train["label"]) == set(classes)
    assert [classes[t] for t in train["target"]] == list(train["label"])
    for frame in (train, test):
        for path, md5 in zip(frame["path"], frame["md5"], strict=False):
            file = workdir / path
            assert file.is_file(), path
            assert not Path(path).is_absolute()  # relative to the project
            assert hashlib.md5(file.read_bytes()).hexdigest() == md5
