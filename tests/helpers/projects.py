"""Minimal project folders for stage-level tests."""

from __future__ import annotations

import json
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
