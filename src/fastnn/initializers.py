"""Weight initialisation (docs/spec.md §8): Xavier/Glorot, He/Kaiming and LeCun.

Weights are drawn in float64 and rounded once to the model's dtype, so a float32 and
a float64 model built from the same seed start from the same numbers (up to that
rounding). Biases are always zero.

>>> import numpy as np
>>> w = np.empty((3, 2), np.float32)
>>> _ = initialize(w, "he", "normal", np.random.default_rng(0))
>>> w.dtype, w.shape
(dtype('float32'), (3, 2))
"""

from __future__ import annotations

import math

import numpy as np

from . import _validation as v
from . import registry

__all__ = ["INITIALIZERS", "DISTRIBUTIONS", "default_init", "init_scale", "initialize"]

# The variances (docs/spec.md §8): Xavier 2/(in+out), He 2/in, LeCun 1/in; the uniform
# bound sqrt(3 var) gives sqrt(6/(in+out)), sqrt(6/in) and sqrt(3/in).
INITIALIZERS = ("xavier", "glorot", "he", "kaiming", "lecun")
DISTRIBUTIONS = ("normal", "uniform")


def default_init(activation: str) -> str:
    """The initialiser ``init="auto"`` uses for a layer: its activation's registry row
    says ("he" for the relu family, gelu, silu and mish; "lecun" for selu, which
    needs it to self-normalise; "xavier" for the others)."""
    return registry.activation(activation).init


def init_scale(init: str, distribution: str, fan_in: int, fan_out: int) -> float:
    """The standard deviation (normal) or the bound b of U(-b, b) (uniform).

    Xavier: var = 2 / (fan_in + fan_out); He: var = 2 / fan_in; LeCun: var = 1 / fan_in;
    the uniform bound is sqrt(3 var).
    """
    v.choice(init, "init", INITIALIZERS)
    v.choice(distribution, "init_distribution", DISTRIBUTIONS)
    fan_in = v.integer(fan_in, "fan_in", low=1)
    fan_out = v.integer(fan_out, "fan_out", low=1)
    if init in ("he", "kaiming"):
        var = 2.0 / fan_in
    elif init == "lecun":
        var = 1.0 / fan_in
    else:
        var = 2.0 / (fan_in + fan_out)
    return math.sqrt(var) if distribution == "normal" else math.sqrt(3.0 * var)


def initialize(w: np.ndarray, init: str, distribution: str, rng: np.random.Generator) -> np.ndarray:
    """Fill the weight matrix ``w`` (fan_in, fan_out) in place and return it.

    Parameters
    ----------
    w : ndarray of float32 or float64, shape (fan_in, fan_out)
        Written in place (it is usually a view into a model's flat buffer).
    init : {"xavier", "glorot", "he", "kaiming", "lecun"}
    distribution : {"normal", "uniform"}
    rng : numpy.random.Generator
        The only source of randomness; the same generator state gives the same weights.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not isinstance(w, np.ndarray) or w.ndim != 2:
        raise ValueError("w must be a 2-D NumPy array (fan_in, fan_out)")
    fan_in, fan_out = w.shape
    scale = init_scale(init, distribution, fan_in, fan_out)
    if distribution == "normal":
        w[...] = rng.standard_normal(w.shape) * scale
    else:
        w[...] = rng.uniform(-scale, scale, w.shape)
    return w
