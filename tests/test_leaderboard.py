"""`leaf leaderboard` and `leaf exps` on a saved `dvc exp show --json` of a real tiny queue run
(tests/data/exp_show.json: lr-a with lr=0.003, lr-b with lr=0.01 and 24 px; trimmed to the
fields the leaderboard reads)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pipeline.tools import exps, leaderboard

CANNED = Path(__file__).resolve().parent / "data" / "exp_show.json"


def entries() -> list[dict]:
    return json.loads(CANNED.read_text())


def test_rows_are_baseline_then_experiments_best_first():
    rows = leaderboard.leaderboard(entries())
    assert [row[:2] for row in rows] == [
        ("master", "baseline"),
        ("lr-a", "success"),
        ("lr-b", "success"),
    ]
    assert rows[1].accuracy > rows[2].accuracy
    assert rows[1].changes == ["train.defaults.optimizer.lr=0.003"]
    assert rows[2].changes == ["train.defaults.image_size=24", "train.defaults.optimizer.lr=0.01"]
    assert rows[1].created.startswith("2026-")


def metrics(**values) -> dict:
    return {"metrics": {"results/ensemble/metrics.json": {"data": values}}}


def test_one_metric_is_ranked_the_honest_oof_accuracy():
    assert leaderboard.accuracy_of(metrics(oof_accuracy=0.5)) == 0.5  # equal weights
    fitted = metrics(oof_accuracy=0.7, oof_accuracy_fitted=0.7, oof_accuracy_fitted_cross=0.6)
    assert leaderboard.accuracy_of(fitted) == 0.6
    one_fold = metrics(oof_accuracy=0.9, oof_accuracy_fitted=0.9)  # weights scored on their fold
    assert leaderboard.accuracy_of(one_fold) is None
    one_fold_now = metrics(oof_accuracy=0.9, oof_accuracy_fitted=0.9, oof_accuracy_equal=0.8)
    assert leaderboard.accuracy_of(one_fold_now) == 0.8  # nothing fitted on the fold
    both = metrics(oof_accuracy_fitted_cross=0.6, oof_accuracy_equal=0.8)
    assert leaderboard.accuracy_of(both) == 0.6
    assert leaderboard.accuracy_of({}) is None
    named = [metrics(oof_accuracy=0.5), fitted, one_fold, one_fold_now, {}]
    assert [leaderboard.scored_as(data) for data in named] == [
        "plain",
        "cross-fitted",
        None,
        "equal",
        None,
    ]


def with_experiment(canned: list, name: str, params: dict, **values) -> list:
    baseline = canned[1]["data"]["params"]["params.yaml"]["data"]
    data = {**metrics(**values), "params": {"params.yaml": {"data": {**baseline, **params}}}}
    canned[1]["experiments"].append({"revs": [{"rev": "e" * 40, "name": name, "data": data}]})
    return canned


def test_one_fold_runs_rank_after_the_full_ones_and_show_their_folds():
    canned = with_experiment(
        entries(),
        "one-fold",
        {},
        oof_accuracy=0.5,
        oof_accuracy_fitted=0.5,
        oof_accuracy_fitted_cross=0.99,
        num_folds=1,
    )
    rows = leaderboard.leaderboard(canned)
    assert [row.name for row in rows][-1] == "one-fold"  # despite its 0.99
    assert rows[-1].folds == 1 and "one-fold" in leaderboard.format_rows(rows)


def test_runs_on_another_data_root_are_listed_apart():
    canned = with_experiment(
        entries(), "silhouettes", {"data": {"root": "../shared/leaves"}}, oof_accuracy=0.95
    )
    rows = leaderboard.leaderboard(canned)
    assert rows[-1].name == "silhouettes" and rows[-1].data_root == "../shared/leaves"
    text = leaderboard.format_rows(rows).splitlines()
    assert text[-2] == "-- data.root = ../shared/leaves (not comparable with the rows above)"


def test_added_and_removed_models_read_like_dvc_exp_run_overrides():
    base = leaderboard.flatten({"train": {"models": {"a": {}}, "folds": [0, 1]}})
    new = leaderboard.flatten({"train": {"models": {"b": {"epochs": 3}}, "folds": [0, 1]}})
    assert leaderboard.changed_params(new, base) == [
        "+train.models.b.epochs=3",
        "~train.models.a",
    ]


def test_cli_prints_the_table_from_a_saved_file(capsys):
    from pipeline.tools.cli import main

    main(["leaderboard", "--json-file", str(CANNED)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["experiment", "state", "oof_acc", "scored"]
    assert lines[2].split()[:5] == ["lr-a", "success", "0.3889", "cross-fitted", "2"]
    assert lines[2].endswith("train.defaults.optimizer.lr=0.003")


def test_failed_and_queued_experiments_are_listed_last_without_accuracy():
    canned = entries()
    canned[1]["experiments"].append(
        {"revs": [{"rev": "f" * 40, "name": "broken", "data": {}}], "executor": {"state": "failed"}}
    )
    rows = leaderboard.leaderboard(canned)
    assert rows[-1][:3] == ("broken", "failed", None)
    assert "broken" in leaderboard.format_rows(rows)


def test_exps_keeps_only_the_key_columns_and_passes_flags_on():
    command = exps.command(["--", "--csv"])
    assert command[1:5] == ["exp", "show", "--drop", ".*"]
    assert command[-1] == "--csv" and "--" not in command
    keeps = [command[i + 1] for i, arg in enumerate(command) if arg == "--keep"]
    assert any("oof_accuracy" in regex for regex in keeps)
    assert any("image_size" in regex for regex in keeps)
    assert any("data" in regex and "root" in regex for regex in keeps)


@pytest.mark.parametrize("argv", [["--csv", "-A"], ["--", "--csv", "-A"]])
@pytest.mark.parametrize("through", ["leaf", "module"])
def test_leaf_exps_passes_its_flags_to_dvc_in_order(monkeypatch, argv, through):
    from pipeline.tools.cli import main

    ran = []
    monkeypatch.setattr(
        exps.subprocess, "run", lambda cmd: ran.append(cmd) or subprocess.CompletedProcess(cmd, 0)
    )
    assert (main(["exps", *argv]) if through == "leaf" else exps.main(argv)) == 0
    assert ran[0][-2:] == ["--csv", "-A"]
