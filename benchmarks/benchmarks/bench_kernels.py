"""Every kernel family x backend x dtype, at a small and a larger size.

Each benchmark is one call of fastnn's checked ``Backend`` method with preallocated
outputs, so it includes argument validation: at the small sizes that overhead is
visible on purpose (it is what a Python-level training loop pays per call).
Adam, SGD and momentum have their own suite (bench_optimizers.py).
"""

import numpy as np

from .common import BACKENDS, DTYPES, get_backend, set_bench_threads

set_bench_threads()


def _shape(text):
    return tuple(int(x) for x in text.split("x"))


class _Family:
    param_names = ["backend", "dtype", "shape"]
    timeout = 300

    def _common(self, backend, dtype):
        self.bk = get_backend(backend)
        self.rng = np.random.default_rng(0)
        self.dtype = np.dtype(dtype)

    def normal(self, *shape):
        return self.rng.standard_normal(shape).astype(self.dtype)

    def setup(self, backend, dtype, shape):
        self._common(backend, dtype)
        # Every time_ method once on tiny inputs of the same types compiles the Numba
        # kernels (compilation depends on types, not sizes), so asv's calibration of
        # calls per sample never sees a compilation; then the real inputs.
        self._build(self.tiny)
        for name in dir(self):
            if name.startswith("time_"):
                getattr(self, name)(backend, dtype, shape)
        self._build(shape)

    def _build(self, shape):
        raise NotImplementedError


class Activations(_Family):
    params = [list(BACKENDS), list(DTYPES), ["64x128", "1024x1024"]]
    tiny = "2x3"

    def _build(self, shape):
        m, k = _shape(shape)
        self.z = self.normal(m, k)
        self.da = self.normal(m, k)
        self.out = np.empty((m, k), self.dtype)
        self.out.fill(0)
        self.a_relu = self.bk.relu(self.z)
        self.a_sigmoid = self.bk.sigmoid(self.z)
        self.a_tanh = self.bk.tanh(self.z)

    def time_relu(self, *_):
        self.bk.relu(self.z, out=self.out)

    def time_leaky_relu(self, *_):
        self.bk.leaky_relu(self.z, out=self.out)

    def time_elu(self, *_):
        self.bk.elu(self.z, out=self.out)

    def time_sigmoid(self, *_):
        self.bk.sigmoid(self.z, out=self.out)

    def time_tanh(self, *_):
        self.bk.tanh(self.z, out=self.out)

    def time_softmax(self, *_):
        self.bk.softmax(self.z, out=self.out)

    def time_relu_derivative(self, *_):
        self.bk.relu_derivative(self.z, out=self.out)

    def time_sigmoid_derivative(self, *_):
        self.bk.sigmoid_derivative(self.z, out=self.out)

    def time_tanh_derivative(self, *_):
        self.bk.tanh_derivative(self.z, out=self.out)

    def time_elu_derivative(self, *_):
        self.bk.elu_derivative(self.z, out=self.out)

    def time_activation_backward_relu(self, *_):
        self.bk.activation_backward(self.da, self.z, self.a_relu, "relu", out=self.out)

    def time_activation_backward_sigmoid(self, *_):
        self.bk.activation_backward(self.da, self.z, self.a_sigmoid, "sigmoid",
                                    out=self.out)

    def time_activation_backward_tanh(self, *_):
        self.bk.activation_backward(self.da, self.z, self.a_tanh, "tanh", out=self.out)


class Dense(_Family):
    """Shapes are batch x n_in x n_out: config A's first layer, config B's first layer."""

    params = [list(BACKENDS), list(DTYPES), ["64x2x128", "128x784x256"]]
    tiny = "2x3x4"

    def _build(self, shape):
        m, n_in, n_out = _shape(shape)
        self.x = self.normal(m, n_in)
        self.w = self.normal(n_in, n_out)
        self.b = self.normal(n_out)
        self.z, self.a = self.bk.dense_forward(self.x, self.w, self.b, "relu")
        self.da = self.normal(m, n_out)
        self.dz = np.zeros((m, n_out), self.dtype)
        self.dw = np.zeros((n_in, n_out), self.dtype)
        self.db = np.zeros(n_out, self.dtype)
        self.dx = np.zeros((m, n_in), self.dtype)

    def time_dense_forward_relu(self, *_):
        self.bk.dense_forward(self.x, self.w, self.b, "relu", z=self.z, a=self.a)

    def time_dense_backward_relu(self, *_):
        self.bk.dense_backward(self.x, self.z, self.a, self.da, "relu", dz=self.dz,
                               dw=self.dw, db=self.db)

    def time_dense_input_gradient(self, *_):
        self.bk.dense_input_gradient(self.dz, self.w, dx=self.dx)


class CSRDense(_Family):
    """The first layer on CSR rows (docs/spec.md §2.1): batch x n_features x n_out x
    density. The 100,000-column cases at 0.1% and 1% show a batch's cost following its
    non-zeros; forward alone is O(nnz n_out), backward adds zeroing dw."""

    params = [list(BACKENDS), list(DTYPES),
              ["64x1000x32x0.01", "200x100000x64x0.001", "200x100000x64x0.01"]]
    tiny = "2x3x4x0.5"

    def _build(self, shape):
        import scipy.sparse as sp

        m, n_in, n_out = (int(t) for t in shape.split("x")[:3])
        density = float(shape.split("x")[3])
        n_rows = 4 * m
        x = sp.random(n_rows, n_in, density=density, format="csr", dtype=self.dtype,
                      rng=self.rng)
        self.csr = (x.indptr, x.indices, x.data)
        self.rows = self.rng.permutation(n_rows)[:m].astype(np.int64)
        self.w = self.normal(n_in, n_out)
        self.b = self.normal(n_out)
        self.z, self.a = self.bk.csr_dense_forward(*self.csr, self.rows, self.w, self.b,
                                                   "relu")
        self.da = self.normal(m, n_out)
        self.dz = np.zeros((m, n_out), self.dtype)
        self.dw = np.zeros((n_in, n_out), self.dtype)
        self.db = np.zeros(n_out, self.dtype)

    def time_csr_dense_forward_relu(self, *_):
        self.bk.csr_dense_forward(*self.csr, self.rows, self.w, self.b, "relu", z=self.z,
                                  a=self.a)

    def time_csr_dense_backward_relu(self, *_):
        self.bk.csr_dense_backward(*self.csr, self.rows, self.z, self.a, self.da, "relu",
                                   dz=self.dz, dw=self.dw, db=self.db)


class Losses(_Family):
    params = [list(BACKENDS), list(DTYPES), ["128x10", "4096x100"]]
    tiny = "2x3"

    def _build(self, shape):
        m, k = _shape(shape)
        self.z = self.normal(m, k)
        self.labels = self.rng.integers(0, k, m).astype(np.int64)
        self.onehot = np.eye(k, dtype=self.dtype)[self.labels]
        self.binary = (self.rng.random((m, k)) < 0.5).astype(self.dtype)
        self.target = self.normal(m, k)
        self.out = np.zeros((m, k), self.dtype)

    def time_sparse_cross_entropy(self, *_):
        self.bk.sparse_cross_entropy(self.z, self.labels)

    def time_sparse_cross_entropy_gradient(self, *_):
        self.bk.sparse_cross_entropy_gradient(self.z, self.labels, out=self.out)

    def time_cross_entropy_onehot(self, *_):
        self.bk.cross_entropy(self.z, self.onehot)

    def time_cross_entropy_gradient_onehot(self, *_):
        self.bk.cross_entropy_gradient(self.z, self.onehot, out=self.out)

    def time_binary_cross_entropy(self, *_):
        self.bk.binary_cross_entropy(self.z, self.binary)

    def time_binary_cross_entropy_gradient(self, *_):
        self.bk.binary_cross_entropy_gradient(self.z, self.binary, out=self.out)

    def time_mse(self, *_):
        self.bk.mse(self.z, self.target)

    def time_mse_gradient(self, *_):
        self.bk.mse_gradient(self.z, self.target, out=self.out)


class Normalization(_Family):
    params = [list(BACKENDS), list(DTYPES), ["128x256", "1024x1024"]]
    tiny = "2x3"

    def _build(self, shape):
        m, k = _shape(shape)
        self.x = self.normal(m, k)
        self.mask = (self.rng.random((m, k)) >= 0.1).astype(np.uint8)
        self.gamma = np.ones(k, self.dtype)
        self.beta = np.zeros(k, self.dtype)
        self.running_mean = np.zeros(k, self.dtype)
        self.running_var = np.ones(k, self.dtype)
        self.out = np.zeros((m, k), self.dtype)
        self.x_hat = np.zeros((m, k), self.dtype)
        self.inv_std = np.zeros(k, self.dtype)
        self.dout = self.normal(m, k)
        self.dx = np.zeros((m, k), self.dtype)
        self.dgamma = np.zeros(k, self.dtype)
        self.dbeta = np.zeros(k, self.dtype)

    def time_dropout(self, *_):
        self.bk.dropout(self.x, self.mask, 0.1, out=self.out)

    def time_batch_norm_train(self, *_):
        self.bk.batch_norm_train(self.x, self.gamma, self.beta, self.running_mean,
                                 self.running_var, out=self.out, x_hat=self.x_hat,
                                 inv_std=self.inv_std)

    def time_batch_norm_eval(self, *_):
        self.bk.batch_norm_eval(self.x, self.gamma, self.beta, self.running_mean,
                                self.running_var, out=self.out)

    def time_batch_norm_backward(self, *_):
        self.bk.batch_norm_backward(self.dout, self.x_hat, self.gamma, self.inv_std,
                                    dx=self.dx, dgamma=self.dgamma, dbeta=self.dbeta)


class OtherOptimizers(_Family):
    """The optimizer-family kernels not in bench_optimizers.py, on flat buffers."""

    params = [list(BACKENDS), list(DTYPES), [10 ** 5, 10 ** 6]]
    param_names = ["backend", "dtype", "n"]
    tiny = 16

    def _build(self, n):
        self.param = self.rng.random(n).astype(self.dtype)
        self.grad = (self.normal(n) * 1e-2).astype(self.dtype)
        # One state buffer per kernel, so each sees the values it would in training.
        self.velocity, self.sum_sq, self.sq_avg, self.m, self.v = (
            np.zeros(n, self.dtype) for _ in range(5))
        self.t = 0

    def time_nesterov_step(self, *_):
        self.bk.nesterov_step(self.param, self.grad, self.velocity, 1e-3, momentum=0.9)

    def time_adagrad_step(self, *_):
        self.bk.adagrad_step(self.param, self.grad, self.sum_sq, lr=1e-3)

    def time_rmsprop_step(self, *_):
        self.bk.rmsprop_step(self.param, self.grad, self.sq_avg, lr=1e-3)

    def time_adamw_step(self, *_):
        self.t += 1
        self.bk.adamw_step(self.param, self.grad, self.m, self.v, self.t)

    def time_squared_norm(self, *_):
        self.bk.squared_norm(self.grad)

    def time_scale_inplace(self, *_):
        self.bk.scale_inplace(self.grad, 1.0)


class GemmTiles:
    """One product cut into fastnn's output tiles (``fastnn.reference.blas.gemm``, one
    BLAS call per tile of ``gemm_blocks``) against the same product as one unsplit call:
    the one-thread cost of the tiling (docs/benchmarks/2026-12-02-tiles-scaling.md).
    Shapes are m x n x k: config C's first forward product (16 tiles) and second (16
    tiles, twice the inner dimension); smaller products are one tile, one call, except
    where OpenBLAS's small-matrix kernels take tiles of them (a digits layer, 64 x 128
    x 128, two tiles on its SkylakeX core: there the tiles are the faster)."""

    param_names = ["dtype", "shape"]
    params = [list(DTYPES), ["256x2048x1024", "256x2048x2048", "64x128x128"]]
    timeout = 300

    def setup(self, dtype, shape):
        from fastnn.reference import blas

        m, n, k = _shape(shape)
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((m, k)).astype(dtype)
        self.b = rng.standard_normal((k, n)).astype(dtype)
        self.out = np.zeros((m, n), dtype)
        self.gemm = blas.gemm
        self.shape = m, n, k

    def time_tiles(self, dtype, shape):
        self.gemm(self.a, self.b, self.out)

    def time_one_call(self, dtype, shape):
        from fastnn._blas import gemm_call

        m, n, k = self.shape
        gemm_call(False, False, m, n, k, self.a, 0, k, self.b, 0, n, self.out, 0, n)

    def track_tiles(self, dtype, shape):
        from fastnn.reference import blas

        return len(blas.gemm_blocks(*self.shape))
