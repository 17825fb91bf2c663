"""Network specs: reading TOML / JSON / Python dicts into a validated, frozen ``NetworkSpec``.

This module checks structure and types only (no SymPy here).  Names of activations and
losses, and custom expressions, are resolved by ``symbackprop.functions.resolve``; both
raise ``InputError`` whose message starts with the field path, e.g.
``layers[1].units: expected a positive integer, got -3``.

Schema (DESIGN §2, §2b)::

    name = "seed_mlp"          # Python identifier
    inputs = 2
    loss = "cross_entropy"     # or { name = "...", expr = "..." } in yhat and y
    l2 = 0.0                   # optional
    [[layers]]                 # one or more
    units = 3
    activation = "relu"        # or { name = "...", expr = "..." } in x, or
                               # { name = "leaky_relu", slope = 0.2 }, { name = "elu", alpha = 1 }
    bias = true                # optional
    [[layers]]                 # DESIGN §2b: kind = "layer_norm" (eps), "batch_norm" (eps,
    kind = "dropout"           # momentum), "dropout" (rate), "residual" (block: a list
    rate = 0.1                 # of layers that ends with its input's width) or "rms_norm" (eps)
    [train]                    # optional: optimizer, lr, epochs, batch_size, seed,
                               # momentum, beta1, beta2, eps, alpha (rmsprop), and the
                               # learning-rate schedule: schedule, step_size, gamma, min_lr

Image inputs (DESIGN §2c): ``inputs = [C, H, W]``, then layers of kind ``conv2d`` (filters,
kernel, stride 1, padding 0, activation, bias), ``max_pool2d`` / ``avg_pool2d`` (kernel,
stride = kernel) and ``flatten``; kernel, stride and padding are an int or [rows, columns].
Only these four read an image, the flat kinds need a flatten first, and the output is flat.

Only the output layer (the last of ``layers``) may use softmax, and batch norm needs a
``train.batch_size`` of at least 2.  Limits (``MAX_*`` below): at most 1,000,000 units per
layer and inputs, 100 layers (residual blocks' layers included), 30 residual layers inside
each other and 200,000,000 trainable parameters; names of at most 64 characters; a spec
file of at most 1 MiB, nested at most 64 levels.  A custom activation or loss may not
take a built-in's name, a Python keyword or a name starting with ``__``.  A UTF-8
byte-order mark is ignored; a JSON object with a duplicate key is refused.
"""

from __future__ import annotations

import decimal
import json
import keyword
import math
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from symbackprop.errors import InputError, cut_list, shorten

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
# Learning-rate schedules, per epoch, as torch.optim.lr_scheduler defines them: constant,
# StepLR(step_size, gamma), CosineAnnealingLR(T_max=epochs, eta_min=min_lr).
SCHEDULES = ("constant", "step", "cosine")
# The registry's names (symbackprop.functions; a test keeps the two in step).  A custom
# function may not take one: the document, the module and the checks refer to f by its name.
BUILTIN_ACTIVATIONS = (
    "identity",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "softplus",
    "elu",
    "gelu",
    "silu",
    "softmax",
)
BUILTIN_LOSSES = ("mse", "cross_entropy", "binary_cross_entropy")
# parameters a built-in activation takes, with their defaults (DESIGN §2b)
ACTIVATION_PARAMETERS: dict[str, dict[str, float]] = {
    "leaky_relu": {"slope": 0.01},
    "elu": {"alpha": 1.0},
}

# Limits, each against a spec that would otherwise fail late (on allocation) or run for
# hours; README "Limits" cites these numbers.
MAX_UNITS = 1_000_000  # units of a layer, and inputs
MAX_LAYERS = 100
MAX_PARAMETERS = 200_000_000  # trainable parameters in all (1.6 GB as float64)
MAX_NAME_LENGTH = 64  # the network's name and every activation or loss name
MAX_NESTING = 64  # lists and tables inside each other in a spec file (4, and 2 a residual)
# residual layers inside each other: the tables of the innermost block's layers then lie at
# depth 2 * 31 + 2 <= MAX_NESTING, so from_dict accepts what load_spec can read back
MAX_RESIDUAL_NESTING = (MAX_NESTING - 4) // 2
MAX_SPEC_BYTES = 1 << 20  # 1 MiB; 100 layers with 500-character expressions need ~60 kB
# an activation parameter's decimal exponent, as a number in an expression
# (expressions.MAX_DIGITS): SymPy's factorization of the derivative slows with the size of
# its coefficients (21 s for a slope of 5e-324; 1e-100 stays near a second)
MAX_PARAMETER_EXPONENT = 100
MAX_COUNT = 2**63 - 1  # train.epochs and train.batch_size: NumPy's int64
MAX_SEED = 2**64 - 1  # train.seed
_LONG_INTEGER = 100  # digits: a JSON integer longer than this is never a valid value
# a generated module named like these would hide them from its own imports
_SHADOWED = frozenset(getattr(sys, "stdlib_module_names", ())) | {"numpy", "symbackprop"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
_PACKAGED_EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


@dataclass(frozen=True)
class FunctionSpec:
    """A built-in function by name, or a custom one: a name and an expression string.

    ``params`` holds a built-in activation's parameters as given (``leaky_relu`` slope,
    ``elu`` alpha), sorted by name; the registry checks them.
    """

    name: str
    expr: str | None = None
    params: tuple[tuple[str, float], ...] = ()

    @property
    def is_custom(self) -> bool:
        return self.expr is not None


IDENTITY = FunctionSpec("identity")


@dataclass(frozen=True)
class LayerSpec:
    """One ``[[layers]]`` entry (DESIGN §2b).  ``units`` is the layer's output width: given
    for ``dense``, the input's width for the other kinds (filled in by validation)."""

    units: int
    activation: FunctionSpec = IDENTITY
    kind: str = "dense"
    bias: bool = True  # dense
    eps: float = 1e-5  # layer_norm, batch_norm, rms_norm
    momentum: float = 0.1  # batch_norm
    rate: float = 0.0  # dropout
    block: tuple[LayerSpec, ...] = ()  # residual
    # DESIGN §2c: an image-valued output's (C, H, W); () for a flat one (units is then the
    # width; for an image it is C * H * W, so code that means "width" keeps its meaning)
    shape: tuple[int, ...] = ()
    filters: int = 0  # conv2d
    kernel: tuple[int, int] = (1, 1)  # conv2d, max_pool2d, avg_pool2d: (kh, kw)
    stride: tuple[int, int] = (1, 1)  # conv2d, pools: (rows, columns)
    padding: tuple[int, int] = (0, 0)  # conv2d: zeros added on each side (rows, columns)


@dataclass(frozen=True)
class FlatLayer:
    """Layer l of the flattened list (depth first: a residual, then its block's layers).

    ``sources`` are the layers whose outputs it reads (0 is the input X): one for every
    kind but ``residual``, which reads its own input and its block's last layer.
    """

    index: int
    layer: LayerSpec
    path: str  # the spec's field path, e.g. "layers[2].block[0]"
    sources: tuple[int, ...]
    fan_in: int  # the width of sources[0]
    top: bool  # in the top-level list (not inside a residual block)
    in_shape: tuple[int, ...] = ()  # the shape of sources[0]: (C, H, W) or (fan_in,)

    @property
    def kind(self) -> str:
        return self.layer.kind

    @property
    def units(self) -> int:
        return self.layer.units

    @property
    def shape(self) -> tuple[int, ...]:
        """The output's shape: (C, H, W) for an image, (units,) for a flat output."""
        return self.layer.shape or (self.layer.units,)

    @property
    def image(self) -> bool:
        """Whether its output is an image (C, H, W)."""
        return len(self.layer.shape) == 3


def flatten(inputs: int | tuple[int, ...], layers: tuple[LayerSpec, ...]) -> tuple[FlatLayer, ...]:
    """The numbered layers of a spec's (validated) layer list, depth first.

    ``inputs`` is the input's width, or its shape ((C, H, W) for images, DESIGN §2c).
    """
    flat: list[FlatLayer] = []

    def visit(
        items: tuple[LayerSpec, ...], prefix: str, source: int, shape: tuple[int, ...], top: bool
    ) -> int:
        for i, layer in enumerate(items):
            path = f"{prefix}[{i}]"
            index = len(flat) + 1
            width = math.prod(shape)
            if layer.kind == "residual":
                flat.append(FlatLayer(index, layer, path, (), width, top, shape))
                end = visit(layer.block, f"{path}.block", source, shape, False)
                flat[index - 1] = FlatLayer(index, layer, path, (source, end), width, top, shape)
            else:
                flat.append(FlatLayer(index, layer, path, (source,), width, top, shape))
            source, shape = index, layer.shape or (layer.units,)
        return source

    visit(layers, "layers", 0, (inputs,) if isinstance(inputs, int) else tuple(inputs), True)
    return tuple(flat)


def execution_order(flat: tuple[FlatLayer, ...]) -> tuple[int, ...]:
    """Layer numbers in the order the forward pass computes them (a block before its residual)."""
    order: list[int] = []
    pending: list[int] = []  # residuals waiting for the end of their blocks
    for layer in flat:
        if layer.kind == "residual":
            pending.append(layer.index)
            continue
        order.append(layer.index)
        while pending and flat[pending[-1] - 1].sources[1] == order[-1]:
            order.append(pending.pop())
    return tuple(order)


def layer_parameters(layer: FlatLayer) -> dict[str, tuple[int, ...]]:
    """The trainable parameters of one layer by code name, in PyTorch's order."""
    index, n = layer.index, layer.units
    if layer.kind == "dense":
        shapes = {f"W{index}": (n, layer.fan_in)}
        if layer.layer.bias:
            shapes[f"b{index}"] = (n,)
        return shapes
    if layer.kind in ("layer_norm", "batch_norm"):
        return {f"gamma{index}": (n,), f"beta{index}": (n,)}
    if layer.kind == "rms_norm":
        return {f"gamma{index}": (n,)}
    if layer.kind == "conv2d":
        spec = layer.layer
        shapes = {f"W{index}": (spec.filters, layer.in_shape[0], *spec.kernel)}
        if spec.bias:
            shapes[f"b{index}"] = (spec.filters,)
        return shapes
    return {}


def layer_state(layer: FlatLayer) -> dict[str, tuple[int, ...]]:
    """Entries of params that are not trained: batch norm's running statistics."""
    if layer.kind == "batch_norm":
        return {f"mean{layer.index}": (layer.units,), f"var{layer.index}": (layer.units,)}
    return {}


# A parameter's or state entry's name in the state_dict of the exported PyTorch model
# (``symbackprop export --torch``): layer l is the submodule ``layer<l>`` (nn.Linear,
# nn.Conv2d, nn.LayerNorm, nn.RMSNorm, nn.BatchNorm1d), so W3 is ``layer3.weight``.
TORCH_SUFFIXES = {
    "W": "weight",
    "b": "bias",
    "gamma": "weight",
    "beta": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
# The input standardization (``train --standardize``): entries of params that every function
# of the generated module applies to X, and buffers of the exported model.
INPUT_SCALING = ("x_mean", "x_scale")


def torch_key(name: str) -> str:
    """The exported model's state_dict key of a params entry: W3 -> layer3.weight."""
    if name in INPUT_SCALING:
        return name
    prefix = name.rstrip("0123456789")
    return f"layer{name[len(prefix) :]}.{TORCH_SUFFIXES[prefix]}"


@dataclass(frozen=True)
class TrainSpec:
    """Trainer defaults; hyperparameters mean what they mean in torch.optim.SGD / Adam /
    RMSprop (alpha) and in torch.optim.lr_scheduler's StepLR (step_size, gamma) and
    CosineAnnealingLR (min_lr is its eta_min; T_max is the number of epochs)."""

    optimizer: str = "sgd"
    lr: float = 0.1
    epochs: int = 10
    batch_size: int = 32
    seed: int = 0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    alpha: float = 0.99
    schedule: str = "constant"
    step_size: int = 10
    gamma: float = 0.1
    min_lr: float = 0.0


@dataclass(frozen=True)
class NetworkSpec:
    """A validated spec.  ``inputs`` is the input's flat width (C * H * W for an image);
    ``input_shape`` is the spec's own ``inputs``: (n,) or (C, H, W) (DESIGN §2c)."""

    name: str
    inputs: int
    layers: tuple[LayerSpec, ...]
    loss: FunctionSpec
    l2: float = 0.0
    train: TrainSpec = field(default_factory=TrainSpec)
    input_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.input_shape:  # built from Python with a width only
            object.__setattr__(self, "input_shape", (self.inputs,))

    @property
    def image(self) -> bool:
        """Whether the input is an image (C, H, W)."""
        return len(self.input_shape) == 3

    @cached_property
    def flat(self) -> tuple[FlatLayer, ...]:
        """Every layer, numbered from 1 depth first (DESIGN §2b)."""
        return flatten(self.input_shape, self.layers)

    @cached_property
    def order(self) -> tuple[int, ...]:
        """Layer numbers in the forward pass's order."""
        return execution_order(self.flat)

    @property
    def output_layer(self) -> FlatLayer:
        """The layer whose output is the network's: the last of the top-level list."""
        return [layer for layer in self.flat if layer.top][-1]

    @property
    def plain(self) -> bool:
        """A stack of dense layers with biases: the network of DESIGN §2."""
        return all(layer.kind == "dense" and layer.bias for layer in self.layers)

    @property
    def sizes(self) -> tuple[int, ...]:
        """(inputs, the output width of every layer in numbering order): flat widths."""
        return (self.inputs, *(layer.units for layer in self.flat))

    @property
    def shapes(self) -> tuple[int | tuple[int, ...], ...]:
        """The module's LAYER_SIZES (DESIGN §4): ``sizes`` with (C, H, W) for image values."""

        def shape(dims: tuple[int, ...]) -> int | tuple[int, ...]:
            return dims if len(dims) == 3 else dims[0]

        return (shape(self.input_shape), *(shape(layer.shape) for layer in self.flat))

    def shape_text(self, separator: str = "-") -> str:
        """The sizes for a message: 2-3-2, or 1x8x8-8x8x8-...-10 for image layers."""
        return separator.join(
            "x".join(map(str, size)) if isinstance(size, tuple) else str(size)
            for size in self.shapes
        )

    @property
    def parameters(self) -> dict[str, tuple[int, ...]]:
        """Trainable parameters by code name, in network order (the module's PARAMETERS)."""
        return {k: v for layer in self.flat for k, v in layer_parameters(layer).items()}

    @property
    def state(self) -> dict[str, tuple[int, ...]]:
        """Batch norm's running statistics by code name."""
        return {k: v for layer in self.flat for k, v in layer_state(layer).items()}

    @property
    def torch_keys(self) -> dict[str, str]:
        """Every params entry (trainable, then state) -> its key in the exported model's
        state_dict; batch norm layer l also has ``layer<l>.num_batches_tracked`` there."""
        names = [*self.parameters, *self.state]
        return {name: torch_key(name) for name in names}

    @property
    def torch_counters(self) -> tuple[str, ...]:
        """The exported model's state_dict keys that are no params entry: each batch norm
        layer's ``layer<l>.num_batches_tracked``."""
        return tuple(
            f"layer{layer.index}.num_batches_tracked"
            for layer in self.flat
            if layer.kind == "batch_norm"
        )

    @property
    def parameter_count(self) -> int:
        return sum(math.prod(shape) for shape in self.parameters.values())


# --- reading ------------------------------------------------------------------------------


def bundled_examples() -> dict[str, Path]:
    """Bundled example specs by name (``seed_mlp`` -> its ``.toml``)."""
    # The installed package's own copy first: a checkout's parent folder may hold anything.
    for folder in (_PACKAGED_EXAMPLES_DIR, EXAMPLES_DIR):
        if folder.is_dir():
            return {p.stem: p for p in sorted(folder.glob("*.toml"))}
    return {}


def resolve_spec_path(spec: str) -> Path:
    """A path as given, or the bundled example of that name."""
    path = Path(spec)
    shown = shorten(spec)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except (OSError, ValueError) as err:  # e.g. a name too long for the file system, or a NUL
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise InputError("SPEC", f"cannot read {shown!r}: {shorten(reason)}") from None
    if mode is not None:
        if stat.S_ISDIR(mode):
            raise InputError("SPEC", f"{shown} is a directory, expected a .toml or .json file")
        if not stat.S_ISREG(mode):
            raise InputError("SPEC", f"{shown} is not a regular file")
        return path
    if path.suffix in (".toml", ".json"):
        raise InputError("SPEC", f"no such file: {shown}")
    examples = bundled_examples()
    if spec in examples:
        return examples[spec]
    names = cut_list(examples, shown=10) or "none"
    raise InputError("SPEC", f"no such file or bundled example: {shown!r} (examples: {names})")


class _LongInteger:
    """A JSON integer too long to be any field's value, kept only to be named in the message."""

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))


class _DuplicateKey(ValueError):
    pass


def _json_int(text: str) -> int | _LongInteger:
    # int() of over 4300 digits raises (CPython's limit); anything past 100 digits is refused
    # by every field anyway, so it becomes a marker that the field's message can describe.
    return int(text) if len(text) <= _LONG_INTEGER else _LongInteger(text)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data


def _too_deep(data: Any) -> bool:
    """Whether lists and tables nest more than ``MAX_NESTING`` levels (no recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            if depth > MAX_NESTING:
                return True
            stack.extend((child, depth + 1) for child in value)
    return False


def _read_spec_text(path: Path) -> str:
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_SPEC_BYTES + 1)
    except OSError as err:
        raise InputError("SPEC", f"cannot read {shorten(path.name)}: {err.strerror}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise InputError(
            "SPEC", f"{shorten(path.name)} is larger than {MAX_SPEC_BYTES} bytes, a spec's limit"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            "SPEC", f"cannot read {shorten(path.name)}: not UTF-8 (byte {err.start})"
        ) from None
    return text.removeprefix("\ufeff")  # a byte-order mark, as some editors write


def load_spec(spec: str | Path) -> NetworkSpec:
    """Read a spec from a ``.toml`` / ``.json`` path or a bundled example name."""
    path = resolve_spec_path(str(spec))
    text = _read_spec_text(path)
    name = shorten(path.name)
    deep = f"{name}: nested more than {MAX_NESTING} levels deep"
    try:
        if path.suffix == ".json":
            data = json.loads(text, object_pairs_hook=_json_object, parse_int=_json_int)
        else:
            data = tomllib.loads(text)
    except RecursionError:
        raise InputError("SPEC", deep) from None
    except _DuplicateKey as err:
        key = shorten(err.args[0])
        raise InputError("SPEC", f"invalid JSON in {name}: duplicate key {key!r}") from None
    except json.JSONDecodeError as err:
        raise InputError("SPEC", f"invalid JSON in {name}: {shorten(str(err), 120)}") from None
    except tomllib.TOMLDecodeError as err:
        raise InputError("SPEC", f"invalid TOML in {name}: {shorten(str(err), 120)}") from None
    except ValueError as err:  # tomllib's int() of a literal over CPython's digit limit
        limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
        if "digits" not in str(err):  # pragma: no cover - no other ValueError is known
            raise
        raise InputError(
            "SPEC", f"invalid TOML in {name}: an integer of more than {limit} digits"
        ) from None
    if _too_deep(data):
        raise InputError("SPEC", deep)
    return from_dict(data)


def from_dict(data: Any) -> NetworkSpec:
    """Validate a plain mapping (the TOML/JSON schema) into a ``NetworkSpec``."""
    if not isinstance(data, Mapping):
        raise InputError("spec", f"expected a table/object, got {_kind(data)}")
    _reject_unknown(data, {"name", "inputs", "loss", "l2", "layers", "train"}, "")
    name = _required(data, "name", "")
    if not isinstance(name, str) or not _IDENTIFIER.match(name) or keyword.iskeyword(name):
        raise InputError("name", f"expected a Python identifier, got {_kind(name)}")
    if len(name) > MAX_NAME_LENGTH:
        raise InputError(
            "name",
            f"expected a Python identifier of at most {MAX_NAME_LENGTH} characters, "
            f"got a name of {len(name)} characters",
        )
    if name.startswith("__"):
        raise InputError("name", f"{name!r}: names starting with '__' are reserved by Python")
    if name in _SHADOWED:
        raise InputError("name", f"{name!r} would shadow the module {name} when imported")
    shape = _inputs(_required(data, "inputs", ""))
    inputs = math.prod(shape)
    layers = _layers(_required(data, "layers", ""), shape)
    parameters = sum(
        math.prod(dims)
        for layer in flatten(shape, layers)
        for dims in layer_parameters(layer).values()
    )
    if parameters == 0:  # nothing to train, and no gradient to certify (torch.optim refuses)
        raise InputError(
            "layers", "the network has no trainable parameters; add a dense or normalization layer"
        )
    if parameters > MAX_PARAMETERS:
        raise InputError(
            "layers",
            f"the network has {parameters:,} trainable parameters; "
            f"at most {MAX_PARAMETERS:,} are supported",
        )
    loss = _function(_required(data, "loss", ""), "loss", "loss")
    l2 = _nonnegative_float(data.get("l2", 0.0), "l2")
    train = _train(data.get("train", {}))
    _check_batch(layers, shape, train)
    return NetworkSpec(
        name=name, inputs=inputs, layers=layers, loss=loss, l2=l2, train=train, input_shape=shape
    )


def _inputs(value: Any) -> tuple[int, ...]:
    """``inputs``: a width, or an image's [C, H, W] (DESIGN §2c)."""
    if not isinstance(value, (list, tuple)):
        return (_positive_int(value, "inputs", MAX_UNITS),)
    if len(value) != 3:
        raise InputError(
            "inputs", f"expected a positive integer or [C, H, W], got a list of {len(value)}"
        )
    shape = tuple(_positive_int(v, f"inputs[{i}]", MAX_UNITS) for i, v in enumerate(value))
    if math.prod(shape) > MAX_UNITS:
        raise InputError(
            "inputs",
            f"an image of {math.prod(shape):,} values; at most {MAX_UNITS:,} are supported",
        )
    return shape


def _check_batch(layers: tuple[LayerSpec, ...], inputs: tuple[int, ...], train: TrainSpec) -> None:
    """Batch norm in training needs two samples: the variance of one is 0 (PyTorch refuses)."""
    if train.batch_size > 1:
        return
    for layer in flatten(inputs, layers):
        if layer.kind == "batch_norm":
            raise InputError(
                "train.batch_size",
                f"batch_norm ({layer.path}) needs at least 2 samples per batch in training, "
                f"got {train.batch_size}",
            )


def to_dict(spec: NetworkSpec) -> dict[str, Any]:
    """The plain-data form of a spec (round-trips through ``from_dict``)."""

    def function(f: FunctionSpec) -> str | dict[str, Any]:
        if f.expr is not None:
            return {"name": f.name, "expr": f.expr}
        return {"name": f.name, **dict(f.params)} if f.params else f.name

    def layer(item: LayerSpec) -> dict[str, Any]:
        if item.kind == "dense":
            out: dict[str, Any] = {"units": item.units, "activation": function(item.activation)}
            if not item.bias:
                out["bias"] = False
            return out
        if item.kind in ("layer_norm", "rms_norm"):
            return {"kind": item.kind, "eps": item.eps}
        if item.kind == "batch_norm":
            return {"kind": item.kind, "eps": item.eps, "momentum": item.momentum}
        if item.kind == "dropout":
            return {"kind": item.kind, "rate": item.rate}
        if item.kind == "conv2d":
            out = {
                "kind": item.kind,
                "filters": item.filters,
                "kernel": list(item.kernel),
                "stride": list(item.stride),
                "padding": list(item.padding),
                "activation": function(item.activation),
            }
            if not item.bias:
                out["bias"] = False
            return out
        if item.kind in ("max_pool2d", "avg_pool2d"):
            return {"kind": item.kind, "kernel": list(item.kernel), "stride": list(item.stride)}
        if item.kind == "flatten":
            return {"kind": item.kind}
        return {"kind": item.kind, "block": [layer(inner) for inner in item.block]}

    return {
        "name": spec.name,
        "inputs": list(spec.input_shape) if spec.image else spec.inputs,
        "loss": function(spec.loss),
        "l2": spec.l2,
        "layers": [layer(item) for item in spec.layers],
        "train": dict(vars(spec.train)),
    }


# --- field validators ------------------------------------------------------------------------


def _kind(value: Any) -> str:
    """The value for a message: short, whatever the user wrote."""
    if isinstance(value, bool):
        return f"boolean {value!r}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, _LongInteger):
        return f"a {value.digits}-digit number"
    if isinstance(value, int) and abs(value) >= 10**30:
        if value.bit_length() > 10_000:  # str() of it could exceed CPython's digit limit
            return "a number of over 3000 digits"
        return f"a {len(str(abs(value)))}-digit number"
    if isinstance(value, str):
        return repr(shorten(value))
    return shorten(repr(value))


def _required(data: Mapping, key: str, prefix: str) -> Any:
    if key not in data:
        raise InputError(f"{prefix}{key}", "missing required field")
    return data[key]


def _reject_unknown(data: Mapping, known: set[str], prefix: str, where: str = "") -> None:
    """Refuse a key not in ``known``; ``where`` says whose fields they are ("a dropout layer")."""
    for key in data:
        if key not in known:
            allowed = ", ".join(sorted(known))
            of = f" for {where}" if where else ""
            raise InputError(f"{prefix}{shorten(key)}", f"unknown field{of} (allowed: {allowed})")


def _positive_int(value: Any, path: str, maximum: int) -> int:
    large = isinstance(value, _LongInteger) or (
        isinstance(value, int) and not isinstance(value, bool) and value > maximum
    )
    if large:
        raise InputError(
            path, f"expected a positive integer of at most {maximum}, got {_kind(value)}"
        )
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(path, f"expected a positive integer, got {_kind(value)}")
    return value


def _nonnegative_int(value: Any, path: str, maximum: int) -> int:
    large = isinstance(value, _LongInteger) or (
        isinstance(value, int) and not isinstance(value, bool) and value > maximum
    )
    if large:
        raise InputError(
            path, f"expected a non-negative integer of at most {maximum}, got {_kind(value)}"
        )
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(path, f"expected a non-negative integer, got {_kind(value)}")
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, _LongInteger):
        raise InputError(path, f"expected a finite number, got {_kind(value)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(path, f"expected a number, got {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int past float's range
        number = math.inf
    if not math.isfinite(number):
        raise InputError(path, f"expected a finite number, got {_kind(value)}")
    return number


def _nonnegative_float(value: Any, path: str) -> float:
    number = _number(value, path)
    if number < 0:
        raise InputError(path, f"expected a non-negative number, got {_kind(value)}")
    return number


def _positive_float(value: Any, path: str) -> float:
    number = _number(value, path)
    if number <= 0:
        raise InputError(path, f"expected a positive number, got {_kind(value)}")
    return number


KINDS = (  # layers.LAYERS
    "dense",
    "layer_norm",
    "batch_norm",
    "dropout",
    "residual",
    "rms_norm",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "flatten",
)
IMAGE_KINDS = ("conv2d", "max_pool2d", "avg_pool2d", "flatten")  # read a (C, H, W) input
_KIND_FIELDS = {
    "conv2d": {"kind", "filters", "kernel", "stride", "padding", "activation", "bias"},
    "max_pool2d": {"kind", "kernel", "stride"},
    "avg_pool2d": {"kind", "kernel", "stride"},
    "flatten": {"kind"},
    "dense": {"kind", "units", "activation", "bias"},
    "layer_norm": {"kind", "eps"},
    "batch_norm": {"kind", "eps", "momentum"},
    "dropout": {"kind", "rate"},
    "residual": {"kind", "block"},
    "rms_norm": {"kind", "eps"},
}


def _layers(value: Any, inputs: tuple[int, ...]) -> tuple[LayerSpec, ...]:
    if isinstance(value, (list, tuple)) and len(value) > MAX_LAYERS:
        raise InputError("layers", f"{len(value)} layers; at most {MAX_LAYERS} are supported")
    count = [0]
    layers = _layer_list(value, "layers", inputs, count, 1)
    flat = flatten(inputs, layers)
    output = _output(flat)
    if output.image:
        raise InputError(
            output.path,
            f"the network's output must be flat, but this {output.kind} layer outputs "
            f"{_shape_text(output.shape)}; end with a flatten or dense layer",
        )
    for layer in flat:
        if layer.kind == "dense" and layer.layer.activation.name == "softmax":
            if layer is not output:
                raise InputError(
                    f"{layer.path}.activation",
                    "softmax is supported only as the output layer's activation, "
                    f"and the output layer is {output.path}",
                )
    return layers


def _output(flat: tuple[FlatLayer, ...]) -> FlatLayer:
    return [layer for layer in flat if layer.top][-1]


def _layer_list(
    value: Any, path: str, shape: tuple[int, ...], count: list[int], nesting: int
) -> tuple[LayerSpec, ...]:
    """The layers of ``layers`` (nesting 1) or of a residual block (nesting 2, 3, ...)."""
    if not isinstance(value, (list, tuple)):
        raise InputError(path, f"expected a list of layers, got {_kind(value)}")
    if not value:
        raise InputError(path, "expected at least one layer, got none")
    layers = []
    for i, layer in enumerate(value):
        spec = _layer(layer, f"{path}[{i}]", shape, count, nesting)
        layers.append(spec)
        shape = spec.shape or (spec.units,)
    return tuple(layers)


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """A conv or pool output's rows (or columns): floor((size + 2 padding - kernel) / stride) + 1
    (DESIGN §2c)."""
    return (size + 2 * padding - kernel) // stride + 1


def _shape_text(shape: tuple[int, ...]) -> str:
    if len(shape) == 3:
        return f"{shape[0]} channel{'s' if shape[0] > 1 else ''} of {shape[1]}x{shape[2]}"
    return f"{shape[0]} features"


def _layer(
    value: Any, path: str, shape: tuple[int, ...], count: list[int], nesting: int
) -> LayerSpec:
    """One layer whose input has ``shape`` ((n,) or (C, H, W)); ``count`` counts the layers
    read so far."""
    count[0] += 1
    if count[0] > MAX_LAYERS:
        raise InputError(
            "layers",
            f"more than {MAX_LAYERS} layers, residual blocks' layers included; "
            f"at most {MAX_LAYERS} are supported",
        )
    if not isinstance(value, Mapping):
        raise InputError(path, f"expected a table (one layer), got {_kind(value)}")
    kind = value.get("kind", "dense")
    known = ", ".join(KINDS)
    if not isinstance(kind, str):
        raise InputError(
            f"{path}.kind", f"expected the name of a layer kind ({known}), got {_kind(kind)}"
        )
    if kind not in KINDS:
        raise InputError(f"{path}.kind", f"unknown layer kind {_kind(kind)} (known: {known})")
    _reject_unknown(value, _KIND_FIELDS[kind], f"{path}.", f"a {kind} layer")
    width = math.prod(shape)
    image = len(shape) == 3
    if kind in IMAGE_KINDS:
        if not image:
            raise InputError(
                path,
                f"a {kind} layer needs an image input [C, H, W], but its input is "
                f"{_shape_text(shape)}",
            )
        return _image_layer(value, kind, path, shape)
    if image:
        raise InputError(
            path,
            f"a {kind} layer needs a flat input, but its input is {_shape_text(shape)}; "
            'add a layer of kind = "flatten" before it',
        )
    if kind == "dense":
        units = _positive_int(_required(value, "units", f"{path}."), f"{path}.units", MAX_UNITS)
        activation = _function(
            value.get("activation", "identity"), f"{path}.activation", "activation"
        )
        bias = value.get("bias", True)
        if not isinstance(bias, bool):
            raise InputError(f"{path}.bias", f"expected true or false, got {_kind(bias)}")
        return LayerSpec(units=units, activation=activation, bias=bias)
    if kind in ("layer_norm", "batch_norm", "rms_norm"):
        eps = _positive_float(value.get("eps", 1e-5), f"{path}.eps")
        momentum = 0.1
        if kind == "batch_norm":
            momentum = _fraction(value.get("momentum", 0.1), f"{path}.momentum", "]")
        return LayerSpec(units=width, kind=kind, eps=eps, momentum=momentum)
    if kind == "dropout":
        rate = _fraction(_required(value, "rate", f"{path}."), f"{path}.rate", ")")
        return LayerSpec(units=width, kind=kind, rate=rate)
    return _residual(value, path, shape, count, nesting)


def _pair(value: Any, path: str, minimum: int) -> tuple[int, int]:
    """An int or a list of two ints, each at least ``minimum`` (kernel, stride, padding)."""
    what = "positive" if minimum else "non-negative"
    check = _positive_int if minimum else _nonnegative_int
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise InputError(
                path, f"expected a {what} integer or a list of two, got a list of {len(value)}"
            )
        first, second = (check(v, f"{path}[{i}]", MAX_UNITS) for i, v in enumerate(value))
        return first, second
    number = check(value, path, MAX_UNITS)
    return number, number


def _image_layer(value: Mapping, kind: str, path: str, shape: tuple[int, ...]) -> LayerSpec:
    """conv2d, max_pool2d, avg_pool2d or flatten on an input of shape (C, H, W)."""
    channels, height, width = shape
    if kind == "flatten":
        return LayerSpec(units=math.prod(shape), kind=kind)
    kernel = _pair(_required(value, "kernel", f"{path}."), f"{path}.kernel", 1)
    if kind == "conv2d":
        filters = _positive_int(
            _required(value, "filters", f"{path}."), f"{path}.filters", MAX_UNITS
        )
        stride = _pair(value.get("stride", 1), f"{path}.stride", 1)
        padding = _pair(value.get("padding", 0), f"{path}.padding", 0)
    else:
        stride = _pair(value.get("stride", list(kernel)), f"{path}.stride", 1)
        padding = (0, 0)
    rows, columns = height + 2 * padding[0], width + 2 * padding[1]
    if kernel[0] > rows or kernel[1] > columns:
        padded = " padded" if any(padding) else ""
        raise InputError(
            f"{path}.kernel",
            f"a {kernel[0]}x{kernel[1]} kernel does not fit its{padded} {rows}x{columns} input",
        )
    out = (
        filters if kind == "conv2d" else channels,
        output_size(height, kernel[0], stride[0], padding[0]),
        output_size(width, kernel[1], stride[1], padding[1]),
    )
    if math.prod(out) > MAX_UNITS:
        raise InputError(
            path, f"an output of {math.prod(out):,} values; at most {MAX_UNITS:,} are supported"
        )
    if kind != "conv2d":
        return LayerSpec(units=math.prod(out), kind=kind, shape=out, kernel=kernel, stride=stride)
    activation = _function(value.get("activation", "identity"), f"{path}.activation", "activation")
    if activation.name == "softmax" and not activation.is_custom:
        raise InputError(
            f"{path}.activation", "softmax is supported only as a dense output layer's activation"
        )
    bias = value.get("bias", True)
    if not isinstance(bias, bool):
        raise InputError(f"{path}.bias", f"expected true or false, got {_kind(bias)}")
    return LayerSpec(
        units=math.prod(out),
        activation=activation,
        kind=kind,
        bias=bias,
        shape=out,
        filters=filters,
        kernel=kernel,
        stride=stride,
        padding=padding,
    )


def _fraction(value: Any, path: str, end: str) -> float:
    """A number in [0, 1] (``end`` "]") or [0, 1) (``end`` ")")."""
    number = _number(value, path)
    if number < 0 or number > 1 or (end == ")" and number == 1):
        raise InputError(path, f"expected a number in [0, 1{end}, got {_kind(value)}")
    return number


def _residual(
    value: Mapping, path: str, shape: tuple[int, ...], count: list[int], nesting: int
) -> LayerSpec:
    if nesting > MAX_RESIDUAL_NESTING:
        # its block's tables would lie deeper than a spec file may nest (load_spec)
        raise InputError(
            path,
            f"{nesting} residual layers inside each other; at most {MAX_RESIDUAL_NESTING} "
            f"are supported (a spec file nests at most {MAX_NESTING} levels)",
        )
    width = math.prod(shape)
    block = _layer_list(
        _required(value, "block", f"{path}."), f"{path}.block", shape, count, nesting + 1
    )
    if block[-1].units != width:
        # every kind but dense keeps its input's width: the last dense layer sets the block's
        last = max(i for i, layer in enumerate(block) if layer.kind == "dense")
        raise InputError(
            f"{path}.block[{last}].units",
            f"a residual block must end with its input's width {width} "
            f"(its output is added to its input), but this layer makes it {block[last].units}",
        )
    return LayerSpec(units=width, kind="residual", block=block)


def _function(value: Any, path: str, kind: str) -> FunctionSpec:
    """A built-in ``kind`` ("activation" or "loss") by name, or a custom one."""
    if isinstance(value, str):
        if not value.strip():
            raise InputError(path, "expected a name, got an empty string")
        _check_length(value.strip(), path)
        return FunctionSpec(name=value.strip())
    if not isinstance(value, Mapping):
        raise InputError(path, f"expected a name or a table with name and expr, got {_kind(value)}")
    name = _required(value, "name", f"{path}.")
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise InputError(f"{path}.name", f"expected an identifier, got {_kind(name)}")
    _check_length(name, f"{path}.name")
    extra = [key for key in value if key not in ("name", "expr")]
    if kind == "activation" and extra:
        _check_parameter_names(value, name, extra, path)
        if "expr" not in value:
            params = tuple(
                sorted(
                    (key, parameter_value(value[key], f"{path}.{shorten(key)}")) for key in extra
                )
            )
            return FunctionSpec(name=name, params=params)
    _reject_unknown(value, {"name", "expr"}, f"{path}.")
    if "expr" not in value:
        return FunctionSpec(name=name)
    _check_custom_name(name, f"{path}.name")
    expr = value["expr"]
    if not isinstance(expr, str) or not expr.strip():
        raise InputError(f"{path}.expr", f"expected an expression string, got {_kind(expr)}")
    return FunctionSpec(name=name, expr=expr)


def parameter_value(value: Any, path: str) -> float:
    """An activation parameter (a leaky_relu slope, an elu alpha): a finite number whose
    decimal exponent is within ``MAX_PARAMETER_EXPONENT``, or 0."""
    number = _number(value, path)
    if number != 0 and abs(decimal.Decimal(repr(number)).adjusted()) > MAX_PARAMETER_EXPONENT:
        raise InputError(
            path,
            f"expected 0 or a number with a decimal exponent from -{MAX_PARAMETER_EXPONENT} "
            f"to {MAX_PARAMETER_EXPONENT}, got {_kind(value)}",
        )
    return number


def _takes() -> str:
    return ", ".join(f"{n} takes {', '.join(p)}" for n, p in ACTIVATION_PARAMETERS.items())


def _check_parameter_names(value: Mapping, name: str, extra: list[Any], path: str) -> None:
    """The keys of an activation table besides name and expr: a built-in's parameters."""
    key = extra[0]
    field = f"{path}.{shorten(key)}"
    is_parameter = any(key in p for p in ACTIVATION_PARAMETERS.values())
    if "expr" in value:
        if is_parameter:
            raise InputError(
                field,
                f"a custom activation (given by expr) takes no parameters ({_takes()})",
            )
        _reject_unknown(value, {"name", "expr"}, f"{path}.")
    known = ACTIVATION_PARAMETERS.get(name)
    if known is not None:
        for key in extra:
            if key not in known:
                raise InputError(
                    f"{path}.{shorten(key)}",
                    f"unknown parameter of {name} (it takes: {', '.join(known)})",
                )
    elif name in BUILTIN_ACTIVATIONS:
        raise InputError(field, f"{name} takes no parameters ({_takes()})")
    else:
        _reject_unknown(value, {"name", "expr"}, f"{path}.")


def _check_length(name: str, path: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise InputError(
            path,
            f"a name of {len(name)} characters; names are at most {MAX_NAME_LENGTH} characters",
        )


def _check_custom_name(name: str, path: str) -> None:
    """A custom function's name: its own, not a built-in's, a keyword or a reserved name."""
    for kind, names in (("activation", BUILTIN_ACTIVATIONS), ("loss", BUILTIN_LOSSES)):
        if name in names:
            raise InputError(path, f"{name!r} is a built-in {kind}; choose another name")
    if keyword.iskeyword(name):
        raise InputError(path, f"{name!r} is a Python keyword; choose another name")
    if name.startswith("__"):
        raise InputError(path, f"{name!r}: names starting with '__' are reserved by Python")


def _train(value: Any) -> TrainSpec:
    if not isinstance(value, Mapping):
        raise InputError("train", f"expected a table, got {_kind(value)}")
    _reject_unknown(value, set(TrainSpec.__dataclass_fields__), "train.")
    defaults = TrainSpec()
    optimizer = value.get("optimizer", defaults.optimizer)
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise InputError(
            "train.optimizer",
            f"unknown optimizer {_kind(optimizer)} (known: {', '.join(OPTIMIZERS)})",
        )
    beta1 = _number(value.get("beta1", defaults.beta1), "train.beta1")
    beta2 = _number(value.get("beta2", defaults.beta2), "train.beta2")
    alpha = _number(value.get("alpha", defaults.alpha), "train.alpha")
    for key, beta in (("beta1", beta1), ("beta2", beta2), ("alpha", alpha)):
        if not 0 <= beta < 1:
            raise InputError(f"train.{key}", f"expected a number in [0, 1), got {beta!r}")
    momentum = _nonnegative_float(value.get("momentum", defaults.momentum), "train.momentum")
    schedule = value.get("schedule", defaults.schedule)
    if not isinstance(schedule, str) or schedule not in SCHEDULES:
        raise InputError(
            "train.schedule",
            f"unknown schedule {_kind(schedule)} (known: {', '.join(SCHEDULES)})",
        )
    return TrainSpec(
        optimizer=optimizer,
        lr=_positive_float(value.get("lr", defaults.lr), "train.lr"),
        epochs=_positive_int(value.get("epochs", defaults.epochs), "train.epochs", MAX_COUNT),
        batch_size=_positive_int(
            value.get("batch_size", defaults.batch_size), "train.batch_size", MAX_COUNT
        ),
        seed=_nonnegative_int(value.get("seed", defaults.seed), "train.seed", MAX_SEED),
        momentum=momentum,
        beta1=beta1,
        beta2=beta2,
        eps=_positive_float(value.get("eps", defaults.eps), "train.eps"),
        alpha=alpha,
        schedule=schedule,
        step_size=_positive_int(
            value.get("step_size", defaults.step_size), "train.step_size", MAX_COUNT
        ),
        gamma=_positive_float(value.get("gamma", defaults.gamma), "train.gamma"),
        min_lr=_nonnegative_float(value.get("min_lr", defaults.min_lr), "train.min_lr"),
    )
