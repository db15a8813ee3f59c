"""Small params.yaml contents for the validation tests: the least a valid file holds, with one
key changed, and the message it fails with."""

from __future__ import annotations

import copy

import pytest

from pipeline.config.checks import CHECKS
from pipeline.config.params import ParamsError, parse_params

MINIMAL = {"train": {"models": {"d2l_resnet11": {}}}}


def problems(raw: dict) -> str:
    with pytest.raises(ParamsError) as err:
        parse_params(raw, checks=CHECKS)  # the schema, then backbones and transforms
    return str(err.value)


def with_change(path: str, value) -> dict:
    raw = copy.deepcopy(MINIMAL)
    *parents, leaf = path.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return raw


def two_models_with_change(path: str | None = None, value=None) -> dict:
    """Two models, one at 96 px, with one key changed (a change under the second model,
    train.models.resnet18, is kept)."""
    raw = with_change(path, value) if path else copy.deepcopy(MINIMAL)
    models = raw["train"]["models"]
    models["resnet18"] = {"image_size": 96, **models.get("resnet18", {})}
    return raw
