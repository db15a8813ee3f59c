from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers.processes import REPO_ROOT

from pipeline.config import paths
from pipeline.config.params import parse_params
from pipeline.config.paths import CLASSES_FILE, FOLDS_FILE, OOF_NAME, TEST_LOGITS_NAME
from pipeline.ensemble import members
from pipeline.io.console import PipelineError
from pipeline.io.files import read_json, write_csv, write_json
from pipeline.stages import ensemble as ens


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
    stage = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]["ensemble"]
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


@pytest.mark.parametrize("weighting", ["fit", "equal"])
def test_each_member_reports_what_it_adds(two_model_run, weighting):
    # Honestly scored, the ensemble is always right (1.0); without `good` it is `bad` alone
    # (0.5), without `bad` it is `good` alone (1.0).
    _, _, metrics = ens.ensemble(two_model_run, ["good", "bad"], [0, 1], "logits", weighting)
    assert metrics["models"]["good"]["adds"] == 0.5
    assert metrics["models"]["bad"]["adds"] == 0.0
    # `bad` is wrong on half the images, each of which only `good` gets right.
    assert metrics["models"]["good"]["right_alone"] == 4
    assert metrics["models"]["bad"]["right_alone"] == 0
    _, _, alone = ens.ensemble(two_model_run, ["good"], [0, 1], "logits", weighting)
    assert not {"adds", "right_alone"} & set(alone["models"]["good"])  # nothing to compare with


def test_equal_weighting_reports_no_fitted_accuracy(two_model_run):
    _, _, metrics = ens.ensemble(two_model_run, ["good", "bad"], [0, 1], "probs", "equal")
    assert metrics["weights"] == {"good": 0.5, "bad": 0.5}
    assert metrics["oof_accuracy"] == metrics["oof_accuracy_equal"]
    assert "oof_accuracy_fitted" not in metrics and "oof_accuracy_fitted_cross" not in metrics


def test_one_trained_fold_reports_no_cross_fitted_accuracy(two_model_run):
    _, _, metrics = ens.ensemble(two_model_run, ["good", "bad"], [0], "logits", "fit")
    assert metrics["oof_accuracy_fitted"] == 1.0 and "oof_accuracy_fitted_cross" not in metrics


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


def change_params(folder: Path, change: Callable[[dict], None]) -> None:
    """Apply `change` to the params.yaml in `folder`."""
    params = yaml.safe_load((folder / "params.yaml").read_text())
    change(params)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_networks_that_keep_their_best_validating_epoch_are_named_as_flattered(run_copy, capsys):
    ens.main([])
    assert "keep: best" not in capsys.readouterr().out
    change_params(run_copy, lambda params: params["train"]["defaults"].update(keep="best"))
    ens.main([])
    assert (
        "ensemble: d2l_resnet11 kept each fold's best-validating epoch (keep: best), so their OOF "
        "figures flatter them; keep: last scores them honestly"
    ) in capsys.readouterr().out


def test_with_one_fold_the_line_says_to_trust_the_equal_weights_figure(run_copy, capsys):
    ens.main([])
    assert "weights fitted on the other folds: " in capsys.readouterr().out
    change_params(run_copy, lambda params: params["train"].update(folds=[0]))
    metrics = ens.main([])
    assert "oof_accuracy_fitted_cross" not in metrics and metrics["num_models"] == 2
    assert (
        f"(equal: {metrics['oof_accuracy_equal']:.4f}; the weights were fitted on the one fold "
        "they are scored on: trust the equal figure)"
    ) in capsys.readouterr().out
