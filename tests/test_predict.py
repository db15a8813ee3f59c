"""`pipeline.predict` on a copy of the tiny finished run: same answers as the ensemble stage."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from pipeline import predict
from pipeline.cli import PipelineError
from pipeline.data import load_table
from pipeline.ensemble import log_softmax
from pipeline.files import ENSEMBLE_DIR, ENSEMBLE_METRICS, PREPARED_TEST, read_json, write_json


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
    assert predict.ensemble_weights(["a", "b"]) is None  # no ensemble run: equal weights
    write_json(ENSEMBLE_METRICS, {"weights": {"a": 0.6, "b": 0.3, "c": 0.1}})
    assert predict.ensemble_weights(["a", "b"]) == pytest.approx([2 / 3, 1 / 3])
    assert predict.ensemble_weights(["a", "d"]) is None  # a model the ensemble did not weigh
    write_json(ENSEMBLE_METRICS, {"weights": {"a": 0.0, "b": 1.0}})
    assert predict.ensemble_weights(["a"]) is None
