"""``expressions.simplify``: SymPy's simplify, node for node, without loading the units.

The corpus is every expression the project hands to simplify while it derives the bundled
examples, every built-in, parameterized and custom activation, the output rules of the
built-in pairs and of the tests' custom losses, and the chain and descent examples.  Each
is simplified in a fresh interpreter, by the copy while sympy.physics.units is not loaded
(so that the import is really answered differently), then by ``sympy.simplify``; the trees
must be the same.  What the commands meet (the bundled examples, the built-ins, the README's
chains) must not load the units at all; SymPy's own Piecewise simplification, which the
custom activations with abs/Min/Max reach, calls sympy.simplify and may.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sympy

from symbackprop import expressions

ROOT = Path(__file__).resolve().parents[1]

CORPUS = r"""
import json, sys

import sympy

from symbackprop import expressions

inputs, outputs, units_before = [], [], []
copy = expressions._simplify


def record(expr):
    units_before.append("sympy.physics.units" in sys.modules)
    result = copy(expr)
    inputs.append(expr)
    outputs.append(result)
    return result


expressions._simplify = record

from symbackprop.calculus import chain_report, descent
from symbackprop.derive import derive, derive_in_full, derive_output
from symbackprop.functions import ACTIVATIONS, LOSSES, activation, loss
from symbackprop.spec import FunctionSpec, bundled_examples, load_spec

# first what the commands meet: the bundled examples, the built-ins and the README's chains
for name in bundled_examples():
    derive(load_spec(name))
builtins = [act for act in ACTIVATIONS.values() if not act.softmax]
for act in builtins:
    derive_in_full(act)
for out in ("identity", "tanh", "sigmoid", "softmax", "relu"):
    for chosen in LOSSES.values():
        act = ACTIVATIONS[out]
        if chosen.needs_probability and not act.probability:
            continue
        if chosen.name == "binary_cross_entropy" and act.softmax:
            continue
        derive_output(act, chosen)
for text, var in CHAINS[:README]:
    chain_report(text, var)
for text, start in DESCENTS:
    descent(text, start, steps=5)
core = len(inputs)
core_loaded_units = "sympy.physics.units" in sys.modules

# then the rest: SymPy's Piecewise simplification calls sympy.simplify itself
acts = [
    activation(FunctionSpec(name="leaky_relu", params=(("slope", 0.2),)), "a"),
    activation(FunctionSpec(name="elu", params=(("alpha", 0.5),)), "a"),
] + [
    activation(FunctionSpec(name=f"c{k}", expr=text), "a")
    for k, text in enumerate(CUSTOM_ACTIVATIONS)
]
for act in acts:
    derive_in_full(act)
customs = [loss(FunctionSpec(name=f"l{k}", expr=t), "loss") for k, t in enumerate(CUSTOM_LOSSES)]
for out in ("identity", "tanh", "sigmoid", "softmax"):
    for chosen in customs:
        derive_output(ACTIVATIONS[out], chosen)
for text, var in CHAINS[README:]:
    chain_report(text, var)

def same(a, b):
    if type(a) is not type(b):
        return False
    if not a.args:
        return a == b and sympy.srepr(a) == sympy.srepr(b)
    return len(a.args) == len(b.args) and all(same(x, y) for x, y in zip(a.args, b.args))


intercepted = units_before.count(False)
differ = [str(e) for e, r in zip(inputs, outputs) if not same(sympy.simplify(e), r)]
print(json.dumps({
    "count": len(inputs),
    "intercepted": intercepted,
    "differ": differ,
    "core": core,
    "core_loaded_units": core_loaded_units,
}))
"""

CUSTOM_ACTIVATIONS = [
    "x*sigmoid(x)",
    "x/(1+abs(x))",
    "(sqrt(x**2+1)-1)/2 + x",
    "Max(0.1*x, x)",
    "exp(-x**2)",
    "x*tanh(softplus(x))",
    "softplus(x) - log(2)",
    "Min(x, 1) + abs(x)/10",
    "x*tanh(x)",
    "abs(x) + Max(x, 0.5*x)",
    "(exp(x) - exp(-x))/(exp(x) + exp(-x))",
    "x*exp(x)/(exp(x) + exp(-x))",
    "log(cosh(x))",
    "sin(x) + x/2",
]
CUSTOM_LOSSES = [
    "log(cosh(yhat - y))",
    "-y*(1-yhat)**2*log(yhat)",
    "abs(yhat - y)",
    "(yhat - y)**4/4",
    "log(exp(yhat - y) + exp(y - yhat))",
]
CHAINS = [
    ("sin(exp(x**2))", None),
    ("exp(sin(x))", None),
    ("log(1+x**2)", None),
    ("sqrt(1+tanh(x))", None),
    ("(x**2+1)**10", None),
    ("sigmoid(3*x)", None),
    ("log(cosh(exp(-t)))", None),
    ("sin(3*exp(x**2))", None),
    ("x*y", "x"),
    ("sin(x*b**2) + a", "b"),
    ("p*q**2", "q"),
    ("abs(x)", None),
    ("log(cosh(x)) + x*a1", "x"),
    ("sin((x-2)**6)", None),
    ("1/cosh(32*x)", None),
    ("atan(w2*((x - w1)**4 + tanh(pi)))", "x"),
    ("x**x", None),
    ("sin(log(x))", None),
    ("tan(x)**2 + 1", None),
]
README = 7  # the first CHAINS are the README's
DESCENTS = [("w1**2 + 3*w2**2", "w1=3,w2=1"), ("-cos(w)", "w=1"), ("log(cosh(w)) + w**2", "w=2")]


def _run_corpus() -> dict:
    script = (
        f"CUSTOM_ACTIVATIONS = {CUSTOM_ACTIVATIONS!r}\nCUSTOM_LOSSES = {CUSTOM_LOSSES!r}\n"
        f"CHAINS = {CHAINS!r}\nDESCENTS = {DESCENTS!r}\nREADME = {README}\n" + CORPUS
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow
def test_the_same_trees_as_sympy_simplify_on_the_corpus() -> None:
    result = _run_corpus()
    assert result["differ"] == []
    assert result["count"] >= 80  # the corpus is what it says
    # what the commands meet never loads the units: all of it ran with the import answered
    assert not result["core_loaded_units"]
    assert result["intercepted"] >= result["core"] >= 30


def test_the_units_are_used_once_loaded() -> None:
    import sympy.physics.units as units

    assert "sympy.physics.units" in sys.modules
    expr = 2 * units.meter + 3 * units.meter
    assert expressions.simplify(expr) == sympy.simplify(expr) == 5 * units.meter


def test_simplify_is_sympys_code() -> None:
    assert expressions._simplify.__code__ is sympy.simplify.__code__
    assert expressions._simplify is not sympy.simplify
