"""The optimizer step alone: Adam, SGD and SGD+momentum over one flat parameter buffer.

One call of fastnn's checked ``Backend`` method per step, at 1e5-1e8 parameters, for
every backend and dtype. Each class also has ``peakmem_`` benchmarks: asv records the
process's peak resident memory, setup included, so ``peakmem_reference`` (the data
alone) is the baseline and ``peakmem_<step> - peakmem_reference`` is what one step
allocates on top of the buffers.
"""

import numpy as np

from .common import (BACKENDS, DTYPES, get_backend, quick_mode, require_memory,
                     set_bench_threads, touched_zeros)

SIZES = [10 ** 5, 10 ** 6, 10 ** 7, 10 ** 8]
LR = 1e-3

set_bench_threads()


class _FlatStep:
    """Shared setup: param, grad and ``n_state`` state buffers of n elements, touched."""

    params = [list(BACKENDS), list(DTYPES), SIZES]
    param_names = ["backend", "dtype", "n"]
    timeout = 600
    n_state = 0

    def setup(self, backend, dtype, n):
        if n >= 10 ** 8 and quick_mode():
            raise NotImplementedError("1e8 parameters are skipped in quick mode")
        itemsize = np.dtype(dtype).itemsize
        # The buffers, plus room for the temporaries of an unfused (NumPy) update.
        require_memory((2 + self.n_state + 4) * itemsize * n, f"{n} {dtype} parameters")
        self.bk = get_backend(backend)
        rng = np.random.default_rng(0)
        self.param = rng.random(n, dtype=dtype)
        self.grad = (rng.standard_normal(n, dtype=dtype) * 1e-2).astype(dtype)
        self.state = [touched_zeros(n, dtype) for _ in range(self.n_state)]
        self.t = 0
        # Compile (Numba) on tiny buffers of the same types: a full-size warm-up step
        # would put its temporaries into every peakmem_ result, the baseline included.
        small = [np.ones(16, dtype) for _ in range(2 + self.n_state)]
        self._step(self.bk, *small, t=1)

    def _step(self, bk, param, grad, *state, t):
        raise NotImplementedError

    def step(self):
        self.t += 1
        self._step(self.bk, self.param, self.grad, *self.state, t=self.t)

    def peakmem_reference(self, backend, dtype, n):
        """The buffers alone: the baseline of the peakmem_ benchmarks."""


class Adam(_FlatStep):
    n_state = 2

    def _step(self, bk, param, grad, m, v, t):
        bk.adam_step(param, grad, m, v, t, lr=LR)

    def time_adam_step(self, backend, dtype, n):
        self.step()

    def peakmem_adam_step(self, backend, dtype, n):
        self.step()


class Momentum(_FlatStep):
    n_state = 1

    def _step(self, bk, param, grad, velocity, t):
        bk.momentum_step(param, grad, velocity, LR, momentum=0.9)

    def time_momentum_step(self, backend, dtype, n):
        self.step()

    def peakmem_momentum_step(self, backend, dtype, n):
        self.step()


class Sgd(_FlatStep):
    n_state = 0

    def _step(self, bk, param, grad, t):
        bk.sgd_step(param, grad, LR)

    def time_sgd_step(self, backend, dtype, n):
        self.step()

    def peakmem_sgd_step(self, backend, dtype, n):
        self.step()


class StillLanes:
    """The optimizers whose moments a zero gradient decays into the subnormal range
    (docs/spec.md §5, "Subnormal moments"), on a state where half the lanes are still:
    gradient 0 and the smallest subnormal moments, which rounding keeps for good (as
    after a long run with dead relu units). On Intel cores an update that computed on
    them would take a microcode assist per instruction; compare with the same sizes in
    ``Adam``/``Momentum``. n: digits' 64-128-128-10 network, and 1e6."""

    params = [list(BACKENDS), list(DTYPES), ["adam", "momentum", "rmsprop", "adamax"],
              [26122, 10 ** 6]]
    param_names = ["backend", "dtype", "optimizer", "n"]
    timeout = 600

    def setup(self, backend, dtype, optimizer, n):
        self.bk = get_backend(backend)
        rng = np.random.default_rng(0)
        dt = np.dtype(dtype).type
        sub = np.finfo(dtype).smallest_subnormal
        still = rng.random(n) < 0.5
        self.param = rng.random(n, dtype=dtype) + dt(0.5)
        self.grad = np.where(still, dt(0), rng.standard_normal(n, dtype=dtype) * dt(1e-2))
        small = (rng.integers(1, 4, n) * sub).astype(dtype)  # k 2^emin, k < 4: kept
        n_state = 1 if optimizer in ("momentum", "rmsprop") else 2
        self.state = []
        for _ in range(n_state):
            s = np.where(still, small, (rng.random(n, dtype=dtype) * dt(1e-3)).astype(dtype))
            self.state.append(s.astype(dtype))
        self.optimizer = optimizer
        self.t = 100
        self.step()  # compile (Numba)

    def step(self):
        bk, p, g, s, opt = self.bk, self.param, self.grad, self.state, self.optimizer
        self.t += 1
        if opt == "adam":
            bk.adam_step(p, g, s[0], s[1], self.t, lr=LR)
        elif opt == "momentum":
            bk.momentum_step(p, g, s[0], LR, momentum=0.9)
        elif opt == "rmsprop":
            bk.rmsprop_step(p, g, s[0], LR)
        else:
            bk.adamax_step(p, g, s[0], s[1], self.t, lr=LR)

    def time_still_step(self, backend, dtype, optimizer, n):
        self.step()
