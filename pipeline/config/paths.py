"""Where every artifact lives: the one module that names the project's paths."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.config.schema import META_MODEL

# What marks the project's root: the folder holding params.yaml (and dvc.yaml).
PROJECT_MARKER = "params.yaml"

# Stage check's marker: written once params.yaml passed every check. Its text never changes, so
# the stages that depend on it rerun only for their own params, never because of it.
PARAMS_CHECKED = Path("data/params_checked.txt")

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
CACHE_ORIENTATION = CACHE_DIR / "orientation.json"

# Stage train's cells, one per (model, fold): see fold_dir, fold_results_dir, last_checkpoint_path.
MODELS_DIR = Path("models")
CHECKPOINTS_DIR = Path("checkpoints")
TRAIN_RESULTS_DIR = Path("results/train")
CHECKPOINT_NAME = "best.pt"
LAST_CHECKPOINT_NAME = "last.pt"
OOF_NAME = "oof.npz"
TEST_LOGITS_NAME = "test_logits.npy"  # in a cell, and in data/ensemble/ and data/pseudo/

META_DIR = MODELS_DIR / META_MODEL
META_METRICS = Path("results/meta/metrics.json")
FEATURES_NAME = "features.csv"
# models/meta/: the classifier the test images are predicted with (fitted on every labelled row),
# a pickled sklearn pipeline, and beside it its classes count, feature groups and columns
META_MODEL_NAME = "model.pkl"
META_SPEC_NAME = "model.json"

# Stage collect's manifest: the md5 of every file of the cells train.models (and meta, when
# enabled) x train.folds list, what ensemble and pseudo depend on instead of all of models/
# (which keeps stale cells).
CELLS_MANIFEST = Path("data/cells.json")

ENSEMBLE_DIR = Path("data/ensemble")
OOF_LOGITS_NAME = "oof_logits.npy"  # in data/ensemble/ and data/pseudo/, beside TEST_LOGITS_NAME
# The model weights stage ensemble chose, which `leaf predict` averages its models with.
ENSEMBLE_WEIGHTS = ENSEMBLE_DIR / "weights.json"
ENSEMBLE_METRICS = Path("results/ensemble/metrics.json")
CONFUSION_FILE = ENSEMBLE_METRICS.parent / "confusion.csv"
PER_CLASS_FILE = ENSEMBLE_METRICS.parent / "per_class.csv"

PSEUDO_DIR = Path("data/pseudo")
PSEUDO_MANIFEST = PSEUDO_DIR / "manifest.json"
PSEUDO_METRICS = Path("results/pseudo/metrics.json")

SUBMISSION_FILE = Path("submissions/submission.csv")
# Next to the CSV: the params and scores it was made with, and its md5 (pipeline.tools.kaggle).
SUBMISSION_RECORD = SUBMISSION_FILE.with_suffix(".json")

# `leaf preview`'s grid of augmented training images.
AUGMENT_GRID = Path("results/augment_grid.png")


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: the cwd) holding params.yaml; else the
    cwd, where a missing params.yaml is reported."""
    here = (start or Path.cwd()).resolve()
    return next((d for d in (here, *here.parents) if (d / PROJECT_MARKER).is_file()), here)


def data_root(root: str | Path, start: Path | None = None) -> Path:
    """`data.root` as a path to open: an absolute one as it is, a relative one against the
    project root (not the cwd), written relative to the cwd so that paths derived from it (the
    prepared tables' `path` column) stay relative to the project when run from its root."""
    root = Path(root)
    if root.is_absolute():
        return root
    return Path(os.path.relpath(project_root(start) / root, start or Path.cwd()))


def is_synthetic_root(root: str | Path) -> bool:
    """Whether `data.root` is the folder stage generate writes, however it is spelled."""
    return data_root(root).resolve() == data_root(SYNTHETIC_DIR).resolve()


def fold_dir(model: str, fold: int) -> Path:
    """Where train writes one (model, fold) cell's checkpoint and logits."""
    return MODELS_DIR / model / f"fold{fold}"


def fold_results_dir(model: str, fold: int) -> Path:
    """Where train writes one cell's DVCLive metrics and plots."""
    return TRAIN_RESULTS_DIR / model / f"fold{fold}"


def last_checkpoint_path(model: str, fold: int) -> Path:
    """Where train keeps one cell's resumable end-of-epoch checkpoint."""
    return CHECKPOINTS_DIR / model / f"fold{fold}" / LAST_CHECKPOINT_NAME
