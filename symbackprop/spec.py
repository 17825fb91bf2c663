"""Network specs: reading TOML / JSON / Python dicts into a validated, frozen ``NetworkSpec``.

This module checks structure and types only (no SymPy here).  Names of activations and
losses, and custom expressions, are resolved by ``symbackprop.functions.resolve``; both
raise ``InputError`` whose message starts with the field path, e.g.
``layers[1].units: expected a positive integer, got -3``.

Schema (DESIGN §2)::

    name = "seed_mlp"          # Python identifier
    inputs = 2
    loss = "cross_entropy"     # or { name = "...", expr = "..." } in yhat and y
    l2 = 0.0                   # optional
    [[layers]]                 # one or more
    units = 3
    activation = "relu"        # or { name = "...", expr = "..." } in x
    [train]                    # optional: optimizer, lr, epochs, batch_size, seed,
                               # momentum, beta1, beta2, eps
"""

from __future__ import annotations

import json
import keyword
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from symbackprop.errors import InputError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

OPTIMIZERS = ("sgd", "momentum", "adam")
# a generated module named like these would hide them from its own imports
_SHADOWED = frozenset(getattr(sys, "stdlib_module_names", ())) | {"numpy", "symbackprop"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
_PACKAGED_EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


@dataclass(frozen=True)
class FunctionSpec:
    """A built-in function by name, or a custom one: a name and an expression string."""

    name: str
    expr: str | None = None

    @property
    def is_custom(self) -> bool:
        return self.expr is not None


@dataclass(frozen=True)
class LayerSpec:
    units: int
    activation: FunctionSpec


@dataclass(frozen=True)
class TrainSpec:
    """Trainer defaults; hyperparameters mean what they mean in torch.optim.SGD / Adam."""

    optimizer: str = "sgd"
    lr: float = 0.1
    epochs: int = 10
    batch_size: int = 32
    seed: int = 0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    inputs: int
    layers: tuple[LayerSpec, ...]
    loss: FunctionSpec
    l2: float = 0.0
    train: TrainSpec = field(default_factory=TrainSpec)

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.inputs, *(layer.units for layer in self.layers))

    @property
    def parameter_count(self) -> int:
        sizes = self.sizes
        return sum(n_out * n_in + n_out for n_in, n_out in zip(sizes, sizes[1:], strict=False))


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
    if path.suffix in (".toml", ".json") or path.exists():
        if not path.is_file():
            raise InputError("SPEC", f"no such file: {spec}")
        return path
    examples = bundled_examples()
    if spec in examples:
        return examples[spec]
    names = ", ".join(examples) or "none"
    raise InputError("SPEC", f"no such file or bundled example: {spec!r} (examples: {names})")


def load_spec(spec: str | Path) -> NetworkSpec:
    """Read a spec from a ``.toml`` / ``.json`` path or a bundled example name."""
    path = resolve_spec_path(str(spec))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError("SPEC", f"cannot read {path.name}: {err}") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError("SPEC", f"invalid JSON in {path.name}: {err}") from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise InputError("SPEC", f"invalid TOML in {path.name}: {err}") from None
    return from_dict(data)


def from_dict(data: Any) -> NetworkSpec:
    """Validate a plain mapping (the TOML/JSON schema) into a ``NetworkSpec``."""
    if not isinstance(data, Mapping):
        raise InputError("spec", f"expected a table/object, got {_kind(data)}")
    _reject_unknown(data, {"name", "inputs", "loss", "l2", "layers", "train"}, "")
    name = _required(data, "name", "")
    if not isinstance(name, str) or not _IDENTIFIER.match(name) or keyword.iskeyword(name):
        raise InputError("name", f"expected a Python identifier, got {name!r}")
    if name in _SHADOWED:
        raise InputError("name", f"{name!r} would shadow the module {name} when imported")
    inputs = _positive_int(_required(data, "inputs", ""), "inputs")
    layers = _layers(_required(data, "layers", ""))
    loss = _function(_required(data, "loss", ""), "loss")
    l2 = _nonnegative_float(data.get("l2", 0.0), "l2")
    train = _train(data.get("train", {}))
    return NetworkSpec(name=name, inputs=inputs, layers=layers, loss=loss, l2=l2, train=train)


def to_dict(spec: NetworkSpec) -> dict[str, Any]:
    """The plain-data form of a spec (round-trips through ``from_dict``)."""

    def function(f: FunctionSpec) -> str | dict[str, str]:
        return f.name if f.expr is None else {"name": f.name, "expr": f.expr}

    return {
        "name": spec.name,
        "inputs": spec.inputs,
        "loss": function(spec.loss),
        "l2": spec.l2,
        "layers": [
            {"units": layer.units, "activation": function(layer.activation)}
            for layer in spec.layers
        ],
        "train": dict(vars(spec.train)),
    }


# --- field validators ------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {value!r}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return repr(value)


def _required(data: Mapping, key: str, prefix: str) -> Any:
    if key not in data:
        raise InputError(f"{prefix}{key}", "missing required field")
    return data[key]


def _reject_unknown(data: Mapping, known: set[str], prefix: str) -> None:
    for key in data:
        if key not in known:
            allowed = ", ".join(sorted(known))
            raise InputError(f"{prefix}{key}", f"unknown field (allowed: {allowed})")


def _positive_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(path, f"expected a positive integer, got {_kind(value)}")
    return value


def _nonnegative_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(path, f"expected a non-negative integer, got {_kind(value)}")
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(path, f"expected a number, got {_kind(value)}")
    if not math.isfinite(value):
        raise InputError(path, f"expected a finite number, got {value!r}")
    return float(value)


def _nonnegative_float(value: Any, path: str) -> float:
    number = _number(value, path)
    if number < 0:
        raise InputError(path, f"expected a non-negative number, got {value!r}")
    return number


def _positive_float(value: Any, path: str) -> float:
    number = _number(value, path)
    if number <= 0:
        raise InputError(path, f"expected a positive number, got {value!r}")
    return number


def _layers(value: Any) -> tuple[LayerSpec, ...]:
    if not isinstance(value, (list, tuple)):
        raise InputError("layers", f"expected a list of layers, got {_kind(value)}")
    if not value:
        raise InputError("layers", "expected at least one layer, got none")
    layers = []
    for i, layer in enumerate(value):
        path = f"layers[{i}]"
        if not isinstance(layer, Mapping):
            raise InputError(
                path, f"expected a table with units and activation, got {_kind(layer)}"
            )
        _reject_unknown(layer, {"units", "activation"}, f"{path}.")
        units = _positive_int(_required(layer, "units", f"{path}."), f"{path}.units")
        activation = _function(_required(layer, "activation", f"{path}."), f"{path}.activation")
        layers.append(LayerSpec(units=units, activation=activation))
    return tuple(layers)


def _function(value: Any, path: str) -> FunctionSpec:
    if isinstance(value, str):
        if not value.strip():
            raise InputError(path, "expected a name, got an empty string")
        return FunctionSpec(name=value.strip())
    if isinstance(value, Mapping):
        _reject_unknown(value, {"name", "expr"}, f"{path}.")
        name = _required(value, "name", f"{path}.")
        if not isinstance(name, str) or not _IDENTIFIER.match(name):
            raise InputError(f"{path}.name", f"expected an identifier, got {_kind(name)}")
        if "expr" not in value:
            return FunctionSpec(name=name)
        expr = value["expr"]
        if not isinstance(expr, str) or not expr.strip():
            raise InputError(f"{path}.expr", f"expected an expression string, got {_kind(expr)}")
        return FunctionSpec(name=name, expr=expr)
    raise InputError(path, f"expected a name or a table with name and expr, got {_kind(value)}")


def _train(value: Any) -> TrainSpec:
    if not isinstance(value, Mapping):
        raise InputError("train", f"expected a table, got {_kind(value)}")
    _reject_unknown(value, set(TrainSpec.__dataclass_fields__), "train.")
    defaults = TrainSpec()
    optimizer = value.get("optimizer", defaults.optimizer)
    if optimizer not in OPTIMIZERS:
        raise InputError(
            "train.optimizer", f"unknown optimizer {optimizer!r} (known: {', '.join(OPTIMIZERS)})"
        )
    beta1 = _number(value.get("beta1", defaults.beta1), "train.beta1")
    beta2 = _number(value.get("beta2", defaults.beta2), "train.beta2")
    for key, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0 <= beta < 1:
            raise InputError(f"train.{key}", f"expected a number in [0, 1), got {beta!r}")
    momentum = _nonnegative_float(value.get("momentum", defaults.momentum), "train.momentum")
    return TrainSpec(
        optimizer=optimizer,
        lr=_positive_float(value.get("lr", defaults.lr), "train.lr"),
        epochs=_positive_int(value.get("epochs", defaults.epochs), "train.epochs"),
        batch_size=_positive_int(value.get("batch_size", defaults.batch_size), "train.batch_size"),
        seed=_nonnegative_int(value.get("seed", defaults.seed), "train.seed"),
        momentum=momentum,
        beta1=beta1,
        beta2=beta2,
        eps=_positive_float(value.get("eps", defaults.eps), "train.eps"),
    )
