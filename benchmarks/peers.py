"""The peers fastnn is measured against, as zero-argument callables for compare.py.

Each factory builds one implementation for one case and returns ``fn`` such that
``fn()`` does one unit of work (one training step on the next pre-made batch, one
optimizer step, or one whole fit). A peer that is not installed raises
:class:`Unavailable` with a note; nothing is ever substituted for it.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np

from benchmarks.common import cycle
from numpy_mlp import TextbookAdam, TextbookMLP, TextbookMomentum

LR = 1e-3
MOMENTUM = 0.9


class Unavailable(Exception):
    """An implementation that cannot be measured here; ``status`` says why in one word
    ("skipped" for a peer that is not installed, "not available yet" for a fastnn part
    that does not exist yet), ``note`` in a sentence."""

    def __init__(self, status: str, note: str):
        super().__init__(f"{status}: {note}")
        self.status, self.note = status, note


def require(module: str):
    """Import ``module`` or raise Unavailable("skipped", ...)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable("skipped", f"{module} is not installed ({exc})") from None


# --- training step ---------------------------------------------------------------------

def _torch_mlp(torch, sizes, dtype, seed):
    torch.manual_seed(seed)
    layers = []
    pairs = list(zip(sizes[:-1], sizes[1:]))
    for k, (i, o) in enumerate(pairs):
        layers.append(torch.nn.Linear(i, o))
        if k < len(pairs) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).to(_torch_dtype(torch, dtype))


def _torch_dtype(torch, dtype):
    return {np.dtype(np.float32): torch.float32,
            np.dtype(np.float64): torch.float64}[np.dtype(dtype)]


def torch_step(cfg, dtype, batches, fused: bool, seed: int = 0):
    """PyTorch eager: Sequential(Linear, ReLU, ...), F.cross_entropy, Adam(lr 1e-3),
    the default (single-tensor loop on CPU) or ``fused=True``."""
    torch = require("torch")
    model = _torch_mlp(torch, cfg.sizes, dtype, seed)
    kwargs = {"fused": True} if fused else {}
    opt = torch.optim.Adam(model.parameters(), lr=LR, **kwargs)
    loss_fn = torch.nn.functional.cross_entropy
    nxt = cycle([(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches])

    def step():
        xb, yb = nxt()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
    return step


def torch_gemm(gemm):
    """The products of :class:`benchmarks.common.GemmOnly` ``gemm``, on the same arrays,
    through ``torch.mm(..., out=...)``, each call the next batch's as ``gemm``'s: how
    fast torch's own BLAS runs the step's shapes, beside fastnn's (torch's step is built
    on these)."""
    torch = require("torch")
    batches = []
    for products in gemm.batches:
        calls = []
        for _, a, b, out, trans_a, trans_b in products:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            calls.append((ta.t() if trans_a else ta, tb.t() if trans_b else tb,
                          torch.from_numpy(out)))
        batches.append(calls)
    nxt = cycle(batches)

    def products():
        for ta, tb, out in nxt():
            torch.mm(ta, tb, out=out)
    return products


def _sklearn_mlp(sizes, batch, seed, **kw):
    nn = require("sklearn.neural_network")
    # alpha=0: no L2 term, like every other implementation here.
    return nn.MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), activation="relu",
                            solver="adam", learning_rate_init=LR, alpha=0.0,
                            batch_size=batch, random_state=seed, **kw)


def sklearn_step(cfg, dtype, batches, per_call: str, seed: int = 0):
    """scikit-learn MLPClassifier trained by ``partial_fit``.

    ``per_call="one"``: one call per step on one batch (the time includes the input
    validation partial_fit does on every call). ``per_call="all"``: one call on all the
    pre-made batches stacked, which sklearn splits into ``len(batches)`` steps of
    ``cfg.batch`` rows; the callable then does ``len(batches)`` steps, and compare.py
    divides by ``steps_per_call``.
    """
    clf = _sklearn_mlp(cfg.sizes, cfg.batch, seed, shuffle=False)
    classes = np.arange(cfg.sizes[-1])
    if per_call == "one":
        nxt = cycle(batches)
        x0, y0 = batches[0]
        clf.partial_fit(x0, y0, classes=classes)

        def step():
            xb, yb = nxt()
            clf.partial_fit(xb, yb)
        step.steps_per_call = 1
    else:
        xs = np.ascontiguousarray(np.concatenate([x for x, _ in batches]))
        ys = np.concatenate([y for _, y in batches])
        clf.partial_fit(xs, ys, classes=classes)

        def step():
            clf.partial_fit(xs, ys)
        step.steps_per_call = len(batches)
    if clf.coefs_[0].dtype != np.dtype(dtype):
        raise Unavailable("skipped", f"sklearn trains in {clf.coefs_[0].dtype} on "
                                     f"{np.dtype(dtype).name} input")
    return step


def numpy_step(cfg, dtype, batches, seed: int = 0):
    """The hand-written NumPy MLP (numpy_mlp.TextbookMLP), one-hot targets pre-made."""
    net = TextbookMLP(cfg.sizes, dtype, lr=LR, seed=seed)
    k = cfg.sizes[-1]
    onehot = [(x, np.eye(k, dtype=dtype)[y]) for x, y in batches]
    nxt = cycle(onehot)

    def step():
        xb, yb = nxt()
        net.train_step(xb, yb)
    return step


def jax_step(cfg, dtype, batches, seed: int = 0):
    """JAX: the whole step (value_and_grad of the loss, Adam) under one ``jax.jit``,
    parameters and Adam state donated so XLA updates them in place. Blocks on the
    result, so the time is the computation's and not the asynchronous dispatch's."""
    jax = require("jax")
    jnp = importlib.import_module("jax.numpy")
    if np.dtype(dtype) == np.float64:
        jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(seed)
    params = []
    for i, o in zip(cfg.sizes[:-1], cfg.sizes[1:]):
        w = (rng.standard_normal((i, o)) * np.sqrt(2.0 / i)).astype(dtype)
        params.append((jnp.asarray(w), jnp.zeros(o, dtype)))
    b1, b2, eps = 0.9, 0.999, 1e-8

    def loss_fn(ps, x, y):
        a = x
        for k, (w, b) in enumerate(ps):
            a = a @ w + b
            if k < len(ps) - 1:
                a = jax.nn.relu(a)
        logz = jax.nn.logsumexp(a, axis=1)
        picked = jnp.take_along_axis(a, y[:, None], axis=1)[:, 0]
        return jnp.mean(logz - picked)

    def step_fn(ps, m, v, t, x, y):
        loss, g = jax.value_and_grad(loss_fn)(ps, x, y)
        t = t + 1
        tree = jax.tree_util.tree_map
        m = tree(lambda m_, g_: b1 * m_ + (1 - b1) * g_, m, g)
        v = tree(lambda v_, g_: b2 * v_ + (1 - b2) * g_ * g_, v, g)
        c1 = 1 - b1 ** t
        c2 = 1 - b2 ** t
        ps = tree(lambda p, m_, v_: p - LR * (m_ / c1) / (jnp.sqrt(v_ / c2) + eps),
                  ps, m, v)
        return ps, m, v, t, loss

    jitted = jax.jit(step_fn, donate_argnums=(0, 1, 2))
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = [params, zeros, jax.tree_util.tree_map(jnp.zeros_like, params),
             jnp.asarray(0, dtype)]
    nxt = cycle([(jnp.asarray(x), jnp.asarray(y.astype(np.int32))) for x, y in batches])

    def step():
        xb, yb = nxt()
        ps, m, v, t, loss = jitted(*state, xb, yb)
        state[:] = [ps, m, v, t]
        loss.block_until_ready()
        jax.block_until_ready(ps)
    return step


def jax_gemm(gemm):
    """The products of :class:`benchmarks.common.GemmOnly` ``gemm``, on the same arrays,
    through XLA's dot under one ``jax.jit`` returning every product, each call the next
    batch's as ``gemm``'s: how fast JAX's own kernels run the step's shapes, beside
    fastnn's (JAX's step is built on these)."""
    jax = require("jax")
    jnp = importlib.import_module("jax.numpy")
    if gemm.products[0][1].dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    on_device: dict = {}  # one device array per NumPy array (the batches share all but x)

    def device(a):
        if id(a) not in on_device:
            on_device[id(a)] = (a, jnp.asarray(a))
        return on_device[id(a)][1]

    nxt = cycle([[(device(a), device(b)) for _, a, b, _, _, _ in products]
                  for products in gemm.batches])
    flags = [(trans_a, trans_b) for *_, trans_a, trans_b in gemm.products]

    def products(operands):
        return [(a.T if ta else a) @ (b.T if tb else b)
                for (a, b), (ta, tb) in zip(operands, flags)]

    jitted = jax.jit(products)

    def run():
        jax.block_until_ready(jitted(nxt()))
    return run


# --- optimizer step alone ----------------------------------------------------------------

def torch_optimizer(kind: str, param, grad, fused: bool):
    """torch.optim.Adam / SGD(momentum=0.9) on one flat tensor sharing ``param``'s and
    ``grad``'s memory (torch.from_numpy: no copy)."""
    torch = require("torch")
    p = torch.from_numpy(param)
    p.requires_grad_(True)
    p.grad = torch.from_numpy(grad)
    kwargs = {"fused": True} if fused else {}
    if kind == "adam":
        opt = torch.optim.Adam([p], lr=LR, **kwargs)
    elif kind == "momentum":
        opt = torch.optim.SGD([p], lr=LR, momentum=MOMENTUM, **kwargs)
    else:
        raise ValueError(kind)
    step = opt.step
    step()  # creates the optimizer state outside the timed region
    return step


def numpy_optimizer(kind: str, param, grad):
    """The textbook NumPy update (numpy_mlp.TextbookAdam / TextbookMomentum)."""
    opt = TextbookAdam(param, lr=LR) if kind == "adam" else TextbookMomentum(param, lr=LR)

    def step():
        opt.step(grad)
    return step


# --- digits end to end ---------------------------------------------------------------------

def digits_data(dtype, seed: int = 0):
    """sklearn's bundled 8x8 digits: a stratified 75/25 split (random_state=seed),
    standardised with statistics of the training part only, cast to ``dtype``."""
    datasets = require("sklearn.datasets")
    model_selection = require("sklearn.model_selection")
    preprocessing = require("sklearn.preprocessing")
    X, y = datasets.load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = model_selection.train_test_split(
        X, y, test_size=0.25, random_state=seed, stratify=y)
    scaler = preprocessing.StandardScaler().fit(Xtr)
    Xtr = np.ascontiguousarray(scaler.transform(Xtr), dtype=dtype)
    Xte = np.ascontiguousarray(scaler.transform(Xte), dtype=dtype)
    return Xtr, ytr.astype(np.int64), Xte, yte.astype(np.int64)


def sklearn_digits(data, sizes, epochs: int, batch: int, seed: int = 0):
    """``fit`` of a fresh MLPClassifier for exactly ``epochs`` epochs (no early stop);
    returns a callable doing the fit and returning the test accuracy."""
    Xtr, ytr, Xte, yte = data
    exceptions = require("sklearn.exceptions")

    def fit():
        clf = _sklearn_mlp(sizes, batch, seed, max_iter=epochs, tol=0.0,
                           n_iter_no_change=epochs + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
            clf.fit(Xtr, ytr)
        if clf.n_iter_ != epochs:
            raise RuntimeError(f"sklearn ran {clf.n_iter_} epochs, not {epochs}")
        return float(np.mean(clf.predict(Xte) == yte))
    return fit


def torch_digits(data, sizes, epochs: int, batch: int, fused: bool, seed: int = 0):
    """A fresh torch MLP trained for ``epochs`` epochs on mini-batches drawn from a new
    permutation each epoch (last partial batch kept); returns fit -> test accuracy."""
    torch = require("torch")
    Xtr, ytr, Xte, yte = (torch.from_numpy(a) for a in data)
    n = Xtr.shape[0]
    kwargs = {"fused": True} if fused else {}
    loss_fn = torch.nn.functional.cross_entropy

    def fit():
        model = _torch_mlp(torch, sizes, data[0].dtype, seed)
        opt = torch.optim.Adam(model.parameters(), lr=LR, **kwargs)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for start in range(0, n, batch):
                idx = perm[start:start + batch]
                opt.zero_grad(set_to_none=True)
                loss_fn(model(Xtr[idx]), ytr[idx]).backward()
                opt.step()
        with torch.no_grad():
            return float((model(Xte).argmax(1) == yte).double().mean())
    return fit
