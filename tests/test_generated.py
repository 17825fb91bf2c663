"""Generated modules for a grid of networks, checked against independent witnesses.

Every module is generated from a spec, imported from its source text, and its gradients are
compared with central finite differences, SymPy's exact gradient (expanded composite or
neuron-level graph) and, when torch is importable, PyTorch autograd (CI installs torch)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from symbackprop.checkpoint import load_module
from symbackprop.codegen import generate
from symbackprop.functions import ACTIVATIONS
from symbackprop.graph import EXPANDED_LIMIT
from symbackprop.spec import from_dict
from symbackprop.verify import certify, torch_available

HIDDEN = [name for name, act in ACTIVATIONS.items() if not act.softmax]
OUTPUTS = [
    ("softmax", "cross_entropy"),
    ("sigmoid", "cross_entropy"),
    ("sigmoid", "binary_cross_entropy"),
    ("identity", "mse"),
    ("tanh", "mse"),
    ("sigmoid", "mse"),
    ("softmax", "mse"),
    ("identity", {"name": "logcosh", "expr": "log(cosh(yhat - y))"}),
    ("softmax", {"name": "focal_ish", "expr": "-y*(1-yhat)**2*log(yhat)"}),
    ("tanh", {"name": "l1", "expr": "abs(yhat - y)"}),
    ("sigmoid", {"name": "quartic", "expr": "(yhat - y)**4/4"}),
]
CUSTOM_ACTIVATIONS = [
    {"name": "swish", "expr": "x*sigmoid(x)"},
    {"name": "softsign", "expr": "x/(1+abs(x))"},
    {"name": "bent", "expr": "(sqrt(x**2+1)-1)/2 + x"},
    {"name": "leaky_max", "expr": "Max(0.1*x, x)"},
    {"name": "gauss", "expr": "exp(-x**2)"},
    {"name": "mish", "expr": "x*tanh(softplus(x))"},
    {"name": "shifted_softplus", "expr": "softplus(x) - log(2)"},
    {"name": "clipped", "expr": "Min(x, 1) + abs(x)/10"},
]


def spec(
    hidden: list,
    output: str,
    loss: object,
    inputs: int = 3,
    units: int = 3,
    outputs: int = 2,
    l2: float = 0.0,
) -> object:
    layers = [{"units": units, "activation": act} for act in hidden]
    layers.append({"units": outputs, "activation": output})
    return from_dict({"name": "net", "inputs": inputs, "loss": loss, "l2": l2, "layers": layers})


def assert_certified(network: object, **kwargs: object) -> None:
    certificate = certify(network, **kwargs)
    assert certificate.passed, certificate.table()
    assert "finite-diff" in certificate.witnesses and "exact" in certificate.witnesses
    if torch_available():
        assert "pytorch" in certificate.witnesses
    for check in certificate.parameters:
        for result in check.results:
            assert result.max_rel < 1e-6, (check.name, result)


def test_ci_has_the_torch_witness() -> None:
    if os.environ.get("CI"):
        assert torch_available(), "CI installs torch so that the PyTorch witness runs"


@pytest.mark.parametrize(
    "activation", HIDDEN + CUSTOM_ACTIVATIONS, ids=lambda a: a if isinstance(a, str) else a["name"]
)
def test_each_hidden_activation(activation: object) -> None:
    assert_certified(spec([activation], "softmax", "cross_entropy"))


@pytest.mark.parametrize(
    "output,loss", OUTPUTS, ids=lambda v: v if isinstance(v, str) else v["name"]
)
def test_each_output_and_loss(output: str, loss: object) -> None:
    outputs = 1 if loss == "binary_cross_entropy" else 2
    assert_certified(spec(["tanh"], output, loss, outputs=outputs))


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_depths(depth: int) -> None:
    hidden = ["relu", "tanh", "elu", "silu"][: depth - 1]
    network = spec(hidden, "softmax", "cross_entropy", inputs=2, units=2, outputs=2)
    assert network.parameter_count <= EXPANDED_LIMIT
    assert_certified(network)


@pytest.mark.slow
def test_graph_mode_witness_above_the_expanded_limit() -> None:
    network = spec(
        ["relu", "gelu"], "softmax", "cross_entropy", inputs=6, units=8, outputs=4, l2=0.01
    )
    assert network.parameter_count > EXPANDED_LIMIT
    certificate = certify(network, batch=3)
    assert certificate.passed, certificate.table()
    assert "neuron-level" in certificate.exact_view


def test_l2_term() -> None:
    assert_certified(spec(["sigmoid", "softplus"], "softmax", "cross_entropy", l2=0.05))


def test_several_samples_and_seeds() -> None:
    network = spec(["leaky_relu"], "sigmoid", "binary_cross_entropy", outputs=2)
    for seed in (1, 2):
        assert_certified(network, batch=5, seed=seed)


# --- float32 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", HIDDEN)
def test_float32_follows_float64(activation: str) -> None:
    module = load_module(generate(spec([activation, activation], "softmax", "cross_entropy")))
    params64 = module.init_params(seed=3)
    params32 = {k: v.astype(np.float32) for k, v in params64.items()}
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 3))
    Y = rng.integers(0, 2, size=16)
    loss64, grads64 = module.gradients(params64, X, Y)
    loss32, grads32 = module.gradients(params32, X.astype(np.float32), Y)
    assert isinstance(loss32, float)
    assert module.forward(params32, X).dtype == np.float32
    for key, grad in grads32.items():
        assert grad.dtype == np.float32, key
        np.testing.assert_allclose(grad, grads64[key], rtol=2e-3, atol=2e-5)
    assert abs(loss32 - loss64) < 1e-5 * max(1.0, abs(loss64))


# --- the module's interface ------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_module() -> object:
    from symbackprop.spec import load_spec

    return load_module(generate(load_spec("seed_mlp")))


def test_layer_sizes_and_params(seed_module: object) -> None:
    assert seed_module.LAYER_SIZES == (2, 3, 3, 2)
    params = seed_module.init_params(seed=0)
    assert sorted(params) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    assert params["W1"].shape == (3, 2) and params["b3"].shape == (2,)
    assert params["W1"].dtype == np.float64
    assert seed_module.init_params(seed=0, dtype=np.float32)["W2"].dtype == np.float32
    np.testing.assert_array_equal(
        seed_module.init_params(seed=5)["W1"], seed_module.init_params(seed=5)["W1"]
    )
    assert not np.array_equal(
        seed_module.init_params(seed=5)["W1"], seed_module.init_params(seed=6)["W1"]
    )


def test_forward_gives_probabilities(seed_module: object) -> None:
    params = seed_module.init_params()
    out = seed_module.forward(params, np.random.default_rng(0).normal(size=(7, 2)))
    assert out.shape == (7, 2)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


def test_labels_and_one_hot_agree(seed_module: object) -> None:
    params = seed_module.init_params()
    X = np.random.default_rng(0).normal(size=(5, 2))
    labels = np.array([0, 1, 1, 0, 1])
    assert seed_module.loss(params, X, labels) == seed_module.loss(params, X, np.eye(2)[labels])


def test_train_step_is_sgd_in_place(seed_module: object) -> None:
    params = seed_module.init_params(seed=1)
    X = np.random.default_rng(1).normal(size=(8, 2))
    Y = np.arange(8) % 2
    before = {k: v.copy() for k, v in params.items()}
    expected_loss, grads = seed_module.gradients(params, X, Y)
    W1 = params["W1"]
    value = seed_module.train_step(params, X, Y, 0.5)
    assert value == expected_loss
    assert params["W1"] is W1
    for key in params:
        np.testing.assert_allclose(
            params[key], before[key] - 0.5 * grads[key], rtol=1e-15, atol=1e-17
        )


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_fit_lowers_the_loss(seed_module: object, optimizer: str) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    params = seed_module.init_params(seed=0)
    history = seed_module.fit(
        params, X, y, epochs=15, batch_size=16, lr=0.05, optimizer=optimizer, seed=0
    )
    assert len(history) == 15
    assert history[-1] < 0.6 * history[0]
    assert (seed_module.predict(params, X) == y).mean() > 0.9
    again = seed_module.init_params(seed=0)
    assert (
        seed_module.fit(again, X, y, epochs=15, batch_size=16, lr=0.05, optimizer=optimizer, seed=0)
        == history
    )


def test_fit_matches_pytorch_optimizers() -> None:
    torch = pytest.importorskip("torch") if not os.environ.get("CI") else __import__("torch")
    module = load_module(generate(spec(["tanh"], "identity", "mse", inputs=2, units=3, outputs=1)))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 2))
    Y = rng.normal(size=(6, 1))
    for optimizer, make in (
        ("sgd", lambda p: torch.optim.SGD(p, lr=0.1)),
        ("momentum", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
        ("adam", lambda p: torch.optim.Adam(p, lr=0.1, betas=(0.9, 0.999), eps=1e-8)),
    ):
        params = module.init_params(seed=1)
        tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
        opt = make(list(tensors.values()))
        module.fit(params, X, Y, epochs=4, batch_size=6, lr=0.1, optimizer=optimizer)
        for _ in range(4):
            opt.zero_grad()
            hidden = torch.tanh(torch.tensor(X) @ tensors["W1"].T + tensors["b1"])
            out = hidden @ tensors["W2"].T + tensors["b2"]
            loss = 0.5 * ((out - torch.tensor(Y)) ** 2).sum() / 6
            loss.backward()
            opt.step()
        for key in params:
            np.testing.assert_allclose(
                params[key], tensors[key].detach().numpy(), rtol=1e-10, atol=1e-12
            )


def test_last_partial_batch_is_used(seed_module: object) -> None:
    X = np.random.default_rng(0).normal(size=(5, 2))
    y = np.array([0, 1, 0, 1, 1])
    full = seed_module.init_params(seed=0)
    seed_module.fit(full, X, y, epochs=1, batch_size=5, lr=0.1)
    split = seed_module.init_params(seed=0)
    history = seed_module.fit(split, X, y, epochs=1, batch_size=3, lr=0.1)
    assert len(history) == 1
    assert not np.allclose(full["W1"], split["W1"])  # two steps: 3 samples, then the last 2


def test_save_and_load(seed_module: object, tmp_path: object) -> None:
    params = seed_module.init_params(seed=2)
    path = tmp_path / "w.npz"
    seed_module.save(params, str(path))
    loaded = seed_module.load(str(path))
    for key in params:
        np.testing.assert_array_equal(loaded[key], params[key])


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda p: p.pop("b2"), "params has keys"),
        (lambda p: p.__setitem__("W1", np.zeros((2, 3))), "params['W1']"),
        (lambda p: p.__setitem__("b3", np.zeros(3)), "params['b3']"),
    ],
)
def test_bad_params_raise_value_error(seed_module: object, mutate: object, message: str) -> None:
    params = seed_module.init_params()
    mutate(params)
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        seed_module.loss(params, np.zeros((2, 2)), np.array([0, 1]))


@pytest.mark.parametrize(
    "X,Y,message",
    [
        (np.zeros((4, 3)), np.array([0, 1, 0, 1]), r"X has shape \(4, 3\), expected \(batch, 2\)"),
        (np.zeros(4), np.array([0, 1, 0, 1]), "X has shape"),
        (np.zeros((4, 2)), np.zeros((4, 3)), r"Y has shape \(4, 3\), expected \(4, 2\)"),
        (np.zeros((4, 2)), np.array([0, 1, 2, 0]), "class labels outside"),
        (np.zeros((4, 2)), np.array([0, 1]), "Y has shape"),
    ],
)
def test_bad_data_raise_value_error(
    seed_module: object, X: np.ndarray, Y: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        seed_module.gradients(seed_module.init_params(), X, Y)


def test_regression_predict_returns_outputs() -> None:
    module = load_module(generate(spec(["tanh"], "identity", "mse", outputs=2)))
    params = module.init_params()
    X = np.ones((3, 3))
    np.testing.assert_array_equal(module.predict(params, X), module.forward(params, X))


def test_binary_predict_returns_labels() -> None:
    module = load_module(generate(spec(["tanh"], "sigmoid", "binary_cross_entropy", outputs=1)))
    params = module.init_params()
    labels = module.predict(params, np.random.default_rng(0).normal(size=(6, 3)))
    assert labels.shape == (6,) and set(labels) <= {0, 1}
    module.gradients(params, np.zeros((3, 3)), np.array([0, 1, 1]))
