"""The registry of activations and losses: one entry each, data rather than ``if``s.

An ``Activation`` is a SymPy expression in the variable ``x``; a ``Loss`` is a per-output
SymPy expression in ``yhat`` and ``y`` (the per-sample loss is its sum over outputs).
Derivatives are not stored: ``symbackprop.derive`` gets them from ``sympy.diff``.
Custom entries come from spec expression strings through the safe parser.  Each built-in
entry carries a plain NumPy reference used only by tests.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import sympy
from sympy import erf, log, sqrt, tanh

from symbackprop.errors import InputError
from symbackprop.expressions import parse_expression
from symbackprop.lazy import lazy
from symbackprop.primitives import (
    LEAKY_SLOPE,
    elu,
    expm1,
    leaky_relu,
    relu,
    sigmoid,
    softplus,
    step,
)
from symbackprop.spec import ACTIVATION_PARAMETERS, FunctionSpec, NetworkSpec, parameter_value

# the references run only in tests: generating code or a document needs no NumPy
np = lazy("numpy")

# real: |x|' is sign(x), not an expression in re(x) and im(x)
X = sympy.Symbol("x", real=True)
YHAT = sympy.Symbol("yhat", real=True)
Y = sympy.Symbol("y", real=True)

Reference = Callable[["np.ndarray"], "np.ndarray"]


@dataclass(frozen=True)
class Activation:
    """An elementwise activation f(x), or softmax (the one vector-valued activation)."""

    name: str
    expr: sympy.Expr
    latex: str  # f applied to x, e.g. r"\operatorname{ReLU}(x)"
    init: str = "xavier"  # "he" for the ReLU family, "xavier" otherwise
    reference: Reference | None = None
    # f'(x) in terms of a = f(x), tried first when rewriting through the output; always
    # validated against sympy.diff before use (derive.output_derivative).
    via_output_hint: sympy.Expr | None = None
    # For probability outputs: log f(x) and log(1 - f(x)) in a form that never overflows,
    # substituted into the loss so that e.g. sigmoid + BCE is computed from logits.
    log_output: sympy.Expr | None = None
    log_one_minus_output: sympy.Expr | None = None
    softmax: bool = False
    custom: bool = False
    # torch.nn.functional's name and keyword arguments (the PyTorch witness); custom
    # activations have none and are lambdified
    torch: tuple[str, tuple[tuple[str, float], ...]] | None = None

    @property
    def probability(self) -> bool:
        return self.softmax or self.log_output is not None


@dataclass(frozen=True)
class Loss:
    """A per-output loss l(yhat, y); the per-sample loss is the sum over outputs."""

    name: str
    expr: sympy.Expr
    latex: str
    classification: bool = False
    needs_probability: bool = False
    custom: bool = False
    reference: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


def _gelu_reference(x: np.ndarray) -> np.ndarray:
    erf_x = np.vectorize(math.erf)(x / math.sqrt(2))
    return 0.5 * x * (1 + erf_x)


def _stable_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -x))


A = sympy.Symbol("a")

ACTIVATIONS: dict[str, Activation] = {
    entry.name: entry
    for entry in (
        Activation("identity", X, "x", reference=lambda x: x),
        # f(z) > 0 exactly when z > 0, so the kink's indicator reads the same in a
        Activation(
            "relu",
            relu(X),
            r"\operatorname{ReLU}(x)",
            init="he",
            reference=lambda x: np.maximum(x, 0),
            via_output_hint=step(A),
        ),
        Activation(
            "leaky_relu",
            leaky_relu(X),
            r"\operatorname{LeakyReLU}(x)",
            init="he",
            reference=lambda x: np.where(x > 0, x, 0.01 * x),
            via_output_hint=LEAKY_SLOPE + (1 - LEAKY_SLOPE) * step(A),
        ),
        Activation(
            "sigmoid",
            sigmoid(X),
            r"\sigma(x)",
            reference=_stable_sigmoid,
            log_output=-softplus(-X),
            log_one_minus_output=-softplus(X),
        ),
        Activation("tanh", tanh(X), r"\tanh(x)", reference=lambda x: np.tanh(x)),
        Activation(
            "softplus",
            softplus(X),
            r"\operatorname{softplus}(x)",
            reference=lambda x: np.logaddexp(0, x),
            # sigmoid(z) = 1 - exp(-a), with expm1: accurate for a -> 0 (z -> -inf)
            via_output_hint=-expm1(-A),
        ),
        Activation(
            "elu",
            elu(X),
            r"\operatorname{ELU}(x)",
            init="he",
            reference=lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
        ),
        Activation(
            "gelu",
            X / 2 * (1 + erf(X / sqrt(2))),
            r"\operatorname{GELU}(x)",
            init="he",
            reference=_gelu_reference,
        ),
        Activation(
            "silu",
            X * sigmoid(X),
            r"\operatorname{SiLU}(x)",
            init="he",
            reference=lambda x: x * _stable_sigmoid(x),
        ),
        Activation("softmax", X, r"\operatorname{softmax}(z)", softmax=True),
    )
}

LOSSES: dict[str, Loss] = {
    entry.name: entry
    for entry in (
        Loss(
            "mse",
            (YHAT - Y) ** 2 / 2,
            r"\tfrac{1}{2}\sum_k (\hat y_k - y_k)^2",
            reference=lambda yhat, y: 0.5 * (yhat - y) ** 2,
        ),
        Loss(
            "cross_entropy",
            -Y * log(YHAT),
            r"-\sum_k y_k \log \hat y_k",
            classification=True,
            needs_probability=True,
            reference=lambda yhat, y: -y * np.log(yhat),
        ),
        Loss(
            "binary_cross_entropy",
            -(Y * log(YHAT) + (1 - Y) * log(1 - YHAT)),
            r"-\sum_k \left[y_k \log \hat y_k + (1 - y_k)\log(1 - \hat y_k)\right]",
            classification=True,
            needs_probability=True,
            reference=lambda yhat, y: -(y * np.log(yhat) + (1 - y) * np.log1p(-yhat)),
        ),
    )
}


def _with_parameters(entry: Activation, spec: FunctionSpec, field: str) -> Activation:
    """leaky_relu with another slope, elu with another alpha (DESIGN §2b)."""
    defaults = ACTIVATION_PARAMETERS.get(entry.name, {})
    for key, _ in spec.params:  # a spec built in Python skips spec.from_dict's checks
        if key not in defaults:
            takes = f"it takes: {', '.join(defaults)}" if defaults else "it takes none"
            raise InputError(f"{field}.{key}", f"unknown parameter of {entry.name} ({takes})")
    values = {
        **defaults,
        **{key: parameter_value(value, f"{field}.{key}") for key, value in spec.params},
    }
    if values == defaults:
        return entry
    return _parameterized(entry.name, tuple(sorted(values.items())))


def _exact(value: float) -> sympy.Rational:
    """The decimal the user wrote, as a rational (0.2 -> 1/5), whose float is ``value`` again.

    Not ``nsimplify``: it rounds 0.30000000000000004 to 3/10, another float than was given.
    """
    return sympy.Rational(repr(float(value)))


@functools.cache
def _parameterized(base: str, params: tuple[tuple[str, float], ...]) -> Activation:
    """One entry per (name, parameters): two layers with the same slope share it, so the
    entries compare equal (``resolve`` refuses one name for two different activations)."""
    entry, values = ACTIVATIONS[base], dict(params)
    shown = ", ".join(f"{k}={v!r}" for k, v in sorted(values.items()))
    name = f"{entry.name}({shown})"
    if entry.name == "leaky_relu":
        s = _exact(values["slope"])
        # s x + (1 - s) relu(x): derivative s + (1 - s) step(x), i.e. s at 0 (PyTorch's)
        expr = s * X + (1 - s) * relu(X)
        return Activation(
            name,
            expr,
            rf"\operatorname{{LeakyReLU}}_{{{sympy.latex(s)}}}(x)",
            init="he",
            reference=lambda x, s=float(s): np.where(x > 0, x, s * x),
            via_output_hint=None,
            torch=("leaky_relu", (("negative_slope", float(s)),)),
        )
    alpha = _exact(values["alpha"])
    # relu(x) + alpha (elu(x) - relu(x)): x for x > 0, alpha (e^x - 1) otherwise
    expr = relu(X) + alpha * (elu(X) - relu(X))
    return Activation(
        name,
        expr,
        rf"\operatorname{{ELU}}_{{{sympy.latex(alpha)}}}(x)",
        init="he",
        reference=lambda x, a=float(alpha): np.where(x > 0, x, a * np.expm1(np.minimum(x, 0))),
        torch=("elu", (("alpha", float(alpha)),)),
    )


def activation(spec: FunctionSpec, field: str) -> Activation:
    """The registry entry for a built-in name, or a custom activation parsed from ``expr``."""
    if spec.expr is None and spec.params and spec.name in ACTIVATIONS:
        return _with_parameters(ACTIVATIONS[spec.name], spec, field)
    if spec.expr is not None and spec.params:
        raise InputError(
            f"{field}.{spec.params[0][0]}",
            "a custom activation (given by expr) takes no parameters",
        )
    if spec.expr is not None:
        expr = parse_expression(spec.expr, f"{field}.expr", ("x",))
        expr = expr.xreplace({sympy.Symbol("x"): X})
        return Activation(spec.name, expr, sympy.latex(expr), custom=True)
    if spec.name not in ACTIVATIONS:
        known = ", ".join(ACTIVATIONS)
        raise InputError(
            field,
            f"unknown activation {spec.name!r} (known: {known}; or a table with name and expr)",
        )
    return ACTIVATIONS[spec.name]


def loss(spec: FunctionSpec, field: str) -> Loss:
    """The registry entry for a built-in name, or a custom loss parsed from ``expr``."""
    if spec.expr is not None:
        expr = parse_expression(spec.expr, f"{field}.expr", ("yhat", "y"))
        expr = expr.xreplace({sympy.Symbol("yhat"): YHAT, sympy.Symbol("y"): Y})
        if YHAT not in expr.free_symbols:
            raise InputError(f"{field}.expr", "the loss does not depend on yhat")
        return Loss(spec.name, expr, sympy.latex(expr), custom=True)
    if spec.name not in LOSSES:
        known = ", ".join(LOSSES)
        raise InputError(
            field, f"unknown loss {spec.name!r} (known: {known}; or a table with name and expr)"
        )
    return LOSSES[spec.name]


IDENTITY = ACTIVATIONS["identity"]


def resolve(spec: NetworkSpec) -> tuple[tuple[Activation | None, ...], Loss]:
    """Every layer's activation (None for kinds other than dense and conv2d, in numbering
    order) and the loss, with the combinations that make no sense refused."""
    flat = spec.flat
    activations = tuple(
        activation(layer.layer.activation, f"{layer.path}.activation")
        if layer.kind in ("dense", "conv2d")
        else None
        for layer in flat
    )
    named: dict[str, int] = {}
    for layer, act in zip(flat, activations, strict=True):
        if act is None:
            continue
        first = named.setdefault(act.name, layer.index)
        if activations[first - 1] != act:  # the document and the code refer to f by its name
            raise InputError(
                f"{layer.path}.activation.name",
                f"{act.name!r} already names a different activation in "
                f"{flat[first - 1].path}; give each activation its own name",
            )
    out_layer = spec.output_layer
    for layer, act in zip(flat, activations, strict=True):
        if act is not None and act.softmax and layer.index != out_layer.index:
            raise InputError(
                f"{layer.path}.activation",
                "softmax is supported only as the output layer's activation, "
                f"and the output layer is {out_layer.path}",
            )
    chosen = loss(spec.loss, "loss")
    output = activations[out_layer.index - 1] or IDENTITY
    last = f"{out_layer.path}.activation"
    if chosen.needs_probability and out_layer.kind != "dense":
        raise InputError(
            "loss",
            f"{chosen.name} needs probabilities, but the output layer {out_layer.path} is a "
            f"{out_layer.kind} layer; end with a dense layer with softmax (cross_entropy) "
            "or sigmoid (binary_cross_entropy)",
        )
    if chosen.needs_probability and not output.probability:
        raise InputError(
            "loss",
            f"{chosen.name} needs probabilities, but {last} is {output.name!r}; "
            "use softmax (cross_entropy) or sigmoid (binary_cross_entropy) for the output layer",
        )
    if chosen.name == "binary_cross_entropy" and output.softmax:
        raise InputError(
            "loss",
            f"binary_cross_entropy needs a sigmoid output, but {last} is 'softmax'; "
            "use sigmoid, or cross_entropy with softmax",
        )
    if output.softmax and out_layer.units < 2:
        raise InputError(f"{out_layer.path}.units", "softmax needs at least 2 units")
    return activations, chosen
