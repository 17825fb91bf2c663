"""Exact evaluation of a network: the loss, its gradients and every intermediate, in 40 digits.

One routine, ``evaluate``, for the certificate's exact witness (``symbackprop.verify``) and
the document's worked example (``symbackprop.render``).  It walks the neuron-level graph of
``symbackprop.graph`` (independent of the generated code): each node's value in 40-digit
arithmetic, then reverse accumulation with each node's local partials from ``sympy.diff``
(smooth primitives spelled out in exp/log first, so SymPy's own rules differentiate them).
Without batch norm it walks the graph of one sample once per sample; with batch norm, the
whole batch's graph once.  Dropout masks are data: the same keep masks the module draws
(``symbackprop.layers.draw_masks``), as mask values 0 or 1/(1 - rate).

``exact_expanded`` differentiates the fully expanded composite instead: a teaching view and
a cross-check of ``evaluate`` for tiny networks, not a witness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import mpmath
import numpy as np
import sympy

from symbackprop import layers
from symbackprop.graph import (
    LOSS,
    MEAN_LOSS,
    Node,
    SymbolicNetwork,
    activation,
    pre_activation,
    split_sample,
)
from symbackprop.primitives import to_textbook_form
from symbackprop.printing import floatify

PRECISION = 40  # decimal digits

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
) -> dict[sympy.Symbol, sympy.Float]:
    """The data symbols of one sample (its ``row`` of the batch): inputs, targets, masks."""
    values = {s: _exact(v) for s, v in zip(net.inputs(sample), x, strict=True)}
    values.update({s: _exact(v) for s, v in zip(net.targets(sample), y, strict=True)})
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
        for s, partial in partials:
            adjoint[s] = adjoint.get(s, 0) + bar * _evaluate(partial, numbers, values)
    return numbers, adjoint


def evaluate(
    net: SymbolicNetwork,
    params: Mapping,
    X: np.ndarray,
    Y: np.ndarray,
    masks: Masks | None = None,
) -> ExactEvaluation:
    """The batch (X, Y) at ``params`` in training mode, exactly; see ``ExactEvaluation``.

    ``masks``: the keep mask of every dropout layer with rate > 0 (``layers.draw_masks``);
    raises ValueError when one is missing or has the wrong shape.
    """
    X, Y = np.asarray(X), np.asarray(Y)
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
            plan = _plan(net.batch_graph(batch))
            numbers, adjoint = _run(plan, values, MEAN_LOSS)
            loss = numbers[MEAN_LOSS]
            # d(mean)/d(.) -> d(sum)/d(.): times the batch
            summed = {s: v * batch for s, v in adjoint.items()}
            per_sample, adjoints, shared = _split(values, summed, batch)
            totals.update({s: summed.get(s, mpmath.mpf(0)) for s in shared_symbols})
        else:
            plan = _plan(net.neuron_graph)
            loss, shared = mpmath.mpf(0), {}
            for row in range(batch):
                values = dict(theta)
                values.update(data_values(net, X[row], Y[row], masks, row))
                numbers, adjoint = _run(plan, values, LOSS)
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
        if layer.kind == "dense":
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
