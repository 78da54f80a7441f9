"""Learning-rate schedules: the formulas of docs/spec.md §6, warm-up, plateau, configs, use
with every optimizer."""

import math

import numpy as np
import pytest

import fastnn
from fastnn.optim import OPTIMIZERS
from fastnn.schedules import (
    SCHEDULES,
    Constant,
    Cosine,
    InverseScaling,
    LinearWarmup,
    ReduceOnPlateau,
    StepDecay,
    as_schedule,
    schedule_from_config,
    schedule_to_config,
)


def test_constant():
    s = Constant(0.3)
    assert [s(t) for t in (0, 5, 1000)] == [0.3, 0.3, 0.3]
    assert as_schedule(0.3) == s and as_schedule(s) is s


def test_step_decay_is_eta0_gamma_power_floor():
    s = StepDecay(0.1, step_size=60)  # 0.1 * 0.1 ** (t // 60)
    for t in (0, 59, 60, 119, 120, 199):
        assert s(t) == pytest.approx(0.1 * 0.1 ** (t // 60), rel=1e-15)


def test_cosine_formula_and_hold_after_T():
    eta0, eta_min, T = 0.1, 1e-5, 200
    s = Cosine(eta0, T, eta_min)
    for t in (0, 1, 50, 100, 150, 199, 200):
        want = eta_min + 0.5 * (eta0 - eta_min) * (1 + math.cos(math.pi * t / T))
        assert s(t) == pytest.approx(want, rel=1e-14)
    assert s(0) == eta0 and s(T) == pytest.approx(eta_min) and s(T + 50) == s(T)


def test_inverse_scaling():
    s = InverseScaling(0.1, power_t=0.5)
    assert s.per == "step"
    assert [s(t) for t in (0, 3, 99)] == pytest.approx([0.1, 0.05, 0.01], rel=1e-15)


def test_linear_warmup_then_cosine_matches_the_seed_figure_shifted_by_one():
    # Textbook warm-up: eta0 * t / Tw for t < Tw, then cosine over the remaining T - Tw epochs;
    # fastnn counts the current epoch from 1 in the ramp (docs/spec.md §6: t <= Tw) so the first
    # epoch trains at eta0 / Tw instead of 0.
    T, Tw, eta0, eta_min = 200, 20, 0.1, 1e-5
    s = LinearWarmup(Tw, after=Cosine(eta0, T - Tw, eta_min))
    for t in range(T):
        if t < Tw:
            want = eta0 * (t + 1) / Tw
        else:
            want = eta_min + 0.5 * (eta0 - eta_min) * (1 + math.cos(math.pi * (t - Tw) / (T - Tw)))
        assert s(t) == pytest.approx(want, rel=1e-14), t
    assert s.per == "epoch"
    assert LinearWarmup(5, after=Constant(1.0, per="step")).per == "step"
    assert LinearWarmup(4, 0.2)(3) == pytest.approx(0.2)


def test_reduce_on_plateau():
    s = ReduceOnPlateau(1.0, factor=0.5, patience=2, min_delta=0.01, cooldown=1, min_lr=0.2)
    seen = []
    for loss in [1.0, 0.5, 0.495, 0.6, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]:
        s.observe(loss)
        seen.append(s(0))
    # improvements at 1.0, 0.5 and 0.4; 0.495 is within min_delta of 0.5 (no
    # improvement); two bad epochs halve the rate, then one cooldown epoch is not
    # counted; the rate never goes below min_lr.
    assert seen == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2]
    s.observe(math.nan)  # ignored
    assert s(0) == 0.2


def test_reduce_on_plateau_state_round_trip():
    s = ReduceOnPlateau(0.1, patience=3)
    for loss in (1.0, 1.0, 1.0):
        s.observe(loss)
    t = schedule_from_config(schedule_to_config(s))
    assert t.state_dict() != s.state_dict()
    t.load_state_dict(s.state_dict())
    assert t == s
    s.observe(1.0)
    t.observe(1.0)
    assert t(0) == s(0) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="keys"):
        t.load_state_dict({"best": 1})


@pytest.mark.parametrize(
    "schedule",
    [
        Constant(0.2),
        StepDecay(0.2, 3, 0.5, per="step"),
        Cosine(0.2, 10, 0.01),
        LinearWarmup(3, Cosine(0.2, 10)),
        LinearWarmup(2, ReduceOnPlateau(0.1)),
        InverseScaling(0.3, 0.25, per="epoch"),
        ReduceOnPlateau(0.3, factor=0.2, patience=4),
    ],
)
def test_config_round_trip(schedule):
    clone = schedule_from_config(schedule_to_config(schedule))
    assert clone == schedule and repr(clone) == repr(schedule)
    assert [clone(t) for t in range(12)] == [schedule(t) for t in range(12)]


def test_registry_and_bad_arguments():
    assert set(SCHEDULES) == {
        "constant",
        "step_decay",
        "cosine",
        "inverse_scaling",
        "linear_warmup",
        "reduce_on_plateau",
    }
    with pytest.raises(ValueError, match="schedule name must be one of"):
        schedule_from_config({"name": "exponential", "lr": 0.1})
    with pytest.raises(ValueError, match="bad arguments"):
        schedule_from_config({"name": "cosine", "lr": 0.1})
    with pytest.raises(ValueError, match="T must be >= 1"):
        Cosine(0.1, 0)
    with pytest.raises(ValueError, match="eta_min must be <= lr"):
        Cosine(0.1, 10, eta_min=0.2)
    with pytest.raises(ValueError, match="per must be one of"):
        Constant(0.1, per="batch")
    with pytest.raises(ValueError, match="step_size must be >= 1"):
        StepDecay(0.1, 0)
    with pytest.raises(ValueError, match="factor"):
        ReduceOnPlateau(0.1, factor=1.0)
    with pytest.raises(ValueError, match="warmup must be >= 1"):
        LinearWarmup(0, 0.1)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        as_schedule(-0.1)


def _spiral_bits():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 2))
    return X, (X[:, 0] * X[:, 1] > 0).astype(int)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_takes_a_schedule_and_history_records_it(name):
    X, y = _spiral_bits()
    net = fastnn.MLP([2, 8, 2], loss="cross_entropy", backend="numpy", random_state=0)
    sched = LinearWarmup(2, after=StepDecay(0.01, step_size=2, gamma=0.5))
    hist = net.fit(X, y, optimizer=OPTIMIZERS[name](lr=sched), epochs=6, batch_size=16)
    assert hist["lr"] == pytest.approx([sched(t) for t in range(6)], rel=1e-15)


def test_plateau_schedule_is_fed_the_validation_loss():
    X, y = _spiral_bits()
    net = fastnn.MLP([2, 8, 2], loss="cross_entropy", backend="numpy", random_state=0)
    # lr 0 never changes the weights, so the validation loss is flat from epoch 1:
    # with patience 2 the rate drops by 10 after epochs 3 and 5.
    sched = ReduceOnPlateau(0.0, patience=2)
    net.fit(X, y, optimizer=fastnn.SGD(sched), epochs=6, validation_split=0.25)
    assert sched.bad_epochs == 1 and sched.best == net.history["val_loss"][0]
    sched2 = ReduceOnPlateau(1e-9, patience=2)
    net.fit(X, y, optimizer=fastnn.SGD(sched2), epochs=6, validation_split=0.25)
    assert net.history["lr"] == pytest.approx([1e-9] * 3 + [1e-10] * 2 + [1e-11], rel=1e-12)
