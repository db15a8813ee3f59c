"""The presets under presets/ are overrides of params.yaml that validate, and `leaf preset`
turns them into the `dvc exp run -S` arguments that reproduce them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers.processes import REPO_ROOT
from helpers.trees import leaf_paths, lookup

from pipeline.config.checks import CHECKS
from pipeline.config.params import ParamsError, parse_params
from pipeline.config.presets import (
    flow,
    load_preset,
    merged_params,
    preset_overrides,
    set_dotted,
)
from pipeline.io.console import PipelineError
from pipeline.tools import presets

PRESETS = sorted((REPO_ROOT / "presets").glob("*.yaml"))
BASE = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))


@pytest.fixture
def params_copy(tmp_path, monkeypatch) -> Path:
    """The working directory: a copy of params.yaml and presets/, for the tests that write."""
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO_ROOT / "presets", tmp_path / "presets")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def apply(params: dict, overrides: list[str]) -> dict:
    """A small stand-in for `dvc exp run -S`: `key=v` sets an existing key, `+key=v` adds a new
    one, `~key` removes one; values are YAML."""
    params = yaml.safe_load(yaml.safe_dump(params))
    for override in overrides:
        if override.startswith("~"):
            *parents, last = override[1:].split(".")
            del lookup(params, tuple(parents))[last]
            continue
        key, _, text = override.partition("=")
        add = key.startswith("+")
        *parents, last = key.lstrip("+").split(".")
        parent = lookup(params, tuple(parents))
        assert (last in parent) != add, f"{override}: + must mark exactly the new keys"
        parent[last] = yaml.safe_load(text)
    return params


def test_the_shipped_presets_exist():
    names = {p.name for p in PRESETS}
    assert {"leaf-silhouettes.yaml", "d2l-course.yaml", "classify-leaves-gpu.yaml"} <= names


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_key_of_a_preset_exists_in_params_yaml(preset):
    """A model's key (train.models.<name>.<key>) must be one of train.defaults'."""
    data = load_preset(preset)
    for path in leaf_paths(data):
        lookup(BASE, path)  # raises KeyError naming the key
    for model in (data.get("train", {}).get("models") or {}).values():
        for path in leaf_paths(model or {}):
            if path != ("backbone",):  # a model's own key; the rest override train.defaults
                lookup(BASE["train"]["defaults"], path)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_a_preset_merged_over_params_yaml_validates(preset):
    parse_params(merged_params(load_preset(preset), BASE), source=str(preset), checks=CHECKS)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_a_preset_holds_only_overrides(preset):
    data = load_preset(preset)
    same = [".".join(p) for p in leaf_paths(data) if lookup(BASE, p) == lookup(data, p)]
    assert not same, f"{preset.name} repeats params.yaml's values: {same}"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_the_overrides_reproduce_the_merged_params(preset):
    data = load_preset(preset)
    overrides = preset_overrides(data, BASE)
    assert overrides
    assert apply(BASE, overrides) == merged_params(data, BASE)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_dvc_applies_the_overrides_alike(preset, tmp_path):
    """DVC's own -S code (Hydra's grammar) on a copy of params.yaml gives the merged params."""
    hydra = pytest.importorskip("dvc.utils.hydra")
    data = load_preset(preset)
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    hydra.apply_overrides(tmp_path / "params.yaml", preset_overrides(data, BASE))
    applied = yaml.safe_load((tmp_path / "params.yaml").read_text(encoding="utf-8"))
    assert applied == merged_params(data, BASE)


def test_models_replace_whole_and_changed_models_are_re_added():
    base = {"train": {"models": {"a": {}, "b": {"epochs": 3}, "c": None}, "folds": [0, 1]}}
    preset = {"train": {"models": {"b": {"epochs": 4}, "c": {}, "d": {"lr": 0.1}}}}
    overrides = preset_overrides(preset, base)
    assert overrides == [
        "~train.models.b",
        "+train.models.b={epochs: 4}",
        "+train.models.d={lr: 0.1}",
        "~train.models.a",
    ]
    assert merged_params(preset, base)["train"] == {
        "models": preset["train"]["models"],
        "folds": [0, 1],
    }


@pytest.mark.parametrize(
    "value",
    [
        "torchrun --nproc_per_node=4",
        "42",
        "true",
        "null",
        "tv:resnet18",
        "../a/b",
        1e-05,
        0.0004,
        5.0,
        -15,
        None,
        False,
        [],
        {},
        ["identity", "hflip"],
        {"name": "Affine", "p": [0.5, 1]},
    ],
)
def test_flow_values_read_back_as_yaml(value):
    assert yaml.safe_load(flow(value)) == value


def test_show_prints_the_command_and_runs_nothing(monkeypatch, capsys):
    def no_dvc(*args, **kwargs):
        raise AssertionError("--show must not run anything")

    monkeypatch.setattr(presets, "run_to_its_end", no_dvc)
    assert presets.main(["d2l-course", "--show", "-S", "train.defaults.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dvc exp run -n d2l-course -S ")
    assert "+train.models.d2l_resnet18={}" in out and "~train.models.d2l_resnet11_slim" in out
    assert "train.defaults.epochs: 20 -> 2" in out  # params.yaml's 20


def test_the_default_runs_dvc_exp_run_and_returns_its_exit_code(monkeypatch):
    calls = []
    monkeypatch.setattr(presets, "run_to_its_end", lambda cmd: calls.append(cmd) or 3)
    assert presets.main(["leaf-silhouettes", "--name", "try1"]) == 3
    [cmd] = calls
    assert cmd[:5] == ["dvc", "exp", "run", "-n", "try1"]
    assert cmd[5:] == ["-S", 'data.root="../shared/datasets/leaf-silhouettes"']


@pytest.mark.parametrize("flag", ["--temp", "--queue"])
def test_a_copy_of_the_project_gets_data_root_absolute(monkeypatch, flag):
    calls = []
    monkeypatch.setattr(presets, "run_to_its_end", lambda cmd: calls.append(cmd) or 0)
    with pytest.raises(PipelineError, match="outside the project.*give it absolute"):
        presets.main(["leaf-silhouettes", flag])
    silhouettes = (REPO_ROOT / "../shared/datasets/leaf-silhouettes").resolve()
    assert presets.main(["leaf-silhouettes", flag, "-S", f"data.root={silhouettes}"]) == 0
    assert calls[0][5:] == [flag, "-S", f"data.root={flow(str(silhouettes))}"]


def test_write_replaces_params_yaml_with_the_merged_params(params_copy):
    assert presets.main(["leaf-silhouettes", "--write"]) == 0
    written = yaml.safe_load((params_copy / "params.yaml").read_text(encoding="utf-8"))
    assert written == merged_params(load_preset(REPO_ROOT / "presets/leaf-silhouettes.yaml"), BASE)


def test_an_unknown_key_is_named_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(presets, "run_to_its_end", lambda cmd: pytest.fail("ran dvc"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  defaults:\n    epoch: 3\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"train\.defaults\.epoch"):
        presets.main([str(bad)])


def test_an_unknown_preset_lists_the_known_ones():
    with pytest.raises(PipelineError, match="leaf-silhouettes"):
        load_preset("no-such-preset")


def test_the_silhouettes_script_refuses_a_params_yaml_left_by_a_previous_run(tmp_path):
    # The script lays the preset over params.yaml as it stands: an earlier run's values would leak.
    project = tmp_path / "project"
    (project / "benchmarks").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "benchmarks" / "leaf_silhouettes.sh", project / "benchmarks")
    dataset = tmp_path / "shared" / "datasets" / "leaf-silhouettes"
    dataset.mkdir(parents=True)
    (dataset / "train.csv").write_text("image,label\n")
    (project / "params.yaml").write_text("base: {seed: 42}\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=project, check=True)
    (project / "params.yaml").write_text("base: {seed: 7}\n")
    script = project / "benchmarks" / "leaf_silhouettes.sh"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "params.yaml differs from the committed one" in result.stderr
    assert "git restore params.yaml" in result.stderr


def test_a_failed_workspace_run_puts_params_yaml_back(params_copy, monkeypatch, capsys):
    before = (params_copy / "params.yaml").read_bytes()

    def dvc_writes_the_values_then_fails(cmd):
        (params_copy / "params.yaml").write_text("changed by dvc exp run\n", encoding="utf-8")
        return 1

    monkeypatch.setattr(presets, "run_to_its_end", dvc_writes_the_values_then_fails)
    assert presets.main(["leaf-silhouettes", "-S", "data.root=data/synthetic"]) == 1
    assert (params_copy / "params.yaml").read_bytes() == before
    assert "params.yaml is back as it was" in capsys.readouterr().out


@pytest.mark.usefixtures("params_copy")  # not the checkout, where a user may have the folder
def test_a_missing_competition_folder_stops_before_dvc_runs(monkeypatch):
    monkeypatch.setattr(presets, "run_to_its_end", lambda cmd: pytest.fail("ran dvc"))
    with pytest.raises(PipelineError, match="data/classify-leaves.*leaf kaggle download"):
        presets.main(["classify-leaves-gpu"])


def test_set_takes_dvc_s_plus_and_tilde_forms():
    preset = {"train": {"defaults": {"epochs": 3}}}
    set_dotted(preset, BASE, "+train.models.resnet18={}")
    set_dotted(preset, BASE, "~train.models.d2l_resnet11_slim")
    set_dotted(preset, BASE, "+train.defaults.epochs=5")
    merged = merged_params(preset, BASE)
    assert merged["train"]["models"] == {"resnet18": {}}
    assert merged["train"]["defaults"]["epochs"] == 5


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("~train.models.nope", r"no model 'nope' to remove \(models: d2l_resnet11_slim\)"),
        ("~train.defaults.epochs", r"only a model can be removed \(~train.models.NAME\)"),
        ("train.folds", "expected KEY=VALUE"),
    ],
)
def test_a_set_that_cannot_apply_names_itself_and_the_fix(assignment, message):
    with pytest.raises(PipelineError, match=message):
        set_dotted({}, BASE, assignment)
