"""benchmarks/ablation.py: each variant it trains is a whole, valid params file of one cell."""

from __future__ import annotations

import ablation
import pytest
from helpers.processes import REPO_ROOT

from pipeline.config.checks import CHECKS
from pipeline.config.params import parse_params

PRESETS = sorted((REPO_ROOT / "presets").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
@pytest.mark.parametrize("variant", list(ablation.VARIANTS))
def test_each_variant_is_a_valid_params_file_of_one_cell(preset, variant):
    params = ablation.preset_params(str(preset))
    model = next(iter(params["train"]["models"]))
    cell = ablation.variant_params(params, model, 1, ablation.VARIANTS[variant])
    parse_params(cell, source=f"{preset.stem}: {variant}", checks=CHECKS)
    assert list(cell["train"]["models"]) == [model] and cell["train"]["folds"] == [1]


def test_a_variant_changes_only_what_it_names():
    params = ablation.preset_params(str(REPO_ROOT / "presets/leaf-silhouettes.yaml"))
    cell = ablation.variant_params(params, "d2l_resnet11_slim", 0, {"augment": {"train": []}})
    assert cell["train"]["defaults"]["augment"]["train"] == []
    assert cell["train"]["defaults"]["epochs"] == params["train"]["defaults"]["epochs"]
    assert cell["data"] == params["data"]
