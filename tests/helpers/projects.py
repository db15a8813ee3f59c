"""Minimal project folders for stage-level tests."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import yaml


def write_prepared_project(root: Path, classes: list[str], test_images: list[str]) -> Path:
    """params.yaml plus data/prepared/{classes.json,test.csv}, as prepare would leave them."""
    params = {"train": {"models": {"d2l_resnet11": {}}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    prepared = root / "data/prepared"
    prepared.mkdir(parents=True)
    (prepared / "classes.json").write_text(json.dumps(classes), encoding="utf-8")
    test = pd.DataFrame({"image": list(test_images), "path": "p", "md5": "m"})
    test.to_csv(prepared / "test.csv", index=False)
    return root


def install_fake_kaggle(tmp_path: Path, monkeypatch, script: str) -> Path:
    """A fake `kaggle` (`script`, formatted with `python`) first on PATH, credentials in the
    environment and HOME in tmp_path (no real ~/.kaggle); returns the log it writes its calls to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "kaggle"
    fake.write_text(script.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "kaggle_calls.json"
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), os.environ["PATH"]]))
    monkeypatch.setenv("FAKE_KAGGLE_LOG", str(log))
    (tmp_path / "home").mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_USERNAME", "leaf")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    return log
