"""The NumPy module: layer-level, vectorized code from ``templates/numpy``.

The template holds the matrix structure (Z = A W^T + b, dW = dZ^T A, dA = dZ W); SymPy
supplies only the elementwise kernels (each activation, its derivative, the output loss and
error), printed by ``printing.NumPyKernelPrinter`` with ``cse`` per kernel.  The result is
deterministic text: no timestamps, no absolute paths, sorted everything.
"""

from __future__ import annotations

import inspect
import json
import textwrap
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import jinja2
import sympy

from symbackprop import __version__
from symbackprop.derive import LP, ActivationDerivative, Derivation, P, Z, derive, stable_form
from symbackprop.functions import A, Y
from symbackprop.initialize import _initialize, init_table
from symbackprop.layers import LAYERS
from symbackprop.primitives import NUMPY_HELPERS, relu, step
from symbackprop.printing import inplace_statements
from symbackprop.scalar import SCALAR_HELPERS, step_source
from symbackprop.spec import IMAGE_KINDS, FlatLayer, NetworkSpec, layer_parameters


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


@lru_cache(maxsize=1)
def module_template() -> jinja2.Template:
    """The module template, compiled once per process (its first compile is ~0.1 s)."""
    return environment().get_template("numpy/module.py.j2")


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


def _never_negative(f: sympy.Expr) -> bool:
    """f(z) >= 0 for every real z (ReLU), so that step(f) = sign(f)."""
    # relu carries no sign assumption of its own, so it is named here
    return isinstance(f, relu) or bool(f.is_nonnegative)


def _step_as_sign(prime: sympy.Expr, f: sympy.Expr) -> sympy.Expr:
    """f' through a = f(z) with step(a) written sign(a) when a is never negative: one ufunc
    instead of step's two (sign, then max with 0), the same numbers (sign(0) = 0)."""
    if not _never_negative(f):
        return prime
    return prime.replace(lambda e: isinstance(e, step) and e.args[0] == A, lambda e: sympy.sign(A))


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


def _class_count(derivation: Derivation) -> int:
    """How many class names a params["classes"] entry holds: one per output, two for one
    sigmoid output (0 and 1); 0 when the loss is not a classification loss."""
    net = derivation.network
    if not net.loss.classification:
        return 0
    return 2 if net.sizes[-1] == 1 else net.sizes[-1]


@dataclass(frozen=True)
class LayerCode:
    """What the template blocks of one layer read (templates/numpy/layers/<kind>.py.j2)."""

    index: int
    kind: str
    fan_in: int
    units: int
    input: str  # the local name of the array it reads (X for layer 1)
    output: str  # the local name of its output array
    grad: str  # its output gradient's buffer: dZ<l> for dense (dL/da, then dL/dz), dA<l> else
    is_output: bool
    activation: str = ""
    bias: bool = True
    softmax: bool = False
    alias: bool = False
    forward: tuple[str, ...] = ()
    temps_fetch: tuple[str, ...] = ()
    prime_lines: tuple[str, ...] = ()
    prime_fetch: tuple[str, ...] = ()
    prime_arrays: tuple[str, ...] = ()
    eq_prime: int = 0
    l2: bool = False
    block_output: str = ""  # residual: its block's output array
    fields: dict[str, object] = field(default_factory=dict)  # the kind's own (layers.py)
    eqs: dict[str, int] = field(default_factory=dict)  # its equations: suffix -> number
    # the gradient it sends back: (buffer of the source layer, first writer?) per source
    sends: tuple[tuple[str, bool], ...] = ()
    receives_from: int = 0  # a dense layer whose W^T delta this block receives first thing
    receives_first: bool = True
    params: tuple[str, ...] = ()  # its trainable parameters (PARAMETERS' keys)

    @property
    def template(self) -> str:
        return LAYERS[self.kind].template


ACTIVATED = ("dense", "conv2d")  # the kinds with an activation: Z, A = f(Z), dZ


def _output_name(layer: FlatLayer, d: ActivationDerivative | None) -> str:
    if layer.kind in ACTIVATED:
        alias = d is not None and not d.activation.softmax and d.f == Z
        return f"Z{layer.index}" if alias else f"A{layer.index}"
    return f"A{layer.index}"


def _grad_name(layer: FlatLayer) -> str:
    return f"dZ{layer.index}" if layer.kind in ACTIVATED else f"dA{layer.index}"


def _kind_eqs(derivation: Derivation, kind: str) -> dict[str, int]:
    """A kind's equations: key suffix -> number."""
    prefix = f"{kind}."
    return {
        e.key[len(prefix) :]: e.number for e in derivation.equations if e.key.startswith(prefix)
    }


def _add_buffers(
    rows: list[tuple[str, str, str | None]], buffers: list[tuple[str, str]], fixed: dict[str, str]
) -> None:
    """A kind's workspace arrays into ``buffers``; those of their own dtype into ``fixed``."""
    for buffer, shape_text, own in rows:
        buffers.append((buffer, shape_text))
        if own is not None:
            fixed[buffer] = own


def context(derivation: Derivation) -> dict[str, object]:
    net = derivation.network
    spec = net.spec
    flat = spec.flat
    sizes = spec.sizes
    out = derivation.output
    out_layer = spec.output_layer
    backward_order = tuple(reversed(spec.order))
    helpers: set[str] = set()
    batch_shape = "(batch, {})".format
    image = spec.image
    x_shape = ", ".join(map(str, spec.input_shape))
    buffers: list[tuple[str, str]] = [("X", f"(batch, {x_shape})"), ("Y", f"(batch, {sizes[-1]})")]
    buffers.append(("S", "(batch, 1)"))
    fixed: dict[str, str] = {}  # buffers of their own dtype (dropout's uniforms and masks)
    eq = {
        "linear": derivation.number("forward.linear"),
        "activation": derivation.number("forward.activation"),
        "softmax": derivation.number("forward.softmax") if net.output.softmax else 0,
        "delta_hidden": derivation.number("delta.hidden") if net.depth > 1 else 0,
        "grad_w": derivation.number("grad.W"),
        "grad_b": derivation.number("grad.b"),
    }

    names = {layer.index: _output_name(layer, derivation.layers[layer.index - 1]) for layer in flat}
    names[0] = "X"
    # who sends a gradient to each layer, in backward order: the first one writes, the others add
    consumers: dict[int, list[int]] = {layer.index: [] for layer in flat}
    for index in backward_order:
        for source in flat[index - 1].sources:
            if source:
                consumers[source].append(index)
    codes: dict[int, LayerCode] = {}
    for layer in flat:
        index, units = layer.index, layer.units
        shape = batch_shape(units)
        d = derivation.layers[index - 1]
        sends = []
        for source in layer.sources:
            if source:
                first = consumers[source][0] == index
                sends.append((_grad_name(flat[source - 1]), first))
        common = {
            "index": index,
            "kind": layer.kind,
            "fan_in": layer.fan_in,
            "units": units,
            "input": names[layer.sources[0]],
            "output": names[index],
            "grad": _grad_name(layer),
            "is_output": index == out_layer.index,
            "sends": tuple(sends),
            "params": tuple(layer_parameters(layer)),
        }
        if layer.kind in ACTIVATED:
            if d is None:  # pragma: no cover - derive gives every such layer its f'
                raise RuntimeError(
                    f"layer {index} is {layer.kind} but has no activation derivative"
                )
            if layer.kind == "conv2d":  # (filters, rows, columns, batch) arrays
                _, rows, columns = layer.shape
                shape = f"({layer.layer.filters}, {rows}, {columns}, batch)"
            alias = names[index] == f"Z{index}"
            entry: dict[str, object] = {
                "activation": d.activation.name,
                "bias": layer.layer.bias,
                "softmax": d.activation.softmax,
                "alias": alias,
                "l2": bool(spec.l2),
            }
            buffers.append((f"Z{index}", shape))
            if not alias:
                buffers.append((f"A{index}", shape))
            buffers.append((f"dZ{index}", shape))
            temps = 0
            local = {f"Z{index}": f"Z{index}", f"A{index}": names[index]}
            if not alias and not d.activation.softmax:
                plan = _plan(d.f, {Z: f"Z{index}"}, local, f"A{index}", f"T{index}_")
                entry["forward"] = plan.lines
                entry["temps_fetch"] = plan.temp_fetch
                temps, helpers = max(temps, len(plan.temp_fetch)), helpers | plan.helpers
            if index != out_layer.index:
                prime = d.through_output if d.uses_output else d.derivative
                if d.uses_output:
                    prime = _step_as_sign(prime, d.f)
                entry["eq_prime"] = derivation.number(f"activation.{d.activation.name}")
                if prime != 1:
                    arrays = {A: names[index], Z: f"Z{index}"}
                    plan = _plan(prime, arrays, local, "G", f"T{index}_")
                    entry["prime_lines"] = plan.lines
                    entry["prime_fetch"] = plan.temp_fetch
                    entry["prime_arrays"] = plan.arrays
                    temps, helpers = max(temps, len(plan.temp_fetch)), helpers | plan.helpers
                    buffers.append((f"G{index}", shape))
            buffers += [(f"T{index}_{i}", shape) for i in range(temps)]
            if layer.kind == "conv2d":
                kind = LAYERS[layer.kind]
                entry["fields"] = kind.fields(layer)
                entry["eqs"] = _kind_eqs(derivation, layer.kind)
                _add_buffers(kind.buffers(layer), buffers, fixed)
                weight = spec.parameters[f"W{index}"]
                buffers.append((f"dW{index}", str(weight)))
                if layer.layer.bias:
                    buffers.append((f"db{index}", f"({layer.layer.filters},)"))
                if spec.l2:
                    buffers.append((f"R{index}", str(weight)))
                codes[index] = LayerCode(**common, **entry)  # type: ignore[arg-type]
                continue
            if any(not first for _, first in sends):
                buffers.append((f"T{index}_in", batch_shape(layer.fan_in)))
            buffers.append((f"dW{index}", f"({units}, {layer.fan_in})"))
            if layer.layer.bias:
                buffers.append((f"db{index}", f"({units},)"))
            if spec.l2:
                buffers.append((f"R{index}", f"({units}, {layer.fan_in})"))
        else:  # every other kind: its registry entry says what its template block needs
            kind = LAYERS[layer.kind]
            entry = {"fields": kind.fields(layer)}
            if layer.kind == "residual":
                entry["block_output"] = names[layer.sources[1]]
            entry["eqs"] = _kind_eqs(derivation, layer.kind)
            _add_buffers(kind.buffers(layer), buffers, fixed)
        codes[index] = LayerCode(**common, **entry)  # type: ignore[arg-type]

    for code in codes.values():  # an image has one reader: its send writes, never adds
        if code.kind in IMAGE_KINDS and not all(first for _, first in code.sends):
            raise RuntimeError(f"layer {code.index}: an image layer's input has two readers")
    # a dense layer's W^T delta is received by the layer it reads, first thing in its block
    # (that layer comes next in the backward order), so the block reads as the recursion
    for layer in flat:
        code = codes[layer.index]
        if code.kind == "dense" and code.sends:
            source = layer.sources[0]
            codes[source] = replace(
                codes[source], receives_from=layer.index, receives_first=code.sends[0][1]
            )

    # the output layer's kernels read these local names
    last = names[out_layer.index]
    out_index = out_layer.index
    z_out = f"Z{out_index}" if out_layer.kind == "dense" else last
    output_locals = {"LP": "LP", z_out: z_out, last: last}
    outputs_shape = f"(batch, {sizes[-1]})"
    kernel_names = {P: last, LP: "LP", Y: "Y", Z: z_out, A: last}
    fused_loss = out.softmax and sympy.expand(out.loss + LP * Y) == 0
    fused_q = out.softmax and out.q is not None and sympy.expand(out.q + Y) == 0
    loss_plan = _plan(out.loss, kernel_names, output_locals, "E", "U")
    grad_out = _grad_name(out_layer)
    if out.softmax:
        q_plan = _plan(out.q, kernel_names, output_locals, "E", "U")
        delta_plan = NO_PLAN
    else:
        q_plan = NO_PLAN
        delta_plan = _plan(out.delta, kernel_names, output_locals, grad_out, "U")
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
    for code in codes.values():
        if code.kind == "dense":
            if code.input != "X":
                reads.add(code.input)
        if code.kind in ACTIVATED:
            reads |= set(code.prime_arrays)
    if out.softmax:
        reads.add(last)
    output_error = q_plan if out.softmax and not fused_q else delta_plan
    reads |= set(output_error.arrays) - {"Y", "LP"}
    by_layer = sorted(reads, key=lambda name: (int(name.lstrip("AZ")), name))
    backward_fetch = [f'{name} = ws["{name}"]' for name in by_layer]
    if "LP" in output_error.arrays:
        backward_fetch.append('LP = ws["LP"]')
    if out.softmax and not fused_q:
        backward_fetch.append('E = ws["E"]')

    names_seen = [name for name, _ in buffers]
    if len(set(names_seen)) != len(names_seen):  # pragma: no cover - a registry mistake
        twice = sorted({name for name in names_seen if names_seen.count(name) > 1})
        raise RuntimeError(f"two workspace buffers share a name: {', '.join(twice)}")
    predict, predict_doc = _predict(derivation)
    scalar = step_source(derivation)
    scalar_code, scalar_helpers = scalar if scalar is not None else ("", ())
    shapes = {**spec.parameters, **spec.state}
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
        "alpha": train.alpha,
        "schedule": train.schedule,
        "step_size": train.step_size,
        "gamma": train.gamma,
        "min_lr": train.min_lr,
    }
    name = spec.name
    header = f'symbackprop {__version__}, from the spec named "{name}"; '
    header += "regenerate with symbackprop codegen."
    summary = f"{name}: forward pass, loss, gradients and trainer for a "
    summary += f"{spec.shape_text()} network."
    loss_text = f"Loss: {net.loss.name}, the batch mean of the per-sample loss"
    loss_text += " plus (l2/2) * sum of squared weights." if spec.l2 else "."
    conventions = (
        f"Conventions: X has shape (batch, {sizes[0]}); W<l> has shape (units_l, units_{{l-1}})"
        ' and b<l> has shape (units_l,); Z<l> = A<l-1> @ W<l>.T + b<l>.  "(eq. N)" cites'
        f" equation N of the derivation document (symbackprop derive {name}).  Needs NumPy only."
    )
    if image:
        conventions = (
            f"Conventions: X has shape (batch, {x_shape}) as in PyTorch (a flat (batch,"
            f" {sizes[0]}) array is read in C order); a conv2d layer's W<l> has shape (filters,"
            " channels, kernel rows, kernel columns) and b<l> (filters,), a dense layer's W<l>"
            " (units_l, units_{l-1}) and b<l> (units_l,), as torch.nn.Conv2d and nn.Linear"
            " hold them.  Inside, images are (channels, rows, columns, batch) arrays, so that"
            ' a convolution is one matrix product with the im2col columns.  "(eq. N)" cites'
            f" equation N of the derivation document (symbackprop derive {name}).  Needs NumPy"
            " only."
        )
    modes = any(LAYERS[layer.kind].modes for layer in flat)
    random = any(layer.kind == "dropout" and layer.layer.rate for layer in flat)
    batch_norms = [codes[layer.index] for layer in flat if layer.kind == "batch_norm"]
    summaries = []
    for layer in flat:
        code = codes[layer.index]
        if layer.kind == "dense":
            text = f"{layer.fan_in} -> {layer.units}, activation {code.activation}"
        elif layer.kind == "residual":
            block = layer.sources[1]
            text = f"residual: the input plus the output of layers {layer.index + 1}-{block}"
        elif layer.kind == "dropout":
            text = f"dropout, rate {layer.layer.rate!r}"
        elif layer.kind in ("conv2d", "max_pool2d", "avg_pool2d"):
            item = layer.layer
            text = f"{layer.kind} " + "x".join(map(str, layer.in_shape)) + " -> "
            text += "x".join(map(str, layer.shape)) + f", kernel {item.kernel[0]}x{item.kernel[1]}"
            text += f", stride {item.stride[0]}x{item.stride[1]}"
            if layer.kind == "conv2d":
                text += f", padding {item.padding[0]}x{item.padding[1]}, {code.activation}"
        elif layer.kind == "flatten":
            text = "flatten " + "x".join(map(str, layer.in_shape)) + f" -> {layer.units} (C order)"
        else:
            text = f"{LAYERS[layer.kind].title} of {layer.units} features"
        if layer.kind in IMAGE_KINDS:
            summaries.append(_wrap(f"Layer {layer.index}: {text}."))
            continue
        summaries.append(f"Layer {layer.index}: {text}.")
    return {
        "version": __version__,
        "name": name,
        "header": _wrap(header, "# ", width=LINE_LENGTH),
        "summary": _wrap(summary, first=3),
        "layer_summaries": summaries,
        "loss_text": _wrap(loss_text),
        "conventions": _wrap(conventions),
        "sizes": sizes,
        "layer_sizes": _assignment("LAYER_SIZES", tuple(spec.shapes)),
        "image": image,
        "convolutions": any(layer.kind == "conv2d" for layer in flat),
        "input_shape": spec.input_shape,
        "views": [codes[i] for i in spec.order if codes[i].kind in IMAGE_KINDS],
        "codes": codes,
        "forward_order": [codes[i] for i in spec.order],
        "backward_order": [codes[i] for i in backward_order],
        "loss_name": net.loss.name,
        "classification": net.loss.classification,
        "probability": net.output.probability,
        "l2": spec.l2 != 0.0,
        "l2_repr": repr(spec.l2),
        "weight_keys": _assignment(
            "_WEIGHTS", tuple(k for k in spec.parameters if k.startswith("W"))
        ),
        "train_defaults": _assignment("TRAIN_DEFAULTS", defaults),
        "torch_keys": _assignment("_TORCH_KEYS", spec.torch_keys),
        "tracked": _assignment("_TRACKED", spec.torch_counters),
        "class_count": _class_count(derivation),
        "parameters": _assignment("PARAMETERS", spec.parameters),
        "shapes": _assignment("_SHAPES", shapes),
        "init_table": _assignment("_INIT", init_table(spec)),
        "initialize": inspect.getsource(_initialize).rstrip("\n"),
        "first_key": next(iter(shapes)),
        "helpers": _helper_source(helpers),
        "buffers": buffers,
        "fixed": fixed,
        "modes": modes,
        "random": random,
        "batch_norms": batch_norms,
        "parameter_count": spec.parameter_count,
        "scalar": scalar_code,
        "scalar_helpers": [SCALAR_HELPERS[name].rstrip("\n") for name in scalar_helpers],
        "softmax": out.softmax,
        "output_name": "P" if out.softmax else last,
        "output_grad": grad_out,
        "output_index": out_index,
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
        "eq": eq,
        "eq_linear": eq["linear"],
        "eq_activation": eq["activation"],
        "eq_softmax": eq["softmax"],
        "eq_loss": derivation.number("loss"),
        "eq_delta_output": derivation.number("delta.output"),
        "eq_delta_hidden": eq["delta_hidden"],
        "eq_grad_w": eq["grad_w"],
        "eq_grad_b": eq["grad_b"],
        "eq_update": derivation.number("update"),
    }


def generate(source: NetworkSpec | Derivation) -> str:
    """The module's source text for a spec (validated on the way) or a derivation."""
    derivation = source if isinstance(source, Derivation) else derive(source)
    return module_template().render(context(derivation))
