"""The built-in activations' tabulated derivatives are what the derivation gives, node for node.

``derive.built_in_derivative`` spares every command the through-a search (NumPy kernels and
30-digit values at the tail points) for results that never change; here each entry is
derived again by ``derive_in_full`` and the trees compared type by type and argument by
argument, so that a form the printers would print differently fails (``srepr`` writes
``exp(-z**2/2)`` and ``exp(Mul(-1, 1/2, z**2, evaluate=False))`` alike).
"""

from __future__ import annotations

import pytest
import sympy

from symbackprop.derive import (
    _BUILT_IN,
    built_in_derivative,
    derive_activation,
    derive_in_full,
)
from symbackprop.functions import ACTIVATIONS, activation
from symbackprop.spec import FunctionSpec


def same_tree(a: sympy.Basic | None, b: sympy.Basic | None) -> bool:
    if a is None or b is None:
        return a is b
    if type(a) is not type(b) or len(a.args) != len(b.args):
        return False
    if not a.args:
        return a == b and sympy.srepr(a) == sympy.srepr(b) and a.assumptions0 == b.assumptions0
    return all(same_tree(x, y) for x, y in zip(a.args, b.args, strict=True))


def _tree(expr: sympy.Basic | None) -> str:
    """The tree written out node by node, for the failure message."""
    if expr is None:
        return "None"
    if not expr.args:
        return sympy.srepr(expr)
    return f"{type(expr).__name__}({', '.join(_tree(arg) for arg in expr.args)})"


def test_every_built_in_activation_is_tabulated() -> None:
    assert set(_BUILT_IN) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_the_table_is_the_derivation(name: str) -> None:
    derived = derive_in_full(ACTIVATIONS[name])
    table = built_in_derivative(ACTIVATIONS[name])
    assert table is not None
    for what, got, want in zip(("f'(z)", "f' through a"), table, derived, strict=True):
        assert same_tree(got, want), f"{name}: {what} is derived as {_tree(want)}"


def test_the_comparison_sees_the_form() -> None:
    z = sympy.Symbol("z", real=True)
    canonical = sympy.exp(-(z**2) / 2)
    unevaluated = sympy.exp(sympy.Mul(-1, sympy.Rational(1, 2), z**2, evaluate=False))
    assert sympy.srepr(canonical) == sympy.srepr(unevaluated)
    assert not same_tree(canonical, unevaluated)
    assert same_tree(canonical, sympy.exp(-(z**2) / 2))


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_derive_activation_uses_the_table(name: str) -> None:
    d = derive_activation(ACTIVATIONS[name])
    assert (d.derivative, d.through_output) == built_in_derivative(ACTIVATIONS[name])


@pytest.mark.parametrize(
    "spec",
    [
        FunctionSpec(name="leaky_relu", params=(("slope", 0.2),)),
        FunctionSpec(name="elu", params=(("alpha", 0.5),)),
        FunctionSpec(name="relu", expr="x*sigmoid(x)"),  # a custom one named like a built-in
    ],
    ids=["leaky_relu(slope=0.2)", "elu(alpha=0.5)", "custom named relu"],
)
def test_others_are_derived(spec: FunctionSpec) -> None:
    act = activation(spec, "layers[0].activation")
    assert built_in_derivative(act) is None
    d = derive_activation(act)
    assert (d.derivative, d.through_output) == derive_in_full(act)
