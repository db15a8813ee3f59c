"""Stage `pseudo`: threshold selection, the off switch, a real fine-tuning round, and submit."""

from __future__ import annotations

import shutil
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.config.model_settings import ModelParams
from pipeline.config.params import ParamsError, parse_params
from pipeline.config.paths import (
    ENSEMBLE_DIR,
    OOF_LOGITS_NAME,
    PSEUDO_DIR,
    PSEUDO_MANIFEST,
    PSEUDO_METRICS,
    SUBMISSION_FILE,
    TEST_LOGITS_NAME,
)
from pipeline.config.schema import PseudoParams
from pipeline.ensemble import pseudo_labels, pseudo_round, scoring
from pipeline.io.console import PipelineError
from pipeline.io.files import read_json
from pipeline.stages import pseudo, submit


def test_confident_labels_select_by_softmax_confidence():
    logits = np.log(
        np.array([[0.96, 0.03, 0.01], [0.5, 0.3, 0.2], [0.02, 0.06, 0.92], [0.05, 0.03, 0.92]])
    )
    rows, labels = pseudo_labels.confident_labels(
        logits + 3.0, threshold=0.9
    )  # a shift changes nothing
    assert rows.tolist() == [0, 2, 3] and labels.tolist() == [0, 2, 2]
    rows, labels = pseudo_labels.confident_labels(logits, threshold=0.95)
    assert rows.tolist() == [0] and labels.tolist() == [0]
    rows, _ = pseudo_labels.confident_labels(np.zeros((4, 3)), threshold=1.0)
    assert rows.size == 0


def test_pseudo_rows_join_every_fold_training_set_and_no_validation_set():
    folds = pd.DataFrame({"path": ["a", "b", "c"], "target": [0, 1, 0], "fold": [0, 1, 0]})
    test = pd.DataFrame({"image": ["t0", "t1", "t2"], "path": ["x", "y", "z"]})
    table = pseudo_labels.with_pseudo_rows(folds, test, np.array([0, 2]), np.array([1, 0]))
    assert table["path"].tolist() == ["a", "b", "c", "x", "z"]
    assert table["target"].tolist() == [0, 1, 0, 1, 0]
    assert table["fold"].tolist()[3:] == [pseudo_labels.PSEUDO_FOLD] * 2
    assert pseudo_labels.PSEUDO_FOLD < 0  # never a validation fold


def test_fine_tune_settings_scale_the_models_own_lr():
    hp = ModelParams.model_validate({"epochs": 40, "optimizer": {"lr": 0.01, "name": "sgd"}})
    tuned = pseudo_labels.fine_tune_settings(hp, PseudoParams(epochs=2, lr_scale=0.1))
    assert tuned.epochs == 2 and tuned.optimizer.lr == pytest.approx(0.001)
    assert tuned.optimizer.head_lr is None
    with_head = hp.model_copy(
        update={"optimizer": hp.optimizer.model_copy(update={"head_lr": 0.1})}
    )
    assert pseudo_labels.fine_tune_settings(
        with_head, PseudoParams()
    ).optimizer.head_lr == pytest.approx(0.01)
    assert tuned.optimizer.name == "sgd" and tuned.augment == hp.augment and hp.epochs == 40


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("threshold", 0, "pseudo.threshold = 0: Input should be greater than 0"),
        ("threshold", 1.5, "pseudo.threshold = 1.5: Input should be less than or equal to 1"),
        ("epochs", 0, "pseudo.epochs = 0: Input should be greater than 0"),
        ("lr_scale", -0.1, "pseudo.lr_scale = -0.1: Input should be greater than 0"),
        ("enabled", "maybe", "pseudo.enabled = 'maybe'"),
        ("epoch", 2, "pseudo.epoch: unknown key"),
    ],
)
def test_schema_errors_name_the_key(key, value, expected):
    raw = {"train": {"models": {"d2l_resnet11": {}}}, "pseudo": {key: value}}
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    assert expected in str(info.value)


def test_shipped_round_is_off():
    assert parse_params({"train": {"models": {"d2l_resnet11": {}}}}).pseudo.enabled is False
    shipped = yaml.safe_load(Path("params.yaml").read_text())["pseudo"]
    assert shipped == {"enabled": False, "threshold": 0.9, "epochs": 3, "lr_scale": 0.1}


# ----------------------------------------------------------------------------------------------
# The stage, on a copy of the finished tiny run (3 classes, 2 folds, 1 model)


def set_pseudo(workdir: Path, **settings) -> None:
    path = workdir / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["pseudo"].update(settings)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_off_round_writes_only_a_manifest_and_submit_uses_the_ensemble(run_copy, capsys):
    pseudo.main([])  # the finished run ran it already; again, from a clean folder
    assert sorted(p.name for p in PSEUDO_DIR.iterdir()) == [PSEUDO_MANIFEST.name]
    assert read_json(PSEUDO_MANIFEST) == {"enabled": False, "fine_tuned": False}
    assert read_json(PSEUDO_METRICS) == {"pseudo": {"enabled": False}}
    assert "round is off" in capsys.readouterr().out
    submit.main([])
    assert "from data/ensemble (the ensemble; pseudo-label round off)" in capsys.readouterr().out


def test_round_fine_tunes_every_cell_and_submit_uses_it(run_copy, capsys, monkeypatch):
    # 3 classes: every softmax maximum is >= 1/3, so every test image is labelled.
    set_pseudo(run_copy, enabled=True, threshold=0.3, epochs=1)
    built, fold_data = [], pseudo_round.fold_data

    def one_cell_at_a_time(*args):  # on a GPU, a cell's images are freed before the next's
        assert all(loader() is None for loader in built), "a cell's batches outlived it"
        loaders, path, why = fold_data(*args)
        built.append(weakref.ref(loaders["train"]))
        return loaders, path, why

    monkeypatch.setattr(pseudo_round, "fold_data", one_cell_at_a_time)
    metrics = pseudo.main([])
    assert len(built) == 2  # a cell a fold
    out = capsys.readouterr().out
    assert "pseudo d2l_resnet11 fold 0: fine-tuning" in out and "epoch   1/1" in out
    ensemble_oof = np.load(ENSEMBLE_DIR / OOF_LOGITS_NAME)
    ensemble_test = np.load(ENSEMBLE_DIR / TEST_LOGITS_NAME)
    oof, test = np.load(PSEUDO_DIR / OOF_LOGITS_NAME), np.load(PSEUDO_DIR / TEST_LOGITS_NAME)
    assert oof.shape == ensemble_oof.shape and test.shape == ensemble_test.shape
    assert np.isfinite(oof).all() and not np.allclose(test, ensemble_test)

    num_test = len(test)
    assert read_json(PSEUDO_METRICS) == {"pseudo": metrics}
    assert metrics["fine_tuned"] and metrics["test_images"] == num_test
    assert metrics["pseudo_labelled"] == num_test and metrics["pseudo_share"] == 1.0
    ensemble_accuracy = read_json("results/ensemble/metrics.json")["oof_accuracy"]
    assert metrics["oof_accuracy_before"] == pytest.approx(ensemble_accuracy)
    targets = pd.read_csv("data/folds.csv")["target"].to_numpy()
    assert metrics["oof_accuracy"] == pytest.approx(scoring.accuracy(oof, targets))
    assert set(metrics["folds"]) == {"0", "1"}
    assert read_json(PSEUDO_MANIFEST)["fine_tuned"] is True

    submit.main([])
    assert "from data/pseudo (the pseudo-label round)" in capsys.readouterr().out
    labels = pd.read_csv(SUBMISSION_FILE)["label"].to_numpy()
    classes = read_json("data/prepared/classes.json")
    assert (labels == np.asarray(classes)[test.argmax(axis=1)]).all()


def test_threshold_nobody_reaches_passes_the_ensemble_through(run_copy, capsys):
    set_pseudo(run_copy, enabled=True, threshold=1.0)
    metrics = pseudo.main([])
    assert "no test image reached pseudo.threshold = 1" in capsys.readouterr().out
    assert not metrics["fine_tuned"] and metrics["pseudo_labelled"] == 0
    assert metrics["oof_accuracy"] == metrics["oof_accuracy_before"]
    assert sorted(p.name for p in PSEUDO_DIR.iterdir()) == [PSEUDO_MANIFEST.name]
    submit.main([])
    out = capsys.readouterr().out
    assert "from data/ensemble (the ensemble; no test image reached pseudo.threshold)" in out


def test_submit_refuses_a_round_that_did_not_run(run_copy):
    set_pseudo(run_copy, enabled=True)  # data/pseudo is still the off round's
    with pytest.raises(PipelineError, match="from a run with the round off; run `dvc repro`"):
        submit.main([])
    shutil.rmtree(PSEUDO_DIR)
    with pytest.raises(PipelineError, match="manifest.json is not found"):
        submit.main([])


def test_round_without_the_ensemble_is_a_clear_error(run_copy):
    set_pseudo(run_copy, enabled=True)
    (ENSEMBLE_DIR / OOF_LOGITS_NAME).unlink()
    with pytest.raises(PipelineError, match="oof_logits.npy: not found; run `dvc repro ensemble`"):
        pseudo.main([])
