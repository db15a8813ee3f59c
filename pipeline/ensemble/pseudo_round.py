"""A pseudo-label round: label each fold's confident test images, fine-tune the fold's trained
networks on them, and combine the cells as stage ensemble does (the why: stage pseudo).

Composed of what stage train uses to fit a cell (`fold_data`, `create_cell_trainer`,
`fit_and_predict`) and what stage ensemble uses to read and combine cells (`read_cells`,
`combine_cells`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from dvclive import Live

from pipeline.config.model_settings import ModelParams
from pipeline.config.paths import CACHE_ORIENTATION, CLASSES_FILE, FOLDS_FILE, PREPARED_TEST
from pipeline.config.schema import Params
from pipeline.data.device_data import fold_data
from pipeline.data.loaders import fold_tables
from pipeline.data.orientation import orient_settings, read_orientation
from pipeline.data.settings import DataSettings, data_settings
from pipeline.data.tables import check_targets, read_class_list, read_input_table
from pipeline.ensemble.cells import load_ensemble_oof
from pipeline.ensemble.members import Cells, combine_cells, ensemble_members, read_cells
from pipeline.ensemble.pseudo_labels import (
    confident_labels,
    fine_tune_settings,
    round_metrics,
    with_pseudo_rows,
)
from pipeline.ensemble.scoring import accuracy, average
from pipeline.io.console import PipelineError
from pipeline.training.cell_trainer import create_cell_trainer
from pipeline.training.checkpoint import load_trained
from pipeline.training.device import configure_determinism, resolve_device, seed_everything
from pipeline.training.engine import Trainer
from pipeline.training.fitting import fit_and_predict
from pipeline.training.running_metrics import DivergedError


def label_folds(
    trained: Cells,
    networks: list[str],
    fold_ids: list[int],
    space: str,
    threshold: float,
    num_test: int,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each fold's confidently labelled test rows and their labels.

    Args:
        trained: the trained cells (`read_cells`).
        networks: train.models, whose test logits of the fold are averaged alike.
        fold_ids: train.folds.
        space: `ensemble.average`.
        threshold: `pseudo.threshold`.
        num_test: the number of test images.
    """
    labels_by_fold = {}
    for fold in fold_ids:
        tests = [trained[model, fold][2] for model in networks]
        rows, labels = labels_by_fold[fold] = confident_labels(average(tests, space), threshold)
        print(
            f"pseudo: fold {fold}: {len(rows)}/{num_test} test images labelled at confidence "
            f">= {threshold:g}" + ("" if len(rows) else "; its trained models stand")
        )
    return labels_by_fold


def fit_in_scratch(
    trainer: Trainer, loaders: dict, hp: ModelParams, valid_targets: np.ndarray, cell: str
) -> tuple[dict, np.ndarray, np.ndarray]:
    """`fit_and_predict` with its DVCLive log and resumable checkpoint in a temporary folder.

    The round keeps neither: its results are the cells' logits and results/pseudo/metrics.json.

    Returns:
        The kept epoch, and its OOF and test logits with the model's TTA views.
    """
    with tempfile.TemporaryDirectory(prefix="pseudo-") as scratch:
        scratch = Path(scratch)
        fingerprint = {"cell": cell}
        try:
            with Live(str(scratch), dvcyaml=False, save_dvc_exp=False, report=None) as live:
                return fit_and_predict(
                    trainer, loaders, hp, valid_targets, live, scratch / "last.pt", fingerprint
                )
        except DivergedError as err:
            raise PipelineError(
                f"fine-tuning {cell} diverged ({err}); lower pseudo.lr_scale"
            ) from None


def fine_tune_cell(
    model_name: str,
    fold: int,
    hp: ModelParams,
    tables: dict[str, pd.DataFrame],
    valid_targets: np.ndarray,
    classes: list[str],
    data: DataSettings,
    compile: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Fine-tune one trained cell on the fold's batches (pseudo rows included); predict with TTA.

    The batches are built here and let go on return, so a cell's images on the GPU are freed
    before the next cell's are loaded.

    Args:
        model_name, fold: the cell, whose best.pt is the starting point.
        hp: its fine-tuning settings (`fine_tune_settings`).
        tables: the fold's tables, pseudo rows included (`fold_tables`).
        valid_targets: the targets of the fold's validation rows.
        classes: the class names the cell must have been trained on.
        data: the run's data settings: the device it trains on, its memory format.
        compile: `train.compile`.

    Returns:
        The cell's logits for the fold's validation rows and for the test set (in test.csv
        order), both averaged over the model's TTA views.
    """
    loaders, _, _ = fold_data(hp, tables, data)
    model = load_trained(model_name, fold, hp, classes)
    device = data.device
    trainer = create_cell_trainer(model, hp, loaders, device, data.channels_last, compile)
    print(
        f"pseudo {model_name} fold {fold}: fine-tuning on {loaders['train'].num_images} "
        f"images, {hp.epochs} epochs at lr {hp.optimizer.lr:.2e} on {device}"
    )
    cell = f"{model_name} fold {fold}"
    best, oof, test_logits = fit_in_scratch(trainer, loaders, hp, valid_targets, cell)
    print(
        f"pseudo {model_name} fold {fold}: kept epoch {best['epoch']}, "
        f"OOF accuracy {accuracy(oof, valid_targets):.4f} with TTA"
    )
    return oof, test_logits


def fine_tune_folds(
    params: Params,
    trained: Cells,
    labels_by_fold: dict[int, tuple[np.ndarray, np.ndarray]],
    folds: pd.DataFrame,
    test: pd.DataFrame,
    classes: list[str],
) -> Cells:
    """The trained cells with each labelling fold's networks fine-tuned on its pseudo rows.

    A fold that labels nothing keeps its trained cells, and so does stage meta's model, which
    is not a network.
    """
    device = resolve_device(params.train.device)
    configure_determinism(params.train.deterministic, device)
    data = data_settings(params, device)
    orientation = read_orientation(CACHE_ORIENTATION)  # as stage train oriented each network
    cells = dict(trained)
    for fold, (rows, labels) in labels_by_fold.items():
        if not len(rows):
            continue
        table = with_pseudo_rows(folds, test, rows, labels)
        valid = table["fold"].to_numpy() == fold  # the pseudo rows' fold is never one
        tables = fold_tables(table, test, fold)
        for model in params.train.models:
            seed_everything(params.base.seed)  # each cell as if it ran on its own
            hp, _ = orient_settings(params.train.for_model(model), orientation)
            hp = fine_tune_settings(hp, params.pseudo)
            oof, test_logits = fine_tune_cell(
                model,
                fold,
                hp,
                tables,
                table["target"].to_numpy()[valid],
                classes,
                data,
                params.train.compile,
            )
            cells[model, fold] = np.flatnonzero(valid), oof, test_logits
    return cells


def run_round(params: Params) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
    """Label, fine-tune and combine; returns metrics and the round's OOF and test logits.

    The logits are None when no fold labelled any test image: the ensemble's then stand.
    """
    folds = read_input_table(FOLDS_FILE, ("path", "md5", "target", "fold"))
    test = read_input_table(PREPARED_TEST, ("path", "md5"))
    classes = read_class_list(CLASSES_FILE)
    check_targets(folds, len(classes), FOLDS_FILE)
    fold_ids, space = params.train.folds, params.ensemble.average
    trained = read_cells(ensemble_members(params), fold_ids, len(folds), len(classes), len(test))
    threshold = params.pseudo.threshold
    labels_by_fold = label_folds(
        trained, list(params.train.models), fold_ids, space, threshold, len(test)
    )
    labelled = {fold: len(rows) for fold, (rows, _) in labels_by_fold.items()}
    rows_by_fold = {fold: np.flatnonzero(folds["fold"].to_numpy() == fold) for fold in fold_ids}
    before = load_ensemble_oof(len(folds))  # stage ensemble's, the accuracy before the round
    targets = folds["target"].to_numpy()
    if not any(labelled.values()):
        return round_metrics(before, before, targets, rows_by_fold, labelled, len(test)), None, None

    cells = fine_tune_folds(params, trained, labels_by_fold, folds, test, classes)
    settings = params.ensemble
    combined = combine_cells(cells, targets, space, settings.weights, settings.rounds)
    metrics = round_metrics(before, combined.oof, targets, rows_by_fold, labelled, len(test))
    return metrics, combined.oof, combined.test
