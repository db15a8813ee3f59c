"""save_checkpoint writes the same bytes for the same checkpoint, wherever it writes it, so a
rerun of a finished fold leaves last.pt's md5 in dvc.lock unchanged."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.training.checkpoint import mark_complete, save_checkpoint


def test_the_same_checkpoint_saved_twice_has_the_same_bytes(tmp_path):
    checkpoint = {
        "fingerprint": {"model": "d2l_resnet11", "fold": 0, "seed": 7},
        "epoch": 3,
        "state_dict": {"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)},
        "rng": {"numpy": np.random.RandomState(0).get_state()},
    }
    first, second = tmp_path / "a" / "last.pt", tmp_path / "b" / "other_name.pt"
    save_checkpoint(first, checkpoint)
    save_checkpoint(second, checkpoint)
    assert first.read_bytes() == second.read_bytes()
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p not in (first, second)]


def test_the_finished_marker_is_the_same_bytes_on_every_run(tmp_path):
    fingerprint = {"model": "d2l_resnet11", "fold": 1, "folds_md5": "abc"}
    mark_complete(tmp_path / "run1.pt", fingerprint, epochs=2)
    mark_complete(tmp_path / "run2.pt", dict(fingerprint), epochs=2)
    assert (tmp_path / "run1.pt").read_bytes() == (tmp_path / "run2.pt").read_bytes()


def test_the_background_writer_saves_a_snapshot_and_raises_a_failed_write(tmp_path, monkeypatch):
    from pipeline.training import checkpoint as module

    weights = torch.zeros(3)
    path = tmp_path / "last.pt"
    with module.CheckpointWriter() as writer:
        writer.save(path, {"epoch": 1, "weights": weights})
        weights += 5  # the next step changes the weights: the saved epoch must not see it
    saved = torch.load(path, weights_only=False)
    assert saved["epoch"] == 1 and torch.equal(saved["weights"], torch.zeros(3))
    with module.CheckpointWriter() as writer:
        writer.save(path, {"epoch": 2, "weights": weights})
        writer.save(path, {"epoch": 3, "weights": weights})
    assert torch.load(path, weights_only=False)["epoch"] == 3

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "write_bytes", disk_full)
    try:
        with module.CheckpointWriter() as writer:
            writer.save(path, {"epoch": 4})
    except OSError as err:
        assert err.errno == 28
    else:
        raise AssertionError("a failed write passed silently")
    assert torch.load(path, weights_only=False)["epoch"] == 3  # the previous file is intact


def test_a_process_restores_its_own_rng_states_or_an_older_checkpoints_one_set():
    from pipeline.training.checkpoint import restore_rng_states, rng_states

    cpu = torch.device("cpu")
    torch.manual_seed(3)
    np.random.seed(3)
    saved = rng_states(cpu)  # one process: a list of one
    expected = torch.rand(2), np.random.rand(2)
    for states in (saved, saved[0]):  # a checkpoint from before December 2026 held a dict
        torch.manual_seed(0)
        np.random.seed(0)
        restore_rng_states(states, cpu)
        assert torch.equal(torch.rand(2), expected[0])
        assert np.array_equal(np.random.rand(2), expected[1])
