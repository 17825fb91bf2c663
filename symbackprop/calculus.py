"""The ``chain`` and ``descent`` commands: the chain rule and gradient descent on any expression.

Contract (pure functions: no printing, no files, no exit):

- ``chain_report(text, var=None, fmt="text") -> str``: the chain-rule derivation of a
  composite scalar function, e.g. ``sin(exp(x**2))`` = A(B(C(x))) with u = x**2, v = exp(u),
  f = sin(v).  In ``text`` format the last line is exactly ``f'(x) = <str(SymPy expr)>``
  (the variable's own name in place of x), readable back by ``sympy.sympify``.  With several
  variables every partial derivative is listed at the end in that form, sorted by name,
  with the main variable (``var``, else ``x`` if present, else the last name) last.
- ``descent(text, start, lr, steps, tol) -> DescentResult``: gradient descent from ``start``
  ("w1=3,w2=1"); ``result.text`` is the report, whose last line is exactly
  ``final: w1=<v>, w2=<v>, f=<v>`` (variables in ``start`` order, values ``repr(float)``).
- ``descent_figure(result)``: a matplotlib Figure (matplotlib is an optional extra).

Variables are differentiated as real symbols (so that d|x|/dx is sign(x), not an expression
in re(x) and im(x)) and handed back as the parser's plain symbols.  Bad input raises
``InputError`` naming ``EXPR``, ``--var``, ``--format``, ``--start``, ``--lr``, ``--steps``,
``--tol`` or ``--plot``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import sympy
from sympy.printing.precedence import PRECEDENCE, precedence

from symbackprop import primitives
from symbackprop.errors import InputError
from symbackprop.expressions import (
    check_variable_name,
    degree,
    expansion_terms,
    parse_expression,
    simplify,
    tree_size,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = ("text", "md", "tex")
# simplify() has no bound of its own: its trigsimp pass ran for minutes on the 7-operation
# derivative 6*(x - 2)**5*cos((x - 2)**6) (the power expanded inside the cosine), and for
# 15-36 s on sinh(x)/cosh(x) + a1 + ... + a9 (factoring over the Gaussian integers in ten
# generators).  So it only sees derivatives within these structural budgets, never a clock,
# so that the same input prints the same derivative on any machine under any load:
SIMPLIFY_MAX_NODES = 60  # tree nodes (expressions.tree_size)
SIMPLIFY_MAX_OPS = 15  # sympy.count_ops
SIMPLIFY_MAX_DEGREE = 16  # expressions.degree
SIMPLIFY_MAX_GENERATORS = 5  # distinct variables and function calls (constant ones too)
# terms of its expansion (expressions.expansion_terms): factoring the degree-10 polynomial
# in ((x - w1)**4 + tanh(pi))**2 took more than 10 s
SIMPLIFY_MAX_TERMS = 10
# A trigonometric or hyperbolic function's argument: a single term of at most this degree,
# whose rational coefficient has numerator and denominator at most this size (multiple-angle
# rewrites of sinh(32*x) took 7 s; a constant sinh(2 + pi) is expanded like any other).
SIMPLIFY_MAX_TRIG_ARGUMENT_DEGREE = 3
SIMPLIFY_MAX_TRIG_COEFFICIENT = 8
# Past this |f| a descent run is called diverged, like a non-finite value.
DIVERGENCE_BOUND = 1e100
# Small enough steps never increase f (the descent lemma), so f rising at every one of this
# many steps to far above its start means lr is too large, long before f reaches 1e100.
RISING_STEPS = 10
RISING_FACTOR = 1e6
TRACE_HEAD = 10
TRACE_TAIL = 5
# Every trace row is kept (the figure draws them all): cap the run at a size that fits.
MAX_STEPS = 1_000_000
_NAME_POOL = ("u", "v", "w", "p", "q", "r", "s")

# (step, values, f, gradient norm)
TraceRow = tuple[int, tuple[float, ...], float, float]
# point -> (f, gradient)
_Evaluate = Callable[[tuple[float, ...]], tuple[float, tuple[float, ...]]]
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ---------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------


def _parse(text: str) -> sympy.Expr:
    return parse_expression(text, "EXPR", None)


def _realify(expr: sympy.Expr) -> tuple[sympy.Expr, dict[sympy.Symbol, sympy.Symbol]]:
    """``expr`` over real symbols, and the map back to the parser's plain symbols."""
    real = {s: sympy.Symbol(s.name, real=True) for s in expr.free_symbols}
    try:
        over_real = expr.xreplace(real)
    except (ValueError, TypeError) as exc:  # Min(atanh(6) + x, ...): "not comparable"
        problem = " ".join(str(exc).split())[:120]
        raise InputError(
            "EXPR", f"the expression is not real-valued for real variables ({problem})"
        ) from None
    return over_real, {r: s for s, r in real.items()}


def _plain(expr: sympy.Expr, back: dict[sympy.Symbol, sympy.Symbol]) -> sympy.Expr:
    """``expr.xreplace(back)``, with each Heaviside rebuilt unevaluated.

    Heaviside's eval asks for im() of its argument, which for a plain (complex) symbol
    expands (re + i im)**n: Heaviside(x**200 - 1/2) took 11 s, x**10000 hours.  Over the
    real symbols the argument was already evaluated, so nothing is lost by not doing it again.
    """
    if not expr.has(sympy.Heaviside):
        return expr.xreplace(back)
    memo: dict[sympy.Basic, sympy.Basic] = {}

    def rebuild(node: sympy.Basic) -> sympy.Basic:
        if node in back:
            return back[node]
        if not node.args:
            return node
        if node not in memo:
            args = [rebuild(arg) for arg in node.args]
            if isinstance(node, sympy.Heaviside):
                memo[node] = sympy.Heaviside(*args, evaluate=False)
            else:
                memo[node] = node.func(*args) if args != list(node.args) else node
        return memo[node]

    return rebuild(expr)


def _simplest(expr: sympy.Expr) -> sympy.Expr:
    """The shortest (by count_ops) of ``expr``, its factored terms and, for a derivative
    within the simplify budget, its simplification (ties keep the earlier one)."""
    candidates = [expr, sympy.factor_terms(expr)]
    if _may_simplify(expr):
        try:
            candidates.append(simplify(expr))
        except Exception:  # noqa: BLE001 - simplification is a nicety; the input is correct
            pass
    return min(candidates, key=sympy.count_ops)


_TRIGONOMETRIC = (
    sympy.functions.elementary.trigonometric.TrigonometricFunction,
    sympy.functions.elementary.hyperbolic.HyperbolicFunction,
)


def _may_simplify(expr: sympy.Expr) -> bool:
    """Whether ``expr`` is within the budgets ``sympy.simplify`` is given (counts only)."""
    if tree_size(expr, SIMPLIFY_MAX_NODES) > SIMPLIFY_MAX_NODES:
        return False
    if sympy.count_ops(expr) > SIMPLIFY_MAX_OPS or degree(expr) > SIMPLIFY_MAX_DEGREE:
        return False
    if expansion_terms(expr, SIMPLIFY_MAX_TERMS) > SIMPLIFY_MAX_TERMS:
        return False
    generators = {
        node
        for node in sympy.preorder_traversal(expr)
        if node.is_Symbol or isinstance(node, sympy.Function)
    }
    if len(generators) > SIMPLIFY_MAX_GENERATORS:
        return False
    return all(
        _plain_angle(node.args[0]) for node in generators if isinstance(node, _TRIGONOMETRIC)
    )


def _plain_angle(arg: sympy.Expr) -> bool:
    """A single term of low degree with a small rational coefficient, like 3*exp(x**2)."""
    coefficient, _ = arg.as_coeff_Mul()
    return (
        coefficient.is_Rational
        and max(abs(coefficient.p), coefficient.q) <= SIMPLIFY_MAX_TRIG_COEFFICIENT
        and expansion_terms(arg, 1) == 1
        and degree(arg) <= SIMPLIFY_MAX_TRIG_ARGUMENT_DEGREE
    )


def _needs_parentheses(expr: sympy.Expr) -> bool:
    """In a displayed product of factors, 2*x and 1/u and -1 read better parenthesized."""
    if expr.is_Number:
        return bool(expr.is_negative) or not expr.is_Integer
    return precedence(expr) <= PRECEDENCE["Mul"]


def _factor_text(expr: sympy.Expr) -> str:
    text = sympy.sstr(expr)
    return f"({text})" if _needs_parentheses(expr) else text


def _factor_latex(expr: sympy.Expr) -> str:
    text = sympy.latex(expr)
    return rf"\left({text}\right)" if _needs_parentheses(expr) else text


# ---------------------------------------------------------------------------------------
# chain
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    """One link of the chain: ``name = outer(inner_name)``, with its local derivative."""

    name: sympy.Symbol
    inner: sympy.Symbol  # the variable itself for the innermost link
    body: sympy.Expr  # in terms of ``inner``
    local: sympy.Expr  # d body / d inner
    value: sympy.Expr  # body with everything substituted back, in the variable


@dataclass(frozen=True)
class _Chain:
    expr: sympy.Expr
    var: sympy.Symbol
    variables: tuple[sympy.Symbol, ...]  # every variable, the main one last
    layers: tuple[_Layer, ...]  # innermost first; the last one is f
    raw: sympy.Expr  # the chain product, substituted back
    derivative: sympy.Expr
    partials: tuple[tuple[sympy.Symbol, sympy.Expr], ...]  # others, then the main one
    leaf_rule: str  # "sum", "product" or ""
    leaf_terms: tuple[tuple[sympy.Expr, sympy.Expr], ...]  # (term, its derivative)


def chain_report(text: str, var: str | None = None, fmt: str = "text") -> str:
    """The chain-rule derivation of ``text`` with respect to ``var`` in ``fmt``."""
    if fmt not in FORMATS:
        raise InputError("--format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if var is not None:
        check_variable_name(var, "--var")
    chain = _derive_chain(_parse(text), var)
    render = {"text": _chain_text, "md": _chain_markdown, "tex": _chain_latex}[fmt]
    return render(chain)


def _main_variable(expr: sympy.Expr, var: str | None) -> tuple[sympy.Symbol, list[sympy.Symbol]]:
    names = sorted(s.name for s in expr.free_symbols)
    if var is not None:
        main = var
    elif len(names) == 1:
        main = names[0]
    elif not names or "x" in names:
        main = "x"
    else:
        main = names[-1]
    others = [sympy.Symbol(name, real=True) for name in names if name != main]
    return sympy.Symbol(main, real=True), others


def _derive_chain(plain: sympy.Expr, var: str | None) -> _Chain:
    expr, back = _realify(plain)
    x, others = _main_variable(expr, var)
    back.setdefault(x, sympy.Symbol(x.name))
    t = sympy.Dummy("t")
    outers, leaf = _decompose(expr, x, t)
    layers = _name_layers(outers, leaf, x, t, expr)
    raw = sympy.Mul(*(layer.local for layer in layers))
    # each value is in the variable alone, so one simultaneous replacement substitutes back
    # (subs, one name at a time, was quadratic: 99 nested sin took 15 s)
    raw = raw.xreplace({layer.name: layer.value for layer in layers[:-1]})
    derivative = _simplest(raw)
    partials = [(s, _simplest(sympy.diff(expr, s))) for s in others] + [(x, derivative)]
    leaf = layers[0].body
    rule, terms = "", ()
    if leaf.is_Add or leaf.is_Mul:
        parts = [a for a in leaf.args if a.has(x)]
        if len(parts) > 1:
            rule = "sum" if leaf.is_Add else "product"
            terms = tuple((a, sympy.diff(a, x)) for a in leaf.args if a.has(x))
    return _Chain(
        expr=plain,
        var=back[x],
        variables=tuple(back.get(s, sympy.Symbol(s.name)) for s in [*others, x]),
        layers=tuple(_unreal(layer, back) for layer in layers),
        raw=_plain(raw, back),
        derivative=_plain(derivative, back),
        partials=tuple((back[s], _plain(d, back)) for s, d in partials),
        leaf_rule=rule,
        leaf_terms=tuple((_plain(a, back), _plain(d, back)) for a, d in terms),
    )


def _unreal(layer: _Layer, back: dict[sympy.Symbol, sympy.Symbol]) -> _Layer:
    return _Layer(
        name=layer.name,
        inner=back.get(layer.inner, layer.inner),
        body=_plain(layer.body, back),
        local=_plain(layer.local, back),
        value=_plain(layer.value, back),
    )


def _decompose(
    expr: sympy.Expr, x: sympy.Symbol, t: sympy.Dummy
) -> tuple[list[sympy.Expr], sympy.Expr]:
    """The outer functions ``outer(t)`` from the outside in, and the innermost leaf."""
    outers: list[sympy.Expr] = []
    current = expr
    while (peeled := _peel(current, x, t)) is not None:
        outers.append(peeled[0])
        current = peeled[1]
    return outers, current


def _peel(
    expr: sympy.Expr, x: sympy.Symbol, t: sympy.Dummy
) -> tuple[sympy.Expr, sympy.Expr] | None:
    """``(outer(t), inner)`` with ``expr = outer(inner)`` and inner a non-trivial composite.

    A function of one dependent argument (sin, exp, sigmoid, ...) or a power with exactly
    one dependent side peels off its argument.  A sum or product with exactly one dependent
    part peels only when that part does (3*exp(x**2) -> 3*exp(t) of x**2), so that a leaf
    like 1 + x**2 stays one piece instead of a chain of trivial linear steps.
    """
    if expr == x or not expr.has(x):
        return None
    dependent = [arg for arg in expr.args if arg.has(x)]
    if len(dependent) != 1:
        return None
    (inner,) = dependent
    if isinstance(expr, sympy.Function) or expr.is_Pow:
        if inner == x:
            return None
        return expr.xreplace({inner: t}), inner
    if expr.is_Add or expr.is_Mul:
        peeled = _peel(inner, x, t)
        if peeled is None:
            return None
        outer, deeper = peeled
        return expr.xreplace({inner: outer}), deeper
    return None


def _name_layers(
    outers: list[sympy.Expr], leaf: sympy.Expr, x: sympy.Symbol, t: sympy.Dummy, expr: sympy.Expr
) -> list[_Layer]:
    """Name the links u, v, w, ... from the inside out; the outermost is f."""
    taken = {s.name for s in expr.free_symbols} | {"f", x.name}
    pool = [n for n in _NAME_POOL if n not in taken]
    pool += [f"u{i}" for i in range(1, len(outers) + 2) if f"u{i}" not in taken]
    first = sympy.Symbol("f") if not outers else sympy.Symbol(pool[0], real=True)
    layers = [_Layer(first, x, leaf, sympy.diff(leaf, x), leaf)]
    for depth, outer in enumerate(reversed(outers), start=1):
        inner = layers[-1]
        name = sympy.Symbol("f") if depth == len(outers) else sympy.Symbol(pool[depth], real=True)
        body = outer.xreplace({t: inner.name})
        value = outer.xreplace({t: inner.value})
        layers.append(_Layer(name, inner.name, body, sympy.diff(body, inner.name), value))
    return layers


def _chain_text(chain: _Chain) -> str:
    x, layers = chain.var, chain.layers
    multi = len(chain.variables) > 1
    args = ", ".join(sorted(s.name for s in chain.variables))
    lines = [f"f({args}) = {sympy.sstr(chain.expr)}"]
    if multi:
        lines.append(f"main variable: {x}; the others are held constant (partial derivatives)")
    if not chain.expr.has(x):
        lines.append(f"f does not depend on {x}, so its derivative is 0")
    elif len(layers) == 1:
        lines.append(f"no composition to unwrap: differentiate f directly with respect to {x}")
        lines += ["  " + line for line in _leaf_rule_text(chain)]
        lines.append(f"df/d{x} = {sympy.sstr(layers[0].local)}")
    else:
        lines += _composition_text(chain)
    if len(layers) > 1 and chain.derivative != chain.raw:
        lines.append(f"simplified: df/d{x} = {sympy.sstr(chain.derivative)}")
    if multi:
        lines.append("partial derivatives:")
    lines += [f"f'({s}) = {sympy.sstr(_sympy_native(d))}" for s, d in chain.partials]
    return "\n".join(lines) + "\n"


def _sympy_native(expr: sympy.Expr) -> sympy.Expr:
    """symbackprop's primitives in SymPy's own functions, so that sympify reads the line back."""
    expr = primitives.to_textbook_form(expr)
    return expr.replace(
        lambda e: isinstance(e, (primitives.relu, primitives.step)),
        lambda e: (
            sympy.Max(0, e.args[0])
            if isinstance(e, primitives.relu)
            else sympy.Heaviside(e.args[0], 0, evaluate=False)
        ),
    )


def _composition_text(chain: _Chain) -> list[str]:
    x, layers = chain.var, chain.layers
    letters = _letters(len(layers))
    nested = "".join(f"{letter}(" for letter in letters) + f"{x}" + ")" * len(layers)
    lines = [f"composition: f({x}) = {nested}"]
    for letter, layer in zip(reversed(letters), layers, strict=True):
        lines.append(f"  {layer.name} = {letter}({layer.inner}) = {sympy.sstr(layer.body)}")
    lines.append("local derivatives:")
    for layer in layers:
        lines.append(f"  d{layer.name}/d{layer.inner} = {sympy.sstr(layer.local)}")
    lines += ["  " + line for line in _leaf_rule_text(chain)]
    rule = " * ".join(f"d{la.name}/d{la.inner}" for la in reversed(layers))
    lines.append(f"chain rule: df/d{x} = {rule}")
    lines.append("  = " + " * ".join(_factor_text(la.local) for la in reversed(layers)))
    lines.append(f"substituting back: df/d{x} = {sympy.sstr(chain.raw)}")
    return lines


def _leaf_rule_text(chain: _Chain) -> list[str]:
    if not chain.leaf_rule:
        return []
    leaf, x = chain.layers[0], chain.var
    d = f"d/d{x}"
    parts = [f"{d}({sympy.sstr(a)}) = {sympy.sstr(da)}" for a, da in chain.leaf_terms]
    if chain.leaf_rule == "sum":
        return [f"sum rule: d{leaf.name}/d{x} is the sum of the terms' derivatives:", *parts]
    return [
        f"product rule: d{leaf.name}/d{x} = sum over factors of (that factor's derivative "
        "times the other factors):",
        *parts,
    ]


def _letters(count: int) -> list[str]:
    if count <= len(_LETTERS):
        return list(_LETTERS[:count])
    return [f"A{i}" for i in range(1, count + 1)]


def _latex_steps(chain: _Chain) -> list[tuple[str, str]]:
    """``(left, right)`` rows shared by the Markdown and LaTeX renderings."""
    x, layers = chain.var, chain.layers
    multi = len(chain.variables) > 1
    dx = _latex_d("f", x, multi)
    args = ", ".join(sympy.latex(s) for s in sorted(chain.variables, key=str))
    rows = [(f"f({args})", sympy.latex(chain.expr))]
    if len(layers) > 1:
        letters = _letters(len(layers))
        nested = "".join(f"{letter}(" for letter in letters) + sympy.latex(x) + ")" * len(layers)
        rows[0] = (rows[0][0], rows[0][1] + rf" = {nested}")
        for letter, layer in zip(reversed(letters), layers, strict=True):
            inner = sympy.latex(layer.inner)
            rows.append((sympy.latex(layer.name), f"{letter}({inner}) = {sympy.latex(layer.body)}"))
        for layer in layers:
            left = _latex_d(sympy.latex(layer.name), layer.inner, multi and layer is layers[0])
            rows.append((left, sympy.latex(layer.local)))
        rule = r"\,".join(
            _latex_d(sympy.latex(la.name), la.inner, multi and la is layers[0])
            for la in reversed(layers)
        )
        rows.append((dx, rule))
        rows.append(("", r" \cdot ".join(_factor_latex(la.local) for la in reversed(layers))))
        rows.append(("", sympy.latex(chain.raw)))
        if chain.derivative != chain.raw:
            rows.append(("", sympy.latex(chain.derivative)))
    for term, derivative in chain.leaf_terms:
        rows.append(
            (
                rf"\frac{{d}}{{d{sympy.latex(x)}}}\left({sympy.latex(term)}\right)",
                sympy.latex(derivative),
            )
        )
    for s, d in chain.partials:
        rows.append((_latex_d("f", s, multi), sympy.latex(d)))
    return rows


def _latex_d(top: str, bottom: sympy.Symbol, partial: bool) -> str:
    d = r"\partial " if partial else "d"
    return rf"\frac{{{d}{top}}}{{{d}{sympy.latex(bottom)}}}"


def _chain_markdown(chain: _Chain) -> str:
    x = chain.var
    lines = [
        f"**Chain rule for $f = {sympy.latex(chain.expr)}$ with respect to ${sympy.latex(x)}$**",
        "",
    ]
    if not chain.expr.has(x):
        lines += [f"$f$ does not depend on ${sympy.latex(x)}$, so the derivative is $0$.", ""]
    elif len(chain.layers) > 1:
        lines += [
            "Name the nested functions from the inside out, take each local derivative with "
            "SymPy, multiply them (chain rule), substitute back and simplify:",
            "",
        ]
    elif chain.leaf_rule:
        lines += [f"No composition to unwrap; the {chain.leaf_rule} rule applies:", ""]
    body = " \\\\\n".join(f"{left} &= {right}" for left, right in _latex_steps(chain))
    lines += ["$$", r"\begin{aligned}", body, r"\end{aligned}", "$$", ""]
    return "\n".join(lines)


def _chain_latex(chain: _Chain) -> str:
    x = chain.var
    lines = [
        f"% chain rule for f = {sympy.sstr(chain.expr)} with respect to {x} (needs amsmath)",
        r"\begin{align*}",
        " \\\\\n".join(f"{left} &= {right}" for left, right in _latex_steps(chain)),
        r"\end{align*}",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# descent
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DescentResult:
    """One gradient-descent run: the derivation, the trace and the outcome.

    ``trace`` rows are ``(step, values, f, grad_norm)``; step 0 is the start point.  When a
    step leaves the domain of f, its row has ``f`` and ``grad_norm`` NaN.
    """

    expression: sympy.Expr
    variables: tuple[str, ...]
    partials: tuple[sympy.Expr, ...]
    start: tuple[float, ...]
    lr: float
    steps: int
    tol: float
    trace: tuple[TraceRow, ...]
    final_values: tuple[float, ...]
    final_f: float
    converged: bool
    diverged: bool
    stop_reason: str
    text: str


class _Undefined(ArithmeticError):
    """f or its gradient has no real value at a point."""


def descent(
    text: str, start: str, lr: float = 0.1, steps: int = 100, tol: float = 1e-8
) -> DescentResult:
    """Gradient descent ``w <- w - lr * grad f(w)`` on ``text`` from ``start``."""
    lr, steps, tol = _check_settings(lr, steps, tol)
    expr = _parse(text)
    names, point = _parse_start(start, expr)
    real_expr, back = _realify(expr)
    symbols = [sympy.Symbol(name, real=True) for name in names]
    partials = tuple(_plain(_simplest(sympy.diff(real_expr, s)), back) for s in symbols)
    evaluate = _numeric(expr, partials, names)
    try:
        evaluate(point)
    except _Undefined as exc:
        raise InputError("--start", f"f is undefined at the start point ({exc})") from None
    trace, converged, diverged, reason = _iterate(evaluate, point, lr, steps, tol)
    final = trace[-1]
    result = DescentResult(
        expression=expr,
        variables=names,
        partials=partials,
        start=point,
        lr=lr,
        steps=steps,
        tol=tol,
        trace=trace,
        final_values=final[1],
        final_f=final[2],
        converged=converged,
        diverged=diverged,
        stop_reason=reason,
        text="",
    )
    return replace(result, text=_descent_text(result))


def _check_settings(lr: float, steps: int, tol: float) -> tuple[float, int, float]:
    try:
        lr = float(lr)
    except (TypeError, ValueError):
        raise InputError("--lr", f"expected a number, got {lr!r}") from None
    if not (math.isfinite(lr) and lr > 0):
        raise InputError("--lr", f"expected a positive finite number, got {lr!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError("--steps", f"expected a positive integer, got {steps!r}")
    if steps > MAX_STEPS:
        raise InputError("--steps", f"at most {MAX_STEPS} steps, got {steps}")
    try:
        tol = float(tol)
    except (TypeError, ValueError):
        raise InputError("--tol", f"expected a number, got {tol!r}") from None
    if not (math.isfinite(tol) and tol >= 0):
        raise InputError("--tol", f"expected a finite number >= 0, got {tol!r}")
    return lr, steps, tol


def _parse_start(start: str, expr: sympy.Expr) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Names and values of ``"w1=3, w2=1"``: every variable of ``expr``, nothing else."""
    if not isinstance(start, str) or not start.strip():
        raise InputError("--start", "expected name=value pairs, e.g. w1=3,w2=1")
    names: list[str] = []
    values: list[float] = []
    for item in start.split(","):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep:
            raise InputError("--start", f"expected name=value, got {item.strip()!r}")
        check_variable_name(name, "--start")
        if name in names:
            raise InputError("--start", f"{name!r} is given twice")
        try:
            number = float(value)
        except ValueError:
            raise InputError("--start", f"{name}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise InputError("--start", f"{name}: expected a finite number, got {value!r}")
        names.append(name)
        values.append(number)
    free = sorted(s.name for s in expr.free_symbols)
    if not free:
        raise InputError("EXPR", "the expression has no variables to descend on")
    missing = [name for name in free if name not in names]
    if missing:
        raise InputError("--start", f"no start value for {', '.join(missing)}")
    extra = [name for name in names if name not in free]
    if extra:
        raise InputError("--start", f"{', '.join(extra)} does not appear in EXPR")
    return tuple(names), tuple(values)


def _stable_sigmoid(t: float) -> float:
    if t >= 0:
        return 1.0 / (1.0 + math.exp(-t))
    e = math.exp(t)
    return e / (1.0 + e)


# Numeric spellings of the symbackprop primitives (and of what their derivatives contain)
# for the pure-Python "math" lambdify: stable for every finite input.
_MATH_FUNCTIONS: dict[str, Callable[..., float]] = {
    "sigmoid": _stable_sigmoid,
    "softplus": lambda t: max(t, 0.0) + math.log1p(math.exp(-abs(t))),
    "relu": lambda t: max(t, 0.0),
    "step": lambda t: 1.0 if t > 0 else 0.0,
    "leaky_relu": lambda t: t if t > 0 else 0.01 * t,
    "elu": lambda t: t if t > 0 else math.expm1(t),
}


def _numeric(expr: sympy.Expr, partials: Sequence[sympy.Expr], names: Sequence[str]) -> _Evaluate:
    """``point -> (f, gradient)`` in floats; raises ``_Undefined`` off the real domain."""
    symbols = [sympy.Symbol(name) for name in names]
    # The expression passed the whitelist and every name is a checked identifier, so the
    # source lambdify writes and executes is made of known functions and those names only.
    function = sympy.lambdify(symbols, [expr, *partials], modules=[_MATH_FUNCTIONS, "math"])

    def evaluate(point: tuple[float, ...]) -> tuple[float, tuple[float, ...]]:
        try:
            values = function(*point)
        except OverflowError:
            return math.inf, tuple(math.inf for _ in point)
        except (ValueError, ZeroDivisionError, TypeError) as exc:
            raise _Undefined(str(exc) or type(exc).__name__) from None
        if any(isinstance(v, complex) for v in values):
            raise _Undefined("complex value")
        f, *grad = (float(v) for v in values)
        return f, tuple(grad)

    return evaluate


def _iterate(
    evaluate: _Evaluate,
    point: tuple[float, ...],
    lr: float,
    steps: int,
    tol: float,
) -> tuple[tuple[TraceRow, ...], bool, bool, str]:
    trace: list[TraceRow] = []
    for step in range(steps + 1):
        try:
            f, grad = evaluate(point)
        except _Undefined as exc:
            trace.append((step, point, math.nan, math.nan))
            return tuple(trace), False, True, f"diverged: f is undefined at step {step} ({exc})"
        norm = (
            math.sqrt(math.fsum(g * g for g in grad)) if all(map(math.isfinite, grad)) else math.inf
        )
        trace.append((step, point, f, norm))
        finite = all(map(math.isfinite, (*point, f, norm)))
        if not finite or abs(f) > DIVERGENCE_BOUND:
            why = "a value is not finite" if not finite else f"|f| > {DIVERGENCE_BOUND:g}"
            return tuple(trace), False, True, f"diverged at step {step}: {why} (lr too large?)"
        if _rising(trace):
            why = f"f rose at each of the last {RISING_STEPS} steps to {f:.3g}"
            return tuple(trace), False, True, f"diverged at step {step}: {why} (lr too large?)"
        if norm < tol or norm == 0:
            return (
                tuple(trace),
                True,
                False,
                f"converged at step {step}: gradient norm {norm:.3g} < tol {tol:g}",
            )
        if step == steps:
            break
        point = tuple(w - lr * g for w, g in zip(point, grad, strict=True))
    reason = (
        f"stopped after {steps} steps (the step limit); gradient norm {norm:.3g} >= tol {tol:g}"
    )
    return tuple(trace), False, False, reason


def _rising(trace: Sequence[TraceRow]) -> bool:
    if len(trace) <= RISING_STEPS:
        return False
    recent = [row[2] for row in trace[-RISING_STEPS - 1 :]]
    grew = all(b > a for a, b in zip(recent, recent[1:], strict=False))
    return grew and abs(recent[-1]) > RISING_FACTOR * max(1.0, abs(trace[0][2]))


def _descent_text(result: DescentResult) -> str:
    names = result.variables
    args = ", ".join(names)
    lines = [f"f({args}) = {sympy.sstr(result.expression)}", "partial derivatives:"]
    lines += [f"  df/d{n} = {sympy.sstr(p)}" for n, p in zip(names, result.partials, strict=True)]
    lines.append(f"gradient: grad f = ({', '.join(sympy.sstr(p) for p in result.partials)})")
    lines.append(f"update rule: w <- w - lr * grad f(w), with lr = {result.lr!r}")
    lines += [f"  {n} <- {n} - {result.lr!r} * df/d{n}" for n in names]
    start = ", ".join(f"{n}={v!r}" for n, v in zip(names, result.start, strict=True))
    lines.append(f"start: {start}; at most {result.steps} steps; tol = {result.tol!r}")
    lines += _trace_table(result)
    lines.append(result.stop_reason)
    final = ", ".join(f"{n}={float(v)!r}" for n, v in zip(names, result.final_values, strict=True))
    lines.append(f"final: {final}, f={float(result.final_f)!r}")
    return "\n".join(lines) + "\n"


def _trace_table(result: DescentResult) -> list[str]:
    headers = ["step", *result.variables, "f", "|grad f|"]
    widths = [max(6, len(h)) for h in headers]
    widths[1:] = [max(14, w) for w in widths[1:]]

    def row(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True))

    rows = list(result.trace)
    shown: list[TraceRow | None] = rows
    if len(rows) > TRACE_HEAD + TRACE_TAIL:
        shown = [*rows[:TRACE_HEAD], None, *rows[-TRACE_TAIL:]]
    lines = [row(headers)]
    for entry in shown:
        if entry is None:
            lines.append(row(["...", *("..." for _ in headers[1:])]))
            continue
        step, values, f, norm = entry
        lines.append(row([str(step), *(f"{v:.6g}" for v in values), f"{f:.6g}", f"{norm:.3g}"]))
    return lines


def descent_figure(result: DescentResult) -> Figure:
    """The descent path: contour and path for two variables, f against step otherwise.

    Uses ``matplotlib.figure.Figure`` with the Agg canvas directly, so the caller's pyplot
    backend is never switched.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError(
            "--plot", "matplotlib is not installed; pip install 'symbackprop[plot]'"
        ) from None
    figure = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    evaluate = _numeric(result.expression, [], result.variables)
    rows = [r for r in result.trace if all(map(math.isfinite, (*r[1], r[2])))]
    if len(result.variables) == 2 and rows:
        _plot_contour(axes, evaluate, rows, result.variables)
    elif len(result.variables) == 1 and rows:
        _plot_curve(axes, evaluate, rows, result.variables[0])
    else:
        axes.plot([r[0] for r in rows], [r[2] for r in rows], marker=".")
        axes.set_xlabel("step")
        axes.set_ylabel("f")
    axes.set_title(_title(result))
    figure.tight_layout()
    return figure


TITLE_MAX_CHARACTERS = 120  # of the formula's LaTeX; past it the title names f only


def _math(tex: str) -> bool:
    """Whether matplotlib's mathtext can typeset ``$tex$`` (it knows a subset of LaTeX)."""
    from matplotlib.mathtext import MathTextParser

    try:
        MathTextParser("path").parse(f"${tex}$")
    except ValueError:
        return False
    return True


def _symbol(name: str) -> str:
    """A variable's axis label in mathematics: w1 -> $w_{1}$ (as written if mathtext can't)."""
    tex = sympy.latex(sympy.Symbol(name))
    return f"${tex}$" if _math(tex) else name


def _title(result: DescentResult) -> str:
    """'gradient descent on $f(w_1, w_2) = w_1^2 + 3 w_2^2$': the function as a reader
    writes it, not in Python syntax; f alone when the formula is long or mathtext can't."""
    names = ", ".join(sympy.latex(sympy.Symbol(v)) for v in result.variables)
    tex = f"f({names}) = {sympy.latex(result.expression)}"
    if len(tex) <= TITLE_MAX_CHARACTERS and _math(tex):
        return f"gradient descent on ${tex}$"
    return f"gradient descent on $f({names})$" if _math(f"f({names})") else "gradient descent"


def _safe_f(
    evaluate: _Evaluate,
    point: tuple[float, ...],
) -> float:
    try:
        f, _ = evaluate(point)
    except _Undefined:
        return math.nan
    return f if math.isfinite(f) else math.nan


def _span(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    margin = max(high - low, 1e-3, 0.1 * max(abs(low), abs(high))) * 0.25
    return low - margin, high + margin


def _plot_contour(
    axes: Axes, evaluate: _Evaluate, rows: Sequence[TraceRow], names: Sequence[str]
) -> None:
    xs = [r[1][0] for r in rows]
    ys = [r[1][1] for r in rows]
    (x0, x1), (y0, y1) = _span(xs), _span(ys)
    # a square window at equal scale: the path is seen to cross the contours at right angles
    half = max(x1 - x0, y1 - y0) / 2
    (cx, cy) = ((x0 + x1) / 2, (y0 + y1) / 2)
    (x0, x1), (y0, y1) = (cx - half, cx + half), (cy - half, cy + half)
    n = 80
    gx = [x0 + (x1 - x0) * i / (n - 1) for i in range(n)]
    gy = [y0 + (y1 - y0) * j / (n - 1) for j in range(n)]
    grid = [[_safe_f(evaluate, (a, b)) for a in gx] for b in gy]
    finite = sorted(v for line in grid for v in line if math.isfinite(v))
    # Quantile levels: valleys like Rosenbrock's vanish among evenly spaced levels.
    levels = sorted({finite[int(i * (len(finite) - 1) / 24)] for i in range(25)}) if finite else 1
    contour = axes.contour(gx, gy, grid, levels=levels if len(levels) > 1 else 10, cmap="viridis")
    axes.figure.colorbar(contour, ax=axes, label="$f$")
    axes.plot(xs, ys, color="tab:red", marker=".", linewidth=1, label="iterates")
    axes.plot(xs[:1], ys[:1], "o", color="black", label="start")
    axes.plot(xs[-1:], ys[-1:], "*", color="black", markersize=10, label="end")
    axes.set_xlabel(_symbol(names[0]))
    axes.set_ylabel(_symbol(names[1]))
    axes.set_aspect("equal", adjustable="box")
    axes.legend()


def _plot_curve(axes: Axes, evaluate: _Evaluate, rows: Sequence[TraceRow], name: str) -> None:
    ws = [r[1][0] for r in rows]
    low, high = _span(ws)
    n = 400
    grid = [low + (high - low) * i / (n - 1) for i in range(n)]
    axes.plot(grid, [_safe_f(evaluate, (w,)) for w in grid], label="f")
    axes.plot(
        ws,
        [r[2] for r in rows],
        color="tab:red",
        marker="o",
        markersize=3,
        linewidth=0.8,
        label="iterates",
    )
    axes.set_xlabel(_symbol(name))
    axes.set_ylabel("$f$")
    axes.legend()
