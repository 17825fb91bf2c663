"""The certificate: the generated gradients against independent witnesses, per parameter.

Witnesses (none shares code with the generated backward pass):
1. ``finite-diff``: central differences (the 4-point stencil, error O(h^4)) of the generated
   ``loss`` in float64;
2. ``exact``: SymPy's gradient evaluated at the same point in 40-digit arithmetic, from the
   fully expanded composite (up to ``EXPANDED_LIMIT`` parameters) or else from the
   neuron-level graph with reverse accumulation (up to ``GRAPH_LIMIT``); smooth primitives
   are spelled out in exp/log first, so SymPy's own rules differentiate them;
3. ``pytorch``: autograd on the same network written with torch's own functions, when
   ``torch`` is importable (optional; never a dependency).

An entry passes when |g - r| <= tol * max(|r|, floor); the table reports, per parameter and
witness, the max absolute and relative errors with that floor.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import mpmath
import numpy as np
import sympy

from symbackprop.checkpoint import FD_STEP, check_point, load_module
from symbackprop.codegen import generate
from symbackprop.derive import Derivation, derive
from symbackprop.functions import YHAT
from symbackprop.functions import X as X_SYMBOL
from symbackprop.functions import Y as Y_SYMBOL
from symbackprop.graph import (
    EXPANDED_LIMIT,
    GRAPH_LIMIT,
    LOSS,
    SymbolicNetwork,
)
from symbackprop.primitives import to_textbook_form
from symbackprop.printing import floatify
from symbackprop.spec import NetworkSpec

PRECISION = 40  # decimal digits for the exact witness
EXPANDED_BUDGET = 8.0  # seconds; then the neuron-level graph gives the exact gradient
FD_SAMPLE_LIMIT = 64  # entries per parameter checked by finite differences on large nets
TOLERANCE = {"finite-diff": (1e-6, 1e-7), "exact": (1e-8, 1e-10), "pytorch": (1e-8, 1e-10)}


@dataclass(frozen=True)
class WitnessResult:
    witness: str
    max_abs: float
    max_rel: float
    checked: int  # entries compared
    passed: bool


@dataclass(frozen=True)
class ParameterCheck:
    name: str
    shape: tuple[int, ...]
    results: tuple[WitnessResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)


@dataclass(frozen=True)
class Certificate:
    name: str
    parameters: tuple[ParameterCheck, ...]
    witnesses: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (witness, why)
    batch: int
    loss: float
    exact_view: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return bool(self.parameters) and all(p.passed for p in self.parameters)

    def max_rel(self, witness: str) -> float:
        values = [r.max_rel for p in self.parameters for r in p.results if r.witness == witness]
        return max(values) if values else float("nan")

    def table(self) -> str:
        """The certificate as a plain-text table, one row per parameter and witness."""
        lines = [
            f"certificate for {self.name}: batch of {self.batch}, loss {self.loss:.12g}, "
            f"witnesses: {', '.join(self.witnesses)}",
        ]
        if self.exact_view:
            lines.append(f"exact witness: {self.exact_view}")
        header = (
            f"{'parameter':<10} {'shape':<12} {'witness':<12} {'entries':>7} "
            f"{'max abs err':>12} {'max rel err':>12}  result"
        )
        lines += [header, "-" * len(header)]
        for p in self.parameters:
            for r in p.results:
                shape = "x".join(map(str, p.shape))
                lines.append(
                    f"{p.name:<10} {shape:<12} {r.witness:<12} {r.checked:>7} "
                    f"{r.max_abs:>12.2e} {r.max_rel:>12.2e}  {'pass' if r.passed else 'FAIL'}"
                )
        for witness, why in self.skipped:
            lines.append(f"skipped {witness}: {why}")
        lines.extend(self.notes)
        verdict = "PASS" if self.passed else "FAIL"
        failed = sum(not p.passed for p in self.parameters)
        lines.append(
            f"{verdict}: {len(self.parameters) - failed}/{len(self.parameters)} "
            "parameters agree with every witness"
        )
        return "\n".join(lines)


# --- witness 1: finite differences -----------------------------------------------------------


def finite_differences(
    module: types.ModuleType, params: dict, X: np.ndarray, Y: np.ndarray, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(flat indices checked, derivative estimates) per parameter."""
    rng = np.random.default_rng(seed + 1)
    estimates = {}
    for key, value in params.items():
        flat = value.reshape(-1)
        if flat.size <= FD_SAMPLE_LIMIT:
            indices = np.arange(flat.size)
        else:
            indices = np.sort(rng.choice(flat.size, size=FD_SAMPLE_LIMIT, replace=False))
        values = np.empty(len(indices))
        for n, index in enumerate(indices):
            original = flat[index]
            h = FD_STEP * max(1.0, abs(original))
            f = {}
            for k in (-2, -1, 1, 2):
                flat[index] = original + k * h
                f[k] = module.loss(params, X, Y)
            flat[index] = original
            values[n] = (8 * (f[1] - f[-1]) - (f[2] - f[-2])) / (12 * h)
        estimates[key] = (indices, values)
    return estimates


# --- witness 2: exact symbolic gradient ------------------------------------------------------


def _exact(value: float) -> sympy.Float:
    return sympy.Float(float(value), PRECISION)


def _data_values(net: SymbolicNetwork, x: np.ndarray, y: np.ndarray) -> dict:
    values = {s: _exact(v) for s, v in zip(net.inputs(), x, strict=True)}
    values.update({s: _exact(v) for s, v in zip(net.targets(), y, strict=True)})
    return values


def _parameter_values(net: SymbolicNetwork, params: dict) -> dict:
    values = {}
    for key, symbols in net.parameters().items():
        values.update({s: _exact(v) for s, v in zip(symbols, params[key].reshape(-1), strict=True)})
    return values


def _l2_term(net: SymbolicNetwork, params: dict, grads: dict[str, np.ndarray]) -> None:
    if net.spec.l2:
        for key in grads:
            if key.startswith("W"):
                grads[key] = grads[key] + net.spec.l2 * params[key]


class OverBudget(Exception):
    """The expanded composite took longer than its time budget (SymPy's swell)."""


def exact_expanded(
    net: SymbolicNetwork,
    params: dict,
    X: np.ndarray,
    Y: np.ndarray,
    budget: float = float("inf"),
) -> dict[str, np.ndarray]:
    """SymPy's gradient of the fully expanded composite, evaluated per sample and averaged.

    Raises OverBudget after ``budget`` seconds: the composite's derivatives grow with depth
    as well as size (two SiLU layers of 41 parameters took 50 s).
    """
    start = time.perf_counter()
    # sqrt(2), pi as Floats: exact irrationals kept erf(0.3*sqrt(2)) unevaluated, and evalf of
    # a GELU network's gradient took 1.4 s per entry instead of 0.2 ms
    textbook = to_textbook_form(net.expanded_loss())
    per_sample = floatify(textbook, PRECISION + 10, keep_rationals=True)
    theta = _parameter_values(net, params)
    points = [{**theta, **_data_values(net, x, y)} for x, y in zip(X, Y, strict=True)]
    grads = {}
    for key, group in net.parameters().items():
        column = []
        for s in group:
            derivative = sympy.diff(per_sample, s)
            values = [float(derivative.xreplace(p).evalf(PRECISION)) for p in points]
            column.append(sum(values) / len(points))
            if time.perf_counter() - start > budget:
                raise OverBudget(f"over its {budget:g} s budget")
        grads[key] = np.array(column).reshape(params[key].shape)
    _l2_term(net, params, grads)
    return grads


def _monomial_factors(term: sympy.Expr) -> tuple[sympy.Expr, ...] | None:
    factors = term.args if term.is_Mul else (term,)
    symbols = [f for f in factors if f.is_Symbol]
    if all(f.is_Symbol or f.is_Number for f in factors) and len(set(symbols)) == len(symbols):
        return factors
    return None


def local_partials(expr: sympy.Expr) -> list[tuple[sympy.Symbol, sympy.Expr]]:
    """Each free symbol's partial derivative of one node expression.

    A pre-activation (a sum of products w*a and b) has its partials read off as coefficients,
    which is linear in fan-in; ``sympy.diff`` once per input is quadratic.  Every other node
    goes through ``sympy.diff``.
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
    return [(s, sympy.diff(expr, s)) for s in sorted(expr.free_symbols, key=str)]


def _evaluate(expr: sympy.Expr, numbers: dict, values: dict) -> mpmath.mpf:
    """One node or partial in high precision; ``numbers`` and ``values`` hold the same point."""
    # most local partials are a single symbol (a weight or an activation) or a number; only
    # activation and loss nodes need SymPy's evaluation
    if expr.is_Symbol:
        return numbers[expr]
    if expr.is_Number:
        return mpmath.mpf(sympy.Float(expr, PRECISION))
    return mpmath.mpf(sympy.Float(expr.xreplace(values).evalf(PRECISION), PRECISION))


def exact_graph(
    net: SymbolicNetwork, params: dict, X: np.ndarray, Y: np.ndarray
) -> dict[str, np.ndarray]:
    """The neuron-level graph: local sympy.diff per node, reverse accumulation, 40 digits."""
    nodes = [(n.symbol, to_textbook_form(n.expr)) for n in net.neuron_graph]
    local = [(symbol, local_partials(expr)) for symbol, expr in nodes]
    theta = _parameter_values(net, params)
    symbols = net.parameters()
    total = {key: np.zeros(params[key].size) for key in symbols}
    with mpmath.workdps(PRECISION):
        for x, y in zip(X, Y, strict=True):
            values = dict(theta)
            values.update(_data_values(net, x, y))
            numbers = {s: mpmath.mpf(v) for s, v in values.items()}
            for symbol, expr in nodes:
                numbers[symbol] = _evaluate(expr, numbers, values)
                values[symbol] = sympy.Float(numbers[symbol], PRECISION)
            adjoint = {LOSS: mpmath.mpf(1)}
            for symbol, partials in reversed(local):
                bar = adjoint.get(symbol)
                if bar is None:
                    continue
                for s, partial in partials:
                    adjoint[s] = adjoint.get(s, 0) + bar * _evaluate(partial, numbers, values)
            for key, group in symbols.items():
                total[key] += [float(adjoint.get(s, 0)) for s in group]
    grads = {k: (v / len(X)).reshape(params[k].shape) for k, v in total.items()}
    _l2_term(net, params, grads)
    return grads


# --- witness 3: PyTorch ----------------------------------------------------------------------


def _torch_namespace(torch: types.ModuleType) -> dict[str, Callable]:
    """Names a lambdified SymPy expression calls, as torch functions of tensors or numbers."""
    F = torch.nn.functional

    def tensor(value: object) -> object:
        return torch.as_tensor(value, dtype=torch.float64)

    def unary(fn: Callable) -> Callable:
        return lambda value: fn(tensor(value))  # constants such as log(2) arrive as numbers

    def fold(fn: Callable) -> Callable:
        def folded(*args: object) -> object:
            result = tensor(args[0])
            for arg in args[1:]:
                result = fn(result, tensor(arg))
            return result

        return folded

    names = {
        "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "sin": torch.sin,
        "cos": torch.cos, "tan": torch.tan, "sinh": torch.sinh, "cosh": torch.cosh,
        "tanh": torch.tanh, "asin": torch.asin, "acos": torch.acos, "atan": torch.atan,
        "asinh": torch.asinh, "atanh": torch.atanh, "erf": torch.erf, "Abs": torch.abs,
        "sign": torch.sign, "sigmoid": torch.sigmoid, "softplus": F.softplus,
        "relu": torch.relu, "leaky_relu": lambda v: F.leaky_relu(v, 0.01), "elu": F.elu,
    }  # fmt: skip
    namespace: dict[str, object] = {name: unary(fn) for name, fn in names.items()}
    namespace.update(
        {
            "Max": fold(torch.maximum),
            "Min": fold(torch.minimum),
            "pi": float(sympy.pi),
            "E": float(sympy.E),
        }
    )
    return namespace


def _torch_activation(torch: types.ModuleType, name: str) -> Callable | None:
    F = torch.nn.functional
    return {
        "identity": lambda v: v,
        "relu": torch.relu,
        "leaky_relu": lambda v: F.leaky_relu(v, 0.01),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "softplus": F.softplus,
        "elu": F.elu,
        "gelu": F.gelu,
        "silu": F.silu,
    }.get(name)


def pytorch_gradients(
    net: SymbolicNetwork, params: dict, X: np.ndarray, Y: np.ndarray
) -> dict[str, np.ndarray]:
    import torch

    F = torch.nn.functional
    namespace = _torch_namespace(torch)
    tensors = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()
    }
    values = torch.tensor(X, dtype=torch.float64)
    target = torch.tensor(Y, dtype=torch.float64)
    for index, act in enumerate(net.activations, start=1):
        z = values @ tensors[f"W{index}"].T + tensors[f"b{index}"]
        if index == net.depth:
            break
        fn = None if act.custom else _torch_activation(torch, act.name)
        if fn is None:
            fn = sympy.lambdify(X_SYMBOL, act.expr, modules=[namespace])
        values = fn(z)
    act, loss = net.output, net.loss
    if act.softmax:
        log_p = F.log_softmax(z, dim=1)
        p = log_p.exp()
    else:
        fn = None if act.custom else _torch_activation(torch, act.name)
        if fn is None:
            fn = sympy.lambdify(X_SYMBOL, act.expr, modules=[namespace])
        p = fn(z)
    batch = X.shape[0]
    if loss.name == "cross_entropy" and not loss.custom:
        log_p = log_p if act.softmax else F.logsigmoid(z)
        value = -(target * log_p).sum() / batch
    elif loss.name == "binary_cross_entropy" and not loss.custom:
        value = F.binary_cross_entropy_with_logits(z, target, reduction="sum") / batch
    elif loss.name == "mse" and not loss.custom:
        value = 0.5 * ((p - target) ** 2).sum() / batch
    else:
        yhat, y = YHAT, Y_SYMBOL
        fn = sympy.lambdify((yhat, y), loss.expr, modules=[namespace])
        value = fn(p, target).sum() / batch
    if net.spec.l2:
        value = value + 0.5 * net.spec.l2 * sum(
            (t**2).sum() for k, t in tensors.items() if k.startswith("W")
        )
    value.backward()
    return {k: t.grad.numpy().copy() for k, t in tensors.items()}


# --- the certificate -------------------------------------------------------------------------


def _compare(
    witness: str, got: np.ndarray, reference: np.ndarray, noise: float = 0.0
) -> WitnessResult:
    """Pass when |got - ref| <= tol * max(|ref|, floor); the floor is at least noise / tol."""
    tol, floor = TOLERANCE[witness]
    floor = max(floor, noise / tol)
    error = np.abs(got - reference)
    scale = np.maximum(np.abs(reference), floor)
    rel = error / scale
    finite = bool(np.all(np.isfinite(got)) and np.all(np.isfinite(reference)))
    return WitnessResult(
        witness,
        float(error.max(initial=0.0)),
        float(rel.max(initial=0.0)),
        int(got.size),
        finite and bool(np.all(rel <= tol)),
    )


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def certify(
    source: NetworkSpec | Derivation,
    *,
    batch: int = 4,
    seed: int = 0,
    module_source: str | None = None,
    use_torch: bool | None = None,
    data: tuple[np.ndarray, np.ndarray] | None = None,
) -> Certificate:
    """Run every witness on the generated module of a spec; see the module docstring."""
    derivation = source if isinstance(source, Derivation) else derive(source)
    net = derivation.network
    module = load_module(module_source or generate(derivation), net.spec.name)
    params, X, Y = check_point(module, net, batch, seed, data)
    value, grads = module.gradients(params, X, Y)
    results: dict[str, list[WitnessResult]] = {k: [] for k in params}
    witnesses = ["finite-diff"]
    skipped: list[tuple[str, str]] = []

    # rounding in the stencil: each loss carries ~eps*|L|, divided by ~h (a generous 10x)
    noise = 10 * np.finfo(np.float64).eps * max(1.0, abs(value)) / FD_STEP
    for key, (indices, estimates) in finite_differences(module, params, X, Y, seed).items():
        results[key].append(
            _compare("finite-diff", grads[key].reshape(-1)[indices], estimates, noise)
        )

    count = net.parameter_count
    exact_view = ""
    exact = None
    if count <= EXPANDED_LIMIT:
        try:
            exact = exact_expanded(net, params, X, Y, budget=EXPANDED_BUDGET)
            exact_view = "the fully expanded composite"
        except OverBudget:
            exact_view = f"the fully expanded composite took over {EXPANDED_BUDGET:g} s, so "
    if exact is None and count <= GRAPH_LIMIT:
        exact = exact_graph(net, params, X, Y)
        exact_view += "the neuron-level graph (reverse accumulation)"
    elif exact is None:
        skipped.append(
            (
                "exact",
                f"{count} parameters is above the neuron-level limit of {GRAPH_LIMIT}; "
                "finite differences and PyTorch still check every layer",
            )
        )
    if exact is not None:
        witnesses.append("exact")
        for key in params:
            results[key].append(_compare("exact", grads[key], exact[key]))

    if use_torch is None:
        use_torch = torch_available()
    if use_torch:
        witnesses.append("pytorch")
        reference = pytorch_gradients(net, params, X, Y)
        for key in params:
            results[key].append(_compare("pytorch", grads[key], reference[key]))
    else:
        skipped.append(("pytorch", "torch is not importable (optional)"))

    parameters = tuple(ParameterCheck(k, params[k].shape, tuple(v)) for k, v in results.items())
    return Certificate(
        net.spec.name, parameters, tuple(witnesses), tuple(skipped), batch, value, exact_view
    )
