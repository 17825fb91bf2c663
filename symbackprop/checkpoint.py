"""The point where the certificate's witnesses (and the document's worked example) meet.

``load_module`` imports generated source text as a module object; ``point`` draws the
parameters, inputs and targets every witness is evaluated at, away from ReLU-like kinks, and
``point_masks`` the dropout keep masks there (the module's own rule, from the generator
``mask_rng(seed)``).  ``Probe`` is an independent NumPy forward pass in training mode over
every layer kind (the activations printed from their SymPy expressions): the scale of the
inputs each parameter entry multiplies, and the side of every kink each dense
pre-activation (and each custom loss term) sits on, so that the finite-difference witness
can choose steps whose stencil never crosses a kink.  The other kinds are smooth: the
normalizations' sqrt(var + eps) has eps > 0, dropout with fixed masks and the residual sum
are linear.  Image inputs are drawn as (batch, C, H, W); a conv2d's pre-activations are
checked for kinks as a dense layer's, a max pool's kink is a change of its window's first
maximum (part of the pattern), average pooling and flatten are linear.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import sympy

from symbackprop import initialize, layers
from symbackprop.functions import YHAT
from symbackprop.functions import X as X_SYMBOL
from symbackprop.functions import Y as Y_SYMBOL
from symbackprop.graph import SymbolicNetwork
from symbackprop.primitives import NUMPY_HELPERS, elu, leaky_relu, relu, step
from symbackprop.printing import numpy_code
from symbackprop.spec import FlatLayer

FD_STEP = 1e-4  # the finite-difference step; check points keep kinks farther than this
REDRAW_ATTEMPTS = 100  # bias redraws at most, while a pre-activation sits on a kink
REDRAW_BUDGET = 20_000_000  # sample x parameter products spent on redraws at most
GAMMA_SPREAD = 0.2  # a check point's gamma is 1 + N(0, 0.2): every gamma path counts
SHIFT_SPREAD = 0.5  # biases and betas are N(0, 0.5)

# functions whose derivative (or second derivative: elu) jumps where their argument is 0
_KINKED = (sympy.Abs, sympy.sign, sympy.Heaviside, step, relu, leaky_relu, elu)

Masks = Mapping[int, np.ndarray]


def load_module(source: str, name: str = "generated_model") -> types.ModuleType:
    """Import generated source text as a fresh module object (never written to disk)."""
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)  # our own generated code
    return module


def mask_rng(seed: int) -> np.random.Generator:
    """The generator the certificate hands the module as ``rng`` (a fresh one per call)."""
    return np.random.default_rng((seed, 3))


def point_masks(net: SymbolicNetwork, seed: int, samples: int) -> dict[int, np.ndarray]:
    """The keep masks the module draws from ``mask_rng(seed)`` for a batch of ``samples``."""
    return layers.draw_masks(net.flat, net.spec.order, mask_rng(seed), samples)


def _targets(net: SymbolicNetwork, y: np.ndarray) -> np.ndarray:
    """Labels (n,) or targets (n, outputs) as float64 targets (n, outputs)."""
    y = np.asarray(y)
    outputs = net.output_layer.units
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


@dataclass(frozen=True)
class Forward:
    """One training-mode forward pass: every layer's output, and what the probes read."""

    outputs: dict[int, np.ndarray]  # layer -> its output (0: the input X)
    pre_activations: dict[int, np.ndarray]  # dense layer -> Z
    normalized: dict[int, np.ndarray]  # a normalization -> x hat (RMS norm: no mean)
    output: np.ndarray  # the network's output
    choices: dict[int, np.ndarray] = field(default_factory=dict)  # max pool -> first argmax


def _softmax(Z: np.ndarray) -> np.ndarray:
    shifted = np.exp(Z - Z.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _normalize(A: np.ndarray, axis: int, eps: float) -> np.ndarray:
    mean = A.mean(axis=axis, keepdims=True)
    var = ((A - mean) ** 2).mean(axis=axis, keepdims=True)
    return (A - mean) / np.sqrt(var + eps)


def image(layer: FlatLayer, A: np.ndarray) -> np.ndarray:
    """A layer's input as (batch, C, H, W) (a flat input's rows in C order)."""
    return np.asarray(A).reshape((len(A), *layer.in_shape))


def patches(layer: FlatLayer, A: np.ndarray) -> np.ndarray:
    """The receptive field of every output position of a conv or pool layer: (batch, C, Ho,
    Wo, kh, kw), zero padding included (a view where no padding is needed)."""
    spec = layer.layer
    (kh, kw), (sh, sw), (ph, pw) = spec.kernel, spec.stride, spec.padding
    A = image(layer, A)
    if ph or pw:
        A = np.pad(A, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    windows = np.lib.stride_tricks.sliding_window_view(A, (kh, kw), axis=(2, 3))
    _, rows, columns = layer.shape
    return windows[:, :, : rows * sh : sh, : columns * sw : sw]


class Probe:
    """An independent forward pass of a network, for scales and kink patterns."""

    def __init__(self, net: SymbolicNetwork) -> None:
        self.net = net
        names = {X_SYMBOL: "x"}
        self.activations: dict[int, Callable | None] = {}
        self.kinks: dict[int, list[Callable]] = {}
        for layer, act in zip(net.flat, net.activations, strict=True):
            if act is None:
                continue
            self.activations[layer.index] = None if act.softmax else _compile(act.expr, names)
            self.kinks[layer.index] = (
                [] if act.softmax else [_compile(k, names) for k in kink_indicators(act.expr)]
            )
        loss_names = {YHAT: "yhat", Y_SYMBOL: "y"}
        self.loss_kinks = [_compile(k, loss_names) for k in kink_indicators(net.loss.expr)]

    @property
    def has_kinks(self) -> bool:
        return bool(self.loss_kinks) or any(self.kinks.values())

    def _layer(self, layer: FlatLayer, params: Mapping, run: Forward, masks: Masks | None):
        index, spec = layer.index, layer.layer
        A = run.outputs[layer.sources[0]]
        if layer.kind == "dense":
            Z = A @ params[f"W{index}"].T
            if spec.bias:
                Z = Z + params[f"b{index}"]
            run.pre_activations[index] = Z
            fn = self.activations[index]
            return _softmax(Z) if fn is None else np.broadcast_to(fn(Z), Z.shape)
        if layer.kind in ("layer_norm", "batch_norm"):
            axis = 1 if layer.kind == "layer_norm" else 0
            run.normalized[index] = _normalize(A, axis, spec.eps)
            return params[f"gamma{index}"] * run.normalized[index] + params[f"beta{index}"]
        if layer.kind == "rms_norm":
            run.normalized[index] = A / np.sqrt((A * A).mean(axis=1, keepdims=True) + spec.eps)
            return params[f"gamma{index}"] * run.normalized[index]
        if layer.kind == "dropout":
            if spec.rate == 0:
                return A
            if masks is None or index not in masks:
                raise ValueError(f"{layer.path}: the probe needs the dropout layer's keep mask")
            return A * masks[index] / (1 - spec.rate)
        if layer.kind == "residual":
            return A + run.outputs[layer.sources[1]]
        if layer.kind == "conv2d":
            P = patches(layer, A)  # (batch, C, Ho, Wo, kh, kw)
            Z = np.einsum("bchwij,fcij->bfhw", P, params[f"W{index}"])
            if spec.bias:
                Z = Z + params[f"b{index}"][None, :, None, None]
            run.pre_activations[index] = Z
            fn = self.activations[index]
            return np.broadcast_to(fn(Z), Z.shape)
        if layer.kind == "max_pool2d":
            windows = patches(layer, A)
            flat = windows.reshape(windows.shape[:4] + (-1,))
            run.choices[index] = flat.argmax(axis=-1)  # the first maximum, as PyTorch
            return flat.max(axis=-1)
        if layer.kind == "avg_pool2d":
            return patches(layer, A).mean(axis=(4, 5))
        if layer.kind == "flatten":
            return A.reshape(len(A), -1)  # C order over (C, H, W), as nn.Flatten
        raise ValueError(f"{layer.path}: the probe has no forward for kind {layer.kind!r}")

    def forward(self, params: Mapping, X: np.ndarray, masks: Masks | None = None) -> Forward:
        """Training mode: batch statistics, dropout with ``masks``."""
        if self.net.spec.image:
            X = np.asarray(X).reshape((len(X), *self.net.spec.input_shape))
        run = Forward({0: X}, {}, {}, X)
        for index in self.net.spec.order:
            layer = self.net.flat[index - 1]
            run.outputs[index] = self._layer(layer, params, run, masks)
        out = run.outputs[self.net.output_layer.index]
        return Forward(run.outputs, run.pre_activations, run.normalized, out, run.choices)

    def entry_scales(
        self, params: Mapping, X: np.ndarray, masks: Masks | None = None
    ) -> dict[str, np.ndarray]:
        """Per parameter, per flat entry: max(1, the largest |input| the entry multiplies).

        A weight multiplies its column of the layer's input, a gamma the normalized
        feature; biases and betas multiply 1.
        """
        with np.errstate(all="ignore"):
            run = self.forward(params, X, masks)
        out = {}
        for layer in self.net.flat:
            index = layer.index
            for key, shape in layers.parameters(layer).items():
                if key == f"W{index}" and layer.kind == "conv2d":
                    # W[f, c, i, j] multiplies channel c at offset (i, j) of every window
                    P = np.abs(patches(layer, run.outputs[layer.sources[0]]))
                    columns = np.maximum(1.0, P.max(axis=(0, 2, 3), initial=0.0))
                    out[key] = np.broadcast_to(columns, shape).reshape(-1)
                elif key == f"W{index}":
                    source = run.outputs[layer.sources[0]]
                    columns = np.maximum(1.0, np.abs(source).max(axis=0, initial=0.0))
                    out[key] = np.broadcast_to(columns, shape).reshape(-1)
                elif key == f"gamma{index}":
                    out[key] = np.maximum(1.0, np.abs(run.normalized[index]).max(axis=0))
                else:
                    out[key] = np.ones(int(np.prod(shape)))
        return out

    def input_scales(
        self, params: Mapping, X: np.ndarray, masks: Masks | None = None
    ) -> dict[str, float]:
        """Per parameter: max(1, the largest |input| any of its entries multiplies)."""
        scales = self.entry_scales(params, X, masks)
        return {k: float(np.nanmax(v, initial=1.0)) for k, v in scales.items()}

    def pattern(
        self, params: Mapping, X: np.ndarray, Y: np.ndarray, masks: Masks | None = None
    ) -> np.ndarray:
        """The side (-1, 0, 1) of every kink for every pre-activation and loss term."""
        with np.errstate(all="ignore"):
            run = self.forward(params, X, masks)
            signs = []
            for index, kinks in self.kinks.items():
                Z = run.pre_activations[index]
                signs += [np.sign(np.broadcast_to(k(Z), Z.shape)).ravel() for k in kinks]
            # a max pool's gradient goes to its window's first maximum: which one it is
            signs += [choice.ravel() for choice in run.choices.values()]
            yhat = run.output
            signs += [
                np.sign(np.broadcast_to(k(yhat, Y), Y.shape)).ravel() for k in self.loss_kinks
            ]
        return np.concatenate(signs) if signs else np.zeros(0)


def _clear_of_kinks(
    net: SymbolicNetwork, params: dict, X: np.ndarray, probe: Probe, masks: Masks
) -> bool:
    """No dense pre-activation (but softmax's) within a few steps of 0."""
    run = probe.forward(params, X, masks)
    for index, Z in run.pre_activations.items():
        values = run.outputs[net.flat[index - 1].sources[0]]
        margin = 8 * FD_STEP * max(1.0, float(np.abs(values).max(initial=0.0)))
        if probe.activations[index] is not None and float(np.abs(Z).min(initial=np.inf)) < margin:
            return False
    return True


def _redraw_table(net: SymbolicNetwork) -> dict[str, tuple[float, float]]:
    """Entries a check point redraws: name -> (mean, spread), in network order."""
    table = {}
    for layer in net.flat:
        index = layer.index
        for key in layers.parameters(layer):
            if key in (f"b{index}", f"beta{index}"):
                table[key] = (0.0, SHIFT_SPREAD)
            elif key == f"gamma{index}":
                table[key] = (1.0, GAMMA_SPREAD)
    return table


def point(
    net: SymbolicNetwork,
    batch: int,
    seed: int,
    data: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Parameters, inputs and targets at which every witness is evaluated (float64).

    Parameters are the module's initialisation (``symbackprop.initialize``, the numbers the
    module's ``init_params(seed)`` gives) with random biases, betas and gammas, so that
    every path through them is exercised; inputs and targets are random, or the first rows
    of ``data``.  Batch-norm state stays as initialised (training mode does not read it).
    """
    # separate streams: data drawn from the initialisation's own stream would copy W1 into X
    data_rng = np.random.default_rng((seed, 1))
    rng = np.random.default_rng((seed, 2))
    params = initialize.init_params(net.spec, seed, np.float64)
    if data is not None:
        X, y = np.array(data[0][:batch], dtype=np.float64), _targets(net, data[1][:batch])
    else:
        X, y = data_rng.normal(0.0, 1.0, size=(batch, net.sizes[0])), None
    if net.spec.image:  # images as the module takes them: (batch, C, H, W)
        X = X.reshape((len(X), *net.spec.input_shape))
    masks = point_masks(net, seed, len(X))
    # Biases are random so that every bias path is exercised, and redrawn (a bounded number
    # of times) while a pre-activation sits close to 0, where ReLU-like functions kink; the
    # finite-difference witness also chooses its steps so that no stencil crosses a kink.
    probe = Probe(net)
    table = _redraw_table(net)
    attempts = min(REDRAW_ATTEMPTS, max(1, REDRAW_BUDGET // max(1, len(X) * net.operations)))
    with np.errstate(all="ignore"):
        for _ in range(attempts):
            for key, (mean, spread) in table.items():
                params[key][...] = mean + rng.normal(0.0, spread, size=params[key].shape)
            if _clear_of_kinks(net, params, X, probe, masks):
                break
    if y is not None:
        return params, X, y
    outputs = net.output_layer.units
    if net.output.softmax and net.loss.classification:
        Y = np.eye(outputs)[data_rng.integers(0, outputs, size=batch)]
    elif net.output.probability:
        Y = data_rng.integers(0, 2, size=(batch, outputs)).astype(np.float64)
    else:
        Y = data_rng.normal(0.0, 1.0, size=(batch, outputs))
    return params, X, Y
