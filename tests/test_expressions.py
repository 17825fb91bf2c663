"""The safe parser: legitimate forms parse to the right SymPy, attacks are refused unexecuted."""

from __future__ import annotations

import random
import string
from pathlib import Path

import pytest
import sympy

from symbackprop.errors import InputError
from symbackprop.expressions import check_variable_name, parse_expression
from symbackprop.primitives import relu, sigmoid, softplus

FIELD = "layers[1].activation.expr"
x, y, yhat = sympy.symbols("x y yhat")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x*sigmoid(x)", x * sigmoid(x)),
        ("log(1+exp(x))", sympy.log(1 + sympy.exp(x))),
        ("Max(0.01*x, x)", sympy.Max(sympy.Rational(1, 100) * x, x)),
        (
            "x/2*(1+erf(x/sqrt(2)))",
            x / 2 * (1 + sympy.erf(x / sympy.sqrt(2))),
        ),
        ("tanh(x)**2", sympy.tanh(x) ** 2),
        ("-x", -x),
        ("+x", x),
        ("abs(x)", sympy.Abs(x)),
        ("Min(x, 1)", sympy.Min(x, 1)),
        ("Max(x, 0, -x)", sympy.Max(x, 0, -x)),
        ("x**2", x**2),
        ("x**-1", 1 / x),
        ("x**0.5", sympy.sqrt(x)),
        ("x**(1/3)", x ** sympy.Rational(1, 3)),
        ("2**x", 2**x),
        ("exp(-x**2/2)", sympy.exp(-(x**2) / 2)),
        ("softplus(x) - relu(x)", softplus(x) - relu(x)),
        ("sin(x)+cos(x)+tan(x)", sympy.sin(x) + sympy.cos(x) + sympy.tan(x)),
        ("sinh(x)*cosh(x)", sympy.sinh(x) * sympy.cosh(x)),
        ("asin(x)+acos(x)+atan(x)", sympy.asin(x) + sympy.acos(x) + sympy.atan(x)),
        ("asinh(x)+atanh(x)", sympy.asinh(x) + sympy.atanh(x)),
        ("pi*x + E", sympy.pi * x + sympy.E),
        ("1e-3*x", x / 1000),
        ("2.5E2*x", 250 * x),
        ("  x + 1  ", x + 1),
        ("(" * 100 + "x" + ")" * 100, x),
    ],
)
def test_accepted_forms(text: str, expected: sympy.Expr) -> None:
    assert parse_expression(text, FIELD, ("x",)) == expected


def test_loss_variables() -> None:
    expr = parse_expression("log(cosh(yhat - y))", "loss.expr", ("yhat", "y"))
    assert expr == sympy.log(sympy.cosh(yhat - y))
    assert parse_expression("(yhat-y)**2/2", "loss.expr", ("yhat", "y")) == (yhat - y) ** 2 / 2


def test_numbers_are_exact() -> None:
    # 0.1 is the decimal 1/10, not the binary double; 1/2 stays a Rational
    assert parse_expression("0.1", FIELD, ()) == sympy.Rational(1, 10)
    assert parse_expression("1/2", FIELD, ()) == sympy.Rational(1, 2)
    assert parse_expression("3", FIELD, ()).is_Integer


def test_symbols_are_plain() -> None:
    (symbol,) = parse_expression("x", FIELD, ("x",)).free_symbols
    assert symbol == sympy.Symbol("x")
    assert symbol.assumptions0 == sympy.Symbol("x").assumptions0


def test_any_variable_when_variables_is_none() -> None:
    expr = parse_expression("w1*theta + lr_2", "EXPR")
    assert {s.name for s in expr.free_symbols} == {"w1", "theta", "lr_2"}


def test_derivatives_of_parsed_expressions() -> None:
    swish = parse_expression("x*sigmoid(x)", FIELD, ("x",))
    value = sympy.diff(swish, x).subs(x, sympy.Rational(1, 2))
    expected = sympy.diff(x / (1 + sympy.exp(-x)), x).subs(x, sympy.Rational(1, 2))
    assert abs(float(value - expected)) < 1e-12


def test_pwned_file_is_not_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    attacks = [
        "__import__('os').system('touch pwned')",
        "__import__('pathlib').Path('pwned').write_text('x')",
        "open('pwned', 'w').write('x')",
        "exp(x).__class__.__init__.__globals__['__builtins__']['open']('pwned','w')",
    ]
    for attack in attacks:
        with pytest.raises(InputError):
            parse_expression(attack, FIELD, ("x",))
    assert not (tmp_path / "pwned").exists()


ATTACKS = [
    ("__import__('os').system('touch pwned')", "not allowed"),
    ("x.__class__", "attribute access"),
    ("().__class__.__bases__[0].__subclasses__()", "not allowed"),
    ("exp.__globals__", "attribute access"),
    ("lambda: 1", "lambda"),
    ("[x for x in ()]", "comprehension"),
    ("x if x else 1", "conditional"),
    ("eval('1')", "unknown function 'eval'"),
    ("open('f')", "unknown function 'open'"),
    ("Symbol('y')", "unknown function 'Symbol'"),
    ("x**9**9**9", "exponent"),
    ("'abc'", "strings"),
    ("b'abc'", "strings"),
    ("f'{x}'", "strings"),
    ("x[0]", "subscripts"),
    ("exp(x=1)", "keyword"),
    ("exp(*x)", "starred"),
    ("True + x", "booleans"),
    ("None", "not allowed"),
    ("1j*x", "complex"),
    ("x ^ 2", "**"),
    ("x % 2", "'%'"),
    ("x < 1", "comparisons"),
    ("x and 1", "'and'/'or'"),
    ("not x", "unary"),
    ("~x", "unary"),
    ("(x := 1)", "assignment"),
    ("x, x", "tuples"),
    ("{x: 1}", "dicts"),
    ("z", "unknown name 'z'"),
    ("y", "unknown name 'y'"),
    ("x(1)", "not a function"),
    ("exp", "is a function"),
    ("exp(x, x)", "exactly one argument"),
    ("Max(x)", "two or more"),
    ("x**1000", "exponent too large"),
    ("x**(100*100)", "exponent too large"),
    ("((10**100)**100)**100", "number too large"),
    ("1e999", "number"),
    ("1/0", "undefined"),
    ("log(0)", "undefined"),
    ("sqrt(-1)", "complex"),
    ("", "empty"),
    ("   ", "empty"),
    ("x +", "syntax error at column"),
    ("x\u22121", "'-'"),
    ("x\x00", "not allowed"),
    ("x" * 600, "longer than 500"),
    ("x" + "+x" * 150, "too large"),
    ("-" * 300 + "x", "too large"),
    ("(" * 210 + "x" + ")" * 210, "column"),
]


@pytest.mark.parametrize(("text", "problem"), ATTACKS)
def test_rejected(text: str, problem: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_expression(text, FIELD, ("x",))
    message = str(caught.value)
    assert message.startswith(f"{FIELD}: ")
    assert caught.value.field == FIELD
    assert problem in message
    assert "\n" not in message


def test_unknown_name_lists_what_is_allowed() -> None:
    with pytest.raises(InputError) as caught:
        parse_expression("foo", FIELD, ("x",))
    assert "allowed: x" in str(caught.value)
    assert "sigmoid" in str(caught.value)


def test_free_variable_names_are_checked() -> None:
    for bad in ("_x", "a" * 31, "gamma", "I", "exp"):
        with pytest.raises(InputError):
            parse_expression(f"{bad} + 1", "EXPR")
    assert check_variable_name("w1", "--var") == "w1"
    with pytest.raises(InputError, match="^--var: "):
        check_variable_name("1w", "--var")


def test_not_a_string() -> None:
    with pytest.raises(InputError, match="^EXPR: "):
        parse_expression(42, "EXPR")  # type: ignore[arg-type]


def test_random_strings_raise_only_input_error() -> None:
    """A cheap fuzz: any string either parses or raises InputError, nothing else."""
    rng = random.Random(0)
    alphabet = string.printable + "\u2212\u00e9"
    tokens = ["x", "**", "*", "(", ")", "exp(", "Max(", ",", "1e5", "9", ".", "_", "__", "-"]
    for _ in range(3000):
        if rng.random() < 0.5:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        else:
            text = "".join(rng.choice(tokens) for _ in range(rng.randint(1, 20)))
        try:
            result = parse_expression(text, FIELD, ("x",))
        except InputError as error:
            assert str(error).startswith(FIELD)
        else:
            assert isinstance(result, sympy.Expr)


# --- limits by count (issue 8, item 8) and real-valuedness (item 11) -------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("(x**100)**100", "degree too high"),
        ("((x**10)**10)**11", "degree too high"),
        ("(x**100)**(1000/100)**2", "constant exponent may not contain"),
        ("(x**50*(x+1)**50)**11", "degree too high"),
        ("**".join(["x"] * 52), "nested more than 50 deep"),
        ("sin(" * 51 + "x" + ")" * 51, "nested more than 50 deep"),
        ("exp(" * 26 + "x" + "**2)" * 26, "nested more than 50 deep"),
    ],
)
def test_limits_by_count(text: str, problem: str) -> None:
    with pytest.raises(InputError) as info:
        parse_expression(text, FIELD, ("x",))
    assert problem in info.value.problem
    with pytest.raises(InputError):
        parse_expression(text, "EXPR", None)


@pytest.mark.parametrize(
    "text",
    [
        "(x**100)**10",
        "(x**10)**10*(x**10)**10",
        "**".join(["x"] * 51),
        "sin(" * 50 + "x" + ")" * 50,
    ],
)
def test_within_the_limits(text: str) -> None:
    parse_expression(text, FIELD, ("x",))


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("asin(2)+x", "asin(2)"),
        ("atanh(3)+x", "atanh(3)"),
        ("acos(4)+x", "acos(4)"),
        ("-sqrt(-x**2)", "I*Abs(x)"),
        ("(-1)**x", "(-1)**x"),
        ("x*(-2)**(x/3)", "(-2)**(x/3)"),
        ("Min(atanh(6)+8*x, -asinh(x))", "not comparable"),
        ("x + acos(E)", "acos(E)"),
    ],
)
def test_custom_expressions_must_be_real(text: str, shown: str) -> None:
    with pytest.raises(InputError) as info:
        parse_expression(text, FIELD, ("x",))
    assert info.value.field == FIELD
    assert "not real-valued for real variables" in info.value.problem
    assert shown in info.value.problem


@pytest.mark.parametrize(
    "text", ["asin(1/2)+x", "sqrt(2)*x + pi", "log(-x**2-1)", "acos(x)", "(1/2)**x", "Min(E, x)"]
)
def test_real_constants_and_real_domains_are_accepted(text: str) -> None:
    parse_expression(text, FIELD, ("x",))


def test_chain_keeps_complex_constants() -> None:
    assert parse_expression("asin(2)+x", "EXPR", None) == sympy.asin(2) + sympy.Symbol("x")
