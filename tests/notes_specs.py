"""Random network specs for the document tests (test_notes_render.py).

Each spec is TOML text, as a user writes it, drawn by a seeded ``random.Random``: the same set
on every run and machine, and a failing document is named by its spec's name, whose text the
failure message shows.  A set covers, by construction, every activation of the registry
(softmax as an output), leaky_relu and elu with parameters other than their defaults, the
custom activations and losses below, and every loss of the registry with the outputs it pairs
with (softmax or sigmoid with cross_entropy, sigmoid with binary_cross_entropy, any output
with mse or a custom loss).  Networks have 1 to 5 dense layers of 1 to 16 units, in three
size classes taken in turn: tiny (1 to 3 units), within the neuron-by-neuron view's parameter
limit but as wide as it allows, and wide.  Every fourth spec also has layers of the other
kinds (normalization, dropout, a residual block) and a dense layer without bias.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import cache

from symbackprop.functions import ACTIVATIONS, LOSSES
from symbackprop.graph import EXPANDED_LIMIT
from symbackprop.spec import ACTIVATION_PARAMETERS, NetworkSpec, from_dict

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

# Values other than the defaults, for every parameter an activation takes (DESIGN §2b).
PARAMETER_VALUES: dict[str, tuple[float, ...]] = {
    "slope": (0.05, 0.1, 0.2, 0.3),
    "alpha": (0.5, 1.5, 2.0),
}
CUSTOM_ACTIVATIONS: tuple[tuple[str, str], ...] = (
    ("mish", "x*tanh(softplus(x))"),
    ("softsign", "x/(1 + abs(x))"),
    ("bent", "(sqrt(x**2 + 1) - 1)/2 + x"),
    ("gauss", "exp(-x**2)"),
    ("hardtanh", "Max(-1, Min(1, x))"),
)
CUSTOM_LOSSES: tuple[tuple[str, str], ...] = (
    ("logcosh", "log(cosh(yhat - y))"),
    ("pseudo_huber", "sqrt(1 + (yhat - y)**2) - 1"),
    ("absolute", "abs(yhat - y)"),
)
OTHER_KINDS = ("layer_norm", "batch_norm", "rms_norm", "dropout", "residual")
MAX_DEPTH = 5  # dense layers
MAX_WIDTH = 16


def _table(name: str, **fields: str | float) -> str:
    inner = ", ".join(
        f"{key} = {value!r}" if isinstance(value, float) else f'{key} = "{value}"'
        for key, value in {"name": name, **fields}.items()
    )
    return f"{{ {inner} }}"


def hidden_activations() -> tuple[str, ...]:
    """Every activation a hidden layer may take, as the TOML value of ``activation``."""
    builtin = [f'"{name}"' for name, entry in ACTIVATIONS.items() if not entry.softmax]
    with_parameters = [
        _table(name, **{key: PARAMETER_VALUES[key][0]})
        for name, defaults in ACTIVATION_PARAMETERS.items()
        for key in defaults
    ]
    custom = [_table(name, expr=expr) for name, expr in CUSTOM_ACTIVATIONS]
    return (*builtin, *with_parameters, *custom)


def losses() -> tuple[str, ...]:
    """Every loss, as the TOML value of ``loss``."""
    return (*(f'"{name}"' for name in LOSSES), *(_table(n, expr=e) for n, e in CUSTOM_LOSSES))


def _pairs() -> list[tuple[str, str | None]]:
    """(loss, output activation) pairs a set must hold: every loss, and both outputs that
    give probabilities to cross_entropy; None is any output the loss takes."""
    pairs: list[tuple[str, str | None]] = [(loss, None) for loss in losses()]
    pairs.remove(('"cross_entropy"', None))
    return [*pairs, ('"cross_entropy"', '"softmax"'), ('"cross_entropy"', '"sigmoid"')]


def _output(rng: random.Random, loss: str) -> str:
    """An output activation that pairs with ``loss``."""
    if loss == '"cross_entropy"':
        return rng.choice(('"softmax"', '"softmax"', '"sigmoid"'))
    if loss == '"binary_cross_entropy"':
        return '"sigmoid"'
    if rng.random() < 0.2:
        return '"softmax"'
    return rng.choice(('"identity"', '"identity"', '"tanh"', '"sigmoid"', '"softplus"'))


def _parameters(sizes: list[int]) -> int:
    return sum((n_in + 1) * n_out for n_in, n_out in zip(sizes, sizes[1:], strict=False))


def _sizes(rng: random.Random, depth: int, size_class: int, least_output: int) -> list[int]:
    """inputs, then the units of each dense layer."""
    while True:
        top = (3, MAX_WIDTH, MAX_WIDTH)[size_class]
        sizes = [rng.randint(1, top) for _ in range(depth + 1)]
        sizes[-1] = max(sizes[-1], least_output)
        if size_class != 1 or _parameters(sizes) <= EXPANDED_LIMIT:
            return sizes


def _dense(units: int, activation: str, bias: bool = True) -> str:
    lines = ["[[layers]]", f"units = {units}", f"activation = {activation}"]
    if not bias:
        lines.append("bias = false")
    return "\n".join(lines)


def _other_kind(rng: random.Random, kind: str, width: int, activation: str) -> str:
    if kind == "dropout":
        return f'[[layers]]\nkind = "dropout"\nrate = {rng.choice((0.1, 0.2, 0.5))!r}'
    if kind != "residual":
        return f'[[layers]]\nkind = "{kind}"'
    block = [
        "  [[layers.block]]",
        f"  units = {rng.randint(1, MAX_WIDTH)}",
        f"  activation = {activation}",
        "  [[layers.block]]",
        f"  units = {width}",
    ]
    if rng.random() < 0.5:
        block += ["  [[layers.block]]", '  kind = "layer_norm"']
    return '[[layers]]\nkind = "residual"\n' + "\n".join(block)


@dataclass(frozen=True)
class RandomSpec:
    name: str
    toml: str

    def spec(self) -> NetworkSpec:
        return from_dict(tomllib.loads(self.toml))


def random_specs(count: int, seed: int, prefix: str) -> tuple[RandomSpec, ...]:
    """``count`` specs named ``<prefix>_<i>``; every hidden activation, every loss and (from 20
    specs on) every other layer kind appears at least once."""
    rng = random.Random(seed)
    pending = list(hidden_activations())
    rng.shuffle(pending)
    pending_pairs = _pairs()
    rng.shuffle(pending_pairs)
    pending_kinds = list(OTHER_KINDS)
    rng.shuffle(pending_kinds)
    out = []
    for i in range(count):
        left = count - i
        loss, output = pending_pairs.pop() if pending_pairs else (rng.choice(losses()), None)
        output = output or _output(rng, loss)
        least = 2 if output == '"softmax"' else 1  # softmax needs two units
        # hidden layers enough to place the activations not yet used in the remaining specs
        needed = math.ceil(len(pending) / left)
        depth = max(rng.randint(1, MAX_DEPTH), min(MAX_DEPTH, needed + 1))
        hidden = [
            pending.pop() if pending else rng.choice(hidden_activations()) for _ in range(depth - 1)
        ]
        sizes = _sizes(rng, depth, i % 3, least)
        blocks = [_dense(units, act) for units, act in zip(sizes[1:-1], hidden, strict=True)]
        if i % 4 == 3 and depth > 1:
            kind = pending_kinds.pop() if pending_kinds else rng.choice(OTHER_KINDS)
            where = rng.randrange(len(blocks))
            blocks.insert(where + 1, _other_kind(rng, kind, sizes[where + 1], hidden[where]))
            blocks[0] = _dense(sizes[1], hidden[0], bias=False)
        blocks.append(_dense(sizes[-1], output))
        optimizer = rng.choice(("sgd", "momentum", "adam"))
        if i % 5 == 4:  # by position, so that the generator's draws stay those of before
            optimizer = "rmsprop"
        schedule = ("constant", "step", "constant", "cosine")[i % 4]
        head = [
            f'name = "{prefix}_{i}"',
            f"inputs = {sizes[0]}",
            f"loss = {loss}",
            f"l2 = {rng.choice((0.0, 0.0, 0.001))!r}",
        ]
        train = [
            "[train]",
            f'optimizer = "{optimizer}"',
            f"lr = {rng.choice((0.01, 0.05, 0.1))!r}",
            "epochs = 5",
            "batch_size = 16",
            f"seed = {rng.randrange(100)}",
        ]
        if schedule != "constant":
            train.append(f'schedule = "{schedule}"')
            train.append("step_size = 2" if schedule == "step" else "min_lr = 0.001")
        toml = "\n\n".join(["\n".join(head), *blocks, "\n".join(train)]) + "\n"
        out.append(RandomSpec(f"{prefix}_{i}", toml))
    return tuple(out)


@cache
def default_specs() -> tuple[RandomSpec, ...]:
    """The fast set: every hidden activation and every loss in 8 specs."""
    return random_specs(8, seed=2024, prefix="notes")


@cache
def slow_specs() -> tuple[RandomSpec, ...]:
    """The larger set, for tests marked slow: also every other layer kind."""
    return random_specs(40, seed=7, prefix="notes_slow")
