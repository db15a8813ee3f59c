"""Stage `pseudo`: an optional pseudo-label round that fine-tunes every trained fold model.

    python -m pipeline.pseudo

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
labelled per fold and the OOF accuracy before (the ensemble's) and after the round.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from dvclive import Live

from pipeline.cli import PipelineError, run
from pipeline.config import (
    META_MODEL,
    EnsembleParams,
    ModelParams,
    Params,
    PseudoParams,
    load_params,
)
from pipeline.data import load_table
from pipeline.ensemble import accuracy, average, ensemble_members, log_softmax, weigh_models
from pipeline.files import (
    CHECKPOINT_NAME,
    CLASSES_FILE,
    ENSEMBLE_DIR,
    FOLDS_FILE,
    OOF_LOGITS_NAME,
    OOF_NAME,
    PREPARED_TEST,
    PSEUDO_DIR,
    PSEUDO_MANIFEST,
    PSEUDO_METRICS,
    TEST_LOGITS_NAME,
    atomic_path,
    fold_dir,
    read_json,
    seed_everything,
    write_json,
)
from pipeline.models import create_model
from pipeline.predict import load_checkpoint
from pipeline.train import (
    DivergedError,
    Trainer,
    build_loaders,
    configure_determinism,
    create_trainer,
    fit,
    predict,
    resolve_device,
    use_channels_last,
)

# Fold of the pseudo-labelled test rows in the training table: never a validation fold.
PSEUDO_FOLD = -1


def confident_labels(logits: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The rows whose softmax confidence is at least `threshold`, and their argmax classes.

    Args:
        logits: (images, classes) logits, or log-probabilities (softmax leaves them as is).
        threshold: the smallest top-class probability that counts as confident, in (0, 1].

    Returns:
        Row indices in increasing order, and the predicted class of each.
    """
    log_probs = log_softmax(logits.astype(np.float64))
    rows = np.flatnonzero(np.exp(log_probs.max(axis=1)) >= threshold)
    return rows, log_probs[rows].argmax(axis=1)


def fold_test_logits(models: list[str], fold: int, space: str) -> np.ndarray:
    """Fold `fold`'s test logits averaged over `models` in `space` (equal weights)."""
    logits = []
    for model in models:
        path = fold_dir(model, fold) / TEST_LOGITS_NAME
        if not path.is_file():
            raise PipelineError(f"{path}: missing; run `dvc repro` to train {model} fold {fold}")
        logits.append(np.load(path))
    return average(logits, space)


def with_pseudo_rows(
    folds: pd.DataFrame, test: pd.DataFrame, rows: np.ndarray, labels: np.ndarray
) -> pd.DataFrame:
    """folds.csv's table plus the labelled test rows, which every fold trains on."""
    pseudo = test.iloc[rows].assign(target=labels, fold=PSEUDO_FOLD)
    return pd.concat([folds, pseudo], ignore_index=True)


def fine_tune_settings(hp: ModelParams, pseudo: PseudoParams) -> ModelParams:
    """The model's own settings with the round's epochs and scaled learning rates."""
    rates = {"lr": hp.optimizer.lr, "head_lr": hp.optimizer.head_lr}
    scaled = {name: rate * pseudo.lr_scale for name, rate in rates.items() if rate is not None}
    optimizer = hp.optimizer.model_copy(update=scaled)
    return hp.model_copy(update={"epochs": pseudo.epochs, "optimizer": optimizer})


def load_trained(
    model_name: str, fold: int, hp: ModelParams, classes: list[str]
) -> torch.nn.Module:
    """The network of models/<model>/fold<k>/best.pt, checked against the current classes."""
    path = fold_dir(model_name, fold) / CHECKPOINT_NAME
    checkpoint = load_checkpoint(path)
    if checkpoint["classes"] != classes:
        raise PipelineError(
            f"{path} was trained on other classes than {CLASSES_FILE} lists; run `dvc repro`"
        )
    model = create_model(hp.backbone or model_name, len(classes), False, drop_rate=hp.drop_rate)
    model.load_state_dict(checkpoint["state_dict"])
    return model


def fit_in_scratch(
    trainer: Trainer, loaders: dict, hp: ModelParams, valid_targets: np.ndarray, cell: str
) -> dict:
    """`train.fit` with its DVCLive log and resumable checkpoint in a temporary folder.

    The round keeps neither: its results are the cells' logits and results/pseudo/metrics.json.

    Returns:
        `fit`'s best epoch (its `state` holds the weights).
    """
    with tempfile.TemporaryDirectory(prefix="pseudo-") as scratch:
        scratch = Path(scratch)
        fingerprint = {"cell": cell}
        try:
            with Live(str(scratch), dvcyaml=False, save_dvc_exp=False, report=None) as live:
                return fit(
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
    loaders = build_loaders(params, hp, table, test, fold, device)
    valid_targets = table["target"].to_numpy()[table["fold"].to_numpy() == fold]
    model = load_trained(model_name, fold, hp, classes).to(device)
    if use_channels_last(params.train.channels_last, device):
        model = model.to(memory_format=torch.channels_last)
    trainer = create_trainer(model, hp, len(loaders["train"]), device)
    print(
        f"pseudo {model_name} fold {fold}: fine-tuning on {len(loaders['train'].dataset)} "
        f"images, {hp.epochs} epochs at lr {hp.optimizer.lr:.2e} on {device}"
    )
    best = fit_in_scratch(trainer, loaders, hp, valid_targets, f"{model_name} fold {fold}")
    model.load_state_dict(best["state"])
    oof = predict(model, loaders["valid"], trainer.autocast, device, hp.tta, "OOF (TTA)")
    test_logits = predict(model, loaders["test"], trainer.autocast, device, hp.tta, "test (TTA)")
    print(
        f"pseudo {model_name} fold {fold}: best epoch {best['epoch']}, "
        f"OOF accuracy {accuracy(oof, valid_targets):.4f} with TTA"
    )
    return oof, test_logits


def trained_cell(model_name: str, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """A cell's OOF and test logits as stage train wrote them (the round left it unchanged)."""
    cell = fold_dir(model_name, fold)
    with np.load(cell / OOF_NAME) as saved:
        return saved["logits"], np.load(cell / TEST_LOGITS_NAME)


def combine(
    cells: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]],
    rows_by_fold: dict[int, np.ndarray],
    targets: np.ndarray,
    settings: EnsembleParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble OOF and test logits of (model, fold) cells, the way stage ensemble combines them.

    Folds are averaged per model, then models are averaged with equal weights or, with
    `ensemble.weights: fit`, with weights fitted again on these OOF logits.

    Args:
        cells: (model, fold) -> (OOF logits of the fold's rows, test logits).
        rows_by_fold: each fold's validation rows in folds.csv.
        targets: folds.csv's targets; rows of folds not trained stay NaN in the OOF logits.
        settings: params `ensemble`.
    """
    space = settings.average
    oofs, tests = {}, {}
    for (model, fold), (oof, test) in cells.items():
        if model not in oofs:
            oofs[model] = np.full((len(targets), oof.shape[1]), np.nan, dtype=np.float32)
        oofs[model][rows_by_fold[fold]] = oof
        tests.setdefault(model, []).append(test)
    oofs, tests = list(oofs.values()), [average(logits, space) for logits in tests.values()]
    oof, test, _, _ = weigh_models(oofs, tests, targets, space, settings.weights, settings.rounds)
    return oof, test


def round_metrics(
    before: np.ndarray,
    after: np.ndarray,
    targets: np.ndarray,
    rows_by_fold: dict[int, np.ndarray],
    labelled: dict[int, int],
    num_test: int,
) -> dict:
    """Test images labelled and OOF accuracy before and after the round, overall and per fold."""
    covered = np.concatenate(list(rows_by_fold.values()))
    per_fold = {
        str(fold): {
            "pseudo_labelled": labelled[fold],
            "pseudo_share": labelled[fold] / num_test,
            "oof_accuracy_before": accuracy(before[rows], targets[rows]),
            "oof_accuracy": accuracy(after[rows], targets[rows]),
        }
        for fold, rows in rows_by_fold.items()
    }
    return {
        "enabled": True,
        "fine_tuned": any(labelled.values()),
        "test_images": num_test,
        "pseudo_labelled": float(np.mean(list(labelled.values()))),
        "pseudo_share": float(np.mean(list(labelled.values()))) / num_test,
        "oof_accuracy_before": accuracy(before[covered], targets[covered]),
        "oof_accuracy": accuracy(after[covered], targets[covered]),
        "folds": per_fold,
    }


def load_ensemble_oof(num_rows: int) -> np.ndarray:
    """The ensemble's OOF logits (the accuracy before the round), checked against folds.csv."""
    path = ENSEMBLE_DIR / OOF_LOGITS_NAME
    if not path.is_file():
        raise PipelineError(f"{path}: not found; run `dvc repro` to produce it")
    oof = np.load(path)
    if len(oof) != num_rows:
        raise PipelineError(
            f"{path}: {len(oof)} rows but {FOLDS_FILE} has {num_rows}; the ensemble is stale: "
            "run `dvc repro`"
        )
    return oof


def label_folds(params: Params, num_test: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each fold's confidently labelled test rows and their labels (see the module docstring)."""
    models, threshold = list(params.train.models), params.pseudo.threshold
    labels_by_fold = {}
    for fold in params.train.folds:
        logits = fold_test_logits(models, fold, params.ensemble.average)
        rows, labels = labels_by_fold[fold] = confident_labels(logits, threshold)
        print(
            f"pseudo: fold {fold}: {len(rows)}/{num_test} test images labelled at confidence "
            f">= {threshold:g}" + ("" if len(rows) else "; its trained models stand")
        )
    return labels_by_fold


def run_round(params: Params) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
    """Label, fine-tune and combine; returns metrics and the round's OOF and test logits.

    The logits are None when no fold labelled any test image: the ensemble's then stand.
    """
    folds, test = load_table(FOLDS_FILE), load_table(PREPARED_TEST)
    classes = read_json(CLASSES_FILE)
    fold_of_row = folds["fold"].to_numpy()
    rows_by_fold = {fold: np.flatnonzero(fold_of_row == fold) for fold in params.train.folds}
    labels_by_fold = label_folds(params, len(test))
    labelled = {fold: len(rows) for fold, (rows, _) in labels_by_fold.items()}
    before = load_ensemble_oof(len(folds))
    targets = folds["target"].to_numpy()
    if not any(labelled.values()):
        return round_metrics(before, before, targets, rows_by_fold, labelled, len(test)), None, None

    device = resolve_device(params.train.device)
    configure_determinism(params.train.deterministic, device)
    cells = {}
    for fold, (rows, labels) in labels_by_fold.items():
        table = with_pseudo_rows(folds, test, rows, labels)
        for model in ensemble_members(params):
            if model == META_MODEL or not len(rows):  # stage meta's model is not a network
                cells[model, fold] = trained_cell(model, fold)
                continue
            seed_everything(params.base.seed)  # each cell as if it ran on its own
            cells[model, fold] = fine_tune_cell(params, model, fold, table, test, classes, device)
    oof, test_logits = combine(cells, rows_by_fold, targets, params.ensemble)
    return round_metrics(before, oof, targets, rows_by_fold, labelled, len(test)), oof, test_logits


def write_round(manifest: dict, oof: np.ndarray | None, test: np.ndarray | None) -> None:
    """data/pseudo/: the manifest, plus the round's logits when it changed predictions."""
    with atomic_path(PSEUDO_DIR) as out:
        out.mkdir()
        write_json(out / PSEUDO_MANIFEST.name, manifest)
        if oof is not None:
            np.save(out / OOF_LOGITS_NAME, oof)
            np.save(out / TEST_LOGITS_NAME, test)


def main(argv: list[str] | None = None) -> dict:
    params = load_params()
    if not params.pseudo.enabled:
        metrics = {"enabled": False}
        write_round({"enabled": False, "fine_tuned": False}, None, None)
        write_json(PSEUDO_METRICS, metrics)
        print("pseudo: the pseudo-label round is off (pseudo.enabled: false); nothing to do")
        return metrics
    metrics, oof, test = run_round(params)
    manifest = {key: metrics[key] for key in ("enabled", "fine_tuned", "pseudo_labelled")}
    write_round(manifest, oof, test)
    write_json(PSEUDO_METRICS, metrics)
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
