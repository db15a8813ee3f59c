"""The cell file format: models/<model>/fold<k>/ (best.pt, oof.npz, test_logits.npy; stage
meta's folds have no best.pt, and models/meta/ holds its classifier of the test images,
model.pkl and model.json), written and read here only, and the ensemble's logits in
data/ensemble/.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config.paths import (
    CHECKPOINT_NAME,
    CLASSES_FILE,
    ENSEMBLE_DIR,
    FEATURES_NAME,
    FOLDS_FILE,
    META_DIR,
    META_MODEL_NAME,
    META_SPEC_NAME,
    OOF_LOGITS_NAME,
    OOF_NAME,
    TEST_LOGITS_NAME,
    fold_dir,
)
from pipeline.config.schema import META_MODEL
from pipeline.data.tables import corrupt, load_input_array, load_input_arrays
from pipeline.io.console import PipelineError
from pipeline.io.files import atomic_path, read_json, write_csv, write_json


def write_logits(cell: Path, rows: np.ndarray, oof: np.ndarray, test: np.ndarray) -> None:
    """A cell's logits: oof.npz (`row`: its rows of folds.csv, `logits`) and test_logits.npy."""
    np.savez(cell / OOF_NAME, row=rows, logits=oof)
    np.save(cell / TEST_LOGITS_NAME, test)


def read_cell(
    model: str, fold: int, num_classes: int | None = None, num_folds_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A cell's validation rows (of folds.csv), their OOF logits, and its test logits.

    Args:
        num_classes: if given, the logits must have this many columns (classes.json's).
        num_folds_rows: if given, every row index must be below it (folds.csv's rows).

    Raises:
        PipelineError: the cell was not trained (run `dvc repro`), or a file is empty, damaged
            or of the wrong shape.
    """
    cell = fold_dir(model, fold)
    stage = "meta" if model == META_MODEL else "train"
    oof_path, test_path = cell / OOF_NAME, cell / TEST_LOGITS_NAME
    saved = load_input_arrays(oof_path, ("row", "logits"), stage)
    rows, logits = saved["row"], saved["logits"]
    test = load_input_array(test_path, stage)
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise corrupt(
            oof_path, f"`row` is {rows.dtype} of shape {rows.shape}, expected 1-D integers", stage
        )
    if logits.ndim != 2 or logits.shape[0] != len(rows):
        raise corrupt(
            oof_path, f"`logits` has shape {logits.shape}, expected ({len(rows)}, classes)", stage
        )
    classes = logits.shape[1] if num_classes is None else num_classes
    if logits.shape[1] != classes:
        raise PipelineError(
            f"{oof_path}: logits for {logits.shape[1]} classes but {CLASSES_FILE} lists "
            f"{classes}; the cell is stale: run `dvc repro {stage}`"
        )
    if test.ndim != 2 or test.shape[1] != classes:
        raise PipelineError(
            f"{test_path}: shape {test.shape}, expected (test images, {classes}); the cell is "
            f"stale or damaged: run `dvc repro {stage}`"
        )
    if len(rows) and (
        rows.min() < 0 or (num_folds_rows is not None and rows.max() >= num_folds_rows)
    ):
        raise PipelineError(
            f"{oof_path}: row indices outside {FOLDS_FILE}'s {num_folds_rows} rows; the cell is "
            f"stale: run `dvc repro {stage}`"
        )
    return rows, logits, test


def save_cell(
    model_name: str,
    fold: int,
    checkpoint: dict,
    valid_rows: np.ndarray,
    oof_logits: np.ndarray,
    test_logits: np.ndarray,
) -> None:
    """Write best.pt, oof.npz and test_logits.npy into the cell's folder, all or nothing."""
    import torch  # here: only stage train saves checkpoints; the stages that read cells skip it

    with atomic_path(fold_dir(model_name, fold)) as out:
        out.mkdir()
        torch.save(checkpoint, out / CHECKPOINT_NAME)
        write_logits(out, valid_rows, oof_logits, test_logits)


def load_ensemble_oof(num_rows: int) -> np.ndarray:
    """The ensemble's OOF logits (the accuracy before the round), checked against folds.csv."""
    path = ENSEMBLE_DIR / OOF_LOGITS_NAME
    oof = load_input_array(path, "ensemble", ndim=2)
    if len(oof) != num_rows:
        raise PipelineError(
            f"{path}: {len(oof)} rows but {FOLDS_FILE} has {num_rows}; the ensemble is stale: "
            "run `dvc repro`"
        )
    return oof


def write_cells(cells: dict, table: pd.DataFrame, model: Any) -> None:
    """models/meta/ in one rename: features.csv, fold<k>/ with its log-probabilities in stage
    train's cell format (oof.npz, test_logits.npy), and the classifier the test logits come from
    (`write_meta_model`).

    Args:
        cells: fold -> (validation rows, OOF log-probs, test log-probs).
        table: the features of every image (split, image, one column per feature).
        model: pipeline.ensemble.meta_model.MetaModel (its `pipeline` and `spec()`).
    """
    with atomic_path(META_DIR) as out:
        out.mkdir()
        write_csv(out / FEATURES_NAME, table)
        for fold, (rows, oof, test) in cells.items():
            cell = out / f"fold{fold}"
            cell.mkdir()
            write_logits(cell, rows, oof, test)
        write_meta_model(out, model.pipeline, model.spec())


def write_meta_model(folder: Path, pipeline: Any, spec: dict) -> None:
    """Stage meta's classifier: model.pkl (the pickled sklearn pipeline, its scaler
    included) and model.json (`spec`: num_classes, groups, columns)."""
    (folder / META_MODEL_NAME).write_bytes(pickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL))
    write_json(folder / META_SPEC_NAME, spec)


def read_meta_model() -> tuple[Any, dict] | None:
    """Stage meta's classifier of the test images and its spec; None if it saved none.

    model.pkl is unpickled: it is the project's own file, as trusted as its code.

    Raises:
        PipelineError: the files are damaged or from an incompatible scikit-learn (refit them).
    """
    model_path, spec_path = META_DIR / META_MODEL_NAME, META_DIR / META_SPEC_NAME
    if not (model_path.is_file() and spec_path.is_file()):
        return None
    try:
        pipeline = pickle.loads(model_path.read_bytes())
        spec = read_json(spec_path)
        spec = {key: spec[key] for key in ("num_classes", "groups", "columns")}
    except Exception as err:  # unpickling raises whatever the pickled classes raise
        raise PipelineError(
            f"{META_DIR}: cannot load stage meta's model ({type(err).__name__}: {err}); "
            "run `dvc repro meta` to refit it"
        ) from None
    return pipeline, spec
