"""Stage meta's choices per fold, made by one cross-validation inside the fold's training rows:
LDA's weight against logistic regression (`meta.classifier: auto`), the discriminant's
shrinkage of its shared covariance (Ledoit-Wolf's estimate or a few fixed values), each class's
share of its own covariance, and whether every feature group weighs alike
(pipeline.ensemble.meta_classifier builds what is chosen)."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline

from pipeline.ensemble.discriminant import LEDOIT_WOLF, ClassStatistics
from pipeline.ensemble.meta_classifier import (
    ABSENT_CLASS_PROB,
    ClassifierChoice,
    fitted,
    make_classifier,
    scaling_steps,
)
from pipeline.ensemble.scoring import selection_score

# `meta.classifier`: LDA's share of the averaged probabilities (logistic has the rest); `auto`
# cross-validates each of its weights inside the fold's training rows.
CLASSIFIER_LDA_WEIGHTS = {"lda": (1.0,), "logistic": (0.0,), "auto": (0.0, 0.25, 0.5, 0.75, 1.0)}
# LDA's shrinkage of each class's covariance, cross-validated with the weight: Ledoit-Wolf's
# estimate from the class's own rows, or a fixed one. Ledoit-Wolf suits a few rows a class in
# many dimensions; with more rows a class it can shrink far too much (stage meta alone on a
# synthetic set of 40 species: 0.854 against 0.922, BENCHMARKS.md).
LDA_SHRINKAGES = (LEDOIT_WOLF, 0.02, 0.05, 0.1, 0.2, 0.4)
# Each class's share of its own covariance, cross-validated with them: 0 is LDA. Real leaves
# take some (the silhouettes 0.05-0.2), synthetic ones, drawn with one variation for every
# species, mostly none (BENCHMARKS.md).
CLASS_SHARES = (0.0, 0.05, 0.1, 0.2)
# Inner folds of that cross-validation: with 5 its models see 4/5 of the rows, near the rows a
# class the chosen model is fitted on, which matters for the shrinkage (with 3 the silhouettes'
# model of the test images took 0.1 on one inner split of four, where Ledoit-Wolf's is 0.8
# points better on every outer split, BENCHMARKS.md).
INNER_SPLITS = 5
# Past this many rows `auto` chooses on a stratified sample of them: the choice needs no more,
# and at Classify Leaves' size (14,700 rows a fold, 176 classes) every inner fit costs seconds.
INNER_MAX_ROWS = 4000


def inner_choice_rows(y: np.ndarray) -> tuple[np.ndarray, int]:
    """The rows `choose_classifier` compares on, and its inner folds: INNER_SPLITS (or the median
    class's row count) over the classes with as many rows; a rarer class sits the choice out,
    unless that would leave one class (two classes of 8 and 3 rows: 3 folds over both)."""
    classes, sizes = np.unique(y, return_counts=True)
    splits = int(min(INNER_SPLITS, np.median(sizes)))
    if np.count_nonzero(sizes >= splits) < 2:
        splits = int(np.sort(sizes)[-2]) if len(sizes) > 1 else 1
    return np.flatnonzero(np.isin(y, classes[sizes >= splits])), splits


def choose_classifier(
    x: np.ndarray,
    y: np.ndarray,
    lda_weights: tuple[float, ...],
    C: float,
    column_weights: tuple[float, ...] | None = None,
) -> ClassifierChoice:
    """Of `lda_weights`, LDA_SHRINKAGES, CLASS_SHARES and the columns as they are or weighed
    by `column_weights` (when given), the choice whose average of lda's and logistic's
    probabilities classifies most of these rows right in an inner cross-validation on them
    alone (so a fold's OOF rows never take part), the lower log-loss breaking a tie
    (`scoring.selection_score`, as the ensemble's weights are chosen). Logistic alone needs no
    choice; a median class of one row allows none: logistic for `auto`, LDA with Ledoit-Wolf's
    shrinkage for `lda`. Past INNER_MAX_ROWS rows the comparison runs on a stratified sample."""
    if lda_weights == (0.0,):
        return ClassifierChoice(0.0)
    rows, splits = inner_choice_rows(y)
    if splits >= 2 and len(rows) > INNER_MAX_ROWS:
        rows, _ = train_test_split(
            rows, train_size=INNER_MAX_ROWS, stratify=y[rows], random_state=0
        )
        kept, splits = inner_choice_rows(y[rows])
        rows = rows[kept]
    if splits < 2:
        return ClassifierChoice(min(lda_weights))
    x, y = x[rows], y[rows]
    with_logistic = min(lda_weights) < 1.0
    truth = np.searchsorted(np.unique(y), y)
    weightings = [None] if column_weights is None else [None, column_weights]
    probabilities = {
        weights: inner_probabilities(x, y, splits, with_logistic, C, weights)
        for weights in weightings
    }

    def score(choice: ClassifierChoice) -> tuple[float, float]:
        lda_probs, logistic_probs = probabilities[choice.column_weights]
        weight = choice.lda_weight
        probs = (1 - weight) * logistic_probs
        if weight:
            probs = probs + weight * lda_probs[choice.shrinkage, choice.class_share]
        return selection_score(np.log(np.maximum(probs, ABSENT_CLASS_PROB)), truth)

    # the simplest first (the columns as they are, logistic, Ledoit-Wolf's, no class's own
    # covariance): the first of equal scores wins
    settings = [(shrinkage, share) for share in CLASS_SHARES for shrinkage in LDA_SHRINKAGES]
    choices = []
    for weights in weightings:
        choices += [ClassifierChoice(0.0, column_weights=weights)] if 0.0 in lda_weights else []
        choices += [
            ClassifierChoice(w, *setting, column_weights=weights)
            for setting in settings
            for w in lda_weights
            if w
        ]
    return max(choices, key=score)


def inner_probabilities(
    x: np.ndarray,
    y: np.ndarray,
    splits: int,
    with_logistic: bool,
    C: float,
    column_weights: tuple[float, ...] | None,
) -> tuple[dict[tuple, np.ndarray], np.ndarray]:
    """Each row's class probabilities from the one of `splits` inner folds that left it out,
    its columns weighed by `column_weights`: by LDA with each shrinkage of LDA_SHRINKAGES and
    class share of CLASS_SHARES, all from one fit's class statistics, and by logistic (zeros
    without it)."""
    classes = np.unique(y)  # every inner training split holds each of them
    logistic_probs = np.zeros((len(y), len(classes)))
    lda_probs = {}
    logistic = ClassifierChoice(0.0, column_weights=column_weights)
    for train, valid in StratifiedKFold(splits, shuffle=True, random_state=0).split(x, y):
        scaler = make_pipeline(*scaling_steps(column_weights)).fit(x[train])
        statistics = ClassStatistics(scaler.transform(x[train]), y[train])
        scaled = scaler.transform(x[valid])
        for shrinkage in LDA_SHRINKAGES:
            whitened = statistics.whitened(shrinkage, with_own=True)
            scores = whitened.log_densities(scaled, CLASS_SHARES)
            for share, share_scores in zip(CLASS_SHARES, scores, strict=True):
                probs = lda_probs.setdefault((shrinkage, share), np.zeros_like(logistic_probs))
                probs[valid] = softmax(share_scores, axis=1)
        if with_logistic:
            model = fitted(make_classifier(logistic, C), x[train], y[train])
            logistic_probs[valid] = model.predict_proba(x[valid])
    return lda_probs, logistic_probs
