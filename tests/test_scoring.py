"""Scoring (pipeline.ensemble.scoring): the average of logits in either space, with weights;
fitted and cross-fitted weights; the confusion and per-class tables."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.ensemble import scoring
from pipeline.io.console import PipelineError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_average_in_logit_and_probability_space():
    a = np.array([[2.0, 0.0], [0.0, 1.0]])
    b = np.array([[0.0, 2.0], [0.0, 3.0]])
    assert np.allclose(scoring.average([a, b], "logits"), [[1.0, 1.0], [0.0, 2.0]])
    probs = np.exp(scoring.average([a, b], "probs"))
    assert np.allclose(probs.sum(axis=1), 1.0)
    softmax = np.exp(a) / np.exp(a).sum(1, keepdims=True)
    softmax_b = np.exp(b) / np.exp(b).sum(1, keepdims=True)
    assert np.allclose(probs, (softmax + softmax_b) / 2)


def test_confusion_rows_name_classes_and_skip_untrained_rows():
    oof = np.array([[3.0, 0.0], [np.nan, np.nan], [0.0, 1.0], [2.0, 0.0]])
    targets = np.array([0, 1, 1, 1])
    confusion = scoring.confusion_rows(oof, targets, ["acer", "betula"])
    assert confusion.to_dict("list") == {
        "actual": ["acer", "betula", "betula"],
        "predicted": ["acer", "betula", "acer"],
    }
    per_class = scoring.per_class_accuracy(confusion, ["acer", "betula", "carya"])
    assert per_class.to_dict("list") == {
        "class": ["acer", "betula"],  # carya has no scored image
        "accuracy": [1.0, 0.5],
        "count": [1, 2],
    }


def test_logits_and_classes_of_different_runs_are_refused():
    with pytest.raises(PipelineError, match="3 classes but .* lists 2"):
        scoring.confusion_rows(np.zeros((2, 3)), np.array([0, 1]), ["acer", "betula"])


def test_probability_average_stays_finite_when_probabilities_underflow():
    logits = [np.array([[0.0, -200.0, 5.0]], dtype=np.float32)] * 2
    averaged = scoring.average(logits, "probs")
    assert np.isfinite(averaged).all()
    assert np.allclose(np.exp(averaged).sum(), 1.0)
    assert averaged.argmax() == 2


# ----------------------------------------------------------------------------------------------
# Weighted average and fitted weights


@pytest.mark.parametrize("space", ["logits", "probs"])
def test_a_zero_weight_drops_a_model(space):
    a = np.array([[2.0, 0.0, -1.0]])
    b = np.array([[-50.0, 9.0, 0.0]])
    alone = scoring.average([a], space)
    np.testing.assert_allclose(scoring.average([a, b], space, [1.0, 0.0]), alone, atol=1e-12)
    halves = scoring.average([a, b], space, [0.5, 0.5])
    np.testing.assert_allclose(halves, scoring.average([a, b], space), atol=1e-12)


def test_probability_weights_weigh_the_softmax():
    a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 3.0]])
    expected = 0.25 * softmax(a) + 0.75 * softmax(b)
    np.testing.assert_allclose(np.exp(scoring.average([a, b], "probs", [0.25, 0.75])), expected)


def noisy_models(seed: int, rows: int = 200, classes: int = 5) -> tuple[list, np.ndarray]:
    """(logits of a weak, a strong and another weak model, targets)."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, rows)
    strong = rng.normal(0, 1, (rows, classes))
    strong[np.arange(rows), targets] += 2.5
    weak = [rng.normal(0, 3, (rows, classes)) for _ in range(2)]
    return [weak[0], strong, weak[1]], targets


@pytest.mark.parametrize("space", ["logits", "probs"])
def test_a_clearly_better_model_gets_most_weight(space):
    logits, targets = noisy_models(seed=0)
    weights = scoring.fit_weights(logits, targets, space, rounds=100)
    assert weights.argmax() == 1 and weights[1] > 0.8
    assert (weights >= 0).all() and weights.sum() == pytest.approx(1.0)
    equal = scoring.accuracy(scoring.average(logits, space), targets)
    fitted = scoring.accuracy(scoring.average(logits, space, weights), targets)
    assert fitted > equal + 0.3  # the weak models drown the strong one when weighed alike


def test_rounds_bound_the_copies_added():
    logits, targets = noisy_models(seed=1)
    weights = scoring.fit_weights(logits, targets, "logits", rounds=2)
    # One copy each to start, then at most two more: weights are counts out of 3 to 5.
    assert any(np.allclose(weights * total, np.round(weights * total)) for total in (3, 4, 5))
    assert weights[1] <= 3 / 5


def test_one_model_or_identical_models_keep_equal_weights():
    logits, targets = noisy_models(seed=2)
    assert scoring.fit_weights(logits[:1], targets, "probs", 50).tolist() == [1.0]
    twins = scoring.fit_weights([logits[1], logits[1]], targets, "logits", 50)
    assert twins.tolist() == [0.5, 0.5]


@st.composite
def oof_cases(draw) -> tuple[list[np.ndarray], np.ndarray, str]:
    """(1-4 models' logits of one shape, with ties and saturation in reach, targets, space)."""
    rows, classes = draw(st.integers(1, 12)), draw(st.integers(2, 5))
    elements = st.one_of(st.sampled_from([0.0, 1.0, -30.0, 30.0]), st.floats(-30, 30))
    logits = draw(
        st.lists(hnp.arrays(np.float64, (rows, classes), elements=elements), min_size=1, max_size=4)
    )
    targets = draw(hnp.arrays(np.int64, rows, elements=st.integers(0, classes - 1)))
    return logits, targets, draw(st.sampled_from(["logits", "probs"]))


@settings(max_examples=80, deadline=None)
@given(oof_cases())
def test_fitted_weights_never_lose_to_equal_weights(case):
    logits, targets, space = case
    weights = scoring.fit_weights(logits, targets, space, rounds=20)
    assert weights.shape == (len(logits),)
    assert (weights >= 0).all() and weights.sum() == pytest.approx(1.0)
    equal = scoring.accuracy(scoring.average(logits, space), targets)
    assert scoring.accuracy(scoring.average(logits, space, weights), targets) >= equal


def test_a_members_contribution_is_the_honest_accuracy_lost_without_it():
    oofs, targets = noisy_models(seed=3, rows=120)
    fold_of_row = np.arange(len(targets)) % 3
    for weighting in ("fit", "equal"):

        def honest(members, weighting=weighting):
            return scoring.honest_accuracy(members, targets, fold_of_row, "logits", weighting, 20)

        whole = honest(oofs)
        added = scoring.member_contributions(oofs, honest, whole)
        assert len(added) == 3
        for i, value in enumerate(added):
            assert value == pytest.approx(whole - honest(oofs[:i] + oofs[i + 1 :]))
    equal = scoring.honest_accuracy(oofs, targets, fold_of_row, "logits", "equal", 20)
    assert equal == scoring.accuracy(scoring.average(oofs, "logits"), targets)
    cross = scoring.honest_accuracy(oofs, targets, fold_of_row, "logits", "fit", 20)
    assert cross == scoring.cross_fitted_accuracy(oofs, targets, fold_of_row, "logits", 20)
    one_fold = np.zeros(len(targets), dtype=int)  # nothing to cross-fit on: equal weights
    assert scoring.honest_accuracy(oofs, targets, one_fold, "logits", "fit", 20) == equal


def test_right_alone_counts_the_images_no_other_member_gets_right():
    targets = np.array([0, 1, 2, 0, 1])
    predicted = ([0, 1, 2, 1, 0], [0, 2, 2, 0, 0], [1, 1, 0, 0, 0])  # members' argmax per image
    oofs = [np.eye(3)[p] for p in predicted]
    # Every image that one member gets right, another does too (image 4: nobody).
    assert scoring.right_alone(oofs, targets) == [0, 0, 0]
    assert scoring.right_alone(oofs[:2], targets) == [1, 1]  # images 1 and 3
    assert scoring.right_alone([oofs[0], oofs[2]], targets) == [2, 1]  # images 0, 2 and 3


def test_cross_fitted_weights_are_fitted_without_the_fold_they_score():
    # Model 0 is right on fold 0 only, model 1 on fold 1 only. Fitted on all rows, the weights
    # can serve both folds at once; fitted on the other fold, each fold's weights favour the
    # model that fails it, so the honest estimate is 0.
    targets = np.array([0, 0, 1, 1])
    fold_of_row = np.array([0, 0, 1, 1])
    right, wrong = np.eye(2)[targets], np.eye(2)[1 - targets]
    model0 = np.where(fold_of_row[:, None] == 0, 2 * right, wrong)
    model1 = np.where(fold_of_row[:, None] == 1, 2 * right, wrong)
    cross = scoring.cross_fitted_accuracy([model0, model1], targets, fold_of_row, "logits", 10)
    assert scoring.accuracy(scoring.average([model0, model1], "logits"), targets) == 1.0
    assert cross == 0.0


# ----------------------------------------------------------------------------------------------
# The average: properties that hold for any input (hypothesis)


@st.composite
def model_logits(draw) -> list[np.ndarray]:
    """1-5 models' float32 logits of one (rows, classes) shape, in a realistic range."""
    shape = (draw(st.integers(1, 8)), draw(st.integers(2, 6)))
    # ±30 keeps every softmax probability above float32's smallest normal number.
    elements = st.floats(-30, 30, width=32)
    arrays = st.lists(hnp.arrays(np.float32, shape, elements=elements), min_size=1, max_size=5)
    return draw(arrays)


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(scoring.log_softmax(logits.astype(np.float64)))


@SETTINGS
@given(model_logits(), st.randoms(use_true_random=False), st.sampled_from(["logits", "probs"]))
def test_average_does_not_depend_on_model_order(logits, random, space):
    shuffled = random.sample(logits, len(logits))
    np.testing.assert_allclose(
        scoring.average(shuffled, space), scoring.average(logits, space), rtol=1e-5, atol=1e-5
    )


@SETTINGS
@given(model_logits())
def test_average_of_one_model_is_that_model(logits):
    one = logits[0]
    np.testing.assert_array_equal(scoring.average([one], "logits"), one)
    # In probability space it comes back normalised: the model's log-probabilities.
    np.testing.assert_allclose(
        scoring.average([one], "probs"), scoring.log_softmax(one), rtol=1e-5, atol=1e-5
    )


@SETTINGS
@given(model_logits())
def test_probability_average_is_a_distribution_per_row(logits):
    probs = np.exp(scoring.average(logits, "probs").astype(np.float64))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs >= 0).all()


@SETTINGS
@given(model_logits())
def test_average_is_the_equal_weight_mean(logits):
    # Without weights every model counts 1/n, in either space.
    weight = 1.0 / len(logits)
    by_hand = sum(weight * a.astype(np.float64) for a in logits)
    np.testing.assert_allclose(scoring.average(logits, "logits"), by_hand, rtol=1e-5, atol=1e-5)
    by_hand_probs = sum(weight * softmax(a) for a in logits)
    np.testing.assert_allclose(
        np.exp(scoring.average(logits, "probs")), by_hand_probs, rtol=1e-5, atol=1e-6
    )
