import numpy as np
import pytest

from fastnn._metrics import regression_scores

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_matches_scikit_learn_on_ordinary_data():
    rs = np.random.RandomState(0)
    y, pred = rs.randn(40, 3), rs.randn(40, 3)
    r2, rmse = regression_scores(y, pred)
    np.testing.assert_allclose(
        r2, sklearn_metrics.r2_score(y, pred, multioutput="raw_values"), rtol=1e-13
    )
    np.testing.assert_allclose(rmse, np.sqrt(((y - pred) ** 2).mean(axis=0)), rtol=1e-14)


def test_targets_near_the_float64_limit_give_finite_scores_without_warnings():
    y = np.array([[0.0], [1e300], [-1e300]])
    pred = np.array([[0.0], [0.0], [0.0]])
    r2, rmse = regression_scores(y, pred)  # filterwarnings=error: an overflow would raise
    # sum of squared residuals equals the total sum of squares (the mean is 0): R^2 = 0
    assert r2[0] == pytest.approx(0.0, abs=1e-15)
    assert rmse[0] == pytest.approx(1e300 * np.sqrt(2 / 3), rel=1e-15)


def test_constant_targets():
    y = np.full((5, 1), 2.0)
    assert regression_scores(y, y)[0][0] == 1.0
    assert regression_scores(y, y + 1)[0][0] == 0.0
