"""The generated module for every layer kind (DESIGN §2b) against torch.nn built by hand.

The reference network is made of torch.nn modules (Linear + activation, LayerNorm,
BatchNorm1d, a residual wrapper, dropout given the module's own masks), with the generated
module's parameters copied in; nothing here uses symbackprop's own PyTorch witness.
"""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

from symbackprop.checkpoint import load_module
from symbackprop.codegen import generate
from symbackprop.layers import draw_masks
from symbackprop.spec import from_dict

torch = pytest.importorskip("torch")
nn = torch.nn

MIXED = [
    {"units": 6, "activation": {"name": "leaky_relu", "slope": 0.2}},
    {
        "kind": "residual",
        "block": [{"units": 6, "activation": "tanh"}, {"kind": "layer_norm", "eps": 1e-3}],
    },
    {"kind": "dropout", "rate": 0.3},
    {"kind": "batch_norm", "momentum": 0.2},
    {"units": 6, "activation": "elu", "bias": False},
    {"kind": "residual", "block": [{"kind": "residual", "block": [{"kind": "layer_norm"}]}]},
    {"units": 3, "activation": "softmax"},
]


def spec_for(layers, loss="cross_entropy", inputs=5, l2=0.0):
    return from_dict({"name": "kinds", "inputs": inputs, "loss": loss, "l2": l2, "layers": layers})


@pytest.fixture(scope="module")
def mixed():
    spec = spec_for(MIXED)
    return spec, load_module(generate(spec))


def _activation(spec_fn):
    name = spec_fn if isinstance(spec_fn, str) else spec_fn["name"]
    if name == "leaky_relu":
        return nn.LeakyReLU(spec_fn.get("slope", 0.01) if isinstance(spec_fn, dict) else 0.01)
    return {
        "relu": nn.ReLU(),
        "tanh": nn.Tanh(),
        "elu": nn.ELU(),
        "sigmoid": nn.Sigmoid(),
        "identity": nn.Identity(),
        "softmax": nn.Identity(),  # the loss takes logits
    }[name]


class Residual(nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return x + self.block(x)


class Masked(nn.Module):
    """Dropout with the generated module's masks (keep / (1 - rate))."""

    def __init__(self, index, rate, masks):
        super().__init__()
        self.index, self.rate, self.masks = index, rate, masks

    def forward(self, x):
        if not self.training or self.rate == 0:
            return x
        return x * torch.tensor(self.masks[self.index]) / (1 - self.rate)


def torch_net(layers, params, masks, width, counter=None):
    """nn.Sequential of the spec's layers with params copied in (numbering as DESIGN §2b)."""
    counter = counter if counter is not None else [0]
    modules = []
    for layer in layers:
        counter[0] += 1
        index = counter[0]
        kind = layer.get("kind", "dense")
        if kind == "dense":
            linear = nn.Linear(width, layer["units"], bias=layer.get("bias", True)).double()
            with torch.no_grad():
                linear.weight.copy_(torch.tensor(params[f"W{index}"]))
                if layer.get("bias", True):
                    linear.bias.copy_(torch.tensor(params[f"b{index}"]))
            modules += [linear, _activation(layer.get("activation", "identity"))]
            width = layer["units"]
        elif kind in ("layer_norm", "batch_norm"):
            eps = layer.get("eps", 1e-5)
            if kind == "layer_norm":
                norm = nn.LayerNorm(width, eps=eps).double()
            else:
                norm = nn.BatchNorm1d(width, eps=eps, momentum=layer.get("momentum", 0.1))
                norm = norm.double()
                with torch.no_grad():
                    norm.running_mean.copy_(torch.tensor(params[f"mean{index}"]))
                    norm.running_var.copy_(torch.tensor(params[f"var{index}"]))
            with torch.no_grad():
                norm.weight.copy_(torch.tensor(params[f"gamma{index}"]))
                norm.bias.copy_(torch.tensor(params[f"beta{index}"]))
            modules.append(norm)
        elif kind == "dropout":
            modules.append(Masked(index, layer["rate"], masks))
        else:
            modules.append(Residual(torch_net(layer["block"], params, masks, width, counter)))
    return nn.Sequential(*modules)


def point(spec, module, batch=9, seed=0):
    rng = np.random.default_rng(seed)
    params = module.init_params(seed=seed)
    for key, value in params.items():
        if key.startswith(("b", "beta")):
            value[...] = rng.normal(0, 0.5, value.shape)
        elif key.startswith("gamma"):
            value[...] = 1 + rng.normal(0, 0.3, value.shape)
        elif key.startswith("mean"):
            value[...] = rng.normal(0, 0.3, value.shape)
        elif key.startswith("var"):
            value[...] = rng.uniform(0.5, 2.0, value.shape)
    X = rng.normal(size=(batch, spec.inputs))
    labels = rng.integers(0, spec.sizes[-1], size=batch)
    return params, X, labels


def reference(spec, layers, params, X, labels, seed, train=True):
    masks = draw_masks(spec.flat, spec.order, np.random.default_rng(seed), len(X))
    net = torch_net(layers, params, masks, spec.inputs)
    net.train(train)
    logits = net(torch.tensor(X))
    value = nn.functional.cross_entropy(logits, torch.tensor(labels))
    return net, logits, value


def test_gradients_equal_torch_nn(mixed):
    spec, module = mixed
    params, X, labels = point(spec, module)
    value, grads = module.gradients(params, X, labels, rng=np.random.default_rng(7))
    net, _, expected = reference(spec, MIXED, params, X, labels, 7)
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-13)
    torch_grads = [p.grad.numpy() for p in net.parameters()]
    assert list(grads) == list(module.PARAMETERS)
    assert len(torch_grads) == len(grads)
    for (key, got), want in zip(grads.items(), torch_grads, strict=True):
        assert got.shape == want.shape == module.PARAMETERS[key]
        scale = max(np.abs(want).max(), 1e-300)
        assert np.abs(got - want).max() <= 1e-12 * scale, key


def test_parameters_are_in_torch_order(mixed):
    spec, module = mixed
    params, *_ = point(spec, module)
    net = torch_net(MIXED, params, {}, spec.inputs)
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == list(module.PARAMETERS.values())
    assert set(params) == set(module.PARAMETERS) | {"mean6", "var6"}


def test_forward_is_inference_mode(mixed):
    spec, module = mixed
    params, X, labels = point(spec, module)
    _, logits, _ = reference(spec, MIXED, params, X, labels, 0, train=False)
    probabilities = torch.softmax(logits, dim=1).detach().numpy()
    got = module.forward(params, X)
    assert np.abs(got - probabilities).max() <= 1e-13
    assert np.array_equal(module.predict(params, X), probabilities.argmax(axis=1))
    inference = module.loss(params, X, labels, train=False)
    expected = nn.functional.cross_entropy(logits, torch.tensor(labels)).item()
    assert inference == pytest.approx(expected, rel=1e-13)


def test_train_step_updates_running_statistics_as_torch(mixed):
    spec, module = mixed
    params, X, labels = point(spec, module)
    net, _, value = reference(spec, MIXED, params, X, labels, 3)
    before = {k: v.copy() for k, v in params.items()}
    got = module.train_step(params, X, labels, 0.1, rng=np.random.default_rng(3))
    assert got == pytest.approx(value.item(), rel=1e-13)
    value.backward()
    with torch.no_grad():
        for p in net.parameters():
            p -= 0.1 * p.grad
    torch_params = [p.detach().numpy() for p in net.parameters()]
    for key, want in zip(module.PARAMETERS, torch_params, strict=True):
        assert np.abs(params[key] - want).max() <= 1e-13 * max(1, np.abs(want).max()), key
    norm = next(m for m in net.modules() if isinstance(m, nn.BatchNorm1d))
    assert np.abs(params["mean6"] - norm.running_mean.numpy()).max() <= 1e-14
    assert np.abs(params["var6"] - norm.running_var.numpy()).max() <= 1e-14
    assert not np.array_equal(params["var6"], before["var6"])


def test_loss_and_gradients_leave_the_state_alone(mixed):
    spec, module = mixed
    params, X, labels = point(spec, module)
    before = {k: v.copy() for k, v in params.items()}
    module.loss(params, X, labels, rng=np.random.default_rng(1))
    module.gradients(params, X, labels, rng=np.random.default_rng(1))
    module.forward(params, X)
    for key in params:
        assert np.array_equal(params[key], before[key]), key


def test_generators_in_the_same_state_draw_the_same_masks(mixed):
    spec, module = mixed
    params, X, labels = point(spec, module)
    one = module.loss(params, X, labels, rng=np.random.default_rng(11))
    two = module.loss(params, X, labels, rng=np.random.default_rng(11))
    other = module.loss(params, X, labels, rng=np.random.default_rng(12))
    assert one == two and one != other
    # so finite differences of loss check gradients (dropout and batch norm included)
    _, grads = module.gradients(params, X, labels, rng=np.random.default_rng(11))
    for key in ("W1", "gamma4", "beta6", "W7", "gamma10", "W11"):
        flat = params[key].reshape(-1)
        for index in (0, flat.size - 1):
            original, h = flat[index], 1e-6
            flat[index] = original + h
            up = module.loss(params, X, labels, rng=np.random.default_rng(11))
            flat[index] = original - h
            down = module.loss(params, X, labels, rng=np.random.default_rng(11))
            flat[index] = original
            estimate = (up - down) / (2 * h)
            exact = grads[key].reshape(-1)[index]
            assert abs(estimate - exact) <= 1e-7 * max(1.0, abs(exact)), key


def test_rng_is_optional_and_checked(mixed):
    spec, module = mixed
    params, X, labels = point(spec, module)
    assert np.isfinite(module.loss(params, X, labels))  # a fresh generator
    with pytest.raises(TypeError, match="rng"):
        module.loss(params, X, labels, rng=3)
    plain = load_module(generate(spec_for([{"units": 3, "activation": "softmax"}])))
    p = plain.init_params()
    assert plain.loss(p, X, labels, rng=None) == plain.loss(
        p, X, labels, rng=np.random.default_rng()
    )


def test_batch_norm_needs_two_samples(mixed):
    spec, module = mixed
    params, X, labels = point(spec, module)
    with pytest.raises(ValueError, match="batch norm"):
        module.gradients(params, X[:1], labels[:1])
    with pytest.raises(ValueError, match="batch norm"):
        module.fit(params, X, labels, epochs=1, batch_size=4, lr=0.1)  # 9 = 4 + 4 + 1
    module.forward(params, X[:1])  # inference is per sample
    module.fit(params, X, labels, epochs=2, batch_size=3, lr=0.01, optimizer="adam")


def test_float32_agrees_with_float64(mixed):
    spec, module = mixed
    params, X, labels = point(spec, module)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    v64, g64 = module.gradients(params, X, labels, rng=np.random.default_rng(2))
    v32, g32 = module.gradients(p32, X, labels, rng=np.random.default_rng(2))
    assert v32 == pytest.approx(v64, rel=1e-5)
    for key in g64:
        assert g32[key].dtype == np.float32
        assert np.abs(g32[key] - g64[key]).max() <= 1e-4 * max(1, np.abs(g64[key]).max()), key


def _step_peak(module, spec, batch):
    params, X, labels = point(spec, module, batch=batch)
    rng = np.random.default_rng(0)
    module.train_step(params, X, labels, 0.01, rng=rng)  # the first step makes the buffers
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        module.train_step(params, X, labels, 0.01, rng=rng)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def test_no_allocation_per_step_after_warm_up():
    """As tests/test_allocations.py: only NumPy's fixed-size ufunc buffer (casting the dropout
    keep mask, broadcasting) may be taken, so new memory does not grow with the batch."""
    layers = [
        {"units": 128, "activation": "relu"},
        {
            "kind": "residual",
            "block": [{"units": 128, "activation": "relu"}, {"kind": "layer_norm"}],
        },
        {"kind": "dropout", "rate": 0.2},
        {"kind": "batch_norm"},
        {"units": 10, "activation": "softmax"},
    ]
    spec = spec_for(layers, inputs=32)
    module = load_module(generate(spec))
    small, large = _step_peak(module, spec, 512), _step_peak(module, spec, 2048)
    activation = 2048 * 128 * 8
    assert large - small < 4096, f"new memory grows with the batch: {small} -> {large} bytes"
    assert large < activation / 16, f"{large} bytes allocated during a step"


def test_threads_agree_with_serial_runs(mixed):
    spec, module = mixed
    params, X, labels = point(spec, module)
    serial = [module.gradients(params, X, labels, rng=np.random.default_rng(s)) for s in range(8)]
    results = [None] * 8

    def work(k):
        for _ in range(10):
            results[k] = module.gradients(params, X, labels, rng=np.random.default_rng(k))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (value, grads), (v, g) in zip(serial, results, strict=True):
        assert value == v
        assert all(np.array_equal(grads[k], g[k]) for k in grads)


@pytest.mark.parametrize(
    "layers, loss",
    [
        ([{"kind": "layer_norm"}, {"units": 2}], "mse"),
        ([{"units": 4, "activation": "tanh"}, {"kind": "dropout", "rate": 0.0}], "mse"),
        ([{"kind": "residual", "block": [{"units": 5, "activation": "sigmoid"}]}], "mse"),
        (
            [
                {"units": 4, "activation": "relu"},
                {"kind": "batch_norm"},
                {"units": 1, "activation": "sigmoid"},
            ],
            "binary_cross_entropy",
        ),
    ],
)
def test_other_outputs_and_losses(layers, loss):
    spec = spec_for(layers, loss=loss)
    module = load_module(generate(spec))
    rng = np.random.default_rng(4)
    params = module.init_params(seed=1)
    X = rng.normal(size=(6, 5))
    Y = rng.integers(0, 2, size=(6, spec.sizes[-1])).astype(float)
    _, grads = module.gradients(params, X, Y, rng=np.random.default_rng(5))
    for key in grads:
        flat = params[key].reshape(-1)
        original, h = flat[0], 1e-6
        flat[0] = original + h
        up = module.loss(params, X, Y, rng=np.random.default_rng(5))
        flat[0] = original - h
        down = module.loss(params, X, Y, rng=np.random.default_rng(5))
        flat[0] = original
        assert abs((up - down) / (2 * h) - grads[key].reshape(-1)[0]) <= 1e-7, key
