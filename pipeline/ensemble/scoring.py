"""Scoring: averaging logits, accuracy, ensemble weight fitting and the OOF reports."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from pipeline.config.paths import CLASSES_FILE
from pipeline.io.console import PipelineError


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def average(
    logits: list[np.ndarray], space: str, weights: Sequence[float] | None = None
) -> np.ndarray:
    """Weighted mean of same-shaped logit arrays, in logit space or probability space.

    Args:
        logits: one array per model (or fold, or view).
        space: `logits` averages raw logits; `probs` averages softmax probabilities and returns
            their log.
        weights: one non-negative weight per array, summing to 1; None weighs them alike.
    """
    stacked = np.stack(logits)
    if weights is None:
        weights = np.full(len(logits), 1 / len(logits))
    weights = np.asarray(weights, dtype=stacked.dtype).reshape(-1, *[1] * (stacked.ndim - 1))
    if space == "probs":
        # log(sum(w * softmax)) as a log-sum-exp over models, so a probability that underflows in
        # every model stays a large negative number instead of log(0) = -inf. A weight of 0
        # adds log(0) = -inf: that model drops out of the sum.
        with np.errstate(divide="ignore"):
            log_probs = log_softmax(stacked) + np.log(weights)
        top = log_probs.max(axis=0)
        return top + np.log(np.exp(log_probs - top).sum(axis=0))
    return (stacked * weights).sum(axis=0)


def accuracy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Share of rows whose highest logit is the target."""
    return float((logits.argmax(axis=1) == targets).mean())


def selection_score(logits: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """(accuracy, minus the log loss): higher is better, the log loss breaking accuracy ties."""
    log_loss = -log_softmax(logits)[np.arange(len(targets)), targets].mean()
    return accuracy(logits, targets), -float(log_loss)


def fit_weights(oofs: list[np.ndarray], targets: np.ndarray, space: str, rounds: int) -> np.ndarray:
    """Model weights by greedy ensemble selection with replacement (Caruana et al., 2004).

    The bag starts as one copy of every model (the equal-weight ensemble). Each round adds
    another copy of the model that makes the bag's average score best (accuracy, then log
    loss), even when that lowers the score, so the search walks across plateaus; the best bag
    seen wins. So the result is never below the equal-weight ensemble on accuracy, and a model
    that helps more is picked more often.

    Args:
        oofs: each model's OOF logits, (images, classes), the same images in the same order,
            none missing.
        targets: each image's class index.
        space: `ensemble.average`, the space the bag is averaged in.
        rounds: how many copies are added.

    Returns:
        One weight per model (its share of the bag): non-negative, summing to 1.
    """
    equal = np.full(len(oofs), 1 / len(oofs))
    if len(oofs) == 1:
        return equal
    # Running sums of logits or of probabilities, so a round costs one pass per model. float32
    # halves the time; a copy count is a python int so that it does not promote to float64.
    parts = [oof.astype(np.float32) for oof in oofs]
    if space == "probs":
        parts = [np.exp(log_softmax(part)) for part in parts]

    def score(total: np.ndarray, copies: int) -> tuple[float, float]:
        if space == "logits":
            return selection_score(total / copies, targets)
        with np.errstate(divide="ignore"):  # a class no model gives any probability: log(0)
            return selection_score(np.log(total) - math.log(copies), targets)

    counts = np.ones(len(parts), dtype=int)
    total = sum(parts[1:], parts[0])
    best, best_counts = score(total, len(parts)), counts.copy()
    for _ in range(rounds):
        scores = [score(total + part, int(counts.sum()) + 1) for part in parts]
        pick = max(range(len(parts)), key=scores.__getitem__)
        total = total + parts[pick]
        counts[pick] += 1
        if scores[pick] > best:
            best, best_counts = scores[pick], counts.copy()
    fitted = best_counts / best_counts.sum()
    # The running sums round differently from `average`: an exact argmax tie may then break
    # the other way, which must not make the fitted weights lose to the equal ones.
    if accuracy(average(oofs, space, fitted), targets) < accuracy(average(oofs, space), targets):
        return equal
    return fitted


def weigh_models(
    oofs: list[np.ndarray],
    tests: list[np.ndarray],
    targets: np.ndarray,
    space: str,
    weighting: str = "equal",
    rounds: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Average per-model OOF and test logits with equal or OOF-fitted weights.

    Args:
        oofs: one (images, classes) OOF array per model, NaN where a model has no prediction.
        tests: one test logit array per model.
        targets: the true class of every OOF row.
        space: `ensemble.average`.
        weighting: `equal` weighs the models alike; `fit` uses `fit_weights`.
        rounds: `fit_weights`' most rounds.

    Returns:
        The ensemble's OOF and test logits, the weights, and the mask of the rows that every
        model predicted (the only ones used for fitting and scoring).
    """
    scored = ~np.isnan(np.stack(oofs)).any(axis=(0, 2))
    weights = np.full(len(oofs), 1 / len(oofs))
    if weighting == "fit":
        weights = fit_weights([oof[scored] for oof in oofs], targets[scored], space, rounds)
    return average(oofs, space, weights), average(tests, space, weights), weights, scored


def cross_fitted_accuracy(
    oofs: list[np.ndarray],
    targets: np.ndarray,
    fold_of_row: np.ndarray,
    space: str,
    rounds: int,
) -> float:
    """OOF accuracy of fitted weights when each fold is scored with weights fitted on the others.

    Weights fitted on all the OOF logits and then scored on them are chosen and judged on the
    same images, which flatters them; this is the honest estimate of what fitting buys.

    Args:
        oofs: each model's OOF logits, the same rows in the same order, none missing.
        targets: each row's class index.
        fold_of_row: each row's fold.
        space, rounds: as for `fit_weights`.
    """
    predicted = np.empty(len(targets), dtype=int)
    for fold in np.unique(fold_of_row):
        held_out = fold_of_row == fold
        weights = fit_weights([oof[~held_out] for oof in oofs], targets[~held_out], space, rounds)
        predicted[held_out] = average([oof[held_out] for oof in oofs], space, weights).argmax(1)
    return float((predicted == targets).mean())


def honest_accuracy(
    oofs: list[np.ndarray],
    targets: np.ndarray,
    fold_of_row: np.ndarray,
    space: str,
    weighting: str,
    rounds: int,
) -> float:
    """The ensemble's OOF accuracy with weights it could not have tuned on the rows it scores:
    cross-fitted when `weighting` is `fit` and there are several folds, else equal weights."""
    if weighting == "fit" and len(np.unique(fold_of_row)) > 1:
        return cross_fitted_accuracy(oofs, targets, fold_of_row, space, rounds)
    return accuracy(average(oofs, space), targets)


def member_contributions(
    oofs: list[np.ndarray], honest: Callable[[list[np.ndarray]], float], whole: float
) -> list[float]:
    """What each member adds: `whole`, the ensemble's honest accuracy (`honest(oofs)`, e.g.
    `honest_accuracy`), minus that of the ensemble without it (negative: the ensemble is better
    off without it). Needs two members or more."""
    return [whole - honest(oofs[:i] + oofs[i + 1 :]) for i in range(len(oofs))]


def right_alone(oofs: list[np.ndarray], targets: np.ndarray) -> list[int]:
    """Per member, the images it classifies right and every other member wrong: about the
    most a weight on it can win (an average can also be right where every member is wrong, but
    rarely), so a member right alone on few images adds little however it is weighted. Needs
    two members or more."""
    right = np.stack([o.argmax(axis=1) == targets for o in oofs])
    others_right = right.sum(axis=0) - right
    return [int((r & (o == 0)).sum()) for r, o in zip(right, others_right, strict=True)]


def confusion_rows(oof: np.ndarray, targets: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """The true and predicted class name of every scored OOF image.

    Args:
        oof: ensemble OOF logits, (images, classes); rows of untrained folds are NaN.
        targets: each image's class index into `classes`.
        classes: class names, in logit order.

    Returns:
        Columns `actual` and `predicted`, one row per image with logits, in `oof` row order.
    """
    if oof.shape[1] != len(classes):
        raise PipelineError(
            f"the logits have {oof.shape[1]} classes but {CLASSES_FILE} lists {len(classes)}; "
            "run `dvc repro` to retrain on the current data"
        )
    scored = ~np.isnan(oof).any(axis=1)
    names = np.asarray(classes, dtype=object)
    return pd.DataFrame(
        {"actual": names[targets[scored]], "predicted": names[oof[scored].argmax(axis=1)]}
    )


def per_class_accuracy(confusion: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """OOF accuracy (the share predicted right) and image count per class, in class order.

    Args:
        confusion: `confusion_rows()`'s table.
        classes: class names; a class without scored images has no accuracy and is left out.

    Returns:
        Columns `class`, `accuracy` and `count`.
    """
    right = (confusion["actual"] == confusion["predicted"]).groupby(confusion["actual"])
    table = pd.DataFrame({"accuracy": right.mean().round(6), "count": right.size()})
    table = table.reindex([name for name in classes if name in table.index])
    return table.rename_axis("class").reset_index()
