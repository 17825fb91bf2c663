"""The PyTorch export (``symbackprop.export.torch_source``) against the NumPy module.

Every bundled example and small specs covering every layer kind, a custom activation and a
custom loss: the NumPy module's parameters loaded into the exported model by
``spec.torch_keys`` give the same outputs (inference mode), loss and gradients (training
mode) in float64, to 1e-12 relative.  Dropout: the exported model keeps torch's own
``nn.Dropout``; for the comparison a forward hook replaces its output by the input times the
keep mask the NumPy module draws from the same generator (``layers.draw_masks``, the
module's rule), over 1 - rate, so that both compute with one mask.
"""

from __future__ import annotations

import ast
import json
import math
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from symbackprop.checkpoint import load_module
from symbackprop.codegen import generate
from symbackprop.derive import derive
from symbackprop.export import torch_kernel, torch_source
from symbackprop.layers import draw_masks
from symbackprop.spec import bundled_examples, from_dict, load_spec

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-12

DENSE = {
    "name": "dense_custom",
    "inputs": 3,
    "loss": {"name": "logcosh", "expr": "log(cosh(yhat - y))"},
    "l2": 0.01,
    "layers": [
        {"units": 4, "activation": {"name": "mish", "expr": "x*tanh(log(1 + exp(x)))"}},
        {"units": 4, "bias": False, "activation": {"name": "leaky_relu", "slope": 0.2}},
        {"units": 3, "activation": {"name": "elu", "alpha": 0.5}},
        {"units": 2, "bias": False},
    ],
}
NORMS = {
    "name": "norms",
    "inputs": 4,
    "loss": "cross_entropy",
    "l2": 0.001,
    "layers": [
        {"units": 6, "activation": "gelu"},
        {"kind": "layer_norm"},
        {"units": 6, "activation": "silu"},
        {"kind": "rms_norm", "eps": 1e-3},
        {"units": 6, "activation": "softplus"},
        {"kind": "batch_norm", "eps": 1e-3, "momentum": 0.3},
        {"kind": "dropout", "rate": 0.3},
        {
            "kind": "residual",
            "block": [{"units": 6, "activation": "tanh"}, {"kind": "layer_norm", "eps": 1e-4}],
        },
        {"units": 3, "activation": "softmax"},
    ],
}
CONV = {
    "name": "conv",
    "inputs": [2, 7, 7],
    "loss": "cross_entropy",
    "l2": 0.002,
    "layers": [
        {
            "kind": "conv2d",
            "filters": 3,
            "kernel": [3, 2],
            "stride": [2, 1],
            "padding": [1, 0],
            "activation": "relu",
        },
        {"kind": "max_pool2d", "kernel": 2, "stride": 1},
        {
            "kind": "conv2d",
            "filters": 2,
            "kernel": 2,
            "bias": False,
            "activation": {"name": "xtanh", "expr": "x*tanh(x)"},  # a custom Function on 4-D
        },
        {"kind": "avg_pool2d", "kernel": 2},
        {"kind": "flatten"},
        {"units": 3, "activation": "softmax"},
    ],
}
SIGMOID_CE = {
    "name": "sigmoid_ce",
    "inputs": 3,
    "loss": "cross_entropy",
    "layers": [{"units": 4, "activation": "elu"}, {"units": 2, "activation": "sigmoid"}],
}
CUSTOM_OUTPUT = {
    "name": "custom_output",
    "inputs": 2,
    "loss": "mse",
    "layers": [
        {"units": 3, "activation": {"name": "softsign", "expr": "x/(1 + abs(x))"}},
        {"units": 2, "activation": {"name": "softsign", "expr": "x/(1 + abs(x))"}},
    ],
}
SIGMOID_CUSTOM_LOSS = {
    "name": "sigmoid_custom_loss",
    "inputs": 2,
    "loss": {"name": "brier", "expr": "(yhat - y)**2 + abs(yhat - y)/10"},
    "layers": [{"units": 3, "activation": "relu"}, {"units": 2, "activation": "sigmoid"}],
}
KINKS = {
    "name": "kinks",
    "inputs": 3,
    "loss": {"name": "ce_plus", "expr": "-y*log(yhat) + yhat**2"},
    "layers": [
        {"units": 4, "activation": {"name": "f1", "expr": "Max(x, 0)*sin(x) + Min(x, 1)"}},
        {"units": 4, "activation": {"name": "f2", "expr": "abs(x)**1.5 + erf(x)*exp(-x)"}},
        {"units": 3, "activation": "softmax"},
    ],
}
SPECS = {
    s["name"]: s
    for s in (DENSE, NORMS, CONV, SIGMOID_CE, CUSTOM_OUTPUT, SIGMOID_CUSTOM_LOSS, KINKS)
}
EXAMPLES = tuple(bundled_examples())
ALL = (*EXAMPLES, *SPECS)
# the largest relative difference seen per quantity (tests/test_export.py -s prints them)
MEASURED: dict[str, float] = {}


def _spec(name: str):
    return from_dict(SPECS[name]) if name in SPECS else load_spec(name)


@cache
def modules(name: str):
    """(spec, the NumPy module, the exported module) of a bundled example or a test spec."""
    spec = _spec(name)
    derivation = derive(spec)
    numpy_module = load_module(generate(derivation), f"numpy_{name}")
    return spec, numpy_module, load_module(torch_source(derivation), f"torch_{name}")


def _point(spec, numpy_module, batch: int = 8, labels: bool = False, seed: int = 0):
    """Parameters (init_params with biases, gains and running statistics moved off their
    initial values), X (batch, *input_shape) and targets."""
    rng = np.random.default_rng(seed)
    params = numpy_module.init_params(seed=seed + 1)
    for key, value in params.items():
        if key.startswith(("b", "beta", "mean")):
            params[key] = rng.normal(0.0, 0.3, value.shape)
        elif key.startswith("gamma"):
            params[key] = 1.0 + rng.normal(0.0, 0.2, value.shape)
        elif key.startswith("var"):
            params[key] = rng.uniform(0.5, 1.5, value.shape)
    X = rng.normal(size=(batch, *spec.input_shape))
    outputs = spec.output_layer.units
    if spec.loss.name in ("cross_entropy", "binary_cross_entropy") and spec.loss.expr is None:
        if outputs == 1 or spec.loss.name == "binary_cross_entropy":
            Y = rng.integers(0, 2, size=(batch, outputs)).astype(np.float64)
            if labels and outputs == 1:
                Y = Y[:, 0].astype(np.int64)
        else:
            classes = rng.integers(0, outputs, size=batch)
            Y = classes if labels else np.eye(outputs)[classes]
    else:
        Y = rng.normal(size=(batch, outputs))
    return params, X, Y


def _model(spec, exported, params, dtype=None):
    model = exported.Model() if dtype is None else exported.Model(dtype=dtype)
    exported.load_arrays(model, {spec.torch_keys[k]: v for k, v in params.items()})
    return model


def _relative(got, want) -> float:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = max(float(np.abs(want).max(initial=0.0)), np.finfo(np.float64).tiny)
    return float(np.abs(got - want).max(initial=0.0)) / scale


def _check(what: str, got, want) -> None:
    error = _relative(got, want)
    MEASURED[what] = max(MEASURED.get(what, 0.0), error)
    assert error <= TOLERANCE, f"{what}: relative difference {error:.3g}"


def _use_masks(spec, model, masks):
    """Forward hooks: each dropout layer's output is its input * keep / (1 - rate)."""
    handles = []
    for layer in spec.flat:
        if layer.kind == "dropout" and layer.index in masks:
            keep = torch.as_tensor(masks[layer.index], dtype=torch.float64)
            scale = 1.0 / (1.0 - layer.layer.rate)
            module = getattr(model, f"layer{layer.index}")
            if not isinstance(module, torch.nn.Dropout) or module.p != layer.layer.rate:
                raise AssertionError(f"layer{layer.index} is not nn.Dropout({layer.layer.rate})")

            def hook(module, inputs, output, keep=keep, scale=scale):
                return inputs[0] * keep * scale

            handles.append(module.register_forward_hook(hook))
    return handles


def _gradients(spec, exported, model, X, Y, seed=7):
    masks = draw_masks(spec.flat, spec.order, np.random.default_rng(seed), len(X))
    handles = _use_masks(spec, model, masks)
    try:
        model.train()
        model.zero_grad()
        value = exported.loss(model, X, Y)
        value.backward()
    finally:
        for handle in handles:
            handle.remove()
    grads = {k: model.get_parameter(spec.torch_keys[k]).grad for k in spec.parameters}
    return value.item(), {k: g.detach().numpy() for k, g in grads.items()}


@pytest.mark.parametrize("name", ALL)
def test_forward_loss_and_gradients_equal_the_numpy_modules(name):
    spec, numpy_module, exported = modules(name)
    params, X, Y = _point(spec, numpy_module)
    model = _model(spec, exported, params)
    model.eval()
    with torch.no_grad():
        outputs = model(X).numpy()
    _check("forward", outputs, numpy_module.forward(params, X))
    want_loss, want = numpy_module.gradients(params, X, Y, rng=np.random.default_rng(7))
    got_loss, got = _gradients(spec, exported, model, X, Y)
    _check("loss", got_loss, want_loss)
    assert set(got) == set(want) == set(numpy_module.PARAMETERS)
    for key in want:
        _check("gradients", got[key], want[key])


@pytest.mark.parametrize("name", ["conv", "digits_mlp", "sigmoid_bce", "sigmoid_ce"])
def test_class_labels_give_the_one_hot_loss(name):
    spec, numpy_module, exported = modules(name)
    params, X, labels = _point(spec, numpy_module, labels=True)
    _, _, onehot = _point(spec, numpy_module, labels=False)
    assert labels.dtype.kind == "i"
    model = _model(spec, exported, params)
    model.train()
    got = exported.loss(model, X, labels).item()
    _check("loss", got, numpy_module.loss(params, X, labels))
    _check("loss", got, exported.loss(model, X, onehot).item())


@pytest.mark.parametrize("name", ALL)
def test_state_dict_keys_and_parameter_order(name):
    spec, numpy_module, exported = modules(name)
    model = exported.Model()
    tracked = {f"layer{x.index}.num_batches_tracked" for x in spec.flat if x.kind == "batch_norm"}
    want = set(spec.torch_keys.values()) | tracked | {"x_mean", "x_scale"}
    assert set(model.state_dict()) == want
    names = [key for key, _ in model.named_parameters()]
    assert names == [spec.torch_keys[k] for k in numpy_module.PARAMETERS]
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [tuple(s) for s in numpy_module.PARAMETERS.values()]
    assert exported.KEYS == spec.torch_keys
    assert tuple(model.x_mean.shape) == tuple(spec.input_shape)
    for layer in spec.flat:  # torch's own modules
        if layer.kind == "residual":
            assert not hasattr(model, f"layer{layer.index}")
            continue
        kind = {
            "dense": torch.nn.Linear,
            "conv2d": torch.nn.Conv2d,
            "layer_norm": torch.nn.LayerNorm,
            "rms_norm": torch.nn.RMSNorm,
            "batch_norm": torch.nn.BatchNorm1d,
            "dropout": torch.nn.Dropout,
            "max_pool2d": torch.nn.MaxPool2d,
            "avg_pool2d": torch.nn.AvgPool2d,
            "flatten": torch.nn.Flatten,
        }[layer.kind]
        assert type(getattr(model, f"layer{layer.index}")) is kind


@pytest.mark.parametrize("name", ["batchnorm_mlp", "norms", "conv", "dense_custom"])
def test_one_sgd_step_equals_the_numpy_train_step(name):
    """torch.optim.SGD on loss(model, X, Y): the NumPy module's train_step, batch-norm
    running statistics included (torch's update, unbiased variance)."""
    spec, numpy_module, exported = modules(name)
    params, X, Y = _point(spec, numpy_module)
    model = _model(spec, exported, params)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    _gradients(spec, exported, model, X, Y)
    optimizer.step()
    numpy_module.train_step(params, X, Y, 0.05, rng=np.random.default_rng(7))
    state = exported.arrays(model)
    for key, value in params.items():
        _check("sgd step", state[spec.torch_keys[key]], value)


def _custom_functions(name):
    _, _, exported = modules(name)
    return {
        key: value
        for key, value in vars(exported).items()
        if isinstance(value, type) and issubclass(value, torch.autograd.Function)
    }


def _gradcheck_inputs(function, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shape = (5, 3)
    first = torch.randn(shape, dtype=torch.float64, generator=generator) * 2
    first = first + torch.sign(first) * 0.1  # away from abs's kink at 0
    if "Loss" in function.__name__:  # yhat in (0.1, 0.9): a probability for log(yhat)
        yhat = 0.1 + 0.8 * torch.rand(shape, dtype=torch.float64, generator=generator)
        y = torch.rand(shape, dtype=torch.float64, generator=generator)
        return (yhat.requires_grad_(), y.requires_grad_())
    return (first.requires_grad_(),)


CUSTOM = ["dense_custom", "custom_output", "sigmoid_custom_loss", "swish_mlp", "kinks", "conv"]


@pytest.mark.parametrize("name", CUSTOM)
def test_custom_functions_pass_gradcheck(name):
    functions = _custom_functions(name)
    assert functions, "no custom Function was exported"
    for function in functions.values():
        inputs = _gradcheck_inputs(function)
        assert torch.autograd.gradcheck(function.apply, inputs), function.__name__


def test_the_exported_custom_functions_are_those_of_the_spec():
    assert set(_custom_functions("dense_custom")) == {"MishActivation", "LogcoshLoss"}
    assert set(_custom_functions("custom_output")) == {"SoftsignActivation"}
    assert set(_custom_functions("digits_cnn")) == set()


@pytest.mark.parametrize(
    ("name", "kernel"),
    [
        ("dense_custom", "_activation_mish_derivative"),
        ("dense_custom", "_loss_logcosh_dyhat"),
        ("dense_custom", "_loss_logcosh_dy"),
        ("custom_output", "_activation_softsign_derivative"),
    ],
)
def test_gradcheck_fails_for_a_wrong_derivative(name, kernel, monkeypatch):
    """The check can fail: a derivative 1 % off is caught (backward reads the module's
    kernel by name at each call)."""
    _, _, exported = modules(name)
    right = getattr(exported, kernel)
    monkeypatch.setattr(exported, kernel, lambda *args: right(*args) * 1.01)
    for function in _custom_functions(name).values():
        inputs = _gradcheck_inputs(function)
        if kernel.startswith("_loss") != ("Loss" in function.__name__):
            continue
        assert not torch.autograd.gradcheck(function.apply, inputs, raise_exception=False)


def test_custom_functions_backward_is_the_sympy_derivative_through_the_output():
    """swish' is printed from SymPy: (1 + z (1 - sigmoid z)) sigmoid z, stably."""
    _, _, exported = modules("swish_mlp")
    z = torch.linspace(-30, 30, 121, dtype=torch.float64)
    s = torch.sigmoid(z)
    want = s * (1 + z * (1 - s))
    got = exported._activation_swish_derivative(z)
    assert torch.allclose(got, want, rtol=1e-14, atol=1e-300)
    huge = torch.tensor([-1e4, 1e4], dtype=torch.float64)  # no overflow to nan
    assert torch.isfinite(exported._activation_swish_derivative(huge)).all()


def test_custom_kernels_stay_finite_where_their_mathematics_is():
    """log cosh(u) and its derivative tanh(u) at |u| = 1e3, where cosh overflows."""
    _, _, exported = modules("dense_custom")
    yhat = torch.tensor([-1e3, 1e3, 0.5], dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.float64)
    value = exported._loss_logcosh(yhat, y)
    assert torch.allclose(value[:2], torch.tensor([1e3 - math.log(2)] * 2, dtype=torch.float64))
    np.testing.assert_array_equal(exported._loss_logcosh_dyhat(yhat, y)[:2].numpy(), [-1, 1])
    z = torch.tensor([-1e3, 1e3], dtype=torch.float64)
    assert torch.isfinite(exported._activation_mish_derivative(z)).all()


def test_kernels_print_each_power_and_extremum_as_a_call():
    import sympy

    x = sympy.Symbol("x", real=True)
    names = {x: "x"}
    cases = {
        x**2: "torch.square(x)",
        sympy.sqrt(x): "torch.sqrt(x)",
        1 / sympy.sqrt(x): "torch.rsqrt(x)",
        x**3: "torch.pow(x, 3)",
        sympy.Max(x, 0): "torch.clamp(x, min=0.0)",
        sympy.Min(x, 1): "torch.clamp(x, max=1.0)",
        sympy.Integer(3): "torch.full_like(x, 3.0)",
    }
    for expr, code in cases.items():
        assert torch_kernel(expr, names, "x")[-1] == f"return {code}", expr
    long = sum(sympy.exp(k * x) * sympy.sin(x + k) for k in range(1, 12))
    lines = torch_kernel(long, names, "x")
    assert all(len(line) + 4 <= 100 for line in lines)
    namespace = {"torch": torch, "F": torch.nn.functional}
    body = "\n".join("    " + line for line in lines)
    exec(compile(f"def f(x):\n{body}\n", "<kernel>", "exec"), namespace)  # our own printed code
    value = torch.tensor([0.3, -0.7], dtype=torch.float64)
    want = sum(torch.exp(k * value) * torch.sin(value + k) for k in range(1, 12))
    assert torch.allclose(namespace["f"](value), want, rtol=1e-14)


@pytest.mark.parametrize("name", ["seed_mlp", "conv"])
def test_input_scaling_buffers_change_forward_as_x_minus_mean_over_scale(name):
    spec, numpy_module, exported = modules(name)
    params, X, _ = _point(spec, numpy_module)
    model = _model(spec, exported, params)
    model.eval()
    rng = np.random.default_rng(3)
    mean = rng.normal(size=spec.input_shape)
    scale = rng.uniform(0.5, 2.0, size=spec.input_shape)
    with torch.no_grad():
        plain = model((X - mean) / scale).numpy()
        state = exported.arrays(model)
        state["x_mean"], state["x_scale"] = mean, scale
        exported.load_arrays(model, state)
        scaled = model(X).numpy()
    _check("input scaling", scaled, plain)
    back = exported.arrays(model)
    np.testing.assert_array_equal(back["x_mean"], mean)
    np.testing.assert_array_equal(back["x_scale"], scale)
    fresh = _model(spec, exported, params)  # the defaults are exactly the identity
    x = torch.as_tensor(X)
    assert torch.equal((x - fresh.x_mean) / fresh.x_scale, x)


def test_image_inputs_may_come_flat():
    spec, numpy_module, exported = modules("conv")
    params, X, _ = _point(spec, numpy_module)
    model = _model(spec, exported, params).eval()
    with torch.no_grad():
        np.testing.assert_array_equal(model(X.reshape(len(X), -1)).numpy(), model(X).numpy())
    with pytest.raises(ValueError, match=r"X has shape \(8, 3\), expected \(batch, 2, 7, 7\)"):
        model(np.zeros((8, 3)))


def test_bad_arrays_raise_value_errors_naming_them():
    spec, numpy_module, exported = modules("batchnorm_mlp")
    params, X, Y = _point(spec, numpy_module)
    model = exported.Model()
    with pytest.raises(ValueError, match=r"X has shape \(8, 3\), expected \(batch, 64\)"):
        model(np.zeros((8, 3)))
    with pytest.raises(ValueError, match=r"Y has shape \(8, 4\)"):
        exported.loss(model, X, np.zeros((8, 4)))
    with pytest.raises(ValueError, match=r"class labels outside \[0, 9\]"):
        exported.loss(model, X, np.full(8, 10))
    with pytest.raises(ValueError, match="'W9' is not an entry of the model"):
        exported.load_arrays(model, {**params, "W9": params["W1"]})
    with pytest.raises(ValueError, match=r"W1 has shape \(64, 128\), expected \(128, 64\)"):
        exported.load_arrays(model, {**params, "W1": params["W1"].T})
    partial = dict(params)
    del partial["mean2"]
    with pytest.raises(ValueError, match="missing entries: layer2.running_mean"):
        exported.load_arrays(model, partial)
    # the NumPy module's own names load as the state_dict keys do, without the optional ones
    model = exported.Model()
    exported.load_arrays(model, params)
    by_key = _model(spec, exported, params)
    for key, value in exported.arrays(model).items():
        np.testing.assert_array_equal(value, exported.arrays(by_key)[key])


@pytest.mark.parametrize("name", ["batchnorm_mlp", "conv"])
def test_the_docstrings_round_trip_gives_the_numpy_params_back(name):
    spec, numpy_module, exported = modules(name)
    params, _, _ = _point(spec, numpy_module)
    net = exported.Model()
    exported.load_arrays(net, params)
    state = exported.arrays(net)
    back = {key: state[torch_key] for key, torch_key in exported.KEYS.items()}
    assert set(back) == set(params)
    for key, value in params.items():
        np.testing.assert_array_equal(back[key], value)
        assert back[key].dtype == np.float64


def test_float32_models_and_wrapped_models():
    spec, numpy_module, exported = modules("residual_mlp")
    params, X, Y = _point(spec, numpy_module)
    model = _model(spec, exported, params, dtype=torch.float32).eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        got = model(X).numpy()
    assert got.dtype == np.float32
    assert _relative(got, numpy_module.forward(params, X)) < 1e-5
    model64 = _model(spec, exported, params).eval()  # dropout off: no masks to share
    wrapped = torch.nn.DataParallel(model64)
    _check("loss", exported.loss(wrapped, X, Y).item(), exported.loss(model64, X, Y).item())
    eval_loss = exported.loss(model64, X, Y).item()
    assert eval_loss != pytest.approx(numpy_module.loss(params, X, Y, rng=np.random.default_rng(7)))


def test_dropout_is_torchs_own_in_training_mode_only():
    spec, numpy_module, exported = modules("residual_mlp")
    params, X, _ = _point(spec, numpy_module)
    model = _model(spec, exported, params)
    with torch.no_grad():
        inference = model.eval()(X)
        model.train()
        torch.manual_seed(5)
        first = model(X)
        torch.manual_seed(5)
        again = model(X)
    assert torch.equal(first, again) and not torch.allclose(first, inference)
    torch.manual_seed(6)
    dropped = model.layer6(torch.ones(1000, 64, dtype=torch.float64))
    kept = float((dropped != 0).double().mean())
    assert abs(kept - 0.8) < 0.01
    assert torch.all((dropped == 0) | (dropped == 1 / 0.8))


def test_forward_is_thread_safe():
    from concurrent.futures import ThreadPoolExecutor

    spec, numpy_module, exported = modules("norms")
    params, X, _ = _point(spec, numpy_module)
    model = _model(spec, exported, params).eval()
    with torch.no_grad():
        want = model(X).numpy()
        with ThreadPoolExecutor(4) as pool:
            # grad mode is per thread: detach there
            results = list(pool.map(lambda _: model(X).detach().numpy(), range(16)))
    for result in results:
        np.testing.assert_array_equal(result, want)


# --- the file itself -----------------------------------------------------------------------

STRESS = {
    "name": "a_rather_long_network_name_for_the_line_length_check_0123456",
    "inputs": 1234,
    "loss": {"name": "a_custom_loss_with_a_long_name", "expr": "(yhat - y)**4/4 + abs(yhat - y)"},
    "l2": 0.001,
    "layers": [
        *(
            {"units": 1000 + i, "activation": act}
            for i, act in enumerate(
                ["relu", "tanh", "gelu", "elu", "silu", "softplus", "leaky_relu", "sigmoid"]
            )
        ),
        {
            "units": 99,
            "activation": {
                "name": "a_custom_activation_name_that_is_long_0123456789_0123456789_abcd",
                "expr": "x/(1+abs(x)) + exp(-x**2)*sin(3*x)*cos(x)/(2 + tanh(x)) + erf(x)/7",
            },
        },
        {"kind": "batch_norm"},
        {"units": 10, "activation": "identity"},
    ],
}


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    texts = {f"{name}_torch.py": torch_source(_spec(name)) for name in ALL}
    texts["stress_torch.py"] = torch_source(from_dict(STRESS))
    return texts


def test_generation_is_deterministic(sources):
    for name in ("dense_custom", "conv", "residual_mlp"):
        assert torch_source(derive(_spec(name))) == sources[f"{name}_torch.py"]


def test_files_pass_ruff_check_and_format(sources, tmp_path):
    for name, text in sources.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    files = sorted(str(tmp_path / name) for name in sources)
    config = ["--config", str(ROOT / "pyproject.toml")]
    for command in (["check", "--no-cache"], ["format", "--check", "--no-cache"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command, *config, *files],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_files_import_only_torch_and_the_standard_library_and_have_the_header(sources):
    for name, text in sources.items():
        first = text.splitlines()[0]
        assert first.startswith("# generated by symbackprop") and "do not edit" in first, name
        imported = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add((node.module or "").split(".")[0])
        allowed = {"torch", "math"} | set(sys.stdlib_module_names)
        assert imported <= allowed and "torch" in imported, (name, imported)
        assert "numpy" not in imported
        assert not re.search(r"(?<![.\w])(eval|exec|compile|__import__)\(", text), name


def test_the_stress_module_runs():
    """The long custom activation's kernel, split over lines, computes its expression."""
    spec = from_dict({**STRESS, "inputs": 3, "layers": STRESS["layers"][-3:]})
    derivation = derive(spec)
    exported = load_module(torch_source(derivation), "stress")
    numpy_module = load_module(generate(derivation), "stress_numpy")
    params, X, Y = _point(spec, numpy_module)
    model = _model(spec, exported, params)
    value, grads = _gradients(spec, exported, model, X, Y)
    want_value, want = numpy_module.gradients(params, X, Y)
    _check("loss", value, want_value)
    for key in want:
        _check("gradients", grads[key], want[key])
    function = exported.ACustomActivationNameThatIsLong01234567890123456789AbcdActivation
    assert torch.autograd.gradcheck(function.apply, _gradcheck_inputs(function))


def test_measured_differences_are_reported(capsys):
    """Prints the largest relative differences the comparisons above found."""
    with capsys.disabled():
        print("\nexport: max relative differences " + json.dumps(MEASURED, sort_keys=True))
