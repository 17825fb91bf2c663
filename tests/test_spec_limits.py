"""Spec limits (issue 8 items 10, 11, 15): sizes, nesting, huge integers, names, odd files.

Every refusal is an ``InputError`` (CLI exit 2) with one short line naming the field.
"""

from __future__ import annotations

import json
import math

import pytest
from test_spec import DELETE, assert_field, error_of, minimal, with_layer

from symbackprop import functions, spec
from symbackprop.cli import main
from symbackprop.errors import InputError, cut_list, shorten


def load_error(path) -> InputError:
    with pytest.raises(InputError) as info:
        spec.load_spec(path)
    message = str(info.value)
    assert "\n" not in message
    assert len(message) < 300, message
    return info.value


def cli_error(path, capsys) -> str:
    """codegen on a spec file: exit 2, one line on stderr, nothing written."""
    assert main(["codegen", str(path), "-o", str(path.parent / "out.py")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1, err[:2000]
    assert "Traceback" not in err
    assert not (path.parent / "out.py").exists()
    return err


# --- sizes (item 10) -------------------------------------------------------------------------


def test_limits_are_named_constants():
    assert spec.MAX_UNITS == 1_000_000
    assert spec.MAX_LAYERS == 100
    assert spec.MAX_PARAMETERS == 200_000_000


@pytest.mark.parametrize("value", [10**12, 2**70, 1_000_001])
def test_inputs_bounded(value):
    message = assert_field(error_of(minimal(inputs=value)), "inputs")
    assert "at most 1000000" in message
    assert str(value) in message


@pytest.mark.parametrize("value", [10**12, 2**70, 1_000_001])
@pytest.mark.parametrize("index", [0, 2])
def test_units_bounded(index, value):
    message = assert_field(error_of(with_layer(index, units=value)), f"layers[{index}].units")
    assert "at most 1000000" in message
    assert str(value) in message


def test_largest_units_accepted_when_parameters_allow():
    data = minimal(inputs=1)
    data["layers"] = [{"units": spec.MAX_UNITS, "activation": "relu"}]
    data["loss"] = "mse"
    network = spec.from_dict(data)
    assert network.parameter_count == 2 * spec.MAX_UNITS


def test_layer_count_bounded():
    layers = [{"units": 1, "activation": "tanh"}] * (spec.MAX_LAYERS + 1)
    message = assert_field(error_of(minimal(layers=layers, loss="mse")), "layers")
    assert "101 layers" in message and "at most 100" in message
    spec.from_dict(minimal(layers=layers[:-1], loss="mse"))  # 100 is fine


def test_parameter_count_bounded():
    layers = [{"units": 10_000, "activation": "tanh"}] * 2 + [{"units": 1, "activation": "tanh"}]
    data = minimal(inputs=10_000, layers=layers, loss="mse")
    message = assert_field(error_of(data), "layers")
    assert "200,030,001 trainable parameters" in message
    assert "at most 200,000,000" in message


def test_parameter_count_at_the_limit_accepted():
    # 47 inputs -> 10**6 units -> 1: 49,000,001 parameters
    layers = [{"units": spec.MAX_UNITS, "activation": "tanh"}, {"units": 1, "activation": "tanh"}]
    network = spec.from_dict(minimal(inputs=47, layers=layers, loss="mse"))
    assert network.parameter_count == 49_000_001


@pytest.mark.parametrize("key", ["epochs", "batch_size"])
def test_train_counts_fit_in_64_bits(key):
    spec.from_dict(minimal(train={key: 10**12}))  # large is the user's choice
    message = assert_field(error_of(minimal(train={key: 2**63})), f"train.{key}")
    assert "at most" in message


def test_seed_fits_in_64_bits():
    assert spec.from_dict(minimal(train={"seed": 2**64 - 1})).train.seed == 2**64 - 1
    assert_field(error_of(minimal(train={"seed": 2**64})), "train.seed")


def test_sizes_in_cli(tmp_path, capsys):
    path = tmp_path / "big.toml"
    path.write_text(
        'name = "big"\ninputs = 2\nloss = "mse"\n'
        '[[layers]]\nunits = 1000000000000\nactivation = "relu"\n',
        encoding="utf-8",
    )
    err = cli_error(path, capsys)
    assert "layers[0].units" in err and "at most 1000000" in err


# --- nesting and huge integers (item 11) -----------------------------------------------------


def test_deeply_nested_json(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    assert "nested more than 64 levels deep" in str(load_error(path))
    assert "SPEC" in cli_error(path, capsys)


def test_deeply_nested_toml(tmp_path, capsys):
    path = tmp_path / "deep.toml"
    path.write_text('name = "n"\ninputs = ' + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    assert "nested more than 64 levels deep" in str(load_error(path))
    cli_error(path, capsys)


@pytest.mark.parametrize("suffix", ["json", "toml"])
def test_moderately_nested_is_refused_too(tmp_path, suffix):
    # under the recursion limit, but past the spec's depth: the same message
    path = tmp_path / f"deep.{suffix}"
    value = "[" * 100 + "]" * 100
    text = '{"inputs": ' + value + "}" if suffix == "json" else f"inputs = {value}\n"
    path.write_text(text, encoding="utf-8")
    assert "nested more than 64 levels deep" in str(load_error(path))


def test_huge_json_integer(tmp_path, capsys):
    data = minimal()
    path = tmp_path / "big.json"
    text = json.dumps(data).replace('"inputs": 2', '"inputs": ' + "9" * 5000)
    path.write_text(text, encoding="utf-8")
    err = load_error(path)
    assert_field(err, "inputs")
    assert "5000-digit number" in str(err)
    assert "inputs" in cli_error(path, capsys)


def test_huge_toml_integer(tmp_path, capsys):
    path = tmp_path / "big.toml"
    path.write_text('name = "n"\ninputs = ' + "9" * 5000 + "\n", encoding="utf-8")
    message = str(load_error(path))
    assert message.startswith("SPEC: ")
    assert "4300 digits" in message
    cli_error(path, capsys)


@pytest.mark.parametrize("value", [10**400, -(10**400)])
def test_integer_past_float_range(value):
    assert "finite number" in assert_field(error_of(minimal(l2=value)), "l2")
    assert "finite number" in assert_field(error_of(minimal(train={"lr": value})), "train.lr")


def test_json_huge_integer_in_a_float_field(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps(minimal()).replace("{", '{"l2": ' + "1" * 5000 + ",", 1))
    message = str(load_error(path))
    assert message.startswith("l2: expected a finite number, got a 5000-digit number")


def test_long_integer_in_message_is_summarised():
    message = str(error_of(minimal(inputs=10**200)))
    assert "201-digit number" in message
    assert len(message) < 120


# --- names (item 15, U1) ---------------------------------------------------------------------


def test_builtin_name_lists_match_the_registry():
    assert set(spec.BUILTIN_ACTIVATIONS) == set(functions.ACTIVATIONS)
    assert set(spec.BUILTIN_LOSSES) == set(functions.LOSSES)


@pytest.mark.parametrize("name", ["relu", "softmax", "identity", "mse", "cross_entropy"])
def test_custom_activation_cannot_take_a_builtin_name(name):
    err = error_of(with_layer(0, activation={"name": name, "expr": "x**2"}))
    message = assert_field(err, "layers[0].activation.name")
    assert f"{name!r} is a built-in" in message
    assert "choose another name" in message


def test_custom_softmax_error_names_the_activation():
    data = with_layer(2, activation={"name": "softmax", "expr": "x"})
    message = assert_field(error_of(data), "layers[2].activation.name")
    assert "'softmax' is a built-in activation" in message


@pytest.mark.parametrize("name", ["mse", "relu", "binary_cross_entropy"])
def test_custom_loss_cannot_take_a_builtin_name(name):
    err = error_of(minimal(loss={"name": name, "expr": "(yhat - y)**4"}))
    assert f"{name!r} is a built-in" in assert_field(err, "loss.name")


def test_builtin_by_table_without_expr_is_still_fine():
    data = with_layer(0, activation={"name": "relu"})
    assert spec.from_dict(data).layers[0].activation == spec.FunctionSpec("relu")


@pytest.mark.parametrize("name", ["lambda", "None", "class", "__init__", "__x"])
def test_custom_name_not_keyword_or_dunder(name):
    err = error_of(with_layer(0, activation={"name": name, "expr": "x"}))
    assert_field(err, "layers[0].activation.name")


def test_numpy_as_custom_name_is_harmless_in_the_module():
    # Custom names appear in the module only inside comments and strings.
    from symbackprop.checkpoint import load_module
    from symbackprop.codegen import generate
    from symbackprop.derive import derive

    data = with_layer(0, activation={"name": "numpy", "expr": "x**2"})
    module = load_module(generate(derive(spec.from_dict(data))))
    assert module.numpy.__name__ == "numpy"
    assert module.LAYER_SIZES == (2, 3, 3, 2)


@pytest.mark.parametrize("where", ["network", "activation", "loss", "builtin"])
def test_long_names_refused_with_short_message(where):
    long = "a" * 5000
    if where == "network":
        err, field = error_of(minimal(name=long)), "name"
    elif where == "activation":
        err = error_of(with_layer(0, activation={"name": long, "expr": "x"}))
        field = "layers[0].activation.name"
    elif where == "loss":
        err, field = error_of(minimal(loss={"name": long, "expr": "yhat"})), "loss.name"
    else:
        err, field = error_of(with_layer(0, activation=long)), "layers[0].activation"
    message = assert_field(err, field)
    assert f"at most {spec.MAX_NAME_LENGTH} characters" in message
    assert len(message) < 200


# --- short messages (item 15, U2) ------------------------------------------------------------


def test_shorten_and_cut_list():
    assert shorten("abc") == "abc"
    assert shorten("x" * 100) == "x" * 59 + "…"
    assert len(shorten("x" * 10_000, 20)) == 20
    assert cut_list(["a", "b"]) == "a, b"
    assert cut_list([str(i) for i in range(20_000)]) == "0, 1, 2, 3, 4 … and 19,995 more"


def test_long_string_value_is_cut():
    message = str(error_of(minimal(inputs="9" * 100_000)))
    assert len(message) < 150


def test_long_unknown_field_is_cut():
    message = str(error_of({**minimal(), "k" * 100_000: 1}))
    assert len(message) < 200


def test_long_optimizer_is_cut():
    message = str(error_of(minimal(train={"optimizer": "o" * 100_000})))
    assert message.startswith("train.optimizer: ")
    assert len(message) < 200


def test_long_missing_spec_name_is_cut(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert len(str(load_error("n" * 10_000))) < 300


# --- files (U3) ------------------------------------------------------------------------------


def _minimal_toml() -> str:
    return (
        'name = "net"\ninputs = 2\nloss = "mse"\n[[layers]]\nunits = 1\nactivation = "identity"\n'
    )


@pytest.mark.parametrize("suffix", ["toml", "json"])
def test_byte_order_mark_is_accepted(tmp_path, suffix):
    path = tmp_path / f"bom.{suffix}"
    text = _minimal_toml() if suffix == "toml" else json.dumps(minimal())
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert spec.load_spec(path).name == "net"


def test_directory_is_said_to_be_a_directory(tmp_path, monkeypatch):
    (tmp_path / "dir.toml").mkdir()
    (tmp_path / "plain").mkdir()
    monkeypatch.chdir(tmp_path)
    for name in ("dir.toml", "plain", str(tmp_path / "dir.toml")):
        message = str(load_error(name))
        assert "is a directory" in message
        assert "no such file" not in message


def test_json_duplicate_key(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('{"name": "a", "inputs": 2, "inputs": 3}', encoding="utf-8")
    message = str(load_error(path))
    assert message.startswith("SPEC: ")
    assert "duplicate key 'inputs'" in message


def test_json_duplicate_key_nested(tmp_path):
    data = minimal()
    text = json.dumps(data).replace('"units": 3,', '"units": 3, "units": 4,', 1)
    path = tmp_path / "dup.json"
    path.write_text(text, encoding="utf-8")
    assert "duplicate key 'units'" in str(load_error(path))


def test_spec_file_size_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(spec, "MAX_SPEC_BYTES", 1000)
    path = tmp_path / "big.toml"
    path.write_text(_minimal_toml() + "#" * 2000 + "\n", encoding="utf-8")
    message = str(load_error(path))
    assert "larger than 1000 bytes" in message
    path.write_text(_minimal_toml(), encoding="utf-8")
    assert spec.load_spec(path).name == "net"


def test_minimal_dict_still_valid():
    assert spec.from_dict(minimal(l2=DELETE)).name == "net"


# --- layer kinds (DESIGN §2b): limits over the flattened list ---------------------------------


def _nested(depth: int, inner: dict) -> list[dict]:
    """``depth`` residual layers inside each other around ``inner``."""
    layer = inner
    for _ in range(depth):
        layer = {"kind": "residual", "block": [layer]}
    return [layer]


def _nested_toml(depth: int) -> str:
    text = 'name = "net"\ninputs = 2\nloss = "mse"\n'
    for level in range(depth):
        text += f'[[layers{".block" * level}]]\nkind = "residual"\n'
    text += f"[[layers{'.block' * depth}]]\nunits = 2\n"
    return text + 'activation = { name = "leaky_relu", slope = 0.2 }\n'


def test_layer_limit_counts_the_layers_of_residual_blocks():
    # 50 residuals of one dense layer each: 100 layers in all, 50 of them top-level
    hundred = [{"kind": "residual", "block": [{"units": 2}]}] * 50
    network = spec.from_dict(minimal(layers=hundred, loss="mse"))
    assert len(network.flat) == spec.MAX_LAYERS
    message = assert_field(error_of(minimal(layers=[*hundred, {"units": 2}], loss="mse")), "layers")
    assert message == (
        "layers: more than 100 layers, residual blocks' layers included; at most 100 are supported"
    )


def test_layer_limit_counts_nested_blocks():
    inner = {"kind": "residual", "block": [{"units": 2}] * 48}  # 49 layers
    outer = {"kind": "residual", "block": [inner, inner]}  # 99
    spec.from_dict(minimal(layers=[outer, {"units": 2}], loss="mse"))  # 100
    message = assert_field(
        error_of(minimal(layers=[outer, {"units": 2}, {"units": 2}], loss="mse")), "layers"
    )
    assert "residual blocks' layers included" in message


def test_nesting_limit_holds_for_residual_blocks(tmp_path):
    assert spec.MAX_RESIDUAL_NESTING == 30
    leaky = {"units": 2, "activation": {"name": "leaky_relu", "slope": 0.2}}
    deepest = spec.from_dict(minimal(layers=_nested(30, leaky), loss="mse"))
    assert [layer.kind for layer in deepest.flat] == ["residual"] * 30 + ["dense"]
    assert deepest.order == tuple(range(31, 0, -1))
    # what from_dict accepts, load_spec reads back: the innermost table lies 64 levels deep
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(spec.to_dict(deepest)), encoding="utf-8")
    assert spec.load_spec(path) == deepest
    toml = tmp_path / "deep.toml"
    toml.write_text(_nested_toml(30), encoding="utf-8")
    assert spec.load_spec(toml) == deepest

    err = error_of(minimal(layers=_nested(31, leaky), loss="mse"))
    message = assert_field(err, "layers[0]" + ".block[0]" * 30)
    assert "31 residual layers inside each other; at most 30 are supported" in message
    path.write_text(json.dumps(minimal(layers=_nested(31, leaky), loss="mse")), encoding="utf-8")
    assert "nested more than 64 levels deep" in str(load_error(path))
    toml.write_text(_nested_toml(31), encoding="utf-8")
    assert "nested more than 64 levels deep" in str(load_error(toml))


def test_nesting_past_the_limit_in_cli(tmp_path, capsys):
    path = tmp_path / "deep.toml"
    path.write_text(_nested_toml(40), encoding="utf-8")
    assert "nested more than 64 levels deep" in cli_error(path, capsys)


def test_parameter_limit_counts_gamma_and_beta():
    # 10,000 -> 10,000 without a bias, twice: exactly 200,000,000 weights
    layers = [{"units": 10_000, "bias": False}] * 2
    network = spec.from_dict(minimal(inputs=10_000, layers=layers, loss="mse"))
    assert network.parameter_count == spec.MAX_PARAMETERS
    for kind in ("layer_norm", "batch_norm"):
        data = minimal(inputs=10_000, layers=[*layers, {"kind": kind}], loss="mse")
        message = assert_field(error_of(data), "layers")
        assert "200,020,000 trainable parameters" in message  # gamma and beta: 2 x 10,000


def test_parameter_limit_counts_no_bias_for_bias_false():
    with_bias = [{"units": 10_000}] * 2
    message = assert_field(error_of(minimal(inputs=10_000, layers=with_bias, loss="mse")), "layers")
    assert "200,020,000 trainable parameters" in message
    one_without = [{"units": 10_000, "bias": False}, {"units": 10_000}]
    message = assert_field(
        error_of(minimal(inputs=10_000, layers=one_without, loss="mse")), "layers"
    )
    assert "200,010,000 trainable parameters" in message


def test_parameter_limit_counts_blocks_and_not_state_or_dropout():
    # batch norm's running statistics are not trained; dropout and residual have nothing
    block = [{"units": 10_000, "bias": False}, {"kind": "dropout", "rate": 0.5}]
    layers = [
        {"units": 10_000, "bias": False},
        {"kind": "residual", "block": block},
    ]
    network = spec.from_dict(minimal(inputs=10_000, layers=layers, loss="mse"))
    assert network.parameter_count == spec.MAX_PARAMETERS
    data = minimal(inputs=9_998, layers=[*layers, {"kind": "batch_norm"}], loss="mse")
    # 9,998 x 10,000 + 10,000 x 10,000 + 2 x 10,000 gamma/beta = 199,980,000 + 20,000
    network = spec.from_dict(data)
    assert network.parameter_count == spec.MAX_PARAMETERS
    assert sum(math.prod(s) for s in network.state.values()) == 20_000
