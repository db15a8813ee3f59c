"""Paths of every pipeline artifact, atomic writes and seeding.

Every stage writes through the helpers here, so a failed or killed stage never leaves a
half-written file: data goes to a temporary sibling first and is renamed into place.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

PARAMS_FILE = Path("params.yaml")

SYNTHETIC_DIR = Path("data/synthetic")
PREPARED_DIR = Path("data/prepared")
CLASSES_FILE = PREPARED_DIR / "classes.json"
PREPARED_TRAIN = PREPARED_DIR / "train.csv"
PREPARED_TEST = PREPARED_DIR / "test.csv"
PREPARED_SAMPLE = PREPARED_DIR / "sample_submission.csv"
FOLDS_FILE = Path("data/folds.csv")
CACHE_DIR = Path("data/cache")
CACHE_IMAGES = CACHE_DIR / "images.npy"
CACHE_INDEX = CACHE_DIR / "index.csv"
CACHE_MANIFEST = CACHE_DIR / "manifest.json"
MODELS_DIR = Path("models")
CHECKPOINTS_DIR = Path("checkpoints")
TRAIN_RESULTS_DIR = Path("results/train")
ENSEMBLE_DIR = Path("data/ensemble")
ENSEMBLE_METRICS = Path("results/ensemble/metrics.json")
META_METRICS = Path("results/meta/metrics.json")
PSEUDO_DIR = Path("data/pseudo")
PSEUDO_MANIFEST = PSEUDO_DIR / "manifest.json"
PSEUDO_METRICS = Path("results/pseudo/metrics.json")
SUBMISSION_FILE = Path("submissions/submission.csv")
AUGMENT_GRID = Path("results/augment_grid.png")

CHECKPOINT_NAME = "best.pt"
OOF_NAME = "oof.npz"
TEST_LOGITS_NAME = "test_logits.npy"
OOF_LOGITS_NAME = "oof_logits.npy"
LAST_CHECKPOINT_NAME = "last.pt"


def fold_dir(model: str, fold: int) -> Path:
    """Where train writes one (model, fold) cell's checkpoint and logits."""
    return MODELS_DIR / model / f"fold{fold}"


def fold_results_dir(model: str, fold: int) -> Path:
    """Where train writes one cell's DVCLive metrics and plots."""
    return TRAIN_RESULTS_DIR / model / f"fold{fold}"


def last_checkpoint_path(model: str, fold: int) -> Path:
    """Where train keeps one cell's resumable end-of-epoch checkpoint."""
    return CHECKPOINTS_DIR / model / f"fold{fold}" / LAST_CHECKPOINT_NAME


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    Works for files and directories alike: whatever the block creates at the yielded path
    replaces `path` in one rename, and on error it is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.rmdir()  # the caller creates a file or a directory here
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)  # os.replace cannot replace a non-empty directory
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def remove_stale_temps(path: Path | str) -> None:
    """Delete the temporary siblings of `path` that a killed `atomic_path` block left behind."""
    path = Path(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def file_md5(path: Path | str) -> str:
    """The md5 hex digest of a file's bytes."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path | str, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_csv(path: Path | str, frame) -> None:
    """Write a pandas DataFrame as CSV without its index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
