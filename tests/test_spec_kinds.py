"""The spec side of layer kinds (DESIGN §2b): reading, numbering, and bad input (issue 9 item 7).

Every refusal is an ``InputError`` (CLI exit 2) whose message is one line starting with the
field path, e.g. ``layers[1].block[0].units: ...``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_spec import assert_field

from symbackprop import expressions, functions, graph, spec
from symbackprop.cli import main
from symbackprop.errors import InputError
from symbackprop.spec import KINDS, FunctionSpec, LayerSpec, NetworkSpec

KNOWN_KINDS = ", ".join(KINDS)

DESIGN_TOML = """\
name = "design_net"
inputs = 16
loss = "mse"

[[layers]]
kind = "residual"
  [[layers.block]]
  units = 16
  activation = { name = "leaky_relu", slope = 0.2 }   # activations may take parameters
  [[layers.block]]
  kind = "layer_norm"
"""


def net(layers, loss="mse", inputs=4, **top):
    """A spec dict around a list of layers."""
    return {"name": "net", "inputs": inputs, "loss": loss, "layers": layers, **top}


def dense(units=4, activation="tanh", **fields):
    return {"units": units, "activation": activation, **fields}


def residual(*block):
    return {"kind": "residual", "block": list(block)}


# every kind, nested: 1 dense, 2 residual [3 dense, 4 residual [5 layer_norm], 6 dense,
# 7 batch_norm], 8 dropout, 9 dense softmax
EVERY_KIND = net(
    [
        dense(4, "relu"),
        residual(
            dense(6, {"name": "leaky_relu", "slope": 0.2}, bias=False),
            residual({"kind": "layer_norm", "eps": 1e-3}),
            dense(4, {"name": "elu", "alpha": 0.5}),
            {"kind": "batch_norm", "eps": 1e-4, "momentum": 0.2},
        ),
        {"kind": "dropout", "rate": 0.25},
        dense(3, "softmax"),
    ],
    loss="cross_entropy",
)


def refused(data) -> InputError:
    """The InputError of reading ``data`` and resolving its functions."""
    with pytest.raises(InputError) as info:
        functions.resolve(spec.from_dict(data))
    return info.value


def message_of(data, path: str) -> str:
    return assert_field(refused(data), path)


# --- reading and the data model --------------------------------------------------------------


def test_design_example_reads_as_documented(tmp_path):
    path = tmp_path / "design_net.toml"
    path.write_text(DESIGN_TOML, encoding="utf-8")
    network = spec.load_spec(path)
    outer = network.layers[0]
    assert outer.kind == "residual" and outer.units == 16
    hidden, norm = outer.block
    assert hidden == LayerSpec(16, FunctionSpec("leaky_relu", params=(("slope", 0.2),)))
    assert norm == LayerSpec(16, kind="layer_norm", eps=1e-5)
    assert [(f.index, f.path, f.sources) for f in network.flat] == [
        (1, "layers[0]", (0, 3)),
        (2, "layers[0].block[0]", (0,)),
        (3, "layers[0].block[1]", (2,)),
    ]
    assert network.order == (2, 3, 1)
    assert network.parameters == {
        "W2": (16, 16),
        "b2": (16,),
        "gamma3": (16,),
        "beta3": (16,),
    }
    activations, _ = functions.resolve(network)
    assert activations[0] is None and activations[2] is None
    assert activations[1].name == "leaky_relu(slope=0.2)"


def test_every_kind_numbered_depth_first():
    network = spec.from_dict(EVERY_KIND)
    assert [(f.index, f.kind, f.path, f.sources, f.fan_in, f.top) for f in network.flat] == [
        (1, "dense", "layers[0]", (0,), 4, True),
        (2, "residual", "layers[1]", (1, 7), 4, True),
        (3, "dense", "layers[1].block[0]", (1,), 4, False),
        (4, "residual", "layers[1].block[1]", (3, 5), 6, False),
        (5, "layer_norm", "layers[1].block[1].block[0]", (3,), 6, False),
        (6, "dense", "layers[1].block[2]", (4,), 6, False),
        (7, "batch_norm", "layers[1].block[3]", (6,), 4, False),
        (8, "dropout", "layers[2]", (2,), 4, True),
        (9, "dense", "layers[3]", (8,), 4, True),
    ]
    assert network.order == (1, 3, 5, 4, 6, 7, 2, 8, 9)
    assert network.sizes == (4, 4, 4, 6, 6, 6, 4, 4, 4, 3)
    assert network.output_layer.index == 9
    assert network.parameters == {
        "W1": (4, 4),
        "b1": (4,),
        "W3": (6, 4),
        "gamma5": (6,),
        "beta5": (6,),
        "W6": (4, 6),
        "b6": (4,),
        "gamma7": (4,),
        "beta7": (4,),
        "W9": (3, 4),
        "b9": (3,),
    }
    assert network.state == {"mean7": (4,), "var7": (4,)}
    assert network.parameter_count == 16 + 4 + 24 + 12 + 24 + 4 + 8 + 12 + 3


def test_nested_residual_numbering_and_order():
    # 1 dense, 2 residual [3 dense, 4 residual [5 dense]], 6 dense
    data = net([dense(), residual(dense(), residual(dense())), dense(2)])
    network = spec.from_dict(data)
    assert [(f.index, f.kind, f.path, f.sources) for f in network.flat] == [
        (1, "dense", "layers[0]", (0,)),
        (2, "residual", "layers[1]", (1, 4)),
        (3, "dense", "layers[1].block[0]", (1,)),
        (4, "residual", "layers[1].block[1]", (3, 5)),
        (5, "dense", "layers[1].block[1].block[0]", (3,)),
        (6, "dense", "layers[2]", (2,)),
    ]
    assert network.order == (1, 3, 5, 4, 2, 6)
    assert list(network.parameters) == ["W1", "b1", "W3", "b3", "W5", "b5", "W6", "b6"]
    assert network.sizes == (4, 4, 4, 4, 4, 4, 2)
    assert network.output_layer.index == 6
    assert not network.plain


def test_block_that_ends_in_a_residual_closes_both():
    network = spec.from_dict(net([residual(residual(dense()))]))
    assert [f.sources for f in network.flat] == [(0, 2), (0, 3), (0,)]
    assert network.order == (3, 2, 1)
    assert network.output_layer.index == 1


def test_kinds_take_their_input_width_and_defaults():
    data = net(
        [dense(5), {"kind": "layer_norm"}, {"kind": "batch_norm"}, {"kind": "dropout", "rate": 0}]
    )
    network = spec.from_dict(data)
    _, norm, batch, drop = network.layers
    assert norm == LayerSpec(5, kind="layer_norm")
    assert (norm.eps, batch.eps, batch.momentum, drop.rate) == (1e-5, 1e-5, 0.1, 0.0)
    assert network.sizes == (4, 5, 5, 5, 5)
    assert network.parameters == {
        "W1": (5, 4),
        "b1": (5,),
        "gamma2": (5,),
        "beta2": (5,),
        "gamma3": (5,),
        "beta3": (5,),
    }
    assert network.state == {"mean3": (5,), "var3": (5,)}


def test_bias_false_drops_b():
    network = spec.from_dict(net([dense(3, bias=False), dense(2, bias=True)]))
    assert list(network.parameters) == ["W1", "W2", "b2"]
    assert network.layers[0].bias is False
    assert not network.plain


def test_explicit_dense_kind_is_the_default():
    plain = spec.from_dict(net([dense(3), dense(2)]))
    explicit = spec.from_dict(net([dense(3, kind="dense"), dense(2, kind="dense")]))
    assert plain == explicit
    assert plain.plain


def test_a_section_2_spec_keeps_its_meaning():
    # LayerSpec(units, activation) positional, activation identity by default, no kind field
    relu = LayerSpec(3, FunctionSpec("relu"))
    assert (relu.units, relu.activation.name, relu.kind, relu.bias) == (3, "relu", "dense", True)
    assert LayerSpec(2).activation == spec.IDENTITY == FunctionSpec("identity")
    network = NetworkSpec("net", 2, (relu, LayerSpec(2)), FunctionSpec("mse"))
    assert network.plain
    assert network.parameters == {"W1": (3, 2), "b1": (3,), "W2": (2, 3), "b2": (2,)}
    data = spec.to_dict(network)
    assert data["layers"] == [
        {"units": 3, "activation": "relu"},
        {"units": 2, "activation": "identity"},
    ]
    assert spec.from_dict(data) == network
    # a layer table without an activation reads as identity
    read = spec.from_dict(net([{"units": 2}]))
    assert read.layers[0] == LayerSpec(2)


@pytest.mark.parametrize(
    "layer",
    [
        dense(3, "relu"),
        dense(3, "relu", bias=False),
        dense(3, {"name": "leaky_relu", "slope": 0.3}),
        dense(3, {"name": "elu", "alpha": 2}),
        dense(3, {"name": "swish", "expr": "x*sigmoid(x)"}),
        {"kind": "layer_norm", "eps": 1e-3},
        {"kind": "batch_norm", "eps": 1e-3, "momentum": 0.5},
        {"kind": "dropout", "rate": 0.5},
        residual(dense(3), {"kind": "layer_norm"}),
        residual(residual(dense(3, bias=False), {"kind": "dropout", "rate": 0.1})),
    ],
    ids=[
        "dense",
        "no-bias",
        "leaky",
        "elu",
        "custom",
        "layer_norm",
        "batch_norm",
        "dropout",
        "residual",
        "nested",
    ],
)
def test_to_dict_round_trips_every_kind(layer, tmp_path):
    data = net([dense(3), layer, dense(2)], inputs=3)
    network = spec.from_dict(data)
    again = spec.to_dict(network)
    assert spec.from_dict(again) == network
    assert spec.to_dict(spec.from_dict(again)) == again
    path = tmp_path / "net.json"
    path.write_text(json.dumps(again), encoding="utf-8")
    assert spec.load_spec(path) == network


def test_every_kind_round_trips_and_builds():
    network = spec.from_dict(EVERY_KIND)
    assert spec.from_dict(spec.to_dict(network)) == network
    assert spec.from_dict(json.loads(json.dumps(spec.to_dict(network)))) == network  # plain data
    activations, loss = functions.resolve(network)
    assert [a is None for a in activations] == [f.kind != "dense" for f in network.flat]
    assert loss.name == "cross_entropy"
    graph.build(network)


# --- activation parameters -------------------------------------------------------------------


def test_layers_with_the_same_parameters_share_one_activation():
    slope = {"name": "leaky_relu", "slope": 0.2}
    activations, _ = functions.resolve(
        spec.from_dict(net([dense(4, slope), dense(4, dict(slope)), dense(2)]))
    )
    assert activations[0] == activations[1]
    assert activations[0].name == "leaky_relu(slope=0.2)"


def test_different_parameters_are_different_activations():
    layers = [
        dense(4, {"name": "leaky_relu", "slope": 0.2}),
        dense(4, {"name": "leaky_relu", "slope": 0.3}),
        dense(4, {"name": "elu", "alpha": 2}),
        dense(4, "leaky_relu"),
        dense(2),
    ]
    activations, _ = functions.resolve(spec.from_dict(net(layers)))
    names = [a.name for a in activations[:4]]
    assert names == [
        "leaky_relu(slope=0.2)",
        "leaky_relu(slope=0.3)",
        "elu(alpha=2.0)",
        "leaky_relu",
    ]


@pytest.mark.parametrize(
    ("activation", "name"),
    [
        ({"name": "leaky_relu", "slope": 0.01}, "leaky_relu"),
        ({"name": "elu", "alpha": 1}, "elu"),
        ({"name": "leaky_relu"}, "leaky_relu"),
    ],
)
def test_default_parameters_are_the_plain_entry(activation, name):
    activations, _ = functions.resolve(spec.from_dict(net([dense(4, activation), dense(2)])))
    assert activations[0] is functions.ACTIVATIONS[name]


@pytest.mark.parametrize(
    "slope", [0.2, -0.5, 1.0, 0.0, 1e-100, 9.9e100, -1e100, 0.30000000000000004, 3]
)
def test_leaky_relu_slope_is_the_number_given(slope):
    layer = spec.from_dict(net([dense(4, {"name": "leaky_relu", "slope": slope})])).layers[0]
    assert layer.activation.params == (("slope", float(slope)),)
    entry = functions.activation(layer.activation, "f")
    assert entry.torch == ("leaky_relu", (("negative_slope", float(slope)),))
    x = np.array([-2.0, -0.5, 0.0, 1.5])
    assert np.array_equal(entry.reference(x), np.where(x > 0, x, slope * x))
    at = {functions.X: -2}
    assert float(entry.expr.subs(at)) == pytest.approx(-2 * slope, rel=1e-15)


def test_parameter_exponents_are_bounded_as_numbers_in_expressions():
    assert spec.MAX_PARAMETER_EXPONENT == expressions.MAX_DIGITS


def test_elu_alpha_is_the_number_given():
    layer = spec.from_dict(net([dense(4, {"name": "elu", "alpha": 0.5})])).layers[0]
    entry = functions.activation(layer.activation, "f")
    assert entry.torch == ("elu", (("alpha", 0.5),))
    assert float(entry.expr.subs(functions.X, -1)) == pytest.approx(0.5 * math.expm1(-1))
    assert float(entry.expr.subs(functions.X, 2)) == 2


@pytest.mark.parametrize(
    ("function", "field", "fragment"),
    [
        (FunctionSpec("relu", params=(("slope", 0.2),)), "f.slope", "relu (it takes none)"),
        (
            FunctionSpec("leaky_relu", params=(("alpha", 1.0),)),
            "f.alpha",
            "leaky_relu (it takes: slope)",
        ),
        (FunctionSpec("leaky_relu", params=(("slope", math.inf),)), "f.slope", "finite"),
        (FunctionSpec("leaky_relu", params=(("slope", "0.2"),)), "f.slope", "a number"),
        (FunctionSpec("elu", params=(("alpha", 5e-324),)), "f.alpha", "exponent from -100"),
        (FunctionSpec("mine", "x", params=(("slope", 0.2),)), "f.slope", "takes no parameters"),
    ],
)
def test_parameters_of_a_spec_built_in_python_are_checked(function, field, fragment):
    # a FunctionSpec made in Python skips from_dict; resolution still refuses it by name
    with pytest.raises(InputError) as info:
        functions.activation(function, "f")
    assert fragment in assert_field(info.value, field)


# --- bad input: one table of cases -----------------------------------------------------------

LEAKY = {"name": "leaky_relu", "slope": 0.2}

BAD = [
    # a residual block that changes the width
    (
        "block-widens",
        net([dense(4), residual(dense(4), dense(8))]),
        "layers[1].block[1].units",
        "a residual block must end with its input's width 4",
    ),
    (
        "block-narrows-then-norm",
        net([dense(4), residual(dense(8), {"kind": "layer_norm"})]),
        "layers[1].block[0].units",
        "this layer makes it 8",
    ),
    (
        "block-narrows-then-residual",
        net([dense(4), residual(dense(2), residual(dense(2)), {"kind": "dropout", "rate": 0.1})]),
        "layers[1].block[0].units",
        "width 4",
    ),
    (
        "inner-block-widens",
        net([residual(dense(4), residual(dense(5)))]),
        "layers[0].block[1].block[0].units",
        "width 4",
    ),
    (
        "block-from-inputs",
        net([residual(dense(3))], inputs=5),
        "layers[0].block[0].units",
        "width 5",
    ),
    ("block-empty", net([residual()]), "layers[0].block", "at least one layer"),
    (
        "block-a-table",
        net([{"kind": "residual", "block": dense()}]),
        "layers[0].block",
        "expected a list of layers, got a table",
    ),
    (
        "block-a-string",
        net([{"kind": "residual", "block": "dense"}]),
        "layers[0].block",
        "expected a list of layers, got 'dense'",
    ),
    ("block-missing", net([{"kind": "residual"}]), "layers[0].block", "missing required field"),
    (
        "block-item-not-a-table",
        net([residual(dense(), 3)]),
        "layers[0].block[1]",
        "expected a table (one layer), got 3",
    ),
    (
        "block-item-bad-units",
        net([residual(dense(-1))]),
        "layers[0].block[0].units",
        "expected a positive integer, got -1",
    ),
    # dropout rate
    *(
        (
            f"rate-{value!r}",
            net([dense(), {"kind": "dropout", "rate": value}]),
            "layers[1].rate",
            message,
        )
        for value, message in [
            (1, "expected a number in [0, 1), got 1"),
            (1.0, "expected a number in [0, 1), got 1.0"),
            (-0.1, "expected a number in [0, 1), got -0.1"),
            (2, "in [0, 1)"),
            ("0.5", "expected a number, got '0.5'"),
            (True, "expected a number, got boolean True"),
            (None, "expected a number, got None"),
            ([0.5], "expected a number, got a list"),
            (math.nan, "expected a finite number, got nan"),
            (math.inf, "expected a finite number, got inf"),
        ]
    ),
    ("rate-missing", net([{"kind": "dropout"}]), "layers[0].rate", "missing required field"),
    # eps of both normalizations
    *(
        (
            f"{kind}-eps-{value!r}",
            net([dense(), {"kind": kind, "eps": value}]),
            "layers[1].eps",
            message,
        )
        for kind in ("layer_norm", "batch_norm")
        for value, message in [
            (0, "expected a positive number, got 0"),
            (-1e-5, "expected a positive number, got -1e-05"),
            ("1e-5", "expected a number, got '1e-5'"),
            (False, "expected a number, got boolean False"),
            (math.inf, "expected a finite number"),
            (math.nan, "expected a finite number"),
        ]
    ),
    # batch norm momentum
    *(
        (
            f"momentum-{value!r}",
            net([dense(), {"kind": "batch_norm", "momentum": value}]),
            "layers[1].momentum",
            message,
        )
        for value, message in [
            (-0.1, "expected a number in [0, 1], got -0.1"),
            (1.01, "expected a number in [0, 1], got 1.01"),
            (2, "expected a number in [0, 1], got 2"),
            ("0.1", "expected a number, got '0.1'"),
            (True, "expected a number, got boolean True"),
            (math.nan, "expected a finite number"),
        ]
    ),
    # dense bias
    *(
        (
            f"bias-{value!r}",
            net([dense(bias=value)]),
            "layers[0].bias",
            f"expected true or false, got {shown}",
        )
        for value, shown in [
            (1, "1"),
            (0, "0"),
            ("false", "'false'"),
            ("true", "'true'"),
            (None, "None"),
        ]
    ),
    # fields of another kind
    (
        "dense-rate",
        net([dense(rate=0.5)]),
        "layers[0].rate",
        "unknown field for a dense layer (allowed: activation, bias, kind, units)",
    ),
    (
        "layer_norm-units",
        net([dense(), {"kind": "layer_norm", "units": 4}]),
        "layers[1].units",
        "unknown field for a layer_norm layer (allowed: eps, kind)",
    ),
    (
        "layer_norm-momentum",
        net([dense(), {"kind": "layer_norm", "momentum": 0.1}]),
        "layers[1].momentum",
        "unknown field for a layer_norm layer (allowed: eps, kind)",
    ),
    (
        "batch_norm-activation",
        net([dense(), {"kind": "batch_norm", "activation": "relu"}]),
        "layers[1].activation",
        "unknown field for a batch_norm layer (allowed: eps, kind, momentum)",
    ),
    (
        "dropout-eps",
        net([dense(), {"kind": "dropout", "rate": 0.1, "eps": 1e-5}]),
        "layers[1].eps",
        "unknown field for a dropout layer (allowed: kind, rate)",
    ),
    (
        "residual-units",
        net([{"kind": "residual", "units": 4, "block": [dense()]}]),
        "layers[0].units",
        "unknown field for a residual layer (allowed: block, kind)",
    ),
    (
        "residual-layers",
        net([{"kind": "residual", "layers": [dense()]}]),
        "layers[0].layers",
        "unknown field for a residual layer (allowed: block, kind)",
    ),
    (
        "block-layer-unknown-field",
        net([residual(dense(), {"kind": "dropout", "rate": 0.1, "p": 0.1})]),
        "layers[0].block[1].p",
        "unknown field for a dropout layer",
    ),
    # activation parameters
    (
        "relu-slope",
        net([dense(4, {"name": "relu", "slope": 0.2})]),
        "layers[0].activation.slope",
        "relu takes no parameters (leaky_relu takes slope, elu takes alpha)",
    ),
    (
        "leaky-alpha",
        net([dense(4, {"name": "leaky_relu", "alpha": 1})]),
        "layers[0].activation.alpha",
        "unknown parameter of leaky_relu (it takes: slope)",
    ),
    (
        "elu-slope",
        net([dense(4, {"name": "elu", "slope": 0.1})]),
        "layers[0].activation.slope",
        "unknown parameter of elu (it takes: alpha)",
    ),
    (
        "leaky-slope-and-more",
        net([dense(4, {"name": "leaky_relu", "slope": 0.1, "negative_slope": 0.1})]),
        "layers[0].activation.negative_slope",
        "unknown parameter of leaky_relu",
    ),
    (
        "softmax-slope",
        net([dense(2, {"name": "softmax", "slope": 0.1})], loss="cross_entropy"),
        "layers[0].activation.slope",
        "softmax takes no parameters",
    ),
    (
        "tanh-alpha-in-block",
        net([residual(dense(4, {"name": "tanh", "alpha": 1}))]),
        "layers[0].block[0].activation.alpha",
        "tanh takes no parameters",
    ),
    (
        "unknown-name-with-parameter",
        net([dense(4, {"name": "prelu", "slope": 0.1})]),
        "layers[0].activation.slope",
        "unknown field (allowed: expr, name)",
    ),
    *(
        (
            f"slope-{value!r}",
            net([dense(4, {"name": "leaky_relu", "slope": value})]),
            "layers[0].activation.slope",
            message,
        )
        for value, message in [
            ("0.2", "expected a number, got '0.2'"),
            (True, "expected a number, got boolean True"),
            (None, "expected a number, got None"),
            ([0.2], "expected a number, got a list"),
            ({"value": 0.2}, "expected a number, got a table"),
            (math.inf, "expected a finite number, got inf"),
            (-math.inf, "expected a finite number, got -inf"),
            (math.nan, "expected a finite number, got nan"),
            (10**400, "expected a finite number, got a 401-digit number"),
        ]
    ),
    *(
        (
            f"slope-exponent-{shown}",
            net([dense(4, {"name": "leaky_relu", "slope": value})]),
            "layers[0].activation.slope",
            "expected 0 or a number with a decimal exponent from -100 to 100, got " + shown,
        )
        for value, shown in [
            (5e-324, "5e-324"),
            (1e-101, "1e-101"),
            (-9.99e-101, "-9.99e-101"),
            (1e101, "1e+101"),
            (1e300, "1e+300"),
            (10**101, "a 102-digit number"),
        ]
    ),
    (
        "alpha-exponent",
        net([dense(4, {"name": "elu", "alpha": 1e-200})]),
        "layers[0].activation.alpha",
        "a decimal exponent from -100 to 100",
    ),
    (
        "alpha-nan",
        net([dense(4, {"name": "elu", "alpha": math.nan})]),
        "layers[0].activation.alpha",
        "expected a finite number, got nan",
    ),
    # parameters together with expr
    (
        "custom-with-slope",
        net([dense(4, {"name": "mine", "expr": "x", "slope": 0.2})]),
        "layers[0].activation.slope",
        "a custom activation (given by expr) takes no parameters",
    ),
    (
        "builtin-name-expr-and-slope",
        net([dense(4, {"name": "leaky_relu", "expr": "x", "slope": 0.2})]),
        "layers[0].activation.slope",
        "a custom activation (given by expr) takes no parameters",
    ),
    (
        "custom-with-alpha",
        net([dense(4, {"name": "mine", "alpha": 1, "expr": "x"})]),
        "layers[0].activation.alpha",
        "takes no parameters",
    ),
    (
        "custom-with-other-field",
        net([dense(4, {"name": "mine", "expr": "x", "deriv": "1"})]),
        "layers[0].activation.deriv",
        "unknown field (allowed: expr, name)",
    ),
    (
        "loss-with-parameter",
        net([dense(4)], loss={"name": "mse", "slope": 0.2}),
        "loss.slope",
        "unknown field (allowed: expr, name)",
    ),
    # kind
    *(
        (
            f"kind-{value!r}",
            net([dense(), {"kind": value}]),
            "layers[1].kind",
            f"unknown layer kind {shown} (known: {KNOWN_KINDS})",
        )
        for value, shown in [
            ("conv", "'conv'"),
            ("Dense", "'Dense'"),
            ("layer-norm", "'layer-norm'"),
            ("", "''"),
            ("batchnorm", "'batchnorm'"),
        ]
    ),
    *(
        (
            f"kind-not-a-string-{i}",
            net([dense(), {"kind": value}]),
            "layers[1].kind",
            f"expected the name of a layer kind ({KNOWN_KINDS}), got {shown}",
        )
        for i, (value, shown) in enumerate(
            [
                (3, "3"),
                (True, "boolean True"),
                (None, "None"),
                (["dense"], "a list"),
                ({"name": "dense"}, "a table"),
            ]
        )
    ),
    (
        "kind-in-block",
        net([residual({"kind": "group_norm"})]),
        "layers[0].block[0].kind",
        "unknown layer kind 'group_norm'",
    ),
    # softmax anywhere but the output layer
    (
        "softmax-last-of-block",
        net([dense(2), residual(dense(2, "softmax"))], loss="cross_entropy"),
        "layers[1].block[0].activation",
        "softmax is supported only as the output layer's activation, "
        "and the output layer is layers[1]",
    ),
    (
        "softmax-then-dropout",
        net([dense(3, "softmax"), {"kind": "dropout", "rate": 0.5}], loss="cross_entropy"),
        "layers[0].activation",
        "the output layer is layers[1]",
    ),
    (
        "softmax-then-layer-norm",
        net([dense(3, "softmax"), {"kind": "layer_norm"}], loss="mse"),
        "layers[0].activation",
        "softmax is supported only as the output layer's activation",
    ),
    (
        "softmax-in-nested-block",
        net([residual(residual(dense(4, "softmax"))), dense(2, "softmax")], loss="cross_entropy"),
        "layers[0].block[0].block[0].activation",
        "the output layer is layers[1]",
    ),
    (
        "softmax-as-a-table",
        net([dense(4, {"name": "softmax"}), dense(2, "softmax")], loss="cross_entropy"),
        "layers[0].activation",
        "softmax is supported only",
    ),
    # the loss needs probabilities, and the output layer is not dense
    *(
        (
            f"{loss}-after-{kind}",
            net([dense(3, output), last], loss=loss),
            "loss",
            f"{loss} needs probabilities, but the output layer layers[1] is a {kind} layer; "
            "end with a dense layer with softmax (cross_entropy) or sigmoid "
            "(binary_cross_entropy)",
        )
        for loss, output in [("cross_entropy", "relu"), ("binary_cross_entropy", "sigmoid")]
        for kind, last in [
            ("layer_norm", {"kind": "layer_norm"}),
            ("batch_norm", {"kind": "batch_norm"}),
            ("dropout", {"kind": "dropout", "rate": 0.5}),
            ("residual", residual(dense(3, "sigmoid"))),
        ]
    ),
    # something to train
    (
        "no-parameters",
        net([{"kind": "dropout", "rate": 0.5}]),
        "layers",
        "the network has no trainable parameters; add a dense or normalization layer",
    ),
    (
        "no-parameters-in-blocks",
        net(
            [
                residual({"kind": "dropout", "rate": 0.1}),
                residual(residual({"kind": "dropout", "rate": 0})),
            ]
        ),
        "layers",
        "no trainable parameters",
    ),
    # batch norm trains on batches of at least two
    (
        "batch-norm-batch-1",
        net([dense(), {"kind": "batch_norm"}], train={"batch_size": 1}),
        "train.batch_size",
        "batch_norm (layers[1]) needs at least 2 samples per batch in training, got 1",
    ),
    (
        "batch-norm-in-block-batch-1",
        net([dense(), residual(dense(), {"kind": "batch_norm"})], train={"batch_size": 1}),
        "train.batch_size",
        "batch_norm (layers[1].block[1])",
    ),
]


@pytest.mark.parametrize(
    ("data", "path", "fragment"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_input_names_the_field(data, path, fragment):
    message = message_of(data, path)
    assert fragment in message, message
    assert len(message) < 300, message


def test_bad_case_ids_are_unique():
    ids = [c[0] for c in BAD]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    "data",
    [
        net([dense(), {"kind": "dropout", "rate": 0}]),
        net([dense(), {"kind": "dropout", "rate": 0.0}]),
        net([dense(), {"kind": "dropout", "rate": 0.999}]),
        net([dense(), {"kind": "batch_norm", "momentum": 0}]),
        net([dense(), {"kind": "batch_norm", "momentum": 1}]),
        net([dense(), {"kind": "layer_norm", "eps": 1e-300}]),
        net([dense(), {"kind": "layer_norm", "eps": 1}]),
        net([dense(), {"kind": "batch_norm"}], train={"batch_size": 2}),
        net([dense(), {"kind": "layer_norm"}], train={"batch_size": 1}),
        net([dense(), {"kind": "dropout", "rate": 0.5}], train={"batch_size": 1}),
        net([dense(3, "relu"), {"kind": "layer_norm"}], loss="mse"),
        net([dense(3, "softmax")], loss="cross_entropy"),
        net(
            [dense(3), {"kind": "dropout", "rate": 0.5}, dense(3, "softmax")], loss="cross_entropy"
        ),
        net(
            [residual(dense(4), dense(4, "sigmoid")), dense(1, "sigmoid")],
            loss="binary_cross_entropy",
        ),
        net([residual(dense(9), dense(4))]),  # the block may widen on the way
        net([{"kind": "layer_norm"}]),  # gamma and beta are trained
        net([{"kind": "dropout", "rate": 0.5}, dense(1, bias=False)]),
    ],
)
def test_edge_values_accepted(data):
    functions.resolve(spec.from_dict(data))


def test_first_problem_in_a_block_is_reported_first():
    # depth first, in the order the spec is written
    data = net([residual({"kind": "dropout", "rate": 2}, dense(9)), {"kind": "nope"}])
    message_of(data, "layers[0].block[0].rate")


def test_resolve_refuses_softmax_inside_a_python_built_block():
    # a NetworkSpec made in Python skips from_dict; resolve keeps the rule
    block = (LayerSpec(2, FunctionSpec("softmax")),)
    network = NetworkSpec(
        "net", 2, (LayerSpec(2, kind="residual", block=block),), FunctionSpec("mse")
    )
    with pytest.raises(InputError) as info:
        functions.resolve(network)
    assert "the output layer is layers[0]" in assert_field(
        info.value, "layers[0].block[0].activation"
    )


# --- one line, whatever the input ------------------------------------------------------------


@pytest.mark.parametrize("key", ["a\nb", "a\rb", "x\u2028y", "tab\there", "\ud800"])
def test_odd_keys_stay_on_one_line(key):
    message = str(refused(net([dense(**{key: 1})])))
    assert len(message.splitlines()) == 1, message
    assert message.isprintable(), message
    assert message.startswith("layers[0].")


def test_odd_kind_value_stays_on_one_line():
    message = str(refused(net([{"kind": "a\nb"}])))
    assert message == f"layers[0].kind: unknown layer kind 'a\\nb' (known: {KNOWN_KINDS})"


# --- through the CLI: exit 2, one line -------------------------------------------------------

CLI_CASES = [
    (
        "width",
        DESIGN_TOML.replace("units = 16", "units = 8"),
        "layers[0].block[0].units: a residual block must end with its input's width 16",
    ),
    (
        "kind",
        DESIGN_TOML.replace('kind = "layer_norm"', 'kind = "layernorm"'),
        "layers[0].block[1].kind: unknown layer kind 'layernorm' (known: " + KNOWN_KINDS + ")",
    ),
    (
        "parameter",
        DESIGN_TOML.replace("slope = 0.2", "alpha = 0.2"),
        "layers[0].block[0].activation.alpha: unknown parameter of leaky_relu",
    ),
    (
        "relu-parameter",
        DESIGN_TOML.replace('"leaky_relu"', '"relu"'),
        "layers[0].block[0].activation.slope: relu takes no parameters",
    ),
    (
        "rate",
        DESIGN_TOML + '\n[[layers]]\nkind = "dropout"\nrate = 1.0\n',
        "layers[1].rate: expected a number in [0, 1), got 1.0",
    ),
    (
        "softmax",
        DESIGN_TOML.replace(
            "slope = 0.2 }",
            'slope = 0.2 }\n  [[layers.block]]\n  units = 16\n  activation = "softmax"',
        ).replace('kind = "layer_norm"', 'kind = "dropout"\n  rate = 0.1'),
        "layers[0].block[1].activation: softmax is supported only as the output layer's activation",
    ),
    (
        "batch",
        DESIGN_TOML.replace('"layer_norm"', '"batch_norm"') + "\n[train]\nbatch_size = 1\n",
        "train.batch_size: batch_norm (layers[0].block[1]) needs at least 2 samples",
    ),
    (
        "loss",
        DESIGN_TOML.replace('loss = "mse"', 'loss = "cross_entropy"'),
        "loss: cross_entropy needs probabilities, but the output layer layers[0] is a residual",
    ),
    (
        "block-table",
        DESIGN_TOML.replace("[[layers.block]]", "[layers.block]", 1).split("  [[layers.block]]")[0],
        "layers[0].block: expected a list of layers, got a table",
    ),
]


@pytest.mark.parametrize("command", ["codegen", "check"])
@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_bad_kinds_exit_2_with_one_line(tmp_path, capsys, command, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "bad_module.py"
    argv = [command, str(path)] + (["-o", str(out)] if command == "codegen" else [])
    assert main(argv) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == ""
    assert len(stderr.splitlines()) == 1, stderr[:2000]
    assert stderr.startswith(f"symbackprop: error: {expected}"), stderr
    assert not out.exists()


def test_cli_design_example_is_good_input(tmp_path):
    path = tmp_path / "design_net.toml"
    path.write_text(DESIGN_TOML, encoding="utf-8")
    network = spec.load_spec(path)  # the base of every CLI case above is valid
    functions.resolve(network)


@pytest.mark.parametrize("key", ["a\nb", "\ud800", "x\u2028y"])
def test_cli_odd_json_key_is_one_printable_line(tmp_path, capsys, key):
    data = net([dense(), {"kind": "dropout", "rate": 0.5, key: 1}])
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(data), encoding="utf-8")  # ensure_ascii: escapes in the file
    assert main(["codegen", str(path), "-o", str(tmp_path / "odd_module.py")]) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == ""
    assert len(stderr.splitlines()) == 1 and stderr.endswith("\n"), stderr
    assert stderr[:-1].isprintable(), stderr
    assert stderr.startswith("symbackprop: error: layers[1].")
    assert "unknown field for a dropout layer (allowed: kind, rate)" in stderr
