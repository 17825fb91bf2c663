"""The NumPy module: layer-level, vectorized code from ``templates/numpy``.

The template holds the matrix structure (Z = A W^T + b, dW = dZ^T A, dA = dZ W); SymPy
supplies only the elementwise kernels (each activation, its derivative, the output loss and
error), printed by ``printing.NumPyKernelPrinter`` with ``cse`` per kernel.  The result is
deterministic text: no timestamps, no absolute paths, sorted everything.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import jinja2
import sympy

from symbackprop import __version__
from symbackprop.derive import LP, Derivation, P, Z, derive
from symbackprop.functions import A, Y
from symbackprop.numpy_erf import _erf
from symbackprop.primitives import NUMPY_HELPERS
from symbackprop.printing import kernel_lines
from symbackprop.spec import NetworkSpec

NAMES = {Z: "Z", A: "A", Y: "Y", P: "P", LP: "LP"}


def template_dir() -> Path:
    """templates/ inside the installed package, else the checkout's top-level folder."""
    here = Path(__file__).resolve().parent
    for folder in (here / "templates", here.parent / "templates"):
        if (folder / "numpy").is_dir():
            return folder
    raise FileNotFoundError("symbackprop's templates folder is missing from the installation")


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


@dataclass(frozen=True)
class Kernel:
    name: str
    args: tuple[str, ...]
    lines: tuple[str, ...]
    result: str
    doc: str
    helpers: frozenset[str]


def _kernel(name: str, expr: sympy.Expr, args: tuple[str, ...], doc: str) -> Kernel:
    lines, results, helpers = kernel_lines([expr], NAMES)
    return Kernel(name, args, tuple(lines), results[0], doc, frozenset(helpers))


def _args(expr: sympy.Expr, order: tuple[sympy.Symbol, ...]) -> tuple[str, ...]:
    """The array arguments a kernel needs, in a fixed order (at least one)."""
    used = tuple(NAMES[s] for s in order if s in expr.free_symbols)
    return used or (NAMES[order[0]],)


def _kernel_name(derivation: Derivation, layer: int) -> str:
    act = derivation.layers[layer].activation
    return f"_custom_{act.name}" if act.custom else f"_{act.name}"


def context(derivation: Derivation) -> dict[str, object]:
    net = derivation.network
    spec = net.spec
    sizes = spec.sizes
    kernels: dict[str, Kernel] = {}
    layers = []
    for index, d in enumerate(derivation.layers, start=1):
        name = _kernel_name(derivation, index - 1)
        entry = {
            "index": index,
            "fan_in": sizes[index - 1],
            "units": sizes[index],
            "activation": d.activation.name,
            "input": "X" if index == 1 else f"A{index - 1}",
            "softmax": d.activation.softmax,
            "is_output": index == net.depth,
            "kernel": name,
        }
        if not d.activation.softmax and name not in kernels:
            kernels[name] = _kernel(name, d.f, ("Z",), f"a = {d.activation.name}(z), elementwise")
        if index < net.depth:
            prime = d.through_output if d.uses_output else d.derivative
            symbol = A if d.uses_output else Z
            eq = derivation.number(f"activation.{d.activation.name}")
            if f"{name}_derivative" not in kernels:
                written = "a = f(z)" if d.uses_output else "z"
                kernels[f"{name}_derivative"] = _kernel(
                    f"{name}_derivative",
                    prime,
                    (NAMES[symbol],),
                    f"f'(z) of {d.activation.name}, written in {written} (eq. {eq})",
                )
            entry["prime_kernel"] = f"{name}_derivative"
            entry["prime_arg"] = f"{NAMES[symbol]}{index}"
            entry["eq_prime"] = eq
        layers.append(entry)

    out = derivation.output
    depth = net.depth
    if out.softmax:
        assert out.q is not None
        loss_order = (P, LP, Y)
        loss_kernel = _kernel(
            "_loss_terms", out.loss, _args(out.loss, loss_order), "per-output loss"
        )
        q_kernel = _kernel("_q", out.q, _args(out.q, loss_order), "q = yhat * dl/dyhat")
        kernels["_loss_terms"] = loss_kernel
        kernels["_q"] = q_kernel
        array = {"P": f"A{depth}", "LP": f"LP{depth}", "Y": "Y"}
        q_args = [array[a] for a in q_kernel.args]
    else:
        assert out.delta is not None
        loss_order = (Z, A, Y)
        loss_kernel = _kernel(
            "_loss_terms", out.loss, _args(out.loss, loss_order), "per-output loss"
        )
        delta_kernel = _kernel(
            "_output_error", out.delta, _args(out.delta, loss_order), "dl/dz of the output layer"
        )
        kernels["_loss_terms"] = loss_kernel
        kernels["_output_error"] = delta_kernel
        array = {"Z": f"Z{depth}", "A": f"A{depth}", "Y": "Y"}
        q_args = []
    loss_args = [array[a] for a in loss_kernel.args if a != "Y"]
    loss_call = f"_loss_terms({', '.join(array[a] for a in loss_kernel.args)})"
    delta_args = [array[a] for a in kernels["_output_error"].args] if not out.softmax else []
    # _forward returns what _gradients uses, and the output last (for forward());
    # names _gradients does not read are unpacked with a leading underscore.
    used = set(loss_args) | set(q_args) | set(delta_args)
    if out.softmax:
        used.add(f"A{depth}")
    for entry in layers:
        if entry["index"] > 1:
            used.add(entry["input"])
        if "prime_arg" in entry:
            used.add(entry["prime_arg"])
    order = []
    for entry in layers:
        order += [f"Z{entry['index']}", f"LP{entry['index']}", f"A{entry['index']}"]
    cache = [n for n in order if n in used or n == f"A{depth}"]
    if cache[-1] != f"A{depth}":
        cache.remove(f"A{depth}")
        cache.append(f"A{depth}")
    unpack = [n if n in used else f"_{n}" for n in cache]
    loss_indices = [cache.index(n) for n in loss_args]

    helper_names = sorted(set().union(*(k.helpers for k in kernels.values())))
    helpers = []
    for helper in helper_names:
        if helper == "_erf":
            helpers.append(inspect.getsource(_erf).rstrip("\n"))
        else:
            helpers.append(NUMPY_HELPERS[helper].rstrip("\n"))

    classification = net.loss.classification
    if (
        classification
        and not (net.output.softmax or sizes[-1] == 1)
        or net.loss.name == "binary_cross_entropy"
    ):
        predict = "threshold"
        predict_doc = "0/1 labels: output > 0.5 (shape (batch,) for one output)."
    elif classification:
        predict = "argmax"
        predict_doc = "Class indices: the argmax of the outputs, shape (batch,)."
    else:
        predict = "outputs"
        predict_doc = f"The outputs, shape (batch, {sizes[-1]})."
    shapes = {}
    for index in range(1, depth + 1):
        shapes[f"W{index}"] = (sizes[index], sizes[index - 1])
        shapes[f"b{index}"] = (sizes[index],)
    train = spec.train
    defaults = {
        "optimizer": train.optimizer,
        "lr": train.lr,
        "epochs": train.epochs,
        "batch_size": train.batch_size,
        "seed": train.seed,
        "momentum": train.momentum,
        "beta1": train.beta1,
        "beta2": train.beta2,
        "eps": train.eps,
    }
    return {
        "version": __version__,
        "name": spec.name,
        "sizes": sizes,
        "sizes_text": "-".join(map(str, sizes)),
        "sizes_tuple": repr(tuple(sizes)),
        "layers": layers,
        "loss_name": net.loss.name,
        "classification": classification,
        "probability": net.output.probability,
        "l2": spec.l2 != 0.0,
        "l2_repr": repr(spec.l2),
        "train_defaults": repr(defaults),
        "shapes": repr(shapes),
        "he_layers": repr(tuple(act.init == "he" for act in net.activations)),
        "helpers": helpers,
        "kernels": list(kernels.values()),
        "softmax": net.output.softmax,
        "cache_names": cache,
        "grad_unpack": unpack,
        "loss_from_cache": ", ".join(f"cache[{i}]" for i in loss_indices),
        "loss_args": loss_args,
        "loss_call": loss_call,
        "q_args": q_args,
        "delta_args": delta_args,
        "predict": predict,
        "predict_doc": predict_doc,
        "eq_linear": derivation.number("forward.linear"),
        "eq_activation": derivation.number("forward.activation"),
        "eq_softmax": derivation.number("forward.softmax") if net.output.softmax else 0,
        "eq_loss": derivation.number("loss"),
        "eq_delta_output": derivation.number("delta.output"),
        "eq_delta_hidden": derivation.number("delta.hidden"),
        "eq_grad_w": derivation.number("grad.W"),
        "eq_grad_b": derivation.number("grad.b"),
        "eq_update": derivation.number("update"),
    }


def generate(source: NetworkSpec | Derivation) -> str:
    """The module's source text for a spec (validated on the way) or a derivation."""
    derivation = source if isinstance(source, Derivation) else derive(source)
    return environment().get_template("numpy/module.py.j2").render(context(derivation))
