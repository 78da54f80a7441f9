"""The worked examples of docs/spec.md §12, each on every backend, hand computation beside.

Textbooks write the column-per-sample form (Z = W A + b); fastnn is batch-first
(Z = X W + b with W of shape (n_in, n_out)), so weights are transposed on the way in.
"""

import numpy as np
import pytest

from kernels._support import ALL_BACKENDS, DTYPES, backend


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_perceptron_step(name, dtype):
    # Single-layer perceptron: y = step(w1 x1 + w2 x2 + b), w = (1, -1), b = 0.
    k = backend(name)
    x = np.array([[1, 1], [0, 1], [1, 0], [0, 0]], dtype=dtype)
    w = np.array([[1], [-1]], dtype=dtype)  # (n_in=2, n_out=1)
    b = np.zeros(1, dtype=dtype)
    z, a = k.dense_forward(x, w, b, activation="step")
    # (1,1): 1 - 1 + 0 = 0, step(0) = 1      (0,1): 0 - 1 = -1, step(-1) = 0
    # (1,0): 1 - 0 = 1, step(1) = 1          (0,0): 0, step(0) = 1
    np.testing.assert_array_equal(z[:, 0], np.array([0, -1, 1, 0], dtype=dtype))
    np.testing.assert_array_equal(a[:, 0], np.array([1, 0, 1, 1], dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_sigmoid_values(name, dtype):
    # sigma(-1) = 1/(1 + e^1) = 1/(1 + 2.718) ~ 0.2689;
    # sigma(0) = 1/(1 + e^0) = 1/2 = 0.5; sigma(2) = 1/(1 + e^-2) = 1/(1 + 0.1353) ~ 0.8808.
    s = backend(name).sigmoid(np.array([-1.0, 0.0, 2.0], dtype=dtype))
    np.testing.assert_array_equal(np.round(s.astype(np.float64), 4), [0.2689, 0.5, 0.8808])
    assert s[1] == 0.5  # exactly a half
    # and to the last bit or two: 1/(1 + e), e^-2/(1 + e^-2)... evaluated in float64.
    exact = np.array([1 / (1 + np.e), 0.5, 1 / (1 + np.exp(-2.0))]).astype(dtype)
    np.testing.assert_array_max_ulp(s, exact, maxulp=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_two_sigmoid_layers(name, dtype):
    # h1 = sigma(w1 x + b1), y = sigma(w2 h1 + b2),
    # w1 = 0.5, b1 = -1, w2 = 1, b2 = 0, x = 2.
    k = backend(name)
    x = np.array([[2.0]], dtype=dtype)
    _, h1 = k.dense_forward(
        x, np.array([[0.5]], dtype=dtype), np.array([-1.0], dtype=dtype), activation="sigmoid"
    )
    # h1 = sigma(0.5 * 2 - 1) = sigma(0) = 0.5, exactly.
    assert h1[0, 0] == 0.5
    _, y = k.dense_forward(
        h1, np.array([[1.0]], dtype=dtype), np.array([0.0], dtype=dtype), activation="sigmoid"
    )
    # y = sigma(1 * 0.5 + 0) = sigma(0.5) = 1/(1 + e^-0.5) = 1/1.6065 ~ 0.6225.
    assert round(float(y[0, 0]), 4) == 0.6225
    np.testing.assert_array_max_ulp(y[0], np.array([1 / (1 + np.exp(-0.5))], dtype=dtype), maxulp=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_gradient_descent_step(name, dtype):
    # C(w) = (w - 3)^2, lr 0.1, w0 = 0.
    k = backend(name)
    w = np.zeros(1, dtype=dtype)
    target = np.array([3.0], dtype=dtype)
    # C is fastnn's mse over one element: mean((w - 3)^2) = (0 - 3)^2 = 9.
    assert k.mse(w, target) == 9.0
    # dC/dw = 2 (w - 3) = 2 (0 - 3) = -6: mse_gradient's 2 (y_pred - y) / size, size 1.
    g = k.mse_gradient(w, target)
    assert g[0] == -6.0
    # w1 = w0 - lr dC/dw = 0 - 0.1 * (-6) = 0.6 (0.1 rounded to the dtype first).
    k.sgd_step(w, g, lr=0.1)
    assert w[0] == dtype(0) - dtype(0.1) * dtype(-6.0)
    assert float(w[0]) == pytest.approx(0.6, rel=float(np.finfo(dtype).eps))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_quadratic_cost_both_conventions(name, dtype):
    # The half-squared convention: C = 1/2 (y_hat - y)^2 with y_hat = 0.5, y = 1:
    # C = 1/2 (0.5 - 1)^2 = 1/2 * 0.25 = 0.125 and dC/dy_hat = y_hat - y = -0.5.
    # fastnn's mse (docs/spec.md §4) has no 1/2: mean((y_hat - y)^2) = 0.25 and 2 (y_hat - y) = -1.
    k = backend(name)
    y_hat = np.array([0.5], dtype=dtype)
    y = np.array([1.0], dtype=dtype)
    loss = k.mse(y_hat, y)
    grad = k.mse_gradient(y_hat, y)
    assert loss == 0.25 and grad[0] == -1.0
    # That convention is fastnn's divided by 2, the same minimiser.
    assert loss / 2 == 0.125 and grad[0] / 2 == -0.5


def seed002_network():
    """The 3-4-1 ReLU network of docs/spec.md §12, drawn in the column-per-sample form."""
    state = np.random.get_state()
    try:
        np.random.seed(0)
        d, h = 3, 4
        W1 = np.random.randn(h, d) * 0.5  # (h, d): column-per-sample form
        w2 = np.random.randn(h) * 0.5
    finally:
        np.random.set_state(state)
    return W1, w2


# The expected values of docs/spec.md §12 (np.random.seed(0), x = (1, -0.5, 0.3), y = 1.5).
SEED002_Z1 = [0.92879757, 0.50696542, 0.49740068, 0.38742938]
SEED002_DW2 = [-1.74745077, -0.95381076, -0.93581555, -0.72891424]
SEED002_DELTA1 = [-0.71591271, -0.11446041, -0.41754478, -0.31388942]
SEED002_DW1 = [
    [-0.71591271, 0.35795635, -0.21477381],
    [-0.11446041, 0.05723021, -0.03433812],
    [-0.41754478, 0.20877239, -0.12526343],
    [-0.31388942, 0.15694471, -0.09416683],
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_seed002_relu_network(name, dtype):
    k = backend(name)
    W1, w2 = seed002_network()
    # Batch-first: one sample x of shape (1, 3); layer 1 w = W1.T (3, 4), b = 0;
    # layer 2 w = w2 as a (4, 1) column, b = 0.
    x = np.array([[1.0, -0.5, 0.3]], dtype=dtype)
    y = np.array([[1.5]], dtype=dtype)
    w_1 = np.ascontiguousarray(W1.T, dtype=dtype)
    w_2 = w2.reshape(4, 1).astype(dtype)
    b_1, b_2 = np.zeros(4, dtype), np.zeros(1, dtype)
    # Printed precision is 8 decimals (float64); float32 carries ~7 significant digits.
    tol = 1e-8 if dtype == np.float64 else 2e-6

    # Forward: z1 = W1 x + b1; every z1 > 0 here, so a1 = relu(z1) = z1.
    z1, a1 = k.dense_forward(x, w_1, b_1, activation="relu")
    np.testing.assert_allclose(z1[0], SEED002_Z1, rtol=0, atol=tol)
    np.testing.assert_array_equal(a1, z1)
    # z2 = w2 . a1 + b2 = 0.5593; loss = (z2 - y)^2 = (0.5593 - 1.5)^2 = 0.8849.
    z2, _ = k.dense_forward(a1, w_2, b_2, activation="identity")
    assert round(float(z2[0, 0]), 4) == 0.5593
    loss = k.mse(z2, y)  # one element: mean((z2 - y)^2) = (z2 - y)^2
    assert round(loss, 4) == 0.8849

    # Backward: delta2 = dL/dz2 = 2 (z2 - y) = 2 (0.5593 - 1.5) = -1.8814.
    delta2 = k.mse_gradient(z2, y)
    assert round(float(delta2[0, 0]), 4) == -1.8814
    # Layer 2 (identity): dz2 = delta2; dw2 = a1.T dz2 = delta2 a1; db2 = delta2.
    dz2, dw2, db2 = k.dense_backward(a1, z2, z2, delta2, activation="identity")
    np.testing.assert_array_equal(dz2, delta2)
    np.testing.assert_allclose(dw2[:, 0], SEED002_DW2, rtol=0, atol=tol)
    np.testing.assert_array_equal(db2, delta2[0])
    # delta1 = (delta2 w2) * 1[z1 > 0]: dense_input_gradient gives delta2 w2.T, and the
    # relu layer's backward masks it (all four z1 > 0, so nothing is masked).
    da1 = k.dense_input_gradient(dz2, w_2)
    dz1, dW1, db1 = k.dense_backward(x, z1, a1, da1, activation="relu")
    np.testing.assert_allclose(dz1[0], SEED002_DELTA1, rtol=0, atol=tol)
    np.testing.assert_array_equal(db1, dz1[0])
    # dL/dW1 = delta1 x^T in the column form's (h, d) layout; fastnn's dW1 = x.T dz1 is (d, h).
    np.testing.assert_allclose(dW1.T, SEED002_DW1, rtol=0, atol=tol)

    if dtype == np.float64:
        # The column-form computation, run here: the same numbers to within
        # the rounding of a 3- or 4-term dot product (a few ulp).
        xs, ys = x[0], 1.5
        z1s = W1 @ xs
        a1s = np.maximum(0, z1s)
        z2s = w2 @ a1s
        d2 = 2 * (z2s - ys)
        delta1 = (d2 * w2) * (z1s > 0)
        np.testing.assert_allclose(z1[0], z1s, rtol=1e-15)
        np.testing.assert_allclose(z2[0, 0], z2s, rtol=1e-15)
        np.testing.assert_allclose(loss, (z2s - ys) ** 2, rtol=1e-14)
        np.testing.assert_allclose(dW1.T, np.outer(delta1, xs), rtol=1e-14)
