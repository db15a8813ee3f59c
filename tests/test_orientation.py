"""Whether the leaves stand upright, and the augmentation `augment.upright` leaves out then."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import tiny_run_params

from pipeline.config.model_settings import ModelParams
from pipeline.config.params import ParamsError, parse_params
from pipeline.data.orientation import measure_orientation, orient_settings, read_orientation
from pipeline.io.console import PipelineError

UPRIGHT = {"images": 40, "turn": 0.52, "mirror": 0.07, "upright": True}
ANY_ANGLE = {"images": 40, "turn": 0.09, "mirror": 0.09, "upright": False}


def leaf(angle: float, rng: np.random.Generator) -> np.ndarray:
    """A dark leaf-like ellipse, three times as long as wide, on white, turned by `angle`."""
    height, width = rng.integers(80, 120), rng.integers(80, 120)
    image = np.full((height, width, 3), 255, np.uint8)
    centre = (int(width // 2), int(height // 2))
    axes = (int(min(height, width) * 0.13), int(min(height, width) * 0.4))
    cv2.ellipse(image, centre, axes, angle, 0, 360, (40, 110, 30), -1)
    return image


def leaves(angles) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [leaf(angle, rng) for angle in angles]


def test_upright_leaves_are_told_from_leaves_at_any_angle():
    rng = np.random.default_rng(1)
    upright = measure_orientation(leaves(rng.uniform(-15, 15, 40)))
    any_angle = measure_orientation(leaves(rng.uniform(0, 360, 40)))
    assert upright["upright"] and upright["images"] == 40
    assert upright["turn"] > 3 * upright["mirror"]
    assert not any_angle["upright"]


def test_leaves_that_all_lie_one_way_count_as_upright():
    """Turning them changes their mean as much as turning upright ones: one way up is shared."""
    assert measure_orientation(leaves([90] * 20))["upright"]


SPECS = [
    {"name": "RandomResizedCrop", "scale": [0.75, 1.0]},
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "VerticalFlip", "p": 0.5},
    {"name": "RandomRotate90", "p": 0.5},
    {"name": "Transpose", "p": 0.5},
]


def settings(upright="auto", views=("identity", "hflip", "rot90")) -> ModelParams:
    return ModelParams(augment={"upright": upright, "train": SPECS}, tta={"views": list(views)})


def names(hp: ModelParams) -> list[str]:
    return [spec.name for spec in hp.augment.train]


def test_auto_on_upright_leaves_leaves_out_the_turning_transforms_and_views():
    hp, why = orient_settings(settings(), UPRIGHT)
    assert names(hp) == ["RandomResizedCrop", "HorizontalFlip"]
    assert hp.tta.views == ["identity", "hflip"]
    assert hp.augment.upright is True
    assert "stand upright" in why and "0.52" in why
    assert "VerticalFlip, RandomRotate90, Transpose, TTA rot90" in why


def test_auto_on_leaves_at_any_angle_keeps_everything():
    hp, why = orient_settings(settings(), ANY_ANGLE)
    assert names(hp) == [spec["name"] for spec in SPECS]
    assert hp.tta.views == ["identity", "hflip", "rot90"]
    assert hp.augment.upright is False
    assert "lie at any angle" in why and "every transform kept" in why


def test_true_and_false_override_the_measure():
    hp, why = orient_settings(settings(upright=True), ANY_ANGLE)
    assert names(hp) == ["RandomResizedCrop", "HorizontalFlip"]
    assert why.startswith("augment.upright is true")
    hp, why = orient_settings(settings(upright=False), UPRIGHT)
    assert names(hp) == [spec["name"] for spec in SPECS] and why == ""


def test_a_policy_without_turns_is_said_to_keep_everything():
    hp = ModelParams(augment={"train": SPECS[:2]}, tta={"views": ["identity", "hflip"]})
    oriented, why = orient_settings(hp, UPRIGHT)
    assert names(oriented) == ["RandomResizedCrop", "HorizontalFlip"]
    assert why.endswith(
        "stand upright (their mean mask turned 90 degrees differs by 0.52, "
        "mirrored by 0.07); the policy turns none of them"
    )


def test_only_turning_views_leave_the_identity():
    hp, _ = orient_settings(settings(views=["rot90", "vflip"]), UPRIGHT)
    assert hp.tta.views == ["identity"]


def test_the_decision_is_part_of_the_settings_a_checkpoint_records():
    hp, _ = orient_settings(settings(), UPRIGHT)
    assert ModelParams.model_validate(hp.model_dump(mode="json")) == hp


@pytest.mark.parametrize("value", ["yes please", 1.5])
def test_a_bad_upright_setting_names_what_is_allowed(value):
    params = tiny_run_params()
    params["train"]["defaults"]["augment"]["upright"] = value
    with pytest.raises(ParamsError) as err:
        parse_params(params)
    line = f"train.defaults.augment.upright = {value!r}: allowed: true | false | 'auto'"
    assert line in str(err.value)


def test_a_corrupt_measure_names_the_file(tmp_path):
    path = tmp_path / "orientation.json"
    path.write_text(json.dumps({"turn": 0.1}))
    with pytest.raises(PipelineError, match="orientation.json.*turn, mirror and upright"):
        read_orientation(path)
