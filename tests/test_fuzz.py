"""Random and hostile expressions on every surface: each one finishes or is refused, cleanly.

The four surfaces of the expression language: ``chain`` and ``descent`` through
``cli.main``, a custom activation and a custom loss through ``spec.from_dict`` +
``codegen.generate``.  The contract: exit 0, 1 or 2 (never an escaped exception), exactly
one stderr line at exit 2, no traceback; for a spec, only ``InputError``.  Every case runs
under a watchdog alarm: a case that runs past it fails as a hang.  The alarm is a guard
against "never finishes", not a speed assertion; the limits themselves are operation counts.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import signal
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symbackprop import cli, graph
from symbackprop.codegen import generate
from symbackprop.derive import derive
from symbackprop.errors import InputError
from symbackprop.expressions import FUNCTIONS, parse_expression
from symbackprop.spec import from_dict, to_dict

HANG_SECONDS = 30


class Hang(Exception):
    pass


@contextlib.contextmanager
def watchdog(what: str) -> Iterator[None]:
    def alarm(signum: int, frame: object) -> None:
        raise Hang(what)

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_SECONDS)
    try:
        yield
    except Hang:
        pytest.fail(f"hang: {what} ran past {HANG_SECONDS} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with watchdog(" ".join(argv)[:200]):
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def check_cli(argv: list[str]) -> int:
    rc, _, err = run_cli(argv)
    assert rc in (0, 1, 2), (argv, rc, err)
    assert "Traceback" not in err, (argv, err)
    if rc == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, (argv, err)
    return rc


def spec_with(activation: str | None = None, loss: str | None = None) -> dict:
    hidden = {"name": "custom", "expr": activation} if activation is not None else "tanh"
    return {
        "name": "fuzz",
        "inputs": 2,
        "layers": [
            {"units": 3, "activation": hidden},
            {"units": 1, "activation": "identity"},
        ],
        "loss": {"name": "custom_loss", "expr": loss} if loss is not None else "mse",
    }


def check_spec(data: dict) -> str:
    """'ok' or 'refused'; anything but InputError escapes (and fails the test)."""
    with watchdog(repr(data["layers"][0]["activation"]) + repr(data["loss"])):
        try:
            source = generate(from_dict(data))
        except InputError as err:
            assert "\n" not in str(err), str(err)
            return "refused"
    assert "def gradients(" in source
    return "ok"


# --- the reproductions of the outside test (H1, H2, H4, C1, C2) -----------------------------

TOWER_30 = "**".join(["x"] * 30)
TOWER_100 = "**".join(["x"] * 100)
SIN_99 = "sin(" * 99 + "x" + ")" * 99


@pytest.mark.parametrize(
    ("argv", "rc"),
    [
        (["chain", "--", "-Min(((w1)**100)**100, w1)"], 2),  # degree 10000
        (["chain", "Min((x**100)**2, 0.5)"], 0),
        (["descent", "--start", "w2=1", "--", "-Min(((w2)**100)**(1/3), ((w2)**2)**100)"], 1),
        (["chain", SIN_99], 2),
        (["chain", TOWER_100], 2),
        (["descent", "--start", "x=1", "--", TOWER_100], 2),
        (["chain", TOWER_30], 0),
        (["chain", "Min(atanh(6)+8*x, -asinh(x))"], 2),
        (["chain", "asin(2)+x"], 0),
    ],
)
def test_reported_cli_cases_finish(argv: list[str], rc: int) -> None:
    assert check_cli(argv) == rc


@pytest.mark.parametrize(
    ("activation", "loss", "expected"),
    [
        ("(x+sin(x)+exp(x)+1)**100", None, "ok"),
        (TOWER_30, None, "ok"),
        ("Max(x**100, sin(x), sin(x))", None, "ok"),
        (None, "(yhat+sin(yhat)+exp(yhat)+1)**100", "ok"),
        ("(x**100)**100", None, "refused"),
        ("asin(2)+x", None, "refused"),
        ("-sqrt(-x**2)", None, "refused"),
        ("(-1)**x", None, "refused"),
        ("atanh(3)+x", None, "refused"),
        ("acos(4)+x", None, "refused"),
        ("Min(atanh(6)+8*x, -asinh(x))", None, "refused"),
        (None, "(acos(E)-Max(100, yhat))*y", "refused"),
    ],
)
def test_reported_spec_cases_finish(
    activation: str | None, loss: str | None, expected: str
) -> None:
    assert check_spec(spec_with(activation, loss)) == expected


@pytest.mark.parametrize(
    ("activation", "loss", "field"),
    [
        ("asin(2)+x", None, "layers[0].activation.expr"),
        ("Min(atanh(6)+8*x, -asinh(x))", None, "layers[0].activation.expr"),
        (None, "(acos(E)-Max(100, yhat))*y", "loss.expr"),
    ],
)
def test_complex_constants_are_one_line_exit_2(
    tmp_path: object, activation: str | None, loss: str | None, field: str
) -> None:
    import json
    from pathlib import Path

    path = Path(str(tmp_path)) / "net.json"
    path.write_text(json.dumps(spec_with(activation, loss)))
    rc, _, err = run_cli(["codegen", str(path), "-o", str(Path(str(tmp_path)) / "m.py")])
    assert rc == 2
    assert err.count("\n") == 1 and f"{field}: the expression is not real-valued" in err
    assert not (Path(str(tmp_path)) / "m.py").exists()


# --- the fuzzer --------------------------------------------------------------------------

NUMBERS = ["0", "1", "2", "3", "100", "101", "1000", "0.5", "1e-3", "2.5e2", "1e400", "-1"]
BAD_FUNCTIONS = ["foo", "eval", "__import__", "print", "Symbol"]
BINARY = ["+", "-", "*", "/", "**", "**", "%", "^", "//", "@", "<"]


def trees(names: list[str]) -> st.SearchStrategy[str]:
    """Expression text: grammar trees over valid and invalid operators, calls and atoms."""
    atoms = st.one_of(
        st.sampled_from(names),
        st.sampled_from(["pi", "E", "I", "N", "z", "_x", "exec"]),
        st.sampled_from(NUMBERS),
    )

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        call = st.tuples(
            st.sampled_from(list(FUNCTIONS) * 3 + BAD_FUNCTIONS),
            st.lists(inner, min_size=0, max_size=3),
        ).map(lambda t: f"{t[0]}({', '.join(t[1])})")
        binary = st.tuples(inner, st.sampled_from(BINARY), inner).map(
            lambda t: f"({t[0]}){t[1]}({t[2]})"
        )
        power = st.tuples(inner, st.sampled_from(["2", "3", "100", "(1/3)", "0.5", "-1"])).map(
            lambda t: f"({t[0]})**{t[1]}"
        )
        unary = inner.map(lambda t: f"-({t})")
        # constants off the real line (asin(2), sqrt(-3)) and negative bases: 27 outside hits
        off_real = st.tuples(
            st.sampled_from(["asin", "acos", "atanh", "sqrt", "log", "Min", "Max"]),
            st.sampled_from(["2", "-3", "E", "-pi", "6"]),
            st.sampled_from(["+", "*", "-"]),
            inner,
        ).map(
            lambda t: (
                f"{t[0]}({t[1]}+8*({t[3]}), -({t[3]}))"
                if t[0] in ("Min", "Max")
                else f"{t[0]}({t[1]}){t[2]}({t[3]})"
            )
        )
        negative_base = inner.map(lambda t: f"(-1)**({t})")
        return st.one_of(call, binary, power, power, unary, off_real, negative_base)

    return st.recursive(atoms, extend, max_leaves=10)


def _names_in(text: str, candidates: list[str]) -> list[str]:
    found = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    return [name for name in candidates if name in found]


FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(trees(["x", "w1", "w2"]))
def test_fuzz_chain(text: str) -> None:
    check_cli(["chain", "--", text])


@FUZZ
@given(trees(["x", "w1", "w2"]))
def test_fuzz_descent(text: str) -> None:
    names = _names_in(text, ["x", "w1", "w2"]) or ["x"]
    start = ",".join(f"{name}=0.7" for name in names)
    check_cli(["descent", "--start", start, "--steps", "20", "--", text])


@FUZZ
@given(trees(["x", "x", "x"]))
def test_fuzz_custom_activation(text: str) -> None:
    check_spec(spec_with(activation=text))


@FUZZ
@given(trees(["yhat", "y", "yhat"]))
def test_fuzz_custom_loss(text: str) -> None:
    check_spec(spec_with(loss=text))


def test_fuzz_strategy_reaches_valid_expressions() -> None:
    """The generator is not all garbage: many of its trees are accepted activations."""
    outcomes: list[bool] = []
    record: Callable[[bool], None] = outcomes.append

    @settings(max_examples=100, deadline=None, derandomize=True, database=None)
    @given(trees(["x"]))
    def collect(text: str) -> None:
        try:
            parse_expression(text, "f", ("x",))
        except InputError:
            record(False)
        else:
            record(True)

    collect()
    assert 10 <= outcomes.count(True) <= 90, outcomes.count(True)


# --- specs with every layer kind (DESIGN §2b) -----------------------------------------------


def _rarely(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """A value of ``good`` nine times in ten, else one of ``bad``."""
    pick = st.sampled_from([True] * 9 + [False])
    return st.tuples(pick, good, bad).map(lambda t: t[1] if t[0] else t[2])


# mostly valid values, and the wrong types and ranges the validators must refuse
ODD_VALUES = [None, True, "0.5", [0.5], {"v": 1}, math.nan, math.inf, -math.inf, 10**400]
FRACTIONS = st.floats(min_value=0, max_value=1, exclude_max=True)
NUMBERS_OF_FIELDS = _rarely(
    FRACTIONS,
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-2, max_value=3),
        st.sampled_from(ODD_VALUES),
    ),
)


def _optional(field: str, values: st.SearchStrategy) -> st.SearchStrategy[dict]:
    """{} or {field: value}, the value drawn from ``values``."""
    return st.one_of(st.just({}), values.map(lambda v: {field: v}))


def _table(fixed: dict, *optional: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    merged = st.tuples(*optional) if optional else st.just(())
    return merged.map(lambda parts: {**fixed, **{k: v for p in parts for k, v in p.items()}})


ACTIVATION_VALUES = _rarely(
    st.one_of(
        st.sampled_from(["identity", "relu", "leaky_relu", "sigmoid", "tanh", "elu", "gelu"]),
        st.sampled_from(["identity", "relu", "tanh", "softmax", "silu"]),
        st.builds(lambda slope: {"name": "leaky_relu", "slope": slope}, FRACTIONS),
        st.builds(lambda alpha: {"name": "elu", "alpha": alpha}, FRACTIONS),
        st.just({"name": "swish", "expr": "x*tanh(x)"}),
    ),
    st.one_of(
        st.sampled_from(
            [
                {"name": "relu", "slope": 0.2},
                {"name": "leaky_relu", "alpha": 1},
                {"name": "swish", "expr": "x", "slope": 0.2},
            ]
        ),
        _table({"name": "leaky_relu"}, _optional("slope", NUMBERS_OF_FIELDS)),
        st.sampled_from(ODD_VALUES),
    ),
)
UNITS = _rarely(st.sampled_from([2, 2, 2, 3, 1]), st.sampled_from([0, -1, "2"]))
DENSE = st.builds(
    lambda units, *parts: {"units": units, **{k: v for p in parts for k, v in p.items()}},
    UNITS,
    _optional("activation", ACTIVATION_VALUES),
    _optional("bias", st.sampled_from([True, False, False, 0, "true"])),
    _optional("kind", st.just("dense")),
)
OTHER_KINDS = st.one_of(
    _table({"kind": "layer_norm"}, _optional("eps", NUMBERS_OF_FIELDS)),
    _table(
        {"kind": "batch_norm"},
        _optional("eps", NUMBERS_OF_FIELDS),
        _optional("momentum", NUMBERS_OF_FIELDS),
    ),
    st.builds(lambda rate: {"kind": "dropout", "rate": rate}, FRACTIONS),
    _table({"kind": "dropout"}, _optional("rate", NUMBERS_OF_FIELDS)),
    _table({"kind": "rms_norm"}, _optional("eps", NUMBERS_OF_FIELDS)),
)
ODD_LAYERS = st.one_of(
    st.sampled_from([{"kind": "conv"}, {"kind": "Dense"}, {"kind": 3}, {"kind": None}, 3]),
    st.tuples(
        st.one_of(DENSE, OTHER_KINDS),
        st.sampled_from(["units", "rate", "eps", "block", "a\nb", "\ud800"]),
    ).map(lambda t: {**t[0], t[1]: 1}),
)


def layer_specs() -> st.SearchStrategy[dict]:
    """One ``[[layers]]`` entry of any kind, residual blocks nested inside each other."""
    leaves = _rarely(st.one_of(DENSE, OTHER_KINDS), ODD_LAYERS)

    def extend(inner: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
        block = _rarely(
            st.lists(inner, min_size=1, max_size=3), st.sampled_from([[], {"units": 2}, "dense"])
        )
        return block.map(lambda b: {"kind": "residual", "block": b})

    return st.recursive(leaves, extend, max_leaves=8)


NETWORK_SPECS = st.builds(
    lambda inputs, loss, layers, train: {
        "name": "fuzz",
        "inputs": inputs,
        "loss": loss,
        "layers": layers,
        **train,
    },
    st.sampled_from([2, 2, 3, 1]),
    st.sampled_from(["mse", "mse", "mse", "cross_entropy", "binary_cross_entropy"]),
    st.lists(layer_specs(), min_size=1, max_size=5),
    _optional("train", st.builds(lambda n: {"batch_size": n}, st.sampled_from([1, 2, 32]))),
)
FIELDS = re.compile(r"(layers(\[\d+\](\.block)?)*|loss|train\.batch_size)[.:]")


def check_kinds_spec(data: dict) -> str:
    """'ok' (a module is generated), 'refused' or 'unresolved'; nothing but InputError, one
    line naming a field, escapes."""
    with watchdog(repr(data)[:200]):
        try:
            network = from_dict(data)
        except InputError as err:
            assert "\n" not in str(err) and str(err).isprintable(), str(err)
            assert FIELDS.match(str(err)), str(err)
            return "refused"
        assert from_dict(to_dict(network)) == network
        flat = network.flat
        assert [layer.index for layer in flat] == list(range(1, len(flat) + 1))
        assert sorted(network.order) == [layer.index for layer in flat]
        done: set[int] = {0}
        for index in network.order:  # every layer after the layers it reads
            assert set(flat[index - 1].sources) <= done, (index, network.order)
            done.add(index)
        try:
            symbolic = graph.build(network)
        except InputError as err:
            assert "\n" not in str(err) and str(err).isprintable(), str(err)
            assert FIELDS.match(str(err)), str(err)
            return "unresolved"
        assert list(symbolic.parameters()) == list(network.parameters)
        source = generate(derive(network))
    compile(source, "fuzz.py", "exec")
    assert "def gradients(" in source
    return "ok"


def test_fuzz_specs_of_every_kind() -> None:
    """Random specs of every kind finish cleanly (check_kinds_spec); the strategy is not all
    garbage: many are refused, many accepted, and the accepted ones use every kind."""
    outcomes: list[str] = []
    kinds: set[str] = set()

    @settings(FUZZ, max_examples=300)
    @given(NETWORK_SPECS)
    def collect(data: dict) -> None:
        outcome = check_kinds_spec(data)
        outcomes.append(outcome)
        if outcome == "ok":
            kinds.update(layer.kind for layer in from_dict(data).flat)

    collect()
    assert outcomes.count("ok") >= 30, outcomes.count("ok")
    assert outcomes.count("refused") >= 30, outcomes.count("refused")
    assert kinds == {"dense", "layer_norm", "batch_norm", "dropout", "residual", "rms_norm"}, kinds
