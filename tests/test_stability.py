"""Stability by construction (DESIGN §1, §3): no overflow, NaN or Inf for huge finite inputs.

Every built-in hidden activation with every built-in loss and a valid output, evaluated where
pre-activations and logits reach 1e4 and beyond, in float64 and float32, with NumPy set to
raise on overflow, invalid operations and division by zero (underflow is fine).
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest

from symbackprop import checkpoint, codegen, functions, spec

HIDDEN = [name for name in functions.ACTIVATIONS if name != "softmax"]
OUTPUTS = [
    ("mse", "identity"),
    ("mse", "tanh"),
    ("mse", "sigmoid"),
    ("cross_entropy", "softmax"),
    ("cross_entropy", "sigmoid"),
    ("binary_cross_entropy", "sigmoid"),
]
DTYPES = [np.float64, np.float32]
INPUTS, HIDDEN_UNITS, OUTPUT_UNITS = 3, 4, 2
BIG = 1e4
BOUNDED = {"sigmoid", "tanh"}


def strict():
    return np.errstate(over="raise", invalid="raise", divide="raise", under="ignore")


@functools.cache
def module(hidden: str, loss: str, output: str, *, inputs=INPUTS, units=OUTPUT_UNITS, depth=2):
    layers = [{"units": HIDDEN_UNITS, "activation": hidden}] * (depth - 1)
    layers.append({"units": units, "activation": output})
    network = spec.from_dict(
        {"name": f"stab_{hidden}_{output}", "inputs": inputs, "loss": loss, "layers": layers}
    )
    return checkpoint.load_module(codegen.generate(network))


def batch_inputs(dtype) -> np.ndarray:
    """Every sign pattern of ±1e4 over the inputs, plus a row of zeros."""
    rows = [list(signs) for signs in itertools.product((BIG, -BIG), repeat=INPUTS)]
    rows.append([0.0] * INPUTS)
    return np.array(rows, dtype=dtype)


def targets(loss: str, batch: int, dtype, rng: np.random.Generator) -> np.ndarray:
    if loss == "mse":
        return rng.normal(size=(batch, OUTPUT_UNITS)).astype(dtype)
    if loss == "cross_entropy":
        labels = np.arange(batch) % OUTPUT_UNITS
        return np.eye(OUTPUT_UNITS, dtype=dtype)[labels]
    return rng.integers(0, 2, size=(batch, OUTPUT_UNITS)).astype(dtype)


def identity_params(m, dtype, scale: float) -> dict[str, np.ndarray]:
    """W1 copies the inputs with alternating signs (z1 = ±1e4); W2 adds them up, times scale."""
    w1 = np.zeros((HIDDEN_UNITS, INPUTS))
    for i in range(HIDDEN_UNITS):
        w1[i, i % INPUTS] = 1.0 if i % 2 == 0 else -1.0
    w2 = np.array([[(-1.0) ** (i + k) for i in range(HIDDEN_UNITS)] for k in range(OUTPUT_UNITS)])
    params = {
        "W1": w1.astype(dtype),
        "b1": np.zeros(HIDDEN_UNITS, dtype=dtype),
        "W2": (scale * w2).astype(dtype),
        "b2": np.zeros(OUTPUT_UNITS, dtype=dtype),
    }
    assert set(params) == set(m.init_params(0, dtype))
    return params


def scaled_params(m, dtype, scale: float) -> dict[str, np.ndarray]:
    params = m.init_params(seed=1, dtype=dtype)
    return {
        key: (value * scale + (scale if key.startswith("b") else 0)).astype(dtype)
        for key, value in params.items()
    }


SETTINGS = {
    "identity": lambda m, dtype: identity_params(m, dtype, 1.0),
    "identity-W2x1e4": lambda m, dtype: identity_params(m, dtype, 1e4),
    "init-x100": lambda m, dtype: scaled_params(m, dtype, 100.0),
}


def assert_finite_everywhere(m, params, X, Y, dtype, probability: bool):
    with strict():
        out = m.forward(params, X)
        value = m.loss(params, X, Y)
        value_g, grads = m.gradients(params, X, Y)
        predicted = m.predict(params, X)
    assert out.dtype == dtype
    assert out.shape == (X.shape[0], Y.shape[1])
    assert np.all(np.isfinite(out)), out
    if probability:
        assert np.all((out >= 0) & (out <= 1))
    assert isinstance(value, float) and math.isfinite(value), value
    assert value >= 0 or not probability
    assert math.isfinite(value_g)
    assert value_g == pytest.approx(value, rel=1e-5 if dtype == np.float32 else 1e-12)
    assert set(grads) == set(params)
    for key, grad in grads.items():
        assert grad.shape == params[key].shape, key
        assert grad.dtype == dtype, key
        assert np.all(np.isfinite(grad)), (key, grad)
    assert predicted.shape[0] == X.shape[0]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize(("loss", "output"), OUTPUTS, ids=[f"{a}+{b}" for a, b in OUTPUTS])
@pytest.mark.parametrize("hidden", HIDDEN)
def test_huge_inputs_stay_finite(hidden, loss, output, setting, dtype):
    m = module(hidden, loss, output)
    params = SETTINGS[setting](m, dtype)
    X = batch_inputs(dtype)
    rng = np.random.default_rng(7)
    Y = targets(loss, X.shape[0], dtype, rng)
    # the pre-activations really are huge, and so are the logits where the hidden
    # activation is unbounded or W2 is scaled up (plain NumPy references, float64)
    z1 = X.astype(np.float64) @ params["W1"].T.astype(np.float64)
    assert np.abs(z1).max() >= BIG
    a1 = functions.ACTIVATIONS[hidden].reference(z1)
    z2 = a1 @ params["W2"].T.astype(np.float64) + params["b2"].astype(np.float64)
    if setting == "identity-W2x1e4" or hidden not in BOUNDED:
        assert np.abs(z2).max() >= BIG
    assert_finite_everywhere(m, params, X, Y, dtype, functions.ACTIVATIONS[output].probability)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize(("loss", "output"), OUTPUTS, ids=[f"{a}+{b}" for a, b in OUTPUTS])
def test_huge_logits_single_layer(loss, output, dtype):
    """The output layer alone, logits ±1e4 straight from the inputs."""
    m = module("identity", loss, output, inputs=2, depth=1)
    params = {
        "W1": np.eye(2, dtype=dtype),
        "b1": np.zeros(2, dtype=dtype),
    }
    X = np.array([[BIG, -BIG], [-BIG, BIG], [BIG, BIG], [-BIG, -BIG]], dtype=dtype)
    Y = targets(loss, X.shape[0], dtype, np.random.default_rng(3))
    assert_finite_everywhere(m, params, X, Y, dtype, functions.ACTIVATIONS[output].probability)


# --- the exact values at logits (1e4, -1e4) ---------------------------------------------------


def one_layer(loss: str, output: str, units: int):
    return module("identity", loss, output, inputs=2, units=units, depth=1)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("labels", ["int", "onehot"])
def test_softmax_cross_entropy_wrong_class_at_huge_logits(dtype, labels):
    m = one_layer("cross_entropy", "softmax", 2)
    params = {"W1": np.eye(2, dtype=dtype), "b1": np.zeros(2, dtype=dtype)}
    X = np.array([[BIG, -BIG]], dtype=dtype)  # logits (1e4, -1e4): class 0
    Y = np.array([1]) if labels == "int" else np.array([[0.0, 1.0]], dtype=dtype)
    with strict():
        value = m.loss(params, X, Y)
        value_g, grads = m.gradients(params, X, Y)
        probabilities = m.forward(params, X)
    assert value == pytest.approx(2 * BIG, rel=1e-6)
    assert value_g == pytest.approx(2 * BIG, rel=1e-6)
    assert np.all(np.isfinite(probabilities))
    assert probabilities[0] == pytest.approx([1.0, 0.0], abs=1e-6)
    # dL/dz = p - y = (1, -1); dL/dW = dz^T x; dL/db = dz
    np.testing.assert_allclose(grads["b1"], [1.0, -1.0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grads["W1"], [[BIG, -BIG], [-BIG, BIG]], rtol=1e-6)
    for grad in grads.values():
        assert np.all(np.isfinite(grad)) and grad.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_softmax_cross_entropy_right_class_at_huge_logits(dtype):
    m = one_layer("cross_entropy", "softmax", 2)
    params = {"W1": np.eye(2, dtype=dtype), "b1": np.zeros(2, dtype=dtype)}
    X = np.array([[BIG, -BIG]], dtype=dtype)
    with strict():
        value, grads = m.gradients(params, X, np.array([0]))
    assert value == pytest.approx(0.0, abs=1e-6)
    for grad in grads.values():
        assert np.all(np.isfinite(grad))
        np.testing.assert_allclose(grad, 0.0, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_sigmoid_binary_cross_entropy_wrong_labels_at_huge_logits(dtype):
    """Two sigmoid outputs, logits (1e4, -1e4), targets (0, 1): each term is softplus(1e4)."""
    m = one_layer("binary_cross_entropy", "sigmoid", 2)
    params = {"W1": np.eye(2, dtype=dtype), "b1": np.zeros(2, dtype=dtype)}
    X = np.array([[BIG, -BIG]], dtype=dtype)
    Y = np.array([[0.0, 1.0]], dtype=dtype)
    with strict():
        value = m.loss(params, X, Y)
        value_g, grads = m.gradients(params, X, Y)
        outputs = m.forward(params, X)
    assert value == pytest.approx(2 * BIG, rel=1e-6)
    assert value_g == pytest.approx(2 * BIG, rel=1e-6)
    assert outputs[0] == pytest.approx([1.0, 0.0], abs=1e-6)
    # dL/dz = sigmoid(z) - y = (1, -1)
    np.testing.assert_allclose(grads["b1"], [1.0, -1.0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grads["W1"], [[BIG, -BIG], [-BIG, BIG]], rtol=1e-6)
    for grad in grads.values():
        assert np.all(np.isfinite(grad)) and grad.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("label", [0, 1])
def test_single_sigmoid_binary_cross_entropy_at_huge_logit(dtype, label):
    """One sigmoid output with logit ±2e4 on the wrong side of its label: loss 2e4."""
    m = one_layer("binary_cross_entropy", "sigmoid", 1)
    params = {"W1": np.array([[1.0, -1.0]], dtype=dtype), "b1": np.zeros(1, dtype=dtype)}
    sign = 1.0 if label == 0 else -1.0
    X = np.array([[sign * BIG, -sign * BIG]], dtype=dtype)  # logit = sign * 2e4
    Y = np.array([label])
    with strict():
        value = m.loss(params, X, Y)
        value_g, grads = m.gradients(params, X, Y)
    assert value == pytest.approx(2 * BIG, rel=1e-6)
    assert value_g == pytest.approx(2 * BIG, rel=1e-6)
    # dL/dz = sigmoid(z) - y = sign
    np.testing.assert_allclose(grads["b1"], [sign], rtol=1e-6)
    np.testing.assert_allclose(grads["W1"], sign * X, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_sigmoid_cross_entropy_at_huge_logit(dtype):
    m = one_layer("cross_entropy", "sigmoid", 2)
    params = {"W1": np.eye(2, dtype=dtype), "b1": np.zeros(2, dtype=dtype)}
    X = np.array([[BIG, -BIG]], dtype=dtype)
    Y = np.array([[0.0, 1.0]], dtype=dtype)  # -log sigmoid(-1e4) = softplus(1e4) = 1e4
    with strict():
        value, grads = m.gradients(params, X, Y)
    assert value == pytest.approx(BIG, rel=1e-6)
    for grad in grads.values():
        assert np.all(np.isfinite(grad))
    # dL/dz_2 = -y_2 (1 - sigmoid(z_2)) = -1 for the second output, 0 for the first
    np.testing.assert_allclose(grads["b1"], [0.0, -1.0], atol=1e-6)
