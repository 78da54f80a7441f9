"""fastnn.dask on a real cluster: a distributed.LocalCluster of two worker processes on
loopback, started and stopped here. Searches and out-of-core fits on the cluster give
the bits of the same computation in this process, a search survives a killed worker,
and the out-of-core fit keeps only a few blocks in memory (Optuna: test_optuna.py)."""

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("sklearn")
da = pytest.importorskip("dask.array")

from distributed.diagnostics.plugin import SchedulerPlugin  # noqa: E402
from sklearn.datasets import (  # noqa: E402
    make_classification,
    make_multilabel_classification,
    make_regression,
)
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV  # noqa: E402

import fastnn.dask as fdask  # noqa: E402
from _dask_support import local_cluster_client, run_killing_a_worker  # noqa: E402
from fastnn import MLPClassifier, MLPRegressor  # noqa: E402

# Short fits end at max_iter on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


client = pytest.fixture(scope="module")(local_cluster_client)


@pytest.fixture
def cluster_client(client):
    """The module's client with both workers up (a test may have killed one)."""
    client.wait_for_workers(2, timeout=60)
    return client


def _blas_threads():
    import threadpoolctl

    return sorted(
        {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}
    )


def _data(n=240, seed=0):
    return make_classification(n, 8, n_informative=5, n_classes=3, random_state=seed)


def _same_cv_results(a, b):
    keys = [k for k in a.cv_results_ if "time" not in k]
    assert sorted(keys) == sorted(k for k in b.cv_results_ if "time" not in k)
    for k in keys:
        x, y = a.cv_results_[k], b.cv_results_[k]
        if k == "params":
            assert x == y
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=k)
    for w, v in zip(a.best_estimator_.coefs_, b.best_estimator_.coefs_):
        np.testing.assert_array_equal(w, v)


# --- searches ----------------------------------------------------------------------------------


def test_grid_search_on_cluster_equals_in_process(cluster_client):
    X, y = _data()
    grid = {"learning_rate_init": [1e-3, 1e-2], "hidden_layer_sizes": [(8,), (16,)]}

    def search():
        return GridSearchCV(MLPClassifier(max_iter=20, random_state=0, n_threads=1), grid, cv=3)

    local = search().fit(X, y)
    with fdask.parallel_search(cluster_client):
        remote = search().fit(X, y)
    _same_cv_results(remote, local)


def test_thread_budget_is_set_in_workers_and_undone(cluster_client):
    before = cluster_client.run(_blas_threads)
    with fdask.parallel_search(cluster_client, threads_per_task=2):
        inside = cluster_client.run(_blas_threads)
    assert set(map(tuple, inside.values())) == {(2,)}
    assert cluster_client.run(_blas_threads) == before
    with pytest.raises(ValueError, match="thread budget"):
        fdask.ThreadBudget(0)


def test_search_survives_a_killed_worker(cluster_client):
    X, y = _data(360, seed=1)
    space = {
        "learning_rate_init": [1e-3, 3e-3, 1e-2],
        "alpha": [1e-4, 1e-3, 1e-2],
        "hidden_layer_sizes": [(16,), (32,)],
    }

    def search():
        return RandomizedSearchCV(
            MLPClassifier(max_iter=60, random_state=0, n_threads=1),
            space,
            n_iter=8,
            cv=3,
            random_state=0,
        )

    local = search().fit(X, y)

    def run():
        # X and y go to every worker once; the rest travels with the tasks.
        with fdask.parallel_search(cluster_client, scatter=[X, y]):
            return search().fit(X, y)

    remote, _ = run_killing_a_worker(cluster_client, run)
    _same_cv_results(remote, local)


# --- out-of-core training --------------------------------------------------------------------


def _block_order_fit(est, X, y, chunk, epochs, seed, per_call=1, **kw):
    """The in-process equivalent of fit_blocks, written out (the documented order)."""
    rng = np.random.default_rng(seed)
    n_blocks = -(-len(X) // chunk)
    for _ in range(epochs):
        order = rng.permutation(n_blocks)
        for s in range(0, n_blocks, per_call):
            rows = np.concatenate(
                [
                    np.arange(i * chunk, min(len(X), (i + 1) * chunk))
                    for i in order[s : s + per_call]
                ]
            )
            est.partial_fit(X[rows], y[rows], **kw)
    return est


@pytest.mark.parametrize("per_call", [1, 3])
def test_fit_blocks_on_cluster_equals_in_process(cluster_client, per_call):
    X, y = _data(250)
    Xd, yd = da.from_array(X, chunks=(40, 4)), da.from_array(y, chunks=60)
    est = MLPClassifier((16,), random_state=0, n_threads=1, learning_rate_init=0.01)
    remote = fdask.fit_blocks(
        est,
        Xd,
        yd,
        epochs=3,
        classes=[0, 1, 2],
        random_state=5,
        blocks_per_call=per_call,
        client=cluster_client,
    )
    assert not hasattr(est, "coefs_"), "the estimator given is not modified"
    here = fdask.fit_blocks(
        est,
        Xd,
        yd,
        epochs=3,
        classes=[0, 1, 2],
        random_state=5,
        blocks_per_call=per_call,
        client=False,
    )
    by_hand = _block_order_fit(
        MLPClassifier((16,), random_state=0, n_threads=1, learning_rate_init=0.01),
        X,
        y,
        40,
        3,
        5,
        per_call,
        classes=[0, 1, 2],
    )
    for a, b, c in zip(remote.coefs_, here.coefs_, by_hand.coefs_):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
    assert remote.t_ == by_hand.t_ == 3 * len(X)
    # Blockwise prediction and scoring equal the in-memory ones.
    np.testing.assert_array_equal(fdask.predict(remote, Xd).compute(), remote.predict(X))
    np.testing.assert_array_equal(
        fdask.predict_proba(remote, Xd).compute(), remote.predict_proba(X)
    )
    assert fdask.score(remote, Xd, yd) == remote.score(X, y)


def test_fit_blocks_survives_a_killed_worker(cluster_client):
    X, y = _data(360, seed=2)
    Xd, yd = da.from_array(X, chunks=30), da.from_array(y, chunks=30)

    def est():
        return MLPClassifier((16,), random_state=3, n_threads=1, learning_rate_init=0.01)

    remote, _ = run_killing_a_worker(
        cluster_client,
        lambda: fdask.fit_blocks(
            est(), Xd, yd, epochs=4, classes=[0, 1, 2], random_state=7, client=cluster_client
        ),
    )
    by_hand = _block_order_fit(est(), X, y, 30, 4, 7, classes=[0, 1, 2])
    for a, b in zip(remote.coefs_, by_hand.coefs_):
        np.testing.assert_array_equal(a, b)
    assert remote.t_ == 4 * len(X)


def test_fit_blocks_dataframe_and_regression(cluster_client):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    X, y = make_regression(200, 5, n_targets=2, noise=0.1, random_state=0)
    y /= y.std(axis=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(5)])
    targets = pd.DataFrame(y, columns=["a", "b"])
    Xd, yd = dd.from_pandas(frame, npartitions=5), dd.from_pandas(targets, npartitions=5)
    est = MLPRegressor(
        hidden_layer_sizes=(8,), random_state=1, n_threads=1, learning_rate_init=0.01
    )
    seen = []
    remote = fdask.fit_blocks(
        est, Xd, yd, epochs=4, random_state=2, on_epoch_end=lambda e, m: seen.append(m.t_) or e == 2
    )
    assert seen == [200, 400, 600], "on_epoch_end returning True stops"
    arrays = fdask.fit_blocks(
        est,
        da.from_array(X, chunks=40),
        da.from_array(y, chunks=40),
        epochs=3,
        random_state=2,
        client=cluster_client,
    )
    for a, b in zip(remote.coefs_, arrays.coefs_):
        np.testing.assert_array_equal(a, b)
    assert list(remote.feature_names_in_) == list(frame.columns)
    pred = fdask.predict(remote, Xd).compute()
    np.testing.assert_array_equal(pred.to_numpy(), remote.predict(frame))
    assert fdask.score(remote, Xd, yd) == pytest.approx(
        remote.score(frame, targets), rel=1e-12, abs=1e-12
    )


def test_blockwise_predict_and_score_multilabel_and_one_output(cluster_client):
    X, Y = make_multilabel_classification(120, 6, n_classes=3, random_state=0)
    clf = MLPClassifier((8,), max_iter=50, random_state=0, n_threads=1).fit(X, Y)
    # y's row blocks differ from X's: they are rechunked to match.
    Xd, Yd = da.from_array(X, chunks=(25, 3)), da.from_array(Y, chunks=(30, 3))
    np.testing.assert_array_equal(fdask.predict(clf, Xd).compute(), clf.predict(X))
    assert fdask.score(clf, Xd, Yd) == clf.score(X, Y)
    y = X @ np.linspace(-1, 1, 6)
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=50, random_state=0, n_threads=1).fit(X, y)
    pred = fdask.predict(reg, Xd)
    assert pred.shape == (120,)
    np.testing.assert_array_equal(pred.compute(), reg.predict(X))
    assert fdask.score(reg, Xd, da.from_array(y, chunks=40)) == pytest.approx(
        reg.score(X, y), rel=1e-12
    )


class _BlocksInMemory(SchedulerPlugin):
    """Counts the keys of one prefix held in workers' memory at once (its maximum)."""

    def __init__(self, prefix):
        self.prefix, self.now, self.max = prefix, set(), 0

    def transition(self, key, start, finish, *args, **kwargs):
        name = key[0] if isinstance(key, tuple) else key
        if not str(name).startswith(self.prefix):
            return
        if finish == "memory":
            self.now.add(key)
        else:
            self.now.discard(key)
        self.max = max(self.max, len(self.now))


def test_fit_blocks_holds_a_few_blocks_at_a_time(cluster_client):
    # Blocks drawn on the workers, as if read from files: the data set exists only
    # block by block.
    n_blocks, rows = 16, 25
    X = da.random.default_rng(0).standard_normal((n_blocks * rows, 6), chunks=(rows, 6))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    plugin = _BlocksInMemory(X.name)
    cluster_client.cluster.scheduler.add_plugin(plugin, name="ooc-count")
    try:
        est = fdask.fit_blocks(
            MLPClassifier((8,), random_state=0, n_threads=1, learning_rate_init=0.03),
            X,
            y,
            epochs=2,
            classes=[0, 1],
            random_state=0,
            prefetch=1,
            client=cluster_client,
        )
    finally:
        cluster_client.cluster.scheduler.remove_plugin("ooc-count")
    assert est.t_ == 2 * n_blocks * rows
    # One call running, one prefetched, and the one just finished being released.
    assert 1 <= plugin.max <= 3
    assert fdask.score(est, X, y) > 0.8


def test_fit_blocks_checks_its_arguments():
    X, y = _data(50)
    with pytest.raises(TypeError, match="Dask array"):
        fdask.fit_blocks(MLPClassifier(), X, y, classes=[0, 1, 2])
    Xd = da.from_array(X, chunks=10)
    yd = da.from_array(np.zeros((50, 1, 1)), chunks=10)
    with pytest.raises(ValueError, match="1-D or 2-D"):
        fdask.fit_blocks(MLPClassifier(), Xd, yd, classes=[0, 1, 2], client=False)
    with pytest.raises(ValueError, match="blocks_per_call"):
        fdask.fit_blocks(
            MLPClassifier(), Xd, da.from_array(y, chunks=10), blocks_per_call=0, client=False
        )


def test_importing_fastnn_does_not_import_dask_or_optuna():
    import subprocess
    import sys

    code = (
        "import sys, fastnn; fastnn.MLPClassifier; "
        "bad = [m for m in ('dask', 'distributed', 'optuna') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True)
