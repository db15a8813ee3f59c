"""Stage train with every training recipe on (MixUp/CutMix, EMA, head learning rate, clipping,
gradient accumulation, onecycle): what it logs and saves, and a stopped run that resumes
bit-identically."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.training_runs import FOLD, LAST, MODEL, cell_outputs, copy_run, metric_history

from pipeline.config.paths import CHECKPOINT_NAME, fold_dir, fold_results_dir
from pipeline.stages import train
from pipeline.training import engine, fitting

# ----------------------------------------------------------------------------------------------
# Training with every recipe on

RECIPE = {
    "mixup": {"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "switch_prob": 0.5},
    "ema": {"enabled": True, "decay": 0.6},
    "optimizer": {"head_lr": 0.01},
    "scheduler": {"name": "onecycle", "warmup_epochs": 0.5},
    "grad_clip_norm": 5.0,
    "grad_accum_steps": 2,
}


@pytest.fixture
def recipe_run(finished_run, tmp_path, monkeypatch):
    """The tiny run's data in `tmp_path`/`name` with RECIPE on, as the cwd; restores torch."""
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.set_num_threads(1)

    def make(name: str, **changes) -> Path:
        workdir = copy_run(finished_run, tmp_path / name, **RECIPE, **changes)
        monkeypatch.chdir(workdir)
        return workdir

    yield make
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


@pytest.mark.parametrize("keep", ["last", "best"])
def test_training_with_mixup_cutmix_ema_head_lr_and_clipping(recipe_run, capsys, keep):
    workdir = recipe_run(f"recipe-{keep}", epochs=2, keep=keep)
    summary = train.main(["--model", MODEL, "--fold", str(FOLD)])
    out = capsys.readouterr().out
    assert summary["best_weights"] in ("raw", "ema") and math.isfinite(summary["oof_loss"])
    if keep == "last":  # the final epoch's moving average, whatever the validation says
        assert (summary["best_epoch"], summary["best_weights"]) == (2, "ema")
    assert f"keep: {keep}" in out
    assert "(ema " in out  # each epoch prints the EMA weights' validation accuracy too
    assert "gradient accumulation: 2 batches of 8 a step (an effective batch of 16)" in out

    live = workdir / fold_results_dir(MODEL, FOLD)
    logged = json.loads((live / "metrics.json").read_text())
    assert logged["best_weights"] == summary["best_weights"]
    history = metric_history(workdir)
    for name in ("valid/acc.tsv", "valid_ema/acc.tsv", "valid_ema/loss.tsv", "train/acc.tsv"):
        assert len(history[name].splitlines()) == 3, name  # a header and two epochs
    best = torch.load(fold_dir(MODEL, FOLD) / CHECKPOINT_NAME, weights_only=False)
    assert best["epoch"] == summary["best_epoch"]
    assert best["weights"] == summary["best_weights"]


class Stopped(Exception):
    """Stands for a kill between epochs."""


def test_a_stopped_run_with_ema_and_mixing_resumes_bit_identically(recipe_run, monkeypatch):
    settings = {"deterministic": True, "epochs": 3, "drop_rate": 0.2}
    recipe_run("reference", **settings)
    train.main(["--model", MODEL, "--fold", str(FOLD)])
    expected = cell_outputs(Path.cwd()), metric_history(Path.cwd())

    stopped = recipe_run("stopped", **settings)
    run_epoch = engine.run_epoch

    def stop_before_epoch_3(trainer, loaders, valid_targets, epoch, epochs):
        if epoch == 3:
            raise Stopped  # after epoch 2's checkpoint was written
        return run_epoch(trainer, loaders, valid_targets, epoch, epochs)

    monkeypatch.setattr(fitting, "run_epoch", stop_before_epoch_3)
    with pytest.raises(Stopped):
        train.main(["--model", MODEL, "--fold", str(FOLD)])
    assert torch.load(LAST, weights_only=False)["epoch"] == 2
    monkeypatch.setattr(fitting, "run_epoch", run_epoch)
    train.main(["--model", MODEL, "--fold", str(FOLD)])

    resumed = cell_outputs(stopped), metric_history(stopped)
    assert resumed[1] == expected[1]  # every epoch's metrics, raw and EMA, to the bit
    assert resumed[0]["epoch"] == expected[0]["epoch"]
    for name, tensor in expected[0]["state_dict"].items():
        assert torch.equal(resumed[0]["state_dict"][name], tensor), name
    for name in ("oof_logits", "test_logits"):
        assert np.array_equal(resumed[0][name], expected[0][name]), name


def test_a_timm_backbone_trains_with_stochastic_depth(recipe_run, monkeypatch):
    from timm.layers import DropPath

    recipe_run("drop-path", epochs=1, backbone="resnet18", drop_path_rate=0.1)
    built = []

    def create_cell_model(*args, **kwargs):
        built.append(train_create_cell_model(*args, **kwargs))
        return built[-1]

    train_create_cell_model = train.create_cell_model
    monkeypatch.setattr(train, "create_cell_model", create_cell_model)
    summary = train.main(["--model", MODEL, "--fold", str(FOLD)])
    assert math.isfinite(summary["oof_loss"])
    rates = [m.drop_prob for m in built[0].modules() if isinstance(m, DropPath)]
    assert rates and max(rates) == pytest.approx(0.1)
