"""`python3 -m pipeline.preview`: the augmentation grid of the prepared training images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from pipeline.config.model_settings import ModelParams
from pipeline.config.params import load_params
from pipeline.config.paths import CACHE_ORIENTATION, PREPARED_TRAIN
from pipeline.io.console import PipelineError
from pipeline.tools import preview

SIZE = 32
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def half_image(colour: tuple[int, int, int]) -> np.ndarray:
    """A SIZE x SIZE image: `colour` on the left half, white on the right."""
    image = np.full((SIZE, SIZE, 3), 255, np.uint8)
    image[:, : SIZE // 2] = colour
    return image


@pytest.fixture
def prepared(tmp_path, monkeypatch, tiny_params) -> dict:
    """data/prepared/train.csv with 2 images of each of 3 classes (rows out of class order)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    rows = []
    for index, target in enumerate([2, 0, 1, 0, 2, 1]):
        path = f"images/{index}.png"
        Image.fromarray(half_image(COLOURS[target])).save(path)
        rows.append({"image": path, "label": f"class{target}", "target": target, "path": path})
    PREPARED_TRAIN.parent.mkdir(parents=True)
    pd.DataFrame(rows).assign(md5="0").to_csv(PREPARED_TRAIN, index=False)
    # Half colour, half white: no background to cut a leaf from (the border is half of each,
    # so the background's plane is a ramp across the step), and these tests are about the draws.
    tiny_params["train"]["defaults"]["crop_to_leaf"] = False
    tiny_params["train"]["defaults"]["augment"] = {
        "train": [{"name": "HorizontalFlip", "p": 1.0}],
        "eval": [],
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    return tiny_params


def test_one_image_per_class_in_class_order(prepared):
    picked = preview.pick_images(8)
    assert list(picked["target"]) == [0, 1, 2]
    assert list(picked["image"]) == ["images/1.png", "images/2.png", "images/0.png"]
    assert len(preview.pick_images(2)) == 2


def test_draws_apply_the_chosen_policy(prepared):
    hp = ModelParams.model_validate(prepared["train"]["defaults"])
    path = ["images/0.png"]
    fitted, *flipped = preview.render_rows(path, hp, "train", samples=3, seed=7)[0]
    assert fitted.shape == (SIZE, SIZE, 3) and fitted.dtype == np.uint8
    # Denormalised, the unaugmented image is the image (to rounding).
    assert np.abs(fitted.astype(int) - half_image(COLOURS[2])).max() <= 1
    for draw in flipped:
        np.testing.assert_array_equal(draw, fitted[:, ::-1])
    _, *plain = preview.render_rows(path, hp, "eval", samples=2, seed=7)[0]
    for draw in plain:
        np.testing.assert_array_equal(draw, fitted)


def test_main_writes_the_grid(prepared, tmp_path, capsys):
    out = preview.main(["--samples", "2", "--out", "plots/grid.png"])
    assert out == Path("plots/grid.png")
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["grid.png"]  # atomic
    grid = np.asarray(Image.open(out).convert("RGB"))
    cell = preview.MIN_CELL
    assert grid.shape[0] == 2 * (preview.FONT_SIZE + 2 * preview.GAP) + 3 * (cell + preview.GAP)
    # Each class's colour fills half of each of its 3 tiles (fitted + 2 draws), enlarged.
    for colour in COLOURS:
        matches = (grid == colour).all(axis=2).sum()
        assert matches == 3 * cell * cell // 2
    assert "3 image(s) x 2 draw(s) of d2l_resnet11's augment.train" in capsys.readouterr().out


def test_the_grid_is_written_in_the_format_its_name_says(prepared):
    out = preview.main(["--images", "1", "--samples", "1", "--out", "grid.jpg"])
    assert Image.open(out).format == "JPEG"
    with pytest.raises(PipelineError, match=r"--out grid.txt: no image format .* use .png"):
        preview.main(["--out", "grid.txt"])


def test_the_grid_shows_the_policy_oriented_as_training_uses_it(prepared, capsys):
    """Once stage cache has found upright leaves, the turning transforms are left out."""
    prepared["train"]["defaults"]["augment"]["train"].append({"name": "RandomRotate90"})
    Path("params.yaml").write_text(yaml.safe_dump(prepared))
    preview.main(["--samples", "1"])
    assert "augment.upright: auto leaves the list as written" in capsys.readouterr().err
    assert preview.model_settings(load_params(), None)[1].augment.train[-1].name == "RandomRotate90"
    CACHE_ORIENTATION.parent.mkdir(parents=True)
    CACHE_ORIENTATION.write_text(json.dumps({"turn": 0.5, "mirror": 0.1, "upright": True}))
    _, hp = preview.model_settings(load_params(), None)
    assert [spec.name for spec in hp.augment.train] == ["HorizontalFlip"]
    assert "left out: RandomRotate90" in capsys.readouterr().err


def test_missing_prepared_data_says_what_to_run(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    with pytest.raises(PipelineError, match=r"train.csv: not found; run `dvc repro prepare`"):
        preview.main([])


def test_unknown_model_lists_the_models(prepared):
    with pytest.raises(PipelineError, match=r"--model 'resnet9' is not a key .*d2l_resnet11"):
        preview.main(["--model", "resnet9"])


@pytest.mark.parametrize("arguments", [["--images", "0"], ["--samples", "-1"], ["--split", "x"]])
def test_bad_arguments_are_refused(arguments):
    with pytest.raises(SystemExit):
        preview.parse_args(arguments)
