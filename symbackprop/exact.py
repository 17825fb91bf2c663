"""Exact evaluation of a network: the loss, its gradients and every intermediate, in 40 digits.

One routine, ``evaluate``, for the certificate's exact witness (``symbackprop.verify``) and
the document's worked example (``symbackprop.render``).  It walks the neuron-level graph of
``symbackprop.graph`` (independent of the generated code): each node's value in 40-digit
arithmetic, then reverse accumulation with each node's local partials from ``sympy.diff``
(smooth primitives spelled out in exp/log first, so SymPy's own rules differentiate them).
Without batch norm it walks the graph of one sample once per sample; with batch norm, the
whole batch's graph once.  Image inputs are read as flat rows in C order (the graph's x_i);
a max pool's node takes the value and the whole gradient of its window's first maximum.
Dropout masks are data: the same keep masks the module draws
(``symbackprop.layers.draw_masks``), as mask values 0 or 1/(1 - rate).

Two evaluators of that one graph, with the same numbers bit for bit: ``evaluate_reference``
substitutes 40-digit Floats into every node's and partial's SymPy expression and calls
evalf; ``evaluate`` plans the graph once per network and replays exactly those operations
on raw mpmath numbers ("the compiled evaluation" below), about 4 to 20 times faster (the
benchmark times both; ``clear_caches`` makes a run cold).

``exact_expanded`` differentiates the fully expanded composite instead: a teaching view and
a cross-check of ``evaluate`` for tiny networks, not a witness.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property, lru_cache

import mpmath
import numpy as np
import sympy
from mpmath import libmp
from sympy.core.evalf import fastlog
from sympy.core.numbers import mpf_norm

from symbackprop import layers, primitives
from symbackprop.graph import (
    LOSS,
    MEAN_LOSS,
    Node,
    SymbolicNetwork,
    activation,
    bias,
    parameter_symbols,
    pre_activation,
    split_sample,
)
from symbackprop.primitives import LEAKY_SLOPE, to_textbook_form
from symbackprop.printing import floatify

PRECISION = 40  # decimal digits
_PREC = 136  # bits: mpmath's and SymPy's precision for 40 digits (checked below)

Masks = Mapping[int, np.ndarray]  # dropout layer -> keep mask (bool, (batch, units))


@dataclass(frozen=True)
class ExactEvaluation:
    """A batch evaluated exactly; floats are rounded from 40 digits only at the end.

    ``loss`` and ``gradients`` are the module's ``loss`` and ``gradients`` (the mean over
    the batch, plus the l2 term; ``gradients`` over the trainable parameters, as
    ``PARAMETERS``).  ``values[s]`` holds every symbol sample s (0-based) reads or makes, by
    its per-sample name (``graph.activation(3, 1)``, not ``a3_1@2``): parameters, inputs,
    targets, masks and nodes, and the statistics batch norm shares across the batch.
    ``adjoints[s]`` holds the derivative of the batch's summed loss (sum over samples of
    the per-sample loss: no 1/B, no l2) with respect to each per-sample symbol of sample s
    (its inputs, masks and nodes); ``shared`` holds it for the parameters and batch norm's
    statistics.  At batch 1 both are the derivatives of the sample's own loss.
    """

    loss: float
    gradients: dict[str, np.ndarray]
    values: tuple[dict[sympy.Symbol, sympy.Float], ...]
    adjoints: tuple[dict[sympy.Symbol, sympy.Float], ...]
    shared: dict[sympy.Symbol, sympy.Float]


def _exact(value: float) -> sympy.Float:
    return sympy.Float(float(value), PRECISION)


def _exact_fast(value: float) -> sympy.Float:
    """``_exact`` without SymPy's parsing of the arguments: the same Float."""
    value = float(value)
    if not math.isfinite(value):
        return sympy.Float(value, PRECISION)
    return sympy.Float._new(libmp.from_float(value), _PREC, zero=False)


def mask_value(keep: bool, rate: float) -> sympy.Float:
    """A mask entry's value: 1/(1 - rate) when kept, else 0 (the float rate's exact value)."""
    if not keep:
        return sympy.Float(0, PRECISION)
    with mpmath.workdps(PRECISION):
        return sympy.Float(1 / (1 - mpmath.mpf(float(rate))), PRECISION)


def check_masks(net: SymbolicNetwork, masks: Masks | None, batch: int) -> None:
    for layer in net.dropout_layers:
        keep = None if masks is None else masks.get(layer.index)
        if keep is None:
            raise ValueError(
                f"{layer.path}: dropout with rate {layer.layer.rate} needs its keep mask"
            )
        if np.shape(keep) != (batch, layer.units):
            raise ValueError(
                f"{layer.path}: the keep mask has shape {np.shape(keep)}, expected "
                f"{(batch, layer.units)}"
            )


def data_values(
    net: SymbolicNetwork,
    x: np.ndarray,
    y: np.ndarray,
    masks: Masks | None = None,
    row: int = 0,
    sample: int | None = None,
    exact_float: Callable[[float], sympy.Float] = _exact,
) -> dict[sympy.Symbol, sympy.Float]:
    """The data symbols of one sample (its ``row`` of the batch): inputs, targets, masks."""
    values = {s: exact_float(v) for s, v in zip(net.inputs(sample), x, strict=True)}
    values.update({s: exact_float(v) for s, v in zip(net.targets(sample), y, strict=True)})
    rates = {layer.index: layer.layer.rate for layer in net.dropout_layers}
    for index, symbols in net.masks(sample).items():
        keep = np.asarray(masks[index])[row]
        values.update(
            {s: mask_value(bool(k), rates[index]) for s, k in zip(symbols, keep, strict=True)}
        )
    return values


def parameter_values(net: SymbolicNetwork, params: Mapping) -> dict[sympy.Symbol, sympy.Float]:
    values = {}
    for key, symbols in net.parameters().items():
        flat = np.asarray(params[key]).reshape(-1)
        values.update({s: _exact(v) for s, v in zip(symbols, flat, strict=True)})
    return values


def _l2(net: SymbolicNetwork, params: Mapping, grads: dict[str, np.ndarray]) -> float:
    """Adds l2 * W to the weights' gradients; returns the penalty (l2/2) sum W^2."""
    if not net.spec.l2:
        return 0.0
    for key in net.weight_keys:
        grads[key] = grads[key] + net.spec.l2 * params[key]
    return 0.5 * net.spec.l2 * sum(float(np.sum(params[k] ** 2)) for k in net.weight_keys)


# --- local partials ------------------------------------------------------------------------


def _monomial_factors(term: sympy.Expr) -> tuple[sympy.Expr, ...] | None:
    factors = term.args if term.is_Mul else (term,)
    symbols = [f for f in factors if f.is_Symbol]
    if all(f.is_Symbol or f.is_Number for f in factors) and len(set(symbols)) == len(symbols):
        return factors
    return None


def local_partials(expr: sympy.Expr) -> list[tuple[sympy.Symbol, sympy.Expr]]:
    """Each free symbol's partial derivative of one node expression.

    A linear node (a pre-activation, a residual sum, a mean: a sum of products of distinct
    symbols) has its partials read off as coefficients, which is linear in fan-in;
    ``sympy.diff`` once per input is quadratic.  Every other node goes through
    ``sympy.diff``, once per distinct shape of node (its symbols renamed in order).
    """
    terms = expr.args if expr.is_Add else (expr,)
    split = [_monomial_factors(t) for t in terms]
    if all(f is not None for f in split):
        partials: dict[sympy.Symbol, list[sympy.Expr]] = {}
        for factors in split:
            for i, factor in enumerate(factors):
                if factor.is_Symbol:
                    rest = sympy.Mul(*factors[:i], *factors[i + 1 :])
                    partials.setdefault(factor, []).append(rest)
        return [(s, sympy.Add(*partials[s])) for s in sorted(partials, key=str)]
    free = sorted(expr.free_symbols, key=str)
    slots = tuple(sympy.Symbol(f"_node_input{k}", **s.assumptions0) for k, s in enumerate(free))
    shape = expr.xreplace(dict(zip(free, slots, strict=True)))
    back = dict(zip(slots, free, strict=True))
    return [(s, d.xreplace(back)) for s, d in zip(free, _partials(shape, slots), strict=True)]


@lru_cache(maxsize=1024)
def _partials(expr: sympy.Expr, slots: tuple[sympy.Symbol, ...]) -> tuple[sympy.Expr, ...]:
    """d/du of a node in its renamed symbols (SymPy's diff is slow: tens of ms for tanh(u))."""
    return tuple(sympy.diff(expr, u) for u in slots)


# --- evaluation ----------------------------------------------------------------------------


def _evaluate(expr: sympy.Expr, numbers: dict, values: dict) -> mpmath.mpf:
    """One node or partial in high precision; ``numbers`` and ``values`` hold the same point."""
    # most local partials are a single symbol (a weight or an activation) or a number; only
    # nonlinear nodes need SymPy's evaluation
    if expr.is_Symbol:
        return numbers[expr]
    if expr.is_Number:
        return mpmath.mpf(sympy.Float(expr, PRECISION))
    return mpmath.mpf(sympy.Float(expr.xreplace(values).evalf(PRECISION), PRECISION))


Plan = tuple[list, list]


@lru_cache(maxsize=8)
def _plan(nodes: tuple[Node, ...]) -> Plan:
    """Per node (symbol, textbook expression, monomials or None) and its local partials.

    A linear node's monomials are (coefficient, factor symbols): evaluated as a sum of
    products in mpmath instead of SymPy's substitution and evalf of the whole sum.
    """
    forward, local = [], []
    for node in nodes:
        if node.kind == "max":  # a max pool: the first maximum's value and gradient
            forward.append((node.symbol, node.expr, None))
            local.append((node.symbol, ("max", node.expr.args)))
            continue
        expr = to_textbook_form(node.expr)
        if node.kind in ("mu", "mean_loss"):  # (1/n) (x_1 + ... + x_n): distribute the 1/n
            expr = sympy.expand(expr)
        terms = expr.args if expr.is_Add else (expr,)
        split = [_monomial_factors(t) for t in terms]
        monomials = None
        if all(f is not None for f in split):
            monomials = []
            for factors in split:
                numbers = [f for f in factors if f.is_Number]
                coefficient = sympy.Mul(*numbers) if numbers else sympy.Integer(1)
                symbols = tuple(f for f in factors if f.is_Symbol)
                with mpmath.workdps(PRECISION):
                    value = mpmath.mpf(sympy.Float(coefficient, PRECISION))
                monomials.append((value, symbols))
        forward.append((node.symbol, expr, monomials))
        local.append((node.symbol, local_partials(expr)))
    return forward, local


def _run(plan: Plan, values: dict, seed: sympy.Symbol) -> tuple[dict, dict]:
    """Every node's value (into ``values``, as Floats) and the adjoints of ``seed``."""
    forward, local = plan
    numbers = {s: mpmath.mpf(v) for s, v in values.items()}
    for symbol, expr, monomials in forward:
        if monomials is None:
            numbers[symbol] = _evaluate(expr, numbers, values)
        else:
            numbers[symbol] = mpmath.fsum(
                c * mpmath.fprod(numbers[f] for f in factors) for c, factors in monomials
            )
        values[symbol] = sympy.Float(numbers[symbol], PRECISION)
    adjoint = {seed: mpmath.mpf(1)}
    for symbol, partials in reversed(local):
        bar = adjoint.get(symbol)
        if bar is None:
            continue
        if partials[0] == "max":  # the window's first entry equal to the maximum
            first = next(a for a in partials[1] if numbers[a] == numbers[symbol])
            adjoint[first] = adjoint.get(first, 0) + bar * _evaluate(sympy.S.One, numbers, values)
            continue
        for s, partial in partials:
            adjoint[s] = adjoint.get(s, 0) + bar * _evaluate(partial, numbers, values)
    return numbers, adjoint


# --- the compiled evaluation -----------------------------------------------------------------
#
# ``evaluate`` computes what ``evaluate_reference`` computes, bit for bit, without making a
# SymPy object per node.  Each network's graph is planned once (``_program``): every symbol
# gets a slot holding its value as a raw mpmath number (a (sign, mantissa, exponent, bits)
# tuple), and each node one of
# * a dense pre-activation, read from ``Node.products``: sum of rounded products w a, summed
#   exactly and rounded once, which is what ``mpmath.fsum`` of ``mpmath.fprod`` does;
# * another linear node (means, residual sums, dropout, identity): its monomials, the same;
# * a nonlinear node: its expression and local partials as ``local_partials`` gives them,
#   compiled (``_compile``) into closures that redo what SymPy's substitution and evalf do
#   with Floats: Add and Mul fold their arguments left to right in their stored order, each
#   operation rounded to 136 bits; a Number that comes out exactly 0 is SymPy's exact zero;
#   a function of a Float is what SymPy's automatic evalf gives (mpmath at 140 bits,
#   rounded to 136).  Compiled once per shape of expression (the same tree with other
#   symbols).  Anything else (pi, sqrt(2), a function without a rule here) is left to
#   SymPy's own substitution and evalf, as is any point where a rule meets a special case
#   (log of 0, 0 to a negative power, a complex result); and the first point of every
#   compiled shape is also evaluated by SymPy: a shape that differs there is SymPy's from
#   then on.
# The adjoints are accumulated in the reference's order (nodes in reverse, each adjoint a
# running sum rounded at every step), so that they too are the same numbers.

PREC = libmp.dps_to_prec(PRECISION)  # 136 bits: a 40-digit Float's precision
if PREC != _PREC:
    raise ImportError(f"mpmath gives {PREC} bits for {PRECISION} digits, not {_PREC}")
EVALF_PREC = PREC + 4  # the precision SymPy's evalf(40) works at
_RND = libmp.round_nearest
_ZERO = Fraction(0)  # SymPy's exact zero (a Float result of exactly 0 becomes it)
_ONE = Fraction(1)
_fzero, _fone = libmp.fzero, libmp.fone
_mpf_add, _mpf_mul, _mpf_sum = libmp.mpf_add, libmp.mpf_mul, libmp.mpf_sum
_make_mpf = mpmath.mp.make_mpf


_MEMO = 1 << 12  # function values remembered (a softmax's partials take exp of each z often)


class _Fallback(Exception):
    """A compiled expression met a case its rules leave to SymPy (at run time)."""


class _Unsupported(Exception):
    """An expression with something the compiler has no rule for (at compile time)."""


def _mp(q: Fraction) -> tuple:
    """An exact number as the operand of a Float operation (``Number._as_mpf_op``)."""
    return libmp.from_rational(q.numerator, q.denominator, PREC, _RND)


def _is_zero(v: object) -> bool:
    return v == _ZERO if type(v) is Fraction else v == _fzero


def _negative(v: object) -> bool:
    return v < 0 if type(v) is Fraction else bool(v[0]) and v != _fzero


class _Low:
    """A Float constant of fewer bits than the values (batch norm's eps, 53 bits): SymPy
    computes at the larger precision of two operands, so with a value it is an operand
    like any other, but met by exact numbers only it would set the precision itself: that
    is left to SymPy (``_Fallback``)."""

    __slots__ = ("mpf",)

    def __init__(self, mpf: tuple) -> None:
        self.mpf = mpf


def _operand(x: object) -> tuple:
    """An exact number or a constant as the other operand of a value's operation."""
    return _mp(x) if type(x) is Fraction else x.mpf


def _value(x: object) -> object:
    """An argument of a function or a power: a value or an exact number, never a _Low."""
    if type(x) is _Low:
        raise _Fallback
    return x


def _add(a: object, b: object) -> object:
    if type(a) is tuple:
        if type(b) is not tuple:
            b = _operand(b)
    elif type(b) is tuple:
        a = _operand(a)
    elif type(a) is Fraction and type(b) is Fraction:
        return a + b
    else:
        raise _Fallback
    r = _mpf_add(a, b, PREC, _RND)
    return _ZERO if r == _fzero else r


def _mul(a: object, b: object) -> object:
    if type(a) is tuple:
        if type(b) is not tuple:
            b = _operand(b)
    elif type(b) is tuple:
        a = _operand(a)
    elif type(a) is Fraction and type(b) is Fraction:
        return a * b
    else:
        raise _Fallback
    r = _mpf_mul(a, b, PREC, _RND)
    return _ZERO if r == _fzero else r


def _float_result(r: tuple) -> object:
    """A Float result as SymPy keeps it: exact zero for 0, else fallback for inf/nan."""
    if r == _fzero:
        return _ZERO
    if not r[1]:  # mpmath's inf, -inf, nan
        raise _Fallback
    return r


def _neg(v: object) -> object:
    return -v if type(v) is Fraction else libmp.mpf_neg(v)


def _exponent(e: sympy.Number) -> tuple:
    """A constant exponent: (integer or None, positive, its value as a Float operand)."""
    if e.is_Integer:
        return int(e), bool(e.is_positive), None
    value = _mp(Fraction(int(e.p), int(e.q))) if e.is_Rational else e._mpf_
    return None, bool(e.is_positive), value


def _power(base: object, exponent: tuple) -> object:
    """``Pow(base, e)`` for a constant exponent, as ``Pow.__new__`` and ``Float._eval_power``."""
    n, positive, value = exponent
    if _is_zero(base):
        if positive:
            return _ZERO
        raise _Fallback  # 0**-n is zoo
    if type(base) is Fraction:
        if n is not None:
            return base**n
        raise _Fallback  # an exact number to a fractional power may be irrational
    if n is not None:
        if base[0]:  # a negative base: (-b)**n, negated for odd n
            r = libmp.mpf_pow_int(libmp.mpf_neg(base), n, PREC, _RND)
            return _float_result(r if n % 2 == 0 else libmp.mpf_neg(r))
        return _float_result(libmp.mpf_pow_int(base, n, PREC, _RND))
    if base[0]:
        raise _Fallback  # complex
    return _float_result(libmp.mpf_pow(base, value, PREC, _RND))


def _norm(r: tuple) -> tuple:
    """evalf's result at 140 bits as the Float it returns (``Float._new(re, 136)``)."""
    return _float_result(mpf_norm(r, PREC))


def _by_mpmath(name: str) -> Callable[[tuple], tuple]:
    """A function that SymPy evaluates by ``Function._eval_evalf``: mpmath at 140 bits."""
    fn = getattr(mpmath, name)

    @lru_cache(maxsize=_MEMO)
    def value(x: tuple) -> tuple:
        with mpmath.workprec(EVALF_PREC):
            return _norm(fn(_make_mpf(x))._mpf_)

    return value


@lru_cache(maxsize=_MEMO)
def _exp(x: object) -> object:
    if _is_zero(x):
        return _ONE
    if type(x) is Fraction:
        raise _Fallback
    return _norm(libmp.mpf_exp(x, EVALF_PREC))  # evalf_pow of E**x, rounded down


@lru_cache(maxsize=_MEMO)
def _log(x: object) -> object:
    if type(x) is Fraction:
        if x == 1:
            return _ZERO
        raise _Fallback
    if _negative(x) or x == _fzero:
        raise _Fallback
    r = libmp.mpf_log(x, EVALF_PREC, _RND)
    if r != _fzero and EVALF_PREC - fastlog(r) > EVALF_PREC + 10:
        raise _Fallback  # evalf_log recomputes log(1 + (x - 1)) there
    return _norm(r)


def _odd(name: str) -> Callable[[object], object]:
    """tanh, sinh, erf: f(0) = 0, f(-x) = -f(x), else mpmath (their ``eval``)."""
    positive = _by_mpmath(name)

    def value(x: object) -> object:
        if _is_zero(x):
            return _ZERO
        if type(x) is Fraction:
            raise _Fallback
        if x[0]:
            return _neg(positive(libmp.mpf_neg(x)))
        return positive(x)

    return value


def _cosh(x: object) -> object:
    if _is_zero(x):
        return _ONE
    if type(x) is Fraction:
        raise _Fallback
    return _by_mpmath("cosh")(libmp.mpf_abs(x))


def _abs(x: object) -> object:
    return abs(x) if type(x) is Fraction else libmp.mpf_abs(x)


def _relu(x: object) -> object:
    return _ZERO if _negative(x) else x


def _step(x: object) -> object:
    return _ONE if not _is_zero(x) and not _negative(x) else _ZERO


def _leaky_relu(x: object) -> object:
    return _mul(Fraction(LEAKY_SLOPE.p, LEAKY_SLOPE.q), x) if _negative(x) else x


def _elu(x: object) -> object:
    return _add(_exp(x), -_ONE) if _negative(x) else x


def _compare(a: object, b: object) -> int:
    a = a if type(a) is tuple else _operand(a)
    b = b if type(b) is tuple else _operand(b)
    return libmp.mpf_cmp(a, b)


def _extreme(sign: int) -> Callable[..., object]:
    def value(*args: object) -> object:
        best = args[0]
        for a in args[1:]:
            if _compare(a, best) * sign > 0:
                best = a
        return best

    return value


_FUNCTIONS: dict[type, Callable] = {
    sympy.exp: _exp,
    sympy.log: _log,
    sympy.tanh: _odd("tanh"),
    sympy.sinh: _odd("sinh"),
    sympy.erf: _odd("erf"),
    sympy.cosh: _cosh,
    sympy.Abs: _abs,
    sympy.Max: _extreme(1),
    sympy.Min: _extreme(-1),
    primitives.relu: _relu,
    primitives.step: _step,
    primitives.leaky_relu: _leaky_relu,
    primitives.elu: _elu,
}


def _shape(expr: sympy.Expr, order: dict[sympy.Symbol, int]) -> tuple:
    """The tree of ``expr`` with each symbol replaced by its place of first appearance:
    two expressions of one shape are evaluated by the same operations in the same order."""
    if expr.is_Symbol:
        return ("s", order.setdefault(expr, len(order)))
    if not expr.args:
        return ("n", type(expr), expr, getattr(expr, "_prec", None))
    return (expr.func, *(_shape(a, order) for a in expr.args))


def _compile(expr: sympy.Expr, order: dict[sympy.Symbol, int]) -> Callable[[list], object]:
    """A closure of the argument values (in ``order``) that evaluates ``expr`` as SymPy's
    substitution and evalf do; raises _Unsupported for what it has no rule for."""
    if expr.is_Symbol:
        k = order[expr]
        return lambda v: v[k]
    if expr.is_Rational:
        q = Fraction(int(expr.p), int(expr.q))
        return lambda v: q
    if expr.is_Float:
        if expr._prec > PREC:
            raise _Unsupported
        f = _float_result(expr._mpf_)
        if expr._prec < PREC and f != _ZERO:
            f = _Low(f)
        return lambda v: f
    if not expr.free_symbols:
        raise _Unsupported  # pi, E, sqrt(2): SymPy keeps them exact until evalf
    if expr.is_Add or expr.is_Mul:
        parts = [_compile(a, order) for a in expr.args]
        op = _add if expr.is_Add else _mul
        first, rest = parts[0], parts[1:]

        def fold(v: list) -> object:
            acc = first(v)
            if type(acc) is not Fraction and acc == _fzero:
                acc = _ZERO
            for part in rest:
                acc = op(acc, part(v))
            return acc

        return fold
    if expr.is_Pow:
        base, e = expr.args
        if not (e.is_Rational or e.is_Float):
            raise _Unsupported
        if e.is_Float and e._prec > PREC:
            raise _Unsupported
        inner, exponent = _compile(base, order), _exponent(e)
        return lambda v: _power(_value(inner(v)), exponent)
    fn = _FUNCTIONS.get(expr.func)
    if fn is None:
        raise _Unsupported
    args = [_compile(a, order) for a in expr.args]
    if len(args) == 1:
        (only,) = args
        return lambda v: fn(_value(only(v)))
    return lambda v: fn(*(a(v) for a in args))  # Max, Min: they compare a _Low too


def _finish(value: object) -> tuple:
    """The final evalf(40) and Float(., 40) of a result."""
    if type(value) is _Low:
        raise _Fallback
    if type(value) is Fraction:
        if value == 0:
            return _fzero
        exact = libmp.from_rational(value.numerator, value.denominator, EVALF_PREC)
        return mpf_norm(exact, PREC)
    return value


class _Shape:
    """One compiled shape: its closure (None: SymPy's) and the rules it uses; ``disabled``
    when its value differed from SymPy's at its check (never, in the tests)."""

    __slots__ = ("fn", "rules", "disabled")

    def __init__(self, fn: Callable | None, rules: frozenset) -> None:
        self.fn, self.rules, self.disabled = fn, rules, False


_SHAPES: dict[tuple, _Shape] = {}
_CHECKED: set[frozenset] = set()  # the sets of rules checked against SymPy at one point
_SHAPES_LIMIT = 4096


def _rules(shape: tuple) -> frozenset:
    """The operations and kinds of constant a shape uses (what its check stands for)."""
    found = set()
    stack = [shape]
    while stack:
        node = stack.pop()
        if node[0] == "s":
            continue
        if node[0] == "n":
            found.add(node[1])
            continue
        found.add(node[0])
        stack.extend(node[1:])
    return frozenset(found)


def _sympy_value(expr: sympy.Expr, values: dict) -> tuple:
    """The reference's ``_evaluate`` of an expression, as a raw number."""
    return mpmath.mpf(sympy.Float(expr.xreplace(values).evalf(PRECISION), PRECISION))._mpf_


class _Expression:
    """One node's expression or local partial: compiled, or SymPy's substitution."""

    __slots__ = ("expr", "slots", "shape", "nodes")

    def __init__(
        self, expr: sympy.Expr, slot: Callable[[sympy.Symbol], int], first_node: int
    ) -> None:
        order: dict[sympy.Symbol, int] = {}
        key = _shape(expr, order)
        shape = _SHAPES.get(key)
        if shape is None:
            try:
                fn = _compile(expr, order)
            except _Unsupported:
                fn = None
            if len(_SHAPES) >= _SHAPES_LIMIT:
                _SHAPES.clear()
            shape = _SHAPES[key] = _Shape(fn, _rules(key))
        self.expr, self.shape = expr, shape
        self.slots = [slot(s) for s in sorted(order, key=order.get)]
        # a node's value is Float(mpf, 40), which is SymPy's exact 0 when it is 0 (a dead
        # ReLU); a parameter's or data's 0.0 stays a Float of 136 bits
        self.nodes = [i for i, k in enumerate(self.slots) if k >= first_node]

    def value(self, v: list, floats: Callable[[sympy.Expr], dict]) -> tuple:
        shape = self.shape
        if shape.fn is None:
            return _sympy_value(self.expr, floats(self.expr))
        args = [v[k] for k in self.slots]
        for i in self.nodes:
            if args[i] == _fzero:
                args[i] = _ZERO
        try:
            got = _finish(shape.fn(args))
        except _Fallback:
            return _sympy_value(self.expr, floats(self.expr))
        if shape.rules in _CHECKED:
            return got
        # the first point of a new set of rules: SymPy's value too, and a shape whose
        # value differs is SymPy's from then on
        reference = _sympy_value(self.expr, floats(self.expr))
        if got == reference:
            _CHECKED.add(shape.rules)
        else:
            shape.fn, shape.disabled = None, True
        return reference


class _Program:
    """A graph planned for the compiled evaluation: slots, forward and backward steps.

    Slots: the trainable parameters first (``net.parameters()``'s order, so that a weight
    needs no symbol), then the data symbols of each sample (inputs, targets, masks), then
    the nodes.
    """

    def __init__(self, net: SymbolicNetwork, batch: int | None) -> None:
        nodes = net.neuron_graph if batch is None else net.batch_graph(batch)
        self.net, self.batch = net, batch
        self.seed_symbol = LOSS if batch is None else MEAN_LOSS
        self.keys: list[tuple[str, tuple[int, ...]]] = []
        self.slot: dict[sympy.Symbol, int] = {}
        self.symbols: list[sympy.Symbol | None] = []  # None: a weight (``param_symbols``)
        weights: dict[int, tuple[int, tuple]] = {}  # layer -> (first slot, W's shape)
        for layer in net.flat:
            named = parameter_symbols(layer, weights=False)
            for key, shape in layers.parameters(layer).items():
                self.keys.append((key, tuple(shape)))
                if key == f"W{layer.index}":
                    weights[layer.index] = (len(self.symbols), shape)
                    self.symbols.extend([None] * math.prod(shape))
                else:
                    for s in named[key]:
                        self._slot(s)
        self.parameter_count = len(self.symbols)
        for sample in (None,) if batch is None else range(1, batch + 1):
            for s in net.inputs(sample) + net.targets(sample):
                self._slot(s)
            for group in net.masks(sample).values():
                for s in group:
                    self._slot(s)
        self.data_count = len(self.symbols)
        self.forward: list[tuple] = []
        self.backward: list[tuple] = []
        names: list[list[tuple[str, int]]] = []  # per node: its partials' (name, slot)
        for node in nodes:
            out = self._slot(node.symbol)
            if node.dense is not None:
                n, i, inputs, has_bias, *conv = node.dense
                first, shape = weights[n]
                if conv:  # a conv output element: its taps' kernel entries, the bias b_f
                    f, taps = conv[0]
                    strides = [math.prod(shape[k + 1 :]) for k in range(4)]
                    at = [
                        first + sum((t - 1) * st for t, st in zip(tap, strides, strict=True))
                        for tap in taps
                    ]
                    labels = ["w{}_{}_{}_{}_{}".format(n, *tap) for tap in taps]
                    row_bias = f
                else:
                    row = first + (i - 1) * shape[1]
                    at = [row + j for j in range(len(inputs))]
                    labels = [f"w{n}_{i}_{j + 1}" for j in range(len(inputs))]
                    row_bias = i
                pairs = [(w, self.slot[x]) for w, x in zip(at, inputs, strict=True)]
                bias_slot = self.slot[bias(n, row_bias)] if has_bias else None
                self.forward.append(("dense", out, pairs, bias_slot))
                self.backward.append(("dense", out, pairs, bias_slot))
                touched = list(zip(labels, at, strict=True))
                touched += [(x.name, self.slot[x]) for x in inputs]
                if has_bias:
                    touched.append((f"b{n}_{row_bias}", bias_slot))
                names.append(sorted(touched))
                continue
            if node.kind == "max":  # a max pool: the value and gradient of the first maximum
                window = [self._known(a) for a in node.expr.args]
                self.forward.append(("max", out, window))
                self.backward.append(("max", out, window))
                names.append([(a.name, k) for a, k in zip(node.expr.args, window, strict=True)])
                continue
            expr = to_textbook_form(node.expr)
            if node.kind in ("mu", "mean_loss"):
                expr = sympy.expand(expr)
            monomials = _monomials(expr)
            if monomials is not None:
                terms = [(c, tuple(self._known(f) for f in fs)) for c, fs in monomials]
                self.forward.append(("linear", out, terms))
            else:
                self.forward.append(("expr", out, _Expression(expr, self._known, self.data_count)))
            steps = []
            partials = local_partials(expr)
            for s, partial in partials:
                target = self._known(s)
                if partial.is_Symbol:
                    steps.append((target, "slot", self._known(partial)))
                elif partial.is_Number:
                    with mpmath.workdps(PRECISION):
                        value = mpmath.mpf(sympy.Float(partial, PRECISION))._mpf_
                    steps.append((target, "const", value))
                else:
                    steps.append(
                        (target, "expr", _Expression(partial, self._known, self.data_count))
                    )
            self.backward.append(("steps", out, steps))
            names.append([(s.name, self.slot[s]) for s, _ in partials])
        self.backward.reverse()
        # the reference's adjoint dict: the seed, then each symbol as it is first reached
        self.seed = self.slot[self.seed_symbol]
        touched_slots = {self.seed}
        self.order = [self.seed]
        for node, node_names in zip(reversed(nodes), reversed(names), strict=True):
            if self.slot[node.symbol] in touched_slots:
                for _, k in node_names:
                    if k not in touched_slots:
                        touched_slots.add(k)
                        self.order.append(k)

    def _slot(self, symbol: sympy.Symbol) -> int:
        k = self.slot.get(symbol)
        if k is None:
            k = self.slot[symbol] = len(self.symbols)
            self.symbols.append(symbol)
        return k

    def _known(self, symbol: sympy.Symbol) -> int:
        """The slot of a symbol an expression reads: made before it (never a weight)."""
        k = self.slot.get(symbol)
        if k is None:
            raise ValueError(f"{symbol}: read by a node before it is made")
        return k

    @cached_property
    def param_symbols(self) -> list[sympy.Symbol]:
        return [s for group in self.net.parameters().values() for s in group]

    def symbol(self, k: int) -> sympy.Symbol:
        return self.param_symbols[k] if k < self.parameter_count else self.symbols[k]

    def theta(self, params: Mapping) -> list[tuple]:
        """The parameters' values by slot (a float64's exact value)."""
        out: list[tuple] = []
        for key, _ in self.keys:
            out.extend(libmp.from_float(v) for v in np.asarray(params[key]).reshape(-1).tolist())
        return out

    def float_of(self, k: int, v: list, data: dict) -> sympy.Expr:
        """Slot k's value as the reference's ``values`` holds it."""
        if k < self.parameter_count:
            return sympy.Float._new(v[k], PREC, zero=False)  # ``_exact`` of the float
        if k < self.data_count:
            return data[self.symbols[k]]
        return sympy.Float._new(v[k], PREC)  # a node's Float(mpf, 40): 0 is exact

    def values(self, v: list, data: dict) -> dict:
        """The reference's ``values``: parameters, data, then nodes, as Floats."""
        out = {s: self.float_of(k, v, data) for k, s in enumerate(self.param_symbols)}
        out.update(data)
        for k in range(self.data_count, len(self.symbols)):
            out[self.symbols[k]] = sympy.Float._new(v[k], PREC)
        return out

    def run(self, theta: list, data: dict) -> tuple[list, list]:
        """Every slot's value and the adjoints of the seed, as raw numbers by slot (None:
        not reached); ``data`` holds the data symbols' Floats."""
        n = len(self.symbols)
        v: list = theta + [None] * (n - len(theta))
        slot = self.slot
        for s, value in data.items():
            v[slot[s]] = value._mpf_

        def floats(expr: sympy.Expr) -> dict:
            return {s: self.float_of(slot[s], v, data) for s in expr.free_symbols}

        mul, add, total = _mpf_mul, _mpf_add, _mpf_sum
        prec, rnd = PREC, _RND
        for step in self.forward:
            kind = step[0]
            if kind == "dense":
                terms = [mul(v[w], v[x], prec, rnd) for w, x in step[2]]
                if step[3] is not None:
                    terms.append(v[step[3]])
                v[step[1]] = total(terms, prec, rnd)
            elif kind == "max":
                v[step[1]] = v[_first_maximum(v, step[2])]
            elif kind == "linear":
                terms = []
                for c, factors in step[2]:
                    product = _fone
                    for f in factors:
                        product = mul(product, v[f], prec, rnd)
                    terms.append(mul(c, product, prec, rnd))
                v[step[1]] = total(terms, prec, rnd)
            else:
                v[step[1]] = step[2].value(v, floats)
        adjoint: list = [None] * n
        adjoint[self.seed] = _fone
        for step in self.backward:
            bar = adjoint[step[1]]
            if bar is None:
                continue
            if step[0] == "max":
                target = _first_maximum(v, step[2])
                p = mul(bar, _fone, prec, rnd)
                old = adjoint[target]
                adjoint[target] = p if old is None else add(old, p, prec, rnd)
                continue
            if step[0] == "dense":
                for w, x in step[2]:
                    p = mul(bar, v[x], prec, rnd)
                    old = adjoint[w]
                    adjoint[w] = p if old is None else add(old, p, prec, rnd)
                    p = mul(bar, v[w], prec, rnd)
                    old = adjoint[x]
                    adjoint[x] = p if old is None else add(old, p, prec, rnd)
                if step[3] is not None:
                    b = step[3]
                    p = mul(bar, _fone, prec, rnd)
                    old = adjoint[b]
                    adjoint[b] = p if old is None else add(old, p, prec, rnd)
                continue
            for target, how, what in step[2]:
                if how == "slot":
                    partial = v[what]
                elif how == "const":
                    partial = what
                else:
                    partial = what.value(v, floats)
                p = mul(bar, partial, prec, rnd)
                old = adjoint[target]
                adjoint[target] = p if old is None else add(old, p, prec, rnd)
        return v, adjoint


def _first_maximum(v: list, window: list[int]) -> int:
    """The slot of a window's first maximum (row-major), as PyTorch's max pool."""
    best = window[0]
    for k in window[1:]:
        if libmp.mpf_cmp(v[k], v[best]) > 0:
            best = k
    return best


class _Lazy(Mapping):
    """A dict made on first use (the worked example reads these; the certificate does not)."""

    def __init__(self, make: Callable[[], dict]) -> None:
        self._make: Callable[[], dict] | None = make
        self._dict: dict | None = None

    def _items(self) -> dict:
        if self._dict is None:
            self._dict, self._make = self._make(), None
        return self._dict

    def __getitem__(self, key: object) -> object:
        return self._items()[key]

    def __iter__(self) -> Iterator:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return repr(self._items())


def _name(symbol: sympy.Symbol) -> str:
    return symbol.name  # str(symbol) for a Symbol, without the printer


def _monomials(expr: sympy.Expr) -> list[tuple[tuple, tuple]] | None:
    """A linear node's (coefficient, factor symbols), as ``_plan`` has them; None if not."""
    terms = expr.args if expr.is_Add else (expr,)
    split = [_monomial_factors(t) for t in terms]
    if not all(f is not None for f in split):
        return None
    out = []
    for factors in split:
        numbers = [f for f in factors if f.is_Number]
        coefficient = sympy.Mul(*numbers) if numbers else sympy.Integer(1)
        with mpmath.workdps(PRECISION):
            value = mpmath.mpf(sympy.Float(coefficient, PRECISION))._mpf_
        out.append((value, tuple(f for f in factors if f.is_Symbol)))
    return out


@lru_cache(maxsize=8)
def _program(net: SymbolicNetwork, batch: int | None) -> _Program:
    return _Program(net, batch)


def clear_caches() -> None:
    """Forget every plan and compiled shape (for timing a cold evaluation)."""
    _program.cache_clear()
    _plan.cache_clear()
    _partials.cache_clear()
    _SHAPES.clear()
    _CHECKED.clear()


def _finite(net: SymbolicNetwork, params: Mapping, X: np.ndarray, Y: np.ndarray) -> bool:
    arrays = [X, Y, *(params[key] for key in net.spec.parameters)]
    return all(bool(np.all(np.isfinite(np.asarray(a, dtype=np.float64)))) for a in arrays)


def evaluate(
    net: SymbolicNetwork,
    params: Mapping,
    X: np.ndarray,
    Y: np.ndarray,
    masks: Masks | None = None,
) -> ExactEvaluation:
    """The batch (X, Y) at ``params`` in training mode, exactly; see ``ExactEvaluation``.

    ``masks``: the keep mask of every dropout layer with rate > 0 (``layers.draw_masks``);
    raises ValueError when one is missing or has the wrong shape.  The same numbers as
    ``evaluate_reference``, bit for bit, from a program compiled once per network (see
    "the compiled evaluation" above); ``values`` and ``shared`` are made on first read.
    """
    X, Y = _rows(X), np.asarray(Y)
    batch = len(X)
    check_masks(net, masks, batch)
    if not _finite(net, params, X, Y):  # inf/nan: SymPy's own special values
        return evaluate_reference(net, params, X, Y, masks)
    with mpmath.workdps(PRECISION):
        if net.couples_batch:
            program = _program(net, batch)
            theta = program.theta(params)
            data: dict = {}
            for row in range(batch):
                data.update(data_values(net, X[row], Y[row], masks, row, row + 1, _exact_fast))
            v, adj = program.run(theta, data)
            values = program.values(v, data)
            loss = _make_mpf(v[program.seed])
            summed = {
                program.symbol(k): _make_mpf(adj[k]) * batch
                for k in program.order
                if adj[k] is not None
            }
            per_sample, adjoints, shared = _split(values, summed, batch)
            zero = mpmath.mpf(0)
            totals = [summed.get(s, zero) for s in program.param_symbols]
        else:
            program = _program(net, None)
            theta = program.theta(params)
            count = program.parameter_count
            raw = [_fzero] * count
            loss = mpmath.mpf(0)
            per_sample, adjoints = [], []
            for row in range(batch):
                data = data_values(net, X[row], Y[row], masks, row, None, _exact_fast)
                v, adj = program.run(theta, data)
                loss += _make_mpf(v[program.seed])
                for k in range(count):
                    a = adj[k]
                    if a is not None:
                        raw[k] = _mpf_add(raw[k], a, PREC, _RND)
                per_sample.append(_Lazy(functools.partial(program.values, v, data)))
                adjoints.append(
                    {
                        program.symbols[k]: sympy.Float._new(adj[k], PREC)
                        for k in program.order
                        if k >= count and adj[k] is not None
                    }
                )
            shared = _Lazy(functools.partial(_shared, program, raw))
            totals = [_make_mpf(t) for t in raw]
            loss = loss / batch
        grads, start = {}, 0
        for key, shape in program.keys:
            size = math.prod(shape)
            column = [float(t / batch) for t in totals[start : start + size]]
            grads[key] = np.array(column).reshape(np.shape(params[key]))
            start += size
        mean = float(loss)
    mean += _l2(net, params, grads)
    return ExactEvaluation(mean, grads, tuple(per_sample), tuple(adjoints), shared)


def _shared(program: _Program, raw: list) -> dict:
    return {s: sympy.Float._new(t, PREC) for s, t in zip(program.param_symbols, raw, strict=True)}


def evaluate_reference(
    net: SymbolicNetwork,
    params: Mapping,
    X: np.ndarray,
    Y: np.ndarray,
    masks: Masks | None = None,
) -> ExactEvaluation:
    """``evaluate`` by SymPy's own substitution and evalf of every node and partial.

    The independent reference of the compiled evaluation (the tests hold them equal) and
    the benchmark's baseline; linear in parameters too, but about ten times slower.
    """
    return _exact_evaluation(net, params, X, Y, masks, _run_reference)


def _run_reference(net: SymbolicNetwork, batch: int | None, values: dict, seed: sympy.Symbol):
    nodes = net.neuron_graph if batch is None else net.batch_graph(batch)
    return _run(_plan(nodes), values, seed)


def _rows(X: np.ndarray) -> np.ndarray:
    """The inputs as flat rows (an image's (C, H, W) in C order, as the graph's x_i)."""
    X = np.asarray(X)
    return X.reshape(len(X), -1) if X.ndim > 2 else X


def _exact_evaluation(net, params, X, Y, masks, run) -> ExactEvaluation:
    X, Y = _rows(X), np.asarray(Y)
    batch = len(X)
    check_masks(net, masks, batch)
    theta = parameter_values(net, params)
    symbols = net.parameters()
    shared_symbols = [s for group in symbols.values() for s in group]
    per_sample: list[dict] = []
    adjoints: list[dict] = []
    with mpmath.workdps(PRECISION):
        totals = {s: mpmath.mpf(0) for s in shared_symbols}
        if net.couples_batch:
            values = dict(theta)
            for row in range(batch):
                values.update(data_values(net, X[row], Y[row], masks, row, row + 1))
            numbers, adjoint = run(net, batch, values, MEAN_LOSS)
            loss = numbers[MEAN_LOSS]
            # d(mean)/d(.) -> d(sum)/d(.): times the batch
            summed = {s: v * batch for s, v in adjoint.items()}
            per_sample, adjoints, shared = _split(values, summed, batch)
            totals.update({s: summed.get(s, mpmath.mpf(0)) for s in shared_symbols})
        else:
            loss, shared = mpmath.mpf(0), {}
            for row in range(batch):
                values = dict(theta)
                values.update(data_values(net, X[row], Y[row], masks, row))
                numbers, adjoint = run(net, None, values, LOSS)
                loss += numbers[LOSS]
                for s in shared_symbols:
                    totals[s] += adjoint.get(s, 0)
                per_sample.append(values)
                adjoints.append(
                    {s: sympy.Float(v, PRECISION) for s, v in adjoint.items() if s not in theta}
                )
            shared = {s: sympy.Float(v, PRECISION) for s, v in totals.items()}
            loss = loss / batch
        grads = {
            key: np.array([float(totals[s] / batch) for s in group]).reshape(np.shape(params[key]))
            for key, group in symbols.items()
        }
        mean = float(loss)
    mean += _l2(net, params, grads)
    return ExactEvaluation(mean, grads, tuple(per_sample), tuple(adjoints), shared)


def _split(values: dict, adjoint: dict, batch: int) -> tuple[list, list, dict]:
    """A batch graph's values and adjoints by sample, under their per-sample names."""
    common = {s: v for s, v in values.items() if split_sample(s)[1] is None}
    per_sample = [dict(common) for _ in range(batch)]
    adjoints: list[dict] = [{} for _ in range(batch)]
    shared = {}
    for s, v in values.items():
        plain, sample = split_sample(s)
        if sample is not None:
            per_sample[sample - 1][plain] = v
    for s, v in adjoint.items():
        plain, sample = split_sample(s)
        if sample is None:
            shared[s] = sympy.Float(v, PRECISION)
        else:
            adjoints[sample - 1][plain] = sympy.Float(v, PRECISION)
    shared.pop(MEAN_LOSS, None)
    return per_sample, adjoints, shared


def deltas(net: SymbolicNetwork, result: ExactEvaluation) -> dict[int, np.ndarray]:
    """Per sample, d(mean loss)/d(node) of every dense layer's pre-activations and every
    normalization's outputs: (batch, units) per layer (what their parameters' gradients sum)."""
    batch = len(result.adjoints)
    out = {}
    for layer in net.flat:
        if layer.kind in ("dense", "conv2d"):
            symbol = pre_activation
        elif layers.parameters(layer):  # a normalization: its parameters act on its output
            symbol = activation
        else:
            continue
        zero = sympy.Float(0)
        out[layer.index] = (
            np.array(
                [
                    [
                        float(adjoint.get(symbol(layer.index, i + 1), zero))
                        for i in range(layer.units)
                    ]
                    for adjoint in result.adjoints
                ]
            )
            / batch
        )
    return out


def loss_and_gradients(
    net: SymbolicNetwork,
    params: Mapping,
    X: np.ndarray,
    Y: np.ndarray,
    masks: Masks | None = None,
) -> tuple[float, dict[str, np.ndarray]]:
    """``evaluate``'s mean loss and gradients (what the module's ``gradients`` returns)."""
    result = evaluate(net, params, X, Y, masks)
    return result.loss, result.gradients


# --- the expanded composite ------------------------------------------------------------------


def exact_expanded(
    net: SymbolicNetwork, params: Mapping, X: np.ndarray, Y: np.ndarray
) -> dict[str, np.ndarray]:
    """SymPy's gradient of the fully expanded composite, evaluated per sample and averaged.

    A teaching view and a cross-check of ``evaluate`` for tiny networks without batch norm
    or dropout (the tests use it), not a witness of the certificate: its derivatives swell
    with depth as well as size (two SiLU layers of 41 parameters took 50 s).
    """
    if net.couples_batch or net.dropout_layers:
        raise ValueError("the expanded composite is for networks without batch norm or dropout")
    # sqrt(2), pi as Floats: exact irrationals kept erf(0.3*sqrt(2)) unevaluated, and evalf of
    # a GELU network's gradient took 1.4 s per entry instead of 0.2 ms
    textbook = to_textbook_form(net.expanded_loss())
    per_sample = floatify(textbook, PRECISION + 10, keep_rationals=True)
    theta = parameter_values(net, params)
    points = [{**theta, **data_values(net, x, y)} for x, y in zip(X, Y, strict=True)]
    grads = {}
    for key, group in net.parameters().items():
        column = []
        for s in group:
            derivative = sympy.diff(per_sample, s)
            values = [float(derivative.xreplace(p).evalf(PRECISION)) for p in points]
            column.append(sum(values) / len(points))
        grads[key] = np.array(column).reshape(np.shape(params[key]))
    _l2(net, params, grads)
    return grads
