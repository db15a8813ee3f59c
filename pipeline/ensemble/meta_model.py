"""Stage meta's model: classifiers on image statistics, one per fold and one on every
labelled row; fit and predict.

Each is the classifier (pipeline.ensemble.meta_classifier) that one cross-validation inside
its training rows chooses (pipeline.ensemble.meta_choice). Stage `meta` fits one per fold on
the other folds' rows for its OOF predictions (`fit_models`), and one on every labelled row for
the test images (`fit_all_rows`): with few images a class a quarter more rows is worth having
(BENCHMARKS.md). It saves the latter through pipeline.ensemble.cells (`write_cells`);
pipeline.ensemble.prediction (behind `leaf predict`) reads it back (`load_model`) and applies it
to the features (pipeline.ensemble.features) of new images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from pipeline.config.schema import MetaParams
from pipeline.ensemble.cells import read_meta_model
from pipeline.ensemble.meta_choice import CLASSIFIER_LDA_WEIGHTS, choose_classifier
from pipeline.ensemble.meta_classifier import (
    ABSENT_CLASS_PROB,
    describe,
    fitted,
    groups_alike_weights,
    make_classifier,
)
from pipeline.io.console import PipelineError, progress

ABSENT_CLASS_LOG_PROB = math.log(ABSENT_CLASS_PROB)
# The features' precision as the classifiers get them. The logistic fit runs in it: float32 takes
# a third of float64's time at Classify Leaves' size, for the same accuracy (BENCHMARKS.md).
# The discriminant computes in float64 whatever it is given.
FEATURE_DTYPE = np.float32


@dataclass(frozen=True)
class MetaModel:
    """A fitted classifier of stage meta (a fold's, or the test images') and what applying it
    needs.

    Attributes:
        pipeline: pipeline.ensemble.meta_classifier's `make_classifier`, fitted on a fold's
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
        x = features[self.columns].to_numpy(FEATURE_DTYPE)
        out = np.full((len(x), self.num_classes), ABSENT_CLASS_LOG_PROB, dtype=np.float32)
        probs = self.pipeline.predict_proba(x)
        out[:, self.pipeline.classes_] = np.log(np.maximum(probs, ABSENT_CLASS_PROB))
        return out

    @property
    def classifier(self) -> str:
        """What was chosen, e.g. 'lda 0.75 (class covariance 0.1) + logistic 0.25'
        (meta_classifier's `describe`)."""
        return describe(self.pipeline)

    def spec(self) -> dict:
        """What is saved beside the pickled pipeline (JSON)."""
        return {"num_classes": self.num_classes, "groups": self.groups, "columns": self.columns}


def fit_fold(
    train_x: pd.DataFrame, train_y: np.ndarray, params: MetaParams, num_classes: int
) -> MetaModel:
    """`meta.classifier` on standardised features, LDA's weight, shrinkage and class share and
    the feature groups' weights chosen by `choose_classifier`, fitted on these rows (a fold's
    training rows, or every labelled row)."""
    x = train_x.to_numpy(FEATURE_DTYPE)
    lda_weights = CLASSIFIER_LDA_WEIGHTS[params.classifier]
    column_weights = groups_alike_weights(list(train_x.columns))
    choice = choose_classifier(x, train_y, lda_weights, params.C, column_weights)
    pipeline = fitted(make_classifier(choice, params.C), x, train_y)
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
    # minutes a fold at Classify Leaves' size on a few cores (BENCHMARKS.md): show the ETA
    return {
        fold: fit_fold(
            features[fold_of_row != fold], targets[fold_of_row != fold], params, num_classes
        )
        for fold in progress(fold_ids, desc="meta: fitting", unit="fold")
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
