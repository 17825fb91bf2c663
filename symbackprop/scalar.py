"""The one-sample training step in plain Python floats, for small dense networks.

For one sample, a NumPy step pays about a microsecond per call and makes 40 or more calls,
while the arithmetic of a 2-3-3-2 network is a few dozen multiplications: unrolled
arithmetic on Python floats is several times faster.  ``step_source`` writes that step
(forward, loss, backward, the SGD update in place), one statement per unit, with the same
formulas as the vectorized kernels (the same stable forms, the same softmax shift), and the
generated ``train_step`` calls it when X has one row.

Python's ``math`` raises where NumPy returns inf or nan (``exp`` overflows, ``log(0)``,
division by zero), and it computes in float64 whatever the dtype of the parameters: the
step works on local floats and writes the parameters only after everything is computed, and
returns None instead of a loss when ``math`` raised or the loss is not finite, so that the
vectorized step then decides (with its own messages for bad inputs).  For float32
parameters the step is the float64 step rounded to float32 when it is written back.

A network qualifies when every layer is dense, it has at most ``SCALAR_LIMIT`` parameters,
and every activation, derivative and loss expression prints with ``ScalarPrinter``; any
other network has no scalar step (``step_source`` returns None).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache

import sympy
from sympy.printing.pycode import PythonCodePrinter

from symbackprop.derive import LP, Derivation, P, Z, stable_form
from symbackprop.functions import A, Y
from symbackprop.primitives import step
from symbackprop.printing import floatify
from symbackprop.printing import stable_form as printing_stable_form

# Above a few hundred parameters the unrolled step loses to the vectorized one (measured:
# 6.7-7.7x faster at 29 parameters, 2x at 139, 0.7-0.9x at 484).
SCALAR_LIMIT = 300
WIDTH = 100  # the generated module's line length (the project's ruff setting)
INDENT = "    "

# helpers the scalar code calls, defined once in the module when used
SCALAR_HELPERS: dict[str, str] = {
    "_softplus1": (
        "def _softplus1(x):\n"
        "    # log(1 + exp(x)) for one float, as numpy.logaddexp(0, x) computes it\n"
        "    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))\n"
    ),
    "_ndtr1": (
        "def _ndtr1(x):\n"
        "    # the standard normal CDF of one float, accurate in the lower tail\n"
        "    return 0.5 * math.erfc(-x * 0.7071067811865476)\n"
    ),
}


class Unsupported(Exception):
    """An expression has no spelling in Python's floats and ``math``."""


class ScalarPrinter(PythonCodePrinter):
    """SymPy expressions as Python float arithmetic with ``math`` functions.

    The project's primitives print as NumPy's spelling does, so the two steps agree to
    rounding: relu(x) = max(x, 0), step(x) with step(0) = 0, sigmoid(x) = exp(-softplus(-x)),
    softplus as numpy.logaddexp.  ``max``/``min`` put a non-constant argument first, so that
    a NaN in it propagates as it does through numpy.maximum.
    """

    def __init__(self, names: Mapping[sympy.Symbol, str]) -> None:
        super().__init__({"fully_qualified_modules": True, "allow_unknown_functions": False})
        self.names = dict(names)
        self.helpers: set[str] = set()

    def _print_not_supported(self, expr: sympy.Basic) -> str:
        raise Unsupported(str(expr))

    def _print_Symbol(self, expr: sympy.Symbol) -> str:
        if expr not in self.names:
            raise Unsupported(f"the symbol {expr} has no value in the scalar step")
        return self.names[expr]

    def _arg(self, expr: sympy.Function) -> str:
        return self._print(expr.args[0])

    def _ordered(self, func: str, args: Iterable[sympy.Expr]) -> str:
        ordered = sorted(args, key=lambda a: (a.is_number, sympy.default_sort_key(a)))
        return f"{func}({', '.join(self._print(a) for a in ordered)})"

    def _print_Max(self, expr: sympy.Max) -> str:
        return self._ordered("max", expr.args)

    def _print_Min(self, expr: sympy.Min) -> str:
        return self._ordered("min", expr.args)

    def _print_relu(self, expr: sympy.Function) -> str:
        return f"max({self._arg(expr)}, 0.0)"

    def _print_step(self, expr: sympy.Function) -> str:
        return f"(1.0 if {self._arg(expr)} > 0.0 else 0.0)"

    _print_Heaviside = _print_step  # derive gives step; Heaviside(0) is taken as 0 alike

    def _print_leaky_relu(self, expr: sympy.Function) -> str:
        x = self._arg(expr)
        return f"({x} if {x} > 0.0 else 0.01 * {x})"

    def _print_elu(self, expr: sympy.Function) -> str:
        x = self._arg(expr)
        return f"({x} if {x} > 0.0 else math.expm1({x}))"

    def _print_softplus(self, expr: sympy.Function) -> str:
        self.helpers.add("_softplus1")
        return f"_softplus1({self._arg(expr)})"

    def _print_sigmoid(self, expr: sympy.Function) -> str:
        self.helpers.add("_softplus1")
        return f"math.exp(-_softplus1(-({self._arg(expr)})))"

    def _print_expm1(self, expr: sympy.Function) -> str:
        return f"math.expm1({self._arg(expr)})"

    def _print_ndtr(self, expr: sympy.Function) -> str:
        self.helpers.add("_ndtr1")
        return f"_ndtr1({self._arg(expr)})"

    def _print_Pow(self, expr: sympy.Pow, rational: bool = False) -> str:
        base, exponent = expr.args
        if exponent == 2 and base.is_Symbol:  # x * x: faster than x**2, and never raises
            name = self._print(base)
            return f"{name} * {name}"
        return super()._print_Pow(expr, rational)


def scalar_code(
    expr: sympy.Expr, names: Mapping[sympy.Symbol, str], helpers: set[str] | None = None
) -> str:
    """``expr`` (a kernel of the vectorized module) as Python float arithmetic."""
    symbols = tuple(sorted(names, key=sympy.default_sort_key))
    code, used = _template(expr, symbols)
    for i, symbol in enumerate(symbols):
        code = code.replace(f"__{i}__", names[symbol])
    if helpers is not None:
        helpers |= used
    return code


@lru_cache(maxsize=512)
def _template(expr: sympy.Expr, symbols: tuple[sympy.Symbol, ...]) -> tuple[str, frozenset[str]]:
    """expr printed once per kernel, its symbols as placeholders __0__, __1__, ... (a
    network prints the same kernel for every unit: the printing is the slow part)."""
    printer = ScalarPrinter({symbol: f"__{i}__" for i, symbol in enumerate(symbols)})
    code = printer.doprint(floatify(printing_stable_form(stable_form(expr))))
    return code, frozenset(printer.helpers)


def _grouped(code: str) -> str:
    """code in parentheses unless it is one already."""
    depth = 0
    for i, char in enumerate(code):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and i < len(code) - 1:
            return f"({code})"
    return code if code.startswith("(") else f"({code})"


def _sum(terms: list[str]) -> str:
    return " + ".join(terms) if terms else "0.0"


def _assign(target: str, value: str, indent: str = INDENT) -> list[str]:
    """``target = value`` in lines of at most WIDTH characters (long sums in parentheses)."""
    line = f"{indent}{target} = {value}"
    if len(line) <= WIDTH:
        return [line]
    for op in ("+", "*"):  # break between top-level terms, else factors, else anywhere
        body = _packed(_split(value, f" {op} "), op, indent + INDENT)
        if all(len(part) <= WIDTH for part in body):
            break
    else:
        body = _packed(value.split(" + "), "+", indent + INDENT)
    return [f"{indent}{target} = (", *body, f"{indent})"]


def _split(value: str, sep: str) -> list[str]:
    """value split at each sep outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(value):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and value.startswith(sep, i):
            parts.append(value[start:i])
            start = i + len(sep)
    return [*parts, value[start:]]


def _packed(items: list[str], op: str, indent: str) -> list[str]:
    """items in as few lines as fit WIDTH: a sum's "+ item" starts a line, a list's "item," ends
    one."""
    if op == ",":
        pieces = [f"{item}," for item in items]
    else:
        pieces = [item if i == 0 else f"{op} {item}" for i, item in enumerate(items)]
    lines: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current} {piece}" if current else piece
        if current and len(indent) + len(candidate) > WIDTH:
            lines.append(indent + current)
            current = piece
        else:
            current = candidate
    lines.append(indent + current)
    return lines


def _unpack(names: list[str], value: str) -> list[str]:
    """``a, b, c = value`` (one name: ``(a,) = value``), wrapped when long."""
    if len(names) == 1:
        target = f"({names[0]},)"
    else:
        target = ", ".join(names)
    line = f"{INDENT}{target} = {value}"
    if len(line) <= WIDTH:
        return [line]
    body = _packed(names, ",", INDENT * 2)
    return [f"{INDENT}(", *body, f"{INDENT}) = {value}"]


def step_source(derivation: Derivation) -> tuple[str, tuple[str, ...]] | None:
    """(the source of ``_scalar_core``, the helpers it calls), or None for a network whose
    one-sample step stays vectorized (see the module docstring)."""
    spec = derivation.network.spec
    flat = spec.flat
    if any(layer.kind != "dense" for layer in flat) or spec.parameter_count > SCALAR_LIMIT:
        return None
    try:
        return _source(derivation)
    except Unsupported:
        return None


def _source(derivation: Derivation) -> tuple[str, tuple[str, ...]]:
    spec = derivation.network.spec
    flat = spec.flat
    out = derivation.output
    helpers: set[str] = set()
    last = flat[-1]
    lines: list[str] = []
    add = lines.append

    def unit_names(prefix: str, index: int, units: int) -> list[str]:
        return [f"{prefix}{index}_{i}" for i in range(units)]

    inputs = [f"x{j}" for j in range(spec.sizes[0])]
    outputs = [f"y{k}" for k in range(last.units)]
    add("def _scalar_core(params, X, y, lr):")
    add(f'{INDENT}"""train_step for one sample in Python floats: the loss before the step, or')
    add(f"{INDENT}None (params untouched) where math raised or the loss is not finite.")
    add(f'{INDENT}"""')
    lines += _unpack(inputs, "X.tolist()[0]")
    lines += _unpack(outputs, "y")
    # every parameter as local floats, read once; the arrays are written at the end
    weights: dict[int, list[list[str]]] = {}
    biases: dict[int, list[str]] = {}
    for layer in flat:
        index = layer.index
        add(f'{INDENT}W{index} = params["W{index}"]')
        weights[index] = [
            [f"w{index}_{i}_{j}" for j in range(layer.fan_in)] for i in range(layer.units)
        ]
        rows = [f"({', '.join(row)}{',' if len(row) == 1 else ''})" for row in weights[index]]
        if sum(len(r) for r in rows) + 20 <= WIDTH:
            lines += _unpack(rows, f"W{index}.tolist()")
        else:
            add(f"{INDENT}rows = W{index}.tolist()")
            for i, row in enumerate(weights[index]):
                lines += _unpack(row, f"rows[{i}]")
        if layer.layer.bias:
            add(f'{INDENT}b{index} = params["b{index}"]')
            biases[index] = unit_names("b", index, layer.units)
            lines += _unpack(biases[index], f"b{index}.tolist()")

    # forward: z = W a + b, a = f(z), unit by unit (eq. 1, 2)
    activations: dict[int, list[str]] = {0: inputs}
    zs: dict[int, list[str]] = {}
    for layer in flat:
        index = layer.index
        d = derivation.layers[index - 1]
        if d is None:  # pragma: no cover - derive gives every dense layer its f'
            raise Unsupported(f"layer {index} has no activation derivative")
        previous = activations[layer.sources[0]]
        add(f"{INDENT}# layer {index}: {layer.fan_in} -> {layer.units}, {d.activation.name}")
        zs[index] = unit_names("z", index, layer.units)
        for i, z in enumerate(zs[index]):
            terms = [f"{w} * {a}" for w, a in zip(weights[index][i], previous, strict=True)]
            if index in biases:
                terms.append(biases[index][i])
            lines += _assign(z, _sum(terms))
        if d.activation.softmax or d.f == Z:
            activations[index] = zs[index]
        else:
            activations[index] = unit_names("a", index, layer.units)
            for z, a in zip(zs[index], activations[index], strict=True):
                lines += _assign(a, scalar_code(d.f, {Z: z}, helpers))

    # the loss (eq. 4), as the vectorized _loss computes it
    index = last.index
    z_out = zs[index]
    if out.softmax:
        add(f"{INDENT}# softmax, shifted by the row max (eq. 3)")
        lines += _assign("zmax", f"max({', '.join(z_out)})" if len(z_out) > 1 else z_out[0])
        exps = unit_names("e", index, last.units)
        for z, e in zip(z_out, exps, strict=True):
            add(f"{INDENT}{e} = math.exp({z} - zmax)")
        lines += _assign("total", _sum(exps))
        add(f"{INDENT}logtotal = math.log(total)")
        probs = unit_names("p", index, last.units)
        logs = unit_names("lp", index, last.units)
        for z, e, p, lp in zip(z_out, exps, probs, logs, strict=True):
            add(f"{INDENT}{lp} = {z} - zmax - logtotal")
            add(f"{INDENT}{p} = {e} / total")
        kernel = [{P: p, LP: lp, Y: y} for p, lp, y in zip(probs, logs, outputs, strict=True)]
        fused_loss = sympy.expand(out.loss + LP * Y) == 0
        fused_q = out.q is not None and sympy.expand(out.q + Y) == 0
        if fused_loss:
            terms = [f"{y} * {lp}" for y, lp in zip(outputs, logs, strict=True)]
            lines += _assign("loss", f"-({_sum(terms)})")
        else:
            terms = [f"({scalar_code(out.loss, names, helpers)})" for names in kernel]
            lines += _assign("loss", _sum(terms))
        activations[index] = probs
    else:
        kernel = [
            {Z: z, A: a, Y: y} for z, a, y in zip(z_out, activations[index], outputs, strict=True)
        ]
        terms = [f"({scalar_code(out.loss, names, helpers)})" for names in kernel]
        lines += _assign("loss", _sum(terms))
    if spec.l2:
        for layer in flat:
            squares = [f"{w} * {w}" for row in weights[layer.index] for w in row]
            lines += _assign("loss", f"loss + 0.5 * L2 * ({_sum(squares)})")
    add(f"{INDENT}if not math.isfinite(loss):")
    add(f"{INDENT * 2}return None")

    # backward, scaled by lr so that the deltas are the step (eq. 6-9)
    deltas: dict[int, list[str]] = {index: unit_names("d", index, last.units)}
    add(f"{INDENT}# dL/dz of the output layer, times lr (eq. 6)")
    if out.softmax and fused_q:
        lines += _assign("ysum", _sum(outputs))
        for d_name, p, y in zip(deltas[index], activations[index], outputs, strict=True):
            add(f"{INDENT}{d_name} = ({p} * ysum - {y}) * lr")
    elif out.softmax:
        qs = unit_names("q", index, last.units)
        for q, names in zip(qs, kernel, strict=True):
            lines += _assign(q, scalar_code(out.q, names, helpers))
        lines += _assign("qsum", _sum(qs))
        for d_name, p, q in zip(deltas[index], activations[index], qs, strict=True):
            add(f"{INDENT}{d_name} = ({q} - {p} * qsum) * lr")
    else:
        for d_name, names in zip(deltas[index], kernel, strict=True):
            lines += _assign(d_name, f"({scalar_code(out.delta, names, helpers)}) * lr")
    for layer in reversed(flat):
        index, source = layer.index, layer.sources[0]
        if not source:
            continue
        d = derivation.layers[source - 1]
        prime = d.through_output if d.uses_output else d.derivative
        deltas[source] = unit_names("d", source, layer.fan_in)
        cites = "eq. 7" if prime == 1 else "eq. 7, 5"  # as Derivation.cited: a' = 1 cites no (5)
        add(f"{INDENT}# back through W{index} and {d.activation.name}' ({cites})")
        for j, d_name in enumerate(deltas[source]):
            terms = [f"{dk} * {weights[index][k][j]}" for k, dk in enumerate(deltas[index])]
            value = _sum(terms)
            names = {A: activations[source][j], Z: zs[source][j]}
            if isinstance(prime, step):  # a kink's derivative selects: 1 or 0
                value = f"({value}) if {scalar_code(prime.args[0], names)} > 0.0 else 0.0"
            elif prime != 1:
                value = f"({value}) * {_grouped(scalar_code(prime, names, helpers))}"
            lines += _assign(d_name, value)

    # the SGD step, written in place once nothing can raise (eq. 8, 9, 10)
    add(f"{INDENT}# the step in place: W -= dL/dW, b -= dL/db (eq. 8, 9, 10)")
    if spec.l2:
        add(f"{INDENT}decay = L2 * lr")
    for layer in flat:
        index = layer.index
        previous = activations[layer.sources[0]]
        for i, d_name in enumerate(deltas[index]):
            for j, a in enumerate(previous):
                w = weights[index][i][j]
                grad = f"{d_name} * {a}" + (f" + {w} * decay" if spec.l2 else "")
                value = f"{w} - ({grad})" if spec.l2 else f"{w} - {grad}"
                lines += _assign(f"W{index}[{i}, {j}]", value)
            if index in biases:
                add(f"{INDENT}b{index}[{i}] = {biases[index][i]} - {d_name}")
    add(f"{INDENT}return loss")
    return "\n".join(lines), tuple(sorted(helpers))
