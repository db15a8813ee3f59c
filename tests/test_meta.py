"""Stage `meta`: image statistics, the per-fold logistic regression, and its ensemble membership."""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.config import paths
from pipeline.config.params import ParamsError, parse_params
from pipeline.config.paths import (
    ENSEMBLE_METRICS,
    META_METRICS,
    OOF_NAME,
    PSEUDO_DIR,
    TEST_LOGITS_NAME,
)
from pipeline.config.schema import MetaParams
from pipeline.ensemble import meta_model
from pipeline.ensemble.blade_features import BLADE_FEATURES, BLADE_MAX_SIDE_PX
from pipeline.ensemble.discriminant import LEDOIT_WOLF
from pipeline.ensemble.features import OUTLINE_FEATURES, TURN_PAIR_FEATURES, image_features
from pipeline.ensemble.meta_model import ClassifierChoice
from pipeline.ensemble.region_features import (
    DISC_FEATURES,
    DISC_MAX_SIDE_PX,
    RINGS,
    RINGS_FEATURES,
    RINGS_REACH,
    WIDTHS_FEATURES,
)
from pipeline.io.files import read_json
from pipeline.stages import ensemble, meta, pseudo

# what MetaModel.classifier adds to "lda": its shrinkage and class share, when not the defaults
REGULARISATION = r"( \((shrinkage [0-9.]+)?(, )?(class covariance [0-9.]+)?\))?"


def save_rectangle(path: Path, size: tuple[int, int], box: tuple[int, int, int, int], fg, bg):
    """A (width, height) image of colour `bg` with the pixels in `box` (x0, y0, x1, y1) `fg`."""
    pixels = np.full((size[1], size[0], 3), bg, dtype=np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = fg
    Image.fromarray(pixels).save(path)  # PNG: lossless, so the counts are exact
    return str(path)


@pytest.mark.parametrize(
    ("fg", "bg"),
    [(255, 0), (0, 255), ((40, 160, 40), (250, 250, 245)), ((60, 140, 50), (150, 80, 20))],
)
def test_features_measure_size_area_and_outline_in_original_pixels(tmp_path, fg, bg):
    # A 30 x 20 object in a 200 x 100 image, on a dark or a light background, or green on brown
    # wood of the same grey level (found by its colour).
    path = save_rectangle(tmp_path / "leaf.png", (200, 100), (50, 40, 80, 60), fg, bg)
    features = image_features(path, ["size", "shape"])
    assert features["log_width"] == pytest.approx(math.log(200))
    assert features["log_height"] == pytest.approx(math.log(100))
    assert features["log_aspect"] == pytest.approx(math.log(2))
    assert features["log_object_area"] == pytest.approx(math.log1p(600))
    assert features["object_share"] == pytest.approx(600 / 20_000)
    assert features["log_outline"] == pytest.approx(math.log1p(2 * (30 + 20)))
    assert features["outline_per_sqrt_area"] == pytest.approx(100 / math.sqrt(601))
    # A rectangle is its own convex hull and its own simplified polygon; the contour runs
    # through the border pixels' centres, a 29 x 19 rectangle.
    assert features["solidity"] == 1 and features["polygon_vertices"] == 4
    assert features["log_hull_perimeter_ratio"] == 0 and features["log_roughness"] == 0
    assert features["log_elongation"] == pytest.approx(2 * math.log(29 / 19), abs=1e-3)


def test_notches_and_teeth_show_in_the_contour_features(tmp_path):
    plain = save_rectangle(tmp_path / "plain.png", (120, 120), (20, 20, 100, 100), 255, 0)
    pixels = np.asarray(Image.open(plain)).copy()
    pixels[20:60, 55:65] = 0  # a deep notch from the top edge
    for x in range(24, 100, 8):  # teeth along the bottom edge
        pixels[100:104, x : x + 4] = 255
    Image.fromarray(pixels).save(tmp_path / "toothed.png")
    before = image_features(plain, ["shape"])
    after = image_features(str(tmp_path / "toothed.png"), ["shape"])
    assert after["solidity"] < before["solidity"] == 1
    assert after["log_hull_perimeter_ratio"] > before["log_hull_perimeter_ratio"]
    assert after["polygon_vertices"] > before["polygon_vertices"]


def save_leaf(path: Path, size: int, angle: float, teeth: int = 0) -> str:
    """A white lobed leaf on black, `size` px square, turned by `angle` degrees."""
    t = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    radius = 0.3 * (1 + 0.25 * np.cos(3 * t) + 0.04 * np.cos(teeth * t) * (teeth > 0))
    x, y = radius * np.cos(t + np.radians(angle)), radius * 0.7 * np.sin(t + np.radians(angle))
    polygon = np.stack([(0.5 + x) * size, (0.5 + y) * size], axis=1).round().astype(np.int32)
    pixels = np.zeros((size, size, 3), np.uint8)
    cv2.fillPoly(pixels, [polygon], (255, 255, 255))
    Image.fromarray(pixels).save(path)
    return str(path)


def group(path: str, name: str) -> np.ndarray:
    """The values of feature group `name` of the image at `path`, in column order."""
    return np.array(list(image_features(path, [name]).values()))


def save_circle(path: Path, size: int, radius: int) -> str:
    """A white disc of `radius` px centred in a black `size` px square: a round leaf."""
    pixels = np.zeros((size, size), np.uint8)
    cv2.circle(pixels, (size // 2, size // 2), radius, 255, -1)
    Image.fromarray(pixels).save(path)
    return str(path)


def test_outline_features_ignore_position_size_and_turn_but_see_the_margin(tmp_path):
    leaf = group(save_leaf(tmp_path / "leaf.png", 400, 0), "outline")
    assert len(leaf) == len(OUTLINE_FEATURES) and np.isfinite(leaf).all()
    turned = group(save_leaf(tmp_path / "turned.png", 400, 90), "outline")
    larger = group(save_leaf(tmp_path / "larger.png", 800, 35), "outline")
    toothed = group(save_leaf(tmp_path / "toothed.png", 400, 0, teeth=40), "outline")
    # The same leaf turned, or scanned twice as large: the histograms (6 scales, each summing
    # to 1) move by little (pixel steps); teeth on the margin move them several times as far.
    change = {
        name: np.abs(other - leaf).sum()
        for name, other in [("turned", turned), ("larger", larger), ("toothed", toothed)]
    }
    assert change["turned"] < 2 and change["larger"] < 2
    assert change["toothed"] > 4 * max(change["turned"], change["larger"])
    fine_std = OUTLINE_FEATURES.index("turn4_std")
    assert toothed[fine_std] > 5 * leaf[fine_std]


def disc(path: str) -> dict[str, float]:
    return image_features(path, ["disc"])


def test_disc_features_ignore_position_resolution_and_turn_but_see_the_margin(tmp_path):
    leaf = disc(save_leaf(tmp_path / "leaf.png", 400, 0))
    assert list(leaf) == list(DISC_FEATURES) and np.isfinite(list(leaf.values())).all()
    toothed = disc(save_leaf(tmp_path / "toothed.png", 400, 0, teeth=40))
    radii = ("5", "10", "20", "40")
    for name, size, angle in [("turned", 400, 90), ("smaller", 200, 10), ("larger", 800, 35)]:
        other = disc(save_leaf(tmp_path / f"{name}.png", size, angle))
        for radius in radii:  # pixel steps of the drawn outline only
            assert abs(other[f"disc{radius}_mean"] - leaf[f"disc{radius}_mean"]) < 0.02, name
            assert 0.7 < other[f"disc{radius}_std"] / leaf[f"disc{radius}_std"] < 1.4, name
    # 40 teeth around the margin: the small discs see them, the largest hardly
    assert toothed["disc5_std"] > 3 * leaf["disc5_std"]
    assert toothed["disc10_std"] > 2 * leaf["disc10_std"]
    assert toothed["disc40_std"] < 1.2 * leaf["disc40_std"]


def test_disc_shares_of_a_circle_are_even_and_near_a_half(tmp_path):
    features = image_features(save_circle(tmp_path / "circle.png", 300, 120), ["disc"])
    for radius in ("5", "10", "20", "40"):
        # on a convex outline a little less than half of a disc is inside (up to pixel steps)
        assert 0.4 < features[f"disc{radius}_mean"] < 0.52
        assert features[f"disc{radius}_std"] < 0.05  # pixel steps only
    bins = [features[f"disc5_bin{b}"] ** 2 for b in range(12)]  # bins hold sqrt(share)
    assert sum(bins) == pytest.approx(1.0)
    assert bins[5] + bins[6] > 0.95  # the two bins either side of 1/2


def test_turn_pairs_ignore_position_size_and_turn_but_see_the_margin(tmp_path):
    leaf = group(save_leaf(tmp_path / "leaf.png", 400, 0), "turn_pairs")
    assert len(leaf) == len(TURN_PAIR_FEATURES) and np.isfinite(leaf).all()
    # each pair's bins hold sqrt(share): their squares sum to 1
    assert (leaf**2).reshape(3, -1).sum(axis=1) == pytest.approx([1, 1, 1])
    turned = group(save_leaf(tmp_path / "turned.png", 400, 90), "turn_pairs")
    larger = group(save_leaf(tmp_path / "larger.png", 800, 35), "turn_pairs")
    toothed = group(save_leaf(tmp_path / "toothed.png", 400, 0, teeth=40), "turn_pairs")
    moved = max(np.abs(turned - leaf).sum(), np.abs(larger - leaf).sum())
    assert np.abs(toothed - leaf).sum() > 3 * moved


def test_rings_ignore_position_size_and_turn_but_see_the_lobes(tmp_path):
    path = save_leaf(tmp_path / "leaf.png", 400, 0)
    leaf = group(path, "rings")
    assert len(leaf) == len(RINGS_FEATURES) and np.isfinite(leaf).all()
    image = Image.open(path)
    # the same leaf turned by 35 degrees and moved, and scanned at twice the resolution
    image.rotate(35, translate=(30, -20), resample=Image.BILINEAR).save(tmp_path / "turned.png")
    image.resize((800, 800), Image.BILINEAR).save(tmp_path / "larger.png")
    turned = group(str(tmp_path / "turned.png"), "rings")
    larger = group(str(tmp_path / "larger.png"), "rings")
    assert np.abs(turned - leaf).max() < 0.01 and np.abs(larger - leaf).max() < 0.01
    # harmonics 1..7 of a round leaf are ~0; the lobed one repeats its pattern round a ring
    # twice (the squash) and three times (the lobes)
    disc = group(save_circle(tmp_path / "round.png", 400, 100), "rings").reshape(RINGS, -1)
    lobed = leaf.reshape(RINGS, -1)
    assert disc[:, 1:].max() < 0.01
    assert lobed[:, 2].max() > 0.1 and lobed[:, 3].max() > 0.1


def test_rings_of_a_round_leaf_are_full_inside_and_empty_outside(tmp_path):
    share = group(save_circle(tmp_path / "round.png", 400, 100), "rings").reshape(RINGS, -1)[:, 0]
    # ring i spans radii i / RINGS to (i + 1) / RINGS of RINGS_REACH x sqrt(area)
    outer = (np.arange(RINGS) + 1) / RINGS * RINGS_REACH * math.sqrt(math.pi) * 100
    inner = outer - RINGS_REACH * math.sqrt(math.pi) * 100 / RINGS
    assert share[outer < 95] == pytest.approx(1, abs=0.01)
    assert share[inner > 105] == pytest.approx(0, abs=0.01)


@pytest.mark.parametrize(
    ("group", "max_side"),
    [("disc", DISC_MAX_SIDE_PX), ("widths", DISC_MAX_SIDE_PX), ("blade", BLADE_MAX_SIDE_PX)],
)
def test_a_thread_thin_object_keeps_the_canvas_small(tmp_path, monkeypatch, group, max_side):
    """A one-pixel diagonal line across a large image has almost no area; resizing it to 128 px
    of square-rooted area would make a canvas of about 200,000 px a side."""
    pixels = np.zeros((1600, 1600), np.uint8)
    cv2.line(pixels, (0, 0), (1599, 1599), 255, 1)
    Image.fromarray(pixels).save(tmp_path / "line.png")
    resize = cv2.resize

    def bounded_resize(image, size, **kwargs):
        assert max(size) <= max_side, f"{group} canvas of {size} px"
        return resize(image, size, **kwargs)

    monkeypatch.setattr(cv2, "resize", bounded_resize)
    features = image_features(str(tmp_path / "line.png"), [group])
    assert np.isfinite(list(features.values())).all()


def test_feature_groups_choose_the_columns(tmp_path):
    path = save_rectangle(tmp_path / "leaf.png", (40, 40), (0, 0, 20, 40), (255, 0, 0), 0)
    assert list(image_features(path, ["size"])) == ["log_width", "log_height", "log_aspect"]
    colour = image_features(path, ["colour"])
    assert colour["mean_r"] == pytest.approx(0.5) and colour["mean_g"] == 0
    assert colour["std_r"] == pytest.approx(0.5) and colour["std_b"] == 0


def test_a_blank_image_has_no_object_and_finite_features(tmp_path):
    path = save_rectangle(tmp_path / "blank.png", (30, 50), (0, 0, 0, 0), 0, 128)
    groups = ["size", "shape", "outline", "turn_pairs", "disc", "widths", "rings", "blade"]
    features = image_features(path, groups)
    assert features["object_share"] == 0 and features["log_outline"] == 0
    assert features["solidity"] == 0 and features["polygon_vertices"] == 0
    drawn = image_features(
        save_rectangle(tmp_path / "leaf.png", (30, 50), (5, 5, 9, 9), 0, 128),
        groups[1:],
    )
    assert list(drawn) == list(features)[3:]  # the same columns with or without an object
    assert all(math.isfinite(value) for value in features.values())


def folds_table(targets: list[int], fold_of_row: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"target": targets, "fold": fold_of_row})


def test_each_fold_predicts_its_own_rows_from_the_others_and_the_test_images_from_all():
    # Two well separated classes along one feature; class 2 only in fold 1.
    x = pd.DataFrame({"f": [0.0, 0.1, 5.0, 5.1, 0.2, 5.2, 9.0, 0.05, 4.9]})
    folds = folds_table([0, 0, 1, 1, 0, 1, 2, 0, 1], [0, 0, 0, 0, 1, 1, 1, 1, 1])
    test = pd.DataFrame({"f": [0.0, 5.0]})
    settings = MetaParams(C=100.0, classifier="logistic")
    models = meta_model.fit_models(x, folds, [0, 1], settings, num_classes=3)
    all_rows = meta_model.fit_all_rows(x, folds, settings, num_classes=3)
    cells = meta_model.fold_logits(models, all_rows, x, folds, test)
    assert sorted(cells) == [0, 1]
    for fold, (rows, oof, test_log_probs) in cells.items():
        assert (rows == np.flatnonzero(folds["fold"] == fold)).all()
        assert oof.shape == (len(rows), 3) and test_log_probs.shape == (2, 3)
        assert oof.dtype == np.float32 and (oof <= 0).all() and np.isfinite(oof).all()
        targets = folds["target"].to_numpy()[rows]
        known = targets != 2  # class 2 is learnt by fold 0 only
        assert (oof.argmax(axis=1)[known] == targets[known]).all()
        assert (test_log_probs.argmax(axis=1) == [0, 1]).all()
    # Fold 0 trains on fold 1's rows, which hold class 2; fold 1 trains without it.
    assert cells[1][1][:, 2].max() == pytest.approx(meta_model.ABSENT_CLASS_LOG_PROB)
    assert cells[0][1][:, 2].max() > meta_model.ABSENT_CLASS_LOG_PROB
    # The test images are predicted by the classifier fitted on every row, the same in each fold.
    assert np.array_equal(cells[0][2], cells[1][2])
    assert cells[1][2][:, 2].max() > meta_model.ABSENT_CLASS_LOG_PROB


def shared_noise_classes(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """8 classes x 6 rows in 40 dimensions: Gaussian means under one strongly correlated noise,
    the case linear discriminant analysis is made for (few rows a class, a shared covariance)."""
    means = rng.normal(size=(8, 40)) * 0.6
    mixing = rng.normal(size=(40, 40)) / np.sqrt(40)
    y = np.repeat(np.arange(8), 6)
    return means[y] + rng.normal(size=(len(y), 40)) @ mixing * 3, y


def heavy_tailed_classes(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """2 classes x 60 rows told apart by the sign of one heavy-tailed feature: far-out rows
    distort the shared covariance LDA estimates, not the logistic fit."""
    y = np.repeat([0, 1], 60)
    x = rng.normal(size=(len(y), 3))
    x[:, 0] = np.where(y == 1, 1, -1) * rng.exponential(1, len(y)) ** 3
    return x, y


def choose(x: np.ndarray, y: np.ndarray, classifier: str = "auto") -> ClassifierChoice:
    weights = meta_model.CLASSIFIER_LDA_WEIGHTS[classifier]
    return meta_model.choose_classifier(x, y, weights, C=10.0)


def fit(choice: ClassifierChoice, x: np.ndarray, y: np.ndarray):
    return meta_model.fitted(meta_model.make_classifier(choice, C=10.0), x, y)


def test_auto_leans_to_the_classifier_that_cross_validates_better_inside_the_training_rows():
    rng = np.random.default_rng(0)
    shared_noise = choose(*shared_noise_classes(rng)).lda_weight
    heavy_tails = choose(*heavy_tailed_classes(rng)).lda_weight
    # LDA takes a share where its shared covariance fits; none where far-out rows distort it
    assert heavy_tails == 0.0 < shared_noise
    # a class with a single row cannot be cross-validated: logistic, or LDA with Ledoit-Wolf
    x, y = np.array([[0.0], [0.1], [5.0], [5.1], [9.0]]), np.array([0, 0, 1, 1, 2])
    assert choose(x, y) == ClassifierChoice(0.0, LEDOIT_WOLF, class_share=0.0)
    assert choose(x, y, "lda") == ClassifierChoice(1.0, LEDOIT_WOLF, class_share=0.0)


def test_lda_shrinks_its_covariance_as_much_as_cross_validates_best():
    # 20 rows a class under one strongly correlated noise: Ledoit-Wolf's estimate from each
    # class's own rows shrinks the pooled covariance far too much; a small fixed one is chosen
    rng = np.random.default_rng(0)
    means = rng.normal(size=(8, 40)) * 0.6
    mixing = rng.normal(size=(40, 40)) / np.sqrt(40)

    def draw(rows_a_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(8), rows_a_class)
        return means[y] + rng.normal(size=(len(y), 40)) @ mixing * 3, y

    (x, y), (fresh_x, fresh_y) = draw(20), draw(100)
    choice = choose(x, y, "lda")
    assert choice.lda_weight == 1.0 and choice.shrinkage != LEDOIT_WOLF
    assert choice.shrinkage <= 0.05
    model = meta_model.MetaModel(fit(choice, x, y), 8, [], [])
    assert model.classifier.startswith(f"lda (shrinkage {choice.shrinkage:g}")
    ledoit_wolf = fit(ClassifierChoice(1.0, LEDOIT_WOLF, choice.class_share), x, y)
    chosen_accuracy = (model.pipeline.predict(fresh_x) == fresh_y).mean()
    assert chosen_accuracy > (ledoit_wolf.predict(fresh_x) == fresh_y).mean() + 0.2


def test_classes_that_vary_in_their_own_way_take_a_share_of_their_own_covariance():
    # 6 classes x 20 rows, each spread along its own few directions: one shared covariance
    # cannot say which direction a class varies in; a share of the class's own can
    rng = np.random.default_rng(0)
    means = rng.normal(size=(6, 30)) * 0.5
    spreads = rng.normal(size=(6, 30, 3)) * 2.0

    def draw(rows_a_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(6), rows_a_class)
        own = np.einsum("rdk,rk->rd", spreads[y], rng.normal(size=(len(y), 3)))
        return means[y] + own + rng.normal(size=(len(y), 30)) * 0.3, y

    (x, y), (fresh_x, fresh_y) = draw(20), draw(200)
    choice = choose(x, y, "lda")
    assert choice.class_share > 0.0
    model = meta_model.MetaModel(fit(choice, x, y), 6, [], [])
    assert f"class covariance {choice.class_share:g})" in model.classifier
    shared_only = fit(ClassifierChoice(1.0, choice.shrinkage, class_share=0.0), x, y)
    chosen_accuracy = (model.pipeline.predict(fresh_x) == fresh_y).mean()
    assert chosen_accuracy > (shared_only.predict(fresh_x) == fresh_y).mean() + 0.1


def test_a_mixed_fold_averages_the_probabilities_of_lda_and_logistic():
    x, y = shared_noise_classes(np.random.default_rng(0))
    mixed = fit(ClassifierChoice(0.25), x, y)
    lda, logistic = (fit(ClassifierChoice(weight), x, y) for weight in (1.0, 0.0))
    expected = 0.25 * lda.predict_proba(x) + 0.75 * logistic.predict_proba(x)
    np.testing.assert_allclose(mixed.predict_proba(x), expected, rtol=1e-6)
    model = meta_model.MetaModel(mixed, 8, ["size"], [f"f{i}" for i in range(x.shape[1])])
    assert model.classifier == "lda 0.25 + logistic 0.75"
    log_probs = model.log_probs(pd.DataFrame(x, columns=model.columns))
    floored = np.maximum(expected, meta_model.ABSENT_CLASS_PROB)
    np.testing.assert_allclose(log_probs, np.log(floored), rtol=1e-5)


@pytest.mark.parametrize("lda_weight", [1.0, 0.0, 0.5])
def test_a_new_value_far_outside_the_training_range_counts_as_its_edge(lda_weight):
    # One more column, nearly constant in training (an image statistic that barely varies): a
    # new row with an artefact there (50) is classified as if its value were the largest seen.
    rng = np.random.default_rng(0)
    x, y = shared_noise_classes(rng)
    x = np.column_stack([x, rng.normal(size=len(y)) * 0.01])
    new = x[::6].copy()  # one row of each class
    at_edge, artefact = new.copy(), new.copy()
    at_edge[:, -1], artefact[:, -1] = x[:, -1].max(), 50.0
    model = fit(ClassifierChoice(lda_weight), x, y)
    np.testing.assert_allclose(model.predict_proba(artefact), model.predict_proba(at_edge))
    assert (model.predict(artefact) == model.predict(new)).mean() >= 0.75
    # standardised alone, the artefact outweighs every other feature: one class for all
    unclipped = make_pipeline(StandardScaler(), clone(model.steps[-1][1])).fit(x, y)
    assert len(set(unclipped.predict(artefact))) == 1


def test_auto_chooses_on_a_stratified_sample_of_a_large_fold(monkeypatch):
    x, y = shared_noise_classes(np.random.default_rng(0))  # 48 rows, 8 classes x 6
    monkeypatch.setattr(meta_model, "INNER_MAX_ROWS", 24)
    seen = []
    fit, statistics = meta_model.fitted, meta_model.ClassStatistics

    def recording_fit(pipeline, rows_x, rows_y):
        seen.append(np.bincount(rows_y, minlength=8))
        return fit(pipeline, rows_x, rows_y)

    def recording_statistics(rows_x, rows_y):
        seen.append(np.bincount(rows_y, minlength=8))
        return statistics(rows_x, rows_y)

    monkeypatch.setattr(meta_model, "fitted", recording_fit)
    monkeypatch.setattr(meta_model, "ClassStatistics", recording_statistics)
    choice = choose(x, y)
    assert choice.lda_weight in meta_model.CLASSIFIER_LDA_WEIGHTS["auto"]
    assert choice.shrinkage in meta_model.LDA_SHRINKAGES
    assert choice.class_share in meta_model.CLASS_SHARES
    # 3 inner splits (3 rows a class) x (one set of LDA's class statistics, which serves every
    # shrinkage and class share, and logistic), each on 2/3 of the 24 sampled rows: 2 a class
    assert len(seen) == 3 * 2 and all((counts == 2).all() for counts in seen)


@pytest.mark.parametrize("classifier", ["logistic", "lda"])
def test_a_fixed_classifier_is_fitted_on_every_fold(classifier):
    x, y = shared_noise_classes(np.random.default_rng(1))
    features = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    folds = folds_table(list(y), [row % 2 for row in range(len(y))])
    settings = MetaParams(features=["size"], classifier=classifier)
    models = meta_model.fit_models(features, folds, [0, 1], settings, num_classes=8)
    for model in models.values():  # LDA's shrinkage is still chosen per fold
        assert re.fullmatch(rf"{classifier}{REGULARISATION}", model.classifier)
    log_probs = models[0].log_probs(features)
    assert log_probs.shape == (len(y), 8) and np.isfinite(log_probs).all()


def test_the_summary_line_names_each_folds_classifier():
    assert meta.classifier_summary({"0": "lda", "1": "lda"}) == "lda"
    mixed = {"0": "logistic", "1": "lda", "2": "lda", "3": "logistic"}
    assert meta.classifier_summary(mixed) == "lda (folds 1, 2), logistic (folds 0, 3)"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"features": ["size", "texture"]}, "meta.features.1 = 'texture'"),
        ({"features": []}, "meta.features = []: must be a non-empty list"),
        (
            {"features": ["size", "size"]},
            "distinct groups: size, shape, outline, turn_pairs, disc, widths, rings, blade, colour",
        ),
        ({"C": 0}, "meta.C = 0: Input should be greater than 0"),
        ({"classifier": "svm"}, "meta.classifier = 'svm'"),
        ({"enable": True}, "meta.enable: unknown key"),
    ],
)
def test_schema_errors_name_the_key(settings, expected):
    with pytest.raises(ParamsError) as info:
        parse_params({"train": {"models": {"d2l_resnet11": {}}}, "meta": settings})
    assert expected in str(info.value)


def test_a_network_cannot_be_named_meta():
    with pytest.raises(ParamsError, match="train.models.meta: the name is taken by stage meta"):
        parse_params({"train": {"models": {"meta": {"backbone": "resnet18"}}}})


def test_shipped_stage_is_on_with_the_outline_features():
    shipped = yaml.safe_load(Path("params.yaml").read_text())["meta"]
    assert shipped["enabled"] is True and "outline" in shipped["features"]


# ----------------------------------------------------------------------------------------------
# The stage, on a copy of the finished tiny run (3 classes, 2 folds, 1 network)


def set_params(workdir: Path, group: str, **settings) -> None:
    path = workdir / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[group].update(settings)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_off_stage_writes_an_empty_model_and_the_ensemble_leaves_it_out(run_copy, capsys):
    set_params(run_copy, "meta", enabled=False)
    assert meta.main([]) == {"enabled": False}
    assert list(paths.META_DIR.iterdir()) == []
    assert read_json(META_METRICS) == {"enabled": False}
    assert "meta: off" in capsys.readouterr().out
    assert set(ensemble.main([])["models"]) == {"d2l_resnet11"}


def test_on_stage_writes_cells_like_train_and_joins_the_ensemble(run_copy, capsys):
    set_params(run_copy, "meta", enabled=True)
    metrics = meta.main([])
    folds = pd.read_csv("data/folds.csv")
    test = pd.read_csv("data/prepared/test.csv")
    num_classes = len(read_json("data/prepared/classes.json"))
    for fold in (0, 1):
        cell = paths.META_DIR / f"fold{fold}"
        with np.load(cell / OOF_NAME) as saved:
            assert (saved["row"] == np.flatnonzero(folds["fold"] == fold)).all()
            assert saved["logits"].shape == (len(saved["row"]), num_classes)
        assert np.load(cell / TEST_LOGITS_NAME).shape == (len(test), num_classes)
    table = pd.read_csv(paths.META_DIR / paths.FEATURES_NAME)
    assert (table["split"] == "train").sum() == len(folds) and len(table) == len(folds) + len(test)
    assert read_json(META_METRICS) == metrics and set(metrics["folds"]) == {"0", "1"}
    columns = len(metrics["features"])  # the shipped groups: size 3, shape 9, outline 84, ...
    assert columns == 3 + 9 + sum(
        map(
            len,
            (
                OUTLINE_FEATURES,
                TURN_PAIR_FEATURES,
                DISC_FEATURES,
                WIDTHS_FEATURES,
                RINGS_FEATURES,
                BLADE_FEATURES,
            ),
        )
    )
    assert set(metrics["classifiers"]) == {"0", "1"}
    mix = rf"lda( 0\.25| 0\.5| 0\.75)?{REGULARISATION}( \+ logistic 0\.[0-9]+)?|logistic"
    assert all(re.fullmatch(mix, chosen) for chosen in metrics["classifiers"].values())
    assert f" on {columns} features, OOF accuracy" in capsys.readouterr().out

    set_params(run_copy, "ensemble", weights="fit")
    scores = ensemble.main([])
    assert set(scores["models"]) == {"d2l_resnet11", "meta"}
    assert scores["models"]["meta"]["oof_accuracy"] == pytest.approx(metrics["oof_accuracy"])
    assert sum(scores["weights"].values()) == pytest.approx(1.0)
    assert read_json(ENSEMBLE_METRICS) == scores

    # A pseudo-label round fine-tunes the network and keeps stage meta's cells as they are.
    set_params(run_copy, "pseudo", enabled=True, threshold=0.3, epochs=1)
    pseudo.main([])
    out = capsys.readouterr().out
    assert "pseudo d2l_resnet11 fold 0: fine-tuning" in out and "pseudo meta" not in out
    assert (PSEUDO_DIR / TEST_LOGITS_NAME).is_file()
