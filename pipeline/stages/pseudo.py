"""Stage `pseudo`: an optional pseudo-label round that fine-tunes every trained fold model.

    python -m pipeline.stages.pseudo

Off by default (`pseudo.enabled: false`): the stage then only writes data/pseudo/manifest.json
saying so, and `submit` uses the ensemble's predictions. When on, for every fold k:
1. Label the test images that fold k's models (train.models, averaged in `ensemble.average`
   space) predict with softmax confidence >= `pseudo.threshold`, with their likeliest class. The
   labels come from fold k's own models, which never saw fold k's validation images: labels
   from the whole ensemble would carry what the other folds' models learnt from those images
   into fold k's model, and the OOF accuracy after the round would flatter it.
2. Fine-tune each models/<model>/fold<k>/best.pt for `pseudo.epochs` on fold k's training
   images plus the labelled test images, with the model's own settings and augmentation and
   its learning rate times `pseudo.lr_scale`; keep the best epoch on validation, like train.
3. Predict fold k's validation images (OOF) and the test set with the model's TTA views.
A fold whose models label no test image keeps its trained predictions, and so does stage meta's
logistic regression (meta.enabled), which is not fine-tuned. The cells are combined
like stage `ensemble` does (over folds, then over models with `ensemble.weights`) and written,
atomically, to data/pseudo/ (manifest.json, oof_logits.npy, test_logits.npy); when no fold
labels any test image the round changes nothing, and the manifest sends `submit` to the
ensemble's predictions. results/pseudo/metrics.json has the number and share of test images
labelled per fold and the OOF accuracy before (the ensemble's) and after the round, under one
key `pseudo` (so `dvc exp show` heads them pseudo.oof_accuracy etc., apart from the ensemble's).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from dvclive import Live

from pipeline.config.params import load_params
from pipeline.config.paths import (
    CLASSES_FILE,
    FOLDS_FILE,
    OOF_LOGITS_NAME,
    PREPARED_TEST,
    PSEUDO_DIR,
    PSEUDO_MANIFEST,
    PSEUDO_METRICS,
    TEST_LOGITS_NAME,
)
from pipeline.config.schema import ModelParams, Params
from pipeline.data.device_data import fold_data
from pipeline.data.tables import check_targets, read_class_list, read_input_table
from pipeline.ensemble.cells import load_ensemble_oof
from pipeline.ensemble.members import CellLogits, combine_cells, ensemble_members, read_cells
from pipeline.ensemble.pseudo_labels import (
    confident_labels,
    fine_tune_settings,
    round_metrics,
    with_pseudo_rows,
)
from pipeline.ensemble.scoring import accuracy, average
from pipeline.io.console import PipelineError, parse_stage_args, run
from pipeline.io.files import atomic_path, write_json
from pipeline.training.cell_trainer import create_cell_trainer
from pipeline.training.checkpoint import load_trained
from pipeline.training.device import configure_determinism, resolve_device, seed_everything
from pipeline.training.engine import Trainer
from pipeline.training.fitting import fit_and_predict
from pipeline.training.running_metrics import DivergedError


def fit_in_scratch(
    trainer: Trainer, loaders: dict, hp: ModelParams, valid_targets: np.ndarray, cell: str
) -> tuple[dict, np.ndarray, np.ndarray]:
    """`fit_and_predict` with its DVCLive log and resumable checkpoint in a temporary folder.

    The round keeps neither: its results are the cells' logits and results/pseudo/metrics.json.

    Returns:
        The best epoch, and its OOF and test logits with the model's TTA views.
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
    params: Params,
    model_name: str,
    fold: int,
    table: pd.DataFrame,
    test: pd.DataFrame,
    classes: list[str],
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Fine-tune one trained cell on `table` (fold rows plus pseudo rows); predict with TTA.

    Returns:
        The cell's logits for fold `fold`'s validation rows (in table order) and for the test
        set (in test.csv order), both averaged over the model's TTA views.
    """
    hp = fine_tune_settings(params.train.for_model(model_name), params.pseudo)
    loaders, _, _ = fold_data(params, hp, table, test, fold, device)
    valid_targets = table["target"].to_numpy()[table["fold"].to_numpy() == fold]
    model = load_trained(model_name, fold, hp, classes)
    trainer = create_cell_trainer(
        model, hp, loaders, device, params.train.channels_last, params.train.compile
    )
    print(
        f"pseudo {model_name} fold {fold}: fine-tuning on {loaders['train'].num_images} "
        f"images, {hp.epochs} epochs at lr {hp.optimizer.lr:.2e} on {device}"
    )
    cell = f"{model_name} fold {fold}"
    best, oof, test_logits = fit_in_scratch(trainer, loaders, hp, valid_targets, cell)
    print(
        f"pseudo {model_name} fold {fold}: best epoch {best['epoch']}, "
        f"OOF accuracy {accuracy(oof, valid_targets):.4f} with TTA"
    )
    return oof, test_logits


def label_folds(
    params: Params, trained: dict[tuple[str, int], CellLogits], num_test: int
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each fold's confidently labelled test rows and their labels (see the module docstring)."""
    networks, threshold = list(params.train.models), params.pseudo.threshold
    labels_by_fold = {}
    for fold in params.train.folds:
        tests = [trained[model, fold][2] for model in networks]
        rows, labels = labels_by_fold[fold] = confident_labels(
            average(tests, params.ensemble.average), threshold
        )
        print(
            f"pseudo: fold {fold}: {len(rows)}/{num_test} test images labelled at confidence "
            f">= {threshold:g}" + ("" if len(rows) else "; its trained models stand")
        )
    return labels_by_fold


def run_round(params: Params) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
    """Label, fine-tune and combine; returns metrics and the round's OOF and test logits.

    The logits are None when no fold labelled any test image: the ensemble's then stand.
    """
    folds = read_input_table(FOLDS_FILE, ("path", "md5", "target", "fold"))
    test = read_input_table(PREPARED_TEST, ("path", "md5"))
    classes = read_class_list(CLASSES_FILE)
    check_targets(folds, len(classes), FOLDS_FILE)
    fold_of_row = folds["fold"].to_numpy()
    rows_by_fold = {fold: np.flatnonzero(fold_of_row == fold) for fold in params.train.folds}
    members = ensemble_members(params)
    trained = read_cells(members, params.train.folds, len(folds), len(classes), len(test))
    labels_by_fold = label_folds(params, trained, len(test))
    labelled = {fold: len(rows) for fold, (rows, _) in labels_by_fold.items()}
    before = load_ensemble_oof(len(folds))
    targets = folds["target"].to_numpy()
    if not any(labelled.values()):
        return round_metrics(before, before, targets, rows_by_fold, labelled, len(test)), None, None

    device = resolve_device(params.train.device)
    configure_determinism(params.train.deterministic, device)
    cells = dict(trained)  # a fold that labels nothing, and stage meta's model, keep theirs
    for fold, (rows, labels) in labels_by_fold.items():
        table = with_pseudo_rows(folds, test, rows, labels)
        for model in params.train.models if len(rows) else []:
            seed_everything(params.base.seed)  # each cell as if it ran on its own
            oof, test_logits = fine_tune_cell(params, model, fold, table, test, classes, device)
            cells[model, fold] = rows_by_fold[fold], oof, test_logits
    settings = params.ensemble
    combined = combine_cells(cells, targets, settings.average, settings.weights, settings.rounds)
    metrics = round_metrics(before, combined.oof, targets, rows_by_fold, labelled, len(test))
    return metrics, combined.oof, combined.test


def write_round(manifest: dict, oof: np.ndarray | None, test: np.ndarray | None) -> None:
    """data/pseudo/: the manifest, plus the round's logits when it changed predictions."""
    with atomic_path(PSEUDO_DIR) as out:
        out.mkdir()
        write_json(out / PSEUDO_MANIFEST.name, manifest)
        if oof is not None:
            np.save(out / OOF_LOGITS_NAME, oof)
            np.save(out / TEST_LOGITS_NAME, test)


def main(argv: list[str] | None = None) -> dict:
    parse_stage_args(argv, __doc__, "python3 -m pipeline.stages.pseudo")
    params = load_params()
    if not params.pseudo.enabled:
        metrics = {"enabled": False}
        write_round({"enabled": False, "fine_tuned": False}, None, None)
        write_json(PSEUDO_METRICS, {"pseudo": metrics})
        print("pseudo: the pseudo-label round is off (pseudo.enabled: false); nothing to do")
        return metrics
    metrics, oof, test = run_round(params)
    manifest = {key: metrics[key] for key in ("enabled", "fine_tuned", "pseudo_labelled")}
    write_round(manifest, oof, test)
    write_json(PSEUDO_METRICS, {"pseudo": metrics})
    if not metrics["fine_tuned"]:
        print(
            f"pseudo: no test image reached pseudo.threshold = {params.pseudo.threshold:g}; "
            f"the ensemble's predictions stand -> {PSEUDO_METRICS}"
        )
    else:
        print(
            f"pseudo: OOF accuracy {metrics['oof_accuracy_before']:.4f} (ensemble) -> "
            f"{metrics['oof_accuracy']:.4f} after the round -> {PSEUDO_METRICS}"
        )
    return metrics


if __name__ == "__main__":
    run(main)
