"""Stage cache's params: the cache size, the messages of bad cache and loader settings, and which
edits of params.yaml (or of the images) make DVC rebuild the cache."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import run
from helpers.params import two_models_with_change

from pipeline.config.params import (
    ParamsError,
    parse_params,
    resolve_cache_size,
    resolve_crop_to_leaf,
)
from pipeline.config.paths import CACHE_MANIFEST

# ----------------------------------------------------------------------------------------------
# Params


def test_cache_size_is_the_largest_models_unless_set():
    assert resolve_cache_size(parse_params(two_models_with_change())) == 96
    assert resolve_cache_size(parse_params(two_models_with_change("cache.image_size", 128))) == 128
    assert resolve_cache_size(parse_params(two_models_with_change("cache.enabled", False))) is None
    # Off, the cache puts no limit on the models' sizes.
    off = two_models_with_change("cache", {"enabled": False, "image_size": 32})
    assert resolve_cache_size(parse_params(off)) is None


def test_the_cache_cuts_to_the_leaf_as_the_models_do():
    raw = two_models_with_change("train.defaults.crop_to_leaf", True)
    assert resolve_crop_to_leaf(parse_params(raw)) is True
    raw["train"]["defaults"]["crop_to_leaf"] = False
    assert resolve_crop_to_leaf(parse_params(raw)) is False
    # Off, the cache holds nothing, so the models may differ.
    raw = two_models_with_change("cache.enabled", False)
    raw["train"]["models"]["resnet18"]["crop_to_leaf"] = True
    assert parse_params(raw).train.for_model("resnet18").crop_to_leaf is True


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            "cache.image_size",
            64,
            "train.models.resnet18.image_size = 96 is larger than cache.image_size = 64",
        ),
        ("cache.image_size", 8, "cache.image_size = 8: Input should be greater than"),
        (
            "train.models.resnet18.crop_to_leaf",
            True,
            "train.models.resnet18.crop_to_leaf = true differs from d2l_resnet11's false; stage "
            "cache holds one crop for every model",
        ),
        ("cache.enable", True, "cache.enable: unknown key"),
        ("train.num_workers", 2, "train.num_workers: unknown key"),
        ("train.loader.prefetch_factor", 0, "train.loader.prefetch_factor = 0"),
        ("train.loader.pin_memory", "maybe", "train.loader.pin_memory = 'maybe'"),
        ("train.channels_last", "always", "train.channels_last = 'always': allowed: 'auto' | true"),
        ("train.loader.num_workers", -1, "= -1: allowed: 'auto' | an integer greater than or"),
        ("train.compile", "max", "train.compile = 'max'"),
    ],
)
def test_bad_cache_and_loader_params_name_the_key(path, value, expected):
    with pytest.raises(ParamsError) as err:
        parse_params(two_models_with_change(path, value))
    assert expected in str(err.value)


# ----------------------------------------------------------------------------------------------
# DVC


@pytest.mark.slow
@pytest.mark.e2e
def test_dvc_rebuilds_the_cache_only_when_images_or_its_params_change(project):
    def repro_cache() -> set[str]:
        output = run(["dvc", "repro", "cache"], project).stdout
        # Stage check validates params.yaml after every edit of it; it rebuilds nothing.
        return set(re.findall(r"Running stage '([^']+)'", output)) - {"check"}

    def edit(change) -> None:
        params = yaml.safe_load((project / "params.yaml").read_text())
        change(params)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    assert repro_cache() == {"generate", "prepare", "cache"}
    edit(lambda p: p["train"]["defaults"].update(epochs=3, batch_size=4))
    assert repro_cache() == set()
    edit(lambda p: p["cache"].update(image_size=40))
    assert repro_cache() == {"cache"}
    assert json.loads((project / CACHE_MANIFEST).read_text())["image_size"] == 40
    edit(lambda p: p["generate"].update(seed=2))  # other images
    assert repro_cache() == {"generate", "prepare", "cache"}
