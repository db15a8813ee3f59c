"""Stage meta's model: one linear classifier per fold on image statistics; fit and predict.

Stage `meta` fits it (`fit_models`) and saves each fold's model through pipeline.ensemble.cells
(`write_cells`); pipeline.tools.predict reads them back (`read_meta_model`) and applies them to
the features (pipeline.ensemble.features) of new images.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.config.schema import MetaParams
from pipeline.ensemble.cells import read_meta_model
from pipeline.io.console import PipelineError

# The log-probability of a class a fold's training rows do not contain.
ABSENT_CLASS_LOG_PROB = math.log(1e-6)
CLASSIFIERS = ("logistic", "lda")
INNER_SPLITS = 3
# Newton steps of the logistic fit: it converges in about 15 on the proxies (lbfgs took 30-300
# iterations and 8-30x the time for the same accuracy, BENCHMARKS.md).
LOGISTIC_MAX_ITER = 100
# Past this many rows `auto` chooses on a stratified sample of them: at Classify Leaves' size
# (14,700 rows a fold, 176 classes) each inner logistic fit would take minutes on a CPU.
INNER_MAX_ROWS = 4000


@dataclass(frozen=True)
class FoldModel:
    """One fold's fitted classifier and what applying it needs.

    Attributes:
        pipeline: StandardScaler then the classifier (LogisticRegression or
            LinearDiscriminantAnalysis), fitted on the fold's training rows; its `classes_` are
            class indices (the ones those rows contain).
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
        classes = self.pipeline.classes_
        out[:, classes] = np.maximum(self.pipeline.predict_log_proba(x), ABSENT_CLASS_LOG_PROB)
        return out

    @property
    def classifier(self) -> str:
        """logistic or lda: the classifier `meta.classifier` chose for this fold."""
        last = self.pipeline.steps[-1][1]
        return "lda" if isinstance(last, LinearDiscriminantAnalysis) else "logistic"

    def spec(self) -> dict:
        """What is saved beside the pickled pipeline (JSON)."""
        return {"num_classes": self.num_classes, "groups": self.groups, "columns": self.columns}


def make_classifier(name: str, C: float) -> Pipeline:
    """StandardScaler, then `name`: logistic (L2, inverse strength C) or lda (linear
    discriminant analysis with Ledoit-Wolf shrinkage of the shared covariance)."""
    if name == "lda":
        return make_pipeline(
            StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
        )
    logistic = LogisticRegression(C=C, solver="newton-cg", max_iter=LOGISTIC_MAX_ITER)
    return make_pipeline(StandardScaler(), logistic)


def fitted(pipeline: Pipeline, x: np.ndarray, y: np.ndarray) -> Pipeline:
    with warnings.catch_warnings():
        # A nearly separable fold may stop at LOGISTIC_MAX_ITER; its solution is still usable.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return pipeline.fit(x, y)


def smallest_class_size(y: np.ndarray) -> int:
    """The row count of the rarest class present in `y`."""
    return int(np.bincount(y)[np.unique(y)].min())


def choose_classifier(x: np.ndarray, y: np.ndarray, C: float) -> str:
    """`meta.classifier: auto`: whichever of logistic and lda classifies more of these rows right
    in an inner cross-validation on them alone (so a fold's OOF rows never take part; logistic
    on a tie, or when a class has a single row). Past INNER_MAX_ROWS rows the comparison runs
    on a stratified sample of that many."""
    if len(y) > INNER_MAX_ROWS and smallest_class_size(y) >= 2:
        rows, _ = train_test_split(
            np.arange(len(y)), train_size=INNER_MAX_ROWS, stratify=y, random_state=0
        )
        x, y = x[rows], y[rows]
    splits = min(INNER_SPLITS, smallest_class_size(y))
    if splits < 2:
        return "logistic"
    hits = dict.fromkeys(CLASSIFIERS, 0)
    for train, valid in StratifiedKFold(splits, shuffle=True, random_state=0).split(x, y):
        for name in CLASSIFIERS:
            model = fitted(make_classifier(name, C), x[train], y[train])
            hits[name] += int((model.predict(x[valid]) == y[valid]).sum())
    return max(CLASSIFIERS, key=lambda name: (hits[name], name == "logistic"))


def fit_fold(
    train_x: pd.DataFrame, train_y: np.ndarray, params: MetaParams, num_classes: int
) -> FoldModel:
    """`meta.classifier` (auto: `choose_classifier`) on standardised features, fitted on one
    fold's training rows."""
    x = train_x.to_numpy(np.float64)
    name = params.classifier
    if name == "auto":
        name = choose_classifier(x, train_y, params.C)
    pipeline = fitted(make_classifier(name, params.C), x, train_y)
    return FoldModel(pipeline, num_classes, list(params.features), list(train_x.columns))


def fit_models(
    features: pd.DataFrame,
    folds: pd.DataFrame,
    fold_ids: list[int],
    params: MetaParams,
    num_classes: int,
) -> dict[int, FoldModel]:
    """fold -> its classifier, fitted on the rows of the other folds (as the networks train)."""
    targets, fold_of_row = folds["target"].to_numpy(), folds["fold"].to_numpy()
    return {
        fold: fit_fold(
            features[fold_of_row != fold], targets[fold_of_row != fold], params, num_classes
        )
        for fold in fold_ids
    }


def fold_logits(
    models: dict[int, FoldModel],
    features: pd.DataFrame,
    folds: pd.DataFrame,
    test_features: pd.DataFrame,
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """fold -> (its validation rows, their OOF log-probs, the test log-probs)."""
    fold_of_row = folds["fold"].to_numpy()
    cells = {}
    for fold, model in models.items():
        rows = np.flatnonzero(fold_of_row == fold)
        cells[fold] = (rows, model.log_probs(features.iloc[rows]), model.log_probs(test_features))
    return cells


def fit_folds(
    features: pd.DataFrame,
    folds: pd.DataFrame,
    test_features: pd.DataFrame,
    fold_ids: list[int],
    params: MetaParams,
    num_classes: int,
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`fit_models`, then `fold_logits`: fold -> (validation rows, OOF and test log-probs)."""
    models = fit_models(features, folds, fold_ids, params, num_classes)
    return fold_logits(models, features, folds, test_features)


def load_fold_model(fold: int) -> FoldModel | None:
    """Fold `fold`'s classifier as stage meta saved it (models/meta/fold<k>/); None if absent."""
    saved = read_meta_model(fold)
    return None if saved is None else FoldModel(saved[0], **saved[1])
