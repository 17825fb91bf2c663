"""The lecture notes' teaching numbers (``symbackprop.lesson``) against the generated module.

``lesson`` computes every number exactly on the neuron graph, never running the module; here
each one is compared with the generated module's own computation at the same point (its
``gradients``, ``train_step``, ``fit`` and ``loss``) to 1e-12 relative, for every bundled plain
example and a few small random plain specs.  The operation counts are checked by hand for
2-3-3-2 and against the paths of the neuron graph, and the exercises' mathematics compiles.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import pytest
import sympy

from symbackprop import lesson, render
from symbackprop.checkpoint import load_module
from symbackprop.codegen import generate
from symbackprop.derive import Derivation, derive, derive_activation
from symbackprop.functions import ACTIVATIONS, X
from symbackprop.graph import LOSS, bias, build, pre_activation
from symbackprop.spec import OPTIMIZERS, bundled_examples, from_dict, load_spec

RTOL = 1e-12

BUNDLED = [name for name in bundled_examples() if load_spec(name).plain]
SLOW = {"digits_mlp"}  # 8,970 parameters: its example's seed search alone takes ~45 s

HIDDEN = [
    "relu",
    "leaky_relu",
    {"name": "leaky_relu", "slope": 0.2},
    {"name": "leaky_max", "expr": "Max(0.1*x, x)"},
    "tanh",
    "sigmoid",
    "softplus",
    "elu",
    "gelu",
    "silu",
    "identity",
    {"name": "softsign", "expr": "x/(1+abs(x))"},
]
OUTPUTS = [
    ("softmax", "cross_entropy"),
    ("sigmoid", "binary_cross_entropy"),
    ("identity", "mse"),
    ("tanh", "mse"),
    ("softmax", "mse"),
    ("sigmoid", "cross_entropy"),
]


def random_spec(seed: int) -> dict:
    """A small plain spec: depth 1-4, widths 1-4, any activations, loss and optimizer."""
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 5))
    layers = [
        {"units": int(rng.integers(1, 5)), "activation": HIDDEN[int(rng.integers(len(HIDDEN)))]}
        for _ in range(depth - 1)
    ]
    output, loss = OUTPUTS[int(rng.integers(len(OUTPUTS)))]
    outputs = int(rng.integers(2, 4)) if output == "softmax" else int(rng.integers(1, 3))
    layers.append({"units": outputs, "activation": output})
    return {
        "name": f"random{seed}",
        "inputs": int(rng.integers(1, 5)),
        "loss": loss,
        "l2": [0.0, 0.01][int(rng.integers(2))],
        "layers": layers,
        "train": {"optimizer": OPTIMIZERS[seed % 3], "lr": [0.05, 0.1, 0.3][int(rng.integers(3))]},
    }


HANDMADE = {
    # a leaky ReLU is the first ReLU-like layer: its "dead" unit still passes an error back
    "leaky": {
        "name": "leaky",
        "inputs": 3,
        "loss": "binary_cross_entropy",
        "l2": 0.01,
        "layers": [
            {"units": 3, "activation": {"name": "leaky_relu", "slope": 0.2}},
            {"units": 2, "activation": "relu"},
            {"units": 1, "activation": "sigmoid"},
        ],
        "train": {"optimizer": "adam", "lr": 0.01},
    },
    # no hidden layer
    "single": {
        "name": "single",
        "inputs": 3,
        "loss": "cross_entropy",
        "layers": [{"units": 3, "activation": "softmax"}],
        "train": {"optimizer": "momentum", "lr": 0.1},
    },
    # the article's shape with a smooth output and l2
    "relu_mse": {
        "name": "relu_mse",
        "inputs": 2,
        "loss": "mse",
        "l2": 0.001,
        "layers": [
            {"units": 3, "activation": "relu"},
            {"units": 3, "activation": "relu"},
            {"units": 2, "activation": "identity"},
        ],
        "train": {"optimizer": "adam", "lr": 0.05},
    },
}
RANDOM = [f"random{seed}" for seed in range(6)]


def _spec(name: str) -> object:
    if name in HANDMADE:
        return from_dict(HANDMADE[name])
    if name.startswith("random"):
        return from_dict(random_spec(int(name[len("random") :])))
    return load_spec(name)


def _param(name: str) -> object:
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


CASES = [_param(name) for name in [*BUNDLED, *HANDMADE, *RANDOM]]
BUNDLED_CASES = [_param(name) for name in BUNDLED]


@dataclass(frozen=True)
class Case:
    derivation: Derivation
    module: object
    example: lesson.WorkedExample
    step: lesson.Step
    optimizer: lesson.OptimizerStep | None
    dead: lesson.DeadUnit | None
    exercises: tuple[lesson.Exercise, ...]

    @property
    def X(self) -> np.ndarray:
        return self.example.x[None]

    @property
    def Y(self) -> np.ndarray:
        return self.example.y[None]

    def params(self) -> dict[str, np.ndarray]:
        return {key: value.copy() for key, value in self.example.params.items()}

    @functools.cached_property
    def grads(self) -> dict[str, np.ndarray]:
        return self.module.gradients(self.params(), self.X, self.Y)[1]


@functools.cache
def case(name: str) -> Case:
    d = derive(_spec(name))
    module = load_module(generate(d))
    ex = lesson.worked_example(d)
    step = lesson.sgd_step(d, ex)
    dead = lesson.dead_unit(d, ex)
    return Case(
        d,
        module,
        ex,
        step,
        lesson.optimizer_step(d, ex),
        dead,
        lesson.exercises(d, ex, step, dead),
    )


def close(value: object, expected: object) -> bool:
    """Equal to 1e-12 relative (of the larger magnitude; 0 only when both are 0)."""
    a, b = float(value), float(expected)
    return abs(a - b) <= RTOL * max(abs(a), abs(b))


def assert_close(value: object, expected: object, what: object) -> None:
    assert close(value, expected), (what, float(value), float(expected))


# --- the worked example is render's --------------------------------------------------------


def _same_example(ours: lesson.WorkedExample, theirs: object) -> None:
    assert ours.seed == theirs.seed
    assert ours.params.keys() == theirs.params.keys()
    for key in ours.params:
        np.testing.assert_array_equal(ours.params[key], theirs.params[key])
        np.testing.assert_array_equal(ours.gradients[key], theirs.gradients[key])
    np.testing.assert_array_equal(ours.x, theirs.x)
    np.testing.assert_array_equal(ours.y, theirs.y)
    assert ours.values == theirs.values
    assert ours.adjoints == theirs.adjoints
    assert ours.loss == theirs.loss


@pytest.mark.parametrize("name", [n for n in [*BUNDLED, *HANDMADE, *RANDOM] if n not in SLOW])
def test_the_document_s_example_is_this_one(name: str) -> None:
    d = case(name).derivation
    assert render.worked_example is lesson.worked_example  # one evaluation for both
    ex = lesson.worked_example(d)
    seed = lesson.example_seed(d)
    assert ex.seed == seed
    _same_example(ex, lesson.evaluate_example(d, seed))
    # the first seed at which no unit is silent (or the fewest silent, the first of them)
    silent = [lesson.silent_units(d, lesson.evaluate_example(d, s)) for s in range(seed + 1)]
    assert silent[-1] == min(silent) and silent.index(min(silent)) == seed


@pytest.mark.slow
def test_the_large_example_is_at_the_seed_with_fewest_silent_units() -> None:
    """digits_mlp: no seed below 32 activates every unit; 14 has the fewest."""
    c = case("digits_mlp")
    assert c.example.seed == 14
    assert lesson.silent_units(c.derivation, c.example) > 0


def test_seed_mlp_example_lets_every_unit_pass_an_error_back() -> None:
    c = case("seed_mlp")
    assert c.example.seed == 8
    assert lesson.silent_units(c.derivation, c.example) == 0


# --- one SGD step ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_sgd_step_is_the_module_s_train_step(name: str) -> None:
    c = case(name)
    net = c.derivation.network
    assert float(c.step.lr) == net.spec.train.lr and float(c.step.l2) == net.spec.l2
    assert len(c.step.entries) == net.parameter_count
    params = c.params()
    loss = c.module.train_step(params, c.X, c.Y, net.spec.train.lr)
    assert_close(c.step.loss_before, loss, "loss before")
    assert_close(c.step.loss_before, c.example.loss, "the example's loss")
    for e in c.step.entries:
        assert e.before == c.example.values[e.symbol]
        assert float(e.before) == c.example.params[e.key][e.index]
        assert_close(e.gradient, c.grads[e.key][e.index], (e.key, e.index, "gradient"))
        assert_close(e.after, params[e.key][e.index], (e.key, e.index, "after"))
        assert abs(e.after - (e.before - c.step.lr * e.gradient)) <= 1e-35 * max(1, abs(e.after))
        assert c.step.params[e.key][e.index] == float(e.after)
    assert_close(c.step.loss_after, c.module.loss(params, c.X, c.Y), "loss after")
    assert c.step.entry("b1", 0).symbol == sympy.Symbol("b1_1", real=True)


@pytest.mark.parametrize("name", BUNDLED_CASES)
def test_one_sgd_step_lowers_every_bundled_example_s_loss(name: str) -> None:
    step = case(name).step
    assert step.loss_after < step.loss_before
    assert 0 < step.first_order


def test_seed_mlp_sgd_step() -> None:
    step = case("seed_mlp").step
    assert f"{float(step.loss_before):.4f} -> {float(step.loss_after):.4f}" == "3.2221 -> 1.4676"


# --- the optimizer's first step ----------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_optimizer_step_is_the_module_s_fit(name: str) -> None:
    """One epoch of fit on the example's one sample, batch 1: exactly one update."""
    c = case(name)
    train = c.derivation.network.spec.train
    if train.optimizer == "sgd":
        assert c.optimizer is None
        return
    opt = c.optimizer
    assert opt.optimizer == train.optimizer
    params = c.params()
    history = c.module.fit(
        params, c.X, c.Y, epochs=1, batch_size=1, lr=train.lr, optimizer=train.optimizer
    )
    assert_close(opt.loss_before, history[0], "loss before")
    b1, b2 = train.beta1, train.beta2
    for e in opt.entries:
        g = c.grads[e.key][e.index]
        assert_close(e.gradient, g, (e.key, e.index, "gradient"))
        if train.optimizer == "momentum":
            assert float(opt.momentum) == train.momentum and opt.beta1 is None
            assert_close(e.velocity, g, "velocity")  # 0.9 * 0 + g
            assert e.m is None
        else:
            assert float(opt.beta1) == b1 and float(opt.eps) == train.eps and e.velocity is None
            m, v = (1 - b1) * g, (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1), v / (1 - b2)
            assert_close(e.m, m, "m")
            assert_close(e.v, v, "v")
            assert_close(e.m_hat, m_hat, "m_hat")
            assert_close(e.v_hat, v_hat, "v_hat")
            assert_close(e.update, train.lr * m_hat / (np.sqrt(v_hat) + train.eps), "update")
        assert_close(e.after, params[e.key][e.index], (e.key, e.index, "after"))
        assert opt.params[e.key][e.index] == float(e.after)
    assert_close(opt.loss_after, c.module.loss(params, c.X, c.Y), "loss after")


def test_momentum_s_first_step_is_sgd_s() -> None:
    c = case("swish_mlp")
    assert c.optimizer.optimizer == "momentum"
    for ours, sgd in zip(c.optimizer.entries, c.step.entries, strict=True):
        assert ours.after == sgd.after
    assert c.optimizer.loss_after == c.step.loss_after


# --- the dead unit -------------------------------------------------------------------------


def _relu_like(d: Derivation) -> int | None:
    """The first hidden layer whose activation is ReLU-like, from the registry's references."""
    points = np.array([-3.0, -1.0, -0.25, 0.25, 1.0, 3.0])
    for index in range(1, d.network.depth):
        act = d.layers[index - 1].activation
        if act.reference is not None:
            values = act.reference(points)
        else:  # custom: SymPy's value at each point
            values = np.array([float(act.expr.xreplace({X: sympy.Float(p)})) for p in points])
        values = np.broadcast_to(values, points.shape)
        c = values[0] / points[0]
        if np.allclose(values[:3], c * points[:3]) and np.allclose(values[3:], points[3:]):
            if 0 <= c < 1:
                return index
    return None


@pytest.mark.parametrize("name", CASES)
def test_dead_unit_is_the_module_s(name: str) -> None:
    c = case(name)
    d, dead = c.derivation, c.dead
    layer = _relu_like(d)
    active = layer is not None and any(
        c.example.values[pre_activation(layer, i)] > 0
        and c.example.adjoints[pre_activation(layer, i)] != 0
        for i in range(1, d.network.sizes[layer] + 1)
    )
    if not active:  # no such layer, or no unit of it is active and passes an error back
        assert dead is None
        return
    assert dead is not None and dead.layer == layer
    l2 = d.network.spec.l2
    params = dead.params
    for key in params:  # only the unit's bias moved, to an integer
        moved = params[key] != c.example.params[key]
        assert moved.sum() == (key == f"b{layer}")
    b = params[f"b{layer}"][dead.unit - 1]
    assert b == float(dead.bias) == int(b)
    assert dead.bias_before == c.example.values[bias(layer, dead.unit)]
    assert dead.z < 0 < dead.z_before and dead.delta_before != 0
    assert -1.5 < dead.z <= -0.5 and abs(dead.z - (dead.weighted_sum + dead.bias)) < 1e-35
    assert abs(dead.a - dead.slope * dead.z) < 1e-35
    loss, grads = c.module.gradients(params, c.X, c.Y)
    assert_close(dead.loss, loss, "loss")
    W, W_next = f"W{layer}", f"W{layer + 1}"
    row = grads[W][dead.unit - 1]
    for j, g in enumerate(dead.weight_gradients):
        assert_close(g, row[j], ("incoming", j))
    assert_close(dead.bias_gradient, grads[f"b{layer}"][dead.unit - 1], "bias")
    assert dead.bias_gradient == dead.delta
    if dead.slope == 0:
        # exactly 0 in the module too: ReLU'(z) = 0 and a = 0 kill every product
        assert grads[f"b{layer}"][dead.unit - 1] == 0
        np.testing.assert_array_equal(row, params[W][dead.unit - 1] * l2)
        np.testing.assert_array_equal(
            grads[W_next][:, dead.unit - 1], params[W_next][:, dead.unit - 1] * l2
        )
        assert dead.delta == dead.a == 0
        assert all(g == 0 for g in dead.error_gradients + dead.outgoing)
    else:
        assert dead.delta != 0 and dead.a != 0
    # the entries whose data part is 0: the module's gradient is exactly its l2 term there
    zero = 0
    for key, g in grads.items():
        term = params[key] * l2 if key.startswith("W") else np.zeros_like(g)
        zero += int(np.sum(g == term))
    assert zero == dead.zero_after
    before = 0
    for key in grads:
        term = c.example.params[key] * l2 if key.startswith("W") else 0
        before += int(np.sum(c.grads[key] == term))
    assert before == dead.zero_before
    assert dead.total == d.network.parameter_count
    assert dead.zero_before + dead.became_zero >= dead.zero_after


def test_seed_mlp_dead_unit() -> None:
    dead = case("seed_mlp").dead
    assert (dead.layer, dead.unit, dead.slope, float(dead.bias)) == (1, 1, 0, -2.0)
    # its two incoming weights and bias, and the three weights out of it
    assert (dead.zero_before, dead.zero_after, dead.became_zero) == (0, 6, 6)


@pytest.mark.parametrize(
    ("activation", "slope"),
    [
        ("relu", 0),
        ("leaky_relu", sympy.Rational(1, 100)),
        ({"name": "leaky_relu", "slope": 0.2}, sympy.Rational(1, 5)),
        ({"name": "leaky_max", "expr": "Max(0.1*x, x)"}, sympy.Rational(1, 10)),
        ({"name": "clipped", "expr": "Min(x, 1) + abs(x)/10"}, None),
        ({"name": "elu", "alpha": 0.5}, None),
        *[(name, None) for name in ACTIVATIONS if name not in ("relu", "leaky_relu", "softmax")],
    ],
)
def test_relu_slope(activation: object, slope: object) -> None:
    spec = from_dict(
        {
            "name": "n",
            "inputs": 1,
            "loss": "mse",
            "layers": [{"units": 1, "activation": activation}, {"units": 1}],
        }
    )
    net = build(spec)
    assert lesson.relu_slope(derive_activation(net.activations[0])) == slope


# --- exercises -----------------------------------------------------------------------------


def _module_value(c: Case, key: tuple) -> object:
    """The generated module's own number for an exercise's key."""
    kind = key[0]
    if kind == "grad":
        _, name, i, j = key
        return c.grads[name][i - 1, j - 1]
    if kind == "delta":  # at batch 1, dL/db = delta
        _, layer, i = key
        return c.grads[f"b{layer}"][i - 1]
    if kind == "dead":
        _, name, i = key
        return c.module.gradients(c.dead.params, c.X, c.Y)[1][name][i - 1]
    if kind == "loss_after":
        params = c.params()
        c.module.train_step(params, c.X, c.Y, c.derivation.network.spec.train.lr)
        return c.module.loss(params, c.X, c.Y)
    if kind == "entries":
        return c.grads[key[1]].size
    raise AssertionError(f"unknown exercise key {key}")


@pytest.mark.parametrize("name", CASES)
def test_every_exercise_is_the_module_s_number(name: str) -> None:
    c = case(name)
    assert 3 <= len(c.exercises) <= 5
    kinds = [e.key[0] for e in c.exercises]
    assert len(set(kinds)) == len(kinds)
    assert ("delta" in kinds) == (c.derivation.network.depth > 1)
    assert ("dead" in kinds) == (c.dead is not None)
    for e in c.exercises:
        expected = _module_value(c, e.key)
        if e.key[0] == "entries":
            assert e.value == expected
        else:
            assert_close(e.value, expected, e.key)
        if e.key[0] == "dead" and c.dead.slope == 0:
            assert e.value == 0 and expected == 0


# The control sequences the exercises may use: each is in KaTeX and in LaTeX with amsmath.
MACROS = {
    r"\partial", r"\delta", r"\ell", r"\lambda", r"\eta", r"\theta", r"\leftarrow", r"\left",
    r"\right", r"\cdot", r"\times", r"\top", r"\ldots", r"\lVert", r"\rVert", r"\nabla",
    r"\operatorname", r"\frac", r"\sqrt", r"\pi", r"\sigma", r"\tanh", r"\min", r"\max",
    r"\,",
}  # fmt: skip


def _math(text: str) -> list[str]:
    parts = text.split("$")
    assert len(parts) % 2 == 1, f"unbalanced $ in {text!r}"
    return parts[1::2]


@pytest.mark.parametrize("name", CASES)
def test_exercise_text_is_inline_math_both_renderers_read(name: str) -> None:
    for e in case(name).exercises:
        for text in (e.question, e.answer):
            assert "\n" not in text and "`" not in text
            for math in _math(text):
                assert math and math == math.strip(), f"space next to $ in {text!r}"
                assert math.count("{") == math.count("}"), math
                left = len(re.findall(r"\\left(?![A-Za-z])", math))
                assert left == len(re.findall(r"\\right(?![A-Za-z])", math)), math
                used = set(re.findall(r"\\[A-Za-z]+|\\,", math))
                assert used <= MACROS, used - MACROS
            prose = re.sub(r"\$[^$]*\$", "", text)
            assert not re.search(r"[\\_^{}&%#]", prose), prose


def test_seed_mlp_exercises() -> None:
    exercises = case("seed_mlp").exercises
    assert [e.key for e in exercises] == [
        ("grad", "W2", 1, 2),
        ("delta", 2, 3),
        ("dead", "b1", 1),
        ("loss_after",),
        ("entries", "W3"),
    ]
    assert exercises[0].answer.startswith(
        r"$\partial L / \partial w^{(2)}_{12} = \delta^{(2)}_{1} a^{(1)}_{2} = 0.3813 \cdot "
        r"1.052 = 0.401$"
    )


def _need_pdflatex() -> None:
    if shutil.which("pdflatex") is None:
        if os.environ.get("CI"):
            pytest.fail("pdflatex is required under CI (install texlive-latex-base)")
        pytest.skip("pdflatex is not installed")


def test_exercises_compile_with_pdflatex(tmp_path) -> None:  # noqa: ANN001
    _need_pdflatex()
    names = [n for n in [*BUNDLED, *HANDMADE, *RANDOM] if n not in SLOW]
    body = "\n\n".join(
        f"\\paragraph{{{name.replace('_', ' ')}}} {e.question}\n\n{e.answer}"
        for name in names
        for e in case(name).exercises
    )
    tex = (
        "\\documentclass[10pt]{article}\n\\usepackage[margin=2.2cm]{geometry}\n"
        "\\usepackage{amsmath,amssymb}\n\\begin{document}\n" + body + "\n\\end{document}\n"
    )
    path = tmp_path / "exercises.tex"
    path.write_text(tex, encoding="utf-8")
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", path.name],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    log = path.with_suffix(".log").read_text(encoding="utf-8", errors="replace")
    assert proc.returncode == 0, next((x for x in log.splitlines() if x.startswith("!")), log)
    assert "Warning" not in log, [x for x in log.splitlines() if "Warning" in x]
    overfull = re.findall(r"Overfull \\hbox \(([0-9.]+)pt too wide\)", log)
    assert not overfull, overfull


def test_the_numbers_are_the_same_every_time() -> None:
    c = case("seed_mlp")
    d, ex = c.derivation, c.example
    assert lesson.exercises(d, ex) == c.exercises
    assert lesson.sgd_step(d, ex).entries == c.step.entries
    assert lesson.dead_unit(d, ex).zero_after == c.dead.zero_after


# --- operation counts ----------------------------------------------------------------------


def test_operation_counts_of_2_3_3_2_by_hand() -> None:
    counts = lesson.operation_counts(load_spec("seed_mlp"))
    assert counts.sizes == (2, 3, 3, 2) and counts.softmax
    assert counts.parameters == 3 * 2 + 3 + 3 * 3 + 3 + 2 * 3 + 2 == 29
    assert counts.forward == 6 + 9 + 6 == 21  # W1 x, W2 a1, W3 a2
    assert counts.backward_recursion == 9 + 6 == 15  # W3^T delta3, W2^T delta2
    assert counts.backward_hadamard == 3 + 3  # times f'(z2), f'(z1)
    assert counts.backward_gradients == 21  # delta_l a_{l-1}^T
    assert counts.backward == 42 and counts.backprop == 63
    assert counts.finite_difference == 30 * 21 == 630
    assert counts.finite_difference_ratio == 10.0
    # paths from a z to the loss: z3_k -> a3_1, a3_2 (softmax): 2; z2_i -> z3_1, z3_2: 2 * 2;
    # z1_i -> z2_1..3: 3 * 4.  Terms: (6 + 2) * 2 + (9 + 3) * 4 + (6 + 3) * 12.
    assert counts.path_terms == 16 + 48 + 108 == 172
    elementwise = lesson.operation_counts(
        from_dict(
            {
                "name": "n",
                "inputs": 2,
                "loss": "mse",
                "layers": [
                    {"units": 3, "activation": "relu"},
                    {"units": 3, "activation": "relu"},
                    {"units": 2, "activation": "sigmoid"},
                ],
            }
        )
    )
    # z3_k -> a3_k: 1; z2_i: 2; z1_i: 3 * 2
    assert not elementwise.softmax
    assert elementwise.path_terms == 8 * 1 + 12 * 2 + 9 * 6 == 86
    assert elementwise.backprop == counts.backprop


def _paths_to_loss(net: object) -> dict[sympy.Symbol, int]:
    """Paths in the neuron graph from each node to the loss, by walking it backwards."""
    paths = {LOSS: 1}
    for node in reversed(net.neuron_graph):
        for s in node.expr.free_symbols:
            paths[s] = paths.get(s, 0) + paths.get(node.symbol, 0)
    return paths


@pytest.mark.parametrize("name", [n for n in [*BUNDLED, *HANDMADE, *RANDOM] if n not in SLOW])
def test_path_terms_are_the_neuron_graph_s_paths(name: str) -> None:
    net = case(name).derivation.network
    paths = _paths_to_loss(net)
    expected = sum(paths[s] for group in net.parameters().values() for s in group)
    counts = lesson.operation_counts(net.spec)
    assert counts.path_terms == expected
    assert counts.parameters == net.parameter_count
    assert counts.forward == sum(net.sizes[n] * net.sizes[n - 1] for n in range(1, net.depth + 1))


def test_digits_counts() -> None:
    counts = lesson.operation_counts(load_spec("digits_mlp"))
    assert counts.parameters == 8970
    assert (counts.forward, counts.backward, counts.finite_difference) == (8832, 13696, 79231872)
    assert counts.path_terms == 650 * 10 + 4160 * 100 + 4160 * 6400


# --- networks it does not cover --------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in bundled_examples() if not load_spec(n).plain])
def test_other_networks_get_none(name: str) -> None:
    spec = load_spec(name)
    d = derive(spec)
    assert lesson.operation_counts(spec) is None
    for function in (lesson.sgd_step, lesson.optimizer_step, lesson.dead_unit, lesson.exercises):
        assert function(d, None) is None
