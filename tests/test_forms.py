"""The teacher's forms (symbackprop.forms): exact strings, the equality check, determinism.

Each case writes its SymPy input out, or takes it from what the project derives (the
registry's activations and losses, the bundled examples), so that the strings pinned here
are the ones the documents will print.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import sympy
from sympy import Abs, Indexed, Integer, Rational, Sum, Symbol, cosh, exp, tanh

from symbackprop import forms
from symbackprop.derive import LP, P, Z, derive, derive_activation, derive_output
from symbackprop.forms import (
    FormError,
    decimal_tex,
    hadamard,
    sum_tex,
    teacher_latex,
    teacher_terms,
)
from symbackprop.functions import ACTIVATIONS, LOSSES, YHAT, A, X, Y, activation
from symbackprop.functions import loss as loss_entry
from symbackprop.primitives import expm1, sigmoid, softplus, step, to_textbook_form
from symbackprop.spec import FunctionSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]
NAMES = {Z: "z", A: "a", Y: "y", YHAT: r"\hat{y}", P: r"\hat{y}", LP: r"\log \hat{y}"}
TANH_ERROR = r"\left(a - y\right) \left(1 - a^{2}\right)"


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    """Forms are cached per expression: a test that patches the rule must not see old ones."""
    forms._chosen.cache_clear()
    forms._shape.cache_clear()
    yield
    forms._chosen.cache_clear()
    forms._shape.cache_clear()


def _output(name: str) -> sympy.Expr:
    return ACTIVATIONS[name].expr.xreplace({X: Z})


# --- the cases of the review --------------------------------------------------------------


def test_tanh_mse_output_error_as_derived() -> None:
    delta = derive_output(ACTIVATIONS["tanh"], LOSSES["mse"]).delta
    assert delta == (2 - 2 * tanh(Z) ** 2) * (A - Y) / 2  # what SymPy leaves
    prefer = ((A, tanh(Z)), Y)
    assert teacher_latex(delta, NAMES, prefer=prefer) == TANH_ERROR


def test_tanh_mse_output_error_as_the_review_saw_it() -> None:
    expr = (-A + Y) * (A - 1) * (A + 1)
    assert sympy.latex(expr) == r"\left(- a + y\right) \left(a - 1\right) \left(a + 1\right)"
    assert teacher_latex(expr, NAMES, prefer=(A, Y)) == TANH_ERROR
    # without a preference the fewest minus signs still decide, the orientation does not
    assert teacher_latex(expr, NAMES) == r"\left(y - a\right) \left(a^{2} - 1\right)"


def test_tanh_mse_generic_error() -> None:
    generic = derive_output(ACTIVATIONS["tanh"], LOSSES["mse"]).generic_delta
    assert generic == (1 - tanh(Z) ** 2) * (tanh(Z) - Y)
    assert teacher_latex(generic, NAMES, prefer=((A, tanh(Z)), Y)) == TANH_ERROR


@pytest.mark.parametrize(
    ("number", "tex"),
    [
        (Rational(851, 500), "1.702"),
        (Rational(-851, 500), "-1.702"),
        (Rational(1, 1000), "0.001"),
        (Rational(1, 100), "0.01"),
        (Rational(99, 100), "0.99"),
        (Rational(1, 8), "0.125"),
        (Rational(7, 5), "1.4"),
        (Rational(1, 3), r"\frac{1}{3}"),
        (Rational(1, 2), r"\frac{1}{2}"),
        (Rational(3, 4), r"\frac{3}{4}"),
        (Rational(1, 1024), r"\frac{1}{1024}"),  # 10 decimal places
        (sympy.Integer(7), "7"),
    ],
)
def test_numbers(number: sympy.Rational, tex: str) -> None:
    assert teacher_latex(number) == tex


def test_decimals_are_exact() -> None:
    for number in (Rational(851, 500), Rational(1, 1000), Rational(-3, 16), Rational(123, 40)):
        assert Rational(decimal_tex(number)) == number
    assert decimal_tex(Rational(1, 3)) is None
    assert decimal_tex(Rational(1, 4)) is None
    assert decimal_tex(sympy.Integer(5)) is None


def test_a_decimal_coefficient() -> None:
    assert teacher_latex(Rational(851, 500) * X) == "1.702 x"
    assert teacher_latex(X / 3) == r"\frac{x}{3}"


def test_sigmoid_derivative_in_terms_of_the_output() -> None:
    d = derive_activation(ACTIVATIONS["sigmoid"])
    assert d.derivative == (1 - sigmoid(Z)) * sigmoid(Z)
    prefer = ((A, sigmoid(Z)),)
    assert teacher_latex(d.derivative, NAMES, prefer=prefer) == r"a \left(1 - a\right)"
    assert d.through_output == A * (1 - sigmoid(Z))  # derive's mixed form
    assert teacher_latex(d.through_output, NAMES, prefer=prefer) == r"a \left(1 - a\right)"
    # in z: the factor order a teacher writes, sigma(1 - sigma)
    assert teacher_latex(d.derivative, NAMES) == (
        r"\sigma\left(z\right) \left(1 - \sigma\left(z\right)\right)"
    )


def test_tanh_derivative_through_the_output() -> None:
    d = derive_activation(ACTIVATIONS["tanh"])
    assert teacher_latex(d.derivative, NAMES, prefer=((A, tanh(Z)),)) == "1 - a^{2}"
    assert teacher_latex(d.derivative, NAMES) == r"1 - \tanh^{2}{\left(z \right)}"


def test_softsign_derivative() -> None:
    act = activation(FunctionSpec(name="softsign", expr="x/(1+abs(x))"), "layers[0].activation")
    d = derive_activation(act)
    assert d.derivative == -Z * sympy.sign(Z) / (Abs(Z) + 1) ** 2 + 1 / (Abs(Z) + 1)
    expected = r"\frac{1}{\left(1 + \left|{z}\right|\right)^{2}}"
    assert teacher_latex(d.derivative, NAMES) == expected
    assert teacher_latex(d.derivative, NAMES, prefer=((A, d.f),)) == expected


def test_prediction_before_target() -> None:
    assert teacher_latex(-Y + YHAT, NAMES) == r"\hat{y} - y"
    assert sympy.latex(-Y + YHAT, symbol_names=NAMES) == r"- y + \hat{y}"


def test_leaky_relu_derivative() -> None:
    d = derive_activation(ACTIVATIONS["leaky_relu"])
    assert sympy.latex(d.derivative) == r"\frac{99 \operatorname{step}\left(z\right) + 1}{100}"
    assert teacher_latex(d.derivative, NAMES) == r"0.01 + 0.99 \operatorname{step}\left(z\right)"


@pytest.mark.slow
def test_logcosh_error_is_a_tanh() -> None:
    """The review: a teacher writes tanh(a - y) f'(z) for the log-cosh loss."""
    logcosh = loss_entry(FunctionSpec(name="logcosh", expr="log(cosh(yhat - y))"), "loss")
    delta = derive_output(ACTIVATIONS["tanh"], logcosh).delta
    expected = r"\tanh{\left(a - y \right)} \left(1 - a^{2}\right)"
    assert teacher_latex(delta, NAMES, prefer=((A, tanh(Z)), Y)) == expected


def test_sigmoid_chain_derivative_through_sigmoid() -> None:
    """The chain command's simplified derivative of 1/(1 + e^-(3x + 1)), and its raw form."""
    x = Symbol("x")
    expected = r"3 \sigma\left(3 x + 1\right) \left(1 - \sigma\left(3 x + 1\right)\right)"
    simplified = 3 / (4 * cosh(3 * x / 2 + Rational(1, 2)) ** 2)
    raw = 3 * exp(-3 * x - 1) / (exp(-3 * x - 1) + 1) ** 2
    assert teacher_latex(simplified, prefer=(sigmoid,)) == expected
    assert teacher_latex(raw, prefer=(sigmoid,)) == expected
    assert teacher_latex(simplified) == sympy.latex(simplified)  # no preference: SymPy's form


def test_a_sum_with_equal_limits_is_its_term() -> None:
    k = Symbol("k", integer=True)
    x = sympy.IndexedBase("x")
    assert teacher_latex(Sum(Indexed(x, k), (k, 1, 1))) == "{x}_{1}" == sympy.latex(Indexed(x, 1))
    assert teacher_latex(Sum(Indexed(x, k) ** 2, (k, 1, 3))) == sympy.latex(
        Sum(Indexed(x, k) ** 2, (k, 1, 3))
    )


def test_terms_for_breaking_a_line() -> None:
    gelu = derive_activation(ACTIVATIONS["gelu"]).derivative
    terms = teacher_terms(gelu, NAMES)
    assert terms[0] == r"\frac{1}{2}" and len(terms) == 3
    assert all(t.startswith("+ ") for t in terms[1:])
    assert teacher_terms(-Y + YHAT, NAMES) == [r"\hat{y}", "- y"]
    assert teacher_terms(A * (1 - A), NAMES) == [r"a \left(1 - a\right)"]
    big = sum(Symbol(f"w{i}") * tanh(Symbol(f"x{i}") - Y) for i in range(60))
    assert " ".join(teacher_terms(big)) == teacher_latex(big) == sympy.latex(big)


def test_sum_tex() -> None:
    def term(k: str) -> str:
        return rf"\ell\left(a_{{{k}}}, y_{{{k}}}\right)"

    assert sum_tex("k", 1, term) == r"\ell\left(a_{1}, y_{1}\right)"
    assert sum_tex("k", 3, term) == r"\sum_{k=1}^{3} \ell\left(a_{k}, y_{k}\right)"


# --- the Hadamard product --------------------------------------------------------------------

LEFT = r"\left(W^{(2)\top} \delta^{(2)}\right)"


def test_hadamard_with_one_disappears() -> None:
    assert hadamard(LEFT, sympy.S.One) == LEFT
    assert hadamard(LEFT, derive_activation(ACTIVATIONS["identity"]).derivative) == LEFT


def test_hadamard_with_a_sum_is_bracketed() -> None:
    names = {Z: "z^{(1)}"}
    got = hadamard(LEFT, 1 - tanh(Z) ** 2, names)
    assert got == LEFT + r" \odot \left(1 - \tanh^{2}{\left(z^{(1)} \right)}\right)"


def test_hadamard_with_a_product_is_not() -> None:
    got = hadamard(LEFT, sigmoid(Z) * (1 - sigmoid(Z)), NAMES)
    assert got == LEFT + r" \odot \sigma\left(z\right) \left(1 - \sigma\left(z\right)\right)"
    assert hadamard(LEFT, step(Z), NAMES) == LEFT + r" \odot \operatorname{step}\left(z\right)"


def test_hadamard_with_a_leading_minus_is_bracketed() -> None:
    assert (
        hadamard(LEFT, -sigmoid(Z), NAMES) == LEFT + r" \odot \left(- \sigma\left(z\right)\right)"
    )


# --- the check of equality and the budget ----------------------------------------------------


def test_a_wrong_candidate_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = forms._candidates
    wrong = A  # cheaper than every right form, and not equal to the input

    def with_a_wrong_one(expr: sympy.Expr, prefs: object) -> list[sympy.Expr]:
        return [wrong, *real(expr, prefs)]

    monkeypatch.setattr(forms, "_candidates", with_a_wrong_one)
    expr = (-A + Y) * (A - 1) * (A + 1)
    assert teacher_latex(expr, NAMES, prefer=(A, Y)) == TANH_ERROR


def test_only_wrong_candidates_leave_sympys_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forms, "_candidates", lambda expr, prefs: [A, A + 1, expr + Y])
    expr = (-A + Y) * (A - 1) * (A + 1)
    assert teacher_latex(expr, NAMES) == sympy.latex(expr)


def test_a_wrong_printed_form_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forms, "_shape", lambda expr, prefs: expr + 1)
    with pytest.raises(FormError):
        teacher_latex((-A + Y) * (A - 1) * (A + 1), NAMES)


def test_the_check_rejects_what_differs_only_on_one_side_of_a_kink() -> None:
    prefs = forms._preferences(())
    assert forms._same(step(Z), sympy.S.One, prefs) is False
    assert forms._same(sympy.Max(Z, 0), sympy.Abs(Z), prefs) is False
    assert forms._same((A - 1) * (A + 1), A**2 - 1, prefs) is True
    assert forms._same(sigmoid(Z) * (1 - sigmoid(Z)), exp(-Z) / (1 + exp(-Z)) ** 2, prefs) is True


def test_a_huge_expression_is_sympys_own_form(monkeypatch: pytest.MonkeyPatch) -> None:
    big = sum(Symbol(f"w{i}") * tanh(Symbol(f"x{i}") - Y) for i in range(60))
    assert sympy.count_ops(big) > forms.MAX_NODES // 3

    def refuse(expr: sympy.Expr, prefs: object) -> list[sympy.Expr]:
        raise AssertionError("no candidates past the budget")

    monkeypatch.setattr(forms, "_candidates", refuse)
    assert teacher_latex(big) == sympy.latex(big)


def test_large_rationals_in_exponents_are_not_factored() -> None:
    """factor writes e^(851/500) as (e^(1/500))^851: it ran for minutes on such input."""
    expr = -exp(Rational(851, 500)) + 3 - 1 / YHAT**2
    assert not forms._factorable(expr)
    assert not forms._factorable(exp((A - Y - Rational(601, 500)) ** 2))
    assert forms._factorable(exp(-3 * X - 1) + 1)
    assert teacher_latex(expr, NAMES) == r"3 - e^{1.702} - \frac{1}{\hat{y}^{2}}"


def test_points_where_a_primitive_does_not_evaluate() -> None:
    """softplus(tanh(5/7) - 7/4) stays a call: the check evaluates its exp form instead."""
    expr = -2 * cosh(Y) + softplus(A + tanh(Z) - Rational(7, 4)) + Rational(41, 16)
    prefs = forms._preferences(())
    spelled = expr.replace(
        lambda e: isinstance(e, softplus), lambda e: sympy.log(1 + exp(e.args[0]))
    )
    assert forms._same(expr, spelled, prefs) is True
    assert forms._same(expr, spelled + Rational(1, 10**30), prefs) is False
    assert teacher_latex(expr, NAMES).startswith(r"2.5625 - 2 \cosh")  # 41/16


def test_a_bad_preference_is_refused() -> None:
    with pytest.raises(TypeError, match="prefer"):
        teacher_latex(A, prefer=("a",))


# --- determinism -----------------------------------------------------------------------------

_SCRIPT = r"""
import sys
import sympy
order = sys.argv[1]
names = ["y", "a", "z", "yhat"] if order == "forward" else ["yhat", "z", "a", "y"]
made = {n: sympy.Symbol(n, real=True) for n in names}  # created in this order
from symbackprop.forms import teacher_latex
from symbackprop.primitives import sigmoid
y, a, z, yhat = made["y"], made["a"], made["z"], made["yhat"]
cases = [
    ((-a + y) * (a - 1) * (a + 1), (a, y)),
    ((-a + y) * (a - 1) * (a + 1), ()),
    ((2 - 2 * sympy.tanh(z) ** 2) * (a - y) / 2, ((a, sympy.tanh(z)), y)),
    (-y + yhat, ()),
    ((1 - sigmoid(z)) * sigmoid(z) * (sigmoid(z) - y), ((a, sigmoid(z)), y)),
    (3 / (4 * sympy.cosh(3 * z / 2 + sympy.Rational(1, 2)) ** 2), (sigmoid,)),
    (sympy.Rational(851, 500) * z * sigmoid(sympy.Rational(851, 500) * z), ()),
]
for expr, prefer in cases:
    print(teacher_latex(expr, prefer=prefer))
"""


def _run(order: str, seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, order],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=ROOT,
    )
    return done.stdout


@pytest.mark.slow
def test_deterministic_across_processes_hash_seeds_and_symbol_order() -> None:
    first = _run("forward", "0")
    assert first == _run("backward", "4242")
    assert first.splitlines()[0] == TANH_ERROR
    assert len(first.splitlines()) == 7


def test_two_calls_agree() -> None:
    expr = (1 - sigmoid(Z)) * sigmoid(Z) * (sigmoid(Z) - Y)
    prefer = ((A, sigmoid(Z)), Y)
    once = teacher_latex(expr, NAMES, prefer=prefer)
    forms._chosen.cache_clear()
    forms._shape.cache_clear()
    assert teacher_latex(expr, NAMES, prefer=prefer) == once
    assert once == r"\left(a - y\right) a \left(1 - a\right)"


# --- every expression the project derives ----------------------------------------------------


def _value(expr: sympy.Expr, point: dict) -> complex:
    # sigmoid and softplus evaluate only at Numbers, not at softplus(1/(e^-2 + 1))
    return complex(to_textbook_form(expr).xreplace(point).evalf(30))


def _assert_equal_form(expr: sympy.Expr, prefer: tuple) -> None:
    """The printed form, re-evaluated, equals ``expr`` at float points (an oracle apart from
    the module's own check: 30-digit values compared to 1e-12)."""
    tex = teacher_latex(expr, NAMES, prefer=prefer)  # raises FormError on a mismatch
    assert " ".join(teacher_terms(expr, NAMES, prefer=prefer)) == tex
    form = forms._evaluate(forms.teacher_form(expr, prefer=prefer))
    meanings = {s: m for s, m in (p for p in prefer if isinstance(p, tuple))}
    form, expr = form.xreplace(meanings), expr.xreplace(meanings)
    symbols = sorted(form.free_symbols | expr.free_symbols, key=sympy.default_sort_key)
    for t in (0.3, -0.7, 1.9, -2.4):
        point = {s: sympy.Float(t + 0.37 * i) for i, s in enumerate(symbols)}
        got, want = _value(form, point), _value(expr, point)
        assert abs(got - want) <= 1e-12 * max(1.0, abs(want)), (expr, form, point)


@pytest.mark.parametrize("name", [n for n, a in ACTIVATIONS.items() if not a.softmax])
def test_every_activation_derivative(name: str) -> None:
    d = derive_activation(ACTIVATIONS[name])
    meaning = ((A, d.f),) if d.f != Z else ()
    _assert_equal_form(d.derivative, ())
    _assert_equal_form(d.derivative, meaning)
    _assert_equal_form(d.textbook, ())
    if d.through_output is not None:
        _assert_equal_form(d.through_output, meaning)


@pytest.mark.parametrize(
    ("act", "loss"),
    [
        (a, loss)
        for a, entry in ACTIVATIONS.items()
        for loss, l_entry in LOSSES.items()
        if (not l_entry.needs_probability or entry.probability)
        and not (loss == "binary_cross_entropy" and entry.softmax)
    ],
)
def test_every_output_rule(act: str, loss: str) -> None:
    entry = ACTIVATIONS[act]
    out = derive_output(entry, LOSSES[loss])
    if out.softmax:
        for expr in (out.loss, out.q):
            _assert_equal_form(expr, (P, Y))
        return
    f = _output(act)
    prefer = ((A, f), Y) if f != Z else ((A, Z), Y)
    for expr in (out.loss, out.delta, out.generic_delta):
        _assert_equal_form(expr, prefer)


@pytest.mark.slow
def test_every_bundled_example() -> None:
    for path in sorted((ROOT / "examples").glob("*.toml")):
        d = derive(load_spec(path))
        for ad in d.layers:
            if ad is None or ad.activation.softmax:
                continue
            _assert_equal_form(ad.derivative, ())
            if ad.through_output is not None:
                _assert_equal_form(ad.through_output, ((A, ad.f),))
        out = d.output
        if out.softmax:
            _assert_equal_form(out.q, (P, Y))
        else:
            f = d.network.output.expr.xreplace({X: Z})
            for expr in (out.loss, out.delta, out.generic_delta):
                _assert_equal_form(expr, ((A, f), Y))


def _random_expression(rng: random.Random, depth: int) -> sympy.Expr:
    leaves = [Z, A, Y, YHAT, Integer(1), Integer(2), Rational(1, 2), Rational(851, 500), -1]
    calls = [tanh, exp, sigmoid, Abs, step, softplus, sympy.sin, cosh, sympy.erf, expm1]
    if depth == 0 or rng.random() < 0.25:
        return sympy.sympify(rng.choice(leaves))
    left, right = _random_expression(rng, depth - 1), _random_expression(rng, depth - 1)
    pick = rng.random()
    if pick < 0.3:
        return left + right
    if pick < 0.55:
        return left * right
    if pick < 0.65:
        return left - right
    if pick < 0.72:
        return left / (1 + right**2)
    if pick < 0.8:
        return left ** rng.choice([2, 3, -1, -2])
    return rng.choice(calls)(left)


def test_random_expressions() -> None:
    """Seeded random expressions with each kind of preference: every form printed equals its
    input (the oracle above) and its terms join to the same string."""
    rng = random.Random(20240610)
    preferences = [(), ((A, tanh(Z)), Y), ((A, sigmoid(Z)),), (sigmoid,), (YHAT, Y)]
    for _ in range(80):
        expr = _random_expression(rng, rng.choice([2, 3, 4]))
        _assert_equal_form(expr, rng.choice(preferences))
