"""Image inputs and the convolutional kinds in specs (DESIGN §2c): shapes, numbering,
parameters, round trips, and bad input that names the layer."""

from __future__ import annotations

import pytest
from test_spec import assert_field

from symbackprop import initialize
from symbackprop.errors import InputError
from symbackprop.spec import from_dict, to_dict

CNN = {
    "name": "cnn",
    "inputs": [1, 8, 8],
    "loss": "cross_entropy",
    "layers": [
        {"kind": "conv2d", "filters": 8, "kernel": 3, "padding": 1, "activation": "relu"},
        {"kind": "max_pool2d", "kernel": 2},
        {"kind": "conv2d", "filters": 4, "kernel": [3, 2], "stride": [2, 1], "bias": False},
        {"kind": "avg_pool2d", "kernel": [1, 2], "stride": 1},
        {"kind": "flatten"},
        {"units": 10, "activation": "softmax"},
    ],
}


def layers_with(*extra: dict) -> dict:
    return {**CNN, "layers": [*extra, {"kind": "flatten"}, {"units": 2, "activation": "softmax"}]}


def error_of(data: dict) -> InputError:
    with pytest.raises(InputError) as info:
        from_dict(data)
    return info.value


def test_shapes_follow_the_output_size_formula():
    spec = from_dict(CNN)
    # conv 3x3 pad 1: 8x8; pool 2: 4x4; conv (3, 2) stride (2, 1): (1, 3); avg (1, 2) stride 1
    assert spec.shapes == ((1, 8, 8), (8, 8, 8), (8, 4, 4), (4, 1, 3), (4, 1, 2), 8, 10)
    assert spec.sizes == (64, 512, 128, 12, 8, 8, 10)
    assert spec.inputs == 64 and spec.input_shape == (1, 8, 8) and spec.image
    assert spec.shape_text() == "1x8x8-8x8x8-8x4x4-4x1x3-4x1x2-8-10"
    assert [layer.in_shape for layer in spec.flat][:3] == [(1, 8, 8), (8, 8, 8), (8, 4, 4)]


def test_conv_parameters_in_network_order():
    spec = from_dict(CNN)
    assert spec.parameters == {
        "W1": (8, 1, 3, 3),
        "b1": (8,),
        "W3": (4, 8, 3, 2),
        "W6": (10, 8),
        "b6": (10,),
    }
    assert spec.parameter_count == 72 + 8 + 192 + 80 + 10


def test_round_trip_through_plain_data():
    spec = from_dict(CNN)
    assert from_dict(to_dict(spec)) == spec
    assert to_dict(spec)["inputs"] == [1, 8, 8]


def test_flat_specs_keep_their_meaning():
    spec = from_dict({"name": "n", "inputs": 3, "loss": "mse", "layers": [{"units": 2}]})
    assert spec.input_shape == (3,) and not spec.image and spec.shapes == (3, 2)


def test_conv_init_uses_pytorch_fans():
    params = initialize.init_params(from_dict(CNN), seed=3)
    # He-normal over fan_in = C * kh * kw = 9 (relu); Xavier over (8*3*2 + 4*3*2) (identity)
    assert abs(params["W1"].std() - (2 / 9) ** 0.5) < 0.15
    limit = (6 / (48 + 24)) ** 0.5
    assert abs(params["W3"]).max() <= limit and abs(params["W3"]).max() > 0.8 * limit


@pytest.mark.parametrize(
    ("layers", "field", "words"),
    [
        ([{"units": 3}], "layers[0]", 'add a layer of kind = "flatten"'),
        ([{"kind": "layer_norm"}], "layers[0]", "needs a flat input"),
        ([{"kind": "conv2d", "filters": 2, "kernel": 9}], "layers[0].kernel", "does not fit"),
        ([{"kind": "max_pool2d", "kernel": [2, 9]}], "layers[0].kernel", "does not fit"),
        ([{"kind": "conv2d", "kernel": 3}], "layers[0].filters", "missing required field"),
        ([{"kind": "conv2d", "filters": 2}], "layers[0].kernel", "missing required field"),
        ([{"kind": "conv2d", "filters": 2, "kernel": 0}], "layers[0].kernel", "positive"),
        ([{"kind": "conv2d", "filters": 2, "kernel": [1, 2, 3]}], "layers[0].kernel", "two"),
        ([{"kind": "conv2d", "filters": 2, "kernel": 2, "padding": -1}], "layers[0].padding", ""),
        ([{"kind": "conv2d", "filters": 2, "kernel": 2, "stride": 0}], "layers[0].stride", ""),
        ([{"kind": "max_pool2d", "kernel": 2, "padding": 1}], "layers[0].padding", "unknown"),
        (
            [{"kind": "conv2d", "filters": 2, "kernel": 2, "activation": "softmax"}],
            "layers[0].activation",
            "softmax",
        ),
    ],
)
def test_bad_image_layers_name_the_field(layers, field, words):
    message = assert_field(error_of(layers_with(*layers)), field)
    assert words in message


def test_image_kind_on_a_flat_input_is_refused():
    data = {"name": "n", "inputs": 4, "loss": "mse", "layers": [{"kind": "flatten"}, {"units": 1}]}
    assert "needs an image input" in assert_field(error_of(data), "layers[0]")


def test_the_output_must_be_flat():
    data = {**CNN, "loss": "mse", "layers": [{"kind": "conv2d", "filters": 2, "kernel": 3}]}
    assert "must be flat" in assert_field(error_of(data), "layers[0]")


@pytest.mark.parametrize("value", [[1, 8], [1, 0, 8], [1, 8, 8, 8], [1, 2.5, 8]])
def test_bad_image_inputs(value):
    assert str(error_of({**CNN, "inputs": value})).startswith("inputs")


def test_image_larger_than_the_limit():
    assert "at most" in str(error_of({**CNN, "inputs": [1000, 1000, 2]}))
