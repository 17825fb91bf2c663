"""The point where the certificate's witnesses (and the document's worked example) meet.

``load_module`` imports generated source text as a module object; ``check_point`` draws the
parameters, inputs and targets every witness is evaluated at, away from ReLU-like kinks.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import numpy as np

from symbackprop.functions import X as X_SYMBOL
from symbackprop.graph import SymbolicNetwork
from symbackprop.primitives import NUMPY_HELPERS
from symbackprop.printing import numpy_code

FD_STEP = 1e-4  # the finite-difference step; check points keep kinks farther than this


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


def _activation_functions(net: SymbolicNetwork) -> list[Callable[[np.ndarray], np.ndarray]]:
    """Each hidden layer's activation as a NumPy function, printed and compiled once."""
    functions = []
    for act in net.activations[:-1]:
        code, helpers = numpy_code(act.expr, {X_SYMBOL: "x"})
        namespace: dict = {"numpy": np}
        for helper in helpers:
            exec(NUMPY_HELPERS[helper], namespace)  # our own helper source
        # printed from a validated expression, never from user text
        functions.append(eval(f"lambda x: {code}", namespace))
    return functions


def _clear_of_kinks(
    net: SymbolicNetwork, params: dict, X: np.ndarray, activations: list[Callable]
) -> bool:
    values = X
    for index, act in enumerate(net.activations, start=1):
        Z = values @ params[f"W{index}"].T + params[f"b{index}"]
        margin = 8 * FD_STEP * max(1.0, float(np.abs(values).max(initial=0.0)))
        if not act.softmax and float(np.abs(Z).min(initial=np.inf)) < margin:
            return False
        if index < net.depth:
            values = activations[index - 1](Z)
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
    # Biases are random so that every bias path is exercised, and redrawn while a
    # pre-activation sits so close to 0 (where ReLU-like functions kink) that the
    # finite-difference stencil would straddle the kink.
    activations = _activation_functions(net)
    for _ in range(100):
        for key, value in params.items():
            if key.startswith("b"):
                value[...] = rng.normal(0.0, 0.5, size=value.shape)
        if _clear_of_kinks(net, params, X, activations):
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
