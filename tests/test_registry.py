"""Every registry entry: its expression against a NumPy reference, and its SymPy derivative
(and the rewrite through the output) against central finite differences away from kinks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy

from symbackprop.derive import Z, derive_activation, softmax_jacobian_check
from symbackprop.functions import ACTIVATIONS, LOSSES, YHAT, A, X, Y
from symbackprop.primitives import PRIMITIVES, expm1, step, to_textbook_form
from symbackprop.printing import numpy_code

ELEMENTWISE = [name for name, act in ACTIVATIONS.items() if not act.softmax]
POINTS = np.array([-7.5, -3.1, -1.3, -0.4, -0.05, 0.07, 0.3, 1.1, 2.9, 6.2])


def _evaluate(expr: sympy.Expr, symbol: sympy.Symbol, points: np.ndarray) -> np.ndarray:
    """Evaluate through SymPy itself (40 digits), not through our printer."""
    return np.array([float(expr.xreplace({symbol: sympy.Float(p, 40)}).evalf(40)) for p in points])


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_expression_matches_numpy_reference(name: str) -> None:
    act = ACTIVATIONS[name]
    np.testing.assert_allclose(
        _evaluate(act.expr, X, POINTS), act.reference(POINTS), rtol=1e-13, atol=1e-15
    )


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_printed_kernel_matches_reference(name: str) -> None:
    from symbackprop.primitives import NUMPY_HELPERS

    act = ACTIVATIONS[name]
    code, helpers = numpy_code(act.expr, {X: "x"})
    namespace: dict = {"numpy": np}
    for helper in helpers:
        exec(NUMPY_HELPERS[helper], namespace)
    got = eval(code, namespace, {"x": POINTS})
    np.testing.assert_allclose(got, act.reference(POINTS), rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_matches_finite_differences(name: str) -> None:
    act = ACTIVATIONS[name]
    d = derive_activation(act)
    h = 1e-6
    fd = (act.reference(POINTS + h) - act.reference(POINTS - h)) / (2 * h)
    np.testing.assert_allclose(_evaluate(d.derivative, Z, POINTS), fd, rtol=1e-7, atol=1e-9)
    # the textbook form (exp/log spelled out) differentiates to the same function
    np.testing.assert_allclose(_evaluate(d.textbook, Z, POINTS), fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_rewrite_through_output_agrees(name: str) -> None:
    d = derive_activation(ACTIVATIONS[name])
    if d.through_output is None:
        # no form through a is accurate in the tails: 1 - a^2 and 1 + min(a, 0) cancel
        assert name in ("gelu", "silu", "tanh", "elu"), f"{name}: expected a form through a"
        return
    through = d.through_output.xreplace({A: d.f})
    np.testing.assert_allclose(
        _evaluate(through, Z, POINTS), _evaluate(d.derivative, Z, POINTS), rtol=1e-13, atol=1e-15
    )


def test_rewrites_through_the_output_are_the_accurate_ones() -> None:
    """a(1 - a) and 1 - a^2 are equal to f' but lose every digit in a tail: not used."""
    sigmoid = derive_activation(ACTIVATIONS["sigmoid"]).through_output
    assert sigmoid == A * (1 - ACTIVATIONS["sigmoid"].expr.xreplace({X: Z}))
    assert derive_activation(ACTIVATIONS["tanh"]).through_output is None
    assert derive_activation(ACTIVATIONS["elu"]).through_output is None
    assert derive_activation(ACTIVATIONS["softplus"]).through_output == -expm1(-A)
    assert derive_activation(ACTIVATIONS["relu"]).through_output == step(A)
    assert derive_activation(ACTIVATIONS["identity"]).derivative == 1


def test_kink_conventions() -> None:
    """ReLU'(0) = 0 and leaky ReLU'(0) = slope, as in PyTorch."""
    relu = derive_activation(ACTIVATIONS["relu"]).derivative
    leaky = derive_activation(ACTIVATIONS["leaky_relu"]).derivative
    assert relu.xreplace({Z: 0}) == 0
    assert leaky.xreplace({Z: 0}) == sympy.Rational(1, 100)
    assert derive_activation(ACTIVATIONS["elu"]).derivative.xreplace({Z: 0}) == 1


@pytest.mark.parametrize(
    "primitive", [p for p in PRIMITIVES if p.__name__ in ("sigmoid", "softplus")]
)
def test_smooth_primitive_fdiff_equals_textbook_diff(primitive: type) -> None:
    expr = primitive(X)
    ours = to_textbook_form(sympy.diff(expr, X))  # through the primitive's own fdiff
    sympys = sympy.diff(to_textbook_form(expr), X)  # through SymPy's exp/log rules
    assert sympy.simplify(ours - sympys) == 0


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_expression_matches_reference(name: str) -> None:
    loss = LOSSES[name]
    yhat = np.array([0.1, 0.35, 0.62, 0.93])
    y = np.array([0.0, 1.0, 0.3, 1.0])
    expected = loss.reference(yhat, y)
    got = [
        float(loss.expr.xreplace({YHAT: sympy.Float(a, 30), Y: sympy.Float(b, 30)}).evalf(30))
        for a, b in zip(yhat, y, strict=True)
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_softmax_jacobian_is_derived() -> None:
    jacobian = softmax_jacobian_check(3)
    assert jacobian.shape == (3, 3)


def test_erf_helper_is_accurate_on_gelu_range() -> None:
    from symbackprop.numpy_erf import _erf

    xs = np.linspace(-6, 6, 1001)
    np.testing.assert_allclose(_erf(xs), [math.erf(v) for v in xs], rtol=1e-15, atol=1e-300)
