"""The stable rewrites of custom expressions: each an identity, and the module stays finite.

Each rewrite is proved equal to the written form by evaluating both in mpmath at
points from -1000 to 1000 (where float64 overflows, mpmath does not) at 1000 digits, and checked
structurally.  Then a generated module with the README's custom loss log(cosh(yhat - y))
and a custom activation log(1 + exp(x)) is evaluated at |z| = 0, 50, 1000 against mpmath.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import sympy

from symbackprop.checkpoint import load_module
from symbackprop.codegen import generate
from symbackprop.derive import stable_form
from symbackprop.primitives import sigmoid, softplus, to_textbook_form
from symbackprop.spec import from_dict

z, y = sympy.symbols("z y", real=True)
exp, log = sympy.exp, sympy.log
POINTS = [-1000, -50, -5, -1, -0.25, 0, 0.25, 1, 5, 50, 1000]

REWRITES = [
    (log(1 + exp(z)), softplus(z)),
    (log(1 + exp(-2 * z)), softplus(-2 * z)),
    (log(sympy.cosh(z - y)), abs(z - y) + softplus(-2 * abs(z - y)) - log(2)),
    (log(sigmoid(z)), -softplus(-z)),
    (log(1 - sigmoid(z)), -softplus(z)),
    (exp(z) / (1 + exp(z)), sigmoid(z)),
    (1 / (1 + exp(-z)), sigmoid(z)),
    (sympy.diff(1 / (1 + exp(-z)), z), sigmoid(z) * (1 - sigmoid(z))),
    (exp(2 * z) / (1 + exp(z)) ** 3, sigmoid(z) ** 2 * (1 - sigmoid(z))),
    (z * log(1 + exp(z)) + 3, z * softplus(z) + 3),
]


def mp_value(expr: sympy.Expr, at: float) -> mpmath.mpf:
    # 1000 digits: the written forms cancel (1 - sigmoid(1000) is exp(-1000) ~ 1e-435)
    with mpmath.workdps(1000):
        function = sympy.lambdify((z, y), to_textbook_form(expr), modules="mpmath")
        return function(mpmath.mpf(at), mpmath.mpf("0.5"))


@pytest.mark.parametrize(("written", "stable"), REWRITES)
def test_rewrite_is_the_expected_form(written: sympy.Expr, stable: sympy.Expr) -> None:
    assert stable_form(written) == stable


@pytest.mark.parametrize(("written", "stable"), REWRITES)
def test_rewrite_is_an_identity(written: sympy.Expr, stable: sympy.Expr) -> None:
    rewritten = stable_form(written)
    for at in POINTS:
        a, b = mp_value(written, at), mp_value(rewritten, at)
        with mpmath.workdps(1000):
            assert abs(a - b) <= mpmath.mpf(10) ** -50 * max(1, abs(a)), (written, at, a, b)


def test_expressions_without_the_patterns_are_unchanged() -> None:
    for expr in (z * sigmoid(z), sympy.tanh(z) ** 2, log(2 + exp(z)), exp(z) / (2 + exp(z))):
        assert stable_form(expr) == expr


def one_unit(activation: object, loss: object, layers: int) -> object:
    hidden = [{"units": 1, "activation": activation}] if layers == 2 else []
    spec = {
        "name": "tails",
        "inputs": 1,
        "layers": [*hidden, {"units": 1, "activation": "identity"}],
        "loss": loss,
    }
    return load_module(generate(from_dict(spec)), "tails")


TAIL_POINTS = [-1000.0, -50.0, 0.0, 50.0, 1000.0]


@pytest.mark.parametrize("at", TAIL_POINTS)
def test_custom_softplus_module_is_finite_and_accurate(at: float) -> None:
    module = one_unit({"name": "sp", "expr": "log(1+exp(x))"}, "mse", layers=2)
    params = {
        "W1": np.ones((1, 1)),
        "b1": np.zeros(1),
        "W2": np.ones((1, 1)),
        "b2": np.zeros(1),
    }
    X, Y = np.array([[at]]), np.array([[0.0]])
    value, grads = module.gradients(params, X, Y)
    with mpmath.workdps(60):
        t = mpmath.mpf(at)
        a = mpmath.log1p(mpmath.exp(t))
        s = 1 / (1 + mpmath.exp(-t))
        expected = {"W1": a * s * t, "b1": a * s, "W2": a * a, "b2": a}
        assert float(value) == pytest.approx(float(a * a / 2), rel=1e-13, abs=1e-300)
        for key, want in expected.items():
            got = float(grads[key][0, 0] if grads[key].ndim == 2 else grads[key][0])
            assert np.isfinite(got), key
            assert got == pytest.approx(float(want), rel=1e-12, abs=1e-300), (key, at)


@pytest.mark.parametrize("at", TAIL_POINTS)
def test_readme_logcosh_loss_module_is_finite_and_accurate(at: float) -> None:
    module = one_unit(None, {"name": "logcosh", "expr": "log(cosh(yhat - y))"}, layers=1)
    params = {"W1": np.ones((1, 1)), "b1": np.zeros(1)}
    X, Y = np.array([[at]]), np.array([[0.0]])
    value, grads = module.gradients(params, X, Y)
    with mpmath.workdps(60):
        t = mpmath.mpf(at)
        assert np.isfinite(value)
        assert float(value) == pytest.approx(float(mpmath.log(mpmath.cosh(t))), rel=1e-13)
        assert float(grads["W1"][0, 0]) == pytest.approx(float(mpmath.tanh(t) * t), rel=1e-13)
        assert float(grads["b1"][0]) == pytest.approx(float(mpmath.tanh(t)), rel=1e-13)


def test_document_keeps_the_written_form() -> None:
    from symbackprop.derive import derive

    spec = from_dict(
        {
            "name": "doc",
            "inputs": 1,
            "layers": [{"units": 1, "activation": "identity"}],
            "loss": {"name": "logcosh", "expr": "log(cosh(yhat - y))"},
        }
    )
    loss_row = next(e.latex for e in derive(spec).equations if e.key == "loss")
    assert r"\log{\left(\cosh{" in loss_row and "softplus" not in loss_row
