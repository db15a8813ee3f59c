"""Stage meta's discriminant analysis: LDA at class share 0, Gaussian densities otherwise."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy.linalg import eigh
from scipy.special import softmax
from scipy.stats import multivariate_normal
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from pipeline.ensemble import discriminant
from pipeline.ensemble.discriminant import LEDOIT_WOLF, ClassStatistics, RegularizedDiscriminant


def classes(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """5 classes of 4 to 12 rows in 6 dimensions, one of the dimensions constant."""
    y = np.repeat(np.arange(5), [4, 6, 8, 10, 12])
    x = rng.normal(size=(len(y), 6)) + rng.normal(size=(5, 6))[y] * 2
    x[:, 5] = 1.0
    return x, y


@pytest.mark.parametrize("shrinkage", [LEDOIT_WOLF, 0.1])
def test_with_no_class_share_it_is_sklearns_lda(shrinkage):
    x, y = classes(np.random.default_rng(0))
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage).fit(x, y)
    ours = RegularizedDiscriminant(shrinkage).fit(x, y)
    np.testing.assert_allclose(ours.predict_proba(x), lda.predict_proba(x), atol=1e-10)
    assert (ours.predict(x) == lda.predict(x)).all()


def test_a_class_share_mixes_each_class_covariance_with_its_own():
    x, y = classes(np.random.default_rng(1))
    model = RegularizedDiscriminant(0.1, class_share=0.3).fit(x, y)
    shared = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.1).fit(x, y).covariance_
    log_densities = []
    for label in range(5):
        rows = x[y == label]
        own = np.cov(rows.T, bias=True)
        gaussian = multivariate_normal(rows.mean(axis=0), 0.7 * shared + 0.3 * own)
        log_densities.append(np.log(np.mean(y == label)) + gaussian.logpdf(x))
    expected = softmax(np.stack(log_densities, axis=1), axis=1)
    np.testing.assert_allclose(model.predict_proba(x), expected, atol=1e-8)


def test_a_class_of_one_row_and_a_bad_share():
    x, y = np.array([[0.0], [0.2], [5.0], [5.2], [9.0]]), np.array([0, 0, 1, 1, 2])
    probs = RegularizedDiscriminant(class_share=0.2).fit(x, y).predict_proba(x)
    assert np.isfinite(probs).all() and (probs.argmax(axis=1) == y).all()
    with pytest.raises(ValueError, match=r"class_share must be in \[0, 1\), not 1"):
        RegularizedDiscriminant(class_share=1.0).fit(x, y)


@pytest.mark.parametrize("class_share", [0.0, 0.2])
def test_predicting_leaves_the_fitted_model_as_it_is(class_share):
    x, y = classes(np.random.default_rng(2))
    model = RegularizedDiscriminant(class_share=class_share).fit(x, y)
    before = pickle.dumps(model)
    model.predict_proba(x)
    assert pickle.dumps(model) == before


def test_without_a_class_share_the_saved_model_keeps_no_training_rows():
    """At Classify Leaves' size the rows would be tens of MB in models/meta/model.pkl."""
    rng = np.random.default_rng(3)
    sizes = {}
    for rows_a_class in (4, 400):
        y = np.repeat(np.arange(5), rows_a_class)
        x = rng.normal(size=(len(y), 6)) + np.arange(5)[y, None]
        sizes[rows_a_class] = len(pickle.dumps(RegularizedDiscriminant().fit(x, y)))
    assert sizes[400] == sizes[4]
    with_share = RegularizedDiscriminant(class_share=0.1).fit(x, y)
    assert len(pickle.dumps(with_share)) > 2 * sizes[400]  # its own directions: 400 rows a class


def test_a_model_saved_by_the_earlier_code_is_refused_when_loaded():
    earlier = RegularizedDiscriminant()
    earlier.__dict__.update(statistics_={}, classes_=np.arange(2))  # what it used to keep
    with pytest.raises(ValueError, match="fitted by an earlier version"):
        pickle.loads(pickle.dumps(earlier))


def test_a_class_share_asked_of_a_model_without_the_own_directions_is_refused():
    x, y = classes(np.random.default_rng(4))
    shared_only = ClassStatistics(x, y).whitened(0.1, with_own=False)
    assert len(shared_only.log_densities(x, (0.0,))) == 1
    with pytest.raises(ValueError, match="needs the model made with the classes' own directions"):
        shared_only.log_densities(x, (0.0, 0.1))


def test_an_eigen_driver_failure_falls_back_to_divide_and_conquer(monkeypatch):
    # LAPACK's evr fails on some matrices with many equal eigenvalues ("Internal Error"), in
    # their last bits and per BLAS build, so the failure is simulated here.
    x, y = classes(np.random.default_rng(2))
    expected = RegularizedDiscriminant(0.1, class_share=0.3).fit(x, y).predict_proba(x)
    drivers = []

    def evr_fails(matrix, driver=None):
        drivers.append(driver)
        if driver is None:
            raise np.linalg.LinAlgError("Internal Error.")
        return eigh(matrix, driver=driver)

    monkeypatch.setattr(discriminant, "eigh", evr_fails)
    model = RegularizedDiscriminant(0.1, class_share=0.3).fit(x, y)
    np.testing.assert_allclose(model.predict_proba(x), expected, atol=1e-10)
    assert "evd" in drivers


def test_every_fixed_shrinkage_is_whitened_from_one_eigendecomposition(monkeypatch):
    """Stage meta's inner cross-validation asks one split's statistics for five fixed
    shrinkages; each is (1 - s) E + s m I, so E's eigenvectors serve them all."""
    x, y = classes(np.random.default_rng(5))
    statistics = ClassStatistics(x, y)
    sizes = []

    def counted(matrix, driver=None):
        sizes.append(len(matrix))
        return eigh(matrix, driver=driver)

    monkeypatch.setattr(discriminant, "eigh", counted)
    for shrinkage in (0.02, 0.1, 0.4):
        white = statistics.whitened(shrinkage, with_own=False).white
        shared = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage).fit(x, y)
        np.testing.assert_allclose(white @ white.T, np.linalg.inv(shared.covariance_), atol=1e-8)
    assert sizes == [x.shape[1]]
