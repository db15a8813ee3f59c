"""Tests for the synthetic leaf dataset (stage `generate`)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import NearestCentroid

from pipeline.config.schema import GenerateParams
from pipeline.data import synthetic
from pipeline.stages import generate

SMALL = GenerateParams(num_species=4, images_per_species=8, image_size=48, test_share=0.25, seed=3)
# Enough labelled images per species for a 5-fold colour classifier; test.csv has no labels.
COLOUR = GenerateParams(num_species=10, images_per_species=30, image_size=48, test_share=0.1)
MAIN_PARAMS = """\
generate: {num_species: 3, images_per_species: 6, image_size: 48, test_share: 0.34, seed: 1}
train:
  models: {d2l_resnet11: {}}
"""


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _fail_after(monkeypatch: pytest.MonkeyPatch, n: int) -> list[int]:
    """Make the per-image draw raise once `n` images have been drawn; return the call log."""
    real, calls = synthetic.render_image, []

    def flaky(*args, **kwargs):
        if len(calls) >= n:
            raise RuntimeError("boom")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_image", flaky)
    return calls


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small") / "synthetic"
    synthetic.generate_dataset(out, SMALL)
    return out


def test_csv_layout(small_dataset: Path) -> None:
    train = pd.read_csv(small_dataset / "train.csv")
    test = pd.read_csv(small_dataset / "test.csv")
    sample = pd.read_csv(small_dataset / "sample_submission.csv")
    names = {s.name for s in synthetic.make_species(SMALL)}

    assert list(train.columns) == ["image", "label"]
    assert list(test.columns) == ["image"]
    assert list(sample.columns) == ["image", "label"]
    assert set(train["label"]) == names
    assert list(sample["image"]) == list(test["image"])
    assert set(sample["label"]) <= names
    assert not set(train["image"]) & set(test["image"])
    # One running index over all images, like Kaggle.
    every = sorted(set(train["image"]) | set(test["image"]))
    assert every == sorted(f"images/{i}.jpg" for i in range(4 * 8))


def test_images_are_square_rgb_jpegs(small_dataset: Path) -> None:
    listed = pd.concat([pd.read_csv(small_dataset / f)["image"] for f in ("train.csv", "test.csv")])
    on_disk = {f"images/{p.name}" for p in (small_dataset / "images").iterdir()}
    assert on_disk == set(listed)
    for name in listed:
        with Image.open(small_dataset / name) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (48, 48))


def test_counts_per_species_follow_test_share(small_dataset: Path) -> None:
    train = pd.read_csv(small_dataset / "train.csv")
    test = pd.read_csv(small_dataset / "test.csv")
    plan = synthetic.plan_images(synthetic.make_species(SMALL), SMALL)

    assert synthetic.held_out_per_species(SMALL) == 2  # round(8 * 0.25)
    assert train["label"].value_counts().to_dict() == {s: 6 for s in set(train["label"])}
    tested = plan.set_index("image").loc[test["image"], "label"]
    assert tested.value_counts().to_dict() == {s: 2 for s in set(train["label"])}
    assert (plan.set_index("image").loc[train["image"], "label"].values == train["label"]).all()


def test_train_and_test_are_interleaved(small_dataset: Path) -> None:
    train = pd.read_csv(small_dataset / "train.csv")
    test_numbers = [
        int(re.findall(r"\d+", name)[0])
        for name in pd.read_csv(small_dataset / "test.csv")["image"]
    ]
    assert test_numbers != list(range(min(test_numbers), min(test_numbers) + len(test_numbers)))
    label_runs = (train["label"] != train["label"].shift()).sum()
    assert label_runs > SMALL.num_species  # species are not in blocks


@pytest.mark.parametrize(("n", "share", "expected"), [(4, 0.01, 1), (4, 0.99, 3), (40, 0.25, 10)])
def test_held_out_per_species_bounds(n: int, share: float, expected: int) -> None:
    params = GenerateParams(images_per_species=n, test_share=share)
    assert synthetic.held_out_per_species(params) == expected


def test_species_are_distinct_and_share_colours() -> None:
    species = synthetic.make_species(GenerateParams(num_species=48))
    names = [s.name for s in species]
    assert len(set(names)) == 48
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)+", name) for name in names)
    traits = {(s.outline, s.margin, s.aspect, s.venation) for s in species}
    assert len(traits) == 48
    assert len({s.hsv for s in species}) == len(synthetic.PALETTE) < 48
    assert synthetic.make_species(GenerateParams(num_species=5)) == species[:5]  # seed, not size


def test_same_seed_gives_identical_bytes(tmp_path: Path, small_dataset: Path) -> None:
    again = tmp_path / "again"
    synthetic.generate_dataset(again, SMALL)
    assert _hashes(again) == _hashes(small_dataset)


def test_other_seed_changes_the_images(tmp_path: Path, small_dataset: Path) -> None:
    other = tmp_path / "other"
    synthetic.generate_dataset(other, SMALL.model_copy(update={"seed": SMALL.seed + 1}))
    first, second = _hashes(small_dataset), _hashes(other)
    images = [k for k in first if k.startswith("images")]
    assert sum(first[k] != second[k] for k in images) == len(images)


def test_failed_run_leaves_no_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "synthetic"
    calls = _fail_after(monkeypatch, 3)
    with pytest.raises(RuntimeError, match="boom"):
        synthetic.generate_dataset(out, SMALL)
    assert len(calls) == 3  # it failed midway, after writing some images
    assert list(tmp_path.iterdir()) == []  # neither out_dir nor a temporary sibling


def test_failed_run_keeps_previous_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_dataset: Path
) -> None:
    out = tmp_path / "synthetic"
    synthetic.generate_dataset(out, SMALL)
    _fail_after(monkeypatch, 3)
    with pytest.raises(RuntimeError, match="boom"):
        synthetic.generate_dataset(out, SMALL.model_copy(update={"seed": 99}))
    assert _hashes(out) == _hashes(small_dataset)
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]


def _colour_features(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per train image: mean RGB, mean RGB of its most saturated 15% (mostly leaf), labels."""
    train = pd.read_csv(root / "train.csv")
    means, leaf = [], []
    for name in train["image"]:
        pixels = np.asarray(Image.open(root / name), dtype=np.float64).reshape(-1, 3)
        top, bottom = pixels.max(axis=1), pixels.min(axis=1)
        saturation = (top - bottom) / (top + 1e-6)
        means.append(pixels.mean(axis=0))
        leaf.append(pixels[saturation >= np.quantile(saturation, 0.85)].mean(axis=0))
    return np.stack(means), np.stack(leaf), train["label"].to_numpy()


def _centroid_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(NearestCentroid(), features, labels, cv=folds).mean())


@pytest.fixture(scope="module")
def colour_features(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, ...]:
    out = tmp_path_factory.mktemp("colour") / "synthetic"
    synthetic.generate_dataset(out, COLOUR)
    return _colour_features(out)


def test_mean_colour_does_not_identify_species(colour_features: tuple[np.ndarray, ...]) -> None:
    means, _, labels = colour_features
    # Measured 0.12 (chance 0.10): the varied backgrounds dominate the image mean.
    assert _centroid_accuracy(means, labels) < 0.3


def test_leaf_colour_does_not_identify_species(colour_features: tuple[np.ndarray, ...]) -> None:
    _, leaf, labels = colour_features
    # Three palette colours for ten species: 0.21 measured (0.19-0.31 over seeds 0-3).
    assert _centroid_accuracy(leaf, labels) < 0.4


def test_leaf_colour_check_detects_species_colours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound above has teeth: with one hue per species the same check passes 0.4."""
    hues = np.linspace(0, 1, COLOUR.num_species, endpoint=False)
    monkeypatch.setattr(synthetic, "PALETTE", tuple((h, 0.7, 0.6) for h in hues))
    synthetic.generate_dataset(tmp_path / "synthetic", COLOUR)
    _, leaf, labels = _colour_features(tmp_path / "synthetic")
    assert _centroid_accuracy(leaf, labels) > 0.45  # measured 0.56


def test_main_generates_from_params_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(MAIN_PARAMS, encoding="utf-8")
    generate.main([])
    summary = capsys.readouterr().out
    assert "3 species" in summary and "12 train + 6 test" in summary
    out = tmp_path / "data" / "synthetic"
    train = pd.read_csv(out / "train.csv")
    assert len(train) == 12 and train["label"].nunique() == 3
    assert len(pd.read_csv(out / "test.csv")) == 6
    assert len(list((out / "images").iterdir())) == 18
