"""The spec contract (DESIGN §2): reading, validation with field-path errors, resolution."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from symbackprop import functions, graph, spec
from symbackprop.errors import InputError

TOML_TEXT = """\
name = "full_net"
inputs = 4
loss = { name = "logcosh", expr = "log(cosh(yhat - y))" }
l2 = 0.001

[[layers]]
units = 5
activation = "relu"

[[layers]]
units = 3
activation = { name = "swish", expr = "x*sigmoid(x)" }

[[layers]]
units = 2
activation = "identity"

[train]
optimizer = "adam"
lr = 0.01
epochs = 7
batch_size = 16
seed = 3
momentum = 0.8
beta1 = 0.85
beta2 = 0.99
eps = 1e-7
"""

DICT = {
    "name": "full_net",
    "inputs": 4,
    "loss": {"name": "logcosh", "expr": "log(cosh(yhat - y))"},
    "l2": 0.001,
    "layers": [
        {"units": 5, "activation": "relu"},
        {"units": 3, "activation": {"name": "swish", "expr": "x*sigmoid(x)"}},
        {"units": 2, "activation": "identity"},
    ],
    "train": {
        "optimizer": "adam",
        "lr": 0.01,
        "epochs": 7,
        "batch_size": 16,
        "seed": 3,
        "momentum": 0.8,
        "beta1": 0.85,
        "beta2": 0.99,
        "eps": 1e-7,
    },
}


DELETE = object()


def minimal(**changes):
    """A valid small spec dict with top-level fields replaced (value DELETE deletes)."""
    data = {
        "name": "net",
        "inputs": 2,
        "loss": "cross_entropy",
        "layers": [
            {"units": 3, "activation": "relu"},
            {"units": 3, "activation": "tanh"},
            {"units": 2, "activation": "softmax"},
        ],
    }
    for key, value in changes.items():
        if value is DELETE:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def with_layer(index, **fields):
    data = minimal()
    data["layers"][index] = {**data["layers"][index], **fields}
    return data


def error_of(data) -> InputError:
    with pytest.raises(InputError) as info:
        spec.from_dict(data)
    return info.value


def assert_field(err: InputError, path: str) -> str:
    """The message starts with the field path, then ': ', and is one line."""
    message = str(err)
    assert message.startswith(f"{path}: "), message
    assert err.field == path
    assert "\n" not in message
    return message


# --- reading: TOML, JSON, dict ---------------------------------------------------------------


def test_toml_json_and_dict_give_equal_specs(tmp_path):
    toml_path = tmp_path / "net.toml"
    toml_path.write_text(TOML_TEXT, encoding="utf-8")
    json_path = tmp_path / "net.json"
    json_path.write_text(json.dumps(DICT), encoding="utf-8")
    from_toml = spec.load_spec(toml_path)
    from_json = spec.load_spec(str(json_path))
    from_dict = spec.from_dict(DICT)
    assert from_toml == from_json == from_dict
    assert hash(from_toml) == hash(from_json) == hash(from_dict)
    assert isinstance(from_dict, spec.NetworkSpec)
    assert from_dict.name == "full_net"
    assert from_dict.inputs == 4
    assert from_dict.sizes == (4, 5, 3, 2)
    assert from_dict.parameter_count == 5 * 4 + 5 + 3 * 5 + 3 + 2 * 3 + 2
    assert from_dict.l2 == 0.001
    assert isinstance(from_dict.layers, tuple)
    assert from_dict.layers[0] == spec.LayerSpec(3 + 2, spec.FunctionSpec("relu"))
    assert from_dict.layers[1].activation == spec.FunctionSpec("swish", "x*sigmoid(x)")
    assert from_dict.layers[1].activation.is_custom
    assert not from_dict.layers[0].activation.is_custom
    assert from_dict.loss == spec.FunctionSpec("logcosh", "log(cosh(yhat - y))")
    assert from_dict.train == spec.TrainSpec(
        optimizer="adam",
        lr=0.01,
        epochs=7,
        batch_size=16,
        seed=3,
        momentum=0.8,
        beta1=0.85,
        beta2=0.99,
        eps=1e-7,
    )


def test_spec_is_frozen():
    network = spec.from_dict(DICT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        network.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        network.layers[0].units = 9  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        network.train.lr = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        network.loss.expr = "yhat"  # type: ignore[misc]
    with pytest.raises(TypeError):
        network.layers[0] = network.layers[1]  # type: ignore[index]


def test_from_dict_does_not_alias_its_input():
    data = json.loads(json.dumps(DICT))
    network = spec.from_dict(data)
    data["layers"].append({"units": 1, "activation": "relu"})
    data["train"]["lr"] = 5.0
    assert len(network.layers) == 3
    assert network.train.lr == 0.01


def test_defaults():
    network = spec.from_dict(minimal())
    assert network.l2 == 0.0
    assert network.train == spec.TrainSpec()
    assert network.train.optimizer == "sgd"


@pytest.mark.parametrize("data", [DICT, minimal()], ids=["full", "minimal"])
def test_to_dict_round_trips(data):
    network = spec.from_dict(data)
    plain = spec.to_dict(network)
    assert spec.from_dict(plain) == network
    # plain data: survives JSON
    assert spec.from_dict(json.loads(json.dumps(plain))) == network
    assert spec.to_dict(spec.from_dict(plain)) == plain


def test_integral_float_l2_and_lr_are_floats():
    network = spec.from_dict(minimal(l2=1, train={"lr": 1}))
    assert network.l2 == 1.0 and isinstance(network.l2, float)
    assert network.train.lr == 1.0 and isinstance(network.train.lr, float)


# --- validation: the exact example of DESIGN §2 -----------------------------------------------


def test_design_example_message_exactly():
    err = error_of(with_layer(1, units=-3))
    assert str(err) == "layers[1].units: expected a positive integer, got -3"


def test_design_example_message_from_toml_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "n"\ninputs = 2\nloss = "mse"\n'
        '[[layers]]\nunits = 3\nactivation = "relu"\n'
        '[[layers]]\nunits = -3\nactivation = "identity"\n',
        encoding="utf-8",
    )
    with pytest.raises(InputError) as info:
        spec.load_spec(path)
    assert str(info.value) == "layers[1].units: expected a positive integer, got -3"


# --- validation: missing and unknown fields ---------------------------------------------------


@pytest.mark.parametrize("key", ["name", "inputs", "layers", "loss"])
def test_missing_required_field(key):
    message = assert_field(error_of(minimal(**{key: DELETE})), key)
    assert "missing" in message


def test_missing_units():
    data = minimal()
    del data["layers"][2]["units"]
    message = assert_field(error_of(data), "layers[2].units")
    assert "missing" in message


def test_activation_defaults_to_identity():
    data = minimal(loss="mse")
    del data["layers"][2]["activation"]
    assert spec.from_dict(data).layers[2].activation.name == "identity"


def test_unknown_top_level_field():
    data = minimal()
    data["optimiser"] = "adam"
    message = assert_field(error_of(data), "optimiser")
    assert "unknown field" in message


def test_unknown_layer_field():
    message = assert_field(error_of(with_layer(1, dropout=0.5)), "layers[1].dropout")
    assert "unknown field" in message


def test_unknown_train_field():
    message = assert_field(error_of(minimal(train={"learning_rate": 0.1})), "train.learning_rate")
    assert "unknown field" in message


def test_unknown_field_in_function_table():
    data = with_layer(0, activation={"name": "f", "expr": "x", "deriv": "1"})
    assert "unknown field" in assert_field(error_of(data), "layers[0].activation.deriv")


def test_not_a_mapping():
    with pytest.raises(InputError):
        spec.from_dict([1, 2, 3])


def test_layer_not_a_table():
    data = minimal()
    data["layers"][1] = 3
    assert_field(error_of(data), "layers[1]")


# --- validation: sizes ------------------------------------------------------------------------

BAD_SIZES = [
    pytest.param(0, "0", id="zero"),
    pytest.param(-3, "-3", id="negative"),
    pytest.param(2.5, "2.5", id="float"),
    pytest.param(2.0, "2.0", id="integral-float"),
    pytest.param(True, "True", id="bool"),
    pytest.param("3", "'3'", id="string"),
    pytest.param(None, "None", id="none"),
    pytest.param([3], "list", id="list"),
]


@pytest.mark.parametrize(("value", "shown"), BAD_SIZES)
def test_bad_inputs_size(value, shown):
    message = assert_field(error_of(minimal(inputs=value)), "inputs")
    assert "expected a positive integer" in message
    assert shown in message


@pytest.mark.parametrize(("value", "shown"), BAD_SIZES)
@pytest.mark.parametrize("index", [0, 2])
def test_bad_units(index, value, shown):
    message = assert_field(error_of(with_layer(index, units=value)), f"layers[{index}].units")
    assert "expected a positive integer" in message
    assert shown in message


def test_empty_layers():
    message = assert_field(error_of(minimal(layers=[])), "layers")
    assert "at least one layer" in message


@pytest.mark.parametrize("value", [{"units": 3}, "relu", 3])
def test_layers_not_a_list(value):
    assert_field(error_of(minimal(layers=value)), "layers")


# --- validation: l2 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [-0.1, -1, "0.1", math.inf, -math.inf, math.nan, True, None, [0.1]],
    ids=["negative", "negative-int", "string", "inf", "-inf", "nan", "bool", "none", "list"],
)
def test_bad_l2(value):
    message = assert_field(error_of(minimal(l2=value)), "l2")
    assert "expected a" in message


def test_l2_inf_in_toml(tmp_path):
    path = tmp_path / "net.toml"
    path.write_text(
        'name = "n"\ninputs = 2\nloss = "mse"\nl2 = inf\n'
        '[[layers]]\nunits = 1\nactivation = "identity"\n',
        encoding="utf-8",
    )
    with pytest.raises(InputError) as info:
        spec.load_spec(path)
    assert_field(info.value, "l2")


# --- validation: train ------------------------------------------------------------------------


def test_unknown_optimizer_lists_known_ones():
    message = assert_field(error_of(minimal(train={"optimizer": "adagrad"})), "train.optimizer")
    assert "adagrad" in message
    for name in ("sgd", "momentum", "adam", "rmsprop"):
        assert name in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lr", 0),
        ("lr", 0.0),
        ("lr", -0.1),
        ("lr", math.inf),
        ("lr", "0.1"),
        ("lr", True),
        ("epochs", 0),
        ("epochs", -1),
        ("epochs", 1.5),
        ("epochs", True),
        ("batch_size", 0),
        ("batch_size", 8.0),
        ("seed", -1),
        ("seed", 1.5),
        ("beta1", 1),
        ("beta1", 1.0),
        ("beta1", 1.5),
        ("beta1", -0.1),
        ("beta2", 1.0),
        ("momentum", -0.5),
        ("eps", 0),
        ("eps", -1e-8),
        ("optimizer", 3),
    ],
)
def test_bad_train_value(key, value):
    assert_field(error_of(minimal(train={key: value})), f"train.{key}")


@pytest.mark.parametrize("value", [3, "sgd", [1]])
def test_train_not_a_table(value):
    assert_field(error_of(minimal(train=value)), "train")


def test_good_train_edge_values():
    network = spec.from_dict(
        minimal(train={"beta1": 0, "beta2": 0.9999, "momentum": 0, "seed": 0, "epochs": 1})
    )
    assert network.train.beta1 == 0.0
    assert network.train.momentum == 0.0


# --- validation: name -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["1net", "my-net", "my net", "", "net\n", "net.py", "class", "def", "None", "True", "lambda"],
)
def test_name_must_be_identifier_not_keyword(value):
    message = assert_field(error_of(minimal(name=value)), "name")
    assert "identifier" in message


@pytest.mark.parametrize("value", [3, None, True, ["net"]])
def test_name_must_be_string(value):
    assert_field(error_of(minimal(name=value)), "name")


@pytest.mark.parametrize(
    "value", [3, [], True, None, {"expr": "x"}], ids=["int", "list", "bool", "none", "no-name"]
)
def test_bad_activation_value(value):
    data = with_layer(0, activation=value)
    err = error_of(data)
    assert str(err).startswith("layers[0].activation")
    assert err.field.startswith("layers[0].activation")


@pytest.mark.parametrize("expr", ["", "   ", 3, None])
def test_bad_custom_expr_type(expr):
    err = error_of(with_layer(0, activation={"name": "f", "expr": expr}))
    assert_field(err, "layers[0].activation.expr")


def test_bad_custom_function_name():
    err = error_of(with_layer(0, activation={"name": "my f", "expr": "x"}))
    assert_field(err, "layers[0].activation.name")


# --- reading errors ---------------------------------------------------------------------------


def test_invalid_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "n"\ninputs = \n', encoding="utf-8")
    with pytest.raises(InputError) as info:
        spec.load_spec(path)
    message = str(info.value)
    assert "invalid TOML" in message
    assert "bad.toml" in message
    assert "\n" not in message


def test_invalid_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"name": "n", "inputs": ', encoding="utf-8")
    with pytest.raises(InputError) as info:
        spec.load_spec(path)
    message = str(info.value)
    assert "invalid JSON" in message
    assert "bad.json" in message
    assert "\n" not in message


def test_json_top_level_not_an_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(InputError):
        spec.load_spec(path)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes(b'name = "n\xe9"\n')
    with pytest.raises(InputError):
        spec.load_spec(path)


@pytest.mark.parametrize("name", ["missing.toml", "missing.json", "no_such_example"])
def test_missing_file(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as info:
        spec.load_spec(name)
    assert name in str(info.value)


def test_missing_file_absolute(tmp_path):
    with pytest.raises(InputError):
        spec.load_spec(tmp_path / "nope.toml")


def test_directory_named_like_spec(tmp_path):
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(InputError):
        spec.load_spec(tmp_path / "dir.toml")


# --- bundled examples -------------------------------------------------------------------------

BUNDLED = ["seed_mlp", "tanh_regression", "swish_mlp", "sigmoid_bce"]


def test_bundled_examples_listed():
    assert set(BUNDLED) <= set(spec.bundled_examples())


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_name_resolves(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # not found relative to the checkout by accident
    network = spec.load_spec(name)
    assert network.name == name
    assert spec.from_dict(spec.to_dict(network)) == network
    built = graph.build(network)
    assert len(built.activations) == len(network.layers)


def test_seed_mlp_is_the_design_network():
    network = spec.load_spec("seed_mlp")
    assert network.sizes == (2, 3, 3, 2)
    assert [layer.activation.name for layer in network.layers] == ["relu", "relu", "softmax"]
    assert network.loss == spec.FunctionSpec("cross_entropy")


# --- functions.resolve / graph.build ----------------------------------------------------------


def resolve_error(data) -> InputError:
    network = spec.from_dict(data)
    with pytest.raises(InputError) as info:
        functions.resolve(network)
    with pytest.raises(InputError) as info_build:
        graph.build(network)
    assert str(info_build.value) == str(info.value)
    return info.value


@pytest.mark.parametrize("builder", [functions.resolve, graph.build])
def test_resolve_valid(builder):
    builder(spec.from_dict(DICT))


def test_unknown_activation_lists_known_names():
    message = assert_field(
        resolve_error(with_layer(1, activation="swishy")), "layers[1].activation"
    )
    assert "swishy" in message
    for name in functions.ACTIVATIONS:
        assert name in message


def test_unknown_loss_lists_known_names():
    message = assert_field(resolve_error(minimal(loss="hinge")), "loss")
    assert "hinge" in message
    for name in functions.LOSSES:
        assert name in message
    assert set(functions.LOSSES) == {"mse", "cross_entropy", "binary_cross_entropy"}


def test_builtin_activation_names():
    assert set(functions.ACTIVATIONS) == {
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
    }


@pytest.mark.parametrize("index", [0, 1])
def test_softmax_in_hidden_layer(index):
    message = assert_field(
        error_of(with_layer(index, activation="softmax")), f"layers[{index}].activation"
    )
    assert "softmax" in message


@pytest.mark.parametrize("activation", ["identity", "relu", "tanh"])
def test_cross_entropy_after_non_probability_output(activation):
    message = assert_field(resolve_error(with_layer(2, activation=activation)), "loss")
    assert "softmax" in message and "sigmoid" in message
    assert "layers[2].activation" in message


def test_binary_cross_entropy_after_softmax():
    message = assert_field(resolve_error(minimal(loss="binary_cross_entropy")), "loss")
    assert "sigmoid" in message


def test_binary_cross_entropy_after_identity():
    data = minimal(loss="binary_cross_entropy")
    data["layers"][2]["activation"] = "identity"
    message = assert_field(resolve_error(data), "loss")
    assert "sigmoid" in message


def test_softmax_with_one_unit():
    message = assert_field(resolve_error(with_layer(2, units=1)), "layers[2].units")
    assert "softmax" in message


@pytest.mark.parametrize(
    ("loss", "output"),
    [
        ("mse", "identity"),
        ("mse", "tanh"),
        ("mse", "sigmoid"),
        ("mse", "softmax"),
        ("cross_entropy", "softmax"),
        ("cross_entropy", "sigmoid"),
        ("binary_cross_entropy", "sigmoid"),
    ],
)
def test_valid_output_combinations(loss, output):
    network = spec.from_dict(with_layer(2, activation=output) | {"loss": loss})
    activations, chosen = functions.resolve(network)
    assert chosen.name == loss
    assert activations[-1].name == output


UNKNOWN_NAMES = ["y*2", "x + z", "foo(x)", "exec('1')", "open('f')", "globals()"]
SYNTAX_ERRORS = ["x**", "x +* 2", "(x", "x)", "import os", "x; 1", "x = 1", "#"]
INJECTIONS = [
    "__import__('os').system('touch pwned')",
    "x.__class__",
    "().__class__.__bases__[0].__subclasses__()",
    "lambda: 1",
    "lambda x: x",
    "x[0]",
    "[x for x in ()]",
    "x if x else 1",
    "x == 1",
    "'abc'",
    "__builtins__",
    "(y := 1)",
    "x.real",
    "1j * x",
    "9**9**9**9",
    "1e999999999 * x",
    "(" * 300 + "x" + ")" * 300,
]


@pytest.mark.parametrize("expr", UNKNOWN_NAMES + SYNTAX_ERRORS + INJECTIONS)
def test_bad_custom_activation_expression(expr, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = with_layer(0, activation={"name": "evil", "expr": expr})
    message = assert_field(resolve_error(data), "layers[0].activation.expr")
    assert "Traceback" not in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("expr", ["y*2", "yhat + x", "foo(x)"])
def test_unknown_name_in_custom_activation_is_named(expr):
    data = with_layer(0, activation={"name": "f", "expr": expr})
    message = assert_field(resolve_error(data), "layers[0].activation.expr")
    assert "unknown" in message


def test_custom_activation_valid():
    data = with_layer(1, activation={"name": "swish", "expr": "x*sigmoid(x)"})
    activations, _ = functions.resolve(spec.from_dict(data))
    assert activations[1].custom
    assert activations[1].name == "swish"
    assert activations[1].expr.free_symbols == {functions.X}


@pytest.mark.parametrize("expr", ["y**2", "1", "log(2)", "y"])
def test_custom_loss_must_depend_on_yhat(expr):
    data = minimal(loss={"name": "bad", "expr": expr})
    data["layers"][2]["activation"] = "identity"
    message = assert_field(resolve_error(data), "loss.expr")
    assert "yhat" in message


@pytest.mark.parametrize("expr", ["x**2", "yhat.__class__", "__import__('os')", "yhat +"])
def test_bad_custom_loss_expression(expr):
    data = minimal(loss={"name": "bad", "expr": expr})
    data["layers"][2]["activation"] = "identity"
    assert_field(resolve_error(data), "loss.expr")


def test_custom_loss_valid():
    data = minimal(loss={"name": "logcosh", "expr": "log(cosh(yhat - y))"})
    data["layers"][2]["activation"] = "identity"
    _, chosen = functions.resolve(spec.from_dict(data))
    assert chosen.custom
    assert functions.YHAT in chosen.expr.free_symbols


@pytest.mark.parametrize("name", ["numpy", "math", "sys", "json", "symbackprop"])
def test_names_that_would_shadow_a_module_are_refused(name: str) -> None:
    data = {
        "name": name,
        "inputs": 1,
        "loss": "mse",
        "layers": [{"units": 1, "activation": "identity"}],
    }
    with pytest.raises(InputError) as info:
        spec.from_dict(data)
    assert str(info.value).startswith("name: ")


def test_one_name_cannot_mean_two_activations() -> None:
    layers = [
        {"units": 3, "activation": {"name": "f", "expr": "x**2"}},
        {"units": 3, "activation": {"name": "f", "expr": "sin(x)"}},
        {"units": 1, "activation": "identity"},
    ]
    data = {"name": "twice", "inputs": 2, "loss": "mse", "layers": layers}
    with pytest.raises(InputError) as info:
        graph.build(spec.from_dict(data))
    assert str(info.value).startswith("layers[1].activation.name: 'f' already names")
    layers[1] = {"units": 3, "activation": {"name": "f", "expr": "x**2"}}
    graph.build(spec.from_dict(data))  # the same function twice is fine
