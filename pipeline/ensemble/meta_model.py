"""Stage meta's model: linear classifiers on image statistics, one per fold and one on every
labelled row; fit and predict.

The classifier is linear discriminant analysis, a logistic regression, or a weighted average of
their probabilities (`meta.classifier: auto` weighs them per fold, `choose_lda_weight`).
Stage `meta` fits one per fold on the other folds' rows for its OOF predictions (`fit_models`),
and one on every labelled row for the test images (`fit_all_rows`): with few images a class a
quarter more rows is worth having (BENCHMARKS.md). It saves the latter through
pipeline.ensemble.cells (`write_cells`); pipeline.tools.predict reads it back (`load_model`) and
applies it to the features (pipeline.ensemble.features) of new images.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import VotingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.config.schema import MetaParams
from pipeline.ensemble.cells import read_meta_model
from pipeline.ensemble.scoring import selection_score
from pipeline.io.console import PipelineError

# The probability of a class a fold's training rows do not contain (and the floor of any).
ABSENT_CLASS_PROB = 1e-6
ABSENT_CLASS_LOG_PROB = math.log(ABSENT_CLASS_PROB)
# `meta.classifier`: LDA's share of the averaged probabilities (logistic has the rest); `auto`
# cross-validates each of LDA_WEIGHTS inside the fold's training rows.
FIXED_LDA_WEIGHT = {"lda": 1.0, "logistic": 0.0}
LDA_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
INNER_SPLITS = 3
# Newton steps of the logistic fit: it converges in about 15 on the proxies (lbfgs took 30-300
# iterations and 2.4-32x the time for the same accuracy, BENCHMARKS.md).
LOGISTIC_MAX_ITER = 100
# Past this many rows `auto` chooses on a stratified sample of them: the choice needs no more,
# and at Classify Leaves' size (14,700 rows a fold, 176 classes) every inner fit costs seconds.
INNER_MAX_ROWS = 4000


@dataclass(frozen=True)
class MetaModel:
    """A fitted classifier of stage meta (a fold's, or the test images') and what applying it
    needs.

    Attributes:
        pipeline: StandardScaler then the classifier (`make_classifier`), fitted on a fold's
            training rows or on every labelled row; its `classes_` are class indices (the ones
            those rows contain).
        num_classes: the number of classes (data/prepared/classes.json) the logits cover.
        groups: `meta.features`, the feature groups it was fitted on.
        columns: the feature columns, in the order the pipeline expects them.
    """

    pipeline: Pipeline
    num_classes: int
    groups: list[str]
    columns: list[str]

    def log_probs(self, features: pd.DataFrame) -> np.ndarray:
        """(rows, num_classes) float32 log-probabilities of a table of features."""
        missing = [column for column in self.columns if column not in features.columns]
        if missing:
            raise PipelineError(
                f"stage meta's model needs the feature(s) {', '.join(missing)}; "
                "run `dvc repro meta` to refit it with this version's features"
            )
        x = features[self.columns].to_numpy(np.float64)
        out = np.full((len(x), self.num_classes), ABSENT_CLASS_LOG_PROB, dtype=np.float32)
        probs = self.pipeline.predict_proba(x)
        out[:, self.pipeline.classes_] = np.log(np.maximum(probs, ABSENT_CLASS_PROB))
        return out

    @property
    def classifier(self) -> str:
        """lda, logistic, or their mix, e.g. 'lda 0.75 + logistic 0.25'."""
        last = self.pipeline.steps[-1][1]
        if isinstance(last, VotingClassifier):
            lda, logistic = last.weights
            return f"lda {lda:g} + logistic {logistic:g}"
        return "lda" if isinstance(last, LinearDiscriminantAnalysis) else "logistic"

    def spec(self) -> dict:
        """What is saved beside the pickled pipeline (JSON)."""
        return {"num_classes": self.num_classes, "groups": self.groups, "columns": self.columns}


def make_classifier(lda_weight: float, C: float) -> Pipeline:
    """StandardScaler, then linear discriminant analysis (Ledoit-Wolf shrinkage of the shared
    covariance) with weight `lda_weight` and a logistic regression (L2, inverse strength C)
    with the rest: one of them alone at weight 1 or 0, else the average of their probabilities."""
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    logistic = LogisticRegression(C=C, solver="newton-cg", max_iter=LOGISTIC_MAX_ITER)
    if lda_weight in (0.0, 1.0):
        return make_pipeline(StandardScaler(), lda if lda_weight else logistic)
    mix = VotingClassifier(
        [("lda", lda), ("logistic", logistic)], voting="soft", weights=[lda_weight, 1 - lda_weight]
    )
    return make_pipeline(StandardScaler(), mix)


def fitted(pipeline: Pipeline, x: np.ndarray, y: np.ndarray) -> Pipeline:
    with warnings.catch_warnings():
        # A nearly separable fold may stop at LOGISTIC_MAX_ITER; its solution is still usable.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return pipeline.fit(x, y)


def smallest_class_size(y: np.ndarray) -> int:
    """The row count of the rarest class present in `y`."""
    return int(np.bincount(y)[np.unique(y)].min())


def choose_lda_weight(x: np.ndarray, y: np.ndarray, C: float) -> float:
    """`meta.classifier: auto`: the weight of LDA_WEIGHTS whose average of lda's and logistic's
    probabilities classifies most of these rows right in an inner cross-validation on them
    alone (so a fold's OOF rows never take part), the lower log-loss breaking a tie
    (`scoring.selection_score`, as the ensemble's weights are chosen); 0 (logistic) when a
    class has a single row. Past INNER_MAX_ROWS rows the comparison runs on a stratified
    sample of that many."""
    if len(y) > INNER_MAX_ROWS and smallest_class_size(y) >= 2:
        rows, _ = train_test_split(
            np.arange(len(y)), train_size=INNER_MAX_ROWS, stratify=y, random_state=0
        )
        x, y = x[rows], y[rows]
    splits = min(INNER_SPLITS, smallest_class_size(y))
    if splits < 2:
        return FIXED_LDA_WEIGHT["logistic"]
    classes = np.unique(y)  # every inner training split holds each of them
    lda_probs, logistic_probs = np.zeros((2, len(y), len(classes)))
    for train, valid in StratifiedKFold(splits, shuffle=True, random_state=0).split(x, y):
        for weight, probs in ((1.0, lda_probs), (0.0, logistic_probs)):
            model = fitted(make_classifier(weight, C), x[train], y[train])
            probs[valid] = model.predict_proba(x[valid])
    truth = np.searchsorted(classes, y)

    def score(weight: float) -> tuple[float, float]:
        probs = weight * lda_probs + (1 - weight) * logistic_probs
        return selection_score(np.log(np.maximum(probs, ABSENT_CLASS_PROB)), truth)

    return max(LDA_WEIGHTS, key=score)


def fit_fold(
    train_x: pd.DataFrame, train_y: np.ndarray, params: MetaParams, num_classes: int
) -> MetaModel:
    """`meta.classifier` (auto: `choose_lda_weight`) on standardised features, fitted on these
    rows (a fold's training rows, or every labelled row)."""
    x = train_x.to_numpy(np.float64)
    if params.classifier == "auto":
        lda_weight = choose_lda_weight(x, train_y, params.C)
    else:
        lda_weight = FIXED_LDA_WEIGHT[params.classifier]
    pipeline = fitted(make_classifier(lda_weight, params.C), x, train_y)
    return MetaModel(pipeline, num_classes, list(params.features), list(train_x.columns))


def fit_models(
    features: pd.DataFrame,
    folds: pd.DataFrame,
    fold_ids: list[int],
    params: MetaParams,
    num_classes: int,
) -> dict[int, MetaModel]:
    """fold -> its classifier, fitted on the rows of the other folds (as the networks train)."""
    targets, fold_of_row = folds["target"].to_numpy(), folds["fold"].to_numpy()
    return {
        fold: fit_fold(
            features[fold_of_row != fold], targets[fold_of_row != fold], params, num_classes
        )
        for fold in fold_ids
    }


def fit_all_rows(
    features: pd.DataFrame, folds: pd.DataFrame, params: MetaParams, num_classes: int
) -> MetaModel:
    """The classifier of the test images: `fit_fold` on every labelled row."""
    return fit_fold(features, folds["target"].to_numpy(), params, num_classes)


def fold_logits(
    models: dict[int, MetaModel],
    all_rows: MetaModel,
    features: pd.DataFrame,
    folds: pd.DataFrame,
    test_features: pd.DataFrame,
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """fold -> (its validation rows, their OOF log-probs by its model, the test log-probs by
    `all_rows`, the same in every fold)."""
    fold_of_row = folds["fold"].to_numpy()
    test = all_rows.log_probs(test_features)
    cells = {}
    for fold, model in models.items():
        rows = np.flatnonzero(fold_of_row == fold)
        cells[fold] = (rows, model.log_probs(features.iloc[rows]), test)
    return cells


def load_model() -> MetaModel | None:
    """Stage meta's classifier of the test images as it saved it (models/meta/); None if absent."""
    saved = read_meta_model()
    return None if saved is None else MetaModel(saved[0], **saved[1])
