"""Accuracy in the tails: every built-in activation and its derivative, as the GENERATED
MODULE computes them, against mpmath at 50 digits over z in [-50, 50] (issue 8, item 17).

The module is generated from a spec with one input and one layer of n units whose weights
are 1 and whose biases are the test points, fed X = 0, so that Z = z exactly:
* f: that layer as the output layer (mse, no output transform): forward() returns f(z);
* f': that layer as the hidden layer under an identity output with weights 1 and mse, so
  db1 = r * f'(z) with r = yhat - y the (single) output error, which the test computes with
  the same float operation and divides out.

Measure: relative error |got - true| / |true| where |true| is a normal float (>= 1e-300);
below that (deep underflow, e.g. GELU(-40) ~ 1e-350) the module must return a value within
1e-300 of the truth (0 or a tiny number, never a sign flip to a normal float).  Within 1e-3
(float32: 3e-2) of a zero of f' (GELU' at -0.7518, SiLU' at -1.2785) relative accuracy is
not attainable in floating point (the relative condition number is unbounded there), so the
error there is measured against the size of the function's terms instead.
"""

from __future__ import annotations

import functools

import mpmath
import numpy as np
import pytest

from symbackprop import checkpoint, codegen, spec

mpmath.mp.dps = 50

EXTREMES = [-50.0, -40.0, -37.0, -30.0, -20.0, -10.0, -5.0, -1.0, -1e-300, 0.0, 5e-324]
EXTREMES += [1e-300, 1e-8, 1.0, 5.0, 10.0, 20.0, 30.0, 37.0, 40.0, 50.0]
GRID = np.unique(
    np.concatenate(
        [
            np.linspace(-50, 50, 2001),
            EXTREMES,
            -np.geomspace(1e-12, 50, 300),
            np.geomspace(1e-12, 50, 300),
        ]
    )
)
TINY = 1e-300


def _sigmoid(z):
    return 1 / (1 + mpmath.exp(-z))


def _phi(z):
    return mpmath.exp(-z * z / 2) / mpmath.sqrt(2 * mpmath.pi)


def _cdf(z):
    return mpmath.erfc(-z / mpmath.sqrt(2)) / 2


# (f, f') at an exact float z, in mpmath; kinks by the project's conventions (step(0) = 0)
REFERENCE = {
    "identity": (lambda z: z, lambda z: mpmath.mpf(1)),
    "relu": (lambda z: max(z, 0), lambda z: mpmath.mpf(1 if z > 0 else 0)),
    "leaky_relu": (
        lambda z: z if z > 0 else z * mpmath.mpf(1) / 100,
        lambda z: mpmath.mpf(1) if z > 0 else mpmath.mpf(1) / 100,
    ),
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * _sigmoid(-z)),
    "tanh": (mpmath.tanh, lambda z: mpmath.sech(z) ** 2),
    "softplus": (lambda z: mpmath.log1p(mpmath.exp(z)), _sigmoid),
    "elu": (
        lambda z: z if z > 0 else mpmath.expm1(z),
        lambda z: mpmath.mpf(1) if z > 0 else mpmath.exp(z),
    ),
    "gelu": (lambda z: z * _cdf(z), lambda z: _cdf(z) + z * _phi(z)),
    "silu": (lambda z: z * _sigmoid(z), lambda z: _sigmoid(z) * (1 + z * _sigmoid(-z))),
}
# zeros of f' (where relative accuracy is meaningless) and the terms' size there
ROOTS = {"gelu": -0.7517915, "silu": -1.2784645}
TERMS = {
    "gelu": lambda z: abs(_cdf(z)) + abs(z * _phi(z)),
    "silu": lambda z: abs(_sigmoid(z)) + abs(z * _sigmoid(z) * _sigmoid(-z)),
}
NAMES = list(REFERENCE)


@functools.cache
def _module(activation: str, role: str, units: int):
    if role == "output":
        layers = [{"units": units, "activation": activation}]
    else:
        layers = [
            {"units": units, "activation": activation},
            {"units": 1, "activation": "identity"},
        ]
    network = spec.from_dict(
        {"name": f"tail_{activation}", "inputs": 1, "loss": "mse", "layers": layers}
    )
    return checkpoint.load_module(codegen.generate(network))


def module_values(activation: str, zs: np.ndarray, dtype=np.float64) -> np.ndarray:
    """f(z) as the generated module's forward pass computes it."""
    module = _module(activation, "output", zs.size)
    params = {"W1": np.ones((zs.size, 1), dtype), "b1": zs.astype(dtype)}
    with np.errstate(all="ignore"):
        return np.asarray(module.forward(params, np.zeros((1, 1), dtype)))[0]


def module_derivatives(activation: str, zs: np.ndarray, dtype=np.float64) -> np.ndarray:
    """f'(z) as the generated module's backward pass computes it."""
    module = _module(activation, "hidden", zs.size)
    params = {
        "W1": np.ones((zs.size, 1), dtype),
        "b1": zs.astype(dtype),
        "W2": np.ones((1, zs.size), dtype),
        "b2": np.zeros(1, dtype),
    }
    X = np.zeros((1, 1), dtype)
    with np.errstate(all="ignore"):
        yhat = np.asarray(module.forward(params, X))
        target = (yhat - dtype(1)).astype(dtype)
        r = (yhat - target).astype(dtype)[0, 0]  # the module's dZ2, computed the same way
        _, grads = module.gradients(params, X, target)
    return np.asarray(grads["b1"], dtype=np.float64) / float(r)


def errors(got, zs, truth, terms=None, root=None, window=1e-3) -> np.ndarray:
    """Relative error per point (see the module docstring for values below 1e-300)."""
    out = np.empty(zs.size)
    for i, (value, z) in enumerate(zip(got, zs, strict=True)):
        true = truth(mpmath.mpf(float(z)))
        if root is not None and abs(z - root) < window:
            scale = terms(mpmath.mpf(float(z)))
        elif abs(true) < TINY:
            out[i] = 0.0 if abs(value - true) < TINY else np.inf
            continue
        else:
            scale = abs(true)
        out[i] = float(abs(mpmath.mpf(float(value)) - true) / scale)
    return out


def worst(got, zs, truth, name: str, derivative: bool, window: float = 1e-3) -> tuple:
    kwargs = {"terms": TERMS.get(name), "root": ROOTS.get(name)} if derivative else {}
    kwargs["window"] = window
    errs = errors(got, zs, truth, **kwargs)
    i = int(np.argmax(errs))
    return float(errs[i]), float(zs[i])


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_accurate_from_minus_50_to_50(name: str) -> None:
    got = module_values(name, GRID)
    err, where = worst(got, GRID, REFERENCE[name][0], name, False)
    assert err <= 1e-13, f"{name}: relative error {err:.3g} at z = {where!r}"


@pytest.mark.parametrize("name", NAMES)
def test_generated_derivative_is_accurate_from_minus_50_to_50(name: str) -> None:
    got = module_derivatives(name, GRID)
    err, where = worst(got, GRID, REFERENCE[name][1], name, True)
    assert err <= 1e-13, f"{name}': relative error {err:.3g} at z = {where!r}"


F32 = np.unique(np.linspace(-50, 50, 801).astype(np.float32)).astype(np.float64)


@pytest.mark.parametrize("name", NAMES)
def test_float32_forward_and_derivative(name: str) -> None:
    """float32: a few float32 ulps (eps32 = 1.2e-7) where the truth is a normal float32."""
    for derivative, getter, truth in (
        (False, module_values, REFERENCE[name][0]),
        (True, module_derivatives, REFERENCE[name][1]),
    ):
        got = getter(name, F32, np.float32).astype(np.float64)
        keep = np.array([abs(float(truth(mpmath.mpf(z)))) >= 1e-37 or z == 0 for z in F32])
        # float32 loses relative accuracy in a wider neighbourhood of a zero of f'
        err, where = worst(got[keep], F32[keep], truth, name, derivative, window=3e-2)
        assert err <= 8 * 2.0**-23, f"{name}{chr(39) * derivative}: {err:.3g} at z = {where!r}"
