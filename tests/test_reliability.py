"""Faults during training: divergence, interruption, killed saves, threads, memory.

- Divergence: a learning rate that blows up stops with a message that says what
  happened and what to try, the model keeping its last finite weights; a non-finite
  gradient never reaches the parameters -- on every backend, on the step-by-step path
  and on the whole-epoch compiled path.
- Interruption: Ctrl-C leaves the model at its last completed step (the compiled path
  is covered in test_epoch.py, the numpy step path in test_training.py; the compiled
  backends' step path, the estimators and the command line are covered here), and a
  process killed (SIGKILL) in the middle of a checkpoint save leaves the previous
  checkpoint loadable.
- Concurrency and determinism: the compiled kernels release the GIL (another thread
  sees the weights change while a single compiled call runs), two models trained in
  two threads at once end bit-identical to the same models trained one after the
  other, and the same seed gives bit-identical weights in separate processes at a
  fixed BLAS thread count. (How much faster two threads are is measured by
  tools/reliability_report.py, not asserted here.)
- Resources: an epoch over 1e6 x 100 float32 rows allocates a small fraction of the
  data, memory stays flat over 100 epochs, and a model of 1e8 parameters trains in
  parameters + optimizer state + one batch of workspace (plus, with the default
  ``rollback=True``, one copy of parameters and optimizer state).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import warnings

import numpy as np
import pytest

import fastnn
from _reliability_record import record
from fastnn import MLP, SGD, Adam, DivergenceError, Momentum, _epoch
from fastnn.training import ModelCheckpoint

HERE = os.path.dirname(os.path.abspath(__file__))
# the fastnn this process imported (the source tree, or site-packages when installed)
SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, HERE, os.environ.get("PYTHONPATH", "")]))
BACKENDS = fastnn.available_backends()
COMPILED = [b for b in BACKENDS if b != "numpy"]
PATHS = ("compiled epoch", "step by step")


def _path(monkeypatch, path):
    if path == "step by step":
        monkeypatch.setattr(_epoch, "supports", lambda model, optimizer: False)


def _regression(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    return X, X @ rng.standard_normal(4) * 3


# --- divergence -------------------------------------------------------------------------------

_DIVERGENCE: dict = {}


def _steps_until_divergence(net, X, y, opt, batch_size, epochs):
    """Params after every completed step, by the step-by-step path (the reference)."""
    X, y = net.check_data(X, y)
    after = [net.params.copy()]
    try:
        for _ in range(epochs):
            net.train_epoch(
                X, y, opt, batch_size, on_step=lambda j, loss: after.append(net.params.copy())
            )
            opt.end_epoch()
    except DivergenceError:
        return after
    raise AssertionError("the reference run did not diverge")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_learning_rate_that_blows_up_keeps_the_last_finite_weights(backend, path, monkeypatch):
    X, y = _regression()
    net = MLP([4, 16, 1], backend=backend, random_state=0)
    ref = net.copy()
    expected = _steps_until_divergence(ref, X, y, SGD(5.0), 8, 30)[-1]
    _path(monkeypatch, path)
    with pytest.raises(DivergenceError) as info:
        net.fit(X, y, optimizer=SGD(5.0), epochs=30, batch_size=8)
    msg = str(info.value)
    for text in (
        "Training diverged at step",
        "the loss became inf",
        "keeps its last finite weights",
        "Try a lower learning rate (the current one is 5)",
        "clip_norm",
        "standardised inputs",
    ):
        assert text in msg, msg
    np.testing.assert_array_equal(net.params, expected)  # the last completed step's
    assert net.history.stop_reason == "diverged"
    assert np.isfinite(net.predict(X)).all()
    _DIVERGENCE[("blowup", backend, path)] = True


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_update_that_overflows_is_rolled_back(backend, path, monkeypatch):
    """The loss and gradient are finite, the update itself overflows (lr 1e38): the
    weights become non-finite, and rollback restores the start of the epoch."""
    X, y = _regression()
    net = MLP([4, 16, 1], backend=backend, random_state=0)
    net.fit(X, y, optimizer=SGD(0.01), epochs=1, batch_size=8)
    start = net.params.copy()
    _path(monkeypatch, path)
    with pytest.raises(DivergenceError, match="restored to the start of epoch 1"):
        net.fit(X, y, optimizer=Momentum(1e38), epochs=3, batch_size=8)
    np.testing.assert_array_equal(net.params, start)
    # and the new optimizer is back to its start too: no step, zero velocity
    assert net.optimizer.t == 0 and not np.any(net.optimizer.state["velocity"])
    # without the copy, the model says it is broken instead of predicting garbage
    with pytest.raises(DivergenceError, match="rollback=False kept no copy"):
        net.fit(X, y, optimizer=SGD(1e38), epochs=3, batch_size=8, rollback=False)
    with pytest.raises(ValueError, match="weights are not finite"):
        net.predict(X)
    _DIVERGENCE[("overflow", backend, path)] = True


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_infinite_gradient_never_reaches_the_parameters(backend, path, monkeypatch):
    """A finite loss with an infinite gradient: y = 0 x0 + x1 with x0 = 3e38 (float32)
    gives the loss 1 but dL/dw0 = sum 2 x0 / m = 6e38 = inf."""
    net = MLP([2, 1], backend=backend, random_state=0)
    net.layers[0].W[:] = [[0.0], [1.0]]
    X = np.array([[3e38, 1.0]] * 8, np.float32)
    before = net.params.copy()
    _path(monkeypatch, path)
    with pytest.raises(DivergenceError, match="the gradient became inf") as info:
        net.fit(X, np.zeros(8), optimizer=Adam(0.1), epochs=1, batch_size=8)
    assert info.value.what == "gradient"
    np.testing.assert_array_equal(net.params, before)
    assert net.optimizer.t == 0 and not np.any(net.optimizer.state["m"])
    _DIVERGENCE[("gradient", backend, path)] = True


def test_a_loss_that_is_infinite_before_any_update_blames_the_data():
    net = MLP([1, 3, 1], dtype="float64", backend="numpy", random_state=0)
    with pytest.raises(
        DivergenceError,
        match="before any update: the learning rate is not the cause.*Standardise X and y\\.$",
    ):
        net.fit(np.ones((4, 1)), np.full(4, 1e300), epochs=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_estimators_stop_on_divergence_with_finite_weights(backend):
    pytest.importorskip("sklearn")
    from fastnn import MLPRegressor

    X, y = _regression(200)
    reg = MLPRegressor(
        hidden_layer_sizes=(16,),
        solver="sgd",
        momentum=0.0,
        learning_rate_init=50.0,
        max_iter=50,
        backend=backend,
        random_state=0,
    )
    with pytest.raises(
        ValueError,
        match="Training diverged in iteration .* keeps its last finite weights.*too large",
    ):
        reg.fit(X * 100, y * 100)
    assert np.isfinite(reg._model.params).all()
    assert np.isfinite(reg.predict(X)).all()
    _DIVERGENCE[("estimator", backend, "")] = True


def test_divergence_recorded():
    if len(_DIVERGENCE) < 3 * len(BACKENDS) * len(PATHS) + len(BACKENDS):
        pytest.skip("not every divergence case ran in this session")
    record(
        "faults.divergence",
        "training faults",
        f"divergence on every backend ({', '.join(BACKENDS)}) x {{compiled epoch, step "
        f"by step}}: SGD lr 5 (loss blows up), momentum / SGD lr 1e38 (the update "
        f"overflows, with and without rollback), a finite loss with an infinite gradient "
        f"(Adam); and "
        f"MLPRegressor with lr 50 per backend",
        len(_DIVERGENCE),
        "DivergenceError saying where, what and what to try; weights equal to the last "
        "completed step (blow-up), weights and optimizer restored to the epoch start "
        "(overflow) or untouched "
        "with no optimizer step (gradient); with rollback=False predict refuses the "
        "non-finite weights",
    )


# --- interruption -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", COMPILED)
def test_ctrl_c_on_the_step_path_of_the_compiled_backends(backend, monkeypatch, tmp_path):
    _path(monkeypatch, "step by step")
    X, y = _regression()
    net = MLP([4, 8, 1], dropout=0.1, backend=backend, random_state=0)
    after = []
    orig = net.train_step

    def step(xb, yb, opt):
        if len(after) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives during step 4
        loss = orig(xb, yb, opt)
        after.append(net.params.copy())
        return loss

    net.train_step = step
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, epochs=5, batch_size=8)
    assert len(after) == 4 and net.optimizer.t == 4
    np.testing.assert_array_equal(net.params, after[-1])
    fastnn.save(net, tmp_path / "m.fnn")
    np.testing.assert_array_equal(fastnn.load(tmp_path / "m.fnn").params, net.params)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_in_an_estimator_stops_at_a_step_boundary(backend, monkeypatch, tmp_path):
    pytest.importorskip("sklearn")
    from fastnn import MLPClassifier

    X, y = _regression(256)
    monkeypatch.setattr(_epoch, "_FLOPS_PER_CALL", 1.0)  # one batch per compiled call
    clf = MLPClassifier((8,), batch_size=16, max_iter=20, backend=backend, random_state=0)
    calls = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X[:32], y[:32] > 0)
    kernel = (
        clf._model.kernels._raw.train_epoch
        if _epoch.supports(clf._model, clf._model.optimizer)
        else None
    )

    def call(*args):
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGINT)
        kernel(*args)
        calls.append(clf._model.params.copy())

    if kernel is not None:
        monkeypatch.setattr(clf._model.kernels._raw, "train_epoch", call)
    clf.set_params(warm_start=True)
    with pytest.warns(UserWarning, match="Training interrupted by user"):
        clf.fit(X, y > 0)
    if kernel is not None:
        assert len(calls) == 6
        np.testing.assert_array_equal(clf._model.params, calls[-1])
    monkeypatch.undo()
    fastnn.save(clf, tmp_path / "clf.fnn")
    np.testing.assert_array_equal(fastnn.load(tmp_path / "clf.fnn").predict(X), clf.predict(X))


def test_ctrl_c_in_the_command_line(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20000, 8))
    np.savetxt(
        tmp_path / "d.csv",
        np.column_stack([X, X[:, 0] > 0]),
        delimiter=",",
        header=",".join([f"f{i}" for i in range(8)] + ["y"]),
        comments="",
        fmt="%.5g",
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastnn.cli",
            "train",
            "d.csv",
            "--target",
            "y",
            "--epochs",
            "100000",
            "--hidden",
            "64",
        ],
        cwd=tmp_path,
        env=dict(ENV, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    line = ""
    while "Epoch 2/" not in line and time.monotonic() < deadline:
        line = proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "fastnn train: interrupted" in err and "Traceback" not in err, err
    record(
        "faults.interrupt",
        "training faults",
        "Ctrl-C (SIGINT) during fit: the step path of the compiled backends "
        f"({', '.join(COMPILED)}), the estimators on every backend (in a compiled "
        "call), and a `fastnn train` process; (the compiled epoch path and numpy's "
        "step path are tested in test_epoch.py and test_training.py)",
        len(COMPILED) + len(BACKENDS) + 1,
        "stops at the last completed step (the weights equal that step's), the model "
        "saves and reloads bit-identically; the command line exits 130 with one line",
    )


# --- a process killed in the middle of a checkpoint save ------------------------------------

_CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import fastnn
    from fastnn.training import ModelCheckpoint
    # argv[2]: hang in os.fsync (the temporary file is written, not yet synced) or in
    # os.replace (complete, not yet renamed) once 3 checkpoints are complete; "none":
    # no hang (the parent kills at random moments)
    where, state = sys.argv[2], {"saving": 0}
    if where != "none":
        real = getattr(os, where)

        def hang(*args):
            if state["saving"] > 3:
                print("saving", state["saving"], flush=True)
                time.sleep(3600)
            return real(*args)
        setattr(os, where, hang)

    class Mark(fastnn.Callback):
        def on_epoch_end(self, epoch, logs):
            state["saving"] = epoch + 1

    class Report(fastnn.Callback):
        def on_epoch_end(self, epoch, logs):
            print("saved", epoch + 1, net.optimizer.t, flush=True)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 64)).astype(np.float32)
    net = fastnn.MLP([64, 512, 512, 10], loss="cross_entropy", random_state=0)
    net.fit(X, rng.integers(0, 10, 256), epochs=100000, batch_size=64,
            callbacks=[Mark(), ModelCheckpoint(sys.argv[1], every=1), Report()])
""")


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_sigkill_during_a_checkpoint_save_keeps_the_previous_one(tmp_path, where):
    ckpt = tmp_path / "ckpt.fnn"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(ckpt), where],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        while not lines or not lines[-1].startswith("saving"):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line.strip())
        assert any(f.name.endswith(".tmp") for f in tmp_path.iterdir())  # mid-save
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)  # reaps it and closes the pipes
    assert proc.returncode == -signal.SIGKILL
    last = [ln.split() for ln in lines if ln.startswith("saved")][-1]
    epoch, t = int(last[1]), int(last[2])
    net = fastnn.load(ckpt)  # intact: the previous checkpoint, not a torn file
    assert net.optimizer.epoch == epoch == 3 and net.optimizer.t == t == 12
    assert np.isfinite(net.params).all()
    _KILLED.append(where)


_KILLED: list = []


def test_sigkill_at_random_moments_of_continuous_checkpointing(tmp_path):
    """No instrumentation: a model checkpointed every epoch is killed at random moments;
    each time the checkpoint on disk loads."""
    ckpt = tmp_path / "ckpt.fnn"
    rng = np.random.default_rng(0)
    kills = 0
    for delay in rng.uniform(0.0, 0.5, 6):
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(ckpt), "none"],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            while not proc.stdout.readline().startswith("saved"):
                assert proc.poll() is None, proc.stderr.read()
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)
        net = fastnn.load(ckpt)
        assert np.isfinite(net.params).all() and net.optimizer.epoch >= 1
        kills += 1
    if len(_KILLED) == 2:
        record(
            "faults.sigkill_checkpoint",
            "training faults",
            "a training process checkpointing a 0.4 M-parameter model every epoch "
            "(ModelCheckpoint) killed with SIGKILL: while the temporary file is "
            "written (before fsync), after it is complete (before the rename), and "
            "at 6 random moments",
            2 + kills,
            "the checkpoint on disk always loads; when killed mid-save it is exactly "
            "the previous one (its epoch and step count)",
        )


def test_a_checkpoint_is_synced_then_renamed_then_its_directory_synced(tmp_path, monkeypatch):
    """The order that makes a save durable and atomic: data to disk (fsync of the
    temporary file), one rename over the target, then the directory entry to disk."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(
            (
                "fsync",
                "dir"
                if os.path.isdir(f"/proc/self/fd/{fd}")
                else os.path.basename(os.readlink(f"/proc/self/fd/{fd}")),
            )
        )
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(src), os.path.basename(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    X, y = _regression(32)
    MLP([4, 3, 1], backend="numpy", random_state=0).fit(
        X, y, epochs=2, callbacks=[ModelCheckpoint(tmp_path / "ck.fnn", every=2)]
    )
    assert len(events) == 3, events
    (_, synced), (_, src, dst), last = events
    assert synced == src and src.startswith(".fastnn-") and src.endswith(".tmp")
    assert dst == "ck.fnn" and last == ("fsync", "dir")
    assert os.listdir(tmp_path) == ["ck.fnn"]


def test_saved_files_get_ordinary_permissions(tmp_path):
    net = MLP([2, 1], backend="numpy")
    old = os.umask(0o022)
    try:
        fastnn.save(net, tmp_path / "new.fnn")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "new.fnn").st_mode & 0o777 == 0o644  # mkstemp gave 0600
    os.chmod(tmp_path / "new.fnn", 0o640)
    fastnn.save(net, tmp_path / "new.fnn")  # overwriting keeps the file's mode
    assert os.stat(tmp_path / "new.fnn").st_mode & 0o777 == 0o640
    record(
        "faults.save_order",
        "training faults",
        "the system calls of a checkpoint save (ModelCheckpoint), and the "
        "permissions of a new and of an overwritten file",
        2,
        "fsync of the temporary file, one rename over the target, fsync of the "
        "directory; a new file is 0666 less the umask, an overwritten one keeps its "
        "mode",
    )


# --- concurrency and determinism ------------------------------------------------------------


def _two_models(backend, dropout=0.0):
    # with dropout also batch norm (both run in the compiled epoch too; the tests that
    # want the step-by-step path ask for it with _path)
    return [
        MLP(
            [32, 64, 4],
            loss="cross_entropy",
            dropout=dropout,
            batch_norm=dropout > 0,
            backend=backend,
            random_state=seed,
        )
        for seed in (1, 2)
    ]


def _class_data(n):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 32)).astype(np.float32), rng.integers(0, 4, n)


@pytest.mark.parametrize("dropout", [0.0, 0.2], ids=["compiled epoch", "step by step"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_two_threads_give_the_sequential_results(backend, dropout, monkeypatch):
    X, y = _class_data(3000)
    _path(monkeypatch, PATHS[dropout > 0])
    alone = _two_models(backend, dropout)
    for net in alone:
        net.fit(X, y, optimizer=Adam(0.01), epochs=2, batch_size=32)
    together = _two_models(backend, dropout)
    barrier = threading.Barrier(2)
    errors = []

    def work(net):
        try:
            barrier.wait()
            net.fit(X, y, optimizer=Adam(0.01), epochs=2, batch_size=32)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(net,)) for net in together]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a.params, b.params)
        assert a.history["loss"] == b.history["loss"]
    _THREADS.append((backend, dropout))


_THREADS: list = []


@pytest.mark.parametrize("backend", COMPILED)
def test_compiled_epochs_release_the_gil_and_run_at_the_same_time(backend, monkeypatch):
    """Two threads each run one long compiled call (a whole epoch). The main thread keeps
    sampling both models' weights: it can only run while the calls hold no GIL, and it
    sees both models half-way through their epochs at the same moment."""
    monkeypatch.setattr(_epoch, "_FLOPS_PER_CALL", 1e18)  # one compiled call per epoch
    X, y = _class_data(100000)
    nets = _two_models(backend)
    for net in nets:
        net.fit(X[:64], y[:64], optimizer=SGD(0.01), epochs=1, batch_size=16)  # warm up
    pre = [tuple(net.params[-8:]) for net in nets]
    barrier = threading.Barrier(3)
    finished = [threading.Event(), threading.Event()]

    def work(i):
        barrier.wait()
        nets[i].fit(X, y, epochs=1, batch_size=16)
        finished[i].set()

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    barrier.wait()
    samples = []
    while not all(e.is_set() for e in finished):
        samples.append((tuple(nets[0].params[-8:]), tuple(nets[1].params[-8:])))
        time.sleep(0.0005)
    for t in threads:
        t.join()
    post = [tuple(net.params[-8:]) for net in nets]
    mid = [(a not in (pre[0], post[0]), b not in (pre[1], post[1])) for a, b in samples]
    assert sum(a and b for a, b in mid) > 0, (len(samples), mid)
    _GIL.append((backend, len(samples), sum(a and b for a, b in mid)))


_GIL: list = []

_SAME_SEED = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    import fastnn
    from threadpoolctl import threadpool_limits
    fastnn.backend(sys.argv[1])
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 20)); y = rng.integers(0, 3, 2000)
    out = []
    with threadpool_limits(int(sys.argv[2]), user_api="blas"):
        for dropout, bn in ((0.0, False), (0.2, True)):
            net = fastnn.MLP([20, 48, 48, 3], loss="cross_entropy", dropout=dropout,
                             batch_norm=bn, backend=sys.argv[1], random_state=7)
            net.fit(X, y, epochs=3, batch_size=50, validation_split=0.1)
            out.append(hashlib.sha256(net.params.tobytes() + net.buffers.tobytes())
                       .hexdigest())
    print(" ".join(out))
""")


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_seed_gives_bit_identical_weights_in_separate_processes(backend):
    threads = 2  # fixed; 1 vs 2 threads is the thread policy's test, not this one's
    runs = [
        subprocess.run(
            [sys.executable, "-c", _SAME_SEED, backend, str(threads)],
            capture_output=True,
            text=True,
            timeout=300,
            env=ENV,
        )
        for _ in range(2)
    ]
    for r in runs:
        assert r.returncode == 0, r.stderr
    assert runs[0].stdout == runs[1].stdout
    _SEEDS.append(backend)


_SEEDS: list = []


def test_concurrency_recorded():
    if (
        len(_THREADS) < 2 * len(BACKENDS)
        or len(_GIL) < len(COMPILED)
        or len(_SEEDS) < len(BACKENDS)
    ):
        pytest.skip("not every concurrency case ran in this session")
    record(
        "concurrency.threads",
        "concurrency",
        "two models (Adam, 2 epochs) trained in two threads at once vs one after the "
        "other, on every backend, compiled epoch and step-by-step (dropout + batch "
        "norm) paths",
        len(_THREADS),
        "bit-identical weights and loss histories",
    )
    record(
        "concurrency.gil",
        "concurrency",
        "one compiled call per epoch in each of two threads (100000 rows) while the main "
        "thread samples both models' weights",
        len(_GIL),
        "the main thread runs during the calls and sees both models half-way through "
        "their epochs at the same moment: the kernels release the GIL and run at once",
        "; ".join(f"{b}: {both} of {n} samples" for b, n, both in _GIL),
    )
    record(
        "determinism.seed",
        "determinism",
        "the same seed trained twice in separate processes at 2 BLAS threads "
        "(compiled path; dropout + batch norm + validation split), every backend",
        len(_SEEDS),
        "bit-identical parameters and batch-norm statistics",
    )


# --- resources ----------------------------------------------------------------------------------


class _EpochMemory(fastnn.Callback):
    """tracemalloc peak above the epoch's starting point, for every epoch."""

    def __init__(self):
        self.peaks = []

    def on_train_begin(self, model, logs):
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]

    def on_epoch_end(self, epoch, logs):
        current, peak = tracemalloc.get_traced_memory()
        self.peaks.append(peak - self.base)
        tracemalloc.reset_peak()
        self.base = current

    def on_train_end(self, history):
        pass


@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["compiled epoch", "step by step"])
def test_an_epoch_never_copies_the_data(dropout, monkeypatch):
    _path(monkeypatch, PATHS[dropout > 0])
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1_000_000, 100), dtype=np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    net = MLP(
        [100, 8, 2], loss="cross_entropy", dropout=dropout, batch_norm=dropout > 0, random_state=0
    )
    mem = _EpochMemory()
    tracemalloc.start()
    try:
        net.fit(X, y, epochs=2, batch_size=4096, callbacks=[mem])
    finally:
        tracemalloc.stop()
    # per epoch: the permutation (8 MB of int64) and small things; the data is 400 MB
    assert max(mem.peaks) < X.nbytes / 20, mem.peaks
    _RESOURCES[f"epoch-{dropout}"] = max(mem.peaks)
    del X


_RESOURCES: dict = {}


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["compiled epoch", "step by step"])
def test_memory_is_flat_over_100_epochs(dropout, monkeypatch):
    _path(monkeypatch, PATHS[dropout > 0])
    X, y = _class_data(2000)
    net = MLP(
        [32, 64, 4], loss="cross_entropy", dropout=dropout, batch_norm=dropout > 0, random_state=0
    )
    current, rss = [], []

    def probe(epoch, logs):
        current.append(tracemalloc.get_traced_memory()[0])
        rss.append(_rss())

    tracemalloc.start()
    try:
        net.fit(X, y, epochs=100, batch_size=64, callbacks=[probe], validation_split=0.1)
    finally:
        tracemalloc.stop()
    grown = current[-1] - current[9]
    # the History grows by a few floats an epoch; anything else would be a leak
    assert grown < 90 * 1024, grown
    assert rss[-1] - rss[9] < 4 * 2**20, (rss[9], rss[-1])
    _RESOURCES[f"flat-{dropout}"] = (grown, rss[-1] - rss[9])


_BIG = textwrap.dedent("""
    import json, resource, sys, tracemalloc
    import numpy as np
    import fastnn
    rollback = sys.argv[1] == "1"
    tracemalloc.start()
    net = fastnn.MLP([10000, 10000], random_state=0)
    built = tracemalloc.get_traced_memory()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 10000), dtype=np.float32)
    Y = rng.standard_normal((64, 10000), dtype=np.float32)
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    net.fit(X, Y, optimizer=fastnn.Adam(1e-4), epochs=2, batch_size=32, rollback=rollback)
    peak = tracemalloc.get_traced_memory()[1] - base
    print(json.dumps({"n_params": net.n_params, "param_bytes": net.params.nbytes,
                      "build_peak": built[1], "fit_peak": peak,
                      "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
""")


@pytest.mark.slow
def test_a_model_of_1e8_parameters_trains_in_params_state_and_one_batch():
    """Adam on [10000, 10000] float32: 1e8 parameters (400 MB). fit allocates the
    optimizer state (m, v: 2 x 400 MB) and one batch of workspace; rollback=True adds
    its copy of parameters and optimizer state (3 x 400 MB)."""
    got = {}
    for rollback in (False, True):
        r = subprocess.run(
            [sys.executable, "-c", _BIG, str(int(rollback))],
            capture_output=True,
            text=True,
            timeout=600,
            env=ENV,
        )
        assert r.returncode == 0, r.stderr
        got[rollback] = json.loads(r.stdout.strip().splitlines()[-1])
    P = got[False]["param_bytes"]
    assert got[False]["n_params"] >= 10**8
    workspace = 32 * 10000 * 4 * 6  # a batch of inputs, targets and activations
    assert got[False]["fit_peak"] < 2 * P + workspace + 0.05 * P, got
    assert got[True]["fit_peak"] < 5 * P + workspace + 0.05 * P, got
    _RESOURCES["big"] = got


def test_resources_recorded():
    if not all(k in _RESOURCES for k in ("epoch-0.0", "epoch-0.1", "flat-0.0", "flat-0.1", "big")):
        pytest.skip("not every resource case ran in this session")
    record(
        "resources.epoch_copy",
        "resources",
        "fit on 1e6 x 100 float32 (400 MB), 2 epochs, compiled and step-by-step "
        "(dropout + batch norm) paths, tracemalloc per epoch",
        2,
        "each epoch allocates < 1/20 of the data (no copy of the data set)",
        f"compiled: {_RESOURCES['epoch-0.0'] / 1e6:.1f} MB, step by step: "
        f"{_RESOURCES['epoch-0.1'] / 1e6:.1f} MB per epoch",
    )
    record(
        "resources.flat",
        "resources",
        "100 epochs of a small model with a validation split, both paths, tracemalloc "
        "and RSS after epoch 10 and 100",
        2,
        "traced memory grows < 90 kB (the History's floats), RSS < 4 MB",
        "; ".join(
            f"{'compiled' if k.endswith('0.0') else 'step'}: "
            f"+{_RESOURCES[k][0] / 1e3:.1f} kB traced, "
            f"+{_RESOURCES[k][1] / 2**20:.1f} MB RSS"
            for k in ("flat-0.0", "flat-0.1")
        ),
    )
    big = _RESOURCES["big"]
    P = big[False]["param_bytes"]
    record(
        "resources.1e8_params",
        "resources",
        "Adam on a [10000, 10000] float32 model (1e8 parameters, 400 MB), two epochs of "
        "2 batches of 32, rollback=False and the default rollback=True (child "
        "processes)",
        2,
        "fit allocates < optimizer state (2 x params) + one batch of workspace + 5%; "
        "the default rollback adds one copy of params and optimizer state (3 x params)",
        f"fit peak above the built model: {big[False]['fit_peak'] / P:.2f} x params "
        f"(rollback=False), {big[True]['fit_peak'] / P:.2f} x params (rollback=True); "
        f"building the model peaks at {big[False]['build_peak'] / P:.1f} x params "
        f"(float64 draws of the initial weights)",
    )
