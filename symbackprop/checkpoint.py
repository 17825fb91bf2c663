"""The point where the certificate's witnesses (and the document's worked example) meet.

``load_module`` imports generated source text as a module object; ``check_point`` draws the
parameters, inputs and targets every witness is evaluated at, away from ReLU-like kinks.
``Probe`` is an independent NumPy forward pass (the activations printed from their SymPy
expressions): the scale of every layer's inputs, and the side of every kink each
pre-activation (and each custom loss term) sits on, so that the finite-difference witness can
choose steps whose stencil never crosses a kink.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import numpy as np
import sympy

from symbackprop.functions import YHAT
from symbackprop.functions import X as X_SYMBOL
from symbackprop.functions import Y as Y_SYMBOL
from symbackprop.graph import SymbolicNetwork
from symbackprop.primitives import NUMPY_HELPERS, elu, leaky_relu, relu, step
from symbackprop.printing import numpy_code

FD_STEP = 1e-4  # the finite-difference step; check points keep kinks farther than this
REDRAW_ATTEMPTS = 100  # bias redraws at most, while a pre-activation sits on a kink
REDRAW_BUDGET = 20_000_000  # sample x parameter products spent on redraws at most

# functions whose derivative (or second derivative: elu) jumps where their argument is 0
_KINKED = (sympy.Abs, sympy.sign, sympy.Heaviside, step, relu, leaky_relu, elu)


def load_module(source: str, name: str = "generated_model") -> types.ModuleType:
    """Import generated source text as a fresh module object (never written to disk)."""
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)  # our own generated code
    return module


def _targets(net: SymbolicNetwork, y: np.ndarray) -> np.ndarray:
    """Labels (n,) or targets (n, outputs) as float64 targets (n, outputs)."""
    y = np.asarray(y)
    outputs = net.sizes[-1]
    if y.ndim == 2:
        return y.astype(np.float64)
    if net.loss.classification and outputs > 1:
        return np.eye(outputs)[y.astype(np.int64)]
    return y.astype(np.float64).reshape(-1, 1)


def _compile(expr: sympy.Expr, names: dict[sympy.Symbol, str]) -> Callable[..., np.ndarray]:
    """A NumPy function of ``names``' values, printed from a validated expression."""
    code, helpers = numpy_code(expr, names)
    namespace: dict = {"numpy": np}
    for helper in helpers:
        exec(NUMPY_HELPERS[helper], namespace)  # our own helper source
    # printed from a validated expression, never from user text
    return eval(f"lambda {', '.join(names.values())}: {code}", namespace)


def kink_indicators(expr: sympy.Expr) -> list[sympy.Expr]:
    """Expressions whose sign changes where ``expr`` (or its derivative) is not smooth.

    The argument of every ReLU-like function, abs and sign; the pairwise differences of the
    arguments of Max and Min; the base of a fractional power (sqrt(u) at u = 0).
    """
    found: list[sympy.Expr] = []
    for sub in sympy.preorder_traversal(expr):
        if isinstance(sub, _KINKED):
            found.append(sub.args[0])
        elif isinstance(sub, (sympy.Max, sympy.Min)):
            args = sub.args
            found += [a - b for i, a in enumerate(args) for b in args[i + 1 :]]
        elif sub.is_Pow and not sub.exp.is_integer:
            found.append(sub.base)
    unique: list[sympy.Expr] = []
    for k in found:
        if k.free_symbols and k not in unique:
            unique.append(k)
    return unique


class Probe:
    """An independent forward pass of a network, for scales and kink patterns."""

    def __init__(self, net: SymbolicNetwork) -> None:
        self.net = net
        names = {X_SYMBOL: "x"}
        self.activations: list[Callable | None] = [
            None if act.softmax else _compile(act.expr, names) for act in net.activations
        ]
        self.kinks: list[list[Callable]] = [
            [] if act.softmax else [_compile(k, names) for k in kink_indicators(act.expr)]
            for act in net.activations
        ]
        loss_names = {YHAT: "yhat", Y_SYMBOL: "y"}
        self.loss_kinks = [_compile(k, loss_names) for k in kink_indicators(net.loss.expr)]

    @property
    def has_kinks(self) -> bool:
        return bool(self.loss_kinks) or any(self.kinks)

    def layers(self, params: dict, X: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(layer input, pre-activation) of every layer, and the output last as (A, None)."""
        values, out = X, []
        for index in range(1, self.net.depth + 1):
            Z = values @ params[f"W{index}"].T + params[f"b{index}"]
            out.append((values, Z))
            fn = self.activations[index - 1]
            if fn is None:
                shifted = np.exp(Z - Z.max(axis=1, keepdims=True))
                values = shifted / shifted.sum(axis=1, keepdims=True)
            else:
                values = np.broadcast_to(fn(Z), Z.shape)
        out.append((values, None))
        return out

    def input_scales(self, params: dict, X: np.ndarray) -> list[float]:
        """max(1, max |a|) of every layer's input, layer 1 first."""
        with np.errstate(all="ignore"):
            layers = self.layers(params, X)[:-1]
        return [max(1.0, float(np.nanmax(np.abs(a), initial=0.0))) for a, _ in layers]

    def pattern(self, params: dict, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """The side (-1, 0, 1) of every kink for every pre-activation and loss term."""
        with np.errstate(all="ignore"):
            layers = self.layers(params, X)
            signs = []
            for (_, Z), kinks in zip(layers[:-1], self.kinks, strict=True):
                signs += [np.sign(np.broadcast_to(k(Z), Z.shape)).ravel() for k in kinks]
            yhat = layers[-1][0]
            signs += [
                np.sign(np.broadcast_to(k(yhat, Y), Y.shape)).ravel() for k in self.loss_kinks
            ]
        return np.concatenate(signs) if signs else np.zeros(0)


def _clear_of_kinks(net: SymbolicNetwork, params: dict, X: np.ndarray, probe: Probe) -> bool:
    values = X
    for index, act in enumerate(net.activations, start=1):
        Z = values @ params[f"W{index}"].T + params[f"b{index}"]
        margin = 8 * FD_STEP * max(1.0, float(np.abs(values).max(initial=0.0)))
        if not act.softmax and float(np.abs(Z).min(initial=np.inf)) < margin:
            return False
        if index < net.depth:
            values = probe.activations[index - 1](Z)
    return True


def check_point(
    module: types.ModuleType,
    net: SymbolicNetwork,
    batch: int,
    seed: int,
    data: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Parameters, inputs and targets at which every witness is evaluated (float64).

    Parameters are the module's initialisation with random biases (so that every bias path
    is exercised); inputs and targets are random, or the first rows of ``data``.
    """
    # separate streams: data drawn from the initialisation's own stream would copy W1 into X
    data_rng = np.random.default_rng((seed, 1))
    rng = np.random.default_rng((seed, 2))
    params = module.init_params(seed=seed, dtype=np.float64)
    if data is not None:
        X, y = np.array(data[0][:batch], dtype=np.float64), _targets(net, data[1][:batch])
    else:
        X, y = data_rng.normal(0.0, 1.0, size=(batch, net.sizes[0])), None
    # Biases are random so that every bias path is exercised, and redrawn (a bounded number
    # of times) while a pre-activation sits close to 0, where ReLU-like functions kink; the
    # finite-difference witness also chooses its steps so that no stencil crosses a kink.
    probe = Probe(net)
    attempts = min(REDRAW_ATTEMPTS, max(1, REDRAW_BUDGET // max(1, len(X) * net.parameter_count)))
    with np.errstate(all="ignore"):
        for _ in range(attempts):
            for key, value in params.items():
                if key.startswith("b"):
                    value[...] = rng.normal(0.0, 0.5, size=value.shape)
            if _clear_of_kinks(net, params, X, probe):
                break
    if y is not None:
        return params, X, y
    outputs = net.sizes[-1]
    if net.output.softmax and net.loss.classification:
        Y = np.eye(outputs)[data_rng.integers(0, outputs, size=batch)]
    elif net.output.probability:
        Y = data_rng.integers(0, 2, size=(batch, outputs)).astype(np.float64)
    else:
        Y = data_rng.normal(0.0, 1.0, size=(batch, outputs))
    return params, X, Y
