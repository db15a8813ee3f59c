"""Stage meta's discriminant analysis: each class a Gaussian around its mean, with a covariance
that mixes the one all classes share (linear discriminant analysis) with the class's own
(Friedman's regularised discriminant analysis).

The shared covariance is sklearn's LinearDiscriminantAnalysis's (solver lsqr): each class's
covariance shrunk, by Ledoit-Wolf's estimate from its own rows or by a fixed share, then
averaged with the classes' shares of the rows as weights. A class's own covariance comes from
a few rows, so it only ever takes a share `class_share` < 1 of the mix; at 0 the model is that
LDA. Leaves of one species can vary in their own way (a lobed oak in the depth of its lobes),
which one shared covariance cannot say (BENCHMARKS.md).

`ClassStatistics` holds what every setting is computed from, so that stage meta's inner
cross-validation (pipeline.ensemble.meta_model) scores every setting from one pass over a fold.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import eigh
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.covariance import ledoit_wolf
from sklearn.preprocessing import StandardScaler

LEDOIT_WOLF = "auto"  # sklearn's name for it


class ClassStatistics:
    """Per class: its rows' mean, its rows centred, its share of the rows; and the shared
    covariance before shrinkage, with Ledoit-Wolf's."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.classes = np.unique(y)
        groups = [x[y == label] for label in self.classes]
        self.means = np.stack([rows.mean(axis=0) for rows in groups])
        self.centred = [rows - rows.mean(axis=0) for rows in groups]
        self.priors = np.array([len(rows) for rows in groups]) / len(x)
        covariances = [rows.T @ rows / len(rows) for rows in self.centred]
        self.empirical = weighted_sum(self.priors, covariances)
        # a fixed shrinkage pulls each class's covariance towards its mean variance
        traces = [np.trace(covariance) for covariance in covariances]
        self.mean_variance = weighted_sum(self.priors, traces) / x.shape[1]
        self.ledoit_wolf = weighted_sum(self.priors, [ledoit_wolf_covariance(r) for r in groups])
        self.whitenings = {}  # shrinkage -> `whitening` of its shared covariance

    def shared_covariance(self, shrinkage: float | str) -> np.ndarray:
        if shrinkage == LEDOIT_WOLF:
            return self.ledoit_wolf
        identity = np.eye(len(self.empirical))
        return (1 - shrinkage) * self.empirical + shrinkage * self.mean_variance * identity

    def log_densities(self, x: np.ndarray, shrinkage: float | str, class_share: float):
        """(rows, classes): each class's log prior plus the log density of each row, up to a
        constant the same for every class."""
        if shrinkage not in self.whitenings:
            self.whitenings[shrinkage] = whitening(self.shared_covariance(shrinkage))
        white = self.whitenings[shrinkage]
        rows, means = x @ white, self.means @ white
        squared = (rows**2).sum(axis=1)[:, None] - 2 * rows @ means.T + (means**2).sum(axis=1)
        out = np.log(self.priors) - 0.5 * squared  # LDA's (rows, classes)
        if class_share > 0:
            for k, (mean, centred) in enumerate(zip(means, self.centred, strict=True)):
                offsets = rows - mean
                out[:, k] += own_covariance_term(centred @ white, offsets, class_share)
        return out


def weighted_sum(weights: np.ndarray, matrices: list) -> np.ndarray:
    return sum(w * m for w, m in zip(weights, matrices, strict=True))


def ledoit_wolf_covariance(rows: np.ndarray) -> np.ndarray:
    """A class's covariance as sklearn's LDA shrinks it: Ledoit-Wolf's on standardised rows."""
    scaler = StandardScaler().fit(rows)
    covariance = ledoit_wolf(scaler.transform(rows))[0]
    return scaler.scale_[:, None] * covariance * scaler.scale_[None, :]


def whitening(covariance: np.ndarray) -> np.ndarray:
    """W such that rows @ W have the identity covariance: W W' is the covariance's inverse, or
    where it is singular (fewer rows than features and no shrinkage) its pseudo-inverse, over
    the directions it spans, as sklearn's least-squares solver has it."""
    values, vectors = eigh(covariance)
    kept = values > values.max() * len(values) * np.finfo(np.float64).eps
    return vectors[:, kept] / np.sqrt(values[kept])


def own_covariance_term(centred: np.ndarray, offsets: np.ndarray, share: float) -> np.ndarray:
    """What a class's own covariance changes in its log density, all whitened by the shared
    covariance S (S = I below): the class's covariance is (1 - share) I + share D'D / n for its
    n centred rows D, whose inverse and determinant the Woodbury identity reduces to n x n
    matrices. Terms the same for every class (the share's own) are left out."""
    scale = share / (len(centred) * (1 - share))
    inner = np.eye(len(centred)) + scale * centred @ centred.T
    projected = centred @ offsets.T  # (n, rows)
    correction = (projected * np.linalg.solve(inner, projected)).sum(axis=0)
    squared = (offsets**2).sum(axis=1)
    # the Mahalanobis distance is (squared - scale * correction) / (1 - share); LDA's
    # squared / 2 is already taken off by the caller
    mahalanobis = (squared - scale * correction) / (1 - share)
    return 0.5 * squared - 0.5 * mahalanobis - 0.5 * np.linalg.slogdet(inner)[1]


class RegularizedDiscriminant(ClassifierMixin, BaseEstimator):
    """sklearn classifier over `ClassStatistics`: LDA at class_share 0 (the same probabilities
    as LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage)), else each class's
    covariance mixed with its own by class_share (0 <= class_share < 1)."""

    def __init__(self, shrinkage: float | str = LEDOIT_WOLF, class_share: float = 0.0):
        self.shrinkage = shrinkage
        self.class_share = class_share

    def fit(self, x: np.ndarray, y: np.ndarray) -> RegularizedDiscriminant:
        if not 0 <= self.class_share < 1:
            raise ValueError(f"class_share must be in [0, 1), not {self.class_share}")
        self.statistics_ = ClassStatistics(np.asarray(x, np.float64), np.asarray(y))
        self.classes_ = self.statistics_.classes
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        scores = self.statistics_.log_densities(
            np.asarray(x, np.float64), self.shrinkage, self.class_share
        )
        return softmax(scores, axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(x).argmax(axis=1)]
