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
cross-validation (pipeline.ensemble.meta_choice) scores every setting from one pass over a fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.linalg import eigh
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.covariance import ledoit_wolf
from sklearn.preprocessing import StandardScaler

LEDOIT_WOLF = "auto"  # sklearn's name for it


class ClassStatistics:
    """Per class: its rows' mean, its rows centred, its share of the rows; and the shared
    covariance before shrinkage, with Ledoit-Wolf's. `whitened` makes one shrinkage's model of
    them."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        x, y = np.asarray(x, np.float64), np.asarray(y)
        self.classes = np.unique(y)
        groups = [x[y == label] for label in self.classes]
        self.means = np.stack([rows.mean(axis=0) for rows in groups])
        self.centred = [rows - rows.mean(axis=0) for rows in groups]
        self.priors = np.array([len(rows) for rows in groups]) / len(x)
        # the classes' covariances weighted by their priors: all centred rows' covariance
        every = np.concatenate(self.centred)
        self.empirical = every.T @ every / len(x)
        # a fixed shrinkage pulls each class's covariance towards its mean variance
        self.mean_variance = (every**2).sum() / every.size
        self.ledoit_wolf = sum(
            prior * ledoit_wolf_covariance(rows)
            for prior, rows in zip(self.priors, groups, strict=True)
        )

    @cached_property
    def empirical_eigen(self) -> tuple[np.ndarray, np.ndarray]:
        return symmetric_eigen(self.empirical)

    def shared_whitening(self, shrinkage: float | str) -> np.ndarray:
        """`whitening` of `shrinkage`'s shared covariance. A fixed shrinkage s,
        (1 - s) E + s m I, moves only the eigenvalues of the empirical E, so every fixed
        shrinkage is whitened from E's one eigendecomposition (stage meta's inner
        cross-validation asks for five of them on each split)."""
        if shrinkage == LEDOIT_WOLF:
            return whitening(*symmetric_eigen(self.ledoit_wolf))
        values, vectors = self.empirical_eigen
        return whitening((1 - shrinkage) * values + shrinkage * self.mean_variance, vectors)

    def whitened(self, shrinkage: float | str, with_own: bool) -> WhitenedClasses:
        """The model of `shrinkage`'s shared covariance; with each class's own directions
        (`own_directions`) if it is to take a share of its own covariance."""
        white = self.shared_whitening(shrinkage)
        own = tuple(own_directions(centred @ white) for centred in self.centred if with_own)
        return WhitenedClasses(white, self.means @ white, np.log(self.priors), own)


@dataclass(frozen=True)
class WhitenedClasses:
    """One shrinkage's model, in the coordinates where the shared covariance is the identity
    (`white`): each class's mean and log prior, and its own directions (`own_directions`,
    none where no class share is wanted). It keeps no training rows."""

    white: np.ndarray
    means: np.ndarray
    log_priors: np.ndarray
    own: tuple[tuple[np.ndarray, np.ndarray], ...]

    def log_densities(self, x: np.ndarray, class_shares: tuple[float, ...]) -> list[np.ndarray]:
        """Per class share: (rows, classes), each class's log prior plus the log density of
        each row, up to a constant the same for every class."""
        rows = np.asarray(x, np.float64) @ self.white
        means = self.means
        squared = (rows**2).sum(axis=1)[:, None] - 2 * rows @ means.T + (means**2).sum(axis=1)
        lda = self.log_priors - 0.5 * squared
        outs = [lda.copy() for _ in class_shares]
        if not any(class_shares):
            return outs
        if not self.own:  # else every share would silently score as LDA
            raise ValueError("a class share needs the model made with the classes' own directions")
        for k, (spreads, directions) in enumerate(self.own):
            projected = directions @ rows.T - (directions @ means[k])[:, None]
            for out, share in zip(outs, class_shares, strict=True):
                if share:
                    out[:, k] += own_covariance_term(spreads, projected, squared[:, k], share)
        return outs


def ledoit_wolf_covariance(rows: np.ndarray) -> np.ndarray:
    """A class's covariance as sklearn's LDA shrinks it: Ledoit-Wolf's on standardised rows.
    A class of one row has none (sklearn's would be zeros, with a warning)."""
    if len(rows) < 2:
        return np.zeros((rows.shape[1], rows.shape[1]))
    scaler = StandardScaler().fit(rows)
    covariance = ledoit_wolf(scaler.transform(rows))[0]
    return scaler.scale_[:, None] * covariance * scaler.scale_[None, :]


def symmetric_eigen(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scipy's `eigh`. Its default LAPACK driver (evr) can stop with "Internal Error" on a
    matrix with hundreds of equal eigenvalues, as a shrunk covariance of a few rows has (seen on
    one fold of a 25-image set, in its last bits); divide and conquer (evd) then takes over."""
    try:
        return eigh(matrix)
    except np.linalg.LinAlgError:
        return eigh(matrix, driver="evd")


def whitening(values: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """From a covariance's eigenvalues and eigenvectors, W such that rows @ W have the identity
    covariance: W W' is the covariance's inverse, or where it is singular (fewer rows than
    features and no shrinkage) its pseudo-inverse, over the directions it spans, as sklearn's
    least-squares solver has it."""
    kept = values > values.max() * len(values) * np.finfo(np.float64).eps
    return vectors[:, kept] / np.sqrt(values[kept])


def own_directions(centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A class's own covariance D'D / n from its n centred rows D (whitened), in the
    eigenvectors Q of D D' (which has D'D's nonzero eigenvalues): those eigenvalues, and the
    directions Q' D, (n, features). Cheap with a few rows a class."""
    spreads, vectors = symmetric_eigen(centred @ centred.T)  # D D' shares D'D's nonzero spectrum
    return np.maximum(spreads, 0.0), vectors.T @ centred


def own_covariance_term(
    spreads: np.ndarray, projected: np.ndarray, squared: np.ndarray, share: float
) -> np.ndarray:
    """What a share of its own covariance changes in a class's log density, given its
    `own_directions`' spreads, the rows' offsets from the class mean along its directions
    (`projected`, (n, rows)) and their squared whitened distances to it (the shared covariance
    is the identity here). The class's covariance is (1 - share) I + share D'D / n;
    the Woodbury identity reduces its inverse and determinant to the n directions. Terms the
    same for every class (the share's own) are left out."""
    scale = share / (len(spreads) * (1 - share))
    stretch = 1 + scale * spreads
    correction = ((projected**2) / stretch[:, None]).sum(axis=0)
    mahalanobis = (squared - scale * correction) / (1 - share)
    # LDA's -squared / 2 is already in the caller's scores
    return 0.5 * squared - 0.5 * mahalanobis - 0.5 * np.log(stretch).sum()


class RegularizedDiscriminant(ClassifierMixin, BaseEstimator):
    """sklearn classifier over `ClassStatistics`: LDA at class_share 0 (the same probabilities
    as LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage)), else each class's
    covariance mixed with its own by class_share (0 <= class_share < 1). Fitted, it keeps one
    `WhitenedClasses` (`model_`), which predicting does not change."""

    def __init__(self, shrinkage: float | str = LEDOIT_WOLF, class_share: float = 0.0):
        self.shrinkage = shrinkage
        self.class_share = class_share

    def fit(self, x: np.ndarray, y: np.ndarray) -> RegularizedDiscriminant:
        if not 0 <= self.class_share < 1:
            raise ValueError(f"class_share must be in [0, 1), not {self.class_share}")
        statistics = ClassStatistics(x, y)
        self.classes_ = statistics.classes
        self.model_ = statistics.whitened(self.shrinkage, with_own=self.class_share > 0)
        return self

    def __setstate__(self, state: dict) -> None:
        # A model.pkl saved before `model_` (it kept `statistics_`) would unpickle, then fail
        # to predict; refusing it here makes loading it say "refit" (cells.read_meta_model).
        if "statistics_" in state:
            raise ValueError("fitted by an earlier version of RegularizedDiscriminant")
        super().__setstate__(state)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        scores = self.model_.log_densities(x, (self.class_share,))[0]
        return softmax(scores, axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(x).argmax(axis=1)]
