import numpy as np
import pandas as pd
import pytest

from pipeline import ensemble as ens
from pipeline.cli import PipelineError
from pipeline.files import OOF_NAME, TEST_LOGITS_NAME


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
