"""The teaching parts of the lecture notes, as numbers: the worked example's point, one full
SGD step, the optimizer's first step, a dead ReLU used on purpose, operation counts, and
exercises with answers.

Pure data for the document, which lays it out.  Every number comes from the worked example
(the certificate's check point, ``checkpoint.point`` at batch 1, evaluated by
``exact.evaluate`` in 40 digits) or from one more exact evaluation at parameters made from
it (the stepped ones, or the dead unit's), in 40-digit arithmetic throughout; nothing here
generates or runs the module (the tests check every number against it).

Covered: plain dense stacks (``SymbolicNetwork.plain``), every activation and loss; each
function returns None for other networks.  The cost, counted: ``example_seed`` makes up to
``EXAMPLE_SEEDS`` exact evaluations, ``sgd_step``, ``optimizer_step`` and ``dead_unit`` one
each, ``exercises`` two (none when it is handed the step and the dead unit), and
``operation_counts`` none.  An exact evaluation walks the neuron graph, which
``graph.GRAPH_LIMIT`` bounds (10,000 parameters), so every function here is bounded by
that many parameters; a worked example exists only within it.

Indices: ``Entry.index`` is 0-based into the parameter array (``params["W2"][index]``);
layers, units and the indices in an exercise's ``key`` are 1-based, as in the notes
(``("grad", "W2", 1, 2)`` is w^{(2)}_{12}, ``params["W2"][0, 1]``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache

import mpmath
import numpy as np
import sympy

from symbackprop import exact
from symbackprop.checkpoint import point
from symbackprop.derive import ActivationDerivative, Derivation, Z
from symbackprop.document import decimal
from symbackprop.graph import (
    LOSS,
    SymbolicNetwork,
    activation,
    bias,
    build,
    delta,
    latex_name,
    pre_activation,
    weight,
)
from symbackprop.spec import NetworkSpec

PRECISION = exact.PRECISION  # decimal digits of every number here

# The worked example's point: the first seed below this count at which every unit's error
# delta is non-zero, so that the gradient flows through every layer (a count, never a clock).
EXAMPLE_SEEDS = 32


# --- the worked example ------------------------------------------------------------------


@dataclass(frozen=True)
class WorkedExample:
    """One sample's forward and backward pass, evaluated exactly (40 digits) on the graph."""

    params: dict[str, np.ndarray]
    x: np.ndarray
    y: np.ndarray
    values: dict[sympy.Symbol, sympy.Float]  # every node and input of the neuron graph
    adjoints: dict[sympy.Symbol, sympy.Float]  # d loss / d symbol, per sample (no l2)
    loss: float  # with the l2 term
    gradients: dict[str, np.ndarray]  # with the l2 term
    seed: int = 0  # the check point's seed


def silent_units(derivation: Derivation, example: WorkedExample) -> int:
    """How many dense units of the example pass no error back (delta exactly 0)."""
    dead = 0
    for layer in derivation.network.flat:
        if layer.kind != "dense":
            continue
        for i in range(1, layer.units + 1):
            if example.adjoints.get(pre_activation(layer.index, i), 0) == 0:
                dead += 1
    return dead


def example_seed(derivation: Derivation) -> int:
    """The first seed in [0, EXAMPLE_SEEDS) whose example has no unit without error; else the
    seed with the fewest (the first of them)."""
    best, fewest = 0, None
    for seed in range(EXAMPLE_SEEDS):
        dead = silent_units(derivation, evaluate_example(derivation, seed))
        if dead == 0:
            return seed
        if fewest is None or dead < fewest:
            best, fewest = seed, dead
    return best


def worked_example(derivation: Derivation, seed: int | None = None) -> WorkedExample:
    """The worked example at ``seed``, by default ``example_seed``'s (see there)."""
    return evaluate_example(derivation, example_seed(derivation) if seed is None else seed)


@lru_cache(maxsize=256)
def evaluate_example(derivation: Derivation, seed: int) -> WorkedExample:
    """Parameters and data as the certificate's check point (batch 1), evaluated exactly.

    The point is ``checkpoint.point`` (the module's ``init_params(seed)`` as
    ``symbackprop.initialize`` computes it, with the certificate's bias draw); the numbers
    are ``exact.evaluate``'s, the certificate's own exact evaluation of the neuron-level graph.
    Nothing here generates or runs the module.
    """
    net = derivation.network
    params, X_, Y_ = point(net, batch=1, seed=seed)
    result = exact.evaluate(net, params, X_, Y_)
    adjoints = dict(result.adjoints[0])
    adjoints.update(result.shared)
    return WorkedExample(
        params,
        X_[0],
        Y_[0],
        dict(result.values[0]),
        adjoints,
        result.loss,
        result.gradients,
        seed,
    )


# --- exact arithmetic ----------------------------------------------------------------------


def _exact(value: float) -> sympy.Float:
    """A float64's exact value (hyperparameters are the floats the module holds)."""
    return sympy.Float(float(value), PRECISION)


def _mp(value: object) -> mpmath.mpf:
    """A 40-digit number as mpmath's; call it under ``mpmath.workdps(PRECISION)``, which
    keeps a SymPy Float's binary value as it is."""
    if isinstance(value, sympy.Float):
        return mpmath.mpf(value._mpf_)
    return mpmath.mpf(sympy.Float(value, PRECISION)._mpf_)


def _float(value: mpmath.mpf) -> sympy.Float:
    return sympy.Float(value, PRECISION)


@lru_cache(maxsize=64)
def _entries(net: SymbolicNetwork) -> tuple[tuple[str, tuple[int, ...], sympy.Symbol, bool], ...]:
    """(key, 0-based index, symbol, is a weight) of every parameter entry, in network order."""
    weights = set(net.weight_keys)
    out = []
    for key, symbols in net.parameters().items():
        layer = net.flat[int(key[1:]) - 1]
        shape = (layer.units, layer.fan_in) if key in weights else (layer.units,)
        for n, symbol in enumerate(symbols):
            index = tuple(int(k) for k in np.unravel_index(n, shape))
            out.append((key, index, symbol, key in weights))
    return tuple(out)


def _by_name(numbers: Mapping[sympy.Symbol, object]) -> dict[str, object]:
    """The same numbers keyed by symbol name: a lookup then needs no SymPy comparison."""
    return {symbol.name: value for symbol, value in numbers.items()}


def _gradients(
    net: SymbolicNetwork, example: object
) -> Iterator[tuple[str, tuple[int, ...], sympy.Symbol, mpmath.mpf, mpmath.mpf]]:
    """(key, index, symbol, value, dL/dtheta) of every entry in 40 digits, under workdps:
    the gradient is the sample's adjoint, plus l2 * w for a weight (as the module has it)."""
    l2 = _mp(_exact(net.spec.l2))
    values, adjoints = _by_name(example.values), _by_name(example.adjoints)
    for key, index, symbol, is_weight in _entries(net):
        value = _mp(values[symbol.name])
        g = _mp(adjoints[symbol.name])
        if is_weight and l2:
            g += l2 * value
        yield key, index, symbol, value, g


def _loss(net: SymbolicNetwork, values: Mapping) -> sympy.Float:
    """L = the sample's loss plus (l2 / 2) * sum of w^2, in 40 digits."""
    with mpmath.workdps(PRECISION):
        total = _mp(values[LOSS])
        if net.spec.l2:
            named = _by_name(values)
            squares = mpmath.fsum(
                _mp(named[s.name]) ** 2 for _, _, s, is_weight in _entries(net) if is_weight
            )
            total += _mp(_exact(net.spec.l2)) / 2 * squares
        return _float(total)


def _evaluate_at(net: SymbolicNetwork, params: dict, example: object) -> exact.ExactEvaluation:
    """The example's sample at other parameters, exactly."""
    return exact.evaluate(net, params, np.asarray(example.x)[None], np.asarray(example.y)[None])


def _array(net: SymbolicNetwork, example: object, values: dict) -> dict[str, np.ndarray]:
    """float64 parameter arrays from 40-digit values by (key, index), the rest the example's."""
    params = {key: np.array(value, dtype=np.float64) for key, value in example.params.items()}
    for (key, index), value in values.items():
        params[key][index] = float(value)
    return params


# --- one SGD step --------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One parameter entry in one SGD step: after = before - lr * gradient (40 digits)."""

    key: str  # "W2"
    index: tuple[int, ...]  # 0-based, into params[key]
    symbol: sympy.Symbol  # graph.weight(2, 1, 2)
    before: sympy.Float
    gradient: sympy.Float  # dL/dtheta, with the l2 term for a weight
    after: sympy.Float


@dataclass(frozen=True)
class Step:
    """One full SGD step of every parameter at the example point, and the loss around it.

    ``params`` are the after-values as float64 arrays (the module's numbers), at which
    ``loss_after`` is evaluated exactly on the same sample.
    """

    lr: sympy.Float
    l2: sympy.Float
    entries: tuple[Entry, ...]
    loss_before: sympy.Float  # L, with the l2 term
    loss_after: sympy.Float
    first_order: sympy.Float  # lr * (the sum of every gradient entry squared): the decrease
    params: dict[str, np.ndarray]  # to first order in lr

    def entry(self, key: str, *index: int) -> Entry:
        """The entry of params[key][index] (0-based)."""
        for e in self.entries:
            if e.key == key and e.index == index:
                return e
        raise KeyError((key, index))


def sgd_step(derivation: Derivation, example: WorkedExample) -> Step | None:
    """``theta <- theta - lr * dL/dtheta`` for every parameter, as the module's ``train_step``
    does it (lr from the spec's ``train.lr``; the l2 term's ``l2 * w`` is in each weight's
    gradient), and the loss of the same sample before and after.  One exact evaluation.
    None for a network that is not a plain dense stack."""
    net = derivation.network
    if not net.plain:
        return None
    lr = _exact(net.spec.train.lr)
    entries, after = [], {}
    squares = []
    with mpmath.workdps(PRECISION):
        rate = _mp(lr)
        for key, index, symbol, before, g in _gradients(net, example):
            new = before - rate * g
            after[key, index] = new
            squares.append(g * g)
            entries.append(Entry(key, index, symbol, _float(before), _float(g), _float(new)))
        first_order = rate * mpmath.fsum(squares)
    params = _array(net, example, after)
    result = _evaluate_at(net, params, example)
    return Step(
        lr,
        _exact(net.spec.l2),
        tuple(entries),
        _loss(net, example.values),
        _loss(net, result.values[0]),
        _float(first_order),
        params,
    )


# --- the optimizer's first step ----------------------------------------------------------------


@dataclass(frozen=True)
class OptimizerEntry:
    """One parameter entry in the optimizer's first step (40 digits).

    momentum: ``velocity = momentum * 0 + g``, ``update = lr * velocity`` (so the first step
    is SGD's).  adam: ``m = (1 - beta1) g``, ``v = (1 - beta2) g^2``, ``m_hat = m / (1 -
    beta1)``, ``v_hat = v / (1 - beta2)``, ``update = lr * m_hat / (sqrt(v_hat) + eps)``.
    ``after = before - update``.
    """

    key: str
    index: tuple[int, ...]  # 0-based
    symbol: sympy.Symbol
    before: sympy.Float
    gradient: sympy.Float
    velocity: sympy.Float | None  # momentum
    m: sympy.Float | None  # adam
    v: sympy.Float | None
    m_hat: sympy.Float | None
    v_hat: sympy.Float | None
    update: sympy.Float
    after: sympy.Float


@dataclass(frozen=True)
class OptimizerStep:
    """The first update of the spec's optimizer at the example point, as the module's ``fit``
    makes it (its first mini-batch being the example's one sample), and the loss after it."""

    optimizer: str  # "momentum" or "adam"
    lr: sympy.Float
    momentum: sympy.Float | None  # momentum only
    beta1: sympy.Float | None  # adam only
    beta2: sympy.Float | None
    eps: sympy.Float | None
    entries: tuple[OptimizerEntry, ...]
    loss_before: sympy.Float
    loss_after: sympy.Float
    params: dict[str, np.ndarray]  # the after-values as float64

    def entry(self, key: str, *index: int) -> OptimizerEntry:
        """The entry of params[key][index] (0-based)."""
        for e in self.entries:
            if e.key == key and e.index == index:
                return e
        raise KeyError((key, index))


def optimizer_step(derivation: Derivation, example: WorkedExample) -> OptimizerStep | None:
    """The first step of ``train.optimizer`` when it is momentum or Adam (torch.optim's
    definitions, the module's ``_optimizer``: momentum's velocity starts at 0, Adam's moments
    at 0 with bias correction at step 1; the gradient includes ``l2 * w``), and the loss
    after it.  One exact evaluation.  None for sgd and for a network that is not plain."""
    net = derivation.network
    train = net.spec.train
    if not net.plain or train.optimizer not in ("momentum", "adam"):
        return None
    lr = _exact(train.lr)
    adam = train.optimizer == "adam"
    mu = None if adam else _exact(train.momentum)
    beta1, beta2, eps = (_exact(train.beta1), _exact(train.beta2), _exact(train.eps))
    entries, after = [], {}
    with mpmath.workdps(PRECISION):
        rate, b1, b2, tiny = _mp(lr), _mp(beta1), _mp(beta2), _mp(eps)
        for key, index, symbol, before, g in _gradients(net, example):
            if adam:
                m, v = (1 - b1) * g, (1 - b2) * g * g
                m_hat, v_hat = m / (1 - b1), v / (1 - b2)
                update = rate * m_hat / (mpmath.sqrt(v_hat) + tiny)
                moments = tuple(_float(q) for q in (m, v, m_hat, v_hat))
                velocity = None
            else:
                velocity = _mp(mu) * 0 + g
                update = rate * velocity
                moments = (None, None, None, None)
                velocity = _float(velocity)
            new = before - update
            after[key, index] = new
            entries.append(
                OptimizerEntry(
                    key,
                    index,
                    symbol,
                    _float(before),
                    _float(g),
                    velocity,
                    *moments,
                    _float(update),
                    _float(new),
                )
            )
    params = _array(net, example, after)
    result = _evaluate_at(net, params, example)
    return OptimizerStep(
        train.optimizer,
        lr,
        mu,
        beta1 if adam else None,
        beta2 if adam else None,
        eps if adam else None,
        tuple(entries),
        _loss(net, example.values),
        _loss(net, result.values[0]),
        params,
    )


# --- a dead ReLU -----------------------------------------------------------------------------

_NEGATIVE = (sympy.Rational(-1, 2), sympy.Integer(-1), sympy.Rational(-7, 3))
_POSITIVE = (sympy.Rational(1, 2), sympy.Integer(1), sympy.Rational(7, 3))


def relu_slope(ad: ActivationDerivative) -> sympy.Rational | None:
    """The slope c when f is ReLU-like, f(z) = c z for z < 0 and z for z > 0 with 0 <= c < 1
    (ReLU: c = 0, leaky ReLU: its slope, a custom Max(c*x, x)); else None.

    Decided on f itself: a few points first, then SymPy for every z < 0 and z > 0.
    """
    f, prime = ad.f, ad.derivative
    slopes = {prime.xreplace({Z: z}) for z in _NEGATIVE}
    if len(slopes) != 1:
        return None
    (c,) = slopes
    if not (c.is_Rational and 0 <= c < 1):
        return None
    if any(f.xreplace({Z: z}) != c * z for z in _NEGATIVE):
        return None
    if any(f.xreplace({Z: z}) != z or prime.xreplace({Z: z}) != 1 for z in _POSITIVE):
        return None
    t = sympy.Symbol("t", positive=True)
    rules = (
        (f.xreplace({Z: -t}), -c * t),
        (prime.xreplace({Z: -t}), c),
        (f.xreplace({Z: t}), t),
        (prime.xreplace({Z: t}), sympy.Integer(1)),
    )
    if any(sympy.simplify(left - right) != 0 for left, right in rules):
        return None
    return c


@dataclass(frozen=True)
class DeadUnit:
    """Unit ``unit`` of layer ``layer`` pushed below 0 on purpose, and what its error does.

    The bias becomes the integer ``-ceil(s + 1/2)``, s the unit's weighted input sum
    (``z - b`` at the example point), so that ``z = s + bias`` lies in (-3/2, -1/2].  The
    numbers are an exact evaluation at that point (``params``): ``a = c z`` and ``delta =
    c (W^T delta)_i`` with c the slope (0 for ReLU, so both are 0).  ``weight_gradients``
    are dL/dw of the unit's incoming weights (with l2 * w), ``error_gradients`` their
    data part delta_i a_j (0 for ReLU), ``outgoing`` dl/dw^{(l+1)}_{ki} = delta^{(l+1)}_k a_i
    of the weights leaving it (no l2; 0 for ReLU).  The zero counts are of the gradient's
    data part, the sample loss's dl/dtheta of every parameter entry (the l2 term's l2 * w
    does not depend on the data and is not counted).
    """

    layer: int  # 1-based
    unit: int  # 1-based
    slope: sympy.Rational  # f'(z) for z < 0
    weighted_sum: sympy.Float  # s = sum_j w_ij a_j
    bias_before: sympy.Float
    bias: sympy.Float  # an integer
    z_before: sympy.Float
    delta_before: sympy.Float  # the unit's error at the example point (not 0)
    z: sympy.Float
    a: sympy.Float
    delta: sympy.Float
    weight_gradients: tuple[sympy.Float, ...]  # j = 1 .. fan-in
    error_gradients: tuple[sympy.Float, ...]
    bias_gradient: sympy.Float
    outgoing: tuple[sympy.Float, ...]  # k = 1 .. units of layer + 1
    zero_before: int  # gradient entries (data part) exactly 0 at the example point
    zero_after: int  # ... at the dead unit's point
    became_zero: int  # entries 0 now that were not before
    total: int  # every parameter entry, P
    loss: sympy.Float  # L at the dead unit's point
    params: dict[str, np.ndarray]


def dead_layer(derivation: Derivation) -> tuple[int, sympy.Rational] | None:
    """(the first hidden layer with a ReLU-like activation, its slope), or None."""
    net = derivation.network
    if not net.plain:
        return None
    for index in range(1, net.depth):  # hidden layers only
        ad = derivation.layers[index - 1]
        if ad is None or ad.activation.softmax:
            continue
        c = relu_slope(ad)
        if c is not None:
            return index, c
    return None


def dead_unit(
    derivation: Derivation, example: WorkedExample, unit: int | None = None
) -> DeadUnit | None:
    """The dead-ReLU lesson at one unit of the first hidden layer with a ReLU-like
    activation (``relu_slope``); see ``DeadUnit``.  ``unit`` (1-based) defaults to the first
    unit that is active at the example point (z > 0) and passes an error back.  One exact
    evaluation.  None when the network is not plain, has no such layer (no hidden layer, or
    only smooth activations), or no such unit."""
    found = dead_layer(derivation)
    if found is None:
        return None
    net = derivation.network
    layer, c = found
    if unit is None:
        active = [
            i
            for i in range(1, net.sizes[layer] + 1)
            if example.values[pre_activation(layer, i)] > 0
            and example.adjoints[pre_activation(layer, i)] != 0
        ]
        if not active:
            return None
        unit = active[0]
    if not 1 <= unit <= net.sizes[layer]:
        raise ValueError(f"unit {unit}: layer {layer} has units 1 to {net.sizes[layer]}")
    b_symbol, z_symbol = bias(layer, unit), pre_activation(layer, unit)
    with mpmath.workdps(PRECISION):
        s = _mp(example.values[z_symbol]) - _mp(example.values[b_symbol])
        shifted = -int(mpmath.ceil(s + mpmath.mpf(1) / 2))
    params = {key: np.array(value, dtype=np.float64) for key, value in example.params.items()}
    params[f"b{layer}"][unit - 1] = float(shifted)
    result = _evaluate_at(net, params, example)
    values, adjoints = result.values[0], dict(result.adjoints[0])
    adjoints.update(result.shared)
    z = values[z_symbol]
    if not z < 0:
        raise RuntimeError(f"dead unit: z{layer}_{unit} = {z} at bias {shifted}, expected < 0")
    fan_in, fan_out = net.sizes[layer - 1], net.sizes[layer + 1]
    l2 = _exact(net.spec.l2)
    with mpmath.workdps(PRECISION):
        incoming = [weight(layer, unit, j) for j in range(1, fan_in + 1)]
        errors = tuple(_float(_mp(adjoints[w])) for w in incoming)
        grads = tuple(_float(_mp(adjoints[w]) + _mp(l2) * _mp(values[w])) for w in incoming)
    outgoing = tuple(adjoints[weight(layer + 1, k, unit)] for k in range(1, fan_out + 1))
    names = [s.name for _, _, s, _ in _entries(net)]
    was, now = _by_name(example.adjoints), _by_name(adjoints)
    before = {name for name in names if was[name] == 0}
    after = {name for name in names if now[name] == 0}
    return DeadUnit(
        layer,
        unit,
        c,
        _float(s),
        example.values[b_symbol],
        _exact(shifted),
        example.values[z_symbol],
        example.adjoints[z_symbol],
        z,
        values[activation(layer, unit)],
        adjoints[z_symbol],
        grads,
        errors,
        adjoints[b_symbol],
        outgoing,
        len(before),
        len(after),
        len(after - before),
        len(names),
        _loss(net, values),
        params,
    )


# --- operation counts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """Multiplications of one sample's backpropagation and of its naive alternatives.

    With n_0 inputs, n_l units in layer l and L layers (each multiplication comes with its
    addition: a multiply-add):

    - ``forward``: sum over l of n_l n_{l-1}, the products w_ij a_j of every W^{(l)} a^{(l-1)}
      (the bias additions and the activations are not counted);
    - ``backward_recursion``: sum over l = 2..L of n_l n_{l-1}, the products of every
      W^{(l)T} delta^{(l)};
    - ``backward_hadamard``: sum over l = 1..L-1 of n_l, the products by f'(z^{(l)}) of the
      recursion's elementwise product;
    - ``backward_gradients``: sum over l of n_l n_{l-1}, the products delta_i a_j of every
      dL/dW^{(l)} = delta^{(l)} a^{(l-1)T} (dL/db^{(l)} = delta^{(l)} costs none; the output
      error delta^{(L)} is not counted);
    - ``parameters``: P, every weight and bias;
    - ``finite_difference``: (P + 1) forward passes, one-sided differences (the unperturbed
      pass and one per parameter), (P + 1) * ``forward``;
    - ``path_terms``: the product terms of every parameter's derivative written out as a
      sum over paths: for each parameter, the number of paths in the neuron graph from its
      unit's z^{(l)}_i to the loss (z^{(l)}_i -> a^{(l)}_i -> every z^{(l+1)}_k -> ... ->
      a^{(L)} -> loss; a softmax output joins each z^{(L)}_k to every a^{(L)}_m).  Each
      term is a product of at least two factors, so this is a lower bound on the
      multiplications of that method.
    """

    sizes: tuple[int, ...]
    softmax: bool
    parameters: int
    forward: int
    backward_recursion: int
    backward_hadamard: int
    backward_gradients: int
    finite_difference: int
    path_terms: int

    @property
    def backward(self) -> int:
        """One backward pass: the recursion, its elementwise products and the gradients."""
        return self.backward_recursion + self.backward_hadamard + self.backward_gradients

    @property
    def backprop(self) -> int:
        """One forward and one backward pass: the whole gradient."""
        return self.forward + self.backward

    @property
    def finite_difference_ratio(self) -> float:
        return self.finite_difference / self.backprop

    @property
    def path_ratio(self) -> float:
        return self.path_terms / self.backprop


def operation_counts(spec: NetworkSpec) -> Counts | None:
    """``Counts`` of a plain dense stack (see there); None for another network."""
    if not spec.plain:
        return None
    sizes = spec.sizes
    depth = len(sizes) - 1
    softmax = build(spec).output.softmax
    products = [sizes[n] * sizes[n - 1] for n in range(1, depth + 1)]
    parameters = sum(products) + sum(sizes[1:])
    forward = sum(products)
    paths = [0] * (depth + 1)  # paths[n]: from one z^{(n)}_i to the loss
    paths[depth] = sizes[depth] if softmax else 1
    for n in range(depth - 1, 0, -1):
        paths[n] = sizes[n + 1] * paths[n + 1]
    terms = sum((products[n - 1] + sizes[n]) * paths[n] for n in range(1, depth + 1))
    return Counts(
        sizes=tuple(sizes),
        softmax=softmax,
        parameters=parameters,
        forward=forward,
        backward_recursion=sum(products[1:]),
        backward_hadamard=sum(sizes[1:depth]),
        backward_gradients=forward,
        finite_difference=(parameters + 1) * forward,
        path_terms=terms,
    )


# --- exercises ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exercise:
    """A question and its answer (Markdown with inline $...$ math), and the number checked.

    ``key`` names it (1-based indices, as in the notes):
    ``("grad", "W2", i, j)``: dL/dw^{(2)}_{ij}, the module's ``gradients(...)["W2"][i-1, j-1]``;
    ``("delta", l, i)``: delta^{(l)}_i, at batch 1 the module's ``gradients(...)["b<l>"][i-1]``;
    ``("dead", "b<l>", i)``: dL/db^{(l)}_i at the dead unit's point (``DeadUnit.params``);
    ``("loss_after",)``: the loss after one SGD step (``Step.params``);
    ``("entries", "W<l>")``: how many entries dL/dW^{(l)} has.
    """

    question: str
    answer: str
    key: tuple
    value: object  # a sympy.Float, or an int for a count


def _number(value: object) -> str:
    """The document's four significant digits (``document.decimal``); -0 printed as 0."""
    number = float(value)
    return "0" if number == 0 else decimal(number)


def _operand(value: object) -> str:
    """A number as a factor: bracketed when negative (plain brackets, so that a line of
    inline mathematics may break inside a sum)."""
    text = _number(value)
    return f"({text})" if text.startswith("-") else text


def _partial(symbol: sympy.Symbol, of: str = "L") -> str:
    """d of / d symbol, inline: with a slash."""
    return rf"\partial {of} / \partial {latex_name(symbol)}"


def _eq(derivation: Derivation, key: str) -> str:
    return f"({derivation.number(key)})" if derivation.has(key) else ""


def _listed(items: list[str]) -> str:
    """a; a and b; a, b and c."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _nonzero(value: object) -> bool:
    return value != 0


def _exercise_gradient(d: Derivation, ex: WorkedExample) -> Exercise:
    """(a) dL/dw^{(l)}_{ij} = delta^{(l)}_i a^{(l-1)}_j (+ l2 w), l = 2 (1 without a hidden
    layer): the first unit i whose error is not 0, and j = 2 (or the first j after it, then
    before it, whose activation is not 0)."""
    net = d.network
    layer = 2 if net.depth >= 2 else 1
    fan_in = net.sizes[layer - 1]
    rows = [
        i for i in range(1, net.sizes[layer] + 1) if _nonzero(ex.adjoints[pre_activation(layer, i)])
    ]
    columns = list(range(min(2, fan_in), fan_in + 1)) + list(range(1, min(2, fan_in)))
    columns = [j for j in columns if _nonzero(ex.values[activation(layer - 1, j)])]
    i = rows[0] if rows else 1
    j = columns[0] if columns else min(2, fan_in)
    w, dl, a = weight(layer, i, j), delta(layer, i), activation(layer - 1, j)
    dv, av = ex.adjoints[pre_activation(layer, i)], ex.values[a]
    with mpmath.workdps(PRECISION):
        g = _mp(ex.adjoints[w]) + _mp(_exact(net.spec.l2)) * _mp(ex.values[w])
        g = _float(g)
    given = f"${latex_name(dl)} = {_number(dv)}$ and ${latex_name(a)} = {_number(av)}$"
    question = f"At the worked example's point, {given}. Compute ${_partial(w)}$."
    product = rf"{latex_name(dl)} {latex_name(a)}"
    numbers = rf"{_operand(dv)} \cdot {_operand(av)}"
    if net.spec.l2:
        question += (
            f" The loss has the $\\ell_2$ term with $\\lambda = {_number(net.spec.l2)}$, and "
            f"${latex_name(w)} = {_number(ex.values[w])}$."
        )
        product += rf" + \lambda {latex_name(w)}"
        numbers += rf" + {_operand(net.spec.l2)} \cdot {_operand(ex.values[w])}"
    answer = (
        f"${_partial(w)} = {product} = {numbers} = {_number(g)}$, by equation "
        f"{_eq(d, 'grad.W')}: the error of the unit the weight feeds times the activation "
        "it multiplies."
    )
    return Exercise(question, answer, ("grad", f"W{layer}", i, j), g)


def _exercise_delta(d: Derivation, ex: WorkedExample) -> Exercise | None:
    """(b) delta^{(L-1)}_i from the output errors by the recursion: the last unit i whose
    error is not 0.  None without a hidden layer."""
    net = d.network
    if net.depth < 2:
        return None
    top, layer = net.depth, net.depth - 1
    alive = [
        i for i in range(net.sizes[layer], 0, -1) if _nonzero(ex.adjoints[pre_activation(layer, i)])
    ]
    i = alive[0] if alive else net.sizes[layer]
    ad = d.layers[layer - 1]
    z = ex.values[pre_activation(layer, i)]
    ks = range(1, net.sizes[top] + 1)
    deltas = [ex.adjoints[pre_activation(top, k)] for k in ks]
    weights = [ex.values[weight(top, k, i)] for k in ks]
    value = ex.adjoints[pre_activation(layer, i)]
    with mpmath.workdps(PRECISION):
        prime = _mp(ad.derivative.xreplace({Z: z}).evalf(PRECISION))
        total = mpmath.fsum(_mp(w) * _mp(e) for w, e in zip(weights, deltas, strict=True))
        if abs(total * prime - _mp(value)) > mpmath.mpf(10) ** -25 * max(1, abs(_mp(value))):
            raise RuntimeError(f"exercise: the recursion gives {total * prime}, not {value}")
    errors = [
        f"${latex_name(delta(top, k))} = {_number(e)}$" for k, e in zip(ks, deltas, strict=True)
    ]
    links = [
        f"${latex_name(weight(top, k, i))} = {_number(w)}$"
        for k, w in zip(ks, weights, strict=True)
    ]
    one = len(ks) == 1
    eq_f = _eq(d, f"activation.{ad.activation.name}")
    slope = (
        f"its activation's derivative $f'$ is equation {eq_f}"
        if eq_f
        else f"its activation has $f'(z) = {sympy.latex(ad.derivative)}$"
    )
    zname = latex_name(pre_activation(layer, i))
    question = (
        f"The output {'error' if one else 'errors'} of the worked example "
        f"{'is' if one else 'are'} {_listed(errors)}, and the "
        f"{'weight' if one else 'weights'} from unit {i} of layer {layer} to "
        f"{'it' if one else 'them'} {'is' if one else 'are'} {_listed(links)}. The unit's "
        f"pre-activation is ${zname} = {_number(z)}$, and {slope}. Compute "
        f"${latex_name(delta(layer, i))}$ by the recursion {_eq(d, 'delta.hidden')}."
    )
    terms = " + ".join(rf"{latex_name(weight(top, k, i))} {latex_name(delta(top, k))}" for k in ks)
    numbers = " + ".join(
        rf"{_operand(w)} \cdot {_operand(e)}" for w, e in zip(weights, deltas, strict=True)
    )
    if not one:
        terms, numbers = f"({terms})", f"({numbers})"
    answer = (
        f"${latex_name(delta(layer, i))} = {terms} \\, f'({zname}) = {numbers} \\cdot "
        f"{_operand(float(prime))} = {_number(value)}$: the output "
        f"{'error' if one else 'errors'} sent back along the unit's outgoing "
        f"{'weight' if one else 'weights'}, times the slope of its activation at "
        f"${zname}$."
    )
    return Exercise(question, answer, ("delta", layer, i), value)


def _exercise_dead(d: Derivation, dead: DeadUnit) -> Exercise:
    layer, i = dead.layer, dead.unit
    b, z = latex_name(bias(layer, i)), latex_name(pre_activation(layer, i))
    dl, a = latex_name(delta(layer, i)), latex_name(activation(layer, i))
    sign = "-" if dead.bias < 0 else "+"
    old = -dead.bias_before
    total = (
        f"{_number(dead.z_before)} {'-' if old < 0 else '+'} {_number(abs(old))} "
        f"{sign} {_number(abs(dead.bias))}"
    )
    question = (
        f"In the worked example, set ${b} = {_number(dead.bias)}$ (it was "
        f"${_number(dead.bias_before)}$), so that ${z} = {total} = {_number(dead.z)} < 0$, and "
        "leave every other parameter as it is. What is "
        f"${_partial(bias(layer, i))}$ now, and what happens to the gradients of the weights "
        f"into and out of unit {i} of layer {layer}?"
    )
    if dead.slope == 0:
        into = _partial(weight(layer, i, 1), r"\ell")
        out = _partial(weight(layer + 1, 1, i), r"\ell")
        l2 = (
            r" (the $\ell_2$ term still adds $\lambda w$ to each weight's gradient)"
            if d.network.spec.l2
            else ""
        )
        answer = (
            f"$0$. For $z < 0$ the activation is $0$ and so is its derivative, so ${a} = 0$ "
            f"and ${dl} = (\\ldots) \\cdot 0 = 0$, whatever the errors above it: "
            f"${_partial(bias(layer, i))} = {dl} = 0$, every incoming weight's "
            f"${into} = {dl} {latex_name(activation(layer - 1, 1))} = 0$, and every outgoing "
            f"weight's ${out} = {latex_name(delta(layer + 1, 1))} {a} = 0${l2}. Of the "
            f"{dead.total} gradient entries, {dead.became_zero} become $0$"
            + (
                f" ({dead.zero_before} were $0$ already, from units inactive at this point)"
                if dead.zero_before
                else ""
            )
            + f". Before, ${dl} = {_number(dead.delta_before)}$. A unit whose $z$ is negative "
            "for every sample never changes again: a dead ReLU."
        )
    else:
        answer = (
            f"${_number(dead.delta)}$, not $0$: for $z < 0$ the activation's slope is "
            f"$c = {sympy.latex(dead.slope)}$, so ${a} = c\\,{z} = {_number(dead.a)}$ and "
            f"${dl} = (\\ldots) \\cdot c = {_number(dead.delta)}$. The error still flows, "
            "scaled by $c$: the unit keeps learning, only more slowly, which is why the "
            "leaky variant exists."
        )
    return Exercise(question, answer, ("dead", f"b{layer}", i), dead.delta)


def _exercise_loss(d: Derivation, step: Step) -> Exercise:
    before, after = step.loss_before, step.loss_after
    question = (
        "Take one gradient-descent step from the worked example's point, every parameter "
        f"$\\theta \\leftarrow \\theta - \\eta \\, \\partial L / \\partial \\theta$ with "
        f"$\\eta = {_number(step.lr)}$ (equation {_eq(d, 'update')}), and evaluate the loss "
        "on the same sample again. What is it?"
    )
    fell = after < before
    answer = (
        f"$L = {_number(after)}$. It {'falls' if fell else 'rises'} from ${_number(before)}$; "
        "to first order in $\\eta$ a step against the gradient lowers the loss by "
        f"$\\eta \\lVert \\nabla L \\rVert^2 = {_number(step.first_order)}$"
        + ("." if fell else ", but this step is too long: the curvature outweighs that.")
    )
    return Exercise(question, answer, ("loss_after",), after)


def _exercise_shape(d: Derivation) -> Exercise:
    net = d.network
    layer = net.depth
    rows, cols = net.sizes[layer], net.sizes[layer - 1]
    W = f"W^{{({layer})}}"
    a = "x" if layer == 1 else f"a^{{({layer - 1})}}"
    question = f"What shape has $\\partial L / \\partial {W}$, and how many entries?"
    entry = (
        rf"\partial L / \partial w^{{({layer})}}_{{ij}} = "
        rf"\delta^{{({layer})}}_{{i}} {a}_{{j}}"
    )
    if net.spec.l2:
        entry += rf" + \lambda w^{{({layer})}}_{{ij}}"
    answer = (
        f"${rows} \\times {cols}$, the shape of ${W}$: one entry per weight, ${rows} \\cdot "
        f"{cols} = {rows * cols}$ in all. Entry $(i, j)$ is ${entry}$, so the matrix is the "
        f"outer product $\\delta^{{({layer})}} \\left({a}\\right)^{{\\top}}$ of a column of "
        f"{rows} and a row of {cols}" + (r" (plus $\lambda W$)" if net.spec.l2 else "") + "."
    )
    return Exercise(question, answer, ("entries", f"W{layer}"), rows * cols)


def exercises(
    derivation: Derivation,
    example: WorkedExample,
    step: Step | None = None,
    dead: DeadUnit | None = None,
) -> tuple[Exercise, ...] | None:
    """Three to five exercises with answers at the example point; see ``Exercise``.

    (a) a weight's gradient; (b) a hidden unit's error from the output errors (when there
    is a hidden layer); (c) the dead-ReLU lesson (when ``dead_unit`` finds a layer); (d) the
    loss after one SGD step; (e) the shape of the output layer's weight gradient.  ``step``
    and ``dead`` are ``sgd_step``'s and ``dead_unit``'s when the caller has them (otherwise
    computed here: two exact evaluations).  None for a network that is not plain.
    """
    if not derivation.network.plain:
        return None
    step = sgd_step(derivation, example) if step is None else step
    dead = dead_unit(derivation, example) if dead is None else dead
    out = [_exercise_gradient(derivation, example)]
    hidden = _exercise_delta(derivation, example)
    if hidden is not None:
        out.append(hidden)
    if dead is not None:
        out.append(_exercise_dead(derivation, dead))
    out.append(_exercise_loss(derivation, step))
    out.append(_exercise_shape(derivation))
    return tuple(out)
