"""Stage meta's classifier, as one sklearn pipeline: the features scaled (and, where chosen, each
feature group weighed alike), then discriminant analysis, a logistic regression, or a weighted
average of their probabilities. pipeline.ensemble.meta_choice chooses among them;
pipeline.ensemble.meta_model fits the chosen one per fold and applies it."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import VotingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from pipeline.ensemble.discriminant import LEDOIT_WOLF, RegularizedDiscriminant
from pipeline.ensemble.features import GROUP_COLUMNS

# The probability of a class a fold's training rows do not contain (and the floor of any).
ABSENT_CLASS_PROB = 1e-6
# Newton steps of the logistic fit: it converges in about 15 on the proxies (lbfgs took 30-300
# iterations and 2.4-32x the time for the same accuracy, BENCHMARKS.md).
LOGISTIC_MAX_ITER = 100


@dataclass(frozen=True)
class ClassifierChoice:
    """What `make_classifier` builds: LDA's weight in the average of probabilities (logistic
    has the rest), its shrinkage, each class's share of its own covariance, and the columns'
    weights after scaling (`groups_alike_weights`; None: every column weighs 1)."""

    lda_weight: float
    shrinkage: float | str = LEDOIT_WOLF
    class_share: float = 0.0
    column_weights: tuple[float, ...] | None = None


class ColumnWeights(TransformerMixin, BaseEstimator):
    """Multiplies each column by its weight."""

    def __init__(self, weights: tuple[float, ...] = ()):
        self.weights = weights

    def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> ColumnWeights:
        self.n_features_in_ = np.shape(x)[1]
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return x * np.asarray(self.weights, dtype=x.dtype)


def groups_alike_weights(columns: list[str]) -> tuple[float, ...] | None:
    """Each column's weight when every feature group (GROUP_COLUMNS; a column of none is a group
    of its own) weighs alike: 1 / sqrt(its group's columns), so that each group adds the same
    to a standardised row's squared length on average (each column has unit variance). Scaled
    to a mean square of 1, so that `meta.C` and the fixed shrinkages keep their strength. None
    where the groups are all one size (the weights would change nothing)."""
    group_of = {column: group for group, names in GROUP_COLUMNS.items() for column in names}
    groups = [group_of.get(column, column) for column in columns]
    sizes = Counter(groups)
    if len(set(sizes.values())) < 2:
        return None
    weights = np.array([sizes[group] for group in groups], dtype=np.float64) ** -0.5
    return tuple((weights / np.sqrt((weights**2).mean())).tolist())


def scaling_steps(column_weights: tuple[float, ...] | None = None) -> list:
    """Standardise each feature after clipping a new row to the training rows' range (an
    artefact far outside it, in a column nearly constant in training, would outweigh every
    other feature in the discriminant, BENCHMARKS.md), then weigh the columns if given. A column
    constant in training is 0 there; a new row gets its excess over that constant, clipped to
    [0, 1]."""
    steps = [MinMaxScaler(clip=True), StandardScaler()]
    return steps if column_weights is None else [*steps, ColumnWeights(column_weights)]


def make_classifier(choice: ClassifierChoice, C: float) -> Pipeline:
    """`scaling_steps`, then discriminant analysis (`RegularizedDiscriminant`, LDA at class
    share 0) with weight `choice.lda_weight` and a logistic regression (L2, inverse strength C)
    with the rest: one of them alone at weight 1 or 0, else the average of their
    probabilities."""
    lda = RegularizedDiscriminant(choice.shrinkage, choice.class_share)
    logistic = LogisticRegression(C=C, solver="newton-cg", max_iter=LOGISTIC_MAX_ITER)
    weight = choice.lda_weight
    if weight in (0.0, 1.0):
        classifier = lda if weight else logistic
    else:
        classifier = VotingClassifier(
            [("lda", lda), ("logistic", logistic)], voting="soft", weights=[weight, 1 - weight]
        )
    return make_pipeline(*scaling_steps(choice.column_weights), classifier)


def fitted(pipeline: Pipeline, x: np.ndarray, y: np.ndarray) -> Pipeline:
    with warnings.catch_warnings():
        # A nearly separable fold may stop at LOGISTIC_MAX_ITER; its solution is still usable.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return pipeline.fit(x, y)


def describe(pipeline: Pipeline) -> str:
    """lda, logistic, or their mix, e.g. 'lda 0.75 + logistic 0.25'; in brackets LDA's
    shrinkage when it is not Ledoit-Wolf's and the classes' share of their own covariance
    when it has one, e.g. 'lda (shrinkage 0.05, class covariance 0.1)'; then ', groups weighed
    alike' where the columns are weighed (`groups_alike_weights`)."""
    last = pipeline.steps[-1][1]
    if isinstance(last, VotingClassifier):
        lda, logistic = last.weights
        note = regularisation_note(last.named_estimators_["lda"])
        name = f"lda {lda:g}{note} + logistic {logistic:g}"
    elif isinstance(last, RegularizedDiscriminant):
        name = f"lda{regularisation_note(last)}"
    else:
        name = "logistic"
    weighed = any(isinstance(step, ColumnWeights) for _, step in pipeline.steps)
    return f"{name}, groups weighed alike" if weighed else name


def regularisation_note(lda: RegularizedDiscriminant) -> str:
    notes = [] if lda.shrinkage == LEDOIT_WOLF else [f"shrinkage {lda.shrinkage:g}"]
    notes += [f"class covariance {lda.class_share:g}"] if lda.class_share else []
    return f" ({', '.join(notes)})" if notes else ""
