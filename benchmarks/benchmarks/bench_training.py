"""Training steps of configs A-D (BENCHMARKS.md) that can be measured today.

- ``GemmOnly``: just the matrix products of one step through SciPy BLAS, the floor a
  GEMM-bound step is compared with.
- ``KernelStep``: one step written as Python calls to fastnn's kernels per backend
  (common.KernelStep), with ``peakmem_`` against the data + parameters + optimizer
  state + workspaces baseline.

fastnn's own training step (its training library) and the digits fit are measured by
compare.py once they exist; they get their benchmarks here then.
"""

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

