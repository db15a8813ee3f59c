"""Never lose work: a killed fold resumes bit-identically, and failures leave outputs intact."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.training_runs import (
    FOLD,
    LAST,
    MODEL,
    cell_outputs,
    copy_run,
    finish,
    kill_after_epoch,
    metric_history,
    snapshot,
    start_training,
    write_params,
)

from pipeline.config.paths import fold_dir, fold_results_dir
from pipeline.io.console import PipelineError
from pipeline.models.d2l_resnet import D2LResNet
from pipeline.stages import train


@pytest.mark.parametrize("augment_on", ["workers", "device"])
def test_a_killed_fold_resumes_bit_identically(finished_run, tmp_path, augment_on):
    # Dropout makes the torch RNG matter; on the workers path, 2 loader workers before the kill
    # and none after show that the worker count does not change the data stream either.
    settings = {"deterministic": True, "epochs": 5, "drop_rate": 0.2, "optimizer": {"lr": 0.002}}
    reference = copy_run(
        finished_run, tmp_path / "reference", **settings, loader={"augment_on": augment_on}
    )
    killed = copy_run(
        finished_run,
        tmp_path / "killed",
        **settings,
        loader={"augment_on": augment_on, "num_workers": 2},
    )
    uninterrupted = start_training(reference)  # runs alongside, on the other core

    stopped_at = kill_after_epoch(start_training(killed), killed / LAST, epoch=2)
    assert stopped_at < 5
    assert not torch.load(killed / LAST, weights_only=False)["complete"]
    write_params(
        killed, finished_run, **settings, loader={"augment_on": augment_on, "num_workers": 0}
    )
    out = finish(start_training(killed), killed)
    finish(uninterrupted, reference)

    assert f"resuming {MODEL} fold {FOLD} from epoch {stopped_at + 1}" in out
    assert f"epoch   {stopped_at}/5" not in out  # finished epochs are not trained again
    expected, resumed = cell_outputs(reference), cell_outputs(killed)
    assert resumed["epoch"] == expected["epoch"]
    assert resumed["state_dict"].keys() == expected["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name
    for name in ("oof_rows", "oof_logits", "test_logits"):
        assert np.array_equal(resumed[name], expected[name]), name
    # Every epoch's metrics (replayed from the checkpoint, then new) match to the bit as well.
    assert metric_history(killed) == metric_history(reference)
    assert torch.load(killed / LAST, weights_only=False)["complete"]
    assert list(killed.rglob(".*.tmp")) == []  # what the killed run was writing is gone


@pytest.fixture
def run_copy(run_copy):
    """conftest's copy of the finished tiny run, restoring torch's global settings after."""
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: faster than two threads on a busy machine
    yield run_copy
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


def set_train(**changes) -> None:
    write_params(Path.cwd(), Path.cwd(), **changes)


def nan_from_training_call(monkeypatch, call: int) -> None:
    """Make the model's output NaN from its `call`-th forward pass in training mode on."""
    forward, calls = D2LResNet.forward, []

    def patched(self, x):
        calls.append(self.training)
        out = forward(self, x)
        return out * float("nan") if self.training and calls.count(True) >= call else out

    monkeypatch.setattr(D2LResNet, "forward", patched)


def test_a_diverged_loss_stops_with_the_epoch_and_keeps_the_last_good_epoch(
    run_copy, monkeypatch, capsys
):
    set_train(epochs=3)
    cell, live = fold_dir(MODEL, FOLD), fold_results_dir(MODEL, FOLD)
    before = {cell: snapshot(cell), live: snapshot(live)}
    nan_from_training_call(monkeypatch, call=2)  # the tiny fold has one step per epoch
    with pytest.raises(PipelineError) as err:
        train.main(["--model", MODEL, "--fold", str(FOLD)])
    assert {cell: snapshot(cell), live: snapshot(live)} == before  # the last run's outputs
    message = str(err.value)
    assert "loss was nan at epoch 2, step 1/1" in message
    assert f"train.models.{MODEL}.optimizer.lr" in message and "keeps epoch 1" in message
    checkpoint = torch.load(LAST, weights_only=False)
    assert checkpoint["epoch"] == 1 and not checkpoint["complete"]

    # Once the cause is gone, the same settings continue from the last good epoch.
    monkeypatch.undo()
    monkeypatch.chdir(run_copy)
    capsys.readouterr()
    train.main(["--model", MODEL, "--fold", str(FOLD)])
    out = capsys.readouterr().out
    assert f"resuming {MODEL} fold {FOLD} from epoch 2" in out and "epoch   1/3" not in out
    assert torch.load(LAST, weights_only=False) == {
        "fingerprint": checkpoint["fingerprint"],
        "complete": True,
        "epoch": 3,
    }


def test_a_finished_or_stale_checkpoint_restarts_training(run_copy, monkeypatch, capsys):
    # The finished run's last.pt is marked complete: a new run of the stage starts over.
    train.main(["--model", MODEL, "--fold", str(FOLD)])
    out = capsys.readouterr().out
    assert "is from a finished run; training from scratch" in out and "epoch   1/1" in out

    # An unfinished checkpoint made with other settings is not resumed either.
    set_train(epochs=2)
    nan_from_training_call(monkeypatch, call=2)
    with pytest.raises(PipelineError):
        train.main(["--model", MODEL, "--fold", str(FOLD)])
    assert torch.load(LAST, weights_only=False)["epoch"] == 1
    monkeypatch.undo()
    monkeypatch.chdir(run_copy)
    set_train(epochs=2, optimizer={"lr": 0.001})
    capsys.readouterr()
    train.main(["--model", MODEL, "--fold", str(FOLD)])
    out = capsys.readouterr().out
    assert "is from a run with other model_params; training from scratch" in out
    assert "resuming" not in out and "epoch   1/2" in out


def test_out_of_gpu_memory_names_the_batch_size(run_copy, monkeypatch):
    def out_of_memory(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(D2LResNet, "forward", out_of_memory)
    with pytest.raises(PipelineError) as err:
        train.main(["--model", MODEL, "--fold", str(FOLD)])
    message = str(err.value)
    assert "out of GPU memory" in message and "batch_size 8" in message
    assert f"lower train.models.{MODEL}.batch_size (e.g. 4, with grad_accum_steps: 2" in message
    assert "image_size" in message


def test_out_of_gpu_memory_at_batch_size_1_names_what_can_still_shrink(run_copy, monkeypatch):
    def out_of_memory(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    set_train(batch_size=1)
    monkeypatch.setattr(D2LResNet, "forward", out_of_memory)
    with pytest.raises(PipelineError) as err:
        train.main(["--model", MODEL, "--fold", str(FOLD)])
    message = str(err.value)
    assert "batch_size 1" in message and "grad_accum_steps" not in message
    assert f"lower train.models.{MODEL}.image_size or choose a smaller" in message


def test_a_missing_deterministic_kernel_is_a_clear_error(run_copy, monkeypatch):
    def no_kernel(self, x):
        raise RuntimeError(
            "adaptive_avg_pool2d_backward_cuda does not have a deterministic "
            "implementation, but you set 'torch.use_deterministic_algorithms(True)'"
        )

    monkeypatch.setattr(D2LResNet, "forward", no_kernel)
    with pytest.raises(PipelineError, match="set train.deterministic: false"):
        train.main(["--model", MODEL, "--fold", str(FOLD)])


@pytest.mark.parametrize("saver", ["numpy.save", "torch.save"])
def test_a_stage_failing_part_way_keeps_the_previous_outputs(run_copy, monkeypatch, saver):
    cell, live = fold_dir(MODEL, FOLD), fold_results_dir(MODEL, FOLD)
    before = {cell: snapshot(cell), live: snapshot(live)}
    module = np if saver == "numpy.save" else torch
    save = module.save

    def disk_full_in_the_cell_folder(*args, **kwargs):
        path = args[0] if saver == "numpy.save" else args[1]
        in_memory = not isinstance(path, (str, os.PathLike))  # save_checkpoint's buffer
        if not in_memory and Path(path).parent.name.startswith(f".fold{FOLD}."):  # save_cell's
            raise OSError(28, "No space left on device")
        return save(*args, **kwargs)

    monkeypatch.setattr(module, "save", disk_full_in_the_cell_folder)
    with pytest.raises(OSError, match="No space left"):
        train.main(["--model", MODEL, "--fold", str(FOLD)])
    assert {cell: snapshot(cell), live: snapshot(live)} == before
    for folder in (cell.parent, live.parent):  # no temporary .fold0.* siblings left
        assert sorted(p.name for p in folder.iterdir()) == ["fold0", "fold1"]
