"""The training loop: batches, validation, history, callbacks, early stopping, determinism,
divergence, interruption, verbose output and the progress bar."""

import copy
import os
import signal
import sys

import numpy as np
import pytest

import fastnn
from fastnn import MLP, SGD, Adam, DivergenceError, EarlyStopping
from fastnn.training import Callback, ModelCheckpoint


def _blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.standard_normal((n, 2)) * 0.5 + np.array([[0, 0], [3, 0], [0, 3]])[y]
    return X, y


def _net(**kw):
    args = dict(loss="cross_entropy", backend="numpy", random_state=0)
    args.update(kw)
    return MLP([2, 16, 3], **args)


def _step_by_step(monkeypatch):
    """Make fit use the step-by-step path: these tests instrument train_step, the loss
    or the optimizer, which the whole-epoch kernel does not call back into (its
    equivalence with this path is tested in test_epoch.py)."""
    monkeypatch.setattr("fastnn._epoch.supports", lambda model, optimizer: False)


def _record_batches(net):
    """Wrap train_step to record the rows of every batch (by their first feature)."""
    seen = []
    orig = net.train_step

    def spy(xb, yb, opt):
        seen.append(xb[:, 0].copy())
        return orig(xb, yb, opt)

    net.train_step = spy
    return seen


def test_every_epoch_is_a_fresh_permutation_with_the_last_partial_batch_kept(monkeypatch):
    _step_by_step(monkeypatch)
    X = np.arange(70, dtype=float).reshape(35, 2)
    y = np.arange(35) % 3
    net = _net()
    seen = _record_batches(net)
    net.fit(X, y, epochs=3, batch_size=8)
    assert [len(b) for b in seen] == [8, 8, 8, 8, 3] * 3
    epochs = [np.concatenate(seen[i * 5 : (i + 1) * 5]) for i in range(3)]
    for e in epochs:
        np.testing.assert_array_equal(np.sort(e), X[:, 0])  # each row exactly once
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])
    assert net.optimizer.t == 15


def test_no_shuffle_keeps_the_order(monkeypatch):
    _step_by_step(monkeypatch)
    X = np.arange(20, dtype=float).reshape(10, 2)
    net = _net()
    seen = _record_batches(net)
    net.fit(X, np.arange(10) % 3, epochs=2, batch_size=4, shuffle=False)
    np.testing.assert_array_equal(np.concatenate(seen[:3]), X[:, 0])


def test_history_keys_and_values():
    X, y = _blobs()
    hist = _net().fit(X, y, epochs=5, batch_size=16, validation_split=0.25)
    assert hist.epoch == [1, 2, 3, 4, 5]
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "time"}
    assert hist["loss"][-1] < hist["loss"][0]
    assert all(0 <= a <= 1 for a in hist["val_accuracy"])
    assert hist.stop_reason == "completed" and len(hist) == 5
    reg = MLP([2, 8, 1], backend="numpy", random_state=0)
    h = reg.fit(X, X[:, 0] + X[:, 1], epochs=3, validation_data=(X[:20], X[:20, 0]))
    assert set(h.history) == {"loss", "val_loss", "val_r2", "lr", "time"}


def test_validation_split_holds_out_the_right_rows(monkeypatch):
    _step_by_step(monkeypatch)
    X, y = _blobs(100)
    net = _net()
    seen = _record_batches(net)
    net.fit(X, y, epochs=1, batch_size=100, validation_split=0.2)
    assert len(seen[0]) == 80
    with pytest.raises(ValueError, match="not both"):
        net.fit(X, y, validation_split=0.2, validation_data=(X, y))
    with pytest.raises(ValueError, match="validation_split"):
        net.fit(X[:2], y[:2], validation_split=0.9)
    with pytest.raises(ValueError, match="X_val has 3 features"):
        net.fit(X, y, validation_data=(np.ones((4, 3)), y[:4]))
    with pytest.raises(ValueError, match="X and y_val have different numbers"):
        net.fit(X, y, validation_data=(X[:4], y[:5]))


def test_validation_data_is_evaluated_in_inference_mode():
    X, y = _blobs()
    net = _net(dropout=0.5)
    hist = net.fit(X, y, epochs=2, validation_data=(X, y))
    assert hist["val_loss"][-1] == pytest.approx(net.evaluate(X, y)["loss"], rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epochs=-1), "epochs must be >= 0"),
        (dict(batch_size=0), "batch_size must be >= 1"),
        (dict(batch_size=2.5), "batch_size must be an integer"),
        (dict(validation_split=1.0), "validation_split"),
        (dict(optimizer="no_such_optimizer"), "optimizer must be one of"),
        (dict(early_stopping="yes"), "early_stopping"),
        (dict(verbose=-1), "verbose"),
        (dict(callbacks=[3]), "callbacks must be Callback objects or functions"),
    ],
)
def test_bad_fit_arguments(kwargs, match):
    X, y = _blobs(20)
    with pytest.raises((TypeError, ValueError), match=match):
        _net().fit(X, y, **kwargs)


def test_bad_data_for_fit():
    net = _net()
    with pytest.raises(ValueError, match="X and y have different numbers of samples"):
        net.fit(np.ones((5, 2)), np.zeros(4, int))
    with pytest.raises(ValueError, match="X is empty"):
        net.fit(np.ones((0, 2)), np.zeros(0, int))
    with pytest.raises(ValueError, match="X contains NaN"):
        net.fit(np.array([[np.nan, 1.0]]), [0])


def test_same_seed_same_weights_bit_for_bit():
    X, y = _blobs()

    def run():
        net = _net(dropout=0.2, batch_norm=True)
        net.fit(X, y, optimizer=Adam(0.01), epochs=4, batch_size=16, validation_split=0.2)
        return net

    a, b = run(), run()
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.buffers, b.buffers)
    c = MLP(
        [2, 16, 3],
        loss="cross_entropy",
        dropout=0.2,
        batch_norm=True,
        backend="numpy",
        random_state=1,
    )
    c.fit(X, y, optimizer=Adam(0.01), epochs=4, batch_size=16, validation_split=0.2)
    assert not np.array_equal(a.params, c.params)


def test_training_in_two_calls_equals_training_in_one():
    X, y = _blobs()
    a, b = _net(dropout=0.1), _net(dropout=0.1)
    a.fit(X, y, optimizer=Adam(0.01), epochs=4, batch_size=16)
    b.fit(X, y, optimizer=Adam(0.01), epochs=2, batch_size=16)
    b.fit(X, y, epochs=2, batch_size=16)  # continues with b.optimizer and its state
    np.testing.assert_array_equal(a.params, b.params)


def test_callbacks_receive_logs_and_can_stop():
    X, y = _blobs()
    calls = []

    def stop_at_third(epoch, logs):
        calls.append((epoch, sorted(logs)))
        return epoch == 2

    class Counting(Callback):
        def on_train_begin(self, model, logs):
            self.begun = logs

        def on_epoch_end(self, epoch, logs):
            self.last = epoch

        def on_train_end(self, history):
            self.ended = history.stop_reason

    counting = Counting()
    hist = _net().fit(X, y, epochs=10, callbacks=[stop_at_third, counting])
    assert [c[0] for c in calls] == [0, 1, 2]
    assert calls[0][1] == ["accuracy", "loss", "lr", "time"]
    assert len(hist) == 3 and hist.stop_reason == "callback"
    assert counting.begun == {"has_validation": False} and counting.last == 2
    assert counting.ended == "callback"


def test_early_stopping_stops_after_patience_and_restores_the_best_weights():
    # random labels: the network memorises the training set and the validation loss
    # rises after a few epochs
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 2)), rng.integers(0, 3, 60)
    snapshots = []
    net = _net()
    es = EarlyStopping(patience=3)
    hist = net.fit(
        X[:40],
        y[:40],
        optimizer=Adam(0.05),
        epochs=100,
        validation_data=(X[40:], y[40:]),
        early_stopping=es,
        callbacks=[lambda e, logs: snapshots.append(net.params.copy())],
    )
    vl = hist["val_loss"]
    best = int(np.argmin(vl))
    assert hist.stop_reason == "early_stopping"
    assert len(vl) == best + 1 + 3  # stopped exactly `patience` epochs after the best
    assert hist.best_epoch == best + 1
    np.testing.assert_array_equal(net.params, snapshots[best])


def test_early_stopping_min_delta_and_monitor():
    es = EarlyStopping(monitor="val_accuracy", patience=2, min_delta=0.05)
    net = _net()
    es.on_train_begin(net, {"has_validation": True})
    stops = [
        es.on_epoch_end(i, {"val_accuracy": a}) for i, a in enumerate([0.5, 0.52, 0.6, 0.61, 0.62])
    ]
    assert stops == [None, None, None, None, True]  # 0.61 and 0.62 are within min_delta
    assert es.best_epoch == 2
    with pytest.raises(ValueError, match="no validation data"):
        EarlyStopping().on_train_begin(net, {"has_validation": False})
    X, y = _blobs(30)
    hist = net.fit(X, y, epochs=3, early_stopping=True)  # "auto": watches the loss
    assert hist.best_epoch is not None


def test_divergence_stops_with_advice_and_keeps_finite_weights():
    X, y = _blobs()
    X = X * 1e3
    net = MLP([2, 32, 1], backend="numpy", dtype="float32", random_state=0)
    with pytest.raises(DivergenceError) as info:
        net.fit(X, X[:, 0] ** 3, optimizer=SGD(10.0), epochs=50, batch_size=8)
    msg = str(info.value)
    assert "diverged" in msg and "lower learning rate" in msg and "clip_norm" in msg
    assert np.isfinite(net.params).all()
    assert info.value.history.stop_reason == "diverged"
    assert net.history is info.value.history
    net.predict(X)  # still usable


def test_nan_gradient_never_reaches_the_parameters(monkeypatch):
    _step_by_step(monkeypatch)
    X, y = _blobs(40)
    net = _net()
    net.fit(X, y, epochs=1)
    before = net.params.copy()
    t_before = net.optimizer.t
    orig = net.loss.gradient

    def poisoned(k, out, yb, grad):
        orig(k, out, yb, grad)
        grad[0, 0] = np.nan

    net.loss.gradient = poisoned
    with pytest.raises(DivergenceError, match="gradient"):
        net.fit(X, y, epochs=1)
    np.testing.assert_array_equal(net.params, before)
    assert net.optimizer.t == t_before


def test_non_finite_weights_are_rolled_back_to_the_start_of_the_epoch(monkeypatch):
    _step_by_step(monkeypatch)
    X, y = _blobs(40)
    net = _net()
    net.fit(X, y, epochs=1, batch_size=10)
    start = net.params.copy()
    opt = net.optimizer
    orig = opt.step
    count = [0]

    def overflow(model, **kw):
        norm = orig(model, **kw)
        count[0] += 1
        if count[0] == 2:
            model.params[0] = np.inf  # as if an update overflowed
        return norm

    opt.step = overflow
    with pytest.raises(DivergenceError, match="restored to the start of epoch 1"):
        net.fit(X, y, epochs=2, batch_size=10)
    np.testing.assert_array_equal(net.params, start)


def test_keyboard_interrupt_leaves_the_last_completed_step(tmp_path, monkeypatch):
    _step_by_step(monkeypatch)
    X, y = _blobs(64)
    net = _net()
    after_step = []
    orig = net.train_step

    def step(xb, yb, opt):
        if len(after_step) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of step 3
        loss = orig(xb, yb, opt)
        after_step.append(net.params.copy())
        return loss

    net.train_step = step
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, epochs=5, batch_size=8)
    assert len(after_step) == 3 and net.optimizer.t == 3
    np.testing.assert_array_equal(net.params, after_step[-1])
    assert net.history.stop_reason == "interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    fastnn.save(net, tmp_path / "interrupted.fastnn")
    back = fastnn.load(tmp_path / "interrupted.fastnn")
    np.testing.assert_array_equal(back.predict(X), net.predict(X))


def test_verbose_prints_one_line_per_epoch(capsys):
    X, y = _blobs(30)
    _net().fit(X, y, epochs=3, verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("Epoch 1/3 - loss: ") and "accuracy" in lines[0]


def test_progress_bar_with_and_without_tqdm(capsys, monkeypatch):
    pytest.importorskip("tqdm")
    X, y = _blobs(30)
    _net().fit(X, y, epochs=2, progress=True)
    assert "2/2" in capsys.readouterr().err.replace(" ", "")
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    hist = _net().fit(X, y, epochs=2, progress=True)  # silently without a bar
    assert len(hist) == 2
    assert capsys.readouterr().err == ""


def test_model_checkpoint_saves_every_n_epochs(tmp_path):
    X, y = _blobs(30)
    net = _net()
    net.fit(X, y, epochs=4, callbacks=[ModelCheckpoint(tmp_path / "ck-{epoch}.fastnn", 2)])
    assert sorted(os.listdir(tmp_path)) == ["ck-2.fastnn", "ck-4.fastnn"]
    loaded = fastnn.load(tmp_path / "ck-4.fastnn")
    np.testing.assert_array_equal(loaded.params, net.params)


def test_model_checkpoint_calls_the_save_function_it_is_given(tmp_path):
    X, y = _blobs(30)
    net = _net()
    calls = []

    def save(model, path):
        calls.append((path, model.params.copy()))
        fastnn.save(model, path, include_optimizer=False)

    net.fit(X, y, epochs=3, callbacks=[ModelCheckpoint(tmp_path / "ck-{epoch}", save=save)])
    assert [path for path, _ in calls] == [str(tmp_path / f"ck-{e}") for e in (1, 2, 3)]
    np.testing.assert_array_equal(calls[-1][1], net.params)
    assert fastnn.load(tmp_path / "ck-3").optimizer is None
    with pytest.raises(TypeError, match="save must be a function"):
        ModelCheckpoint(tmp_path / "x", save="fastnn.save")


def test_batch_norm_and_dropout_model_learns():
    X, y = _blobs(300)
    net = MLP(
        [2, 32, 32, 3],
        loss="cross_entropy",
        batch_norm=True,
        dropout=0.1,
        backend="numpy",
        random_state=0,
    )
    net.fit(X, y, optimizer=Adam(0.01), epochs=15, batch_size=32)
    assert net.score(X, y) > 0.95


def test_zero_epochs_changes_nothing():
    X, y = _blobs(20)
    net = _net()
    before = net.params.copy()
    hist = net.fit(X, y, epochs=0)
    assert len(hist) == 0
    np.testing.assert_array_equal(net.params, before)


def test_fit_with_sample_weight_and_validation_split_trains_on_the_kept_rows_weights():
    """validation_split holds rows out with their weights: the fit equals epochs of
    MLP.train_epoch on the kept rows and their weights."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 3))
    y = X[:, :1] * 2
    w = rng.random(50) * 3
    a = fastnn.MLP([3, 5, 1], random_state=1)
    b = fastnn.MLP([3, 5, 1], random_state=1)
    perm = copy.deepcopy(b.rngs["split"]).permutation(50)
    fastnn.fit(a, X, y, optimizer=fastnn.SGD(0.05), epochs=3, batch_size=8, shuffle=False,
               validation_split=0.2, sample_weight=w)  # fmt: skip
    train = np.sort(perm[10:])
    Xt, yt = b.check_data(X[train], y[train])
    opt = fastnn.SGD(0.05)
    for _ in range(3):
        b.train_epoch(Xt, yt, opt, 8, shuffle=False, sample_weight=w[train])
        opt.end_epoch()
    np.testing.assert_array_equal(a.params, b.params)
    c = fastnn.MLP([3, 5, 1], random_state=1)
    fastnn.fit(c, X, y, optimizer=fastnn.SGD(0.05), epochs=3, batch_size=8, shuffle=False,
               validation_split=0.2)  # fmt: skip
    assert not np.array_equal(a.params, c.params)
