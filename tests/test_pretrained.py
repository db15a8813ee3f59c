"""`pretrained: <path>`: local weights files and Hugging Face caches load all but the head."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from pipeline.config.checks import CHECKS
from pipeline.config.params import ParamsError, parse_params
from pipeline.io.console import PipelineError
from pipeline.models.registry import create_model
from pipeline.models.weights import find_weights_file

NAME = "resnet18"
HEAD = "fc."  # timm's resnet18: default_cfg["classifier"]


@pytest.fixture(scope="module")
def saved_state():
    """A 1000-class resnet18's weights (random ones stand in for ImageNet's)."""
    torch.manual_seed(0)
    return timm.create_model(NAME, num_classes=1000).state_dict()


def assert_loaded_but_head(model, saved):
    state = model.state_dict()
    body = [key for key in saved if not key.startswith(HEAD)]
    assert body and all(torch.equal(state[key], saved[key]) for key in body)
    assert model.get_classifier().out_features == 7


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_a_pth_file_loads_every_tensor_but_the_head(saved_state, tmp_path, capsys, wrap):
    file = tmp_path / "resnet18.pth"
    torch.save(saved_state if wrap is None else {wrap: saved_state, "epoch": 3}, file)
    model = create_model(NAME, num_classes=7, pretrained=str(file))
    assert_loaded_but_head(model, saved_state)
    said = capsys.readouterr().out
    assert str(file) in said and "random init for 7 classes" in said


def test_a_hugging_face_cache_folder_loads_its_safetensors(saved_state, tmp_path, capsys):
    repo = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    save_file({k: v.contiguous() for k, v in saved_state.items()}, snapshot / "model.safetensors")
    (tmp_path / "hub" / "models--timm--other_model").mkdir()  # no snapshot: skipped
    for root in (tmp_path, tmp_path / "hub", repo):  # HF_HOME, its hub/ or one repo
        model = create_model(NAME, num_classes=7, pretrained=str(root))
        assert_loaded_but_head(model, saved_state)
    assert "model.safetensors" in capsys.readouterr().out


def test_a_wrong_path_names_it(tmp_path):
    missing = tmp_path / "no_such_weights.pth"
    with pytest.raises(PipelineError, match="no_such_weights.pth.*no such file or folder"):
        create_model(NAME, num_classes=7, pretrained=str(missing))


def test_another_architectures_file_lists_the_mismatches(tmp_path):
    file = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34", num_classes=1000).state_dict(), file)
    with pytest.raises(PipelineError, match="do not fit resnet18") as err:
        create_model(NAME, num_classes=7, pretrained=str(file))
    assert str(file) in str(err.value)
    assert "in the file but not the model (layer1.2." in str(err.value)


def test_other_shapes_are_listed(tmp_path):
    file = tmp_path / "wide.pth"
    state = timm.create_model(NAME, num_classes=1000).state_dict()
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)  # a grey-scale stem
    torch.save(state, file)
    with pytest.raises(PipelineError, match=r"another shape \(conv1.weight \(64, 1, 7, 7\)"):
        create_model(NAME, num_classes=7, pretrained=str(file))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_corrupt_file_says_so(tmp_path, suffix):
    file = tmp_path / f"broken{suffix}"
    file.write_bytes(b"\x00not really weights\xff" * 10)
    with pytest.raises(PipelineError, match=f"broken{suffix}: cannot be read.*corrupt"):
        create_model(NAME, num_classes=7, pretrained=str(file))


def test_a_wrong_path_stops_at_params_validation(tmp_path, saved_state):
    raw = {"train": {"models": {NAME: {"pretrained": str(tmp_path / "typo.pth")}}}}
    with pytest.raises(ParamsError, match=f"train.models.{NAME}.pretrained = .*typo.pth"):
        parse_params(raw, checks=CHECKS)
    torch.save(saved_state, tmp_path / "typo.pth")
    assert parse_params(raw, checks=CHECKS).train.for_model(NAME).pretrained.endswith("typo.pth")


def test_pretrained_accepts_booleans_and_paths_only():
    for value in (True, False, "weights/resnet18.pth"):
        raw = {"train": {"models": {NAME: {}}, "defaults": {"pretrained": value}}}
        assert parse_params(raw).train.defaults.pretrained == value
    with pytest.raises(ParamsError, match="train.defaults.pretrained"):
        parse_params({"train": {"models": {NAME: {}}, "defaults": {"pretrained": ""}}})


def test_a_cache_of_several_models_picks_the_backbones(saved_state, tmp_path):
    for repo in ("models--timm--resnet18.a1_in1k", "models--timm--resnet34.a1_in1k"):
        snapshot = tmp_path / repo / "snapshots" / "abc"
        snapshot.mkdir(parents=True)
        torch.save(saved_state, snapshot / "pytorch_model.bin")
    assert "resnet18.a1_in1k" in str(find_weights_file(tmp_path, "resnet18"))
    with pytest.raises(PipelineError, match="several models.*none of them match 'resnet50'"):
        find_weights_file(tmp_path, "resnet50")
