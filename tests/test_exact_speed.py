"""The compiled exact evaluation (``exact.evaluate``) is the reference's, bit for bit.

``exact.evaluate_reference`` is the evaluation by SymPy's substitution and evalf of every
node and partial; ``exact.evaluate`` plans each graph once and evaluates it with raw mpmath
numbers.  Here, on a grid of small networks (every activation, custom ones, every
output/loss pair, every other layer kind, l2, batch norm's batch graph, dropout masks, large
inputs, the random specs of the document tests), the two give the same loss and gradients
(the same floats) and the same 40-digit values and adjoints (the same Floats, keys in the
same order).  The compiler's rules are also tested one by one against SymPy on many points,
signs, zeros and magnitudes, and no compiled shape ever has to fall back at its check.
"""

from __future__ import annotations

import random

import mpmath
import numpy as np
import pytest
import sympy

from symbackprop import exact
from symbackprop.checkpoint import point, point_masks
from symbackprop.functions import ACTIVATIONS
from symbackprop.graph import GRAPH_LIMIT, build, pre_activation
from symbackprop.primitives import elu, leaky_relu, relu, sigmoid, softplus, step, to_textbook_form
from symbackprop.spec import from_dict, load_spec
from tests.notes_specs import CUSTOM_ACTIVATIONS, CUSTOM_LOSSES, default_specs, slow_specs

CUSTOM = [{"name": name, "expr": expr} for name, expr in CUSTOM_ACTIVATIONS] + [
    {"name": "swish", "expr": "x*sigmoid(x)"},
    {"name": "leaky_max", "expr": "Max(0.1*x, x)"},
    {"name": "cube_root", "expr": "x**3/(1 + x**2)**(1/3)"},
    {"name": "waves", "expr": "sin(x) + atan(x)/2 + sinh(x/4)"},
]
OUTPUTS = [
    ("softmax", "cross_entropy", 3),
    ("sigmoid", "cross_entropy", 2),
    ("sigmoid", "binary_cross_entropy", 1),
    ("identity", "mse", 2),
    ("tanh", "mse", 2),
    ("sigmoid", "mse", 2),
    ("softmax", "mse", 2),
    *[("identity", {"name": n, "expr": e}, 2) for n, e in CUSTOM_LOSSES],
    ("softmax", {"name": "focal_ish", "expr": "-y*(1-yhat)**2*log(yhat)"}, 2),
]


def _spec(layers: list, loss: object = "cross_entropy", inputs: int = 3, l2: float = 0.0):
    return from_dict({"name": "net", "inputs": inputs, "loss": loss, "l2": l2, "layers": layers})


def _grid() -> list[tuple[str, object]]:
    out = []
    hidden = [n for n, a in ACTIVATIONS.items() if not a.softmax] + CUSTOM
    hidden += [{"name": "leaky_relu", "slope": 0.2}, {"name": "elu", "alpha": 1.5}]
    for act in hidden:
        name = act if isinstance(act, str) else f"{act['name']}{act.get('slope', '')}"
        layers = [{"units": 3, "activation": act}, {"units": 3, "activation": "softmax"}]
        out.append((f"hidden {name}", _spec(layers)))
    for output, loss, units in OUTPUTS:
        name = loss if isinstance(loss, str) else loss["name"]
        layers = [{"units": 3, "activation": "tanh"}, {"units": units, "activation": output}]
        out.append((f"output {output} {name}", _spec(layers, loss)))
    for kind in ("layer_norm", "rms_norm", "batch_norm"):
        layers = [
            {"units": 4, "activation": "relu"},
            {"kind": kind},
            {"units": 2, "activation": "sigmoid"},
        ]
        out.append((kind, _spec(layers, "binary_cross_entropy")))
    out.append(
        (
            "residual dropout no bias l2",
            _spec(
                [
                    {"units": 4, "activation": {"name": "leaky_relu", "slope": 0.2}},
                    {
                        "kind": "residual",
                        "block": [
                            {"units": 4, "activation": "gelu", "bias": False},
                            {"kind": "layer_norm"},
                            {"kind": "dropout", "rate": 0.4},
                        ],
                    },
                    {"kind": "batch_norm"},
                    {"units": 2, "activation": "sigmoid"},
                ],
                "mse",
                l2=0.01,
            ),
        )
    )
    out.append(
        (
            "deep l2",
            _spec(
                [{"units": 5, "activation": a} for a in ("tanh", "relu", "silu", "elu")]
                + [{"units": 4, "activation": "softmax"}],
                l2=0.001,
            ),
        )
    )
    return out


GRID = _grid()


def assert_same(new: exact.ExactEvaluation, ref: exact.ExactEvaluation) -> None:
    """The same floats, and the same Floats under the same keys in the same order."""
    assert np.float64(new.loss).tobytes() == np.float64(ref.loss).tobytes()
    assert list(new.gradients) == list(ref.gradients)
    for key, g in ref.gradients.items():
        assert new.gradients[key].shape == g.shape
        assert new.gradients[key].tobytes() == g.tobytes(), key
    assert len(new.values) == len(ref.values) and len(new.adjoints) == len(ref.adjoints)
    for got, want in [
        *zip(new.values, ref.values, strict=True),
        *zip(new.adjoints, ref.adjoints, strict=True),
        (new.shared, ref.shared),
    ]:
        assert list(got) == list(want)
        for symbol, value in want.items():
            other = got[symbol]
            assert type(other) is type(value), symbol
            assert getattr(other, "_mpf_", None) == getattr(value, "_mpf_", None), symbol
            assert getattr(other, "_prec", None) == getattr(value, "_prec", None), symbol
            assert other == value, symbol


def _both(net, params, X, Y, masks) -> None:
    assert_same(
        exact.evaluate(net, params, X, Y, masks),
        exact.evaluate_reference(net, params, X, Y, masks),
    )


@pytest.mark.parametrize("name,spec", GRID, ids=[name for name, _ in GRID])
def test_the_compiled_evaluation_is_the_reference_s(name: str, spec: object) -> None:
    net = build(spec)
    for seed, batch in ((0, 3), (1, 2)):
        params, X, Y = point(net, batch, seed)
        masks = point_masks(net, seed, batch)
        _both(net, params, X, Y, masks)
    # large inputs: exp far out, logs of outputs near 0 and 1, saturated units (x10: at the
    # certificate's x1e3, SymPy's evalf of a GELU unit's 1 + erf(-700) alone takes minutes)
    params, X, Y = point(net, 2, 2)
    _both(net, params, X * 10, Y, point_masks(net, 2, 2))
    assert not any(shape.disabled for shape in exact._SHAPES.values())


@pytest.mark.parametrize("case", [*default_specs(), *slow_specs()[:12]], ids=lambda case: case.name)
def test_the_document_tests_random_specs_evaluate_as_the_reference(case) -> None:
    net = build(case.spec())
    if net.parameter_count > GRAPH_LIMIT:
        pytest.skip("beyond the neuron-level graph")
    params, X, Y = point(net, 3, 5)
    _both(net, params, X, Y, point_masks(net, 5, 3))
    assert not any(shape.disabled for shape in exact._SHAPES.values())


def test_a_bundled_example_and_its_dead_units() -> None:
    """digits_mlp at the certificate's point: ReLU units that are off give exact zeros."""
    net = build(load_spec("digits_mlp"))
    params, X, Y = point(net, 2, 0)
    new = exact.evaluate(net, params, X, Y)
    assert any(
        new.values[0][pre_activation(1, i + 1)] < 0 for i in range(64)
    )  # dead units are exercised
    assert_same(new, exact.evaluate_reference(net, params, X, Y))


def test_the_dense_sums_are_never_built_for_the_evaluation() -> None:
    net = build(load_spec("seed_mlp"))
    exact.clear_caches()
    params, X, Y = point(net, 2, 0)
    exact.evaluate(net, params, X, Y)
    dense = [node for node in net.neuron_graph if node.dense is not None]
    assert dense and all(node._expr is None for node in dense)
    # and when read, the sum is the one the graph always had
    node = dense[0]
    n, i, inputs, has_bias = node.dense
    terms = [sympy.Symbol(f"w{n}_{i}_{j + 1}", real=True) * x for j, x in enumerate(inputs)]
    if has_bias:
        terms.append(sympy.Symbol(f"b{n}_{i}", real=True))
    assert node.expr == sympy.Add(*terms)
    assert node.products[0] == (sympy.Symbol(f"w{n}_{i}_1", real=True), inputs[0])


# --- the compiler's rules, one by one -------------------------------------------------------

U, V = sympy.symbols("u v", real=True)
EPS = sympy.Float(1e-5)
RULES = [
    sympy.tanh(U),
    1 - sympy.tanh(U) ** 2,
    sympy.exp(U),
    sympy.exp(-U) / (1 + sympy.exp(-U)) ** 2,
    to_textbook_form(sigmoid(U)),
    to_textbook_form(softplus(U)),
    sympy.log(U),
    -V * sympy.log(U) - (1 - V) * sympy.log(1 - U),
    sympy.erf(U),
    sympy.sinh(U),
    sympy.cosh(U),
    sympy.log(sympy.cosh(U - V)),
    sympy.Abs(U - V),
    relu(U),
    step(U),
    leaky_relu(U),
    sympy.Rational(1, 100) + sympy.Rational(99, 100) * step(U),
    elu(U),
    sympy.exp(sympy.Min(U, 0)),
    sympy.Max(-1, sympy.Min(1, U)),
    sympy.Max(U / 10, U),
    (U - V) ** 2 / 3,
    U**3 / (1 + U**2) ** sympy.Rational(1, 3),
    (U - V) / sympy.sqrt(V**2 + EPS),
    sympy.Float(0.1) * U + U / sympy.sqrt(V + EPS),
    sympy.sqrt(U**2 + 1) - 1,
    U ** sympy.Float(0.5),
    sympy.exp(U) / (sympy.exp(U) + sympy.exp(V)),
    U * V - sympy.Rational(1, 3) * U,
]
POINTS = [0.0, 1.0, -1.0, 0.5, -0.5, 1e-30, -1e-30, 1.0 + 2**-40, 1 - 2**-45, 37.5, -700.0]


def _values(rng: random.Random, n: int) -> list[float]:
    pool = POINTS + [rng.gauss(0, 2) for _ in range(n)] + [rng.uniform(0, 1) for _ in range(n)]
    return pool + [v * 10 ** rng.randint(-8, 8) for v in pool[: n // 2]]


@pytest.mark.parametrize("expr", RULES, ids=[str(e) for e in RULES])
def test_each_rule_is_sympy_s_substitution_and_evalf(expr: sympy.Expr) -> None:
    """Wherever the closure gives a value it is SymPy's, bit for bit (where it declines,
    ``_Fallback``, the evaluation asks SymPy)."""
    order: dict = {}
    exact._shape(expr, order)
    fn = exact._compile(expr, order)
    symbols = sorted(order, key=order.get)
    rng = random.Random(str(expr))
    values = _values(rng, 60)
    compared = 0
    with mpmath.workdps(exact.PRECISION):
        for k in range(len(values)):
            point_ = [values[(k + 7 * j) % len(values)] for j in range(len(symbols))]
            # floats as data (Float(x, 40), 0.0 a Float) and as nodes (Float(mpf, 40), 0 exact)
            floats = [sympy.Float(mpmath.mpf(p) / 3 if k % 2 else p, 40) for p in point_]
            try:
                got = exact._finish(fn([f._mpf_ if f.is_Float else exact._ZERO for f in floats]))
            except exact._Fallback:
                continue
            try:
                want = exact._sympy_value(expr, dict(zip(symbols, floats, strict=True)))
            except (TypeError, ValueError):  # SymPy's value is complex or infinite there
                continue
            assert got == want, (expr, point_)
            compared += 1
    assert compared > len(values) // 2


def test_what_the_compiler_has_no_rule_for_is_left_to_sympy() -> None:
    gelu = ACTIVATIONS["gelu"].expr.xreplace({sympy.Symbol("x", real=True): U})
    for expr in (gelu, sympy.pi * U, sympy.Function("f")(U), U**V):
        with pytest.raises(exact._Unsupported):
            exact._compile(expr, {U: 0})
