"""The NumPy module: layer-level, vectorized code from ``templates/numpy``.

The template holds the matrix structure (Z = A W^T + b, dW = dZ^T A, dA = dZ W); SymPy
supplies only the elementwise kernels (each activation, its derivative, the output loss and
error), printed by ``printing.NumPyKernelPrinter`` with ``cse`` per kernel.  The result is
deterministic text: no timestamps, no absolute paths, sorted everything.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2
import sympy

from symbackprop import __version__
from symbackprop.derive import LP, Derivation, P, Z, derive, stable_form
from symbackprop.functions import A, Y
from symbackprop.primitives import NUMPY_HELPERS
from symbackprop.printing import inplace_statements
from symbackprop.spec import NetworkSpec


def template_dir() -> Path:
    """templates/ inside the installed package, else the checkout's top-level folder."""
    here = Path(__file__).resolve().parent
    for folder in (here / "templates", here.parent / "templates"):
        if (folder / "numpy").is_dir():
            return folder
    raise FileNotFoundError("symbackprop's templates folder is missing from the installation")


@lru_cache(maxsize=1)
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
class Plan:
    """In-place statements for one kernel, and the buffers they read."""

    lines: tuple[str, ...]
    arrays: tuple[str, ...]  # local names of the layer arrays the statements read
    array_fetch: tuple[str, ...]  # `A1 = ws["A1"]`: binds those names to workspace buffers
    temp_fetch: tuple[str, ...]  # `T1_0 = ws["T1_0"]`: the kernel's scratch buffers
    helpers: frozenset[str]

    @property
    def fetch(self) -> tuple[str, ...]:
        return self.array_fetch + self.temp_fetch


NO_PLAN = Plan((), (), (), (), frozenset())


def _plan(
    expr: sympy.Expr, names: dict[sympy.Symbol, str], buffers: dict[str, str], out: str, prefix: str
) -> Plan:
    """``expr`` written into ``out``; ``buffers`` maps each local name to its workspace key."""
    # custom expressions as written may overflow where their mathematics is finite
    lines, temps, helpers = inplace_statements(stable_form(expr), names, out, prefix)
    arrays = tuple(sorted({names[s] for s in expr.free_symbols if s in names}))
    array_fetch = tuple(f'{name} = ws["{buffers[name]}"]' for name in arrays if name in buffers)
    temp_fetch = tuple(f'{prefix}{i} = ws["{prefix}{i}"]' for i in range(temps))
    return Plan(tuple(lines), arrays, array_fetch, temp_fetch, frozenset(helpers))


def _helper_source(helpers: set[str]) -> list[str]:
    return [NUMPY_HELPERS[helper].rstrip("\n") for helper in sorted(helpers)]


LINE_LENGTH = 100  # the project's ruff setting, which generated modules pass


def _literal(value: object) -> str:
    """A constant as Python source: double-quoted strings, tuples with their comma."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        items = ", ".join(_literal(item) for item in value)
        return f"({items},)" if len(value) == 1 else f"({items})"
    return repr(value)


def _assignment(name: str, value: dict | tuple) -> str:
    """``name = value`` on one line when it fits, else one item per line."""
    if isinstance(value, dict):
        items = [f"{_literal(key)}: {_literal(item)}" for key, item in value.items()]
        one_line = f"{name} = {{{', '.join(items)}}}"
        brackets = "{}"
    else:
        items = [_literal(item) for item in value]
        one_line = f"{name} = {_literal(value)}"
        brackets = "()"
    if len(one_line) <= LINE_LENGTH:
        return one_line
    body = "".join(f"    {item},\n" for item in items)
    return f"{name} = {brackets[0]}\n{body}{brackets[1]}"


def _wrap(text: str, prefix: str = "", first: int = 0, width: int = 92) -> str:
    """text in lines of at most ``width`` characters, each after ``prefix``; the first line
    leaves room for ``first`` more (a docstring's quotes)."""
    lines = textwrap.wrap(
        text,
        width,
        initial_indent=prefix + " " * first,
        subsequent_indent=prefix,
        break_long_words=False,
    )
    lines[0] = prefix + lines[0][len(prefix) + first :]
    return "\n".join(lines)


def _predict(derivation: Derivation) -> tuple[str, str]:
    net = derivation.network
    outputs = net.sizes[-1]
    if net.loss.classification and not net.output.softmax:
        return "threshold", "0/1 labels: output > 0.5 (shape (batch,) for one output)."
    if net.loss.classification:
        return "argmax", "Class indices: the argmax of the outputs, shape (batch,)."
    return "outputs", f"The outputs, shape (batch, {outputs})."


def context(derivation: Derivation) -> dict[str, object]:
    net = derivation.network
    spec = net.spec
    sizes = spec.sizes
    depth = net.depth
    out = derivation.output
    helpers: set[str] = set()
    buffers: list[tuple[str, str]] = [("X", f"(batch, {sizes[0]})"), ("Y", f"(batch, {sizes[-1]})")]
    buffers.append(("S", "(batch, 1)"))
    layers = []
    for index, d in enumerate(derivation.layers, start=1):
        units = sizes[index]
        shape = f"(batch, {units})"
        alias = not d.activation.softmax and d.f == Z
        entry: dict[str, object] = {
            "index": index,
            "fan_in": sizes[index - 1],
            "units": units,
            "activation": d.activation.name,
            "input": "X" if index == 1 else layers[-1]["output"],
            "softmax": d.activation.softmax,
            "is_output": index == depth,
            "alias": alias,
            "output": f"Z{index}" if alias else f"A{index}",
            "prime_lines": [],
            "prime_arrays": (),
            "prime_fetch": [],
            "forward": [],
            "temps_fetch": [],
        }
        buffers.append((f"Z{index}", shape))
        if not alias:
            buffers.append((f"A{index}", shape))
        buffers.append((f"dZ{index}", shape))
        temps = 0
        local = {f"Z{index}": f"Z{index}", f"A{index}": f"Z{index}" if alias else f"A{index}"}
        if not alias and not d.activation.softmax:
            plan = _plan(d.f, {Z: f"Z{index}"}, local, f"A{index}", f"T{index}_")
            entry["forward"] = list(plan.lines)
            entry["temps_fetch"] = list(plan.temp_fetch)
            temps, helpers = max(temps, len(plan.temp_fetch)), helpers | plan.helpers
        if index < depth:
            prime = d.through_output if d.uses_output else d.derivative
            entry["eq_prime"] = derivation.number(f"activation.{d.activation.name}")
            if prime != 1:
                names = {A: entry["output"], Z: f"Z{index}"}
                plan = _plan(prime, names, local, "G", f"T{index}_")
                entry["prime_lines"] = list(plan.lines)
                entry["prime_fetch"] = list(plan.temp_fetch)
                entry["prime_arrays"] = plan.arrays
                temps, helpers = max(temps, len(plan.temp_fetch)), helpers | plan.helpers
                buffers.append((f"G{index}", shape))
        buffers += [(f"T{index}_{i}", shape) for i in range(temps)]
        buffers += [(f"dW{index}", f"({units}, {sizes[index - 1]})"), (f"db{index}", f"({units},)")]
        if spec.l2:
            buffers.append((f"R{index}", f"({units}, {sizes[index - 1]})"))
        layers.append(entry)

    # the output layer's kernels read these local names
    last = f"A{depth}"
    output_locals = {"LP": "LP", f"Z{depth}": f"Z{depth}", last: last}
    outputs_shape = f"(batch, {sizes[-1]})"
    names = {P: last, LP: "LP", Y: "Y", Z: f"Z{depth}", A: layers[-1]["output"]}
    fused_loss = out.softmax and sympy.expand(out.loss + LP * Y) == 0
    fused_q = out.softmax and out.q is not None and sympy.expand(out.q + Y) == 0
    loss_plan = _plan(out.loss, names, output_locals, "E", "U")
    if out.softmax:
        q_plan = _plan(out.q, names, output_locals, "E", "U")
        delta_plan = NO_PLAN
    else:
        q_plan = NO_PLAN
        delta_plan = _plan(out.delta, names, output_locals, f"dZ{depth}", "U")
    if out.softmax:
        buffers.append(("LP", outputs_shape))
    if not fused_loss or (out.softmax and not fused_q):
        buffers.append(("E", outputs_shape))
    used_plans = [delta_plan]
    if not fused_loss:
        used_plans.append(loss_plan)
    if out.softmax and not fused_q:
        used_plans.append(q_plan)
    output_temps = max(len(p.temp_fetch) for p in used_plans)
    buffers += [(f"U{i}", outputs_shape) for i in range(output_temps)]
    for plan in used_plans:
        helpers |= plan.helpers

    # _backward binds the layer outputs it reads: inputs of dW, and the f' arguments
    reads: set[str] = set()
    for entry in layers:
        if entry["index"] > 1:
            reads.add(entry["input"])
        reads |= set(entry["prime_arrays"])
    if out.softmax:
        reads.add(last)
    output_error = q_plan if out.softmax and not fused_q else delta_plan
    reads |= set(output_error.arrays) - {"Y", "LP"}
    by_layer = sorted(reads, key=lambda name: (int(name[1:]), name))
    backward_fetch = [f'{name} = ws["{name}"]' for name in by_layer]
    if "LP" in output_error.arrays:
        backward_fetch.append('LP = ws["LP"]')
    if out.softmax and not fused_q:
        backward_fetch.append('E = ws["E"]')

    predict, predict_doc = _predict(derivation)
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
    name = spec.name
    header = f'symbackprop {__version__}, from the spec named "{name}"; '
    header += "regenerate with symbackprop codegen."
    summary = f"{name}: forward pass, loss, gradients and trainer for a "
    summary += f"{'-'.join(map(str, sizes))} network."
    loss_text = f"Loss: {net.loss.name}, the batch mean of the per-sample loss"
    loss_text += " plus (l2/2) * sum of squared weights." if spec.l2 else "."
    conventions = (
        f"Conventions: X has shape (batch, {sizes[0]}); W<l> has shape (units_l, units_{{l-1}})"
        ' and b<l> has shape (units_l,); Z<l> = A<l-1> @ W<l>.T + b<l>.  "(eq. N)" cites'
        f" equation N of the derivation document (symbackprop derive {name}).  Needs NumPy only."
    )
    return {
        "version": __version__,
        "name": name,
        "header": _wrap(header, "# ", width=LINE_LENGTH),
        "summary": _wrap(summary, first=3),
        "loss_text": _wrap(loss_text),
        "conventions": _wrap(conventions),
        "sizes": sizes,
        "layer_sizes": _assignment("LAYER_SIZES", tuple(sizes)),
        "layers": layers,
        "loss_name": net.loss.name,
        "classification": net.loss.classification,
        "probability": net.output.probability,
        "l2": spec.l2 != 0.0,
        "l2_repr": repr(spec.l2),
        "weight_keys": _assignment("_WEIGHTS", tuple(f"W{i}" for i in range(1, depth + 1))),
        "train_defaults": _assignment("TRAIN_DEFAULTS", defaults),
        "shapes": _assignment("_SHAPES", shapes),
        "he_layers": _assignment("_HE_INIT", tuple(act.init == "he" for act in net.activations)),
        "helpers": _helper_source(helpers),
        "buffers": buffers,
        "softmax": out.softmax,
        "output_name": "P" if out.softmax else (f"Z{depth}" if layers[-1]["alias"] else last),
        "fused_loss": fused_loss,
        "fused_q": fused_q,
        "loss_fetch": [*loss_plan.fetch, 'E = ws["E"]'],
        "loss_lines": list(loss_plan.lines),
        "q_fetch": list(q_plan.temp_fetch),
        "q_lines": list(q_plan.lines),
        "delta_fetch": list(delta_plan.temp_fetch),
        "delta_lines": list(delta_plan.lines),
        "backward_fetch": backward_fetch,
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
