"""Dropout keep masks from a counter-based generator (docs/spec.md §7).

A unit's mask is a pure function of (seed, t, l, i): the model's 64-bit dropout seed,
the number t of training forwards the model ran before this one, the layer index l and
the unit's index i = row * width + column within the batch. Every backend, every thread
count, the step-by-step path and the whole-epoch kernels therefore draw the same masks.

The mixing function is SplitMix64's (Steele, Lea and Flood, "Fast splittable
pseudorandom number generators", OOPSLA 2014; the constants of Vigna's splitmix64.c,
as in Java's ``SplittableRandom``): ``splitmix(s, k)``, the k-th output (k >= 1) of a
SplitMix64 generator started at state s, is ``mix64(s + k * GAMMA)`` modulo 2**64.

    key_t  = splitmix(seed, t + 1)
    key_tl = splitmix(key_t, l + 1)
    bits_i = splitmix(key_tl, i + 1) >> 40                  (24 bits)
    keep_i = bits_i >= threshold(rate),  threshold(rate) = ceil(rate * 2**24)

``rate * 2**24`` is exact in binary64, so the threshold is an exact integer and the
comparison is integer arithmetic: P(keep) = 1 - ceil(rate 2^24) / 2^24, which is
``1 - rate`` to within 2**-24 (exactly for rates that are multiples of 2**-24).
"""

import math

import numpy as np

__all__ = [
    "GAMMA",
    "mix64",
    "splitmix",
    "dropout_threshold",
    "dropout_layer_key",
    "dropout_ramp",
    "dropout_mask",
]

_M64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB


def mix64(z: int) -> int:
    """SplitMix64's finaliser on a Python int in [0, 2**64)."""
    z = ((z ^ (z >> 30)) * _C1) & _M64
    z = ((z ^ (z >> 27)) * _C2) & _M64
    return z ^ (z >> 31)


def splitmix(state: int, k: int) -> int:
    """The k-th output (k >= 1) of SplitMix64 started at ``state``."""
    return mix64((state + k * GAMMA) & _M64)


def dropout_threshold(rate: float) -> int:
    """ceil(rate * 2**24), exact: units whose 24 bits are below it are dropped."""
    return int(math.ceil(float(rate) * 16777216.0))


def dropout_layer_key(seed: int, t: int, layer: int) -> int:
    """key_tl: the key of layer ``layer`` in the t-th training forward (t from 0)."""
    return splitmix(splitmix(int(seed), int(t) + 1), int(layer) + 1)


def dropout_ramp(n: int) -> np.ndarray:
    """(i + 1) * GAMMA modulo 2**64 for i = 0 .. n-1 (uint64): reusable scratch input of
    :func:`dropout_mask`."""
    ramp = np.arange(1, n + 1, dtype=np.uint64)
    ramp *= np.uint64(GAMMA)
    return ramp


def dropout_mask(seed, t, layer, rate, out, work=None, tmp=None, ramp=None):
    """Write the keep mask (uint8 0/1, or bool) of ``out``'s shape, C order, into out.

    Vectorised in NumPy uint64 arithmetic (wrapping modulo 2**64). ``work`` and ``tmp``
    (uint64 scratch) and ``ramp`` (:func:`dropout_ramp`), each of at least out's size,
    may be given so that nothing is allocated (the step path's training forward).
    """
    n = out.size
    z = np.empty(n, np.uint64) if work is None else work.reshape(-1)[:n]
    tmp = np.empty(n, np.uint64) if tmp is None else tmp.reshape(-1)[:n]
    ramp = dropout_ramp(n) if ramp is None else ramp.reshape(-1)[:n]
    # z = key + (i + 1) * GAMMA, then mix64, in place
    np.add(ramp, np.uint64(dropout_layer_key(seed, t, layer)), out=z)
    for shift, mult in ((30, _C1), (27, _C2)):
        np.right_shift(z, np.uint64(shift), out=tmp)
        z ^= tmp
        z *= np.uint64(mult)
    np.right_shift(z, np.uint64(31), out=tmp)
    z ^= tmp
    z >>= np.uint64(40)
    np.greater_equal(z, np.uint64(dropout_threshold(rate)), out=out.reshape(-1).view(np.bool_))
    return out
