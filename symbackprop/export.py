"""The PyTorch export: one standalone ``torch.nn.Module`` file from ``templates/torch``.

``torch_source(derivation)`` writes a module whose ``Model`` holds one torch submodule per
layer (``layer<l>``: ``nn.Linear``, ``nn.Conv2d``, ``nn.LayerNorm``, ...), so that its
state_dict keys are ``spec.torch_keys``, and whose ``loss`` follows DESIGN §3.  Built-in
activations are torch's own functions; a custom activation or loss becomes a
``torch.autograd.Function`` whose forward and backward are printed from SymPy (the
derivative SymPy derived, in the stabilized form the NumPy module computes).  Nothing from
a spec is evaluated: expressions are printed as source, and names are the spec's validated
identifiers.  The text is deterministic, imports only torch and the standard library, and
passes the project's ruff settings.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from functools import lru_cache

import jinja2
import sympy

from symbackprop import __version__
from symbackprop import printing as _printing
from symbackprop.codegen import LINE_LENGTH, _assignment, _wrap, environment
from symbackprop.derive import ActivationDerivative, Derivation, Z, _tidy, derive, stable_form
from symbackprop.functions import YHAT, A, Activation, Loss, Y
from symbackprop.printing import floatify
from symbackprop.spec import FlatLayer, NetworkSpec, torch_key

# built-in activations as torch source ({x}: the argument); parameterized leaky_relu and elu
# come from their registry entry's ``torch`` (name and keywords)
BUILT_IN = {
    "identity": "{x}",
    "relu": "torch.relu({x})",
    "leaky_relu": "F.leaky_relu({x}, 0.01)",
    "sigmoid": "torch.sigmoid({x})",
    "tanh": "torch.tanh({x})",
    # log(1 + e^x) for every x, as the NumPy module's logaddexp (F.softplus returns x itself
    # above its threshold 20, 2e-9 from the true value there)
    "softplus": "torch.logaddexp({x}, torch.zeros_like({x}))",
    "elu": "F.elu({x})",
    "gelu": "F.gelu({x})",
    "silu": "F.silu({x})",
    "softmax": "torch.softmax({x}, dim=1)",
}

# --- SymPy to torch source --------------------------------------------------------------------

# functions of one tensor, by SymPy class name
_UNARY = {
    "exp": "torch.exp", "log": "torch.log", "sin": "torch.sin", "cos": "torch.cos",
    "tan": "torch.tan", "sinh": "torch.sinh", "cosh": "torch.cosh", "tanh": "torch.tanh",
    "asin": "torch.asin", "acos": "torch.acos", "atan": "torch.atan", "asinh": "torch.asinh",
    "acosh": "torch.acosh", "atanh": "torch.atanh", "Abs": "torch.abs", "sign": "torch.sign",
    "erf": "torch.erf", "expm1": "torch.expm1", "sigmoid": "torch.sigmoid",
    "relu": "torch.relu", "elu": "F.elu", "ndtr": "torch.special.ndtr",
}  # fmt: skip
# several calls; {x} is the argument (a name)
_RECIPES = {
    "softplus": "torch.logaddexp({x}, torch.zeros_like({x}))",
    "leaky_relu": "F.leaky_relu({x}, 0.01)",
    # step(0) = 0 (ReLU'(0) = 0, PyTorch's convention); SymPy's Heaviside prints the same, as
    # the NumPy module's numpy.heaviside(x, 0)
    "step": "({x} > 0).to({x}.dtype)",
    "Heaviside": "({x} > 0).to({x}.dtype)",
}
_ATOM_WIDTH = 72  # a statement longer than this has its arguments computed first


def _number(value: sympy.Expr) -> str:
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise RuntimeError(f"a kernel holds the non-finite constant {value}")
    return repr(number)


class TorchKernel:
    """Statements computing an expression of tensors; ``lines`` end with ``return``.

    ``cse`` first; then every statement whose code is longer than ``_ATOM_WIDTH`` has its
    compound arguments assigned to temporaries ``t0, t1, ...`` first, so that every line
    fits the project's line length.  Powers are calls (square, sqrt, rsqrt, reciprocal,
    pow): no ``**`` whose spacing a formatter would change.
    """

    def __init__(self, names: dict[sympy.Symbol, str]) -> None:
        self.names = dict(names)
        self.lines: list[str] = []
        self.count = 0

    # inline code of one expression ------------------------------------------------------

    def code(self, expr: sympy.Expr) -> str:
        if expr.is_Symbol:
            if expr not in self.names:
                raise RuntimeError(f"a kernel reads the unknown symbol {expr}")
            return self.names[expr]
        if expr.is_number:
            return _number(expr)
        if isinstance(expr, sympy.Add):
            return self._add(expr)
        if isinstance(expr, sympy.Mul):
            return self._mul(expr)
        if isinstance(expr, sympy.Pow):
            return self._power(expr.base, expr.exp)
        if isinstance(expr, (sympy.Max, sympy.Min)):
            return self._extremum(expr)
        name = type(expr).__name__
        if name in _UNARY and len(expr.args) == 1:
            return f"{_UNARY[name]}({self.code(expr.args[0])})"
        if name in _RECIPES and len(expr.args) == 1 and expr.args[0].is_Symbol:
            return _RECIPES[name].format(x=self.code(expr.args[0]))  # _hoist made it a name
        raise RuntimeError(f"no torch spelling for {name} in {expr}")

    def _factor(self, expr: sympy.Expr) -> str:
        """A factor of a product: sums in parentheses."""
        code = self.code(expr)
        return f"({code})" if isinstance(expr, sympy.Add) else code

    def _add(self, expr: sympy.Add) -> str:
        terms = sorted(expr.args, key=lambda t: (t.is_number, sympy.default_sort_key(t)))
        out = ""
        for term in terms:
            negative = term.could_extract_minus_sign()
            body = self.code(-term) if negative else self.code(term)
            if isinstance(-term if negative else term, sympy.Add):  # pragma: no cover
                body = f"({body})"
            if not out:
                out = f"-{self._unary_operand(-term)}" if negative else body
            else:
                out += f" - {body}" if negative else f" + {body}"
        return out

    def _unary_operand(self, expr: sympy.Expr) -> str:
        code = self.code(expr)
        compound = isinstance(expr, (sympy.Add, sympy.Mul)) or (expr.is_number and code[0] == "-")
        return f"({code})" if compound else code

    def _mul(self, expr: sympy.Mul) -> str:
        coeff, rest = expr.as_coeff_Mul()
        if coeff == -1:
            return f"-{self._unary_operand(rest)}"
        numerator, denominator = [], []
        for factor in sympy.Mul.make_args(expr):
            if (
                isinstance(factor, sympy.Pow)
                and factor.exp.is_Integer
                and factor.exp < 0
                and not factor.base.is_number
            ):
                denominator.append(factor.base ** (-factor.exp))
            else:
                numerator.append(factor)
        top = " * ".join(self._factor(f) for f in numerator) if numerator else "1.0"
        if not denominator:
            return top
        bottom = " * ".join(self._factor(f) for f in denominator)
        if len(denominator) > 1:
            bottom = f"({bottom})"
        return f"{top} / {bottom}"

    def _power(self, base: sympy.Expr, exponent: sympy.Expr) -> str:
        if base == sympy.E:
            return f"torch.exp({self.code(exponent)})"
        inner = self.code(base)
        # floatify has made 1/2 the float 0.5
        value = float(exponent) if exponent.is_number else None
        spelled = {2.0: "torch.square", 0.5: "torch.sqrt", -0.5: "torch.rsqrt"}
        if value in spelled:
            return f"{spelled[value]}({inner})"
        if value == -1.0:
            return f"torch.reciprocal({inner})"
        if exponent.is_Integer:
            return f"torch.pow({inner}, {int(exponent)})"
        return f"torch.pow({inner}, {self.code(exponent)})"

    def _extremum(self, expr: sympy.Expr) -> str:
        numbers = [a for a in expr.args if a.is_number]
        tensors = [a for a in expr.args if not a.is_number]
        fold = "torch.maximum" if isinstance(expr, sympy.Max) else "torch.minimum"
        code = self.code(tensors[0])
        for arg in tensors[1:]:
            code = f"{fold}({code}, {self.code(arg)})"
        if numbers:  # SymPy folds the numbers of a Max into one
            bound = "min" if isinstance(expr, sympy.Max) else "max"
            code = f"torch.clamp({code}, {bound}={_number(numbers[0])})"
        return code

    # statements ------------------------------------------------------------------------

    def _temp(self, expr: sympy.Expr) -> str:
        """``expr`` into a new temporary; its name."""
        name = f"t{self.count}"
        self.count += 1
        self.lines.append(f"{name} = {self.statement(expr)}")
        return name

    def statement(self, expr: sympy.Expr) -> str:
        """Inline code of ``expr``, its compound arguments first assigned when too long."""
        code = self.code(expr)
        if len(code) <= _ATOM_WIDTH or not expr.args:
            return code
        args = list(expr.args)
        if isinstance(expr, (sympy.Add, sympy.Mul)) and len(args) > 2:
            half = len(args) // 2
            left = self._symbol(expr.func(*args[:half]))
            right = self._symbol(expr.func(*args[half:]))
            return self.code(expr.func(left, right, evaluate=False))
        replaced = [self._symbol(arg) if arg.args else arg for arg in args]
        return self.code(expr.func(*replaced, evaluate=False))

    def _symbol(self, expr: sympy.Expr) -> sympy.Expr:
        if not expr.args:
            return expr
        name = self._temp(expr)
        symbol = sympy.Symbol(name)  # unique: t<k> names no other symbol
        self.names[symbol] = name
        return symbol

    def _hoist(self, expr: sympy.Expr) -> sympy.Expr:
        """``expr`` with the arguments of the recipes that read theirs twice (softplus,
        step) assigned to temporaries first, innermost first."""

        def named(node: sympy.Expr) -> sympy.Expr:
            return node.func(self._symbol(node.args[0]))

        def recipe(node: sympy.Basic) -> bool:
            return (
                type(node).__name__ in _RECIPES
                and len(node.args) == 1
                and not node.args[0].is_Symbol
            )

        return expr.replace(recipe, named)

    def body(self, expr: sympy.Expr, like: str) -> list[str]:
        """The statements of a function returning ``expr`` (a tensor shaped as ``like``)."""
        stable = floatify(_printing.stable_form(stable_form(expr)))
        replacements, (reduced,) = sympy.cse([stable], symbols=sympy.numbered_symbols("c"))
        for symbol, value in replacements:
            name = str(symbol)
            value = self._hoist(value)
            self.lines.append(f"{name} = {self.statement(value)}")
            self.names[symbol] = name
        reduced = self._hoist(reduced)
        if reduced.is_number:  # a constant derivative: a tensor of it
            self.lines.append(f"return torch.full_like({like}, {_number(reduced)})")
        else:
            self.lines.append(f"return {self.statement(reduced)}")
        return self.lines


def torch_kernel(expr: sympy.Expr, names: dict[sympy.Symbol, str], like: str) -> list[str]:
    """The body of a function returning ``expr``, whose symbols are the tensors ``names``."""
    return TorchKernel(names).body(expr, like)


# --- the context ------------------------------------------------------------------------------


def _doc(text: str, indent: int) -> str:
    """A docstring's text after its opening quotes at ``indent`` spaces, wrapped to fit."""
    prefix = " " * indent
    lines = textwrap.wrap(
        text,
        LINE_LENGTH,
        initial_indent=prefix + '"""',
        subsequent_indent=prefix,
        break_long_words=False,
    )
    closing = len(lines[-1]) + 3 > LINE_LENGTH  # the closing quotes on a line of their own
    lines[0] = lines[0][indent + 3 :]
    if closing:
        lines.append(prefix)
    return "\n".join(lines)


def _call(indent: int, head: str, function: str, args: str) -> str:
    """``head function(args)`` at ``indent`` spaces, its arguments on a line of their own
    when it is too long (as ruff formats it)."""
    prefix = " " * indent
    line = f"{prefix}{head}{function}({args})"
    if len(line) <= LINE_LENGTH:
        return line
    return f"{prefix}{head}{function}(\n{prefix}    {args}\n{prefix})"


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


@dataclass(frozen=True)
class CustomActivation:
    name: str
    cls: str  # the autograd.Function's class name
    doc: str  # its docstring
    forward_doc: str
    derivative_doc: str
    backward_line: str  # backward's return statement
    kernel: str  # the forward kernel's function name (the derivative's adds _derivative)
    forward: tuple[str, ...]  # the forward kernel's body
    derivative: tuple[str, ...]  # the derivative kernel's body
    saved: tuple[str, ...]  # what backward reads: ("z",), ("a",) or ("z", "a")
    through_output: bool

    @property
    def unpack(self) -> str:
        """The targets of ``... = ctx.saved_tensors``."""
        return f"({self.saved[0]},)" if len(self.saved) == 1 else ", ".join(self.saved)


@dataclass(frozen=True)
class CustomLoss:
    name: str
    cls: str
    kernel: str
    doc: str
    value_doc: str
    dyhat_doc: str
    dy_doc: str
    dyhat_line: str
    dy_line: str
    value: tuple[str, ...]
    dyhat: tuple[str, ...]
    dy: tuple[str, ...]


KERNEL_NAME_LENGTH = 40  # longer spec names: kernels numbered, so that every line fits


def _custom_activation(d: ActivationDerivative, cls: str, number: int) -> CustomActivation:
    prime = d.through_output if d.uses_output else d.derivative
    uses = prime.free_symbols
    saved = tuple(name for symbol, name in ((Z, "z"), (A, "a")) if symbol in uses) or ("z",)
    name = d.activation.name
    kernel = f"_activation_{name}" if len(name) <= KERNEL_NAME_LENGTH else f"_activation{number}"
    doc = f"The custom activation {name}(x) = {sympy.sstr(d.activation.expr)}; backward"
    doc += " multiplies by its derivative as SymPy derived it."
    derivative_doc = f"d{name}/dz as SymPy derived it"
    derivative_doc += f", through the output a = {name}(z)." if d.uses_output else "."
    return CustomActivation(
        name=name,
        cls=cls,
        kernel=kernel,
        doc=_doc(doc, 4),
        forward_doc=_doc(f"{name}(z) as the spec writes it (in a form that does not overflow).", 4),
        derivative_doc=_doc(derivative_doc, 4),
        backward_line=_call(8, "return grad * ", f"{kernel}_derivative", ", ".join(saved)),
        forward=tuple(torch_kernel(d.f, {Z: "z"}, "z")),
        derivative=tuple(torch_kernel(prime, {Z: "z", A: "a"}, saved[0])),
        saved=saved,
        through_output=d.uses_output,
    )


def _custom_loss(loss: Loss, cls: str) -> CustomLoss:
    kernel = f"_loss_{loss.name}" if len(loss.name) <= KERNEL_NAME_LENGTH else "_loss"
    names = {YHAT: "yhat", Y: "y"}
    doc = f"The custom per-output loss {loss.name}(yhat, y) = {sympy.sstr(loss.expr)};"
    doc += " backward multiplies by its derivatives as SymPy derived them."
    return CustomLoss(
        name=loss.name,
        cls=cls,
        kernel=kernel,
        doc=_doc(doc, 4),
        value_doc=_doc(f"The per-output loss {loss.name}(yhat, y) as the spec writes it.", 4),
        dyhat_doc=_doc(f"d{loss.name}/dyhat as SymPy derived it.", 4),
        dy_doc=_doc(f"d{loss.name}/dy as SymPy derived it.", 4),
        dyhat_line=_call(12, "dyhat = grad * ", f"{kernel}_dyhat", "yhat, y"),
        dy_line=_call(12, "dy = grad * ", f"{kernel}_dy", "yhat, y"),
        value=tuple(torch_kernel(loss.expr, names, "yhat")),
        # the derivation's clean-up (log cosh' = sinh/cosh is tanh: no inf/inf past 710)
        dyhat=tuple(torch_kernel(_tidy(sympy.diff(loss.expr, YHAT)), names, "yhat")),
        dy=tuple(torch_kernel(_tidy(sympy.diff(loss.expr, Y)), names, "yhat")),
    )


def _activation_code(act: Activation, classes: dict[str, str], x: str) -> str:
    if act.custom:
        return f"{classes[act.name]}.apply({x})"
    if act.torch is not None:  # leaky_relu, elu with their own parameters
        fn, keywords = act.torch
        options = "".join(f", {key}={float(value)!r}" for key, value in keywords)
        return f"F.{fn}({x}{options})"
    if act.name not in BUILT_IN:  # pragma: no cover - a registry entry without a spelling
        raise RuntimeError(f"no torch spelling for the activation {act.name!r}")
    return BUILT_IN[act.name].format(x=x)


def _pair(values: tuple[int, ...]) -> str:
    return f"({values[0]}, {values[1]})"


def _submodule(layer: FlatLayer) -> str | None:
    """The torch module of layer ``layer`` (None for a residual sum)."""
    spec = layer.layer
    if layer.kind == "dense":
        return f"nn.Linear({layer.fan_in}, {layer.units}, bias={spec.bias}, dtype=dtype)"
    if layer.kind == "conv2d":
        channels = layer.in_shape[0]
        return (
            f"nn.Conv2d({channels}, {spec.filters}, {_pair(spec.kernel)}, stride="
            f"{_pair(spec.stride)}, padding={_pair(spec.padding)}, bias={spec.bias}, dtype=dtype)"
        )
    if layer.kind == "layer_norm":
        return f"nn.LayerNorm({layer.units}, eps={float(spec.eps)!r}, dtype=dtype)"
    if layer.kind == "rms_norm":
        return f"nn.RMSNorm({layer.units}, eps={float(spec.eps)!r}, dtype=dtype)"
    if layer.kind == "batch_norm":
        return (
            f"nn.BatchNorm1d({layer.units}, eps={float(spec.eps)!r}, "
            f"momentum={float(spec.momentum)!r}, dtype=dtype)"
        )
    if layer.kind == "dropout":
        return f"nn.Dropout({float(spec.rate)!r})"
    if layer.kind == "max_pool2d":
        return f"nn.MaxPool2d({_pair(spec.kernel)}, stride={_pair(spec.stride)})"
    if layer.kind == "avg_pool2d":
        return f"nn.AvgPool2d({_pair(spec.kernel)}, stride={_pair(spec.stride)})"
    if layer.kind == "flatten":
        return "nn.Flatten()"
    if layer.kind == "residual":
        return None
    raise RuntimeError(f"no torch module for the layer kind {layer.kind!r}")  # pragma: no cover


def _statement(target: str, value: str) -> str:
    """``target = value``, its call wrapped as ruff would when it is too long."""
    line = f"        {target} = {value}"
    if len(line) <= LINE_LENGTH:
        return line
    head, _, tail = value.partition("(")
    return f"        {target} = {head}(\n            {tail[:-1]}\n        )"


def _summary(layer: FlatLayer, act: Activation | None) -> str:
    if layer.kind in ("dense", "conv2d"):
        return f"{layer.kind}, activation {act.name if act else 'identity'}"
    if layer.kind == "residual":
        return f"residual: its input plus the output of layers {layer.index + 1}-{layer.sources[1]}"
    if layer.kind == "dropout":
        return f"dropout, rate {float(layer.layer.rate)!r}"
    return layer.kind


def context(derivation: Derivation) -> dict[str, object]:
    net = derivation.network
    spec = net.spec
    flat = spec.flat
    out_layer = spec.output_layer
    output_act = net.output

    classes: dict[str, str] = {}
    activations: list[CustomActivation] = []
    taken = {"Model"}
    for index in spec.order:
        d = derivation.layers[index - 1]
        if d is None or not d.activation.custom or d.activation.name in classes:
            continue
        cls = f"{_camel(d.activation.name)}Activation"
        while cls in taken:
            cls = f"{cls}_"
        taken.add(cls)
        classes[d.activation.name] = cls
        activations.append(_custom_activation(d, cls, len(activations) + 1))
    loss = net.loss
    custom_loss = _custom_loss(loss, f"{_camel(loss.name)}Loss") if loss.custom else None

    modules = []
    for layer in flat:
        module = _submodule(layer)
        summary = _summary(layer, net.activations[layer.index - 1])
        comment = _wrap(f"layer {layer.index}: {summary}", "        # ", width=LINE_LENGTH)
        if module is not None:
            modules.append((comment, _statement(f"self.layer{layer.index}", module)))
        else:
            modules.append((comment, ""))

    names = {0: "x"}
    forward: list[str] = []
    for index in spec.order:
        layer = flat[index - 1]
        source = names[layer.sources[0]]
        target = "z" if index == out_layer.index else f"a{index}"
        names[index] = target
        if layer.kind == "residual":
            forward.append(f"        {target} = {source} + {names[layer.sources[1]]}")
            continue
        value = f"self.layer{index}({source})"
        act = net.activations[index - 1]
        if act is not None and index != out_layer.index:
            code = _activation_code(act, classes, "{x}")
            if code.count("{x}") > 1:  # softplus reads its argument twice: name it first
                forward.append(_statement(f"z{index}", value))
                value = f"z{index}"
            value = code.replace("{x}", value)
        forward.append(_statement(target, value))

    probability = output_act.softmax or output_act.name == "sigmoid" and not output_act.custom
    identity_output = output_act.name == "identity" and not output_act.custom
    output_code = _activation_code(output_act, classes, "z")
    batch_shape = ", ".join(map(str, spec.input_shape))
    weights = tuple(torch_key(k) for k in spec.parameters if k.startswith("W"))
    if loss.custom:
        loss_kind = "custom"
    elif loss.name == "cross_entropy":
        loss_kind = "log_softmax" if output_act.softmax else "log_sigmoid"
    elif loss.name == "binary_cross_entropy":
        loss_kind = "bce_logits"
    else:
        loss_kind = "mse"
    name = spec.name
    header = f'symbackprop {__version__}, from the spec named "{name}"; '
    header += "regenerate with symbackprop export --torch."
    x_text = f"(batch, {spec.inputs})"
    if spec.image:
        x_text = f"(batch, {batch_shape}) or flat (batch, {spec.inputs}) in C order"
    outputs_text = "outputs (probabilities)" if probability else "outputs"
    paragraphs = [
        f"{name}: a PyTorch module for the {spec.shape_text()} network of the spec.",
        "\n".join(
            f"Layer {layer.index}: {_summary(layer, net.activations[layer.index - 1])}."
            for layer in flat
        ),
        f"loss(model, X, Y): {loss.name}, the batch mean of the per-sample loss"
        + (f" plus ({spec.l2!r}/2) * the sum of squared weights." if spec.l2 else "."),
        "Model(dtype=torch.float64) is a torch.nn.Module: layer l is the submodule layer<l>"
        " (torch's own nn.Linear, nn.Conv2d, nn.LayerNorm, nn.BatchNorm1d, ...), so that its"
        " state_dict keys are those of the NumPy module's to_state_dict (KEYS maps the NumPy"
        " module's names to them: W3 -> layer3.weight, gamma -> weight, beta -> bias, mean ->"
        f" running_mean, var -> running_var).  model(X) returns the last layer's {outputs_text},"
        f" as the NumPy module's forward does; X is {x_text}, a tensor or an array.",
        "model.train() and model.eval() are the NumPy module's training mode (batch"
        " statistics, dropout on) and inference mode (running statistics, dropout off);"
        " loss(model, X, Y) uses the model in its mode, so call model.train() first for the"
        " NumPy module's loss.  Dropout draws its masks from torch's generator"
        " (torch.manual_seed).",
    ]
    if activations or loss.custom:
        paragraphs.append(
            "Custom activations and losses are torch.autograd.Functions whose forward is the"
            " spec's expression and whose backward is the derivative SymPy derived, in the"
            " form the NumPy module computes."
        )
    paragraphs.append(
        "Weights from the NumPy module (its init_params, load or to_state_dict) and back:"
    )
    example = (
        "    net = Model()\n"
        "    load_arrays(net, params)  # NumPy arrays by name (W1, ...) or by state_dict key\n"
        "    state = arrays(net)  # NumPy arrays by state_dict key\n"
        "    params = {name: state[key] for name, key in KEYS.items()}"
    )
    after = [
        "Before the first layer, forward computes (x - x_mean) / x_scale with the buffers"
        " x_mean (zeros) and x_scale (ones) of one sample's shape: the identity, until they are"
        " set to the statistics of an input standardization (load_arrays reads them by these"
        " names).",
        "PyTorch's own tools train it as any nn.Module: torch.optim (for example"
        " torch.optim.Adam(net.parameters())) with loss(net, X, Y).backward(), and"
        " DataParallel or DistributedDataParallel around it (loss accepts the wrapped model)."
        "  Needs torch only.",
    ]
    wrapped = [_wrap(p, first=3) if i == 0 else _wrap(p) for i, p in enumerate(paragraphs)]
    wrapped[1] = paragraphs[1]  # one line per layer
    module_doc = "\n\n".join([*wrapped, example, *(_wrap(p) for p in after)])
    loss_doc = f"{loss.name}: the mean per-sample loss over the batch"
    loss_doc += " plus (L2/2) * the sum of squared weights." if spec.l2 else "."
    return {
        "name": name,
        "version": __version__,
        "header": _wrap(header, "# ", width=LINE_LENGTH),
        "module_doc": module_doc,
        "loss_doc": _doc(loss_doc, 4),
        "model_doc": _doc(f'The network of the spec "{name}" (see the module\'s docstring).', 4),
        "outputs_line": (
            _call(4, "outputs = ", *output_code[:-1].split("(", 1))
            if "(" in output_code
            else f"    outputs = {output_code}"
        ),
        "image": spec.image,
        "input_shape": spec.input_shape,
        "input_shape_text": batch_shape,
        "sample_shape": _assignment("INPUT_SHAPE", tuple(spec.input_shape)),
        "inputs": spec.inputs,
        "outputs": out_layer.units,
        "classification": loss.classification,
        "loss_name": loss.name,
        "loss_kind": loss_kind,
        "l2": spec.l2 != 0.0,
        "l2_repr": repr(float(spec.l2)),
        "weights": _assignment("_WEIGHTS", weights),
        "keys": _assignment("KEYS", spec.torch_keys),
        "parameters": _assignment(
            "PARAMETERS", {torch_key(k): v for k, v in spec.parameters.items()}
        ),
        "batch_norms": spec.torch_counters,
        "modules": modules,
        "forward": forward,
        "output_code": output_code,
        "identity_output": identity_output,
        "probability": probability,
        "activations": activations,
        "custom_loss": custom_loss,
    }


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    return environment().get_template("torch/model.py.j2")


def torch_source(source: NetworkSpec | Derivation) -> str:
    """The PyTorch module's source text for a derivation (or a spec, derived on the way)."""
    derivation = source if isinstance(source, Derivation) else derive(source)
    return _template().render(context(derivation))
