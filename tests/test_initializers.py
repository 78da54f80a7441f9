"""Weight initialisation (docs/spec.md §8): Xavier/He variances, distributions, defaults,
seeding."""

import math

import numpy as np
import pytest

import fastnn
from fastnn.initializers import default_init, init_scale, initialize


@pytest.mark.parametrize(
    "activation, expected",
    [
        ("relu", "he"),
        ("leaky_relu", "he"),
        ("elu", "he"),
        ("sigmoid", "xavier"),
        ("tanh", "xavier"),
        ("identity", "xavier"),
        ("softmax", "xavier"),
        ("step", "xavier"),
        ("gelu", "he"),
        ("silu", "he"),
        ("mish", "he"),
        ("selu", "lecun"),
    ],
)
def test_default_init_is_he_for_relu_family_else_xavier(activation, expected):
    assert default_init(activation) == expected


def test_init_scale_formulas():
    # docs/spec.md §8: Xavier N(0, 2/(in+out)) or U(+-sqrt(6/(in+out)));
    # He N(0, 2/in) or U(+-sqrt(6/in)).
    assert init_scale("xavier", "normal", 30, 10) == pytest.approx(math.sqrt(2 / 40))
    assert init_scale("glorot", "uniform", 30, 10) == pytest.approx(math.sqrt(6 / 40))
    assert init_scale("he", "normal", 30, 10) == pytest.approx(math.sqrt(2 / 30))
    assert init_scale("kaiming", "uniform", 30, 10) == pytest.approx(math.sqrt(6 / 30))
    # LeCun N(0, 1/in) or U(+-sqrt(3/in)), selu's.
    assert init_scale("lecun", "normal", 30, 10) == pytest.approx(math.sqrt(1 / 30))
    assert init_scale("lecun", "uniform", 30, 10) == pytest.approx(math.sqrt(3 / 30))


@pytest.mark.parametrize("init", ["xavier", "he", "lecun"])
def test_normal_draws_have_the_stated_standard_deviation(init):
    w = np.empty((400, 300))
    initialize(w, init, "normal", np.random.default_rng(1))
    want = init_scale(init, "normal", 400, 300)
    # 120000 draws: the sample std has relative standard error 1/sqrt(2n) = 0.2%,
    # so 2% is ten standard errors.
    assert w.std() == pytest.approx(want, rel=0.02)
    assert abs(w.mean()) < 0.02 * want


@pytest.mark.parametrize("init", ["xavier", "he"])
def test_uniform_draws_fill_the_stated_interval(init):
    w = np.empty((400, 300))
    initialize(w, init, "uniform", np.random.default_rng(2))
    bound = init_scale(init, "uniform", 400, 300)
    assert w.min() >= -bound and w.max() <= bound
    # with 120000 uniform draws both ends are approached within 0.1% of the width
    assert w.min() < -0.999 * bound and w.max() > 0.999 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_same_generator_state_same_weights_and_float32_is_rounded_float64():
    w64 = initialize(np.empty((5, 7)), "he", "normal", np.random.default_rng(3))
    w32 = initialize(np.empty((5, 7), np.float32), "he", "normal", np.random.default_rng(3))
    np.testing.assert_array_equal(w32, w64.astype(np.float32))


def test_bad_arguments_name_themselves():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="init must be one of"):
        initialize(np.empty((2, 2)), "orthogonal", "normal", rng)
    with pytest.raises(ValueError, match="init_distribution"):
        initialize(np.empty((2, 2)), "he", "gauss", rng)
    with pytest.raises(TypeError, match="rng"):
        initialize(np.empty((2, 2)), "he", "normal", 0)


def test_model_initialisation_follows_spec_per_layer():
    net = fastnn.MLP(
        [200, 300, 300, 5],
        ["relu", "tanh"],
        loss="mse",
        dtype="float64",
        backend="numpy",
        random_state=0,
    )
    w0, w1, w2 = net.weights
    # relu layer: He; tanh layer: Xavier; identity output: Xavier (2% = 10 std errors)
    assert w0.std() == pytest.approx(math.sqrt(2 / 200), rel=0.02)
    assert w1.std() == pytest.approx(math.sqrt(2 / 600), rel=0.02)
    assert w2.std() == pytest.approx(math.sqrt(2 / 305), rel=0.05)
    for b in net.biases:
        assert not b.any()


def test_model_init_options_and_batch_norm_defaults():
    net = fastnn.MLP(
        [50, 60, 2],
        "relu",
        init="xavier",
        init_distribution="uniform",
        batch_norm=True,
        backend="numpy",
        random_state=0,
    )
    bound = math.sqrt(6 / 110)
    assert np.abs(net.weights[0]).max() <= bound
    assert net.layers[0].b is None  # the BatchNorm's beta is the shift
    layer = net.layers[1]
    np.testing.assert_array_equal(layer.gamma, 1)
    np.testing.assert_array_equal(layer.beta, 0)
    np.testing.assert_array_equal(layer.running_mean, 0)
    np.testing.assert_array_equal(layer.running_var, 1)


def test_random_state_seeds_the_weights():
    a = fastnn.MLP([3, 4, 2], backend="numpy", random_state=7)
    b = fastnn.MLP([3, 4, 2], backend="numpy", random_state=7)
    c = fastnn.MLP([3, 4, 2], backend="numpy", random_state=8)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)
    a.reset_parameters()
    assert not np.array_equal(a.params, b.params)  # the init stream moved on
