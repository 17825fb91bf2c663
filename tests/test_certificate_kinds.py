"""The certificate's witnesses for every layer kind (issue 9, item 4; item 5's exact routine).

* the exact neuron-level graph and PyTorch (built from the layer registry) agree on random
  networks mixing every kind, depth up to 8;
* the exact graph (the batch as one function when there is batch norm) agrees with finite
  differences, in 50-digit arithmetic, of a forward pass written here from scratch;
* every witness refuses a wrong gradient of each kind: a layer norm's without its mean
  term, a batch norm's that treats the batch statistics as constants, a dropout's without
  its mask.
"""

from __future__ import annotations

import types

import mpmath
import numpy as np
import pytest
import sympy

from symbackprop import exact
from symbackprop.checkpoint import Probe, mask_rng, point, point_masks
from symbackprop.codegen import generate
from symbackprop.derive import derive
from symbackprop.graph import (
    LOSS,
    MEAN_LOSS,
    activation,
    at_sample,
    build,
    norm_mean,
    pre_activation,
    split_sample,
)
from symbackprop.spec import IMAGE_KINDS, KINDS, from_dict
from symbackprop.verify import (
    _compare,
    _floor,
    certify,
    finite_differences,
    module_rng,
    pytorch_gradients,
)

torch = pytest.importorskip("torch")

# the kinds of flat (vector) networks: the image kinds need an image input and their own
# generator (tests/test_certificate_conv.py); drawing from these six keeps the networks of
# every seed what they were before the image kinds existed
FLAT_KINDS = tuple(kind for kind in KINDS if kind not in IMAGE_KINDS)

AGREEMENT = 1e-10  # exact vs PyTorch, normwise per array
# An array whose exact gradient is 0 or nearly (a bias just before batch norm; a layer
# norm's gamma and beta just before one, which only eps lets through) is judged against the
# size of the whole gradient: float64 leaves rounding of ~1e-16 of that size in it.
RESOLUTION = 1e-4

HIDDEN = [
    "relu",
    "tanh",
    "sigmoid",
    "softplus",
    "elu",
    "gelu",
    "silu",
    "leaky_relu",
    "identity",
    {"name": "leaky_relu", "slope": 0.2},
    {"name": "elu", "alpha": 0.5},
    {"name": "x_tanh", "expr": "x*tanh(x)"},
]
OUTPUTS = [
    ("softmax", "cross_entropy"),
    ("sigmoid", "binary_cross_entropy"),
    ("identity", "mse"),
    ("tanh", "mse"),
]


# --- random mixed networks -------------------------------------------------------------------


def _block(rng: np.random.Generator, width: int, budget: int, fixed: bool) -> tuple[list, int, int]:
    """Up to ``budget`` flat layers; widths stay ``width`` when ``fixed`` (a residual block)."""
    items, used = [], 0
    while used < budget:
        kind = FLAT_KINDS[rng.integers(len(FLAT_KINDS))]
        if kind == "residual" and budget - used < 2:
            kind = "dense"
        if kind == "dense":
            units = width if fixed else int(rng.integers(2, 5))
            act = HIDDEN[rng.integers(len(HIDDEN))]
            items.append({"units": units, "activation": act, "bias": bool(rng.random() < 0.8)})
            width, used = units, used + 1
        elif kind == "dropout":
            items.append({"kind": "dropout", "rate": float(rng.choice([0.0, 0.25, 0.5]))})
            used += 1
        elif kind == "residual":
            inner, _, n = _block(
                rng, width, int(rng.integers(1, min(3, budget - used - 1) + 1)), True
            )
            items.append({"kind": "residual", "block": inner})
            used += 1 + n
        else:
            items.append({"kind": kind})
            used += 1
        if fixed and rng.random() < 0.4:
            break
    return items, width, used


def random_spec(seed: int) -> object:
    """A network of at most 8 flat layers mixing every kind, widths 2-4, batch-norm safe."""
    rng = np.random.default_rng(seed)
    inputs = int(rng.integers(2, 4))
    depth = int(rng.integers(2, 9))
    hidden, width, used = _block(rng, inputs, depth - 1, False)
    if rng.random() < 0.2:  # the output is a normalization, a dropout or a residual's
        loss, layers = "mse", hidden
        if not layers:
            layers = [{"kind": "layer_norm"}]
    else:
        out, loss = OUTPUTS[rng.integers(len(OUTPUTS))]
        units = int(rng.integers(2, 4)) if out == "softmax" else int(rng.integers(1, 3))
        layers = [*hidden, {"units": units, "activation": out}]
    l2 = float(rng.choice([0.0, 0.01]))
    return from_dict(
        {"name": f"mixed{seed}", "inputs": inputs, "loss": loss, "l2": l2, "layers": layers}
    )


FAST = list(range(8))
GRID = list(range(8, 60))


def _kinds(seeds: list[int]) -> set[str]:
    return {layer.kind for s in seeds for layer in random_spec(s).flat}


def test_the_networks_mix_every_kind_and_reach_depth_8() -> None:
    assert _kinds(FAST) == set(FLAT_KINDS)
    assert _kinds(GRID) == set(FLAT_KINDS)
    assert len(FLAT_KINDS) == 6 and not set(FLAT_KINDS) & set(IMAGE_KINDS)
    depths = [len(random_spec(s).flat) for s in FAST + GRID]
    assert max(depths) == 8 and min(depths) >= 1
    assert any(build(random_spec(s)).couples_batch for s in FAST)
    assert any(build(random_spec(s)).dropout_layers for s in FAST)


def _normwise(got: dict, reference: dict) -> float:
    """max over arrays of max |g - r| / max(max |r|, RESOLUTION x the largest of all)."""
    overall = max(float(np.abs(r).max(initial=0.0)) for r in reference.values())
    worst = 0.0
    for key, r in reference.items():
        scale = max(float(np.abs(r).max(initial=0.0)), RESOLUTION * overall, 1e-300)
        worst = max(worst, float(np.abs(got[key] - r).max(initial=0.0)) / scale)
    return worst


def exact_vs_pytorch(seed: int, batch: int = 4) -> float:
    net = build(random_spec(seed))
    params, X, Y = point(net, batch, seed)
    masks = point_masks(net, seed, batch)
    ex = exact.evaluate(net, params, X, Y, masks)
    pt = pytorch_gradients(net, params, X, Y, masks)
    assert set(ex.gradients) == set(pt) == set(net.spec.parameters)
    return _normwise(pt, ex.gradients)


@pytest.mark.parametrize("seed", FAST)
def test_exact_and_pytorch_agree_on_mixed_networks(seed: int) -> None:
    assert exact_vs_pytorch(seed) <= AGREEMENT, random_spec(seed)


@pytest.mark.slow
def test_exact_and_pytorch_agree_on_the_grid(capsys) -> None:
    errors = {seed: exact_vs_pytorch(seed) for seed in GRID}
    worst = max(errors, key=errors.get)
    with capsys.disabled():
        print(f"\nexact vs pytorch on {len(GRID)} mixed networks: worst {errors[worst]:.2e}")
    assert errors[worst] <= AGREEMENT, random_spec(worst)


# --- an independent forward pass, in mpmath --------------------------------------------------

MP_ACTIVATIONS = {
    "identity": lambda v: v,
    "relu": lambda v: v if v > 0 else mpmath.mpf(0),
    "tanh": mpmath.tanh,
    "sigmoid": lambda v: 1 / (1 + mpmath.exp(-v)),
    "softplus": lambda v: mpmath.log(1 + mpmath.exp(v)),
    "gelu": lambda v: v / 2 * (1 + mpmath.erf(v / mpmath.sqrt(2))),
    "silu": lambda v: v / (1 + mpmath.exp(-v)),
}


def _mp_activation(spec_activation) -> object:
    name, params = spec_activation.name, dict(spec_activation.params)
    if name == "leaky_relu":
        slope = mpmath.mpf(params.get("slope", 0.01))
        return lambda v: v if v > 0 else slope * v
    if name == "elu":
        alpha = mpmath.mpf(params.get("alpha", 1.0))
        return lambda v: v if v > 0 else alpha * (mpmath.exp(v) - 1)
    return MP_ACTIVATIONS[name]


def mp_loss(spec, params: dict, X: list, Y: list, masks: dict) -> mpmath.mpf:
    """The training-mode mean loss, written from DESIGN §2b with lists of mpf."""
    batch = len(X)
    out: dict[int, list[list]] = {0: X}
    for index in spec.order:
        layer = spec.flat[index - 1]
        A = out[layer.sources[0]]
        n = layer.units
        if layer.kind == "dense":
            W = params[f"W{index}"]
            b = params.get(f"b{index}")
            Z = [
                [mpmath.fsum(W[i][j] * a[j] for j in range(len(a))) + (b[i] if b else 0)
                 for i in range(n)]
                for a in A
            ]  # fmt: skip
            if layer.layer.activation.name == "softmax":
                rows = []
                for z in Z:
                    top = max(z)
                    e = [mpmath.exp(v - top) for v in z]
                    rows.append([v / mpmath.fsum(e) for v in e])
                out[index] = rows
            else:
                f = _mp_activation(layer.layer.activation)
                out[index] = [[f(v) for v in z] for z in Z]
            out[("z", index)] = Z
        elif layer.kind in ("layer_norm", "batch_norm"):
            g, be, eps = params[f"gamma{index}"], params[f"beta{index}"], layer.layer.eps
            if layer.kind == "layer_norm":
                groups = [[(s, i) for i in range(n)] for s in range(batch)]
            else:
                groups = [[(s, i) for s in range(batch)] for i in range(n)]
            rows = [[None] * n for _ in range(batch)]
            for group in groups:
                values = [A[s][i] for s, i in group]
                mu = mpmath.fsum(values) / len(values)
                var = mpmath.fsum((v - mu) ** 2 for v in values) / len(values)
                for (s, i), v in zip(group, values, strict=True):
                    rows[s][i] = g[i] * (v - mu) / mpmath.sqrt(var + mpmath.mpf(eps)) + be[i]
            out[index] = rows
        elif layer.kind == "dropout":
            rate = layer.layer.rate
            if rate == 0:
                out[index] = A
            else:
                keep = masks[index]
                scale = 1 / (1 - mpmath.mpf(rate))
                out[index] = [
                    [v * scale if keep[s][i] else mpmath.mpf(0) for i, v in enumerate(a)]
                    for s, a in enumerate(A)
                ]
        else:
            B = out[layer.sources[1]]
            out[index] = [
                [u + v for u, v in zip(a, c, strict=True)] for a, c in zip(A, B, strict=True)
            ]
    yhat = out[spec.output_layer.index]
    total = mpmath.mpf(0)
    for p, y in zip(yhat, Y, strict=True):
        if spec.loss.name == "mse":
            total += mpmath.fsum((u - v) ** 2 for u, v in zip(p, y, strict=True)) / 2
        elif spec.loss.name == "cross_entropy":
            total -= mpmath.fsum(v * mpmath.log(u) for u, v in zip(p, y, strict=True))
        else:
            total -= mpmath.fsum(
                v * mpmath.log(u) + (1 - v) * mpmath.log(1 - u) for u, v in zip(p, y, strict=True)
            )
    penalty = 0
    if spec.l2:
        penalty = (
            mpmath.mpf(spec.l2)
            / 2
            * mpmath.fsum(
                w**2
                for layer in spec.flat
                if layer.kind == "dense"
                for row in params[f"W{layer.index}"]
                for w in row
            )
        )
    return total / batch + penalty


def _mp(value):
    """Nested lists of mpf from an array (exact: a float is a binary fraction)."""
    if np.ndim(value):
        return [_mp(v) for v in value]
    return mpmath.mpf(float(value))


def mp_point(params: dict, X: np.ndarray, Y: np.ndarray, masks: dict) -> tuple:
    mp = {k: _mp(v) for k, v in params.items()}
    return mp, _mp(X), _mp(Y), {k: np.asarray(m).tolist() for k, m in masks.items()}


def mp_gradients(spec, params: dict, X: np.ndarray, Y: np.ndarray, masks: dict) -> dict:
    """Central differences of ``mp_loss`` in 50 digits (step 1e-20: error ~1e-40)."""
    with mpmath.workdps(50):
        mp, Xm, Ym, keep = mp_point(params, X, Y, masks)
        h = mpmath.mpf(10) ** -20
        grads = {}
        for key in spec.parameters:
            array = mp[key]
            if np.ndim(params[key]) == 2:
                cells = [(array[i], j) for i in range(len(array)) for j in range(len(array[0]))]
            else:
                cells = [(array, i) for i in range(len(array))]
            column = []
            for row, slot in cells:
                original = row[slot]
                row[slot] = original + h
                up = mp_loss(spec, mp, Xm, Ym, keep)
                row[slot] = original - h
                down = mp_loss(spec, mp, Xm, Ym, keep)
                row[slot] = original
                column.append(float((up - down) / (2 * h)))
            grads[key] = np.array(column).reshape(np.shape(params[key]))
        return grads


BATCH_NORM_NET = {
    "name": "bn",
    "inputs": 3,
    "loss": "cross_entropy",
    "l2": 0.01,
    "layers": [
        {"units": 4, "activation": "tanh"},
        {"kind": "batch_norm"},
        {"units": 3, "activation": "relu"},
        {"kind": "batch_norm", "eps": 1e-3},
        {"units": 3, "activation": "softmax"},
    ],
}
EVERY_KIND_NET = {
    "name": "every",
    "inputs": 3,
    "loss": "mse",
    "layers": [
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
}


@pytest.mark.parametrize("data", [BATCH_NORM_NET, EVERY_KIND_NET], ids=["batch_norm", "every"])
def test_the_exact_graph_matches_finite_differences_of_an_independent_forward(data) -> None:
    spec = from_dict(data)
    net = build(spec)
    assert net.couples_batch
    params, X, Y = point(net, 5, 3)
    masks = point_masks(net, 3, 5)
    ex = exact.evaluate(net, params, X, Y, masks)
    reference = mp_gradients(spec, params, X, Y, masks)
    with mpmath.workdps(50):
        value = mp_loss(spec, *mp_point(params, X, Y, masks))
    assert ex.loss == pytest.approx(float(value), rel=1e-14)
    for key in spec.parameters:
        np.testing.assert_allclose(ex.gradients[key], reference[key], rtol=1e-12, atol=1e-15)


# --- the batch graph ---------------------------------------------------------------------------


def test_a_batch_norm_graph_is_the_whole_batch_as_one_function() -> None:
    net = build(from_dict(BATCH_NORM_NET))
    with pytest.raises(ValueError, match="batch_graph"):
        net.neuron_graph  # noqa: B018 - the property raises
    nodes = net.batch_graph(3)
    assert nodes[-1].symbol == MEAN_LOSS and nodes[-1].kind == "mean_loss"
    assert nodes[-1].expr.free_symbols == {at_sample(LOSS, s) for s in (1, 2, 3)}
    mu = next(n for n in nodes if n.symbol == norm_mean(2, 1))
    assert mu.sample is None
    assert mu.expr.free_symbols == {at_sample(activation(1, 1), s) for s in (1, 2, 3)}
    z = next(n for n in nodes if n.symbol == at_sample(pre_activation(3, 2), 2))
    assert {split_sample(s)[1] for s in z.expr.free_symbols} == {2, None}


def test_the_exact_values_and_adjoints_are_those_of_an_independent_forward_and_torch() -> None:
    for data in (EVERY_KIND_NET, {**EVERY_KIND_NET, "layers": EVERY_KIND_NET["layers"][:2]}):
        net = build(from_dict(data))
        params, X, Y = point(net, 4, 1)
        masks = point_masks(net, 1, 4)
        ex = exact.evaluate(net, params, X, Y, masks)
        run = Probe(net).forward(params, X, masks)
        for layer in net.flat:
            got = [[float(ex.values[s][activation(layer.index, i + 1)]) for i in range(layer.units)]
                   for s in range(4)]  # fmt: skip
            np.testing.assert_allclose(got, run.outputs[layer.index], rtol=1e-12, atol=1e-14)
        # the adjoint of an input entry: d(sum of losses)/dx, as torch's X.grad times B
        Xt = torch.tensor(X, requires_grad=True)
        tensors = {k: torch.tensor(v) for k, v in params.items()}
        keep = {k: torch.tensor(m, dtype=torch.float64) for k, m in masks.items()}
        from symbackprop import layers as kinds

        outs = {0: Xt}
        for index in net.spec.order:
            layer = net.flat[index - 1]
            act = net.activations[index - 1]
            fn = {"leaky_relu(slope=0.2)": lambda v: torch.nn.functional.leaky_relu(v, 0.2),
                  "gelu": torch.nn.functional.gelu, "sigmoid": torch.sigmoid}.get(
                act.name if act else "")  # fmt: skip
            outs[index] = kinds.torch_forward(
                layer, torch, tensors, [outs[s] for s in layer.sources], activation=fn, masks=keep
            )
        p = outs[net.output_layer.index]
        (0.5 * ((p - torch.tensor(Y)) ** 2).sum()).backward()
        got = [[float(ex.adjoints[s][activation(0, j + 1)]) for j in range(3)] for s in range(4)]
        np.testing.assert_allclose(got, Xt.grad.numpy(), rtol=1e-10, atol=1e-14)
        value = 0.5 * ((p - torch.tensor(Y)) ** 2).sum().detach().item() / 4
        assert ex.loss == pytest.approx(value, rel=1e-12)


def test_the_exact_routine_needs_every_dropout_mask() -> None:
    net = build(from_dict(EVERY_KIND_NET))
    params, X, Y = point(net, 4, 0)
    with pytest.raises(ValueError, match=r"layers\[1\]\.block\[2\]: dropout with rate 0.4"):
        exact.evaluate(net, params, X, Y)
    with pytest.raises(ValueError, match="expected"):
        exact.evaluate(net, params, X, Y, point_masks(net, 0, 3))


def test_plain_dense_graphs_carry_no_sample_and_end_with_the_sample_loss() -> None:
    layers = [{"units": 2, "activation": "tanh"}, {"units": 1}]
    net = build(from_dict({"name": "p", "inputs": 2, "loss": "mse", "layers": layers}))
    nodes = net.neuron_graph
    assert all(n.sample is None for n in nodes)
    assert [n.kind for n in nodes] == ["z", "z", "a", "a", "z", "a", "loss"]
    assert nodes[-1].symbol == LOSS
    assert net.graph(4) is nodes


# --- the witnesses refuse wrong gradients -----------------------------------------------------


def middle_spec(kind: str) -> object:
    middle = {"kind": kind, "rate": 0.3} if kind == "dropout" else {"kind": kind}
    return from_dict(
        {
            "name": f"mid_{kind}",
            "inputs": 3,
            "loss": "cross_entropy",
            "layers": [
                {"units": 4, "activation": "tanh"},
                middle,
                {"units": 2, "activation": "softmax"},
            ],
        }
    )


def _forward(params: dict, X: np.ndarray, kind: str, keep: np.ndarray | None) -> tuple:
    Z1 = X @ params["W1"].T + params["b1"]
    A1 = np.tanh(Z1)
    if kind == "dropout":
        A2, cache = A1 * keep / 0.7, None
    else:
        axis = 1 if kind == "layer_norm" else 0
        mu = A1.mean(axis=axis, keepdims=True)
        sigma = np.sqrt(((A1 - mu) ** 2).mean(axis=axis, keepdims=True) + 1e-5)
        xhat = (A1 - mu) / sigma
        A2, cache = params["gamma2"] * xhat + params["beta2"], (xhat, sigma, axis)
    Z3 = A2 @ params["W3"].T + params["b3"]
    P = np.exp(Z3 - Z3.max(axis=1, keepdims=True))
    return A1, A2, P / P.sum(axis=1, keepdims=True), cache


def hand_written(params: dict, X, Y, kind: str, keep, wrong: bool) -> tuple[float, dict]:
    """The three-layer network's backward pass, by hand; ``wrong`` drops the kind's term."""
    A1, A2, P, cache = _forward(params, X, kind, keep)
    batch = len(X)
    loss = float(-(Y * np.log(P)).sum() / batch)
    dZ3 = (P - Y) / batch
    grads = {"W3": dZ3.T @ A2, "b3": dZ3.sum(0)}
    dA2 = dZ3 @ params["W3"]
    if kind == "dropout":
        dA1 = dA2 / 0.7 if wrong else dA2 * keep / 0.7  # wrong: the mask forgotten
    else:
        xhat, sigma, axis = cache
        grads["gamma2"] = (dA2 * xhat).sum(0)
        grads["beta2"] = dA2.sum(0)
        g = dA2 * params["gamma2"]
        if wrong and kind == "layer_norm":  # the mean term missing
            dA1 = (g - xhat * (g * xhat).mean(axis=axis, keepdims=True)) / sigma
        elif wrong:  # batch statistics treated as constants
            dA1 = g / sigma
        else:
            dA1 = (
                g
                - g.mean(axis=axis, keepdims=True)
                - xhat * (g * xhat).mean(axis=axis, keepdims=True)
            ) / sigma
    dZ1 = dA1 * (1 - A1**2)
    grads.update({"W1": dZ1.T @ X, "b1": dZ1.sum(0)})
    return loss, grads


@pytest.mark.parametrize("kind", ["layer_norm", "batch_norm", "dropout"])
def test_every_witness_refuses_a_wrong_gradient_of_each_kind(kind: str) -> None:
    spec = middle_spec(kind)
    net = build(spec)
    seed, batch = 2, 6
    params, X, Y = point(net, batch, seed)
    masks = point_masks(net, seed, batch)
    keep = masks.get(2)
    if kind == "dropout":
        assert keep is not None and not keep.all()

    def loss(p, X_, Y_, rng=None):
        mask = None
        if kind == "dropout":  # the module's rule: drawn from rng
            mask = rng.random((len(X_), 4)) >= 0.3
        return hand_written(p, X_, Y_, kind, mask, False)[0]

    module = types.SimpleNamespace(loss=loss)
    probe = Probe(net)
    scales = probe.input_scales(params, X, masks)
    references = {
        "exact": exact.evaluate(net, params, X, Y, masks).gradients,
        "pytorch": pytorch_gradients(net, params, X, Y, masks),
    }
    differences = finite_differences(module, params, X, Y, seed, net=net, probe=probe)
    for wrong in (False, True):
        value, grads = hand_written(params, X, Y, kind, keep, wrong)
        verdicts = {}
        for witness, reference in references.items():
            results = [
                _compare(witness, grads[k], reference[k], _floor(k, value, scales))
                for k in ("W1", "b1")
            ]
            verdicts[witness] = all(r.passed for r in results)
        results = []
        for k in ("W1", "b1"):
            d = differences[k]
            got = grads[k].reshape(-1)[d.indices]
            results.append(
                _compare("finite-diff", got, d.values, _floor(k, value, scales), d.noise)
            )
        verdicts["finite-diff"] = all(r.passed for r in results)
        expected = not wrong
        assert verdicts == dict.fromkeys(verdicts, expected), (kind, wrong, verdicts)
        # the right gradient passes everywhere, not only where the wrong one differs
        if not wrong:
            for witness, reference in references.items():
                for k in spec.parameters:
                    floor = _floor(k, value, scales)
                    assert _compare(witness, grads[k], reference[k], floor).passed, (witness, k)


def test_module_calls_get_a_fresh_generator_in_the_same_state() -> None:
    net = build(middle_spec("dropout"))
    first, second = module_rng(net, 5)["rng"], module_rng(net, 5)["rng"]
    assert first is not second
    assert np.array_equal(first.random(4), second.random(4))
    draws = point_masks(net, 5, 3)
    assert np.array_equal(draws[2], mask_rng(5).random((3, 4)) >= 0.3)
    assert module_rng(build(middle_spec("layer_norm")), 5) == {}


def test_symbols_of_a_sample_round_trip() -> None:
    x = activation(0, 2)
    assert split_sample(at_sample(x, 3)) == (x, 3)
    assert split_sample(x) == (x, None)
    assert at_sample(x, None) is x
    assert isinstance(at_sample(x, 1), sympy.Symbol)


# --- the generated module: wrong backward rules fail, and certify passes on the grid -----------


def _edited(source: str, old: str, new: str) -> str:
    """The generated source with one statement of a backward rule changed."""
    if source.count(old) != 1:
        raise ValueError(f"{old!r} is not one line of the generated module")
    return source.replace(old, new)


WRONG_RULES = {
    # the mean term of layer norm's dL/dx dropped
    "layer_norm": ("numpy.subtract(T2, S2, out=T2)", "pass"),
    # batch norm's batch-mean term dropped
    "batch_norm": ("numpy.subtract(T2, S2, out=T2)", "pass"),
    # dropout's error scaled but not masked
    "dropout": (
        'numpy.multiply(dA2, ws["M2"], out=ws["dZ1"])',
        'numpy.multiply(dA2, 1 / 0.7, out=ws["dZ1"])',
    ),
}


@pytest.mark.parametrize("kind", sorted(WRONG_RULES))
def test_certify_fails_a_module_with_a_wrong_backward_rule(kind: str) -> None:
    spec = middle_spec(kind)
    d = derive(spec)
    source = generate(d)
    right = certify(d, module_source=source, seed=2, batch=6)
    assert right.passed, right.table()
    wrong = certify(d, module_source=_edited(source, *WRONG_RULES[kind]), seed=2, batch=6)
    assert not wrong.passed
    failed = {r.witness for p in wrong.parameters if p.name in ("W1", "b1") for r in p.failures()}
    assert failed == {"finite-diff", "exact", "pytorch"}, wrong.table()
    # the layers after the wrong rule are unaffected and still agree
    assert all(p.passed for p in wrong.parameters if p.name in ("W3", "b3")), wrong.table()


def _certified(seeds: list[int]) -> dict[int, object]:
    """Each network's certificate, or the message of what it raised (a failure too)."""
    out = {}
    for seed in seeds:
        try:
            out[seed] = certify(random_spec(seed))
        except Exception as error:  # noqa: BLE001 - reported with the others below
            out[seed] = f"mixed{seed}: {type(error).__name__}: {error}"
    return out


@pytest.mark.parametrize("seed", FAST)
def test_certify_passes_on_mixed_networks_with_all_three_witnesses(seed: int) -> None:
    certificate = certify(random_spec(seed))
    assert certificate.witnesses == ("finite-diff", "exact", "pytorch")
    assert certificate.passed, certificate.table()


@pytest.mark.slow
def test_certify_passes_on_the_grid_of_mixed_networks(capsys) -> None:
    results = _certified(FAST + GRID)
    certificates = {s: c for s, c in results.items() if not isinstance(c, str)}
    failed = [c if isinstance(c, str) else c.table() for c in results.values()
              if isinstance(c, str) or not c.passed]  # fmt: skip
    worst = {}
    for witness in ("finite-diff", "exact", "pytorch"):
        values = {s: c.max_rel(witness) for s, c in certificates.items() if witness in c.witnesses}
        seed = max(values, key=values.get)
        worst[witness] = (values[seed], seed, len(values))
    with capsys.disabled():
        print(f"\ncertify on {len(results)} mixed networks (every kind, depth <= 8):")
        for witness, (value, seed, count) in worst.items():
            print(f"  {witness:<12} worst max rel err {value:.2e} (mixed{seed}, {count} networks)")
        print(f"  failed: {len(failed)}")
    assert len(results) >= 50 and not failed, "\n\n".join(failed)
    assert all(count == len(results) for _, _, count in worst.values())


def test_a_bias_before_batch_norm_has_gradient_zero_and_is_judged_by_its_terms() -> None:
    layers = [
        {"units": 4, "activation": "identity"},
        {"kind": "batch_norm"},
        {"units": 4, "activation": "tanh"},
        {"units": 4, "activation": "identity"},
        {"kind": "batch_norm"},
        {"units": 3, "activation": "softmax"},
    ]
    spec = from_dict({"name": "bias_bn", "inputs": 3, "loss": "cross_entropy", "layers": layers})
    d = derive(spec)
    net = d.network
    params, X, Y = point(net, 8, 0)
    exact_b = exact.evaluate(net, params, X, Y).gradients
    for key in ("b1", "b4"):  # batch norm removes any shift of its input
        assert np.abs(exact_b[key]).max() < 1e-30
    source = generate(d)
    assert certify(d, module_source=source, batch=8).passed
    # a gradient there of a size float64 resolves is still wrong
    bug = (
        source
        + "\n\n_right = gradients\n\n\n"
        + "def gradients(params, X, Y, rng=None):\n"
        + "    value, grads = _right(params, X, Y, rng)\n"
        + "    grads = dict(grads, b4=grads['b4'] + 1e-6 * abs(grads['W4']).max())\n"
        + "    return value, grads\n"
    )
    wrong = certify(d, module_source=bug, batch=8)
    assert {r.witness for p in wrong.parameters if p.name == "b4" for r in p.failures()} == {
        "finite-diff",
        "exact",
        "pytorch",
    }, wrong.table()


def test_the_exact_routine_gives_the_worked_example_its_numbers() -> None:
    """At batch 1, ``exact.evaluate`` holds every value and adjoint the document shows."""
    from symbackprop.render import worked_example
    from symbackprop.spec import load_spec

    d = derive(load_spec("seed_mlp"))
    shown = worked_example(d)
    result = exact.evaluate(d.network, shown.params, shown.x[None], shown.y[None])
    assert result.loss == shown.loss
    for key, g in shown.gradients.items():
        np.testing.assert_array_equal(result.gradients[key], g)
    (values,), (adjoints,) = result.values, result.adjoints
    for symbol, value in shown.values.items():
        assert abs(values[symbol] - value) <= 1e-35 * max(1, abs(value)), symbol
    for symbol, value in shown.adjoints.items():
        mine = adjoints.get(symbol, result.shared.get(symbol))
        assert abs(mine - value) <= 1e-35 * max(1, abs(value)), symbol


def test_a_first_dropout_layer_with_an_elementwise_loss_is_certified() -> None:
    """Dropout layer 1 draws its uniforms into a buffer; so may an unfused loss's temporaries.

    The module must keep the two apart (mixed7 and mixed15 of the grid are such networks).
    """
    layers = [{"kind": "dropout", "rate": 0.5}, {"units": 2, "activation": "tanh"}]
    spec = from_dict({"name": "drop_first", "inputs": 3, "loss": "mse", "layers": layers})
    certificate = certify(spec)
    assert certificate.passed, certificate.table()
