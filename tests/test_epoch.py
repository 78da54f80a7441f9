"""The whole-epoch kernel path gives the weights of the step-by-step path, bit for bit.

``train_epoch`` (fastnn.reference.training) calls a backend's own kernels in the order
the Python step calls them, so on one backend the two paths must agree exactly: same
parameters, optimizer state, step count, loss and accuracy history.
"""

import functools

import numpy as np
import pytest

import fastnn
from _bounds import whole_run_bound
from fastnn import _epoch
from fastnn.optim import SGD, Adagrad, Adam, AdamW, DivergenceError, Momentum, Nesterov, RMSProp
from fastnn.schedules import InverseScaling, StepDecay

BACKENDS = ["numpy", "numba", "cython"]
OPTIMIZERS = [
    lambda: SGD(lr=0.05, clip_norm=0.5),
    lambda: Momentum(lr=0.05, dampening=0.3, weight_decay=1e-3),
    lambda: Nesterov(lr=0.05),
    lambda: Adagrad(lr=0.05, eps_inside_sqrt=True),
    lambda: RMSProp(lr=0.01, weight_decay=1e-3),
    lambda: Adam(lr=InverseScaling(0.01)),
    lambda: AdamW(lr=StepDecay(0.01, step_size=1, gamma=0.5), decay_biases=True),
    lambda: AdamW(lr=0.01, weight_decay=0.0),
]
# Every other optimizer of the registry (one added to the table is tested here without
# an edit), with some L2 or decoupled decay.
OPTIMIZERS += [
    functools.partial(fastnn.optim.OPTIMIZERS[row.name], lr=0.01, weight_decay=1e-3)
    for row in fastnn.registry.OPTIMIZERS
    if row.name not in ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
]


def _data(loss, n=150, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    y3 = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    y = {
        "cross_entropy": y3,
        "cross_entropy_onehot": np.eye(3)[y3],
        "binary_cross_entropy": np.eye(3)[y3],
        "mse": X[:, :2] * 2,
        "poisson": np.random.default_rng(seed + 1).poisson(np.exp(0.5 * X[:, :2])),
    }[loss]
    return X, y


def _train(
    backend, loss, make_opt, dtype, *, epoch_kernel, frozen=False, epochs=3, monkeypatch=None
):
    X, y = _data(loss)
    net = fastnn.MLP(
        [5, 12, 7, 2 if loss in ("mse", "poisson") else 3],
        ["tanh", "elu"],
        loss=loss.replace("_onehot", ""),
        dtype=dtype,
        backend=backend,
        random_state=4,
    )
    if frozen:
        net.freeze(0)
    opt = make_opt()
    assert _epoch.supports(net, opt), "every backend must provide train_epoch"
    calls = []
    kernel = net.kernels._raw.train_epoch
    monkeypatch.setattr(
        net.kernels._raw, "train_epoch", lambda *a: (calls.append(1), kernel(*a))[1]
    )
    if not epoch_kernel:
        monkeypatch.setattr(_epoch, "supports", lambda model, optimizer: False)
    hist = fastnn.fit(net, X, y, optimizer=opt, epochs=epochs, batch_size=32)
    monkeypatch.undo()
    assert bool(calls) == epoch_kernel  # fit really took the path under test
    return net, opt, hist


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "loss", ["cross_entropy", "cross_entropy_onehot", "binary_cross_entropy", "mse", "poisson"]
)
def test_epoch_kernel_equals_step_path_for_every_loss(backend, dtype, loss, monkeypatch):
    a, oa, ha = _train(
        backend, loss, OPTIMIZERS[5], dtype, epoch_kernel=True, monkeypatch=monkeypatch
    )
    b, ob, hb = _train(
        backend, loss, OPTIMIZERS[5], dtype, epoch_kernel=False, monkeypatch=monkeypatch
    )
    np.testing.assert_array_equal(a.params, b.params)
    assert oa.t == ob.t == 3 * 5
    assert ha.history["loss"] == hb.history["loss"]
    assert ha.history.get("accuracy") == hb.history.get("accuracy")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make_opt", OPTIMIZERS)
@pytest.mark.parametrize("frozen", [False, True])
def test_epoch_kernel_equals_step_path_for_every_optimizer(backend, make_opt, frozen, monkeypatch):
    a, oa, _ = _train(
        backend,
        "cross_entropy",
        make_opt,
        "float32",
        epoch_kernel=True,
        frozen=frozen,
        monkeypatch=monkeypatch,
    )
    b, ob, _ = _train(
        backend,
        "cross_entropy",
        make_opt,
        "float32",
        epoch_kernel=False,
        frozen=frozen,
        monkeypatch=monkeypatch,
    )
    np.testing.assert_array_equal(a.params, b.params)
    for name in oa.state:
        np.testing.assert_array_equal(oa.state[name], ob.state[name], err_msg=name)
    assert oa.last_grad_norm == ob.last_grad_norm


@pytest.mark.parametrize("backend", BACKENDS)
def test_epoch_cut_into_calls_gives_the_same_weights(backend, monkeypatch):
    a, _, ha = _train(
        backend,
        "cross_entropy",
        OPTIMIZERS[5],
        "float64",
        epoch_kernel=True,
        monkeypatch=monkeypatch,
    )
    monkeypatch.setattr(_epoch, "_FLOPS_PER_CALL", 1.0)  # one batch per call
    b, _, hb = _train(
        backend,
        "cross_entropy",
        OPTIMIZERS[5],
        "float64",
        epoch_kernel=True,
        monkeypatch=monkeypatch,
    )
    np.testing.assert_array_equal(a.params, b.params)
    assert ha.history["loss"] == hb.history["loss"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_epoch_kernel_stops_on_divergence_with_parameters_untouched(backend):
    X, y = _data("mse")
    net = fastnn.MLP([5, 12, 2], "relu", loss="mse", backend=backend, random_state=0)
    opt = SGD(lr=1e6)
    assert _epoch.supports(net, opt)
    with pytest.raises(DivergenceError) as info:
        net.train_epoch(*net.check_data(X, y), opt, batch_size=16)
    assert info.value.what in ("loss", "gradient")
    assert np.isfinite(net.params).all()
    assert opt.t >= 1


def test_models_with_batch_norm_and_dropout_use_the_kernel():
    opt = Adam()
    assert _epoch.supports(fastnn.MLP([3, 4, 2], batch_norm=True, backend="numpy"), opt)
    assert _epoch.supports(fastnn.MLP([3, 4, 2], dropout=0.2, backend="numpy"), opt)

    class MyAdam(Adam):
        pass

    assert not _epoch.supports(fastnn.MLP([3, 4, 2], backend="numpy"), MyAdam())


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_dense_layer_without_bias_trains_on_the_step_path(backend):
    """A Dense layer without bias and without a BatchNorm after it is not an epoch-kernel
    unit (its units all carry a bias): train_epoch takes the step path (it used to stop
    on a KeyError while planning the kernel's layout) and gives the step path's bits."""
    from fastnn.layers import Dense

    def net():
        layers = [Dense(3, 8, activation="relu", bias=False), Dense(8, 2)]
        return fastnn.MLP(layers, loss="cross_entropy", backend=backend, random_state=0)

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((50, 3)).astype(np.float32), rng.integers(0, 2, 50)
    assert _epoch.units(net()) is None
    a, b = net(), net()
    opt_a, opt_b = Adam(), Adam()
    for _ in range(2):
        logs = a.train_epoch(X, y, opt_a, 16)
        b.train_epoch(X, y, opt_b, 16, on_step=lambda j, loss: None)
    np.testing.assert_array_equal(a.params, b.params)
    assert np.isfinite(logs["loss"])


# --- dropout in the whole-epoch contract (docs/spec.md §7) -----------------------------


def _dropout_net(backend, dtype="float32", n_threads=1, loss="mse"):
    """relu and leaky_relu (exact kernels); with mse every kernel on the path is exact
    across backends (docs/spec.md §11), with cross_entropy softmax is not."""
    return fastnn.MLP(
        [5, 12, 9, 3 if loss != "mse" else 2],
        ["relu", "leaky_relu"],
        loss=loss,
        dropout=[0.3, 0.5],
        dtype=dtype,
        backend=backend,
        random_state=4,
        n_threads=n_threads,
    )


def _fit(net, path, make_opt=OPTIMIZERS[5], epochs=3, monkeypatch=None):
    """fit through the epoch kernel ("epoch"), the step path ("step") or the NumPy
    reference contract on this backend's model ("reference")."""
    X, y = _data(net.loss.name)
    opt = make_opt()
    if path == "reference":
        from fastnn.reference import training

        monkeypatch.setattr(net.kernels._raw, "train_epoch", training.train_epoch)
    if path == "step":
        monkeypatch.setattr(_epoch, "supports", lambda model, optimizer: False)
    hist = fastnn.fit(net, X, y, optimizer=opt, epochs=epochs, batch_size=32)
    if monkeypatch is not None:
        monkeypatch.undo()
    return opt, hist


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_dropout_epoch_kernel_equals_reference_and_step_path(backend, dtype, loss, monkeypatch):
    """The epoch kernel gives the step path's weights bit for bit; relu mse models (no
    transcendental) also the NumPy reference contract's."""
    runs = {}
    paths = ("epoch", "step", "reference") if loss == "mse" else ("epoch", "step")
    for path in paths:
        net = _dropout_net(backend, dtype, loss=loss)
        calls = []
        kernel = net.kernels._raw.train_epoch
        if path == "epoch":
            monkeypatch.setattr(
                net.kernels._raw,
                "train_epoch",
                lambda *a, calls=calls, kernel=kernel: (calls.append(1), kernel(*a))[1],
            )
        opt, hist = _fit(net, path, monkeypatch=monkeypatch)
        monkeypatch.undo()
        assert bool(calls) == (path == "epoch")
        runs[path] = (net, opt, hist)
    a = runs["epoch"][0]
    assert a._dropout_step == runs["step"][0]._dropout_step == 15
    for path in paths[1:]:
        net, opt, hist = runs[path]
        np.testing.assert_array_equal(a.params, net.params, err_msg=path)
        assert runs["epoch"][2].history["loss"] == hist.history["loss"]
        assert runs["epoch"][1].last_grad_norm == opt.last_grad_norm


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dropout_weights_agree_across_backends_and_thread_counts(dtype):
    """The masks are the same everywhere: relu mse models give the same bits on every
    backend (docs/spec.md §11) and thread count."""
    nets = []
    for backend in BACKENDS:
        for n_threads in (1, 2):
            net = _dropout_net(backend, dtype, n_threads)
            _fit(net, "epoch")
            nets.append(((backend, n_threads), net))
    for name, net in nets[1:]:
        np.testing.assert_array_equal(nets[0][1].params, net.params, err_msg=str(name))


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_masks_of_every_backend_are_the_reference_masks(backend):
    """The masks the epoch kernel leaves in its workspace are dropout_mask's, whatever
    the thread count; the step path's too."""
    from fastnn.reference.masks import dropout_mask

    X, y = _data("mse", n=32)
    for n_threads in (1, 2):
        net = _dropout_net(backend, n_threads=n_threads)
        net.train_epoch(*net.check_data(X, y), Adam(), 32, shuffle=False)
        plan = net._epoch_plans[32]
        drops = [layer for layer in net.layers if isinstance(layer, fastnn.Dropout)]
        for i, layer in enumerate(drops):
            lo = plan.dropout_off[i, 1]
            got = plan.masks[lo : lo + 32 * layer.n_out].reshape(32, layer.n_out)
            want = dropout_mask(
                net._dropout_seed, 0, i, layer.rate, np.empty((32, layer.n_out), np.uint8)
            )
            np.testing.assert_array_equal(got, want)
    step = _dropout_net(backend)
    step.train_epoch(
        *step.check_data(X, y), Adam(), 32, shuffle=False, on_step=lambda j, loss: None
    )
    last_dropout = max(
        i for i, layer in enumerate(step.layers) if isinstance(layer, fastnn.Dropout)
    )
    np.testing.assert_array_equal(step._train_spaces[32].layers[last_dropout]["mask"], want)


def test_dropout_mask_keep_rate_is_within_a_binomial_bound():
    from fastnn.reference.masks import dropout_mask, dropout_threshold

    n = 1 << 20
    for rate in (0.1, 0.2, 0.5, 0.9):
        keep = dropout_mask(12345, 7, 1, rate, np.empty(n, np.uint8)).mean()
        p = 1 - dropout_threshold(rate) / 2**24
        assert abs(p - (1 - rate)) <= 2**-24
        # 6 standard deviations of a Binomial(n, p) mean
        assert abs(keep - p) < 6 * np.sqrt(p * (1 - p) / n), rate
    # different steps and layers draw different masks
    a, b, c = (
        dropout_mask(1, t, layer, 0.5, np.empty(4096, np.uint8))
        for t, layer in ((0, 0), (1, 0), (0, 1))
    )
    assert 0.4 < (a != b).mean() < 0.6 and 0.4 < (a != c).mean() < 0.6
    assert dropout_mask(1, 0, 0, 0.0, np.empty(64, np.uint8)).all()


def test_dropout_mask_is_splitmix64():
    """The published SplitMix64 test vector (seed 1234567) and the threshold rule."""
    from fastnn.reference.masks import dropout_threshold, splitmix

    assert splitmix(1234567, 1) == 6457827717110365317
    assert splitmix(1234567, 2) == 3203168211198807973
    assert dropout_threshold(0.5) == 1 << 23 and dropout_threshold(0.0) == 0
    assert dropout_threshold(2**-30) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_model_saved_and_loaded_continues_bit_identically(backend, tmp_path):
    X, y = _data("mse")
    a = _dropout_net(backend)
    a.fit(X, y, optimizer=Adam(lr=0.01), epochs=2, batch_size=32)
    fastnn.save(a, tmp_path / "a.fastnn")
    b = fastnn.load(tmp_path / "a.fastnn", backend=backend)
    assert (b._dropout_seed, b._dropout_step) == (a._dropout_seed, a._dropout_step)
    a.fit(X, y, epochs=2, batch_size=32)
    b.fit(X, y, epochs=2, batch_size=32)
    np.testing.assert_array_equal(a.params, b.params)
    c = a.copy()
    assert (c._dropout_seed, c._dropout_step) == (a._dropout_seed, a._dropout_step)


def test_files_without_a_dropout_key_load_and_derive_it_from_the_dropout_stream():
    """States saved before the key existed: the seed is drawn from the restored dropout
    stream (deterministic), the step count starts at 0."""
    a = _dropout_net("numpy")
    states = a.rng_states()
    del states["dropout_key"]
    b, c = _dropout_net("numpy"), _dropout_net("numpy")
    b.set_rng_states(states)
    c.set_rng_states(states)
    g = np.random.default_rng()
    g.bit_generator.state = a.rngs["dropout"].bit_generator.state
    expect = int(g.integers(0, 2**64, dtype=np.uint64))
    assert b._dropout_seed == c._dropout_seed == expect and b._dropout_step == 0
    X, y = _data("mse")
    b.fit(X, y, optimizer=Adam(lr=0.01), epochs=1, batch_size=32)
    c.fit(X, y, optimizer=Adam(lr=0.01), epochs=1, batch_size=32)
    np.testing.assert_array_equal(b.params, c.params)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_plan_is_allocated_once_per_batch_size(backend):
    X, y = _data("cross_entropy", n=100)
    net = fastnn.MLP([5, 8, 3], loss="cross_entropy", backend=backend, random_state=0)
    net.fit(X, y, epochs=1, batch_size=32)
    plan = net._epoch_plans[32]
    ws, stats = plan.ws, plan.stats
    net.fit(X, y, epochs=2, batch_size=32)
    assert net._epoch_plans[32] is plan and plan.ws is ws and plan.stats is stats
    assert list(net._epoch_plans) == [32]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_poll_callback_training_the_model_again_leaves_the_outer_logs_alone(backend):
    """A poll callback may train the same model with the same batch size; the outer
    epoch's logs stay the sums of its own batches (the inner epoch gets its own plan)."""
    X, y = _data("cross_entropy", n=100)

    def run(nested):
        net = fastnn.MLP([5, 8, 3], loss="cross_entropy", backend=backend, random_state=0)
        Xc, yc = net.check_data(X, y)
        still = SGD(lr=0.0)  # the inner epoch trains without moving a weight
        inner = []

        def poll(done):
            if nested:
                inner.append(net.train_epoch(Xc[:40], yc[:40], still, 32, shuffle=False))

        logs = net.train_epoch(Xc, yc, Adam(lr=0.01), 32, shuffle=False, poll=poll)
        return logs, inner, net

    alone, _, net_alone = run(False)
    logs, inner, net = run(True)
    assert inner and inner[0] != alone
    assert logs == alone
    np.testing.assert_array_equal(net.params, net_alone.params)
    assert list(net._epoch_plans) == [32] and not net._epoch_plans[32].busy


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_stops_between_compiled_calls_at_a_step_boundary(backend, monkeypatch, tmp_path):
    """A Ctrl-C that arrives during a compiled call is acted on when the call returns:
    the model holds the weights of its last completed step and can be saved."""
    import os
    import signal

    X, y = _data("cross_entropy", n=64)
    net = fastnn.MLP([5, 8, 3], loss="cross_entropy", backend=backend, random_state=0)
    monkeypatch.setattr(_epoch, "_FLOPS_PER_CALL", 1.0)  # one batch per call
    after = []
    kernel = net.kernels._raw.train_epoch

    def call(*args):
        if len(after) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # arrives during the third call
        kernel(*args)
        after.append(net.params.copy())

    monkeypatch.setattr(net.kernels._raw, "train_epoch", call)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, epochs=5, batch_size=8)
    assert len(after) == 3 and net.optimizer.t == 3
    np.testing.assert_array_equal(net.params, after[-1])
    assert net.history.stop_reason == "interrupted"
    monkeypatch.undo()
    fastnn.save(net, tmp_path / "interrupted.fastnn")
    np.testing.assert_array_equal(
        fastnn.load(tmp_path / "interrupted.fastnn").predict(X), net.predict(X)
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("epoch_kernel", [True, False], ids=["epoch kernel", "step path"])
def test_an_explicit_order_visits_the_rows_in_that_order(backend, epoch_kernel):
    """train_epoch(order=o) on X trains exactly as an unshuffled epoch on X[o]."""
    X, y = _data("cross_entropy", n=90)
    order = np.random.default_rng(5).permutation(90)
    nets = [
        fastnn.MLP([5, 7, 3], loss="cross_entropy", backend=backend, random_state=1)
        for _ in range(2)
    ]
    opts = [Adam(lr=0.01), Adam(lr=0.01)]
    on_step = None if epoch_kernel else (lambda j, loss: None)
    a = nets[0].train_epoch(*nets[0].check_data(X, y), opts[0], 16, order=order, on_step=on_step)
    b = nets[1].train_epoch(
        *nets[1].check_data(X[order], y[order]), opts[1], 16, shuffle=False, on_step=on_step
    )
    np.testing.assert_array_equal(nets[0].params, nets[1].params)
    assert a == b


@pytest.mark.parametrize(
    "order, error, match",
    [
        (np.arange(89), ValueError, r"order must have shape \(90,\)"),
        (np.arange(90).reshape(9, 10), ValueError, r"order must have shape \(90,\)"),
        (np.arange(90.0), TypeError, "order must hold integer row indices"),
        (np.arange(1, 91), ValueError, r"row indices in \[0, 90\)"),
        (np.arange(90) - 1, ValueError, r"row indices in \[0, 90\)"),
    ],
)
def test_a_bad_order_is_refused_before_training(order, error, match):
    X, y = _data("cross_entropy", n=90)
    net = fastnn.MLP([5, 7, 3], loss="cross_entropy", random_state=1)
    before = net.params.copy()
    with pytest.raises(error, match=match):
        net.train_epoch(*net.check_data(X, y), Adam(), 16, order=order)
    np.testing.assert_array_equal(net.params, before)


def test_a_file_written_without_a_dropout_key_loads_and_trains_deterministically(
    tmp_path, monkeypatch
):
    """A file as fastnn wrote it before the key existed (rng: the four streams only)."""
    import json

    from fastnn.model import MLP, _rng_state_to_json

    a = _dropout_net("numpy")
    X, y = _data("mse")
    a.fit(X, y, optimizer=Adam(lr=0.01), epochs=1, batch_size=32)
    with monkeypatch.context() as m:
        m.setattr(
            MLP, "rng_states", lambda self: {n: _rng_state_to_json(g) for n, g in self.rngs.items()}
        )
        fastnn.save(a, tmp_path / "old.fastnn")
    with open(tmp_path / "old.fastnn", "rb") as f:
        assert b"dropout_key" not in f.read()
    b, c = (fastnn.load(tmp_path / "old.fastnn") for _ in range(2))
    g = np.random.default_rng()
    g.bit_generator.state = a.rngs["dropout"].bit_generator.state
    assert b._dropout_seed == int(g.integers(0, 2**64, dtype=np.uint64))
    assert (c._dropout_seed, c._dropout_step) == (b._dropout_seed, 0)
    b.fit(X, y, epochs=1, batch_size=32)
    c.fit(X, y, epochs=1, batch_size=32)
    np.testing.assert_array_equal(b.params, c.params)
    assert json.loads(json.dumps(b.rng_states()))["dropout_key"]["step"] == "5"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_hidden_activation_trains_alike_in_the_epoch_kernel(backend, dtype, monkeypatch):
    """Every activation of the registry reaches the epoch kernel's forward and backward
    dispatch, which gives the step path's weights bit for bit (the same kernels in the
    same order). One hidden layer per activation: one model (and one compiled Numba
    variant) holds them all; step, whose derivative is 0, is the lowest."""
    names = [a.name for a in fastnn.registry.ACTIVATIONS]
    hidden = ["step", *(name for name in names if name != "step")]
    X, y = _data("cross_entropy", n=70)

    def make():
        return fastnn.MLP(
            [5, *[6] * len(hidden), 3], hidden, loss="cross_entropy", dtype=dtype,
            backend=backend, random_state=2,
        )  # fmt: skip

    runs = []
    for epoch_kernel in (True, False):
        net = make()
        X_, y_ = net.check_data(X, y)
        opt = Adam(lr=0.01, clip_norm=0.5)
        calls = []
        kernel = net.kernels._raw.train_epoch
        monkeypatch.setattr(
            net.kernels._raw, "train_epoch", lambda *a, k=kernel, c=calls: (c.append(1), k(*a))[1]
        )
        if not epoch_kernel:
            monkeypatch.setattr(_epoch, "supports", lambda model, optimizer: False)
        # shuffled, then in order (the kernel then reads X in place)
        logs = [net.train_epoch(X_, y_, opt, 16, shuffle=shuffle) for shuffle in (True, False)]
        monkeypatch.undo()
        assert bool(calls) == epoch_kernel
        runs.append((net, logs, opt))
    (a, logs_a, opt_a), (b, logs_b, opt_b) = runs
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(opt_a.state["m"], opt_b.state["m"])
    assert logs_a == logs_b and opt_a.t == opt_b.t == 10
    assert np.isfinite(a.params).all()
    # the gradient reached every layer above step's through all the others
    changed = [not np.array_equal(w0, w1) for w0, w1 in zip(make().weights, a.weights)]
    assert changed == [False] + [True] * len(hidden)


# --- batch normalisation in the whole-epoch contract (docs/spec.md §7, §9) --------------


def _bn_net(backend, dtype="float32", *, dropout=0.0, frozen=None, n_threads=1, loss="mse"):
    """Two batch-normalised hidden layers (relu and leaky_relu: exact kernels, so with
    mse every difference between backends comes from the statistics' sums)."""
    net = fastnn.MLP(
        [5, 12, 9, 3 if loss != "mse" else 2],
        ["relu", "leaky_relu"],
        loss=loss,
        batch_norm=True,
        dropout=dropout,
        dtype=dtype,
        backend=backend,
        random_state=4,
        n_threads=n_threads,
    )
    if frozen is not None:
        net.freeze(_unit_layers(net, [frozen] if isinstance(frozen, int) else frozen))
    return net


def _unit_layers(net, units):
    """The indices in net.layers of hidden units ``units`` (a Dense and the layers
    after it up to the next Dense)."""
    starts = [i for i, layer in enumerate(net.layers) if isinstance(layer, fastnn.Dense)]
    starts.append(len(net.layers))
    return [j for u in units for j in range(starts[u], starts[u + 1])]


def _bn_fit(net, path, batch_size, monkeypatch, n=148, make_opt=OPTIMIZERS[5]):
    """fit on ``path`` ("epoch" or "step"), checking that it was the path taken."""
    X, y = _data(net.loss.name, n=n)
    opt = make_opt()
    calls = []
    kernel = net.kernels._raw.train_epoch
    monkeypatch.setattr(
        net.kernels._raw, "train_epoch", lambda *a: (calls.append(1), kernel(*a))[1]
    )
    if path == "step":
        monkeypatch.setattr(_epoch, "supports", lambda model, optimizer: False)
    hist = fastnn.fit(net, X, y, optimizer=opt, epochs=3, batch_size=batch_size)
    monkeypatch.undo()
    assert bool(calls) == (path == "epoch")
    return opt, hist


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "case",
    [
        dict(),
        dict(dropout=[0.3, 0.2]),
        dict(frozen=1),  # a frozen batch-normalised layer above a trainable one
        dict(frozen=0, loss="cross_entropy"),
    ],
    ids=["bn", "bn+dropout", "frozen middle", "frozen lowest, cross-entropy"],
)
# 148 rows: 4 batches of 30 and one of 28; 4 of 32 and one of 20; 7 of 21 and a single
# row, which joins the batch before it (MLP._batches): 7 steps per epoch
@pytest.mark.parametrize("batch_size, steps", [(30, 5), (32, 5), (21, 7)])
def test_batch_norm_epoch_kernel_equals_step_path(
    backend, dtype, case, batch_size, steps, monkeypatch
):
    """Weights, running statistics, optimizer state, losses and the gradient norm of the
    epoch kernel are the step path's, bit for bit."""
    runs = {}
    for path in ("epoch", "step"):
        net = _bn_net(backend, dtype, **case)
        runs[path] = (net, *_bn_fit(net, path, batch_size, monkeypatch))
    (a, oa, ha), (b, ob, hb) = runs["epoch"], runs["step"]
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.buffers, b.buffers)
    assert not np.array_equal(a.buffers, _bn_net(backend, dtype, **case).buffers)
    for name in oa.state:
        np.testing.assert_array_equal(oa.state[name], ob.state[name], err_msg=name)
    assert oa.t == ob.t == 3 * steps
    assert ha.history["loss"] == hb.history["loss"]
    assert ha.history.get("accuracy") == hb.history.get("accuracy")
    assert oa.last_grad_norm == ob.last_grad_norm
    assert a._dropout_step == b._dropout_step


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make_opt", [OPTIMIZERS[0], OPTIMIZERS[1], OPTIMIZERS[6]])
def test_batch_norm_epoch_kernel_equals_step_path_for_other_optimizers(
    backend, make_opt, monkeypatch
):
    """gamma and beta are updated like every other parameter: clipping, L2 and AdamW's
    decay of the biases' segment included."""
    nets = {}
    for path in ("epoch", "step"):
        net = _bn_net(backend, loss="cross_entropy")
        nets[path] = (net, _bn_fit(net, path, 32, monkeypatch, make_opt=make_opt)[0])
    np.testing.assert_array_equal(nets["epoch"][0].params, nets["step"][0].params)
    np.testing.assert_array_equal(nets["epoch"][0].buffers, nets["step"][0].buffers)
    assert nets["epoch"][1].last_grad_norm == nets["step"][1].last_grad_norm


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_norm_weights_agree_across_backends_and_thread_counts(dtype):
    """Every backend's epoch kernel against the NumPy reference: the statistics are
    float64 sums whose order the spec leaves to rule 6, so the bound of docs/spec.md §11
    for whole runs (n steps of Adam, lr, kappa = 1e4, 2 ulp); on one backend any thread
    count gives the same bits."""
    X, y = _data("mse")
    nets = {}
    for backend in BACKENDS:
        for n_threads in (1, 2):
            net = _bn_net(backend, dtype, dropout=[0.3, 0.0], n_threads=n_threads)
            fastnn.fit(net, X, y, optimizer=Adam(lr=0.01), epochs=3, batch_size=32)
            nets[backend, n_threads] = net
    ref = nets["numpy", 1]
    n_steps = ref.optimizer.t
    for (backend, n_threads), net in nets.items():
        where = f"{backend}, {n_threads} threads"
        np.testing.assert_array_equal(net.params, nets[backend, 1].params, err_msg=where)
        np.testing.assert_array_equal(net.buffers, nets[backend, 1].buffers, err_msg=where)
        for mine, want in ((net.params, ref.params), (net.buffers, ref.buffers)):
            tol = whole_run_bound(n_steps, 0.01, np.maximum(np.abs(want), 1), dtype)
            assert (np.abs(mine - want) <= tol).all(), backend


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "n, batch_size, match", [(1, 8, "X has a single row"), (40, 1, "batch_size")]
)
def test_batch_norm_training_refuses_batches_of_one_row_before_any_kernel(
    backend, n, batch_size, match, monkeypatch
):
    """ValueError naming the argument, on both paths, before any kernel runs."""
    X, y = _data("mse", n=n)
    for on_step in (None, lambda j, loss: None):
        net = _bn_net(backend)
        Xc, yc = net.check_data(X, y)
        before = (net.params.copy(), net.buffers.copy())
        for name in ("train_epoch", "dense_forward", "batch_norm_train"):
            monkeypatch.setattr(
                net.kernels._raw, name, lambda *a, **k: pytest.fail("a kernel ran"), raising=False
            )
        with pytest.raises(ValueError, match=match):
            net.train_epoch(Xc, yc, Adam(), batch_size, on_step=on_step)
        monkeypatch.undo()
        np.testing.assert_array_equal(net.params, before[0])
        np.testing.assert_array_equal(net.buffers, before[1])
    # a frozen batch-normalised layer uses its running statistics: one row is fine
    net = _bn_net(backend, frozen=[0, 1])
    net.train_epoch(*net.check_data(X, y), Adam(), batch_size)


@pytest.mark.parametrize("backend", ["numba", "cython", "numpy"])
@pytest.mark.parametrize(
    "key, value",
    [
        ("bn", lambda bn: bn + np.int64(3)),
        ("bn_off", lambda off: off + np.int64(10_000)),
        ("bn_off", lambda off: off[:, :3].copy()),
        ("batch_size", 1),
    ],
)
def test_the_epoch_kernel_refuses_bad_batch_norm_arguments(backend, key, value, monkeypatch):
    """Codes outside 0-2, offsets outside the buffers, a batch of one row in training:
    ValueError from the checked tier (``fastnn.backend(name)._train_epoch``), with params,
    buffers and ws untouched."""
    import inspect

    from fastnn.reference.training import train_epoch as contract

    net = _bn_net(backend)
    X, y = net.check_data(*_data("mse", n=40))
    seen = []
    kernel = net.kernels._raw.train_epoch
    monkeypatch.setattr(net.kernels._raw, "train_epoch", lambda *a: (seen.append(a), kernel(*a))[1])
    net.train_epoch(X, y, Adam(), 8)
    monkeypatch.undo()
    args = inspect.signature(contract).bind(*seen[0]).arguments
    args[key] = value(args[key]) if callable(value) else value
    before = [a.copy() for a in (args["params"], args["buffers"], args["ws"])]
    with pytest.raises(ValueError, match="train_epoch"):
        net.kernels._train_epoch(*args.values())
    for arr, old in zip((args["params"], args["buffers"], args["ws"]), before):
        np.testing.assert_array_equal(arr, old)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_layout_is_checked_once_per_plan_and_calls_go_straight_to_the_kernel(
    backend, monkeypatch
):
    """The plan of a batch size checks its layout once (epoch_args.check_layout); the
    calls then reach the raw kernel unchecked, and with the debug switch
    (FASTNN_CHECK_KERNELS) every call goes through the checked tier, same bits."""
    from fastnn._kernels import epoch_args

    layouts, calls = [], []
    real_layout, real_call = epoch_args.check_layout, epoch_args.check_call
    monkeypatch.setattr(
        epoch_args, "check_layout", lambda *a: (layouts.append(1), real_layout(*a))[1]
    )
    monkeypatch.setattr(
        epoch_args, "check_call", lambda *a, **k: (calls.append(1), real_call(*a, **k))[1]
    )
    monkeypatch.setattr(_epoch, "_FLOPS_PER_CALL", 1.0)  # one batch per call
    X, y = _data("mse", n=40)
    params = []
    for checked in (False, True):
        monkeypatch.setattr("fastnn._backend.CHECK_INTERNAL_CALLS", checked)
        monkeypatch.setattr(fastnn.backend(backend), "_checked_raw", None)
        net = _bn_net(backend, dropout=0.2)
        Xc, yc = net.check_data(X, y)
        opt = Adam()
        for _ in range(3):
            net.train_epoch(Xc, yc, opt, 8)
        net.train_epoch(Xc, yc, opt, 16)
        params.append(net.params.copy())
        if not checked:
            assert layouts == [1, 1] and calls == []  # one plan per batch size
            layouts.clear()
    assert len(calls) == 3 * 5 + 3  # every call checked, the plans' checks included
    np.testing.assert_array_equal(params[0], params[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_model_saved_and_loaded_continues_bit_identically(backend, tmp_path):
    """The running statistics the kernel leaves are saved and load back exactly."""
    X, y = _data("mse")
    a = _bn_net(backend, dropout=[0.3, 0.0])
    a.fit(X, y, optimizer=Adam(lr=0.01), epochs=2, batch_size=32)
    fastnn.save(a, tmp_path / "a.fastnn")
    b = fastnn.load(tmp_path / "a.fastnn", backend=backend)
    np.testing.assert_array_equal(b.buffers, a.buffers)
    np.testing.assert_array_equal(b.predict(X), a.predict(X))
    a.fit(X, y, epochs=2, batch_size=32)
    b.fit(X, y, epochs=2, batch_size=32)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.buffers, b.buffers)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_divergence_stops_like_the_step_path(backend, monkeypatch):
    """A non-finite loss or gradient stops the epoch kernel where the step path stops,
    with the same parameters and running statistics left behind."""
    X, y = _data("mse")
    X = X * 1e30
    left = {}
    for path in ("epoch", "step"):
        net = _bn_net(backend, loss="mse")
        opt = SGD(lr=1e30)
        if path == "step":
            monkeypatch.setattr(_epoch, "supports", lambda model, optimizer: False)
        with pytest.raises(DivergenceError) as info:
            net.train_epoch(*net.check_data(X, y), opt, 16, shuffle=False)
        monkeypatch.undo()
        left[path] = (net.params.copy(), net.buffers.copy(), opt.t, info.value.what)
    np.testing.assert_array_equal(left["epoch"][0], left["step"][0])
    np.testing.assert_array_equal(left["epoch"][1], left["step"][1])
    assert left["epoch"][2:] == left["step"][2:]


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")  # max_iter=3 does not converge
def test_batch_norm_estimators_train_through_the_epoch_kernel(monkeypatch):
    from fastnn import MLPClassifier

    X, y = _data("cross_entropy")
    est = MLPClassifier((8, 8), batch_norm=[True, False], max_iter=3, random_state=0)
    calls = []
    real = _epoch.train_epoch
    monkeypatch.setattr(_epoch, "train_epoch", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    est.fit(X, y)
    assert calls


# --- sample weights -------------------------------------------------------------------


def _weights(n=150, seed=7):
    """Non-negative weights with zeros and a wide range (no batch of 32 all zero)."""
    w = np.random.default_rng(seed).gamma(0.7, 2.0, n)
    w[::5] = 0.0
    return w


def _weighted_fit(backend, loss, make_opt, dtype, path, monkeypatch, w, **net_kw):
    """fit with sample weights on ``path`` ("epoch", "step" or "reference"), checking
    that the epoch kernel ran exactly when it should."""
    X, y = _data(loss)
    net = fastnn.MLP(
        [5, 12, 7, 2 if loss in ("mse", "poisson") else 3],
        net_kw.pop("acts", ["tanh", "elu"]),
        loss=loss.replace("_onehot", ""),
        dtype=dtype,
        backend=backend,
        random_state=4,
        **net_kw,
    )
    opt = make_opt()
    calls = []
    kernel = net.kernels._raw.train_epoch
    if path == "reference":
        from fastnn.reference import training

        kernel = training.train_epoch
    monkeypatch.setattr(
        net.kernels._raw, "train_epoch", lambda *a: (calls.append(1), kernel(*a))[1]
    )
    if path == "step":
        monkeypatch.setattr(_epoch, "supports", lambda model, optimizer: False)
    hist = fastnn.fit(net, X, y, optimizer=opt, epochs=3, batch_size=32, sample_weight=w)
    monkeypatch.undo()
    assert bool(calls) == (path != "step")
    return net, opt, hist


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "loss", ["cross_entropy", "cross_entropy_onehot", "binary_cross_entropy", "mse", "poisson"]
)
@pytest.mark.parametrize(
    "make_opt", [OPTIMIZERS[1], OPTIMIZERS[5], OPTIMIZERS[6]], ids=["momentum+L2", "adam", "adamw"]
)
def test_weighted_epoch_kernel_equals_step_path(backend, dtype, loss, make_opt, monkeypatch):
    """With sample weights (zeros included) the epoch kernel gives the step path's
    weights, optimizer state, losses and gradient norm bit for bit: the weighted loss
    kernels and the L2 decay scaled by m / S (docs/spec.md §4) on both paths."""
    w = _weights()
    a, oa, ha = _weighted_fit(backend, loss, make_opt, dtype, "epoch", monkeypatch, w)
    b, ob, hb = _weighted_fit(backend, loss, make_opt, dtype, "step", monkeypatch, w)
    np.testing.assert_array_equal(a.params, b.params)
    for name in oa.state:
        np.testing.assert_array_equal(oa.state[name], ob.state[name], err_msg=name)
    assert oa.t == ob.t == 3 * 5
    assert ha.history["loss"] == hb.history["loss"]
    assert ha.history.get("accuracy") == hb.history.get("accuracy")
    assert oa.last_grad_norm == ob.last_grad_norm
    # the weights changed the training
    c, _, _ = _weighted_fit(backend, loss, make_opt, dtype, "epoch", monkeypatch, None)
    assert not np.array_equal(a.params, c.params)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("path", ["epoch", "step"])
@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy", "mse", "poisson"])
def test_unit_weights_train_exactly_as_no_weights(backend, dtype, path, loss, monkeypatch):
    """Weights of 1 change no bit (w * l = l, S = m, the decay scale m / S = 1)."""
    ones = np.ones(150)
    a, oa, ha = _weighted_fit(backend, loss, OPTIMIZERS[1], dtype, path, monkeypatch, ones)
    b, ob, hb = _weighted_fit(backend, loss, OPTIMIZERS[1], dtype, path, monkeypatch, None)
    np.testing.assert_array_equal(a.params, b.params)
    assert ha.history["loss"] == hb.history["loss"]
    assert oa.last_grad_norm == ob.last_grad_norm


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weighted_epoch_kernel_equals_the_reference_contract(backend, dtype, monkeypatch):
    """relu with mse and plain SGD with L2 (no transcendental on the path): the
    compiled epoch kernels give the NumPy reference contract's weights bit for bit."""
    w = _weights()
    runs = [
        _weighted_fit(
            backend,
            "mse",
            lambda: Momentum(lr=0.05, weight_decay=1e-2),
            dtype,
            path,
            monkeypatch,
            w,
            acts=["relu", "leaky_relu"],
        )
        for path in ("epoch", "reference")
    ]
    np.testing.assert_array_equal(runs[0][0].params, runs[1][0].params)
    assert runs[0][2].history["loss"] == runs[1][2].history["loss"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weighted_batch_norm_and_dropout_epoch_kernel_equals_step_path(backend, dtype, monkeypatch):
    w = _weights()
    kw = dict(batch_norm=True, dropout=[0.3, 0.2])
    a, oa, _ = _weighted_fit(backend, "mse", OPTIMIZERS[1], dtype, "epoch", monkeypatch, w, **kw)
    b, ob, _ = _weighted_fit(backend, "mse", OPTIMIZERS[1], dtype, "step", monkeypatch, w, **kw)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.buffers, b.buffers)
    assert oa.last_grad_norm == ob.last_grad_norm


def test_weighted_epochs_agree_across_backends():
    """relu mse with weights: the same bits on every backend (docs/spec.md §11)."""
    X, y = _data("mse")
    w = _weights()
    nets = []
    for backend in BACKENDS:
        net = fastnn.MLP([5, 12, 2], "relu", backend=backend, random_state=4)
        fastnn.fit(
            net, X, y, optimizer=Momentum(lr=0.05, weight_decay=1e-2), epochs=2, sample_weight=w
        )
        nets.append(net)
    for net in nets[1:]:
        np.testing.assert_array_equal(nets[0].params, net.params)


@pytest.mark.parametrize("path", ["epoch", "step"])
@pytest.mark.parametrize(
    "weights, error, match",
    [
        (np.ones(149), ValueError, r"sample_weight must have one weight per sample"),
        (np.ones((150, 1)), ValueError, r"sample_weight must be a 1-D array"),
        (np.r_[-1.0, np.ones(149)], ValueError, r"sample_weight must be non-negative"),
        (np.r_[np.nan, np.ones(149)], ValueError, r"sample_weight contains NaN or infinity"),
        (np.r_[np.inf, np.ones(149)], ValueError, r"sample_weight contains NaN or infinity"),
        (np.zeros(150), ValueError, r"sample_weight must contain at least one non-zero"),
        (np.r_[np.zeros(32), np.ones(118)], ValueError, r"sample_weight: the weights of batch 0"),
        (np.array(["a"] * 150), TypeError, r"sample_weight must hold real numbers"),
        (np.ones(150, bool), TypeError, r"sample_weight must hold real numbers"),
    ],
    ids=["short", "2-D", "negative", "nan", "inf", "all zero", "zero batch", "str", "bool"],
)
def test_bad_sample_weights_are_refused_before_training(path, weights, error, match, monkeypatch):
    X, y = _data("mse")
    net = fastnn.MLP([5, 4, 2], "relu", random_state=0)
    before = net.params.copy()
    if path == "step":
        monkeypatch.setattr(_epoch, "supports", lambda model, optimizer: False)
    X, y = net.check_data(X, y)
    with pytest.raises(error, match=match):
        net.train_epoch(X, y, SGD(lr=0.1), 32, shuffle=False, sample_weight=weights)
    np.testing.assert_array_equal(net.params, before)


def test_a_scalar_sample_weight_weighs_every_row_alike(monkeypatch):
    """A scalar c: the weighted means are the unweighted ones up to the rounding of c
    l / (m c); with c = 1 exactly."""
    a, _, _ = _weighted_fit("numpy", "mse", OPTIMIZERS[5], "float64", "epoch", monkeypatch, 1)
    b, _, _ = _weighted_fit("numpy", "mse", OPTIMIZERS[5], "float64", "epoch", monkeypatch, None)
    np.testing.assert_array_equal(a.params, b.params)
    c, _, _ = _weighted_fit("numpy", "mse", OPTIMIZERS[5], "float64", "epoch", monkeypatch, 3.0)
    np.testing.assert_allclose(c.params, b.params, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_epoch_kernel_refuses_sample_weights_of_another_length(backend):
    X, y = _data("mse")
    net = fastnn.MLP([5, 4, 2], "relu", backend=backend, random_state=0)
    X, y = net.check_data(X, y)
    opt = SGD(lr=0.1)
    calls = []

    def short_weights(*a):  # through the checked tier: the raw kernel checks nothing
        calls.append(1)
        return net.kernels._train_epoch(*a[:-1], np.ones(X.shape[0] - 1))

    import unittest.mock

    with unittest.mock.patch.object(net.kernels._raw, "train_epoch", short_weights):
        with pytest.raises(ValueError, match="sample_weight"):
            net.train_epoch(X, y, opt, 32, sample_weight=np.ones(X.shape[0]))
    assert calls


# --- one step, written once --------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "loss, frozen, weighted",
    [("cross_entropy", None, False), ("mse", 0, True), ("binary_cross_entropy", None, True)],
)
def test_the_reference_epoch_driven_through_a_backend_is_its_step_path(
    backend, dtype, loss, frozen, weighted, monkeypatch
):
    """fastnn.reference.training.train_epoch_with(backend kernels), the step path (the
    layers' passes, the loss and the optimizer, written with the same
    fastnn.reference.ops functions) and the backend's compiled epoch kernel give the same
    parameters, running statistics and logs, bit for bit: batch normalisation (batch
    statistics, or a frozen layer's running ones), dropout, clipping, L2 decay, weights."""
    from fastnn.reference import training

    X, y = _data(loss, n=70)
    w = _weights(70) if weighted else None
    runs = {}
    for path in ("epoch", "step", "driven"):
        net = _bn_net(backend, dtype, dropout=[0.2, 0.1], frozen=frozen, loss=loss)
        Xc, yc = net.check_data(X, y)
        opt = Adam(lr=0.01, clip_norm=0.5, weight_decay=1e-3)
        calls = []
        raw = net.kernels._raw
        kernel = training.train_epoch_with(raw) if path == "driven" else raw.train_epoch
        monkeypatch.setattr(
            raw, "train_epoch", lambda *a, k=kernel, c=calls: (c.append(1), k(*a))[1]
        )
        if path == "step":
            monkeypatch.setattr(_epoch, "supports", lambda model, optimizer: False)
        logs = [net.train_epoch(Xc, yc, opt, 16, sample_weight=w) for _ in range(2)]
        monkeypatch.undo()
        assert bool(calls) == (path != "step")
        runs[path] = (net.params.copy(), net.buffers.copy(), logs, opt.t)
    for path in ("step", "driven"):
        np.testing.assert_array_equal(runs[path][0], runs["epoch"][0], err_msg=path)
        np.testing.assert_array_equal(runs[path][1], runs["epoch"][1], err_msg=path)
        assert runs[path][2:] == runs["epoch"][2:], path


@pytest.mark.parametrize("backend", BACKENDS)
def test_hyperparameters_changed_between_epochs_reach_the_kernel(backend):
    """The kernels' hyper vector is rebuilt when a hyperparameter changes: an epoch
    after ``opt.beta1 = 0.5`` (and a new weight decay and clipping) trains exactly as
    the same epoch of a twin whose optimizer never built the vector before the change."""
    X, y = _data("cross_entropy")

    def run(forget_cached_vector):
        net = fastnn.MLP([5, 12, 3], "relu", loss="cross_entropy", backend=backend, random_state=0)
        opt = Adam(lr=1e-2)
        data = net.check_data(X, y)
        net.train_epoch(*data, opt, 16, shuffle=False)
        if forget_cached_vector:
            opt.__dict__.pop("_hyper_cache", None)
        opt.beta1, opt.weight_decay, opt.clip_norm = 0.5, 1e-3, 0.25
        net.train_epoch(*data, opt, 16, shuffle=False)
        return net.params

    np.testing.assert_array_equal(run(False), run(True))


def test_train_epoch_refuses_labels_changed_after_check_data():
    """Labels are checked on every call (one pass over y): a label outside [0, k) put
    in after check_data is refused before any step, never read by a kernel."""
    X, y = _data("cross_entropy")
    net = fastnn.MLP([5, 12, 3], "relu", loss="cross_entropy", backend="cython", random_state=0)
    Xc, yc = net.check_data(X, y)
    before = net.params.copy()
    for bad in (-1, 3, np.iinfo(np.int64).min):
        yb = yc.copy()
        yb[7] = bad
        with pytest.raises(
            ValueError, match=rf"class indices in \[0, 3\), got values in \[{min(bad, 0)}, "
        ):
            net.train_epoch(Xc, yb, Adam(), 16)
    with pytest.raises(ValueError, match=r"different numbers of samples \(150 and 0\)"):
        net.train_epoch(Xc, yc[:0], Adam(), 16)
    np.testing.assert_array_equal(net.params, before)


# --- activations written over z (one workspace region less) ------------------------------

_OVER_Z = [
    ("relu", None, True),
    ("identity", None, True),
    ("leaky_relu", 0.1, True),
    ("leaky_relu", 0.0, False),  # 0 * -inf is NaN, where g'(-inf) is alpha
    ("leaky_relu", -0.5, False),  # g(z) > 0 for z < 0: g' read at g(z) would be 1
    ("tanh", None, False),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act, alpha, over_z", _OVER_Z)
def test_activation_over_z_keeps_the_step_paths_bits(backend, act, alpha, over_z, monkeypatch):
    """A hidden layer whose g' reads the same at g(z) as at z (identity, relu, leaky_relu
    with 0 < alpha < inf) has its activation written over z in the epoch's workspace,
    and the epoch still gives the step path's weights bit for bit; the others keep a
    region of their own (a negative alpha over z would give these weights wrong)."""
    from fastnn.layers import Dense

    def net():
        kw = {} if alpha is None else {"alpha": alpha}
        layers = [Dense(2, 16, activation=act, **kw), Dense(16, 8, activation=act, **kw)]
        layers.append(Dense(8, 2))
        return fastnn.MLP(layers, loss="mse", backend=backend, random_state=3)

    rng = np.random.default_rng(5)
    X = rng.standard_normal((96, 2)).astype(np.float32)
    y = np.stack([X[:, 0] * X[:, 1], X[:, 0] - X[:, 1]], axis=1).astype(np.float32)
    a, b = net(), net()
    opt_a, opt_b = Adam(lr=0.01), Adam(lr=0.01)
    for _ in range(3):
        a.train_epoch(X, y, opt_a, 32)
        b.train_epoch(X, y, opt_b, 32, on_step=lambda j, loss: None)
    np.testing.assert_array_equal(a.params, b.params)
    off = a._epoch_plans[32].ws_off
    for i in range(2):  # z_i and a_i of the hidden layers
        assert (off[2 + 3 * i] == off[3 + 3 * i]) == over_z


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_settings_changed_between_epochs_reach_the_epoch_kernel(backend):
    """A layer's activation, alpha or dropout rate changed between epochs is what the
    next epoch trains with, as on the step path (the plan of the batch size is made
    again, with the workspace alias that fits the new setting)."""
    from fastnn.layers import Dense, Dropout

    def net():
        layers = [Dense(2, 16, activation="leaky_relu", alpha=0.1), Dropout(0.2)]
        layers += [Dense(16, 2)]
        return fastnn.MLP(layers, loss="mse", backend=backend, random_state=3)

    rng = np.random.default_rng(5)
    X = rng.standard_normal((96, 2)).astype(np.float32)
    y = rng.standard_normal((96, 2)).astype(np.float32)
    a, b = net(), net()
    opt_a, opt_b = Adam(lr=0.01), Adam(lr=0.01)
    changes = [
        lambda m: None,
        lambda m: setattr(m.layers[0], "alpha", -0.5),
        lambda m: setattr(m.layers[1], "rate", 0.5),
        lambda m: setattr(m.layers[0], "activation", "tanh"),
    ]
    for change in changes:
        for model in (a, b):
            change(model)
        a.train_epoch(X, y, opt_a, 32)
        b.train_epoch(X, y, opt_b, 32, on_step=lambda j, loss: None)
        np.testing.assert_array_equal(a.params, b.params)
    assert a._epoch_plans[32].alphas[0] == -0.5
