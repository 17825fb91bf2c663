"""The certificate: the generated gradients against independent witnesses, per parameter.

Witnesses (none shares code with the generated backward pass):
1. ``finite-diff``: central differences (the 4-point stencil, error O(h^4)) of the generated
   ``loss`` in float64.  Each entry gets its own step: scaled to the entry and to the
   largest input it multiplies, then halved until no sample's pre-activation (and no custom
   loss term) changes the side of a kink anywhere in the stencil, so that the witness is
   sound at any batch size;
2. ``exact``: SymPy's gradient evaluated in 40-digit arithmetic on the neuron-level graph
   (``symbackprop.exact.evaluate``: local ``sympy.diff`` per node, reverse accumulation,
   compiled once per network, up to ``GRAPH_LIMIT`` parameters); with batch norm the graph
   is the whole batch as one function.  The fully expanded composite (``exact_expanded``)
   is a teaching view and a test of this one, not a witness: its cost swells with depth;
3. ``pytorch``: autograd on the network built from each layer kind's torch equivalent
   (``layers.torch_forward``), when ``torch`` is installed (optional; never a dependency;
   imported only when this witness runs).

Every witness sees the same dropout masks: the module is called with a fresh generator
``mask_rng(seed)`` each time (its keyword ``rng``), and the exact and PyTorch witnesses get
the keep masks that generator draws (``layers.draw_masks``).  Only the trainable parameters
(the module's ``PARAMETERS``) are checked; batch norm's running statistics are state.

The error measure is per parameter array and normwise: max |g - r| / scale, with scale =
max(max |g|, max |r|, floor) over the entries compared, and the floor FLOOR * max(|L|, tiny)
* (the largest input the array multiplies; 1 for biases) tied to the loss's scale.  Entries
far below their array's norm (saturated units) are then judged by the accuracy float64 can
give them; a wrong entry of ordinary size or a missing factor still fails.  An array whose
gradient cancels far below the terms it sums (a bias just before batch norm: 0 exactly) has
the floor TERMS * (those terms' size, from the reference witness's own per-sample
adjoints).  A parameter passes when that measure is at most the witness's tolerance (finite
differences also allow the rounding of the loss divided by each entry's step).

Conv nets (DESIGN §2c) are certified the same way: X is (batch, C, H, W); the exact graph
has a linear node per conv output element over its receptive field (zero padding: missing
terms), max pools pass the value and gradient of the window's first maximum, average pools
are means and flatten renumbers in C order; PyTorch runs F.conv2d, F.max_pool2d,
F.avg_pool2d and flatten.

Every witness has an operation budget (sample x parameter products, exact-arithmetic
operations; a conv layer counts C kh kw products per output element,
``SymbolicNetwork.operations``): above it a witness runs on the first samples of the
batch only, which checks the same generated code; past ``WORK_LIMIT`` the certificate
refuses (InputError).  Finally the module is evaluated at large inputs (inputs x1e3, output
logits +-1e3): a loss or gradient that is inf/nan where the exact value is finite fails the
certificate.
"""

from __future__ import annotations

import importlib.util
import math
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import sympy

from symbackprop import exact, layers
from symbackprop.checkpoint import (
    FD_STEP,
    Forward,
    Probe,
    load_module,
    mask_rng,
    patches,
    point,
    point_masks,
)
from symbackprop.codegen import generate
from symbackprop.derive import Derivation, derive
from symbackprop.errors import InputError
from symbackprop.exact import Masks
from symbackprop.exact import exact_expanded as exact_expanded  # re-exported
from symbackprop.exact import local_partials as local_partials  # re-exported
from symbackprop.functions import YHAT, Activation
from symbackprop.functions import X as X_SYMBOL
from symbackprop.functions import Y as Y_SYMBOL
from symbackprop.graph import GRAPH_LIMIT, SymbolicNetwork
from symbackprop.spec import NetworkSpec

MAX_BATCH = 4096  # samples in a check batch at most
WORK_LIMIT = 250_000_000  # batch x parameters at most: the module's own pass at the point
FD_SAMPLE_LIMIT = 64  # entries per parameter checked by finite differences at most
FD_BUDGET = 1_000_000_000  # sample x parameter products of all finite-difference passes
LAYER_COST = 10_000  # the same unit: the interpreter's cost of one layer in one pass
EXACT_BUDGET = 50_000  # exact-arithmetic operations (per sample: parameters + 100/neuron)
NEURON_COST = 100  # an activation or loss node: SymPy evaluation, not a multiply-add
FD_HALVINGS = 30  # a step is halved at most this often to keep its stencil off kinks
TOLERANCE = {"finite-diff": 1e-6, "exact": 1e-8, "pytorch": 1e-8}
FLOOR = 1e-8  # of |L| x the array's input scale: below it an entry is "flat" for float64
TERMS = 1e-6  # of the terms an entry's gradient sums: where they cancel, float64 leaves ulps
LARGE = 1e3  # the large-input point: inputs x LARGE and output logits +-LARGE
LARGE_SAMPLES = 2


@dataclass(frozen=True)
class WitnessResult:
    witness: str
    max_abs: float
    max_rel: float  # the error measure: max |g - r| / max(max |g|, max |r|, floor)
    checked: int  # entries compared
    passed: bool


@dataclass(frozen=True)
class ParameterCheck:
    name: str
    shape: tuple[int, ...]
    results: tuple[WitnessResult, ...]

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def failures(self) -> list[WitnessResult]:
        return [r for r in self.results if not r.passed]


@dataclass(frozen=True)
class LargeInputs:
    """The generated module at large inputs: finite wherever the mathematics is."""

    points: tuple[str, ...]
    failures: tuple[str, ...] = ()  # inf/nan where the exact value is finite
    notes: tuple[str, ...] = ()  # inf/nan where float64 cannot hold the exact value either

    @property
    def passed(self) -> bool:
        return not self.failures


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
    large_inputs: LargeInputs | None = None
    work: int = 0  # sample x parameter products the float64 passes spent

    @property
    def passed(self) -> bool:
        large = self.large_inputs is None or self.large_inputs.passed
        return bool(self.parameters) and all(p.passed for p in self.parameters) and large

    def max_rel(self, witness: str) -> float:
        values = [r.max_rel for p in self.parameters for r in p.results if r.witness == witness]
        return max(values) if values else float("nan")

    def verdict(self) -> str:
        """The last line: PASS/FAIL, how many parameters agree, and the large-input row."""
        failed = sum(not p.passed for p in self.parameters)
        line = (
            f"{'PASS' if self.passed else 'FAIL'}: {len(self.parameters) - failed}/"
            f"{len(self.parameters)} parameters agree with every witness"
        )
        if self.large_inputs is not None and not self.large_inputs.passed:
            line += "; the module overflows at large inputs where the mathematics is finite"
        return line

    def large_input_row(self) -> str:
        large = self.large_inputs
        if large is None:
            return ""
        where = ", ".join(large.points)
        if large.passed:
            return f"large inputs: loss and gradients finite at {where}  pass"
        return "\n".join(["large inputs: FAIL", *(f"  {f}" for f in large.failures)])

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
        if self.large_inputs is not None:
            lines.append(self.large_input_row())
            lines.extend(self.large_inputs.notes)
        for witness, why in self.skipped:
            lines.append(f"skipped {witness}: {why}")
        lines.extend(self.notes)
        lines.append(self.verdict())
        return "\n".join(lines)

    def why_failed(self) -> str:
        """One line: which parameters failed with which witness, the errors, what to do."""
        parts = [
            f"{p.name} ({r.witness}: max abs err {r.max_abs:.2e}, rel {r.max_rel:.2e})"
            for p in self.parameters
            for r in p.failures()
        ]
        parts += [p.name + " (no witness)" for p in self.parameters if not p.results]
        if self.large_inputs is not None:
            parts += [f"large inputs ({f})" for f in self.large_inputs.failures]
        shown = parts[:4] + ([f"and {len(parts) - 4} more"] if len(parts) > 4 else [])
        advice = []
        if any(not p.passed for p in self.parameters):
            advice.append(
                "if the features are raw (unstandardized), saturated units make gradients "
                "too small for float64 to check: standardize the features (zero mean, unit "
                "variance)"
            )
        if self.large_inputs is not None and not self.large_inputs.passed:
            advice.append("write the overflowing expression so that it cannot overflow")
        return ", ".join(shown) + ("; " + "; ".join(advice) if advice else "")


# --- the cost model ---------------------------------------------------------------------------


def pass_cost(net: SymbolicNetwork, samples: int) -> int:
    """One float64 pass (loss or probe) over ``samples``: sample x parameter products, in
    which a conv layer counts C kh kw (+ 1) products per output element and a pool kh kw
    per pooled element (``SymbolicNetwork.operations``; the parameters of a flat net)."""
    return samples * net.operations + LAYER_COST * net.depth


def exact_cost(net: SymbolicNetwork) -> int:
    """Exact-arithmetic operations of the neuron-level witness per sample."""
    return net.operations + NEURON_COST * (sum(net.sizes[1:]) + 1)


def graph_reachable(net: SymbolicNetwork) -> bool:
    """Whether the neuron-level graph is within ``GRAPH_LIMIT`` (parameters, and for image
    layers operations per sample: a conv's graph has a term per tap of every output)."""
    return max(net.parameter_count, net.operations) <= GRAPH_LIMIT


def least_samples(net: SymbolicNetwork) -> int:
    """Batch norm normalizes over the batch: one sample is not a training batch there."""
    return 2 if net.couples_batch else 1


def module_rng(net: SymbolicNetwork | None, seed: int) -> dict:
    """The ``rng`` keyword of a module call: a fresh ``mask_rng(seed)`` each call, so that
    every call draws the certificate's masks; nothing for a network without dropout."""
    if net is None or not net.dropout_layers:
        return {}
    return {"rng": mask_rng(seed)}


# --- witness 1: finite differences -----------------------------------------------------------


@dataclass(frozen=True)
class Differences:
    indices: np.ndarray  # flat indices checked
    values: np.ndarray  # derivative estimates
    noise: np.ndarray  # rounding of the loss divided by each entry's step (absolute)
    at_kinks: int  # entries left out: no step kept their stencil off a kink


def finite_differences(
    module: types.ModuleType,
    params: dict,
    X: np.ndarray,
    Y: np.ndarray,
    seed: int,
    *,
    net: SymbolicNetwork | None = None,
    probe: Probe | None = None,
    entries: int = FD_SAMPLE_LIMIT,
    spent: list[int] | None = None,
) -> dict[str, Differences]:
    """Finite-difference estimates of up to ``entries`` entries per trainable parameter.

    Every loss is computed with the dropout masks of ``mask_rng(seed)`` (a fresh generator
    per call), so the stencil differentiates one function.
    """
    rng = np.random.default_rng(seed + 1)
    eps = np.finfo(np.float64).eps
    masks = point_masks(net, seed, len(X)) if net is not None else None
    trainable = net.spec.parameters if net is not None else params

    def loss() -> float:
        return module.loss(params, X, Y, **module_rng(net, seed))

    with np.errstate(all="ignore"):
        value = loss()
    noise_scale = 10 * eps * max(1.0, abs(value))  # each loss carries ~eps*|L| (10x margin)
    scales = probe.entry_scales(params, X, masks) if probe is not None else {}
    kinked = probe is not None and probe.has_kinks
    center = probe.pattern(params, X, Y, masks) if kinked else None
    cost = pass_cost(net, len(X)) if net is not None else 0
    out = {}
    for key in trainable:
        flat = params[key].reshape(-1)
        if flat.size <= entries:
            indices = np.arange(flat.size)
        else:
            indices = np.sort(rng.choice(flat.size, size=entries, replace=False))
        column = scales.get(key, np.ones(flat.size))
        kept, values, noise, at_kinks = [], [], [], 0
        for index in indices:
            original = flat[index]
            h = FD_STEP * max(1.0, abs(original)) / column[index]
            for _ in range(FD_HALVINGS + 1):
                if center is None:
                    break
                stable = True
                for k in (-2, -1, 1, 2):
                    flat[index] = original + k * h
                    if spent is not None:
                        spent[0] += cost
                    if not np.array_equal(probe.pattern(params, X, Y, masks), center):
                        stable = False
                        break
                flat[index] = original
                if stable:
                    break
                h /= 2
            else:
                at_kinks += 1
                continue
            f = {}
            with np.errstate(all="ignore"):
                for k in (-2, -1, 1, 2):
                    flat[index] = original + k * h
                    f[k] = loss()
            flat[index] = original
            if spent is not None:
                spent[0] += 4 * cost
            step = (original + h) - original  # the step actually taken in float64
            kept.append(index)
            values.append((8 * (f[1] - f[-1]) - (f[2] - f[-2])) / (12 * step))
            noise.append(noise_scale / step)
        out[key] = Differences(
            np.array(kept, dtype=np.int64), np.array(values), np.array(noise), at_kinks
        )
    return out


# --- witness 2: exact symbolic gradient (symbackprop.exact) ----------------------------------


def exact_loss_and_gradients(
    net: SymbolicNetwork,
    params: dict,
    X: np.ndarray,
    Y: np.ndarray,
    masks: Masks | None = None,
) -> tuple[float, dict[str, np.ndarray]]:
    """The neuron-level graph's mean loss and gradients, 40 digits (``exact.evaluate``)."""
    return exact.loss_and_gradients(net, params, X, Y, masks)


def exact_graph(
    net: SymbolicNetwork,
    params: dict,
    X: np.ndarray,
    Y: np.ndarray,
    masks: Masks | None = None,
    terms: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """The neuron-level graph's exact gradient (see ``exact_loss_and_gradients``).

    ``terms``, when given, receives each array's term sizes (``term_sizes``) from the exact
    adjoints.
    """
    result = exact.evaluate(net, params, X, Y, masks)
    if terms is not None:
        run = Probe(net).forward(params, X, masks)
        terms.update(term_sizes(net, run, exact.deltas(net, result)))
    return result.gradients


def term_sizes(
    net: SymbolicNetwork, run: Forward, deltas: dict[int, np.ndarray]
) -> dict[str, float]:
    """Per parameter array, the largest sum of |terms| one entry's gradient is made of.

    dW = sum over samples of delta a_in (per entry: sum |delta| |a_in|), db = sum of delta,
    dgamma = sum of dA x_hat, dbeta = sum of dA.  Where these sums cancel (a bias just
    before batch norm has the gradient 0 exactly, but its terms do not vanish), float64 can
    resolve an entry only to a few ulps of its terms, not of its own size.
    """
    sizes = {}
    for layer in net.flat:
        d = deltas.get(layer.index)
        if d is None:
            continue
        d = np.abs(d)
        index = layer.index
        if layer.kind == "dense":
            source = np.abs(run.outputs[layer.sources[0]])
            sizes[f"W{index}"] = float((d.T @ source).max(initial=0.0))
            sizes[f"b{index}"] = float(d.sum(axis=0).max(initial=0.0))
        elif layer.kind == "conv2d":  # every output position of a filter adds its terms
            d = d.reshape((len(d), *layer.shape))
            P = np.abs(patches(layer, run.outputs[layer.sources[0]]))
            sizes[f"W{index}"] = float(np.einsum("bfhw,bchwij->fcij", d, P).max(initial=0.0))
            if f"b{index}" in layers.parameters(layer):
                sizes[f"b{index}"] = float(d.sum(axis=(0, 2, 3)).max(initial=0.0))
        else:
            sizes[f"gamma{index}"] = float(
                (d * np.abs(run.normalized[index])).sum(axis=0).max(initial=0.0)
            )
            if f"beta{index}" in layers.parameters(layer):
                sizes[f"beta{index}"] = float(d.sum(axis=0).max(initial=0.0))
    return sizes


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


def torch_activation(torch: types.ModuleType, act: Activation, namespace: dict) -> Callable:
    """torch's own function for an activation: its registry entry's ``torch`` (name and
    keywords), else the built-in table, else (custom) its SymPy expression lambdified."""
    if act.torch is not None:
        name, keywords = act.torch
        fn = getattr(torch.nn.functional, name)  # a registry entry's name, never a spec's
        options = dict(keywords)
        return lambda v: fn(v, **options)
    fn = None if act.custom else _torch_activation(torch, act.name)
    if fn is None:
        fn = sympy.lambdify(X_SYMBOL, act.expr, modules=[namespace])
    return fn


def pytorch_gradients(
    net: SymbolicNetwork,
    params: dict,
    X: np.ndarray,
    Y: np.ndarray,
    masks: Masks | None = None,
    deltas: dict[int, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Autograd on the network built from each layer's ``layers.torch_forward`` in execution
    order, in training mode with the dropout keep ``masks``; batch norm reads copies of the
    running statistics (torch updates them in place).  The trainable parameters' gradients;
    ``deltas``, when given, receives d(mean loss)/d(node) per sample of every dense
    pre-activation and normalization output (``exact.deltas``' layout)."""
    import torch

    exact.check_masks(net, masks, len(X))
    F = torch.nn.functional
    namespace = _torch_namespace(torch)
    trainable = net.spec.parameters
    tensors = {
        k: torch.tensor(np.array(params[k]), dtype=torch.float64, requires_grad=True)
        for k in trainable
    }
    tensors.update(
        {k: torch.tensor(np.array(params[k]), dtype=torch.float64) for k in net.spec.state}
    )
    keep = {k: torch.tensor(np.asarray(m), dtype=torch.float64) for k, m in (masks or {}).items()}
    outputs = {0: torch.tensor(X, dtype=torch.float64)}
    out = net.output_layer
    nodes = {}  # dense pre-activations and normalization outputs: their adjoints
    for index in net.spec.order:
        layer = net.flat[index - 1]
        act = net.activations[index - 1]
        inputs = [outputs[s] for s in layer.sources]
        value = layers.torch_forward(layer, torch, tensors, inputs, masks=keep, training=True)
        if layers.parameters(layer):  # dense pre-activations, normalizations' outputs
            value.retain_grad()
            nodes[index] = value
        if act is not None and index != out.index:  # the output's activation: with the loss
            value = torch_activation(torch, act, namespace)(value)
        outputs[index] = value
    z = outputs[out.index]  # the output layer's pre-activation when it is dense
    act, loss = net.output, net.loss
    if act.softmax:
        log_p = F.log_softmax(z, dim=1)
        p = log_p.exp()
    else:
        p = torch_activation(torch, act, namespace)(z)
    batch = X.shape[0]
    target = torch.tensor(Y, dtype=torch.float64)
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
        value = value + 0.5 * net.spec.l2 * sum((tensors[k] ** 2).sum() for k in net.weight_keys)
    value.backward()
    if deltas is not None:
        for index, node in nodes.items():
            g = node.grad
            deltas[index] = np.zeros(tuple(node.shape)) if g is None else g.numpy().copy()
    grads = {}
    for k in trainable:
        g = tensors[k].grad
        grads[k] = np.zeros(trainable[k]) if g is None else g.numpy().copy()
    return grads


# --- the certificate -------------------------------------------------------------------------


def _floor(
    key: str, loss: float, scales: dict[str, float], terms: dict[str, float] | None = None
) -> float:
    """The absolute floor of an array's scale: FLOOR x |L| x the inputs it multiplies, or
    TERMS x the size of the terms its entries sum (``term_sizes``), whichever is larger."""
    magnitude = max(abs(loss), np.finfo(np.float64).tiny) if math.isfinite(loss) else 1.0
    floor = FLOOR * magnitude * scales.get(key, 1.0)
    if terms and math.isfinite(terms.get(key, 0.0)):
        floor = max(floor, TERMS * terms.get(key, 0.0))
    return floor


def _compare(
    witness: str,
    got: np.ndarray,
    reference: np.ndarray,
    floor: float,
    noise: np.ndarray | float = 0.0,
) -> WitnessResult:
    """Normwise: max |g - r| / max(max |g|, max |r|, floor) <= tol (plus noise / tol)."""
    tol = TOLERANCE[witness]
    got, reference = np.asarray(got, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    finite = bool(np.all(np.isfinite(got)) and np.all(np.isfinite(reference)))
    with np.errstate(all="ignore"):
        error = np.abs(got - reference)
        scale = max(
            float(np.abs(got).max(initial=0.0)), float(np.abs(reference).max(initial=0.0)), floor
        )
        rel = error / (scale + np.asarray(noise) / tol)
    max_abs = float(error.max(initial=0.0)) if finite else float("inf")
    max_rel = float(rel.max(initial=0.0)) if finite else float("inf")
    return WitnessResult(witness, max_abs, max_rel, int(got.size), finite and max_rel <= tol)


def torch_available() -> bool:
    """Whether ``torch`` is installed, without importing it (which takes seconds): the
    PyTorch witness imports it only when it runs (``_import_torch``)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a broken or half-installed package
        return False


def _import_torch() -> bool:
    """Imports torch for the PyTorch witness; False when the import fails."""
    try:
        import torch  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def check_arguments(batch: object, seed: object) -> None:
    """Bad batch or seed: an InputError naming the option."""
    for name, value, least in (("--batch", batch, 1), ("--seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            kind = "a positive" if least else "a non-negative"
            raise InputError(name, f"expected {kind} integer, got {value!r}")
    if batch > MAX_BATCH:
        raise InputError(
            "--batch",
            f"at most {MAX_BATCH} samples (the witnesses' cost grows with it), got {batch}",
        )


def _fd_plan(net: SymbolicNetwork, batch: int, kinked: bool) -> tuple[int, int]:
    """(samples, entries per parameter) of the finite-difference witness within FD_BUDGET.

    (0, 0) when not even one entry per parameter on the fewest samples fits.
    """
    passes = 8 if kinked else 4  # the loss at the stencil, and the probe for kinks
    sizes = [math.prod(shape) for shape in net.spec.parameters.values()]
    least = least_samples(net)
    for entries in (FD_SAMPLE_LIMIT, 16, 4, 1):
        needed = passes * sum(min(size, entries) for size in sizes)
        samples = batch
        while samples >= least:
            if needed * pass_cost(net, samples) <= FD_BUDGET:
                return samples, entries
            if samples == least:
                break
            samples = max(least, samples // 2)
    return 0, 0


def _large_points(
    net: SymbolicNetwork, params: dict, X: np.ndarray, Y: np.ndarray
) -> list[tuple[str, dict, np.ndarray, np.ndarray]]:
    """Inputs x LARGE, and (when the output layer is dense with a bias) the output logits
    shifted by +-LARGE (alternating per output)."""
    n = min(LARGE_SAMPLES, len(X))
    Xs, Ys = X[:n], Y[:n]
    points = [(f"inputs x{LARGE:g}", params, Xs * LARGE, Ys)]
    out = net.output_layer
    if out.kind != "dense" or not out.layer.bias:
        return points
    last = f"b{out.index}"
    signs = np.where(np.arange(params[last].size) % 2 == 0, 1.0, -1.0).reshape(params[last].shape)
    for sign, label in ((1.0, "+"), (-1.0, "-")):
        shifted = dict(params)  # only the last bias is new: the arrays may be large
        shifted[last] = params[last] + sign * LARGE * signs
        points.append((f"output logits {label}{LARGE:g}", shifted, Xs, Ys))
    return points


def large_inputs(
    module: types.ModuleType,
    net: SymbolicNetwork,
    params: dict,
    X: np.ndarray,
    Y: np.ndarray,
    seed: int = 0,
    exact_budget: int = EXACT_BUDGET,
) -> LargeInputs:
    """The module at large inputs; inf/nan where the exact value is finite is a failure.

    Dropout masks: those of ``mask_rng(seed)``, for the module and the exact value alike.
    The exact value is asked for within 4 x ``exact_budget`` operations.
    """
    points = _large_points(net, params, X, Y)
    failures, notes = [], []
    exact_reachable = (
        graph_reachable(net) and exact_cost(net) * LARGE_SAMPLES * len(points) <= 4 * exact_budget
    )
    for label, p, Xs, Ys in points:
        try:
            with np.errstate(all="ignore"):
                value, grads = module.gradients(p, Xs, Ys, **module_rng(net, seed))
        except (ArithmeticError, ValueError) as error:
            value, grads = float("nan"), {}
            notes.append(f"large inputs: {label}: the module raised {type(error).__name__}")
        bad = [("loss", value)] if not math.isfinite(value) else []
        bad += [(f"the gradient of {k}", g) for k, g in grads.items() if not np.all(np.isfinite(g))]
        if not bad and len(grads) == len(net.spec.parameters):
            continue
        what, got = bad[0] if bad else ("gradient", float("nan"))
        shown = "nan" if np.any(np.isnan(got)) else "inf"
        if not exact_reachable:
            notes.append(
                f"large inputs: {label}: the module's {what} is {shown}; the exact witness "
                "is out of reach for this network, so it is not known whether the "
                "mathematics is finite there"
            )
            continue
        masks = point_masks(net, seed, len(Xs))
        exact_value, exact_grads = exact_loss_and_gradients(net, p, Xs, Ys, masks)
        finite = math.isfinite(exact_value) and all(
            np.all(np.isfinite(g)) for g in exact_grads.values()
        )
        if finite:
            if what == "loss":
                truth = f"{exact_value:.4g}"
            else:
                key = what.rsplit(" ", 1)[-1]
                truth = f"largest entry {float(np.abs(exact_grads.get(key, 0.0)).max()):.4g}"
            failures.append(
                f"{label}: the module's {what} is {shown} where the exact value is finite "
                f"({truth}); write the expression so that it cannot overflow"
            )
        else:
            notes.append(
                f"large inputs: {label}: {what} is {shown}, and so is the exact value in "
                "float64 (the mathematics itself overflows there)"
            )
    return LargeInputs(tuple(label for label, *_ in points), tuple(failures), tuple(notes))


def _still_checking(fd_samples: int, use_torch: bool) -> str:
    """Which witnesses still check every layer when the exact one is skipped."""
    witnesses = (("finite differences", fd_samples), ("PyTorch", use_torch))
    names = [name for name, on in witnesses if on]
    return f"{' and '.join(names)} still check{'s' if len(names) == 1 else ''} every layer"


def _first(samples: int, batch: int) -> str:
    """'the first 12 of the 1000 samples', 'the first of the 4 samples'."""
    return f"the first {'' if samples == 1 else f'{samples} '}of the {batch} samples"


def certify(
    source: NetworkSpec | Derivation,
    *,
    batch: int = 4,
    seed: int = 0,
    module_source: str | None = None,
    use_torch: bool | None = None,
    data: tuple[np.ndarray, np.ndarray] | None = None,
    exact_budget: int = EXACT_BUDGET,
    progress: Callable[[float, str], None] | None = None,
) -> Certificate:
    """Run every witness on the generated module of a spec; see the module docstring.

    ``exact_budget``: the exact witness's operations (``exact_cost`` per sample); a caller
    with less time to spend (training) may give a smaller one.  ``progress(fraction, what)``,
    if given, is told as each witness starts (a terminal's progress bar).  Raises InputError
    for a bad batch or seed, and when the network is too large for the witnesses' operation
    budgets.
    """
    check_arguments(batch, seed)
    if isinstance(exact_budget, bool) or not isinstance(exact_budget, int) or exact_budget < 0:
        raise ValueError(f"exact_budget: expected a non-negative integer, got {exact_budget!r}")
    derivation = source if isinstance(source, Derivation) else derive(source)
    net = derivation.network
    count = net.parameter_count
    if batch < least_samples(net):
        raise InputError(
            "--batch",
            f"batch norm normalizes over the batch: a check batch needs at least "
            f"{least_samples(net)} samples, got {batch}",
        )
    work = net.operations
    what = f"{count} parameters" if work == count else f"{work:,} operations per sample"
    if least_samples(net) * work > WORK_LIMIT:
        raise InputError(
            "spec",
            f"{what} is too large for the certificate: its smallest check batch is over "
            f"the limit of {WORK_LIMIT:,} operations; check a smaller network",
        )
    if batch * work > WORK_LIMIT:
        raise InputError(
            "--batch",
            f"a check batch of {batch} x {what} is over the certificate's limit "
            f"of {WORK_LIMIT:,} sample-parameter products; use a smaller batch",
        )
    torch_why = "not requested" if use_torch is False else "torch is not importable (optional)"
    if use_torch is None:
        use_torch = torch_available()
    probe = Probe(net)
    arrays = len(net.spec.parameters)
    exact_samples = min(batch, exact_budget // exact_cost(net)) if graph_reachable(net) else 0
    if exact_samples < least_samples(net):
        exact_samples = 0
    fd_samples, entries = _fd_plan(net, batch, probe.has_kinks)
    if not fd_samples and not use_torch and not exact_samples:
        size = f"{count:,} parameters in {arrays} arrays"
        if net.operations > count:
            size += f" ({net.operations:,} operations per sample)"
        raise InputError(
            "spec",
            f"{size} is too large for the certificate "
            "without torch: finite differences would need more than "
            f"{FD_BUDGET:,} sample-parameter products; install torch (the PyTorch "
            "witness) or check a smaller network",
        )
    module = load_module(module_source or generate(derivation), net.spec.name)
    params, X, Y = point(net, batch, seed, data)
    batch = len(X)
    if batch < least_samples(net):
        raise InputError(
            "--batch", f"batch norm needs at least 2 samples, and the data has {batch}"
        )
    spent = [3 * pass_cost(net, batch)]
    stages = ["finite-diff"] * bool(fd_samples) + ["exact"] * bool(exact_samples)
    stages += ["pytorch"] * bool(use_torch) + ["large inputs"]

    def stage(what: str) -> None:
        if progress is not None:
            progress(stages.index(what) / len(stages), what)

    with np.errstate(all="ignore"):
        value, grads = module.gradients(params, X, Y, **module_rng(net, seed))
    prefix = {batch: (value, grads)}

    def module_on(samples: int) -> tuple[float, dict]:
        if samples not in prefix:
            spent[0] += 3 * pass_cost(net, samples)
            with np.errstate(all="ignore"):
                prefix[samples] = module.gradients(
                    params, X[:samples], Y[:samples], **module_rng(net, seed)
                )
        return prefix[samples]

    trainable = tuple(net.spec.parameters)
    scales = probe.input_scales(params, X, point_masks(net, seed, batch))
    results: dict[str, list[WitnessResult]] = {k: [] for k in trainable}
    witnesses: list[str] = []
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []

    if fd_samples:
        stage("finite-diff")
        witnesses.append("finite-diff")
        Xf, Yf = X[:fd_samples], Y[:fd_samples]
        fd_value, fd_grads = module_on(fd_samples)
        differences = finite_differences(
            module, params, Xf, Yf, seed, net=net, probe=probe, entries=entries, spent=spent
        )
        at_kinks = 0
        for key, d in differences.items():
            got = fd_grads[key].reshape(-1)[d.indices]
            floor = _floor(key, fd_value, scales)
            results[key].append(_compare("finite-diff", got, d.values, floor, d.noise))
            at_kinks += d.at_kinks
        if fd_samples < batch or entries < FD_SAMPLE_LIMIT:
            notes.append(
                f"finite-diff: at most {entries} entries per parameter on "
                f"{_first(fd_samples, batch)} (operation budget)"
            )
        if at_kinks:
            notes.append(
                f"finite-diff: {at_kinks} entries left out: a pre-activation sits on a kink"
            )
    else:
        skipped.append(
            (
                "finite-diff",
                f"over its budget of {FD_BUDGET:,} sample-parameter products for "
                f"{count:,} parameters in {arrays} arrays"
                + (
                    f" ({net.operations:,} operations per sample)" if net.operations > count else ""
                ),
            )
        )

    exact_view = ""
    if exact_samples:
        stage("exact")
        witnesses.append("exact")
        exact_view = "the neuron-level graph (reverse accumulation, 40 digits)"
        if net.couples_batch:
            exact_view = "the neuron-level graph of the batch (reverse accumulation, 40 digits)"
        if exact_samples < batch:
            exact_view += f" on {_first(exact_samples, batch)}"
        ex_value, ex_grads = module_on(exact_samples)
        masks = point_masks(net, seed, exact_samples)
        terms: dict[str, float] = {}
        Xe, Ye = X[:exact_samples], Y[:exact_samples]
        reference = exact_graph(net, params, Xe, Ye, masks, terms=terms)
        for key in trainable:
            floor = _floor(key, ex_value, scales, terms)
            results[key].append(_compare("exact", ex_grads[key], reference[key], floor))
    elif count > GRAPH_LIMIT:
        skipped.append(
            (
                "exact",
                f"{count} parameters is above the neuron-level limit of {GRAPH_LIMIT}; "
                f"{_still_checking(fd_samples, use_torch)}",
            )
        )
    elif not graph_reachable(net):
        skipped.append(
            (
                "exact",
                f"{net.operations:,} operations per sample (conv taps and pooled entries) "
                f"is above the neuron-level limit of {GRAPH_LIMIT:,}; "
                f"{_still_checking(fd_samples, use_torch)}",
            )
        )
    else:
        need = least_samples(net)
        who = "one sample needs" if need == 1 else f"{need} samples (batch norm couples them) need"
        skipped.append(
            (
                "exact",
                f"{who} {need * exact_cost(net):,} exact operations, over its budget of "
                f"{exact_budget:,}",
            )
        )

    if use_torch and not _import_torch():
        use_torch, torch_why = False, "torch is not importable (optional)"
    if use_torch:
        stage("pytorch")
        witnesses.append("pytorch")
        spent[0] += 3 * pass_cost(net, batch)
        masks = point_masks(net, seed, batch)
        deltas: dict[int, np.ndarray] = {}
        reference = pytorch_gradients(net, params, X, Y, masks, deltas)
        with np.errstate(all="ignore"):
            terms = term_sizes(net, probe.forward(params, X, masks), deltas)
        for key in trainable:
            floor = _floor(key, value, scales, terms)
            results[key].append(_compare("pytorch", grads[key], reference[key], floor))
    else:
        skipped.append(("pytorch", torch_why))

    stage("large inputs")
    large = large_inputs(module, net, params, X, Y, seed, exact_budget)
    spent[0] += 3 * 3 * pass_cost(net, LARGE_SAMPLES)
    parameters = tuple(ParameterCheck(k, params[k].shape, tuple(v)) for k, v in results.items())
    return Certificate(
        net.spec.name,
        parameters,
        tuple(witnesses),
        tuple(skipped),
        batch,
        value,
        exact_view,
        tuple(notes),
        large,
        spent[0],
    )
