"""The presets under presets/ are complete params files that validate and that DVC can run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import parse_params

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def key_paths(tree: dict, prefix: str = "") -> set[str]:
    """Every key of a nested mapping as a dotted path; train.models' entries are free-form."""
    paths = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, dict) and path != "train.models":
            paths |= key_paths(value, f"{path}.")
    return paths


def test_the_shipped_presets_exist():
    names = {p.name for p in PRESETS}
    assert {"leaf-silhouettes.yaml", "d2l-course.yaml", "classify-leaves-gpu.yaml"} <= names


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_validates(preset):
    params = parse_params(yaml.safe_load(preset.read_text()), source=str(preset))
    for name in params.train.models:
        params.train.for_model(name)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_sets_every_key_of_params_yaml(preset):
    """dvc.yaml names params keys that must exist, so a preset replaces params.yaml whole."""
    shipped = key_paths(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert key_paths(yaml.safe_load(preset.read_text())) == shipped
