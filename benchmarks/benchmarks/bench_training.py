"""Training configs A-D (BENCHMARKS.md) and digits end to end.

- ``GemmOnly``: just the matrix products of one step on fastnn's BLAS (its private
  OpenBLAS instance, and fastnn's own GEMM where it runs), the floor a GEMM-bound step
  is compared with; ``OwnGemm``: the products on fastnn's own GEMM against OpenBLAS
  alone (where the own GEMM runs); ``SharedPacking``: config C's products in their
  tiles with op(a) packed once for them all, against tiles each packing it and one
  unsplit call.
- ``KernelStep``: one step written as Python calls to fastnn's kernels per backend
  (common.KernelStep).
- ``TrainStep``: ``fastnn.MLP.train_step`` with ``fastnn.Adam`` per backend, and
  ``TrainEpoch``: ``MLP.train_epoch`` over 8 batches in order (8 steps per call).
- ``DigitsFit``: ``fastnn.MLPClassifier`` on sklearn's digits, 64-128-128-10, Adam 1e-3,
  batch 64, 50 epochs (needs scikit-learn for the data set), with its test accuracy.

``peakmem_`` benchmarks compare against ``peakmem_reference`` (the data, parameters and
optimizer state, after one warm-up step on a tiny model): the difference is what the
first step (workspaces included) or a fit adds at its peak. ``track_*_alloc_bytes`` is
the steady-state figure: bytes allocated during one step after warm-up (tracemalloc),
which the "no allocation per training step" target wants at 0.
"""

import numpy as np

from . import common
from .common import BACKENDS, CONFIGS, DTYPES, get_backend, set_bench_threads

set_bench_threads()


class GemmOnly:
    params = [list(DTYPES), list(CONFIGS)]
    param_names = ["dtype", "config"]
    timeout = 300

    def setup(self, dtype, config):
        self.gemm = common.GemmOnly(CONFIGS[config], dtype)
        self.gemm()

    def time_gemm_only(self, dtype, config):
        self.gemm()


class OwnGemm:
    """A step's products on fastnn's own GEMM (the calls it takes; OpenBLAS's for the
    others) and on OpenBLAS alone: the own GEMM's lead, tracked (skipped where it does
    not run: no AVX-512, or the Cython kernels not built)."""

    params = [list(DTYPES), list(CONFIGS)]
    param_names = ["dtype", "config"]
    timeout = 300

    def setup(self, dtype, config):
        from fastnn import _blas

        if _blas.info()["gemm"] != "fastnn":
            raise NotImplementedError("fastnn's own GEMM does not run here")
        self.own = common.GemmOnly(CONFIGS[config], dtype)
        self.blas = common.GemmOnly(CONFIGS[config], dtype, blas_only=True)
        self.own()
        self.blas()

    def time_fastnn_gemm(self, dtype, config):
        self.own()

    def time_openblas(self, dtype, config):
        self.blas()


class SharedPacking:
    """Config C's products in their tiles on fastnn's own GEMM, made as the Cython
    kernels make them (op(a) packed once for a row of tiles, one thread), against the
    same tiles each packing op(a) itself and against one unsplit call (skipped where the
    own GEMM does not run)."""

    params = [list(DTYPES), ["z2 = a1 @ W2", "dW2 = a1.T @ dz2", "da1 = dz2 @ W2.T"]]
    param_names = ["dtype", "product"]
    timeout = 300
    SHAPES = {  # (m, n, k, trans_a, trans_b) of the row-major out (m, n)
        "z2 = a1 @ W2": (256, 2048, 2048, False, False),
        "dW2 = a1.T @ dz2": (2048, 2048, 256, True, False),
        "da1 = dz2 @ W2.T": (256, 2048, 2048, False, True),
    }

    def setup(self, dtype, product):
        from fastnn import _blas
        from fastnn.reference.blas import gemm_blocks

        if _blas.info()["gemm"] != "fastnn":
            raise NotImplementedError("fastnn's own GEMM does not run here")
        from fastnn._kernels import dense_cython

        m, n, k, ta, tb = self.SHAPES[product]
        rng = np.random.default_rng(0)
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
        out = np.empty((m, n), dtype)
        self.made = lambda: dense_cython._gemm_threads(a, b, out, ta, tb, 1)
        self.whole = common._gemm_call(a, b, out, ta, tb)
        lda, ldb = a.shape[1], b.shape[1]
        self.tiles = [
            _blas.gemm_arguments(ta, tb, r1 - r0, c1 - c0, k, a, r0 if ta else r0 * lda,
                                 lda, b, c0 * ldb if tb else c0, ldb, out, r0 * n + c0, n)
            for r0, r1, c0, c1 in gemm_blocks(m, n, k, ta, tb, dtype)
        ]
        self.operands = (a, b, out)
        self.made()

    def time_tiles_shared_pack(self, dtype, product):
        self.made()

    def time_tiles_each_packing(self, dtype, product):
        for fn, args in self.tiles:
            fn(*args)

    def time_unsplit_call(self, dtype, product):
        self.whole()


class KernelStep:
    params = [list(BACKENDS), list(DTYPES), list(CONFIGS)]
    param_names = ["backend", "dtype", "config"]
    timeout = 600

    def setup(self, backend, dtype, config):
        bk = get_backend(backend)
        cfg = CONFIGS[config]
        self.step = common.KernelStep(bk, cfg, dtype, common.make_batches(cfg, dtype, 4))
        # Compile (Numba) through config A's tiny step: the same kernels and types, and
        # no full-size temporaries in the peakmem_ baseline.
        tiny = CONFIGS["A"]
        common.KernelStep(bk, tiny, dtype, common.make_batches(tiny, dtype, 1))()

    def time_train_step(self, backend, dtype, config):
        self.step()

    def peakmem_train_step(self, backend, dtype, config):
        self.step()

    def peakmem_reference(self, backend, dtype, config):
        """Batches, parameters, gradients, Adam state and workspaces alone."""



def _mlp(backend, dtype, sizes):
    bk = get_backend(backend)
    try:
        from fastnn import MLP, Adam
    except ImportError as exc:
        raise NotImplementedError(f"fastnn has no training library here: {exc}") from None
    net = MLP(list(sizes), "relu", loss="cross_entropy", dtype=dtype, backend=bk.name,
              random_state=0)
    return net, Adam(lr=1e-3)


def _steady_alloc(fn) -> int:
    """Peak traced allocation of one call of ``fn`` after two untraced warm-up calls.

    NumPy reports its array buffers to tracemalloc, so temporaries count; memory a
    compiled kernel gets from malloc directly would not (fastnn's kernels take their
    workspaces from the caller).
    """
    import tracemalloc
    fn()
    fn()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


class _Training:
    params = [list(BACKENDS), list(DTYPES), list(CONFIGS)]
    param_names = ["backend", "dtype", "config"]
    timeout = 600

    def setup(self, backend, dtype, config):
        cfg = CONFIGS[config]
        # Compile (Numba) on config A's tiny model: same kernels and types, and no
        # full-size temporaries in the peakmem_ baseline.
        tiny, tiny_opt = _mlp(backend, dtype, CONFIGS["A"].sizes)
        for x, y in common.make_batches(CONFIGS["A"], dtype, 1):
            tiny.train_step(*tiny.check_data(x, y), tiny_opt)
        self.net, self.opt = _mlp(backend, dtype, cfg.sizes)
        self.batches = [self.net.check_data(x, y)
                        for x, y in common.make_batches(cfg, dtype, 4)]
        self.i = 0

    def _step(self):
        xb, yb = self.batches[self.i % len(self.batches)]
        self.i += 1
        self.net.train_step(xb, yb, self.opt)

    def peakmem_reference(self, backend, dtype, config):
        """Model, optimizer and batches alone (no step at this size yet)."""


class TrainStep(_Training):
    def time_train_step(self, backend, dtype, config):
        self._step()

    def peakmem_train_step(self, backend, dtype, config):
        self._step()

    def track_step_alloc_bytes(self, backend, dtype, config):
        """Peak bytes allocated through NumPy/Python during one steady-state step
        (tracemalloc, after two warm-up steps): 0 when a step allocates nothing."""
        return _steady_alloc(self._step)

    track_step_alloc_bytes.unit = "bytes"


class TrainEpoch(_Training):
    """``train_epoch`` over 8 batches, in order: one call is 8 steps."""

    def setup(self, backend, dtype, config):
        super().setup(backend, dtype, config)
        cfg = CONFIGS[config]
        pairs = [self.net.check_data(x, y) for x, y in common.make_batches(cfg, dtype, 8)]
        self.X = np.ascontiguousarray(np.concatenate([x for x, _ in pairs]))
        self.Y = np.ascontiguousarray(np.concatenate([y for _, y in pairs]))
        self.batch = cfg.batch

    def time_train_epoch(self, backend, dtype, config):
        self.net.train_epoch(self.X, self.Y, self.opt, self.batch, shuffle=False)

    def peakmem_train_epoch(self, backend, dtype, config):
        self.net.train_epoch(self.X, self.Y, self.opt, self.batch, shuffle=False)

    def track_epoch_alloc_bytes(self, backend, dtype, config):
        """Peak bytes allocated through NumPy/Python during one steady-state call."""
        return _steady_alloc(lambda: self.net.train_epoch(self.X, self.Y, self.opt,
                                                          self.batch, shuffle=False))

    track_epoch_alloc_bytes.unit = "bytes"


class DigitsFit:
    params = [list(BACKENDS), list(DTYPES)]
    param_names = ["backend", "dtype"]
    timeout = 600
    epochs = 50

    def setup(self, backend, dtype):
        get_backend(backend)
        try:
            import fastnn
            from sklearn.datasets import load_digits
            from sklearn.exceptions import ConvergenceWarning
            from sklearn.model_selection import train_test_split
            from sklearn.preprocessing import StandardScaler
            self.cls = fastnn.MLPClassifier
        except (ImportError, AttributeError) as exc:
            raise NotImplementedError(f"needs scikit-learn and fastnn.MLPClassifier: "
                                      f"{exc}") from None
        self.warning = ConvergenceWarning
        X, y = load_digits(return_X_y=True)
        Xtr, Xte, self.ytr, self.yte = train_test_split(X, y, test_size=0.25,
                                                        random_state=0, stratify=y)
        scaler = StandardScaler().fit(Xtr)
        self.Xtr = np.ascontiguousarray(scaler.transform(Xtr), dtype=dtype)
        self.Xte = np.ascontiguousarray(scaler.transform(Xte), dtype=dtype)
        self.backend, self.dtype = backend, dtype
        self._fit(1)  # compiles (Numba) and imports what fit needs

    def _fit(self, epochs):
        import warnings
        clf = self.cls(hidden_layer_sizes=(128, 128), solver="adam", alpha=0.0,
                       batch_size=64, learning_rate_init=1e-3, max_iter=epochs, tol=0.0,
                       n_iter_no_change=epochs + 1, random_state=0, backend=self.backend,
                       dtype=self.dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", self.warning)
            clf.fit(self.Xtr, self.ytr)
        return clf

    def time_fit(self, backend, dtype):
        self._fit(self.epochs)

    def peakmem_fit(self, backend, dtype):
        self._fit(self.epochs)

    def peakmem_reference(self, backend, dtype):
        """The data and a 1-epoch fit's leftovers: the baseline of peakmem_fit."""

    def track_test_accuracy(self, backend, dtype):
        clf = self._fit(self.epochs)
        return float(np.mean(clf.predict(self.Xte) == self.yte))

    track_test_accuracy.unit = "accuracy"
