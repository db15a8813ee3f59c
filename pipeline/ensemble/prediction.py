"""Predicting new images with the submission's ensemble: its cells, members and weights.

Every cell of train.models x train.folds with a best.pt is rebuilt from its checkpoint
(`checkpoint.load_trained`) and sees the images as training's test loader does; with
`meta.enabled`, stage meta's classifier (fitted on every labelled row) predicts from the images'
statistics. The logits are averaged like stage ensemble: over a model's folds, then over models
with the weights it chose (data/ensemble/weights.json).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.config.paths import (
    CHECKPOINT_NAME,
    CLASSES_FILE,
    ENSEMBLE_WEIGHTS,
    META_DIR,
    fold_dir,
)
from pipeline.config.schema import META_MODEL, Params
from pipeline.data.loaders import DeviceLoader, LeafDataset, create_loader, loader_kwargs
from pipeline.data.settings import DataSettings, data_settings
from pipeline.data.transforms import build_transforms
from pipeline.ensemble import meta_model
from pipeline.ensemble.features import feature_table
from pipeline.ensemble.scoring import average
from pipeline.io.console import PipelineError, warn
from pipeline.io.files import read_json
from pipeline.training.checkpoint import load_checkpoint, load_trained, trained_settings
from pipeline.training.device import amp_context, resolve_device
from pipeline.training.tta import predict_logits


@dataclass(frozen=True)
class Cell:
    """One trained (model, fold) checkpoint."""

    model: str
    fold: int
    path: Path


def find_cells(params: Params) -> list[Cell]:
    """The trained cells of train.models × train.folds; warn about missing ones on stderr."""
    cells, missing = [], []
    for model in params.train.models:
        for fold in params.train.folds:
            path = fold_dir(model, fold) / CHECKPOINT_NAME
            (cells if path.is_file() else missing).append(Cell(model, fold, path))
    for cell in missing:
        warn(f"{cell.path} not found; skipping {cell.model} fold {cell.fold}")
    if not cells:
        raise PipelineError(
            "no trained model: none of "
            + ", ".join(str(cell.path) for cell in missing)
            + " exists; run `dvc repro` first"
        )
    return cells


def find_meta(params: Params, num_classes: int) -> meta_model.MetaModel | None:
    """Stage meta's classifier of the test images when meta.enabled (else None); None with a
    warning when it saved none (a models/meta/ from an older version: `dvc repro meta`)."""
    if not params.meta.enabled:
        return None
    model = meta_model.load_model()
    if model is None:
        warn(
            f"{META_DIR} has no saved classifier; skipping stage meta "
            "(run `dvc repro meta` to save it)"
        )
    elif model.num_classes != num_classes:
        raise PipelineError(
            f"{META_DIR}: its classifier was fitted on other classes than the networks; run "
            "`dvc repro` to refit stage meta on the current data"
        )
    return model


@torch.no_grad()
def predict_cell(
    cell: Cell,
    checkpoint: dict,
    paths: list[Path],
    classes: list[str],
    data: DataSettings,
) -> np.ndarray:
    """One checkpoint's logits for `paths`, averaged over its TTA views.

    The network is rebuilt and fed as stage train's test loader feeds it (`build_loaders`):
    the checkpoint's own settings, uint8 images normalised on the device by a DeviceLoader,
    in batches of twice its batch size.

    Args:
        cell: the (model, fold) cell.
        checkpoint: its best.pt, as stage `train` saves it (`load_checkpoint`).
        paths: readable image files.
        classes: the class names the network must have been trained on.
        data: the run's data settings (no cache): the device the model runs on, the
            loader's seed and workers, the memory format.

    Returns:
        Logits, (len(paths), number of classes), in `paths` order.
    """
    hp = trained_settings(checkpoint, cell.path)
    device = data.device
    model = load_trained(cell.model, cell.fold, hp, classes, checkpoint).to(device).eval()
    if data.channels_last:
        model = model.to(memory_format=torch.channels_last)
    dataset = LeafDataset(
        [str(p) for p in paths],
        None,
        build_transforms(hp, train=False, normalize=False),
        hp.image_size,
        seed=data.seed,
        crop_to_leaf=hp.crop_to_leaf,
    )
    loader = create_loader(
        dataset,
        2 * hp.batch_size,
        train=False,
        seed=data.seed,
        **loader_kwargs(data.loader, device, data.workers[0]),
    )
    autocast, _ = amp_context(device, hp.amp)
    desc = f"{cell.model} fold {cell.fold}"
    return predict_logits(
        model, DeviceLoader(loader, device, data.channels_last), autocast, hp.tta, desc
    )


def predict_images(
    paths: list[Path], cells: list[Cell], params: Params
) -> tuple[np.ndarray, list[str]]:
    """Ensemble logits for `paths` over `cells` (and stage meta's classifier, when meta.enabled),
    and the class names they index.

    Checkpoints are loaded one at a time, so memory holds one model whatever the ensemble size.
    """
    data = data_settings(params, resolve_device(params.train.device), cached=False)
    space = params.ensemble.average
    classes = read_json(CLASSES_FILE) if CLASSES_FILE.is_file() else None
    by_model: dict[str, list[np.ndarray]] = {}
    for cell in cells:
        checkpoint = load_checkpoint(cell.path)
        if classes is None:
            classes = checkpoint.get("classes")
        logits = predict_cell(cell, checkpoint, paths, classes, data)
        by_model.setdefault(cell.model, []).append(logits)
    meta = find_meta(params, len(classes))
    if meta is not None:
        print(
            f"predict: and stage meta's classifier on {', '.join(meta.groups)} features",
            file=sys.stderr,
        )
        features = feature_table(pd.Series([str(p) for p in paths]), meta.groups)
        by_model[META_MODEL] = [meta.log_probs(features)]
    model_logits = {model: average(logits, space) for model, logits in by_model.items()}
    weights = ensemble_weights(list(model_logits))
    return average(list(model_logits.values()), space, weights), classes


def ensemble_weights(models: list[str]) -> list[float] | None:
    """The model weights stage `ensemble` chose (data/ensemble/weights.json), renormalised
    over `models`.

    Returns:
        None (weigh the models alike) when weights.json is missing, lacks one of `models`, or
        gives them all weight 0.
    """
    if not ENSEMBLE_WEIGHTS.is_file():
        return None
    chosen = read_json(ENSEMBLE_WEIGHTS)
    if not all(model in chosen for model in models):
        return None
    weights = np.array([chosen[model] for model in models], dtype=np.float64)
    return (weights / weights.sum()).tolist() if weights.sum() > 0 else None
