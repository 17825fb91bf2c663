"""The certificate on conv nets: finite differences with image X, the exact neuron-level
graph (conv taps, first-maximum max pools, mean pools, flatten) and PyTorch's F.conv2d /
F.max_pool2d / F.avg_pool2d / flatten agree with the generated module on random small conv
nets, catch a wrong gradient, and the budgets count conv operations."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from symbackprop import exact
from symbackprop.checkpoint import point
from symbackprop.codegen import generate
from symbackprop.derive import derive
from symbackprop.errors import InputError
from symbackprop.graph import GRAPH_LIMIT, SizeLimitError, activation, build, layer_operations
from symbackprop.spec import from_dict, load_spec
from symbackprop.verify import (
    FD_BUDGET,
    WORK_LIMIT,
    _fd_plan,
    certify,
    exact_cost,
    graph_reachable,
    pass_cost,
    pytorch_gradients,
)

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
_GRID = importlib.util.spec_from_file_location(
    "certificate_grid", ROOT / "benchmarks" / "certificate_grid.py"
)
certificate_grid = importlib.util.module_from_spec(_GRID)
_GRID.loader.exec_module(certificate_grid)
random_conv_spec = certificate_grid.random_conv_spec

SEEDS = list(range(12))
WITNESSES = ("finite-diff", "exact", "pytorch")

# the digits example's net (examples/digits_cnn.toml has more filters): 1x8x8 -> 8x8x8 ->
# 8x4x4 -> 16x4x4 -> 256 -> 10
DIGITS_CNN = {
    "name": "digits_cnn_small",
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
# too large for the certificate on 4 samples: 3x128x128 -> 60x128x128 (5x5 taps) -> ...
HUGE_CNN = {
    "name": "huge_cnn",
    "inputs": [3, 128, 128],
    "loss": "cross_entropy",
    "layers": [
        {"kind": "conv2d", "filters": 60, "kernel": 5, "padding": 2, "activation": "relu"},
        {"kind": "max_pool2d", "kernel": 2},
        {"kind": "conv2d", "filters": 8, "kernel": 3, "padding": 1, "activation": "relu"},
        {"kind": "flatten"},
        {"units": 10, "activation": "softmax"},
    ],
}


def test_the_random_conv_nets_cover_every_option() -> None:
    seen: dict[str, set] = {k: set() for k in ("kernel", "stride", "padding", "C", "kind")}
    seen["bias"] = set()
    for seed in SEEDS:
        spec = random_conv_spec(seed)
        seen["C"].add(spec.input_shape[0])
        for layer in spec.flat:
            seen["kind"].add(layer.kind)
            if layer.kind == "conv2d":
                seen["kernel"].add(layer.layer.kernel[0])
                seen["stride"].add(layer.layer.stride[0])
                seen["padding"].add(layer.layer.padding[0])
                seen["bias"].add(layer.layer.bias)
                seen["C"].add(layer.in_shape[0])
        assert graph_reachable(build(spec)), spec.name
    assert seen["kernel"] == {1, 2, 3} and seen["stride"] == {1, 2}
    assert seen["padding"] == {0, 1} and seen["C"] == {1, 2, 3} and seen["bias"] == {True, False}
    assert seen["kind"] == {"conv2d", "max_pool2d", "avg_pool2d", "flatten", "dense"}


@pytest.mark.parametrize("seed", SEEDS)
def test_exact_pytorch_finite_differences_and_the_module_agree(seed: int) -> None:
    certificate = certify(random_conv_spec(seed), seed=seed)
    assert certificate.passed, certificate.table()
    assert certificate.witnesses == WITNESSES, certificate.table()
    assert "on the first" not in certificate.exact_view  # the whole batch, exactly
    assert certificate.max_rel("exact") < 1e-12 and certificate.max_rel("pytorch") < 1e-12
    assert certificate.max_rel("finite-diff") < 1e-7


@pytest.mark.parametrize("seed", [2, 5, 12])  # max pool; avg pool and conv; both pools
def test_the_compiled_exact_evaluation_is_sympys_bit_for_bit(seed: int) -> None:
    net = build(random_conv_spec(seed))
    params, X, Y = point(net, 2, seed)
    fast = exact.evaluate(net, params, X, Y)
    slow = exact.evaluate_reference(net, params, X, Y)
    assert fast.loss == slow.loss
    for key in fast.gradients:
        assert np.array_equal(fast.gradients[key], slow.gradients[key]), key
    assert fast.adjoints == slow.adjoints
    torch_grads = pytorch_gradients(net, params, X, Y)
    for key, g in torch_grads.items():
        scale = max(1.0, float(np.abs(g).max()))
        assert float(np.abs(fast.gradients[key] - g).max()) <= 1e-13 * scale, key


def test_a_conv_output_element_is_its_receptive_field_without_the_padding() -> None:
    spec = from_dict(
        {
            "name": "one_conv",
            "inputs": [2, 3, 3],
            "loss": "mse",
            "layers": [
                {"kind": "conv2d", "filters": 2, "kernel": 3, "padding": 1, "stride": 2},
                {"kind": "flatten"},
                {"units": 1, "activation": "identity"},
            ],
        }
    )
    graph = build(spec).neuron_graph
    z = [node for node in graph if node.kind == "z" and node.layer == 1]
    assert len(z) == 2 * 2 * 2  # 2 filters x 2x2 positions
    corner = z[0].expr  # filter 1 at (0, 0): rows 0-1 and columns 0-1 of both channels
    names = sorted(s.name for s in corner.free_symbols)
    assert len(names) == 2 * 4 + 2 * 4 + 1  # 8 taps: their weights, their inputs, b1_1
    assert "b1_1" in names and "w1_1_1_1_1" not in names  # the padded row: no term
    assert "w1_1_1_2_2" in names and "x1" in names and "x10" in names  # x1: c 1, (0, 0)
    last = z[-1].expr  # filter 2 at (1, 1): rows 1-2, columns 1-2
    assert "b1_2" in {s.name for s in last.free_symbols}
    assert "w1_2_2_3_3" not in {s.name for s in last.free_symbols}  # padding at the edge
    assert "w1_2_2_1_1" in {s.name for s in last.free_symbols}
    flat = [node for node in graph if node.layer == 2]
    assert [str(node.expr) for node in flat] == [f"a1_{i}" for i in range(1, 9)]


def test_a_max_pool_sends_its_gradient_to_the_first_maximum_as_pytorch() -> None:
    spec = from_dict(
        {
            "name": "ties",
            "inputs": [1, 2, 4],
            "loss": "mse",
            "layers": [
                {"kind": "max_pool2d", "kernel": 2},
                {"kind": "flatten"},
                {"units": 1, "activation": "identity"},
            ],
        }
    )
    net = build(spec)
    params, _, Y = point(net, 1, 0)
    # window 1: a tie of three at 2.0 (the first is (0, 1)); window 2: a tie of all four
    X = np.array([[[[1.0, 2.0, 5.0, 5.0], [2.0, 2.0, 5.0, 5.0]]]])
    result = exact.evaluate(net, params, X, Y)
    adjoint = result.adjoints[0]

    got = np.array([float(adjoint.get(activation(0, i + 1), 0.0)) for i in range(8)])
    x = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    W, b = (torch.tensor(params[k], dtype=torch.float64) for k in ("W3", "b3"))
    out = torch.nn.functional.max_pool2d(x, 2).flatten(1) @ W.T + b
    (0.5 * ((out - torch.tensor(Y)) ** 2).sum()).backward()
    expected = x.grad.numpy().reshape(-1)
    assert np.count_nonzero(expected) == 2 and expected[1] != 0 and expected[2] != 0
    np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)
    reference = exact.evaluate_reference(net, params, X, Y)
    assert reference.adjoints == result.adjoints


def _wrong_kernel_gradient(source: str, key: str) -> str:
    """The module with a classic conv mistake: the kernel's gradient flipped (convolution
    where the forward pass is a cross-correlation)."""
    return source + (
        "\n\n_right_gradients = gradients\n\n\n"
        "def gradients(params, X, Y, rng=None):\n"
        "    value, grads = _right_gradients(params, X, Y, rng)\n"
        f"    grads[{key!r}] = grads[{key!r}][:, :, ::-1, ::-1].copy()\n"
        "    return value, grads\n"
    )


def _spec_with(pool: str) -> object:
    return from_dict(
        {
            "name": f"wrong_{pool}",
            "inputs": [2, 6, 6],
            "loss": "cross_entropy",
            "layers": [
                {"kind": "conv2d", "filters": 3, "kernel": 3, "activation": "tanh"},
                {"kind": pool, "kernel": 2},
                {"kind": "flatten"},
                {"units": 3, "activation": "softmax"},
            ],
        }
    )


def _failed(certificate: object, key: str) -> set[str]:
    return {r.witness for p in certificate.parameters if p.name == key for r in p.failures()}


def test_every_witness_catches_a_flipped_kernel_gradient() -> None:
    d = derive(_spec_with("max_pool2d"))
    source = generate(d)
    assert certify(d, module_source=source).passed
    wrong = certify(d, module_source=_wrong_kernel_gradient(source, "W1"))
    assert not wrong.passed
    assert _failed(wrong, "W1") == set(WITNESSES), wrong.table()
    assert all(p.passed for p in wrong.parameters if p.name != "W1"), wrong.table()


def test_every_witness_catches_a_wrong_average_pool_rule() -> None:
    d = derive(_spec_with("avg_pool2d"))
    source = generate(d)
    assert certify(d, module_source=source).passed
    scale = ", 0.25, out="  # the backward pass's 1/(kh kw)
    assert scale in source
    wrong = certify(d, module_source=source.replace(scale, ", 0.5, out="))
    assert _failed(wrong, "W1") == set(WITNESSES), wrong.table()
    assert _failed(wrong, "b1") == set(WITNESSES), wrong.table()
    assert all(p.passed for p in wrong.parameters if p.name in ("W4", "b4")), wrong.table()


# --- budgets: operation counts ---------------------------------------------------------------


def test_operations_count_conv_taps_and_pooled_entries() -> None:
    net = build(from_dict(DIGITS_CNN))
    conv1 = 8 * 8 * 8 * (1 * 3 * 3 + 1)
    pool = 8 * 4 * 4 * (2 * 2)
    conv2 = 16 * 4 * 4 * (8 * 3 * 3 + 1)
    dense = 10 * 256 + 10
    assert [layer_operations(layer) for layer in net.flat] == [conv1, pool, conv2, 256, dense]
    assert net.operations == conv1 + pool + conv2 + 256 + dense == 27_146
    assert net.parameter_count == 8 * 10 + 16 * 73 + dense < net.operations
    assert pass_cost(net, 4) == 4 * 27_146 + 10_000 * 5
    assert exact_cost(net) > net.operations > GRAPH_LIMIT and not graph_reachable(net)
    with pytest.raises(SizeLimitError, match="operations per sample"):
        _ = net.neuron_graph
    # a flat network: operations are its parameters, as before the image kinds
    for name in ("seed_mlp", "digits_mlp", "batchnorm_mlp", "residual_mlp"):
        flat = build(load_spec(name))
        assert flat.operations == flat.parameter_count, name


def test_the_digits_cnn_is_certified_with_the_exact_witness_skipped_by_its_operations() -> None:
    certificate = certify(from_dict(DIGITS_CNN))
    assert certificate.passed, certificate.table()
    assert certificate.witnesses == ("finite-diff", "pytorch")
    reasons = dict(certificate.skipped)
    assert "27,146 operations per sample" in reasons["exact"]
    assert "neuron-level limit of 10,000" in reasons["exact"]
    assert reasons["exact"].endswith("finite differences and PyTorch still check every layer")
    # without PyTorch the reason names only the witness that still runs
    alone = dict(certify(from_dict(DIGITS_CNN), use_torch=False).skipped)["exact"]
    assert alone.endswith("; finite differences still checks every layer"), alone


def test_a_huge_conv_spec_is_refused_or_skipped_by_operation_counts() -> None:
    spec = from_dict(HUGE_CNN)
    net = build(spec)
    conv1 = 60 * 128 * 128 * (3 * 25 + 1)
    assert net.operations > conv1 > WORK_LIMIT // 4
    assert net.parameter_count < WORK_LIMIT // 4  # parameters alone would let it through
    with pytest.raises(InputError, match="operations per sample"):
        certify(spec, batch=4, use_torch=True)
    # one sample fits the certificate's limit, but no finite-difference plan fits its budget
    assert _fd_plan(net, 1, kinked=True) == (0, 0)
    assert 8 * len(spec.parameters) * pass_cost(net, 1) > FD_BUDGET
    assert not graph_reachable(net)
    with pytest.raises(InputError, match="operations per sample"):
        certify(spec, batch=1, use_torch=False)
    assert math.prod(spec.input_shape) == 3 * 128 * 128


def test_edge_windows_padding_only_outputs_and_1x1_pools_are_certified() -> None:
    # a 1x1 kernel with padding 1: the ring of outputs reads only padding (no bias: 0, and
    # tanh(0)); a 1x1 max pool is the identity; a 1x2 average pool with stride 1 overlaps
    spec = from_dict(
        {
            "name": "edges",
            "inputs": [2, 3, 3],
            "loss": "mse",
            "layers": [
                {"kind": "conv2d", "filters": 2, "kernel": 1, "padding": 1, "bias": False,
                 "activation": "tanh"},
                {"kind": "max_pool2d", "kernel": 1},
                {"kind": "avg_pool2d", "kernel": [1, 2], "stride": 1},
                {"kind": "flatten"},
                {"units": 2, "activation": "identity"},
            ],
        }
    )  # fmt: skip
    certificate = certify(spec)
    assert certificate.passed and certificate.witnesses == WITNESSES, certificate.table()
    net = build(spec)
    params, X, Y = point(net, 2, 0)
    fast, slow = exact.evaluate(net, params, X, Y), exact.evaluate_reference(net, params, X, Y)
    assert fast.loss == slow.loss and fast.adjoints == slow.adjoints
    assert all(np.array_equal(fast.gradients[k], slow.gradients[k]) for k in fast.gradients)


def test_flat_rows_of_images_are_the_same_batch() -> None:
    spec = next(s for s in map(random_conv_spec, SEEDS) if s.loss.name == "cross_entropy")  # labels
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, spec.inputs))
    labels = rng.integers(0, spec.output_layer.units, size=5)
    flat = certify(spec, data=(X, labels))
    images = certify(spec, data=(X.reshape((5, *spec.input_shape)), labels))
    assert flat.passed and images.passed, flat.table()
    assert flat.loss == images.loss
    assert flat.max_rel("exact") == images.max_rel("exact")


def test_a_network_whose_one_sample_is_over_the_limit_is_refused_as_too_large() -> None:
    # 16x250x250 -> 16x246x246 (16 x 5x5 taps each): one sample alone is over WORK_LIMIT,
    # so a smaller batch cannot help and the message must not suggest one
    spec = from_dict(
        {
            "name": "vast",
            "inputs": [16, 250, 250],
            "loss": "cross_entropy",
            "layers": [
                {"kind": "conv2d", "filters": 16, "kernel": 5},
                {"kind": "max_pool2d", "kernel": 246},
                {"kind": "flatten"},
                {"units": 2, "activation": "softmax"},
            ],
        }
    )
    assert build(spec).operations > WORK_LIMIT
    with pytest.raises(InputError) as refused:
        certify(spec, batch=1, use_torch=False)
    assert refused.value.field == "spec"
    assert "too large for the certificate" in str(refused.value)
    assert "smaller batch" not in str(refused.value)
