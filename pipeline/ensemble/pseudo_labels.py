"""Pseudo-labels: which test images to label, the tables and settings of a fine-tuning round."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config.model_settings import ModelParams
from pipeline.config.schema import PseudoParams
from pipeline.ensemble.scoring import accuracy, log_softmax

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
