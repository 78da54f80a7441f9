"""Tolerances of docs/spec.md §11 shared by the tests of whole training runs."""

import numpy as np

KAPPA = 1e4  # §11: a generous amplification of Adam's m_hat / sqrt(v_hat)


def whole_run_bound(n_steps, lr, scale, dtype):
    """§11's bound after ``n_steps`` Adam steps of rate ``lr`` whose per-call differences
    are 2 ulp: ``n lr kappa 2 ulp(scale)`` in ``dtype`` (elementwise for an array)."""
    return n_steps * lr * KAPPA * 2 * np.spacing(np.abs(np.asarray(scale, dtype)))
