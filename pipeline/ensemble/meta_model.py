"""Stage meta's model: one logistic regression per fold on image statistics; fit and predict.

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
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.config.schema import MetaParams
from pipeline.ensemble.cells import read_meta_model
from pipeline.io.console import PipelineError

# The log-probability of a class a fold's training rows do not contain.
ABSENT_CLASS_LOG_PROB = math.log(1e-6)


@dataclass(frozen=True)
class FoldModel:
    """One fold's fitted regression and what applying it needs.

    Attributes:
        pipeline: StandardScaler then LogisticRegression, fitted on the fold's training rows;
            its `classes_` are class indices (the ones those rows contain).
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

    def spec(self) -> dict:
        """What is saved beside the pickled pipeline (JSON)."""
        return {"num_classes": self.num_classes, "groups": self.groups, "columns": self.columns}


def fit_fold(
    train_x: pd.DataFrame, train_y: np.ndarray, C: float, num_classes: int, groups: list[str]
) -> FoldModel:
    """A logistic regression on standardised features, fitted on one fold's training rows."""
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))
    with warnings.catch_warnings():
        # lbfgs stops at max_iter on nearly separable folds; its solution is still usable.
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline.fit(train_x.to_numpy(np.float64), train_y)
    return FoldModel(pipeline, num_classes, list(groups), list(train_x.columns))


def fit_models(
    features: pd.DataFrame,
    folds: pd.DataFrame,
    fold_ids: list[int],
    params: MetaParams,
    num_classes: int,
) -> dict[int, FoldModel]:
    """fold -> its regression, fitted on the rows of the other folds (as the networks train)."""
    targets, fold_of_row = folds["target"].to_numpy(), folds["fold"].to_numpy()
    return {
        fold: fit_fold(
            features[fold_of_row != fold],
            targets[fold_of_row != fold],
            params.C,
            num_classes,
            params.features,
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
    """Fold `fold`'s regression as stage meta saved it (models/meta/fold<k>/); None if absent."""
    saved = read_meta_model(fold)
    return None if saved is None else FoldModel(saved[0], **saved[1])
