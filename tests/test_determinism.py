"""Same params and data, same results: the pipeline on CPU (the data stream of training:
test_loaders.py)."""

from __future__ import annotations

import numpy as np
from conftest import run_stages

from pipeline.config.paths import ENSEMBLE_DIR, SUBMISSION_FILE


def test_two_runs_give_identical_logits_and_submission(finished_run, tmp_path, tiny_params):
    # finished_run is the first run (shared with other tests); this is the second.
    run_stages(tmp_path, tiny_params)
    names = sorted(p.name for p in (finished_run / ENSEMBLE_DIR).glob("*.npy"))
    assert names == sorted(p.name for p in (tmp_path / ENSEMBLE_DIR).glob("*.npy")) != []
    for name in names:
        first = np.load(finished_run / ENSEMBLE_DIR / name)
        again = np.load(tmp_path / ENSEMBLE_DIR / name)
        assert np.array_equal(first, again), name
    submission = (finished_run / SUBMISSION_FILE).read_bytes()
    assert (tmp_path / SUBMISSION_FILE).read_bytes() == submission
