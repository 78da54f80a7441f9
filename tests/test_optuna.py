"""fastnn.dask's Optuna pieces: the objective trains what its trial says (the same
value as fastnn.fit by hand), PruningCallback prunes from per-epoch validation
scores, and optimize_on_dask runs a study's trials on a two-process LocalCluster."""

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("distributed")
pytest.importorskip("sklearn")
optuna_integration = pytest.importorskip("optuna_integration")

from sklearn.datasets import make_classification  # noqa: E402

import fastnn  # noqa: E402
import fastnn.dask as fdask  # noqa: E402
from _dask_support import (  # noqa: E402
    CountingObjective,
    local_cluster_client,
    run_killing_a_worker,
)

# Optuna flags DaskStorage as experimental.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

SPACE = {
    "units": (4, 32),
    "n_layers": (1, 2),
    "batch_size": [32, 64],
    "optimizer": ["sgd", "momentum", "adam"],
}


@pytest.fixture(scope="module", autouse=True)
def quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


def _data():
    X, y = make_classification(300, 10, n_informative=6, n_classes=3, random_state=0)
    X = X.astype(np.float32)
    return X[:200], y[:200], X[200:], y[200:]


def _objective(**kw):
    return fdask.Objective(*_data(), epochs=kw.pop("epochs", 4), space=SPACE, **kw)


def test_objective_trains_what_the_trial_says():
    params = {
        "lr": 0.02,
        "n_layers": 2,
        "units_0": 16,
        "units_1": 8,
        "activation": "tanh",
        "dropout": 0.1,
        "optimizer": "momentum",
        "schedule": "cosine",
        "batch_size": 32,
    }
    value = _objective(epochs=5)(optuna.trial.FixedTrial(params))
    X, y, Xv, yv = _data()
    model = fastnn.MLP([10, 16, 8, 3], "tanh", loss="cross_entropy", dropout=0.1, random_state=0)
    history = fastnn.fit(
        model,
        X,
        y,
        optimizer=fastnn.Momentum(fastnn.Cosine(0.02, T=5)),
        epochs=5,
        batch_size=32,
        validation_data=(Xv, yv),
    )
    assert value == history["val_accuracy"][-1]


def test_study_reports_every_epoch_and_prunes():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(_objective(), n_trials=3)
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert sorted(trial.intermediate_values) == [0, 1, 2, 3]
        assert trial.value == trial.intermediate_values[3]
    # A pruner that prunes any accuracy below 1.01: every trial stops after one epoch.
    pruned = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.ThresholdPruner(lower=1.01),
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    pruned.optimize(_objective(), n_trials=2)
    for trial in pruned.trials:
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert list(trial.intermediate_values) == [0]


def test_objective_checks_its_arguments():
    with pytest.raises(ValueError, match="search-space keys"):
        fdask.Objective(*_data(), space={"learning_rate": (0.1, 1.0)})
    with pytest.raises(ValueError, match="monitors 'val_r2'"):
        _objective(monitor="val_r2")(
            optuna.trial.FixedTrial(
                {
                    "lr": 0.01,
                    "n_layers": 1,
                    "units_0": 8,
                    "activation": "relu",
                    "dropout": 0.0,
                    "optimizer": "adam",
                    "schedule": "constant",
                    "batch_size": 32,
                }
            )
        )


client = pytest.fixture(scope="module")(local_cluster_client)


def test_optimize_on_dask(client):
    storage = optuna_integration.DaskStorage(client=client)
    study = optuna.create_study(
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    fdask.optimize_on_dask(
        study, _objective(), n_trials=6, client=client, catch=(fastnn.DivergenceError,)
    )
    states = [t.state for t in study.trials]
    assert len(states) == 6
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert all(s in done for s in states), states
    # The best trial, trained again in this process, gives the same value.
    best = study.best_trial
    assert _objective()(optuna.trial.FixedTrial(best.params)) == best.value


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_optimize_on_dask_explores_and_learns(client, sampler):
    """Every task used to unpickle the same seeded sampler and draw the same
    parameters (1 distinct set in 10 trials). Now trials differ, and the sampler of the
    worker that runs a trial sees the trials finished before it, so TPE leaves its
    random start-up phase as study.optimize(n_jobs=...) does."""
    n_trials, startup = 10, 3
    made = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=0, n_startup_trials=startup),
        "random": lambda: optuna.samplers.RandomSampler(seed=0),
    }[sampler]
    study = optuna.create_study(
        storage=optuna_integration.DaskStorage(client=client), direction="maximize", sampler=made()
    )
    fdask.optimize_on_dask(study, CountingObjective(_objective(epochs=2)), n_trials, client=client)
    trials = study.trials
    assert len(trials) == n_trials
    distinct = {tuple(sorted(t.params.items())) for t in trials}
    assert len(distinct) == n_trials, [t.params for t in trials]
    if sampler == "tpe":
        # Two single-threaded workers: trial i starts after at least i - 2 ended, so
        # from trial startup + 2 on TPE has its start-up trials to learn from.
        seen = [t.user_attrs["finished_before"] for t in trials]
        assert all(n >= startup for n in seen[startup + 2 :]), seen


def test_optimize_on_dask_needs_a_shared_storage(client):
    with pytest.raises(ValueError, match="DaskStorage"):
        fdask.optimize_on_dask(optuna.create_study(), _objective(), 1, client=client)


def test_optimize_on_dask_survives_a_killed_worker(client):
    study = optuna.create_study(
        storage=optuna_integration.DaskStorage(client=client),
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=1),
    )
    objective = _objective(epochs=40)
    run_killing_a_worker(client, lambda: fdask.optimize_on_dask(study, objective, 4, client=client))
    states = [t.state for t in study.trials]
    # Every one of the 4 tasks finished a trial; the attempt killed with its worker,
    # if it had started its trial, stays RUNNING (Optuna has no heartbeat here).
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4
    assert states.count(optuna.trial.TrialState.RUNNING) <= 1
    assert len(states) <= 5
