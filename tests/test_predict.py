"""`pipeline.predict` on a copy of the tiny finished run: same answers as the ensemble stage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline.config.params import load_params
from pipeline.config.paths import (
    CLASSES_FILE,
    ENSEMBLE_DIR,
    ENSEMBLE_METRICS,
    ENSEMBLE_WEIGHTS,
    META_METRICS,
    PREPARED_TEST,
)
from pipeline.data.tables import load_table
from pipeline.ensemble import meta_model, prediction
from pipeline.ensemble.features import feature_table
from pipeline.ensemble.scoring import log_softmax
from pipeline.io.console import PipelineError
from pipeline.io.files import read_json, write_json
from pipeline.stages import ensemble, meta
from pipeline.tools import predict


def ensemble_probs() -> tuple[pd.DataFrame, np.ndarray]:
    """The prepared test table and the ensemble stage's test probabilities."""
    logits = np.load(ENSEMBLE_DIR / "test_logits.npy").astype(np.float64)
    return load_table(PREPARED_TEST), np.exp(log_softmax(logits))


def test_predictions_match_the_ensemble_stage(run_copy):
    test, probs = ensemble_probs()
    classes = read_json("data/prepared/classes.json")
    paths = list(test["path"][:3])
    table = predict.main([*paths, "--top-k", "2", "--csv", "out/top.csv"])

    written = pd.read_csv("out/top.csv")
    assert list(written.columns) == ["image", "rank", "label", "probability"]
    assert list(written["image"]) == [p for p in paths for _ in range(2)]
    assert list(written["rank"]) == [1, 2] * 3
    top = written[written["rank"] == 1]
    assert list(top["label"]) == [classes[i] for i in probs[:3].argmax(axis=1)]
    assert np.allclose(top["probability"], probs[:3].max(axis=1), atol=1e-4)
    assert (written.groupby("image")["probability"].diff().dropna() <= 0).all()
    assert len(table) == 6

    # Without data/prepared (a failed `dvc exp run` may have deleted it), the class names come
    # from the checkpoints: the same answers.
    shutil.rmtree("data/prepared")
    assert predict.main([*paths, "--top-k", "2"]).equals(table)


def test_folders_are_searched_and_bad_files_reported(run_copy, capsys):
    test, _ = ensemble_probs()
    folder = run_copy / "new" / "nested"
    folder.mkdir(parents=True)
    for path in test["path"][:2]:
        shutil.copy(path, folder)
    (folder / "notes.txt").write_text("not an image, and not searched")
    garbage = run_copy / "new" / "garbage.jpg"
    garbage.write_bytes(b"definitely not a jpeg")

    with pytest.raises(PipelineError) as err:
        predict.main(["new", "missing.png", "--top-k", "1"])
    message = str(err.value)
    assert "2 input(s) could not be predicted" in message
    assert "garbage.jpg: cannot read image" in message and "missing.png: no such" in message
    out = capsys.readouterr().out
    for name in test["image"][:2]:
        assert f"nested/{name.split('/')[-1]}" in out
    assert out.count("   1. ") == 2 and "notes.txt" not in out


def test_missing_checkpoints_are_skipped_with_a_warning(run_copy, capsys):
    shutil.rmtree("models/d2l_resnet11/fold1")
    test, _ = ensemble_probs()
    predict.main([test["path"][0]])
    captured = capsys.readouterr()
    assert "warning: models/d2l_resnet11/fold1/best.pt not found" in captured.err
    assert captured.out.count("\n") == 1 + 3  # the image, then one line per class (3 < top-k)

    shutil.rmtree("models")
    with pytest.raises(PipelineError, match="no trained model"):
        predict.main([test["path"][0]])


def test_models_are_weighted_as_the_ensemble_chose(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert prediction.ensemble_weights(["a", "b"]) is None  # no ensemble run: equal weights
    write_json(ENSEMBLE_WEIGHTS, {"a": 0.6, "b": 0.3, "c": 0.1})
    assert prediction.ensemble_weights(["a", "b"]) == pytest.approx([2 / 3, 1 / 3])
    assert prediction.ensemble_weights(["a", "d"]) is None  # a model the ensemble did not weigh
    write_json(ENSEMBLE_WEIGHTS, {"a": 0.0, "b": 1.0})
    assert prediction.ensemble_weights(["a"]) is None


# ----------------------------------------------------------------------------------------------
# The logits themselves: predicting the test images gives the ensemble's test logits


def set_params(**groups) -> None:
    """Update params.yaml's `groups` (name -> settings) in the cwd."""
    params = yaml.safe_load(Path("params.yaml").read_text())
    for group, settings in groups.items():
        params[group].update(settings)
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def predicted_test_logits() -> np.ndarray:
    params = load_params()
    paths = [Path(p) for p in load_table(PREPARED_TEST)["path"]]
    logits, classes = prediction.predict_images(paths, prediction.find_cells(params), params)
    assert classes == read_json(CLASSES_FILE)
    return logits


@pytest.fixture
def meta_run(run_copy) -> Path:
    """The tiny run with stage meta in the ensemble (equal weights, so it counts for half)."""
    set_params(meta={"enabled": True}, ensemble={"weights": "equal"})
    meta.main([])
    ensemble.main([])
    return run_copy


def test_predict_gives_the_ensemble_test_logits(run_copy):
    expected = np.load(ENSEMBLE_DIR / "test_logits.npy")
    assert np.abs(predicted_test_logits() - expected).max() < 5e-7


def test_with_meta_predict_gives_the_ensemble_test_logits(meta_run):
    assert read_json(ENSEMBLE_METRICS)["weights"]["meta"] == pytest.approx(0.5)
    expected = np.load(ENSEMBLE_DIR / "test_logits.npy")
    networks = np.load("models/d2l_resnet11/fold0/test_logits.npy")
    assert not np.allclose(expected, networks, atol=1e-3)  # meta changes the ensemble
    assert np.abs(predicted_test_logits() - expected).max() < 5e-7


def test_meta_saves_its_classifier_of_the_test_images_fitted_on_every_row(meta_run):
    test = load_table(PREPARED_TEST)
    features = feature_table(test["path"], load_params().meta.features)
    model = meta_model.load_model()
    assert model.groups == load_params().meta.features
    assert model.columns == list(features.columns)
    classifier = {"logistic": "logisticregression", "lda": "regularizeddiscriminant"}
    alone = model.classifier.split(" (")[0]  # a mix reads "lda 0.5 + logistic 0.5"
    assert [name for name, _ in model.pipeline.steps] == [
        "minmaxscaler",
        "standardscaler",
        classifier.get(alone, "votingclassifier"),
    ]
    assert len(model.pipeline.classes_) == len(read_json(CLASSES_FILE))  # every row's class
    assert read_json(META_METRICS)["test_classifier"] == model.classifier
    for fold in (0, 1):  # every fold's test logits are its
        saved = np.load(f"models/meta/fold{fold}/test_logits.npy")
        assert np.array_equal(model.log_probs(features), saved)


def test_a_missing_meta_classifier_is_skipped_with_a_warning_a_damaged_one_stops(meta_run, capsys):
    Path("models/meta/model.pkl").unlink()
    predict.main([load_table(PREPARED_TEST)["path"][0]])
    assert "warning: models/meta has no saved classifier" in capsys.readouterr().err
    Path("models/meta/model.pkl").write_bytes(b"not a pickle")
    with pytest.raises(PipelineError, match="cannot load stage meta's model.*dvc repro meta"):
        predict.main([load_table(PREPARED_TEST)["path"][0]])


def rewrite_checkpoint(change) -> None:
    path = Path("models/d2l_resnet11/fold0/best.pt")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)


def test_checkpoints_this_version_cannot_rebuild_say_to_retrain(run_copy):
    image = load_table(PREPARED_TEST)["path"][0]
    rewrite_checkpoint(lambda c: c["model_params"].update(colour_space="lab"))
    with pytest.raises(PipelineError, match="fold0/best.pt: its model_params .*retrain"):
        predict.main([image])
    rewrite_checkpoint(lambda c: c["model_params"].pop("colour_space"))
    rewrite_checkpoint(lambda c: c["state_dict"].popitem())
    with pytest.raises(PipelineError, match="fold0/best.pt: its weights do not fit .*retrain"):
        predict.main([image])
    rewrite_checkpoint(lambda c: c.pop("state_dict"))
    with pytest.raises(PipelineError, match="has no state_dict.*retrain"):
        predict.main([image])
