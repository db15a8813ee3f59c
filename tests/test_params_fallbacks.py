"""Keys left out of params.yaml take the schema's fallbacks: stage check names them, and
docs/configuration.md lists every fallback that is not params.yaml's value, with both values."""

from __future__ import annotations

import yaml
from helpers.params import MINIMAL
from helpers.processes import REPO_ROOT
from helpers.trees import leaf_paths, lookup

from pipeline.config.params import left_out_keys, parse_params
from pipeline.config.presets import read_params_file
from pipeline.stages import check


def test_the_keys_a_file_leaves_out_are_named_a_whole_group_as_one():
    assert left_out_keys(parse_params(read_params_file())) == []
    short = {"train": {"models": {"d2l_resnet11": {}}, "defaults": {"epochs": 3}}, "meta": {}}
    left_out = left_out_keys(parse_params(short))
    assert {"ensemble", "train.defaults.keep", "meta.enabled", "meta.features"} <= set(left_out)
    assert not {"meta", "train", "train.defaults", "train.defaults.epochs"} & set(left_out)
    assert "train.defaults.backbone" not in left_out  # None: each model's own key


def test_stage_check_warns_of_the_keys_left_out(tmp_path, monkeypatch, capsys):
    shipped = read_params_file()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(MINIMAL))
    check.main([])
    assert "warning: params.yaml leaves out base, generate, data, split, cache and 11 more: " in (
        capsys.readouterr().err
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(shipped))
    check.main([])
    assert "leaves out" not in capsys.readouterr().err


def fallbacks_and_values() -> tuple[dict, dict]:
    """Every key's schema fallback and its params.yaml value (train.models left out)."""
    shipped = read_params_file()
    models = {name: {} for name in shipped["train"]["models"]}
    fallbacks = parse_params({"train": {"models": models}}).model_dump(mode="json")
    values = parse_params(shipped).model_dump(mode="json")
    del values["train"]["models"]
    return fallbacks, values


def docs_table() -> dict[str, tuple[str, str]]:
    """docs/configuration.md's fallback table: key -> (its fallback, its params.yaml value)."""
    text = (REPO_ROOT / "docs/configuration.md").read_text()
    table = text.split("| key | fallback | params.yaml |\n|---|---|---|\n")[1].split("\n\n")[0]
    rows = [line.split("|")[1:4] for line in table.splitlines()]
    return {
        key.strip().strip("`"): (fallback.strip(), value.strip()) for key, fallback, value in rows
    }


def test_every_fallback_that_differs_from_params_yaml_is_in_the_docs_table():
    fallbacks, values = fallbacks_and_values()
    differ = [
        ".".join(path)
        for path in leaf_paths(values)
        if lookup(fallbacks, path) != lookup(values, path)
    ]
    assert "meta.enabled" in differ  # the comparison finds them
    table = docs_table()
    assert [key for key in differ if key not in table] == []


def test_the_docs_table_gives_each_single_value_as_the_schema_and_params_yaml_do():
    fallbacks, values = fallbacks_and_values()
    table = docs_table()
    assert "train.defaults.epochs" in table
    for key, cells in table.items():
        path = key.split(".")
        for cell, source in zip(cells, (fallbacks, values), strict=True):
            value = lookup(source, path)
            if not isinstance(value, list | dict):  # lists are described in words
                assert (key, yaml.safe_load(cell)) == (key, value)
