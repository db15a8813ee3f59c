"""The model names users type reach params.yaml through a real `dvc exp run -S`: torchvision's
as `tv-<name>` (DVC's override grammar has no ":" in keys), timm's with a pretrained tag as a
backbone; a name that DVC splits at its dots stops at stage check saying which form to use."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from helpers.processes import child_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def exp_run(project, *sets: str, target: str | None = "check") -> subprocess.CompletedProcess:
    """`dvc exp run -S ...` of stage check alone (`target`; None: the whole pipeline): DVC parses
    every -S into params.yaml, then the check validates all of it, backbones included (the
    registry builds the names in tests/test_models.py), so no training is needed to prove a name
    passes."""
    command = ["dvc", "exp", "run"]
    for assignment in sets:
        command += ["-S", assignment]
    env = child_env(project, DVC_NO_ANALYTICS="1")
    command += [target] if target else []
    return subprocess.run(command, cwd=project, capture_output=True, text=True, env=env)


def test_torchvision_and_tagged_timm_models_through_exp_run(project):
    tagged = "+train.models.rn18_a1={backbone: resnet18.a1_in1k}"
    result = exp_run(project, "+train.models.tv-resnet18={}", tagged)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    models = yaml.safe_load((project / "params.yaml").read_text())["train"]["models"]
    assert models["tv-resnet18"] == {} and models["rn18_a1"] == {"backbone": "resnet18.a1_in1k"}
    assert (project / "data/params_checked.txt").is_file()


def test_a_dotted_model_key_stops_at_check_naming_the_form_to_use(project):
    result = exp_run(project, "+train.models.resnet18.a1_in1k={}")
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "train.models.resnet18.a1_in1k: `dvc exp run -S` reads the dots" in message
    assert "'+train.models.resnet18_a1_in1k={backbone: resnet18.a1_in1k}'" in message
    assert not (project / "data/params_checked.txt").exists()


def test_a_failed_exp_run_leaves_no_empty_model_folders(project):
    """DVC creates the parent folder of each out it cannot check out (the new model's
    models/<name>/); stage check removes such empty folders before it fails."""
    result = exp_run(project, "+train.models.resnet18={}", "+train.defaults.epoch=3", target=None)
    assert result.returncode != 0
    assert "did you mean 'epochs'?" in result.stdout + result.stderr
    for root in ("models", "checkpoints"):
        folders = [p for p in (project / root).rglob("*") if p.is_dir()]  # none if no root
        assert folders == [], f"empty folders left under {root}/: {folders}"
