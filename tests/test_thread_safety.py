"""One model used from many threads at once (a model served by a threaded web server).

- Inference from any number of threads at once: ``MLP.predict``, ``predict_proba``,
  ``decision_function`` and ``evaluate``, and the estimators' ``predict`` /
  ``predict_proba``, give every thread, on every call, the very answer the model gives
  a single thread (compared bit for bit, every answer), on every backend. The threads
  use inputs of different sizes, so they share, evict and re-create the model's
  inference workspaces.
- Training refuses to share: while ``fit`` (or ``train_epoch``, ``set_state``...) runs
  in one thread, inference and training from another thread raise a RuntimeError that
  says so, and the training thread itself keeps predicting (callbacks, validation). A
  fit started while predictions are under way waits for them, then trains: no answer
  is ever computed from half-updated weights.
- Pickling and copying a model or an estimator that threads have used still works.

These tests are synchronised by events and barriers only: no sleep and no wall-clock
assertion (the event waits have a generous ``TIMEOUT`` so that a broken lock shows as
a failure instead of a hung run).
"""

from __future__ import annotations

import copy
import pickle
import threading
import warnings

import numpy as np
import pytest

import fastnn
from _reliability_record import record_module_once_passed
from fastnn import MLP

BACKENDS = list(fastnn.available_backends())

# Inference hammering: threads x calls per thread, every answer compared.
MLP_THREADS = 4
MLP_CALLS = 500  # per thread, per backend and architecture
ESTIMATOR_THREADS = 8
ESTIMATOR_CALLS = 150  # per thread, per backend and estimator
# Row counts of the threads' inputs (thread i gets ROWS[i % len(ROWS)]): equal sizes share
# a workspace size, different ones make the model keep several and evict some.
ROWS = (64, 64, 17, 200, 64, 33, 1, 129)
TIMEOUT = 600  # seconds; only a guard against a hang, never reached when green


def _inputs(n_features, seed):
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal((ROWS[i % len(ROWS)], n_features)).astype(np.float32)
        for i in range(max(MLP_THREADS, ESTIMATOR_THREADS))
    ]


def _same(got, want):
    if isinstance(want, dict):
        return got == want
    return isinstance(got, np.ndarray) and got.dtype == want.dtype and np.array_equal(got, want)


def _hammer(jobs_per_thread, n_calls):
    """Run each thread's jobs (name, fn, expected) round robin n_calls times, all threads
    released together; returns ({name: wrong answers}, calls made, exceptions)."""
    barrier = threading.Barrier(len(jobs_per_thread))
    wrong, calls, errors = {}, [0], []
    lock = threading.Lock()

    def work(jobs):
        mine, made = {}, 0
        try:
            barrier.wait()
            for r in range(n_calls):
                name, fn, want = jobs[r % len(jobs)]
                if not _same(fn(), want):
                    mine[name] = mine.get(name, 0) + 1
                made += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        with lock:
            calls[0] += made
            for k, n in mine.items():
                wrong[k] = wrong.get(k, 0) + n

    threads = [threading.Thread(target=work, args=(jobs,)) for jobs in jobs_per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wrong, calls[0], errors


def _expected(jobs_per_thread):
    """Each job's answer computed alone, in this thread."""
    return [[(name, fn, fn()) for name, fn in jobs] for jobs in jobs_per_thread]


def _check(jobs_per_thread, n_calls):
    jobs = _expected(jobs_per_thread)
    wrong, calls, errors = _hammer(jobs, n_calls)
    assert not errors, errors
    assert calls == len(jobs) * n_calls
    assert not wrong, f"wrong answers out of {calls} calls: {wrong}"
    # and the model still gives the single-threaded answers afterwards
    for thread_jobs in jobs:
        for name, fn, want in thread_jobs:
            assert _same(fn(), want), name


# --- fastnn.MLP ---------------------------------------------------------------------------

ARCHITECTURES = {
    "plain": dict(layer_sizes=[32, 256, 10]),
    "batch norm": dict(layer_sizes=[32, 128, 64, 10], batch_norm=True, dropout=0.1),
}


def _model(backend, arch, seed=0):
    kw = dict(ARCHITECTURES[arch])
    net = MLP(kw.pop("layer_sizes"), loss="cross_entropy", backend=backend, random_state=seed, **kw)
    if kw.get("batch_norm"):  # running statistics away from their initial 0 and 1
        for layer in net.layers:
            if isinstance(layer, fastnn.BatchNorm):
                layer.running_mean[...] = np.linspace(-0.5, 0.5, layer.n_out)
                layer.running_var[...] = np.linspace(0.5, 2.0, layer.n_out)
    return net


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_mlp_inference_from_many_threads_equals_the_single_threaded_answers(backend, arch):
    net = _model(backend, arch)
    xs = _inputs(net.n_features_in, 1)
    labels = np.random.default_rng(2)
    jobs = []
    for i in range(MLP_THREADS):
        X = xs[i]
        y = labels.integers(0, net.n_outputs, X.shape[0])
        jobs.append(
            [
                ("predict", lambda X=X: net.predict(X)),
                ("predict_proba", lambda X=X: net.predict_proba(X)),
                ("decision_function", lambda X=X: net.decision_function(X)),
                ("evaluate", lambda X=X, y=y: net.evaluate(X, y)),
            ]
        )
    _check(jobs, MLP_CALLS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_issue_case_two_threads_predicting_64_rows(backend):
    """Issue 11's report: MLP([32, 256, 10]), two threads, different 64-row inputs."""
    net = MLP([32, 256, 10], loss="cross_entropy", backend=backend, random_state=0)
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((64, 32)).astype(np.float32) for _ in range(2)]
    _check([[("predict", lambda X=X: net.predict(X))] for X in xs], MLP_CALLS)


# --- the estimators --------------------------------------------------------------------------


def _classification(n=400, n_features=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int) + (X[:, 2] > 0.8)
    return X, np.array(["a", "b", "c"])[y]


@pytest.fixture(scope="module")
def fitted():
    """{backend: (classifier, regressor)} fitted once per backend."""
    pytest.importorskip("sklearn")
    X, y = _classification()
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter does not converge
        for backend in BACKENDS:
            clf = fastnn.MLPClassifier((64,), max_iter=20, random_state=0, backend=backend).fit(
                X, y
            )
            reg = fastnn.MLPRegressor(
                hidden_layer_sizes=(64,), max_iter=20, random_state=0, backend=backend
            ).fit(X, X[:, :2] @ [1.0, -2.0])
            out[backend] = clf, reg
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_classifier_predictions_from_many_threads(backend, fitted):
    clf, _ = fitted[backend]
    xs = _inputs(clf.n_features_in_, 4)
    jobs = [
        [
            ("predict", lambda X=X: clf.predict(X)),
            ("predict_proba", lambda X=X: clf.predict_proba(X)),
        ]
        for X in xs[:ESTIMATOR_THREADS]
    ]
    _check(jobs, ESTIMATOR_CALLS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_regressor_predictions_from_many_threads(backend, fitted):
    _, reg = fitted[backend]
    xs = _inputs(reg.n_features_in_, 5)
    jobs = [[("predict", lambda X=X: reg.predict(X))] for X in xs[:ESTIMATOR_THREADS]]
    _check(jobs, ESTIMATOR_CALLS)


# --- training refuses to share -----------------------------------------------------------------

REFUSED = "being trained in another thread"


def _fit_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 32)).astype(np.float32)
    return X, rng.integers(0, 4, n)


def _run(target, errors, name=None):
    def wrapped():
        try:
            target()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=wrapped, name=name)
    t.start()
    return t


@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_and_training_from_another_thread_during_a_fit_are_refused(backend):
    X, y = _fit_data()
    Xv, yv = X[:40], y[:40]
    alone = MLP([32, 64, 4], loss="cross_entropy", backend=backend, random_state=0)
    alone.fit(X, y, epochs=2, batch_size=32, validation_data=(Xv, yv))
    net = MLP([32, 64, 4], loss="cross_entropy", backend=backend, random_state=0)
    state = net.get_state()
    in_fit, tried = threading.Event(), threading.Event()
    own = []

    def callback(epoch, logs):
        # the training thread itself still predicts and evaluates (validation scores,
        # early stopping, user callbacks)
        own.append((net.predict(Xv), net.evaluate(Xv, yv)))
        if epoch == 0:
            in_fit.set()
            assert tried.wait(TIMEOUT)

    errors = []
    fitter = _run(
        lambda: net.fit(
            X, y, epochs=2, batch_size=32, callbacks=[callback], validation_data=(Xv, yv)
        ),
        errors,
    )
    refused = []
    try:
        assert in_fit.wait(TIMEOUT)
        Xc, yc = net.check_data(X[:32], y[:32])
        attempts = {
            "predict": lambda: net.predict(Xv),
            "predict_proba": lambda: net.predict_proba(Xv),
            "decision_function": lambda: net.decision_function(Xv),
            "forward": lambda: net.forward(Xv),
            "evaluate": lambda: net.evaluate(Xv, yv),
            "score": lambda: net.score(Xv, yv),
            "copy": lambda: net.copy(),
            "fit": lambda: net.fit(X, y, epochs=1),
            "train_epoch": lambda: net.train_epoch(Xc, yc, fastnn.SGD(0.1), 8),
            "train_step": lambda: net.train_step(Xc, yc, fastnn.SGD(0.1)),
            "loss_and_gradient": lambda: net.loss_and_gradient(Xc, yc),
            "set_state": lambda: net.set_state(state),
            "reset_parameters": lambda: net.reset_parameters(),
            "freeze": lambda: net.freeze(0),
            "replace_output": lambda: net.replace_output(3),
            "set_backend": lambda: net.set_backend("numpy"),
        }
        for name, attempt in attempts.items():
            with pytest.raises(RuntimeError, match=REFUSED):
                attempt()
            refused.append(name)
    finally:
        tried.set()
        fitter.join()
    assert not errors, errors
    assert len(refused) == len(attempts)
    # nothing the refused calls tried reached the model: it trained as if alone
    np.testing.assert_array_equal(net.params, alone.params)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert net.history[key] == alone.history[key], key
    assert len(own) == 2 and np.array_equal(own[-1][0], alone.predict(Xv))
    # once the fit has returned, every thread may use the model again
    assert np.array_equal(net.predict(Xv), alone.predict(Xv))
    net.fit(X, y, epochs=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_fit_waits_for_the_predictions_under_way(backend, monkeypatch):
    """A prediction is inside the model when a fit starts in another thread: the fit
    waits for it (the prediction is the one of the weights before the fit), and
    predictions started after the fit began are refused."""
    X, y = _fit_data()
    Xp = X[:64]
    net = MLP([32, 64, 4], loss="cross_entropy", backend=backend, random_state=0)
    before_params = net.params.copy()
    want = net.predict_proba(Xp)
    alone = net.copy()
    alone.fit(X, y, epochs=1)
    inside, release = threading.Event(), threading.Event()
    real_forward = net._forward_eval

    def held_forward(x, ws):
        out = real_forward(x, ws)
        if threading.current_thread().name == "predictor":
            inside.set()
            assert release.wait(TIMEOUT)
        return out

    monkeypatch.setattr(net, "_forward_eval", held_forward)
    errors, got = [], []
    predictor = _run(lambda: got.append(net.predict_proba(Xp)), errors, "predictor")
    fitter = None
    try:
        assert inside.wait(TIMEOUT)
        fitter = _run(lambda: net.fit(X, y, epochs=1), errors)
        refused = False
        while not refused and fitter.is_alive():
            try:
                net.predict(Xp)
            except RuntimeError as exc:
                assert REFUSED in str(exc)
                refused = True
        assert refused, "the fit ran while a prediction was under way"
        # the fit has begun but waits: the weights are untouched
        np.testing.assert_array_equal(net.params, before_params)
    finally:
        release.set()
        predictor.join()
        if fitter is not None:
            fitter.join()
    assert not errors, errors
    assert len(got) == 1 and np.array_equal(got[0], want)
    np.testing.assert_array_equal(net.params, alone.params)


@pytest.mark.parametrize("incremental", [False, True], ids=["fit", "partial_fit"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_estimator_use_during_a_fit_in_another_thread_is_refused(backend, incremental, monkeypatch):
    """A refit builds a new network and new class labels: another thread must neither
    see the new labels with the old network nor the new network before it is trained."""
    pytest.importorskip("sklearn")
    X, y = _classification()

    def make():
        return fastnn.MLPClassifier((32,), max_iter=3, random_state=0, backend=backend)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = make().fit(X, y)
        alone = make().fit(X, y)
        if incremental:
            alone.partial_fit(X[:100], y[:100])
        else:
            alone.fit(X[:100], y[:100])
    in_fit, tried = threading.Event(), threading.Event()
    real_epoch = MLP.train_epoch

    def held_epoch(self, *args, **kwargs):
        logs = real_epoch(self, *args, **kwargs)
        if threading.current_thread().name == "trainer" and not in_fit.is_set():
            in_fit.set()
            assert tried.wait(TIMEOUT)
        return logs

    monkeypatch.setattr(MLP, "train_epoch", held_epoch)
    errors = []

    def train():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if incremental:
                clf.partial_fit(X[:100], y[:100])
            else:
                clf.fit(X[:100], y[:100])

    fitter = _run(train, errors, "trainer")
    try:
        assert in_fit.wait(TIMEOUT)
        for attempt in (
            lambda: clf.predict(X),
            lambda: clf.predict_proba(X),
            lambda: clf.predict_log_proba(X),
            lambda: clf.score(X, y),
            lambda: clf.fit(X, y),
            lambda: clf.partial_fit(X, y),
            lambda: setattr(clf, "coefs_", clf.coefs_),
        ):
            with pytest.raises(RuntimeError, match=REFUSED):
                attempt()
    finally:
        tried.set()
        fitter.join()
    assert not errors, errors
    assert np.array_equal(clf.predict_proba(X), alone.predict_proba(X))


# --- pickling and copying keep working --------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_models_and_estimators_used_by_threads_pickle_and_copy(backend, fitted):
    net = _model(backend, "plain")
    X = _inputs(32, 6)[0]
    _check([[("predict", lambda: net.predict(X))]] * 2, 10)
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net), copy.copy(net), net.copy()):
        assert np.array_equal(clone.predict_proba(X), net.predict_proba(X))
        clone.fit(X, np.zeros(X.shape[0], int), epochs=1)  # its own, free guard
    clf, _ = fitted[backend]
    Xc = _inputs(clf.n_features_in_, 7)[0]
    _check([[("predict", lambda: clf.predict(Xc))]] * 2, 10)
    for clone in (pickle.loads(pickle.dumps(clf)), copy.deepcopy(clf)):
        assert np.array_equal(clone.predict_proba(Xc), clf.predict_proba(Xc))


def test_thread_safety_recorded(request):
    n = len(BACKENDS)
    answers = (
        n * len(ARCHITECTURES) * MLP_THREADS * MLP_CALLS
        + n * 2 * MLP_CALLS
        + n * 2 * ESTIMATOR_THREADS * ESTIMATOR_CALLS
    )
    record_module_once_passed(
        request,
        "threads.inference",
        "threads",
        f"one model answering from many threads at once, every backend: MLP predict / "
        f"predict_proba / decision_function / evaluate (plain; batch norm + dropout) "
        f"from {MLP_THREADS} threads x {MLP_CALLS} calls on batches of {len(ROWS)} "
        f"sizes, 2 threads x {MLP_CALLS} predicts of 64 rows, MLPClassifier / "
        f"MLPRegressor predict and predict_proba from {ESTIMATOR_THREADS} threads x "
        f"{ESTIMATOR_CALLS} calls",
        answers,
        "every answer bit-identical to the same call made alone",
    )
    record_module_once_passed(
        request,
        "threads.training_guard",
        "threads",
        "a model or estimator used from another thread while it trains: 16 kinds of "
        "call on an MLP during fit (inference, training, state changes), 7 on an "
        "estimator during fit and partial_fit, and a fit started while predictions "
        "are under way, every backend",
        n * 16 + n * 2 * 7 + n,
        "each call refused with RuntimeError naming the training thread, the training "
        "unchanged by them (equal to a training alone); the training thread's own "
        "callbacks predict; a fit waits for the predictions under way",
    )
