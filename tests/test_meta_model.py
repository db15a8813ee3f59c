"""Stage meta's classifier (pipeline.ensemble.meta_model, meta_choice, meta_classifier): the
per-fold fit, and how `auto` weighs LDA and logistic regression, shrinks and mixes the
covariances."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pandas as pd
import pytest
from helpers.meta import REGULARISATION
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.config.schema import MetaParams
from pipeline.ensemble import meta_choice, meta_classifier, meta_model
from pipeline.ensemble.discriminant import LEDOIT_WOLF
from pipeline.ensemble.features import OUTLINE_FEATURES, SIZE_FEATURES
from pipeline.ensemble.meta_classifier import ClassifierChoice


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
    weights = meta_choice.CLASSIFIER_LDA_WEIGHTS[classifier]
    return meta_choice.choose_classifier(x, y, weights, C=10.0)


def fit(choice: ClassifierChoice, x: np.ndarray, y: np.ndarray):
    return meta_classifier.fitted(meta_classifier.make_classifier(choice, C=10.0), x, y)


def test_auto_leans_to_the_classifier_that_cross_validates_better_inside_the_training_rows():
    rng = np.random.default_rng(0)
    shared_noise = choose(*shared_noise_classes(rng)).lda_weight
    heavy_tails = choose(*heavy_tailed_classes(rng)).lda_weight
    # LDA takes a share where its shared covariance fits; none where far-out rows distort it
    assert heavy_tails == 0.0 < shared_noise
    # a median class of a single row cannot be cross-validated: logistic, or LDA with Ledoit-Wolf
    x, y = np.array([[0.0], [0.1], [5.0], [9.0]]), np.array([0, 0, 1, 2])
    assert choose(x, y) == ClassifierChoice(0.0, LEDOIT_WOLF, class_share=0.0)
    assert choose(x, y, "lda") == ClassifierChoice(1.0, LEDOIT_WOLF, class_share=0.0)


def test_a_rare_class_is_left_out_of_the_choice_not_the_fit(recwarn):
    x, y = shared_noise_classes(np.random.default_rng(0))  # 8 classes x 6 rows
    rare_x, rare_y = np.vstack([x, x[:1] + 5.0]), np.append(y, 8)  # a ninth class of one row
    assert meta_choice.inner_choice_rows(rare_y)[1] == meta_choice.INNER_SPLITS
    choice = choose(x, y)
    assert choose(rare_x, rare_y) == choice
    model = fit(choice, rare_x, rare_y)
    assert model.predict(rare_x[-1:]) == [8]
    assert not [w for w in recwarn if "sample" in str(w.message)]  # sklearn's one-row warnings


def test_two_classes_of_unequal_size_are_both_kept_for_the_choice():
    # Their median (5.5 rows) would leave the class of 3 out, and the choice with one class.
    rng = np.random.default_rng(0)
    y = np.array([0] * 8 + [1] * 3)
    x = rng.normal(size=(11, 4)) + y[:, None]
    rows, splits = meta_choice.inner_choice_rows(y)
    assert (len(rows), splits) == (11, 3)
    assert choose(x, y).lda_weight in meta_choice.CLASSIFIER_LDA_WEIGHTS["auto"]
    assert meta_choice.inner_choice_rows(np.array([0] * 8 + [1]))[1] == 1  # no choice: logistic


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
    floored = np.maximum(expected, meta_classifier.ABSENT_CLASS_PROB)
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
    monkeypatch.setattr(meta_choice, "INNER_MAX_ROWS", 24)
    seen = []
    fit, statistics = meta_choice.fitted, meta_choice.ClassStatistics

    def recording_fit(pipeline, rows_x, rows_y):
        seen.append(np.bincount(rows_y, minlength=8))
        return fit(pipeline, rows_x, rows_y)

    def recording_statistics(rows_x, rows_y):
        seen.append(np.bincount(rows_y, minlength=8))
        return statistics(rows_x, rows_y)

    monkeypatch.setattr(meta_choice, "fitted", recording_fit)
    monkeypatch.setattr(meta_choice, "ClassStatistics", recording_statistics)
    choice = choose(x, y)
    assert choice.lda_weight in meta_choice.CLASSIFIER_LDA_WEIGHTS["auto"]
    assert choice.shrinkage in meta_choice.LDA_SHRINKAGES
    assert choice.class_share in meta_choice.CLASS_SHARES
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


def test_weighed_alike_each_feature_group_adds_the_same_to_a_rows_length():
    columns = [*SIZE_FEATURES, *OUTLINE_FEATURES, "a column of no group"]
    weights = np.array(meta_classifier.groups_alike_weights(columns))
    size, outline, alone = (weights[:3] ** 2).sum(), (weights[3:-1] ** 2).sum(), weights[-1] ** 2
    assert size == pytest.approx(outline) and size == pytest.approx(alone)
    assert (weights**2).mean() == pytest.approx(1.0)  # `meta.C` keeps its strength
    # groups all of one size: weighing them alike changes nothing, so it is not offered
    assert meta_classifier.groups_alike_weights([*SIZE_FEATURES, *OUTLINE_FEATURES[:3]]) is None


def test_auto_weighs_the_groups_alike_where_that_cross_validates_better():
    # 8 classes x 6 rows told apart by the size group's 3 columns alone, beside the outline
    # group's 84 columns of noise: standardised alike, the noise drowns them
    rng = np.random.default_rng(0)
    means = rng.normal(size=(8, 3))
    columns = [*SIZE_FEATURES, *OUTLINE_FEATURES]

    def draw(rows_a_class: int) -> tuple[pd.DataFrame, np.ndarray]:
        y = np.repeat(np.arange(8), rows_a_class)
        signal = means[y] + rng.normal(size=(len(y), 3)) * 0.5
        noise = rng.normal(size=(len(y), len(OUTLINE_FEATURES)))
        return pd.DataFrame(np.column_stack([signal, noise]), columns=columns), y

    (x, y), (fresh_x, fresh_y) = draw(6), draw(100)
    model = meta_model.fit_fold(x, y, MetaParams(classifier="auto"), num_classes=8)
    assert model.classifier.endswith(", groups weighed alike")
    unweighed = choose(x.to_numpy(np.float32), y)
    assert unweighed.column_weights is None
    fresh_accuracy = (model.log_probs(fresh_x).argmax(axis=1) == fresh_y).mean()
    unweighed_accuracy = (
        fit(unweighed, x.to_numpy(), y).predict(fresh_x.to_numpy()) == fresh_y
    ).mean()
    assert fresh_accuracy > unweighed_accuracy + 0.05
    # the weights travel with the saved model (`leaf predict` applies it to new images)
    saved = pickle.loads(pickle.dumps(model.pipeline))
    np.testing.assert_array_equal(
        saved.predict_proba(fresh_x.to_numpy(np.float32)),
        model.pipeline.predict_proba(fresh_x.to_numpy(np.float32)),
    )
