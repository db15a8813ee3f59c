"""Stage meta's discriminant analysis: LDA at class share 0, Gaussian densities otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import multivariate_normal
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from pipeline.ensemble.discriminant import LEDOIT_WOLF, RegularizedDiscriminant


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
