"""Regression scores that stay finite for targets of any magnitude.

The squares of values near 1e300 overflow float64; R^2 does not depend on the unit and
RMSE scales with it, so when a sum of squares would overflow both are computed in units
of the largest magnitude. Ordinary data is computed exactly as the textbook formulas.
"""

import numpy as np


def _sums_of_squares(y, pred):
    with np.errstate(over="ignore", invalid="ignore"):
        resid = ((y - pred) ** 2).sum(axis=0)
        total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    return resid, total


def regression_scores(y, pred):
    """R^2 and RMSE of each column of 2-D ``y`` (n, k) against ``pred`` (n, k).

    R^2 = 1 - sum (y - pred)^2 / sum (y - mean y)^2 (1 when both sums are 0, 0 when only
    the total is); RMSE = sqrt(mean (y - pred)^2). Returns two float64 arrays of shape (k,).
    """
    y = np.asarray(y, np.float64)
    pred = np.asarray(pred, np.float64)
    resid, total = _sums_of_squares(y, pred)
    unit = np.ones(y.shape[1])
    if not (np.isfinite(resid).all() and np.isfinite(total).all()):
        unit = np.maximum(np.abs(y).max(axis=0), np.abs(pred).max(axis=0))
        unit[~(unit > 0) | ~np.isfinite(unit)] = 1.0
        resid, total = _sums_of_squares(y / unit, pred / unit)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r2 = np.where(
            total > 0, 1 - resid / np.where(total > 0, total, 1), np.where(resid == 0, 1.0, 0.0)
        )
        rmse = np.sqrt(resid / y.shape[0]) * unit
    return r2, rmse
