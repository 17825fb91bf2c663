"""The one-sample train_step in Python floats (symbackprop/scalar.py) against the vectorized one.

Each small dense network's module is loaded twice from the same source: once as generated,
once with its scalar step switched off, so that the second runs NumPy's vectorized step on
the same single sample.  The two must give the same loss and the same parameters to a few
ulps (float64), to float32's rounding (float32), update params in place, and refuse bad
inputs with the vectorized step's messages before anything changes."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from symbackprop.checkpoint import load_module
from symbackprop.codegen import generate
from symbackprop.functions import ACTIVATIONS
from symbackprop.scalar import SCALAR_LIMIT, scalar_code
from symbackprop.spec import from_dict, load_spec

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = [name for name, act in ACTIVATIONS.items() if not act.softmax]
CUSTOM = [
    {"name": "softsign", "expr": "x/(1+abs(x))"},
    {"name": "leaky_max", "expr": "Max(0.1*x, x)"},
    {"name": "gauss", "expr": "exp(-x**2)"},
    {"name": "mish", "expr": "x*tanh(softplus(x))"},
    {"name": "clipped", "expr": "Min(x, 1) + abs(x)/10"},
]
OUTPUTS = [
    ("softmax", "cross_entropy", 3),
    ("sigmoid", "binary_cross_entropy", 1),
    ("sigmoid", "binary_cross_entropy", 2),
    ("identity", "mse", 2),
    ("tanh", "mse", 1),
    ("softmax", "mse", 3),
    ("identity", {"name": "logcosh", "expr": "log(cosh(yhat - y))"}, 2),
    ("softmax", {"name": "focal_ish", "expr": "-y*(1-yhat)**2*log(yhat)"}, 3),
    ("sigmoid", {"name": "quartic", "expr": "(yhat - y)**4/4"}, 2),
]
# float64: the two steps round differently (the order of a sum, libm against NumPy's loops)
TOLERANCE = {np.float64: 1e-14, np.float32: 2e-6}


def spec_dict(
    hidden: list, output: str, loss: object, outputs: int, *, inputs: int = 3, units: int = 4
) -> dict:
    layers = [{"units": units, "activation": act} for act in hidden]
    layers.append({"units": outputs, "activation": output})
    return {"name": "small", "inputs": inputs, "loss": loss, "layers": layers}


def pair(source: dict | str) -> tuple[object, object]:
    """(the module, the same module with its scalar step off)."""
    spec = load_spec(source) if isinstance(source, str) else from_dict(source)
    text = generate(spec)
    scalar = load_module(text, "scalar_side")
    vectorized = load_module(text, "vector_side")
    assert hasattr(scalar, "_scalar_core"), "this network should have a scalar step"
    vectorized._scalar_step = lambda *args: None
    return scalar, vectorized


def rel(a: np.ndarray, b: np.ndarray, moved: np.ndarray | None = None) -> float:
    """max |a - b| over the size of b, or of the updates summed into it (``moved``): a
    parameter that the steps carry back near 0 keeps the rounding of the larger terms."""
    scale = float(np.max(np.abs(b)))
    if moved is not None:
        scale = max(scale, float(np.max(moved)))
    return float(np.max(np.abs(np.asarray(a, np.float64) - b))) / max(scale, 1e-300)


def sample(module: object, seed: int, classification: bool, dtype: type = np.float64) -> tuple:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(1, module.LAYER_SIZES[0])).astype(dtype)
    outputs = module.LAYER_SIZES[-1]
    if classification and outputs > 1:
        Y = np.eye(outputs, dtype=dtype)[rng.integers(0, outputs, size=1)]
    elif classification:
        Y = rng.integers(0, 2, size=(1, 1)).astype(dtype)
    else:
        Y = rng.normal(size=(1, outputs)).astype(dtype)
    return X, Y


def assert_same_steps(source: dict | str, dtype: type = np.float64, steps: int = 5) -> None:
    scalar, vectorized = pair(source)
    ours = scalar.init_params(seed=2, dtype=dtype)
    theirs = {key: value.copy() for key, value in ours.items()}
    arrays = dict(ours)
    moved = {key: np.zeros(value.shape) for key, value in ours.items()}  # sum of |updates|
    for step in range(steps):
        X, Y = sample(scalar, step, scalar.CLASSIFICATION, dtype)
        if dtype == np.float32:  # from the same point: float32's rounding differs each step
            theirs = {key: value.copy() for key, value in ours.items()}
        before = {key: np.array(value, np.float64) for key, value in theirs.items()}
        got = scalar.train_step(ours, X, Y, 0.3)
        expected = vectorized.train_step(theirs, X, Y, 0.3)
        assert isinstance(got, float)
        assert abs(got - expected) <= TOLERANCE[dtype] * max(1.0, abs(expected)), (step, got)
        for key in theirs:
            assert ours[key] is arrays[key], f"{key} was replaced, not updated in place"
            assert ours[key].dtype == dtype
            moved[key] += np.abs(np.asarray(theirs[key], np.float64) - before[key])
            assert rel(ours[key], theirs[key], moved[key]) <= TOLERANCE[dtype], (step, key)


@pytest.mark.parametrize(
    "activation", HIDDEN + CUSTOM, ids=lambda a: a if isinstance(a, str) else a["name"]
)
def test_each_hidden_activation(activation: object) -> None:
    assert_same_steps(spec_dict([activation, activation], "softmax", "cross_entropy", 3))


@pytest.mark.parametrize(
    "output,loss,outputs", OUTPUTS, ids=lambda v: v if isinstance(v, str) else str(v)
)
def test_each_output_and_loss(output: str, loss: object, outputs: int) -> None:
    assert_same_steps(spec_dict(["tanh"], output, loss, outputs))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_bundled_seed_network(dtype: type) -> None:
    assert_same_steps("seed_mlp", dtype, steps=20)


def test_one_input_one_unit_one_output() -> None:
    assert_same_steps(spec_dict(["sigmoid"], "identity", "mse", 1, inputs=1, units=1))
    assert_same_steps(spec_dict(["relu"], "sigmoid", "binary_cross_entropy", 1, inputs=1, units=1))


def test_l2_and_layers_without_bias() -> None:
    source = spec_dict(["relu", "gelu"], "softmax", "cross_entropy", 3)
    source["l2"] = 0.05
    source["layers"][1]["bias"] = False
    assert_same_steps(source)


def test_a_numpy_float32_learning_rate_keeps_float64_arithmetic() -> None:
    scalar, vectorized = pair("seed_mlp")
    ours, theirs = scalar.init_params(seed=4), vectorized.init_params(seed=4)
    X = np.array([[0.7, -0.2]])
    for lr in (np.float32(0.3), np.float64(0.3), 1):
        got = scalar.train_step(ours, X, [1], lr)
        assert type(got) is float
        assert abs(got - vectorized.train_step(theirs, X, [1], lr)) <= 1e-15
        for key in theirs:
            assert rel(ours[key], theirs[key]) <= TOLERANCE[np.float64], (lr, key)


def test_class_labels_and_one_hot_rows_give_the_same_step() -> None:
    module = load_module(generate(load_spec("seed_mlp")))
    X = np.array([[0.3, -1.2]])
    by_label, by_row = module.init_params(seed=1), module.init_params(seed=1)
    for dtype in (np.int64, np.uint8, np.int32):
        first = module.train_step(by_label, X, np.array([1], dtype), 0.5)
        second = module.train_step(by_row, X, np.array([[0.0, 1.0]]), 0.5)
        assert first == second
    for key in by_row:
        np.testing.assert_array_equal(by_label[key], by_row[key])


def test_bad_inputs_are_refused_before_anything_changes() -> None:
    module = load_module(generate(load_spec("seed_mlp")))
    params = module.init_params(seed=0)
    before = {key: value.copy() for key, value in params.items()}
    X = np.array([[0.5, 0.25]])
    cases = [
        (lambda: module.train_step(params, X, np.array([2]), 0.1), "class labels outside"),
        (lambda: module.train_step(params, X, np.zeros((1, 3)), 0.1), r"Y has shape \(1, 3\)"),
        (lambda: module.train_step(params, X, np.array([0, 1]), 0.1), "Y has shape"),
        (lambda: module.train_step(params, np.zeros((1, 3)), [0], 0.1), "X has shape"),
        (lambda: module.train_step(params, X, [0], -1.0), "lr is"),
        (lambda: module.train_step(params, X, np.array([[1j, 0]]), 0.1), "Y has dtype"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(TypeError, match="rng is a int"):
        module.train_step(params, X, [0], 0.1, rng=3)
    params["W2"].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['W2'\] is read-only"):
        module.train_step(params, X, [0], 0.1)
    params["W2"].flags.writeable = True
    shared = dict(params, b2=params["b1"])
    with pytest.raises(ValueError, match=r"params\['b2'\] shares memory with params\['b1'\]"):
        module.train_step(shared, X, [0], 0.1)
    for key in params:
        np.testing.assert_array_equal(params[key], before[key])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_are_a_value_error(bad: float) -> None:
    module = load_module(generate(load_spec("seed_mlp")))
    params = module.init_params(seed=0)
    before = {key: value.copy() for key, value in params.items()}
    X = np.array([[bad, 0.0]])
    if np.isnan(bad):
        with pytest.raises(ValueError, match="X holds NaN or infinite values"):
            module.train_step(params, X, [1], 0.1)
        with pytest.raises(ValueError, match="Y holds NaN or infinite values"):
            module.train_step(params, np.zeros((1, 2)), np.array([[np.nan, 1.0]]), 0.1)
        for key in params:
            np.testing.assert_array_equal(params[key], before[key])
    else:  # what the vectorized step does with it, the scalar one does too
        scalar, vectorized = pair("seed_mlp")
        ours, theirs = scalar.init_params(seed=0), vectorized.init_params(seed=0)
        with np.errstate(all="ignore"):
            try:
                expected = vectorized.train_step(theirs, X, [1], 0.1)
            except ValueError as error:
                with pytest.raises(ValueError, match=str(error)):
                    scalar.train_step(ours, X, [1], 0.1)
            else:
                got = scalar.train_step(ours, X, [1], 0.1)
                assert got == expected or (np.isnan(got) and np.isnan(expected))
        for key in theirs:
            np.testing.assert_array_equal(ours[key], theirs[key])


def test_where_math_raises_the_vectorized_step_decides() -> None:
    """exp overflows in Python's math (OverflowError) where NumPy gives inf: same result."""
    source = spec_dict([{"name": "grow", "expr": "exp(x)"}], "identity", "mse", 1, units=2)
    scalar, vectorized = pair(source)
    ours, theirs = scalar.init_params(seed=0), vectorized.init_params(seed=0)
    X = np.array([[800.0, 800.0, 800.0]])
    with np.errstate(all="ignore"):
        got = scalar.train_step(ours, X, np.array([[1.0]]), 0.1)
        expected = vectorized.train_step(theirs, X, np.array([[1.0]]), 0.1)
    assert got == expected or (np.isnan(got) and np.isnan(expected))
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key])


def test_only_small_dense_networks_have_a_scalar_step() -> None:
    small = spec_dict(["relu"], "softmax", "cross_entropy", 3)
    assert "def _scalar_core" in generate(from_dict(small))
    wide = spec_dict(["relu"], "softmax", "cross_entropy", 3, inputs=40, units=8)
    assert from_dict(wide).parameter_count > SCALAR_LIMIT
    assert "_scalar" not in generate(from_dict(wide))
    for name in ("residual_mlp", "batchnorm_mlp", "digits_mlp"):
        assert "_scalar" not in generate(load_spec(name)), name


def test_an_expression_without_a_math_spelling_keeps_the_vectorized_step() -> None:
    import sympy

    from symbackprop.scalar import Unsupported

    x = sympy.Symbol("x", real=True)
    assert scalar_code(sympy.tanh(x) + x**2, {x: "z"}) == "z * z + math.tanh(z)"
    with pytest.raises(Unsupported):
        scalar_code(sympy.besselj(0, x), {x: "z"})
    with pytest.raises(Unsupported):
        scalar_code(x + sympy.Symbol("t"), {x: "z"})


def test_nan_propagates_through_max_and_min_as_in_numpy() -> None:
    import math

    import sympy

    x = sympy.Symbol("x", real=True)
    for expr in (sympy.Max(0, x), sympy.Min(1, x), sympy.Max(0.1 * x, x)):
        code = scalar_code(expr, {x: "z"})
        assert math.isnan(eval(code, {"math": math, "z": float("nan")})), code  # noqa: S307


def test_in_threads_the_scalar_steps_match_serial() -> None:
    module = load_module(generate(load_spec("seed_mlp")))
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    data = [np.random.default_rng(i).normal(size=(40, 1, 2)) for i in range(4)]

    def train(index: int) -> tuple[list[float], dict]:
        params = module.init_params(seed=index)
        losses = [
            module.train_step(params, X, [step % 2], 0.05) for step, X in enumerate(data[index])
        ]
        return losses, params

    try:
        serial = [train(i) for i in range(4)]
        results: list = [None] * 4
        threads = [
            threading.Thread(target=lambda i=i: results.__setitem__(i, train(i))) for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)
    for (losses, params), (expected_losses, expected) in zip(results, serial, strict=True):
        assert losses == expected_losses
        for key in expected:
            np.testing.assert_array_equal(params[key], expected[key])


def test_scalar_modules_pass_the_projects_ruff_settings(tmp_path: Path) -> None:
    """Long names and wide layers wrap within the line length."""
    hidden = [
        {"units": 2, "activation": act} for act in ["gelu", "silu", "softplus", "elu", "sigmoid"]
    ]
    hidden.append(
        {"units": 2, "activation": {"name": "a_custom_activation", "expr": CUSTOM[3]["expr"]}}
    )
    specs = {
        "deep": {
            "name": "deep",
            "inputs": 2,
            "loss": "cross_entropy",
            "l2": 0.01,
            "layers": [*hidden, {"units": 2, "activation": "softmax"}],
        },
        "wide": spec_dict(["tanh"], "sigmoid", "binary_cross_entropy", 2, inputs=60, units=4),
        "losses": spec_dict(["relu"], "softmax", OUTPUTS[7][1], 3),
    }
    for name, source in specs.items():
        text = generate(from_dict(source))
        assert "def _scalar_core" in text, name
        (tmp_path / f"{name}.py").write_text(text, encoding="utf-8")
    command = [sys.executable, "-m", "ruff", "check", "--no-cache"]
    command += ["--config", str(ROOT / "pyproject.toml"), *sorted(map(str, tmp_path.glob("*.py")))]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
