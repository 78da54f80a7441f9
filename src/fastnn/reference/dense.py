"""Dense layer forward and backward (docs/spec.md §2), batch-first and row-major.

x (m, n_in), w (n_in, n_out), b (n_out,), z and a (m, n_out). The loss owns the 1/m
batch averaging, so nothing here divides by m.
"""

from .activations import activation_backward, activation_forward
from .blas import gemm

__all__ = [
    "dense_forward",
    "dense_backward",
    "dense_input_gradient",
]


def dense_forward(x, w, b, activation, alpha, z, a):
    """z = x @ w + b and a = g(z), written into ``z`` and ``a`` (``a`` may be ``z``)."""
    gemm(x, w, z)
    z += b
    activation_forward(z, activation, alpha, a)


def dense_backward(x, z, a, da, activation, alpha, dz, dw, db):
    """dz = da * g'(z); dw = x.T @ dz; db = dz summed over the batch.

    ``dz`` (m, n_out) may be ``da``; ``dw`` (n_in, n_out) and ``db`` (n_out,) are
    overwritten.
    """
    activation_backward(da, z, a, activation, alpha, dz)
    gemm(x, dz, dw, trans_a=True)
    db[...] = dz.sum(axis=0)


def dense_input_gradient(dz, w, dx):
    """dx = dz @ w.T, the gradient passed to the layer below; dx (m, n_in)."""
    gemm(dz, w, dx, trans_b=True)
