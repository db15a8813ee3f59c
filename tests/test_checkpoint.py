"""save_checkpoint writes the same bytes for the same checkpoint, wherever it writes it, so a
rerun of a finished fold leaves last.pt's md5 in dvc.lock unchanged."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.checkpoint import mark_complete, save_checkpoint


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
