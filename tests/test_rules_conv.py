"""The image kinds' backward rules (DESIGN §2c): SymPy's derivatives on small instances equal
the index formulas, the im2col products and the pooling routes the code uses; wrong formulas
(an unflipped kernel, a gradient to the last maximum, no 1/k^2) are refused; and the index
formulas match finite differences at a size the symbolic instances do not reach."""

from __future__ import annotations

import numpy as np
import pytest
import sympy

from symbackprop import derive, rules
from symbackprop.spec import from_dict


@pytest.mark.parametrize("kind", rules.CONV_KINDS)
def test_every_image_kind_is_derived_and_proven(kind: str) -> None:
    rule = rules.derive_conv_rule(kind)
    assert rule.kind == kind and rule.cases
    assert rule.equations == rules.EQUATIONS[kind]
    for case in rule.cases:
        for (name, derived), (_, formula) in zip(case.derived, case.formulas, strict=True):
            assert derived.shape == formula.shape, (case.what, name)
            assert all(sympy.expand(d) == 0 for d in derived - formula), (case.what, name)
    assert rules.derive_conv_rule(kind) is rule  # cached
    assert kind not in rules.KINDS


def test_conv_cases_cover_stride_padding_and_channels() -> None:
    rule = rules.derive_conv_rule("conv2d")
    whats = [case.what for case in rule.cases]
    assert "1 channel, 3 x 3 input, 1 filter of 2 x 2, stride 1, padding 0" in whats
    assert "1 channel, 3 x 3 input, 1 filter of 2 x 2, stride 2, padding 1" in whats
    assert any(w.startswith("2 channels") and "2 filters" in w for w in whats)
    names = {name for case in rule.cases for name, _ in case.formulas}
    assert {"dx", "dW", "db", "dx full convolution", "forward im2col", "dx col2im"} <= names


def test_conv_forward_is_the_cross_correlation() -> None:
    case = rules.derive_conv_rule("conv2d").cases[0]
    x = sympy.Matrix(3, 3, case.inputs)
    w = sympy.Matrix(2, 2, sympy.symbols("w1_1_1_1 w1_1_1_2 w1_1_2_1 w1_1_2_2", real=True))
    b = sympy.Symbol("b1", real=True)
    z11 = b + sum(w[u, v] * x[u, v] for u in range(2) for v in range(2))
    assert sympy.expand(case.forward[0] - z11) == 0  # no flip in the forward map
    assert case.forward.shape == (4, 1)


def _case(kind: str, what: str) -> rules.ConvCase:
    return next(c for c in rules.derive_conv_rule(kind).cases if c.what.startswith(what))


def _derived(case: rules.ConvCase, name: str) -> sympy.ImmutableMatrix:
    return dict(case.derived)[name]


def _row(array: sympy.NDimArray) -> sympy.Matrix:
    return sympy.Matrix([sympy.flatten(array.tolist())])


def _array(values: tuple, shape: tuple[int, ...]) -> sympy.MutableDenseNDimArray:
    return sympy.MutableDenseNDimArray(list(values), shape)


def test_unflipped_kernel_is_refused() -> None:
    case = _case("conv2d", "1 channel, 3 x 3 input, 1 filter of 2 x 2, stride 1")
    w = sympy.MutableDenseNDimArray(
        list(sympy.symbols("w1_1_1_1 w1_1_1_2 w1_1_2_1 w1_1_2_2", real=True)), (1, 1, 2, 2)
    )
    flipped = sympy.MutableDenseNDimArray.zeros(1, 1, 2, 2)
    for u in range(2):
        for v in range(2):
            flipped[0, 0, u, v] = w[0, 0, 1 - u, 1 - v]
    g = _array(case.upstream, (1, 2, 2))
    # the full convolution with the kernel NOT flipped: a classic mistake
    wrong = rules.conv_grad_input_full(flipped, g, (1, 3, 3), (1, 1), (0, 0))
    with pytest.raises(RuntimeError, match="differ"):
        rules.check_equal(_derived(case, "dx"), _row(wrong), "unflipped")


def test_stride_ignored_in_the_input_error_is_refused() -> None:
    case = _case("conv2d", "1 channel, 3 x 3 input, 1 filter of 2 x 2, stride 2, padding 1")
    w = sympy.MutableDenseNDimArray(
        list(sympy.symbols("w1_1_1_1 w1_1_1_2 w1_1_2_1 w1_1_2_2", real=True)), (1, 1, 2, 2)
    )
    g = _array(case.upstream, (1, 2, 2))
    wrong = rules.conv_grad_input(w, g, (1, 3, 3), (1, 1), (1, 1))
    with pytest.raises(RuntimeError, match="stride 2"):
        rules.check_equal(_derived(case, "dx"), _row(wrong), case.what)


def test_kernel_gradient_without_padding_is_refused() -> None:
    case = _case("conv2d", "1 channel, 3 x 3 input, 1 filter of 2 x 2, stride 2, padding 1")
    x = _array(case.inputs, (1, 3, 3))
    g = _array(case.upstream, (1, 2, 2))
    wrong = rules.conv_grad_kernel(x, g, (2, 2), (2, 2), (0, 0))
    with pytest.raises(RuntimeError, match="differ"):
        rules.check_equal(_derived(case, "dW"), _row(wrong), "unpadded dW")


def test_max_pool_to_the_last_maximum_or_everywhere_is_refused() -> None:
    case = _case("max_pool2d", "max pooling, 4 x 4")
    derived = _derived(case, "dx")
    assert not derived.atoms(sympy.Heaviside)  # the order decided every comparison
    assert sorted(derived.free_symbols, key=str) == sorted(case.upstream, key=str)
    assert sum(1 for entry in derived if entry != 0) == len(case.upstream)  # one per window
    # average pooling's spread is not max pooling's route
    spread = sympy.zeros(1, len(case.inputs))
    with pytest.raises(RuntimeError, match="differ"):
        rules.check_equal(derived, spread, "no gradient")
    shifted = sympy.Matrix([list(derived)[1:] + [derived[0]]])
    with pytest.raises(RuntimeError, match="differ"):
        rules.check_equal(derived, shifted, "the wrong entry")


def test_average_pool_without_the_division_is_refused() -> None:
    case = _case("avg_pool2d", "average pooling, 4 x 4")
    formula = dict(case.formulas)["dx"]
    with pytest.raises(RuntimeError, match="differ"):
        rules.check_equal(_derived(case, "dx"), formula * 4, "avg without 1/k^2")


def test_flatten_is_a_permutation() -> None:
    case = rules.derive_conv_rule("flatten").cases[0]
    derived = _derived(case, "dx")
    assert sorted(derived, key=str) == sorted(case.upstream, key=str)
    with pytest.raises(RuntimeError, match="differ"):
        rules.check_equal(derived, sympy.Matrix([list(reversed(case.upstream))]), "reversed")


def test_unknown_image_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="known: conv2d"):
        rules.derive_conv_rule("conv3d")


# --- the index formulas against finite differences (NumPy, 2 channels, 5 x 6, stride 2) -------


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    f, _, kh, kw = w.shape
    ho = (xp.shape[1] - kh) // stride + 1
    wo = (xp.shape[2] - kw) // stride + 1
    z = np.empty((f, ho, wo))
    for p in range(ho):
        for q in range(wo):
            patch = xp[:, stride * p : stride * p + kh, stride * q : stride * q + kw]
            z[:, p, q] = (w * patch).sum(axis=(1, 2, 3)) + b
    return z


def test_index_formulas_match_finite_differences() -> None:
    rng = np.random.default_rng(12)
    x, w, b = rng.normal(size=(2, 5, 6)), rng.normal(size=(3, 2, 3, 2)), rng.normal(size=3)
    stride, pad = 2, 1
    g = rng.normal(size=_conv(x, w, b, stride, pad).shape)
    dx = np.array(
        rules.conv_grad_input(
            sympy.Array(w), sympy.Array(g), x.shape, (stride, stride), (pad, pad)
        ).tolist(),
        dtype=float,
    )
    dw = np.array(
        rules.conv_grad_kernel(
            sympy.Array(x), sympy.Array(g), (3, 2), (stride, stride), (pad, pad)
        ).tolist(),
        dtype=float,
    )
    step = 1e-6
    for array, grad in ((x, dx), (w, dw)):
        for index in [tuple(k * (s - 1) // 2 for s in array.shape) for k in range(3)]:
            saved = array[index]
            array[index] = saved + step
            up = float((g * _conv(x, w, b, stride, pad)).sum())
            array[index] = saved - step
            down = float((g * _conv(x, w, b, stride, pad)).sum())
            array[index] = saved
            assert abs((up - down) / (2 * step) - grad[index]) < 1e-7


CNN = {
    "name": "cnn",
    "inputs": [1, 8, 8],
    "loss": "cross_entropy",
    "layers": [
        {"kind": "conv2d", "filters": 8, "kernel": 3, "padding": 1, "activation": "relu"},
        {"kind": "max_pool2d", "kernel": 2},
        {"kind": "conv2d", "filters": 16, "kernel": 3, "padding": 1, "activation": "relu"},
        {"kind": "flatten"},
        {"units": 10, "activation": "softmax"},
    ],
}


def test_conv_spec_derives_with_the_contract_numbers() -> None:
    d = derive.derive(from_dict(CNN))
    numbers = {e.key: e.number for e in d.equations}
    expected = dict(
        zip(
            [key for kind in rules.CONV_KINDS for key, _, _ in rules.EQUATIONS[kind]],
            range(26, 36),
            strict=True,
        )
    )
    assert [key for kind in rules.CONV_KINDS for key, _, _ in rules.EQUATIONS[kind]] == [
        "conv2d.forward",
        "conv2d.im2col",
        "conv2d.backward",
        "conv2d.grad",
        "max_pool2d.forward",
        "max_pool2d.backward",
        "avg_pool2d.forward",
        "avg_pool2d.backward",
        "flatten.forward",
        "flatten.backward",
    ]
    for key, number in expected.items():
        assert derive.NUMBERS[key] == number
        if not key.startswith("avg_pool2d"):
            assert numbers[key] == number
    assert "avg_pool2d.forward" not in numbers
    assert d.layers[0] is not None and d.layers[0].activation.name == "relu"  # f'(z), as dense
    assert {5, 7, 26, 27, 28, 29, 30, 31, 34, 35} <= set(d.cited)


def test_each_instance_is_described_with_its_own_stride_and_padding() -> None:
    whats = [case.what for case in rules.derive_conv_rule("conv2d").cases]
    assert "1 channel, 4 x 3 input, 1 filter of 3 x 2, stride (2, 1), padding (1, 0)" in whats
    assert "1 channel, 3 x 3 input, 1 filter of 2 x 2, stride 2, padding 1" in whats
