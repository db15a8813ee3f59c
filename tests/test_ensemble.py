import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.config import paths
from pipeline.config.params import parse_params
from pipeline.config.paths import CLASSES_FILE, FOLDS_FILE, OOF_NAME, TEST_LOGITS_NAME
from pipeline.ensemble import members, scoring
from pipeline.io.console import PipelineError
from pipeline.io.files import read_json, write_csv, write_json
from pipeline.stages import ensemble as ens


def test_average_in_logit_and_probability_space():
    a = np.array([[2.0, 0.0], [0.0, 1.0]])
    b = np.array([[0.0, 2.0], [0.0, 3.0]])
    assert np.allclose(scoring.average([a, b], "logits"), [[1.0, 1.0], [0.0, 2.0]])
    probs = np.exp(scoring.average([a, b], "probs"))
    assert np.allclose(probs.sum(axis=1), 1.0)
    softmax = np.exp(a) / np.exp(a).sum(1, keepdims=True)
    softmax_b = np.exp(b) / np.exp(b).sum(1, keepdims=True)
    assert np.allclose(probs, (softmax + softmax_b) / 2)


@pytest.fixture
def two_model_run(tmp_path, monkeypatch):
    """Two models x two folds of fake logits; model `good` is always right, `bad` half the time."""
    monkeypatch.chdir(tmp_path)
    targets = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    folds = pd.DataFrame(
        {"image": [f"{i}.jpg" for i in range(8)], "target": targets, "fold": [0, 1] * 4}
    )
    num_test = 3
    for model, correct in (("good", 1.0), ("bad", 0.5)):
        for fold in (0, 1):
            rows = np.flatnonzero(folds.fold.to_numpy() == fold)
            logits = np.zeros((len(rows), 3), dtype=np.float32)
            right = np.arange(len(rows)) < round(correct * len(rows))
            logits[right, targets[rows][right]] = 4.0
            logits[~right, (targets[rows][~right] + 1) % 3] = 1.0
            cell = tmp_path / "models" / model / f"fold{fold}"
            cell.mkdir(parents=True)
            np.savez(cell / OOF_NAME, row=rows, logits=logits)
            np.save(cell / TEST_LOGITS_NAME, np.full((num_test, 3), fold, dtype=np.float32))
    return folds


def test_ensemble_scores_each_fold_model_and_the_average(two_model_run):
    oof, test, metrics = ens.ensemble(two_model_run, ["good", "bad"], [0, 1], "logits")
    assert metrics["models"]["good"]["oof_accuracy"] == 1.0
    assert metrics["models"]["bad"]["oof_accuracy"] == 0.5
    assert set(metrics["models"]["bad"]["folds"]) == {"0", "1"}
    # `good` is confident (4.0) and `bad` wrong only weakly (1.0): the average stays right.
    assert metrics["oof_accuracy"] == 1.0
    assert oof.shape == (8, 3) and not np.isnan(oof).any()
    assert np.allclose(test, 0.5)  # mean of fold 0 (zeros) and fold 1 (ones)


def test_a_subset_of_folds_scores_only_its_rows(two_model_run):
    oof, _, metrics = ens.ensemble(two_model_run, ["good"], [1], "logits")
    assert metrics["oof_images"] == 4
    assert np.isnan(oof[two_model_run.fold.to_numpy() == 0]).all()


def test_missing_cell_is_named(two_model_run):
    with pytest.raises(
        PipelineError, match=r"models/absent/fold0/oof.npz: not found; run `dvc repro train`"
    ):
        ens.ensemble(two_model_run, ["absent"], [0], "logits")


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


def test_main_writes_the_plot_tables(two_model_run, tiny_params, tmp_path):
    tiny_params["train"]["models"] = {
        "good": {"backbone": "d2l_resnet11"},
        "bad": {"backbone": "d2l_resnet11"},
    }
    tiny_params["meta"]["enabled"] = False  # two fake networks, no stage meta outputs
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    write_csv(FOLDS_FILE, two_model_run)
    write_json(CLASSES_FILE, ["acer", "betula", "carya"])

    metrics = ens.main([])
    confusion = pd.read_csv(paths.CONFUSION_FILE)
    assert list(confusion.columns) == ["actual", "predicted"]
    assert list(confusion["actual"]) == ["acer", "betula", "carya"] * 2 + ["acer", "betula"]
    assert (confusion["actual"] == confusion["predicted"]).mean() == metrics["oof_accuracy"]
    per_class = pd.read_csv(paths.PER_CLASS_FILE)
    assert per_class.to_dict("list") == {
        "class": ["acer", "betula", "carya"],
        "accuracy": [1.0, 1.0, 1.0],
        "count": [3, 3, 2],
    }
    assert sorted(p.name for p in paths.CONFUSION_FILE.parent.iterdir()) == [
        "confusion.csv",
        "metrics.json",
        "per_class.csv",
    ]  # written atomically: no temporary files left
    # The weights leaf predict averages with sit beside the logits; the metrics report them too.
    assert sorted(p.name for p in paths.ENSEMBLE_DIR.iterdir()) == [
        "oof_logits.npy",
        "test_logits.npy",
        "weights.json",
    ]
    assert read_json(paths.ENSEMBLE_WEIGHTS) == metrics["weights"]
    assert read_json(paths.ENSEMBLE_METRICS)["weights"] == metrics["weights"]


def test_dvc_yaml_declares_the_plots():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["ensemble"]
    plots = {path: spec for entry in stage["plots"] for path, spec in entry.items()}
    confusion, per_class = plots[str(paths.CONFUSION_FILE)], plots[str(paths.PER_CLASS_FILE)]
    # DVC's documented orientation for the confusion template: x is actual, y is predicted.
    expected = {"template": "confusion", "x": "actual", "y": "predicted", "cache": False}
    assert expected.items() <= confusion.items()
    assert {"x": "accuracy", "y": "class", "cache": False}.items() <= per_class.items()
    assert per_class["template"].startswith("bar_horizontal")
    assert str(CLASSES_FILE) in stage["deps"]


def test_the_tiny_run_scores_every_image(finished_run):
    folds = pd.read_csv(finished_run / FOLDS_FILE)
    confusion = pd.read_csv(finished_run / paths.CONFUSION_FILE)
    per_class = pd.read_csv(finished_run / paths.PER_CLASS_FILE)
    assert list(confusion["actual"]) == list(folds["label"])  # both folds trained
    assert per_class["count"].sum() == len(folds)
    assert set(per_class["class"]) == set(folds["label"])


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


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(scoring.log_softmax(logits))


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


def test_fitting_weighs_test_logits_and_reports_both_accuracies(two_model_run):
    oof, test, metrics = ens.ensemble(two_model_run, ["good", "bad"], [0, 1], "logits", "fit")
    weights = metrics["weights"]
    assert list(weights) == ["good", "bad"] and weights["good"] > weights["bad"] >= 0
    assert sum(weights.values()) == pytest.approx(1.0)
    assert metrics["oof_accuracy"] == metrics["oof_accuracy_fitted"] == 1.0
    assert metrics["oof_accuracy_equal"] == metrics["oof_accuracy_fitted_cross"] == 1.0
    # Both models' test logits are the same per fold here; the weights still sum them.
    assert np.allclose(test, 0.5)
    cells = members.read_cells(["good", "bad"], [0, 1], len(two_model_run))
    by_model = members.model_logits(cells, len(two_model_run), "logits")
    (good, _), (bad, _) = by_model["good"], by_model["bad"]
    expected = weights["good"] * good + weights["bad"] * bad
    np.testing.assert_allclose(oof, expected, rtol=1e-6)


def test_equal_weighting_reports_no_fitted_accuracy(two_model_run):
    _, _, metrics = ens.ensemble(two_model_run, ["good", "bad"], [0, 1], "probs", "equal")
    assert metrics["weights"] == {"good": 0.5, "bad": 0.5}
    assert metrics["oof_accuracy"] == metrics["oof_accuracy_equal"]
    assert "oof_accuracy_fitted" not in metrics and "oof_accuracy_fitted_cross" not in metrics


def test_one_trained_fold_reports_no_cross_fitted_accuracy(two_model_run):
    _, _, metrics = ens.ensemble(two_model_run, ["good", "bad"], [0], "logits", "fit")
    assert metrics["oof_accuracy_fitted"] == 1.0 and "oof_accuracy_fitted_cross" not in metrics


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


def test_only_images_every_model_predicted_count(two_model_run, tmp_path):
    # `bad` lost its OOF logits for two images of fold 0: they leave the ensemble's score.
    cell = tmp_path / "models" / "bad" / "fold0" / OOF_NAME
    with np.load(cell) as saved:
        rows, logits = saved["row"], saved["logits"]
    np.savez(cell, row=rows[2:], logits=logits[2:])
    oof, _, metrics = ens.ensemble(two_model_run, ["good", "bad"], [0, 1], "logits", "fit")
    assert metrics["oof_images"] == 6
    assert np.isnan(oof[rows[:2]]).all() and not np.isnan(np.delete(oof, rows[:2], 0)).any()
    assert metrics["models"]["good"]["oof_accuracy"] == 1.0  # each model on its own rows


def test_setup_names_the_members_and_their_shared_or_per_model_settings():
    def setup(models: dict, meta: bool) -> dict:
        raw = {
            "train": {"models": models, "defaults": {"image_size": 96, "epochs": 40}},
            "meta": {"enabled": meta},
        }
        return members.members_setup(parse_params(raw))

    shared = setup({"d2l_resnet11": {}, "resnet18": {}}, meta=True)
    lr = parse_params({"train": {"models": {"x": {}}}}).train.defaults.optimizer.lr
    assert shared == {
        "models": "d2l_resnet11+resnet18+meta",
        "image_size": 96,
        "epochs": 40,
        "lr": lr,
    }
    differing = setup(
        {"d2l_resnet11": {}, "resnet18": {"image_size": 128, "optimizer": {"lr": 0.01}}}, meta=False
    )
    assert differing == {
        "models": "d2l_resnet11+resnet18",
        "image_size": "96/128",
        "epochs": 40,
        "lr": f"{lr:g}/0.01",
    }


def test_metrics_put_the_accuracies_then_the_setup_first(two_model_run):
    setup = {"models": "good+bad", "image_size": 96, "epochs": 1, "lr": 0.1}
    _, _, metrics = ens.ensemble(
        two_model_run, ["good", "bad"], [0, 1], "logits", "fit", 5, None, setup
    )
    assert list(metrics)[:4] == [
        "oof_accuracy",
        "oof_accuracy_fitted_cross",
        "oof_accuracy_fitted",
        "setup",
    ]
    assert metrics["setup"] == setup
