"""Generated modules for a grid of networks, checked against independent witnesses.

Every module is generated from a spec, imported from its source text, and its gradients are
compared with central finite differences, SymPy's exact gradient (expanded composite or
neuron-level graph) and, when torch is importable, PyTorch autograd (CI installs torch)."""

from __future__ import annotations

import os
import re

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


# --- inputs the module refuses, and what it accepts ------------------------------------------


def regression_module() -> object:
    from symbackprop.spec import load_spec

    return load_module(generate(load_spec("tanh_regression")), "tanh_regression")


@pytest.mark.parametrize(
    "dtype",
    [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64, np.bool_],
)
def test_any_integer_label_dtype(seed_module: object, dtype: type) -> None:
    params = seed_module.init_params(seed=1)
    X = np.random.default_rng(1).normal(size=(6, 2))
    labels = np.array([0, 1, 1, 0, 1, 0])
    expected_loss, expected = seed_module.gradients(params, X, labels)
    value, grads = seed_module.gradients(params, X, labels.astype(dtype))
    assert value == expected_loss
    for key in expected:
        np.testing.assert_array_equal(grads[key], expected[key])
    reference = seed_module.init_params(seed=1)
    history = seed_module.fit(reference, X, labels, epochs=2, batch_size=4, lr=0.1)
    again = seed_module.init_params(seed=1)
    assert (
        seed_module.fit(again, X, labels.astype(dtype), epochs=2, batch_size=4, lr=0.1) == history
    )
    binary = load_module(generate(spec(["tanh"], "sigmoid", "binary_cross_entropy", outputs=1)))
    small = binary.init_params()
    Xb = np.ones((3, 3))
    assert binary.loss(small, Xb, np.array([0, 1, 1], dtype)) == binary.loss(small, Xb, [0, 1, 1])


def test_out_of_range_unsigned_labels_are_a_value_error(seed_module: object) -> None:
    params = seed_module.init_params()
    with pytest.raises(ValueError, match="class labels outside"):
        seed_module.gradients(params, np.zeros((2, 2)), np.array([0, 2**63 + 5], np.uint64))


@pytest.mark.parametrize(
    "lr", [float("inf"), float("nan"), -1.0, 0.0, 0, "0.1", True, None, 1j, np.array([0.1])]
)
def test_a_bad_learning_rate_is_a_value_error(seed_module: object, lr: object) -> None:
    params = seed_module.init_params(seed=0)
    before = {key: value.copy() for key, value in params.items()}
    X = np.random.default_rng(0).normal(size=(8, 2))
    Y = np.arange(8) % 2
    with pytest.raises(ValueError, match="lr is .*expected a finite positive number"):
        seed_module.train_step(params, X, Y, lr)
    for optimizer in ("sgd", "momentum", "adam"):
        with pytest.raises(ValueError, match="lr is .*expected a finite positive number"):
            seed_module.fit(params, X, Y, epochs=1, batch_size=4, lr=lr, optimizer=optimizer)
    for key in params:
        np.testing.assert_array_equal(params[key], before[key])


def test_numpy_scalar_learning_rates_are_accepted(seed_module: object) -> None:
    X = np.random.default_rng(0).normal(size=(8, 2))
    Y = np.arange(8) % 2
    plain, scalar = seed_module.init_params(seed=0), seed_module.init_params(seed=0)
    seed_module.train_step(plain, X, Y, 1)
    seed_module.train_step(scalar, X, Y, np.float64(1.0))
    for key in plain:
        np.testing.assert_array_equal(plain[key], scalar[key])


def test_complex_inputs_are_a_value_error(seed_module: object) -> None:
    params = seed_module.init_params()
    X = np.zeros((2, 2), complex)
    with pytest.raises(ValueError, match="X has dtype complex128, expected real numbers"):
        seed_module.gradients(params, X, np.array([0, 1]))
    with pytest.raises(ValueError, match="X has dtype complex128"):
        seed_module.forward(params, X)
    with pytest.raises(ValueError, match="Y has dtype complex128, expected real numbers"):
        seed_module.loss(params, np.zeros((2, 2)), np.eye(2) + 1j)
    module = regression_module()
    small = module.init_params()
    with pytest.raises(ValueError, match="Y has dtype complex128"):
        module.fit(small, np.zeros((4, 3)), np.ones(4) * 1j, epochs=1, batch_size=2, lr=0.1)
    with pytest.raises(ValueError, match="Y has dtype"):
        module.loss(small, np.zeros((4, 3)), np.array(["a", "b", "c", "d"]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_a_value_error(seed_module: object, bad: float) -> None:
    params = seed_module.init_params(seed=0)
    before = {key: value.copy() for key, value in params.items()}
    X = np.random.default_rng(0).normal(size=(8, 2))
    Y = np.arange(8) % 2
    X[3, 1] = bad
    with pytest.raises(ValueError, match="X holds NaN or infinite values"):
        seed_module.fit(params, X, Y, epochs=2, batch_size=4, lr=0.1)
    if np.isnan(bad):  # an infinite input may give a finite loss; NaN always shows
        for call in (
            lambda: seed_module.loss(params, X, Y),
            lambda: seed_module.gradients(params, X, Y),
            lambda: seed_module.train_step(params, X, Y, 0.1),
            lambda: seed_module.forward(params, X),
            lambda: seed_module.predict(params, X),
        ):
            with pytest.raises(ValueError, match="X holds NaN or infinite values"):
                call()
    for key in params:
        np.testing.assert_array_equal(params[key], before[key])
    module = regression_module()
    small = module.init_params()
    Xr, Yr = np.zeros((4, 3)), np.array([0.0, 1.0, bad, 2.0])
    with pytest.raises(ValueError, match="Y holds NaN or infinite values"):
        module.fit(small, Xr, Yr, epochs=1, batch_size=2, lr=0.1)
    with np.errstate(all="ignore"), pytest.raises(ValueError, match="Y holds NaN or infinite"):
        module.train_step(small, Xr, Yr, 0.1)
    small["W2"][0, 1] = bad
    with pytest.raises(ValueError, match=r"params\['W2'\] holds NaN or infinite values"):
        module.fit(small, Xr, np.ones(4), epochs=1, batch_size=2, lr=0.1)
    with np.errstate(all="ignore"), pytest.raises(ValueError, match=r"params\['W2'\] holds NaN"):
        module.gradients(small, Xr, np.ones(4))


@pytest.mark.parametrize("lr", [5.0, 1e300])
def test_fit_stops_when_the_loss_diverges(lr: float) -> None:
    module = regression_module()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)) * 3
    Y = rng.normal(size=60) * 5
    params = module.init_params(seed=0)
    what = [
        "the loss became nan",
        "the loss became inf",
        r"the loss exploded to \S+",
        r"params\['\w+'\] became NaN or infinite",
    ]
    message = rf"^fit: ({'|'.join(what)}) at epoch \d+, batch \d+ \(.*lr={re.escape(repr(lr))}\); "
    message += "try a smaller lr or standardize the features$"
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match=message) as stop:
        module.fit(params, X, Y, epochs=10, batch_size=8, lr=lr, optimizer="sgd")
    if lr == 5.0:  # 3e10 after one epoch: stopped long before overflow
        assert "exploded" in str(stop.value)
    seed = load_module(generate(spec(["relu"], "softmax", "cross_entropy", inputs=2, outputs=2)))
    params = seed.init_params(seed=0)
    with (
        np.errstate(all="ignore"),
        pytest.raises(FloatingPointError, match="fit: (the loss|params)"),
    ):
        seed.fit(params, X[:, :2], (Y > 0).astype(int), epochs=5, batch_size=60, lr=1e300)


def test_fit_keeps_an_ordinary_run_going(seed_module: object) -> None:
    """A loss that rises for a while (a large but workable lr) is not called divergence."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2)) * 3
    y = rng.integers(0, 2, 60)
    params = seed_module.init_params(seed=0)
    history = seed_module.fit(params, X, y, epochs=10, batch_size=8, lr=50.0)
    assert len(history) == 10 and max(history) > 10  # log(2) = 0.69 at the start


def test_train_step_refuses_read_only_params_before_stepping(seed_module: object) -> None:
    X = np.random.default_rng(0).normal(size=(8, 2))
    Y = np.arange(8) % 2
    params = seed_module.init_params(seed=0)
    params["b3"].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['b3'\] is read-only"):
        seed_module.train_step(params, X, Y, 0.5)
    assert all(np.array_equal(params[k], seed_module.init_params(seed=0)[k]) for k in params)
    with pytest.raises(ValueError, match=r"params\['b3'\] is read-only"):
        seed_module.fit(params, X, Y, epochs=1, batch_size=4, lr=0.1)
    assert all(np.array_equal(params[k], seed_module.init_params(seed=0)[k]) for k in params)
    params["b3"].flags.writeable = True
    seed_module.train_step(params, X, Y, 0.5)
    assert not any(np.array_equal(params[k], seed_module.init_params(seed=0)[k]) for k in params)


@pytest.mark.parametrize(
    "alias",
    [
        lambda p: p.__setitem__("b2", p["b1"]),  # the same array under two keys
        lambda p: p.__setitem__("b1", p["W2"][1]),  # a view into another parameter
        lambda p: p.__setitem__("b3", p["W3"].T[0]),
    ],
    ids=["same-array", "row-view", "strided-view"],
)
def test_train_step_refuses_params_that_share_memory(seed_module: object, alias: object) -> None:
    X = np.random.default_rng(0).normal(size=(8, 2))
    Y = np.arange(8) % 2
    params = seed_module.init_params(seed=0)
    alias(params)
    before = {key: value.copy() for key, value in params.items()}
    with pytest.raises(ValueError, match=r"params\['\w\d'\] shares memory with params\['\w\d'\]"):
        seed_module.train_step(params, X, Y, 0.5)
    with pytest.raises(ValueError, match=r"shares memory"):
        seed_module.fit(params, X, Y, epochs=1, batch_size=4, lr=0.1)
    for key in params:
        np.testing.assert_array_equal(params[key], before[key])
    seed_module.gradients(params, X, Y)  # reading aliased params is fine


def test_train_step_accepts_disjoint_views_of_one_buffer(seed_module: object) -> None:
    X = np.random.default_rng(0).normal(size=(8, 2))
    Y = np.arange(8) % 2
    plain = seed_module.init_params(seed=0)
    flat = np.concatenate([value.ravel() for value in plain.values()])
    views, start = {}, 0
    for key, value in plain.items():
        views[key] = flat[start : start + value.size].reshape(value.shape)
        start += value.size
    for _ in range(3):
        assert seed_module.train_step(views, X, Y, 0.5) == seed_module.train_step(plain, X, Y, 0.5)
    for key in plain:
        np.testing.assert_array_equal(views[key], plain[key])


def test_the_overlap_verdict_goes_with_its_arrays(seed_module: object) -> None:
    """train_step remembers (per thread) which arrays it found apart; once one of them is
    freed, its id may be reused by an alias, so the verdict is forgotten."""
    X = np.random.default_rng(0).normal(size=(8, 2))
    Y = np.arange(8) % 2
    params = seed_module.init_params(seed=0)
    seed_module.train_step(params, X, Y, 0.1)
    assert seed_module._LOCAL.apart["ids"] == tuple(map(id, params.values()))
    params["b1"] = params["b1"].copy()  # the old b1 is freed
    assert seed_module._LOCAL.apart == {}
    params["b2"] = params["b1"]
    with pytest.raises(ValueError, match=r"params\['b2'\] shares memory with params\['b1'\]"):
        seed_module.train_step(params, X, Y, 0.1)
