import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT

from pipeline import ensemble as ens
from pipeline.cli import PipelineError
from pipeline.files import (
    CLASSES_FILE,
    FOLDS_FILE,
    OOF_NAME,
    TEST_LOGITS_NAME,
    write_csv,
    write_json,
)


def test_average_in_logit_and_probability_space():
    a = np.array([[2.0, 0.0], [0.0, 1.0]])
    b = np.array([[0.0, 2.0], [0.0, 3.0]])
    assert np.allclose(ens.average([a, b], "logits"), [[1.0, 1.0], [0.0, 2.0]])
    probs = np.exp(ens.average([a, b], "probs"))
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
    with pytest.raises(PipelineError, match="models/absent/fold0: missing"):
        ens.ensemble(two_model_run, ["absent"], [0], "logits")


def test_confusion_rows_name_classes_and_skip_untrained_rows():
    oof = np.array([[3.0, 0.0], [np.nan, np.nan], [0.0, 1.0], [2.0, 0.0]])
    targets = np.array([0, 1, 1, 1])
    confusion = ens.confusion_rows(oof, targets, ["acer", "betula"])
    assert confusion.to_dict("list") == {
        "actual": ["acer", "betula", "betula"],
        "predicted": ["acer", "betula", "acer"],
    }
    per_class = ens.per_class_accuracy(confusion, ["acer", "betula", "carya"])
    assert per_class.to_dict("list") == {
        "class": ["acer", "betula"],  # carya has no scored image
        "accuracy": [1.0, 0.5],
        "count": [1, 2],
    }


def test_logits_and_classes_of_different_runs_are_refused():
    with pytest.raises(PipelineError, match="3 classes but .* lists 2"):
        ens.confusion_rows(np.zeros((2, 3)), np.array([0, 1]), ["acer", "betula"])


def test_main_writes_the_plot_tables(two_model_run, tiny_params, tmp_path):
    tiny_params["train"]["models"] = {
        "good": {"backbone": "d2l_resnet11"},
        "bad": {"backbone": "d2l_resnet11"},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    write_csv(FOLDS_FILE, two_model_run)
    write_json(CLASSES_FILE, ["acer", "betula", "carya"])

    metrics = ens.main([])
    confusion = pd.read_csv(ens.CONFUSION_FILE)
    assert list(confusion.columns) == ["actual", "predicted"]
    assert list(confusion["actual"]) == ["acer", "betula", "carya"] * 2 + ["acer", "betula"]
    assert (confusion["actual"] == confusion["predicted"]).mean() == metrics["oof_accuracy"]
    per_class = pd.read_csv(ens.PER_CLASS_FILE)
    assert per_class.to_dict("list") == {
        "class": ["acer", "betula", "carya"],
        "accuracy": [1.0, 1.0, 1.0],
        "count": [3, 3, 2],
    }
    assert sorted(p.name for p in ens.CONFUSION_FILE.parent.iterdir()) == [
        "confusion.csv",
        "metrics.json",
        "per_class.csv",
    ]  # written atomically: no temporary files left


def test_dvc_yaml_declares_the_plots():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["ensemble"]
    plots = {path: spec for entry in stage["plots"] for path, spec in entry.items()}
    confusion, per_class = plots[str(ens.CONFUSION_FILE)], plots[str(ens.PER_CLASS_FILE)]
    # DVC's documented orientation for the confusion template: x is actual, y is predicted.
    expected = {"template": "confusion", "x": "actual", "y": "predicted", "cache": False}
    assert expected.items() <= confusion.items()
    assert {"x": "accuracy", "y": "class", "cache": False}.items() <= per_class.items()
    assert per_class["template"].startswith("bar_horizontal")
    assert str(CLASSES_FILE) in stage["deps"]


def test_the_tiny_run_scores_every_image(finished_run):
    folds = pd.read_csv(finished_run / FOLDS_FILE)
    confusion = pd.read_csv(finished_run / ens.CONFUSION_FILE)
    per_class = pd.read_csv(finished_run / ens.PER_CLASS_FILE)
    assert list(confusion["actual"]) == list(folds["label"])  # both folds trained
    assert per_class["count"].sum() == len(folds)
    assert set(per_class["class"]) == set(folds["label"])


def test_probability_average_stays_finite_when_probabilities_underflow():
    logits = [np.array([[0.0, -200.0, 5.0]], dtype=np.float32)] * 2
    averaged = ens.average(logits, "probs")
    assert np.isfinite(averaged).all()
    assert np.allclose(np.exp(averaged).sum(), 1.0)
    assert averaged.argmax() == 2
