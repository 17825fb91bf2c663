"""What the generated module gives a practitioner beyond the step: RMSprop, learning-rate
schedules, a callback that stops fit, input standardization and class names kept in params,
clear errors for PyTorch tensors, state_dict converters and the script's evaluate / predict.

The optimizers and schedules are checked against torch.optim and torch.optim.lr_scheduler in
float64, given the same initialization and the same batch order (CI installs torch)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from symbackprop.checkpoint import load_module
from symbackprop.codegen import generate
from symbackprop.spec import from_dict, load_spec


def torch_or_skip() -> object:
    return pytest.importorskip("torch") if not os.environ.get("CI") else __import__("torch")


def module_of(layers: list, loss: str = "mse", inputs: int | list = 3, **extra: object) -> object:
    spec = {"name": "net", "inputs": inputs, "loss": loss, "layers": layers, **extra}
    return load_module(generate(from_dict(spec)))


@pytest.fixture(scope="module")
def regression() -> object:
    """3 -> tanh 4 -> identity 2, mean squared error."""
    return module_of([{"units": 4, "activation": "tanh"}, {"units": 2, "activation": "identity"}])


@pytest.fixture(scope="module")
def classifier() -> object:
    """3 -> relu 5 -> softmax 3, cross-entropy."""
    layers = [{"units": 5, "activation": "relu"}, {"units": 3, "activation": "softmax"}]
    return module_of(layers, loss="cross_entropy")


def regression_data(samples: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.normal(size=(samples, 3)), rng.normal(size=(samples, 2))


# --- RMSprop and the schedules, against torch.optim ------------------------------------------

TORCH_OPTIMIZERS = {
    "sgd": lambda torch, p, lr: torch.optim.SGD(p, lr=lr),
    "momentum": lambda torch, p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9),
    "adam": lambda torch, p, lr: torch.optim.Adam(p, lr=lr, betas=(0.9, 0.999), eps=1e-8),
    "rmsprop": lambda torch, p, lr: torch.optim.RMSprop(
        p, lr=lr, alpha=0.99, eps=1e-8, momentum=0, centered=False
    ),
}


def torch_fit(
    module: object,
    params: dict,
    X: np.ndarray,
    Y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str,
    schedule: str = "constant",
    step_size: int = 10,
    gamma: float = 0.1,
    min_lr: float = 0.0,
    seed: int = 0,
) -> dict:
    """fit's training as a float64 PyTorch loop: the same init, the same shuffles (fit draws
    numpy.random.default_rng(seed).permutation once per epoch), torch's optimizer and
    scheduler stepped once per epoch; the tanh -> identity, mse network only."""
    torch = torch_or_skip()
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = TORCH_OPTIMIZERS[optimizer](torch, list(tensors.values()), lr)
    if schedule == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gamma)
    elif schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=min_lr)
    else:
        scheduler = None
    rng = np.random.default_rng(seed)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    for _ in range(epochs):
        order = torch.tensor(rng.permutation(len(X)))
        for start in range(0, len(X), batch_size):
            batch = order[start : start + batch_size]
            opt.zero_grad()
            hidden = torch.tanh(Xt[batch] @ tensors["W1"].T + tensors["b1"])
            out = hidden @ tensors["W2"].T + tensors["b2"]
            loss = 0.5 * ((out - Yt[batch]) ** 2).sum() / len(batch)
            loss.backward()
            opt.step()
        if scheduler is not None:
            scheduler.step()
    return {k: v.detach().numpy() for k, v in tensors.items()}


def assert_close_params(ours: dict, theirs: dict, rtol: float = 1e-12) -> None:
    for key, value in theirs.items():
        scale = max(1.0, float(np.abs(value).max()))
        np.testing.assert_allclose(ours[key], value, rtol=rtol, atol=rtol * scale, err_msg=key)


def test_rmsprop_matches_torch(regression: object) -> None:
    X, Y = regression_data()
    params = regression.init_params(seed=1)
    expected = torch_fit(
        regression, params, X, Y, epochs=5, batch_size=4, lr=0.01, optimizer="rmsprop"
    )
    regression.fit(params, X, Y, epochs=5, batch_size=4, lr=0.01, optimizer="rmsprop")
    assert_close_params(params, expected)


def test_rmsprop_reads_alpha_and_eps_from_the_spec() -> None:
    layers = [{"units": 4, "activation": "tanh"}, {"units": 2, "activation": "identity"}]
    module = module_of(layers, train={"optimizer": "rmsprop", "alpha": 0.5, "eps": 1e-3})
    assert module.TRAIN_DEFAULTS["alpha"] == 0.5
    torch = torch_or_skip()
    X, Y = regression_data()
    params = module.init_params(seed=2)
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = torch.optim.RMSprop(list(tensors.values()), lr=0.05, alpha=0.5, eps=1e-3)
    for _ in range(3):
        opt.zero_grad()
        hidden = torch.tanh(torch.tensor(X) @ tensors["W1"].T + tensors["b1"])
        out = hidden @ tensors["W2"].T + tensors["b2"]
        (0.5 * ((out - torch.tensor(Y)) ** 2).sum() / len(X)).backward()
        opt.step()
    module.fit(params, X, Y, epochs=3, batch_size=len(X), lr=0.05, optimizer="rmsprop")
    assert_close_params(params, {k: v.detach().numpy() for k, v in tensors.items()})


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "rmsprop"])
@pytest.mark.parametrize(
    "schedule,settings",
    [
        ("step", {"step_size": 2, "gamma": 0.5}),
        ("step", {"step_size": 3, "gamma": 0.1}),
        ("cosine", {"min_lr": 0.0}),
        ("cosine", {"min_lr": 0.002}),
    ],
)
def test_schedules_match_torch(
    regression: object, optimizer: str, schedule: str, settings: dict
) -> None:
    X, Y = regression_data(11)
    params = regression.init_params(seed=4)
    lr = 0.05 if optimizer in ("sgd", "momentum") else 0.01
    options = {"epochs": 7, "batch_size": 4, "lr": lr, "optimizer": optimizer}
    expected = torch_fit(regression, params, X, Y, schedule=schedule, **settings, **options)
    regression.fit(params, X, Y, schedule=schedule, **settings, **options)
    assert_close_params(params, expected)


def test_the_schedules_change_the_training(regression: object) -> None:
    X, Y = regression_data()
    finals = []
    for schedule in ("constant", "step", "cosine"):
        params = regression.init_params(seed=0)
        regression.fit(params, X, Y, epochs=4, batch_size=5, lr=0.1, schedule=schedule, step_size=1)
        finals.append(params["W1"])
    assert not np.array_equal(finals[0], finals[1])
    assert not np.array_equal(finals[0], finals[2])


def test_the_default_schedule_is_constant_and_its_defaults_come_from_the_spec() -> None:
    layers = [{"units": 4, "activation": "tanh"}, {"units": 2, "activation": "identity"}]
    train = {"schedule": "step", "step_size": 3, "gamma": 0.5, "min_lr": 0.01}
    module = module_of(layers, train=train)
    defaults = module.TRAIN_DEFAULTS
    assert (defaults["schedule"], defaults["step_size"], defaults["gamma"]) == ("step", 3, 0.5)
    assert defaults["min_lr"] == 0.01
    X, Y = regression_data()
    by_default, explicit, constant = (module.init_params(seed=0) for _ in range(3))
    options = {"epochs": 7, "batch_size": 5, "lr": 0.1}
    module.fit(by_default, X, Y, **options)  # fit's schedule is constant unless asked
    module.fit(constant, X, Y, schedule="constant", **options)
    module.fit(explicit, X, Y, schedule="step", **options)  # step_size 3 and gamma 0.5
    reference = module.init_params(seed=0)
    module.fit(reference, X, Y, schedule="step", step_size=3, gamma=0.5, **options)
    for key in by_default:
        np.testing.assert_array_equal(by_default[key], constant[key])
        np.testing.assert_array_equal(explicit[key], reference[key])


def test_spec_defaults_of_the_trainer() -> None:
    train = load_spec("seed_mlp").train
    assert (train.alpha, train.schedule, train.step_size, train.gamma, train.min_lr) == (
        0.99,
        "constant",
        10,
        0.1,
        0.0,
    )


@pytest.mark.parametrize(
    "schedule,settings,message",
    [
        ("linear", {}, "schedule is 'linear', expected one of 'constant', 'step', 'cosine'"),
        ("step", {"step_size": 0}, "step_size is 0, expected a positive integer"),
        ("step", {"step_size": 2.0}, "step_size is 2.0, expected a positive integer"),
        ("step", {"gamma": 0.0}, "gamma is 0.0, expected a finite positive number"),
        ("step", {"gamma": float("nan")}, "gamma is nan"),
        ("cosine", {"min_lr": -1.0}, r"min_lr is -1.0, expected a finite number >= 0"),
        ("cosine", {"min_lr": True}, "min_lr is True"),
    ],
)
def test_bad_schedules_are_value_errors_before_anything_changes(
    regression: object, schedule: str, settings: dict, message: str
) -> None:
    X, Y = regression_data()
    params = regression.init_params(seed=0)
    before = {key: value.copy() for key, value in params.items()}
    with pytest.raises(ValueError, match=message):
        regression.fit(params, X, Y, epochs=2, batch_size=4, lr=0.1, schedule=schedule, **settings)
    for key in params:
        np.testing.assert_array_equal(params[key], before[key])


def test_an_unknown_optimizer_is_a_value_error(regression: object) -> None:
    X, Y = regression_data()
    with pytest.raises(ValueError, match="optimizer is 'lbfgs', expected one of 'sgd'"):
        regression.fit(
            regression.init_params(), X, Y, epochs=1, batch_size=4, lr=0.1, optimizer="lbfgs"
        )


@pytest.mark.parametrize(
    "train,message",
    [
        ({"optimizer": "rmsprop", "alpha": 1.0}, "train.alpha: expected a number in [0, 1)"),
        ({"schedule": "linear"}, "train.schedule: unknown schedule 'linear'"),
        ({"step_size": 0}, "train.step_size: expected a positive integer, got 0"),
        ({"gamma": -0.5}, "train.gamma: expected a positive number"),
        ({"min_lr": -1}, "train.min_lr: expected a non-negative number"),
        ({"min_lr": "0"}, "train.min_lr: expected a number"),
    ],
)
def test_bad_train_settings_name_their_key(train: dict, message: str) -> None:
    from symbackprop.errors import InputError

    layers = [{"units": 2, "activation": "identity"}]
    with pytest.raises(InputError) as error:
        from_dict({"name": "n", "inputs": 2, "loss": "mse", "layers": layers, "train": train})
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


# --- the callback stops fit ---------------------------------------------------------------------


def test_a_true_callback_value_stops_fit_after_that_epoch(regression: object) -> None:
    X, Y = regression_data()
    seen = []

    def stop_at_three(epoch: int, mean_loss: float) -> bool:
        seen.append((epoch, mean_loss))
        return epoch == 3

    stopped = regression.init_params(seed=0)
    history = regression.fit(stopped, X, Y, epochs=10, batch_size=4, lr=0.1, callback=stop_at_three)
    assert len(history) == 3 and [epoch for epoch, _ in seen] == [1, 2, 3]
    assert [value for _, value in seen] == history
    three = regression.init_params(seed=0)
    assert regression.fit(three, X, Y, epochs=3, batch_size=4, lr=0.1) == history
    for key in three:
        np.testing.assert_array_equal(stopped[key], three[key])
    quiet = regression.init_params(seed=0)  # None (no return) never stops
    history = regression.fit(
        quiet, X, Y, epochs=5, batch_size=4, lr=0.1, callback=lambda e, v: None
    )
    assert len(history) == 5


# --- input standardization and class names in params ----------------------------------------


def scaling(module: object, dtype: type = np.float64) -> tuple[np.ndarray, np.ndarray]:
    shape = module._SAMPLE_SHAPE
    rng = np.random.default_rng(7)
    return rng.normal(size=shape).astype(dtype), rng.uniform(0.5, 3.0, size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_standardization_in_params_applies_to_raw_X_everywhere(
    classifier: object, dtype: type
) -> None:
    module = classifier
    mean, scale = scaling(module, dtype)
    rng = np.random.default_rng(1)
    X = rng.normal(2.0, 4.0, size=(12, 3))
    y = rng.integers(0, 3, size=12)
    Z = ((X.astype(dtype) - mean) / scale).astype(dtype)
    plain = module.init_params(seed=5, dtype=dtype)
    scaled = {**{k: v.copy() for k, v in plain.items()}, "x_mean": mean, "x_scale": scale}
    scaled["classes"] = np.array(["a", "bb", "c"])
    np.testing.assert_array_equal(module.forward(scaled, X), module.forward(plain, Z))
    np.testing.assert_array_equal(module.predict(scaled, X), module.predict(plain, Z))
    assert module.loss(scaled, X, y) == module.loss(plain, Z, y)
    value, grads = module.gradients(scaled, X, y)
    expected_value, expected = module.gradients(plain, Z, y)
    assert value == expected_value and grads.keys() == module.PARAMETERS.keys()
    for key in grads:
        np.testing.assert_array_equal(grads[key], expected[key])
    assert module.train_step(scaled, X, y, 0.1) == module.train_step(plain, Z, y, 0.1)
    assert module.train_step(scaled, X[:1], y[:1], 0.1) == module.train_step(
        plain, Z[:1], y[:1], 0.1
    )
    options = {"epochs": 3, "batch_size": 5, "lr": 0.05, "optimizer": "adam"}
    assert module.fit(scaled, X, y, **options) == module.fit(plain, Z, y, **options)
    for key in plain:
        np.testing.assert_array_equal(scaled[key], plain[key])
    assert scaled["x_mean"] is mean and scaled["x_scale"] is scale  # never changed
    np.testing.assert_array_equal(mean, scaling(module, dtype)[0])
    np.testing.assert_array_equal(scaled["classes"], ["a", "bb", "c"])


def test_standardization_of_an_image_net_has_one_sample_s_shape() -> None:
    module = load_module(generate(load_spec("digits_cnn")))
    assert module._SAMPLE_SHAPE == (1, 8, 8)
    mean, scale = scaling(module)
    X = np.random.default_rng(2).uniform(0, 16, size=(6, 1, 8, 8))
    plain = module.init_params(seed=0)
    scaled = {**plain, "x_mean": mean, "x_scale": scale}
    expected = module.forward(plain, (X - mean) / scale)
    np.testing.assert_array_equal(module.forward(scaled, X), expected)
    np.testing.assert_array_equal(module.forward(scaled, X.reshape(6, 64)), expected)
    with pytest.raises(ValueError, match=r"params\['x_mean'\] has shape \(64,\)"):
        module.forward({**plain, "x_mean": mean.reshape(64), "x_scale": scale}, X)


def test_init_params_holds_neither_standardization_nor_classes(classifier: object) -> None:
    assert classifier.init_params().keys() == classifier._SHAPES.keys()


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"x_mean": np.zeros(3)}, "params holds one of x_mean and x_scale"),
        ({"x_mean": np.zeros(3), "x_scale": np.zeros(3)}, r"params\['x_scale'\] holds values"),
        ({"x_mean": np.zeros(3), "x_scale": -np.ones(3)}, r"params\['x_scale'\] holds values"),
        (
            {"x_mean": np.zeros(3), "x_scale": np.array([1.0, np.inf, 1.0])},
            r"params\['x_scale'\] holds values that are not finite and positive",
        ),
        (
            {"x_mean": np.array([0.0, np.nan, 0.0]), "x_scale": np.ones(3)},
            r"params\['x_mean'\] holds NaN",
        ),
        (
            {"x_mean": np.zeros(4), "x_scale": np.ones(3)},
            r"params\['x_mean'\] has shape \(4,\) of float64, expected shape \(3,\) of float64",
        ),
        (
            {"x_mean": np.zeros(3, np.float32), "x_scale": np.ones(3)},
            r"params\['x_mean'\] has shape \(3,\) of float32, expected shape \(3,\) of float64",
        ),
        ({"x_mean": [0, 0, 0], "x_scale": np.ones(3)}, r"params\['x_mean'\] is a list"),
        ({"classes": np.array(["a", "b"])}, r"params\['classes'\] has shape \(2,\) of <U1"),
        ({"classes": np.array([1, 2, 3])}, r"params\['classes'\] has shape \(3,\) of int64"),
        ({"classes": ["a", "b", "c"]}, r"params\['classes'\] is a list"),
        ({"labels": np.zeros(3)}, "params has keys"),
    ],
)
def test_bad_extras_are_value_errors(classifier: object, extra: dict, message: str) -> None:
    params = {**classifier.init_params(), **extra}
    X = np.zeros((2, 3))
    with pytest.raises(ValueError, match=message):
        classifier.forward(params, X)
    with pytest.raises(ValueError, match=message):
        classifier.fit(params, X, np.array([0, 1]), epochs=1, batch_size=2, lr=0.1)


def test_classes_are_refused_by_a_regression(regression: object) -> None:
    params = {**regression.init_params(), "classes": np.array(["a", "b"])}
    with pytest.raises(ValueError, match="params holds classes, but the loss 'mse'"):
        regression.forward(params, np.zeros((1, 3)))


def test_one_sigmoid_output_has_two_class_names() -> None:
    module = module_of([{"units": 1, "activation": "sigmoid"}], loss="binary_cross_entropy")
    assert module._CLASS_COUNT == 2
    params = {**module.init_params(), "classes": np.array(["no", "yes"])}
    assert module.predict(params, np.zeros((2, 3))).shape == (2,)


def test_extras_survive_save_and_load(classifier: object, tmp_path: object) -> None:
    mean, scale = scaling(classifier)
    params = {**classifier.init_params(seed=3), "x_mean": mean, "x_scale": scale}
    params["classes"] = np.array(["setosa", "versicolor", "virginica"])
    path = str(tmp_path / "w.npz")
    classifier.save(params, path)
    with np.load(path, allow_pickle=False) as data:  # nothing needs pickle
        assert sorted(data.files) == sorted(params)
    loaded = classifier.load(path)
    assert loaded.keys() == params.keys()
    for key in params:
        np.testing.assert_array_equal(loaded[key], params[key])
    assert loaded["classes"].dtype.kind == "U"


def test_a_nan_in_raw_X_is_still_named_with_standardization(classifier: object) -> None:
    mean, scale = scaling(classifier)
    params = {**classifier.init_params(), "x_mean": mean, "x_scale": scale}
    X = np.zeros((3, 3))
    X[1, 1] = np.nan
    with pytest.raises(ValueError, match="X holds NaN"):
        classifier.forward(params, X)
    with pytest.raises(ValueError, match="X holds NaN"):
        classifier.fit(params, X, np.array([0, 1, 2]), epochs=1, batch_size=3, lr=0.1)


def test_read_only_extras_do_not_stop_training(classifier: object) -> None:
    mean, scale = scaling(classifier)
    mean.flags.writeable = False
    params = {**classifier.init_params(), "x_mean": mean, "x_scale": scale}
    classifier.fit(params, np.ones((4, 3)), np.array([0, 1, 2, 0]), epochs=1, batch_size=2, lr=0.1)
    classifier.train_step(params, np.ones((4, 3)), np.array([0, 1, 2, 0]), 0.1)


# --- PyTorch objects where NumPy arrays belong ------------------------------------------------


def test_torch_tensors_are_value_errors_that_say_what_to_do(classifier: object) -> None:
    torch = torch_or_skip()
    params = classifier.init_params()
    X, y = np.zeros((2, 3)), np.array([0, 1])
    bad = {**params, "W1": torch.tensor(params["W1"])}
    message = (
        r"params\['W1'\] is a torch.Tensor; convert it with "
        r"from_state_dict\(model.state_dict\(\)\) or tensor.detach\(\).cpu\(\).numpy\(\)"
    )
    for call in (
        lambda: classifier.forward(bad, X),
        lambda: classifier.gradients(bad, X, y),
        lambda: classifier.fit(bad, X, y, epochs=1, batch_size=2, lr=0.1),
        lambda: classifier.save(bad, "never.npz"),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    parameter = {**params, "b2": torch.nn.Parameter(torch.tensor(params["b2"]))}
    with pytest.raises(ValueError, match=r"params\['b2'\] is a torch.nn.parameter.Parameter;"):
        classifier.forward(parameter, X)
    with pytest.raises(ValueError, match=r"X is a torch.Tensor; convert it with X.detach"):
        classifier.forward(params, torch.zeros(2, 3, requires_grad=True))
    with pytest.raises(ValueError, match=r"Y is a torch.Tensor; convert it with Y.detach"):
        classifier.loss(params, X, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"Y is a torch.Tensor"):
        classifier.train_step(params, X[:1], torch.tensor([1]), 0.1)
    state = {f"layer{k[1:]}.{'weight' if k[0] == 'W' else 'bias'}": v for k, v in params.items()}
    with pytest.raises(ValueError, match=r"a PyTorch state_dict converts with from_state_dict"):
        classifier.forward(state, X)


def test_other_non_arrays_in_params_say_what_they_are(classifier: object) -> None:
    params = {**classifier.init_params(), "W1": [[0.0] * 3] * 5}
    with pytest.raises(ValueError, match=r"params\['W1'\] is a list, expected a NumPy array"):
        classifier.forward(params, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="params is a tuple, expected a dict"):
        classifier.forward((), np.zeros((1, 3)))


# --- state_dict converters ---------------------------------------------------------------------


class TorchTwin:
    """A PyTorch model with the exported model's state_dict keys (layer<l>.weight, ...,
    x_mean and x_scale buffers), built here from the spec's dense and batch-norm layers so
    that the converters are checked against torch's own naming and load_state_dict."""

    def __init__(self, torch: object, spec: object) -> None:
        nn = torch.nn
        self.torch, self.spec = torch, spec

        class Twin(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                for layer in spec.flat:
                    if layer.kind == "dense":
                        module = nn.Linear(layer.fan_in, layer.units, bias=layer.layer.bias)
                    elif layer.kind == "batch_norm":
                        module = nn.BatchNorm1d(layer.units, eps=layer.layer.eps)
                    else:
                        raise NotImplementedError(layer.kind)
                    setattr(self, f"layer{layer.index}", module.double())
                self.register_buffer("x_mean", torch.zeros(spec.inputs, dtype=torch.float64))
                self.register_buffer("x_scale", torch.ones(spec.inputs, dtype=torch.float64))

            def forward(self, x: object) -> object:
                x = (x - self.x_mean) / self.x_scale
                for layer in spec.flat:
                    x = getattr(self, f"layer{layer.index}")(x)
                    name = layer.layer.activation.name if layer.kind == "dense" else "identity"
                    if name == "relu":
                        x = torch.relu(x)
                    elif name == "softmax":
                        x = torch.softmax(x, dim=1)
                    elif name == "tanh":
                        x = torch.tanh(x)
                return x

        self.model = Twin()


def test_to_state_dict_loads_into_torch_and_back(classifier: object) -> None:
    torch = torch_or_skip()
    spec = from_dict(
        {
            "name": "net",
            "inputs": 3,
            "loss": "cross_entropy",
            "layers": [{"units": 5, "activation": "relu"}, {"units": 3, "activation": "softmax"}],
        }
    )
    twin = TorchTwin(torch, spec).model
    rng = np.random.default_rng(0)
    X = rng.normal(1.0, 3.0, size=(20, 3))
    y = rng.integers(0, 3, size=20)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    params = {**classifier.init_params(seed=2), "x_mean": mean, "x_scale": scale}
    classifier.fit(params, X, y, epochs=5, batch_size=4, lr=0.1)  # train in NumPy
    state = classifier.to_state_dict(params)
    assert list(state) == ["layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias"] + [
        "x_mean",
        "x_scale",
    ]
    assert state["x_mean"] is not params["x_mean"]  # copies
    twin.load_state_dict({key: torch.from_numpy(value) for key, value in state.items()})
    with torch.no_grad():
        np.testing.assert_allclose(
            twin(torch.tensor(X)).numpy(), classifier.forward(params, X), rtol=1e-12, atol=1e-15
        )
    opt = torch.optim.SGD(twin.parameters(), lr=0.1)  # continue in PyTorch
    for _ in range(3):
        opt.zero_grad()
        out = twin(torch.tensor(X))
        torch.nn.functional.nll_loss(torch.log(out), torch.tensor(y)).backward()
        opt.step()
    back = classifier.from_state_dict(twin.state_dict())  # and back to NumPy
    assert back.keys() == params.keys() - {"classes"}
    np.testing.assert_array_equal(back["x_mean"], mean)
    with torch.no_grad():
        expected = twin(torch.tensor(X)).numpy()
    np.testing.assert_allclose(classifier.forward(back, X), expected, rtol=1e-12, atol=1e-15)
    for key in classifier.PARAMETERS:
        assert not np.shares_memory(back[key], twin.state_dict()[state_key(key)].numpy())


def state_key(name: str) -> str:
    return f"layer{name[1:]}.{'weight' if name[0] == 'W' else 'bias'}"


def test_batch_norm_state_round_trips_through_torch_naming() -> None:
    torch = torch_or_skip()
    spec = load_spec("batchnorm_mlp")
    module = load_module(generate(spec))
    twin = TorchTwin(torch, spec).model
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(16, 64)), rng.integers(0, 10, size=16)
    params = module.init_params(seed=0)
    module.fit(params, X, y, epochs=2, batch_size=8, lr=0.01, optimizer="adam")
    state = module.to_state_dict(params)
    assert set(state) == set(twin.state_dict())  # torch's own keys, num_batches_tracked too
    assert state["layer2.num_batches_tracked"].dtype == np.int64
    assert state["layer2.num_batches_tracked"].shape == ()
    np.testing.assert_array_equal(state["x_mean"], np.zeros(64))
    np.testing.assert_array_equal(state["x_scale"], np.ones(64))
    twin.load_state_dict({key: torch.from_numpy(value) for key, value in state.items()})
    twin.eval()
    with torch.no_grad():
        expected = twin(torch.tensor(X)).numpy()
    np.testing.assert_allclose(module.forward(params, X), expected, rtol=1e-11, atol=1e-14)
    back = module.from_state_dict(twin.state_dict())
    assert back.keys() == params.keys()  # zeros and ones: no standardization
    for key in params:
        np.testing.assert_array_equal(back[key], params[key])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_from_state_dict_keeps_the_dtype_and_copies(regression: object, dtype: type) -> None:
    params = regression.init_params(seed=1, dtype=dtype)
    state = regression.to_state_dict(params)
    assert state["x_mean"].dtype == dtype
    back = regression.from_state_dict(state)
    assert back.keys() == params.keys()
    for key in params:
        assert back[key].dtype == dtype and not np.shares_memory(back[key], state[state_key(key)])
        np.testing.assert_array_equal(back[key], params[key])
    state["x_scale"] = np.full(3, 2.0, dtype)  # only the scale differs from the identity
    back = regression.from_state_dict(state)
    np.testing.assert_array_equal(back["x_mean"], np.zeros(3))
    np.testing.assert_array_equal(back["x_scale"], np.full(3, 2.0))
    del state["x_mean"], state["x_scale"]  # a model without the buffers
    assert regression.from_state_dict(state).keys() == params.keys()


def test_from_state_dict_takes_torch_tensors(regression: object) -> None:
    torch = torch_or_skip()
    params = regression.init_params(seed=1)
    tensors = {
        k: torch.tensor(v, requires_grad=True) for k, v in regression.to_state_dict(params).items()
    }
    back = regression.from_state_dict(tensors)
    for key in params:
        np.testing.assert_array_equal(back[key], params[key])


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda s: s.pop("layer2.bias"), r"state lacks the key 'layer2.bias' \(params\['b2'\]\)"),
        (
            lambda s: s.__setitem__("0.weight", np.zeros(1)),
            "state has the unexpected key '0.weight'",
        ),
        (
            lambda s: s.__setitem__("layer1.weight", np.zeros((3, 4))),
            r"state\['layer1.weight'\] has shape \(3, 4\), expected \(4, 3\)",
        ),
        (
            lambda s: s.__setitem__("x_mean", np.zeros(4)),
            r"state\['x_mean'\] has shape \(4,\), expected \(3,\)",
        ),
        (
            lambda s: s.__setitem__("layer2.bias", np.zeros(2, np.float32)),
            r"state\['layer2.bias'\] has dtype float32, but state\['layer1.weight'\] has float64",
        ),
        (
            lambda s: s.__setitem__("layer2.bias", np.zeros(2, np.int64)),
            r"state\['layer2.bias'\] has dtype int64, expected float32 or float64",
        ),
        (
            lambda s: s.__setitem__("layer2.bias", [0.0, 0.0]),
            r"state\['layer2.bias'\] is a list, expected a NumPy array or a tensor",
        ),
    ],
)
def test_bad_state_dicts_name_the_key(regression: object, change: object, message: str) -> None:
    state = regression.to_state_dict(regression.init_params())
    change(state)
    with pytest.raises(ValueError, match=message):
        regression.from_state_dict(state)


def test_the_converters_need_no_torch() -> None:
    import ast

    source = generate(load_spec("batchnorm_mlp"))
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert "torch" not in imported and 'import_module("torch' not in source


# --- script mode: train, evaluate, predict ----------------------------------------------------


def iris_like(samples: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    y = np.arange(samples) % 3
    X = rng.normal(size=(samples, 3)) + y[:, None]
    return X, y


NAMES = np.array(["setosa", "versicolor", "virginica"])


def write_csv(path: object, X: np.ndarray, last: object = None, header: bool = True) -> None:
    lines = ["a,b,c" + (",target" if last is not None else "")] if header else []
    for i, row in enumerate(X):
        fields = [repr(float(v)) for v in row]
        if last is not None:
            fields.append(str(last[i]))
        lines.append(",".join(fields))
    text = "\n".join(lines) + "\n"
    if str(path).endswith(".gz"):
        import gzip

        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def run(module: object, capsys: object, *argv: object) -> tuple[int, str, str]:
    code = module.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def trained(classifier: object, tmp_path: object) -> tuple[dict, str]:
    X, y = iris_like()
    mean, scale = X.mean(axis=0), X.std(axis=0)
    params = {**classifier.init_params(seed=0), "x_mean": mean, "x_scale": scale}
    classifier.fit(params, X, y, epochs=20, batch_size=5, lr=0.1)
    params["classes"] = NAMES
    path = str(tmp_path / "w.npz")
    classifier.save(params, path)
    return params, path


def test_script_trains_as_before_and_with_the_word_train(
    classifier: object, tmp_path: object, capsys: object
) -> None:
    X, y = iris_like()
    data = tmp_path / "d.npz"
    np.savez(data, X=X, y=y)
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    code, out, _ = run(classifier, capsys, data, "--epochs", "3", "--out", one)
    assert code == 0 and out.splitlines()[-1].startswith("final: train_loss=")
    assert "train_accuracy=" in out.splitlines()[-1]
    code, again, _ = run(classifier, capsys, "train", data, "--epochs", "3", "--out", two)
    assert code == 0 and again == out.replace(str(one), str(two))
    for key, value in classifier.load(str(one)).items():
        np.testing.assert_array_equal(classifier.load(str(two))[key], value)
    schedule = [
        "--schedule",
        "step",
        "--step-size",
        "1",
        "--gamma",
        "0.5",
        "--optimizer",
        "rmsprop",
    ]
    code, out, _ = run(classifier, capsys, data, "--epochs", "3", "--out", two, *schedule)
    assert code == 0
    params = classifier.init_params(seed=0)
    classifier.fit(
        params,
        X,
        y,
        epochs=3,
        batch_size=32,
        lr=0.1,
        optimizer="rmsprop",
        schedule="step",
        step_size=1,
        gamma=0.5,
    )
    np.testing.assert_array_equal(classifier.load(str(two))["W1"], params["W1"])


@pytest.mark.parametrize("labels", ["names", "indices", "npz"])
def test_evaluate_prints_the_loss_and_accuracy(
    classifier: object, trained: tuple, tmp_path: object, capsys: object, labels: str
) -> None:
    params, weights = trained
    X, y = iris_like()
    if labels == "npz":
        data = tmp_path / "d.npz"
        np.savez(data, X=X, y=y)
    else:
        data = tmp_path / "d.csv.gz" if labels == "indices" else tmp_path / "d.csv"
        write_csv(data, X, NAMES[y] if labels == "names" else y)
    code, out, err = run(classifier, capsys, "evaluate", data, "--weights", weights)
    assert code == 0, err
    accuracy = float(np.mean(classifier.predict(params, X) == y))
    expected = f"final: loss={classifier.loss(params, X, y)!r} accuracy={accuracy!r}"
    assert out.splitlines()[-1] == expected
    assert accuracy > 0.6


def test_evaluate_a_regression_prints_the_rmse(
    regression: object, tmp_path: object, capsys: object
) -> None:
    X, Y = regression_data()
    params = regression.init_params(seed=0)
    weights = str(tmp_path / "r.npz")
    regression.save(params, weights)
    data = tmp_path / "r.csv"
    data.write_text("\n".join(",".join(map(repr, row)) for row in np.hstack([X, Y]).tolist()))
    code, out, err = run(regression, capsys, "evaluate", data, "--weights", weights)
    assert code == 0, err
    rmse = float(np.sqrt(np.mean((regression.forward(params, X) - Y) ** 2)))
    assert out.splitlines()[-1] == f"final: loss={regression.loss(params, X, Y)!r} rmse={rmse!r}"
    code, out, err = run(regression, capsys, "predict", data, "--weights", weights)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "y1,y2" and len(lines) == 11
    table = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    np.testing.assert_array_equal(table, regression.forward(params, X))


@pytest.mark.parametrize("columns", ["features", "with targets"])
def test_predict_writes_labels_and_probabilities(
    classifier: object, trained: tuple, tmp_path: object, capsys: object, columns: str
) -> None:
    params, weights = trained
    X, y = iris_like()
    data = tmp_path / "d.csv"
    write_csv(data, X, NAMES[y] if columns == "with targets" else None, header=False)
    code, out, err = run(classifier, capsys, "predict", data, "--weights", weights)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "label,p_setosa,p_versicolor,p_virginica"
    rows = [line.split(",") for line in lines[1:]]
    assert [row[0] for row in rows] == NAMES[classifier.predict(params, X)].tolist()
    probabilities = np.array([[float(v) for v in row[1:]] for row in rows])
    np.testing.assert_array_equal(probabilities, classifier.forward(params, X))
    out_path = tmp_path / "p.csv"
    code, printed, _ = run(
        classifier, capsys, "predict", data, "--weights", weights, "-o", out_path
    )
    assert code == 0 and out_path.read_text(encoding="utf-8") == out
    assert printed == f"wrote 30 predictions to {out_path}\n"


def test_predict_without_class_names_writes_indices(
    classifier: object, tmp_path: object, capsys: object
) -> None:
    params = classifier.init_params(seed=1)
    weights = str(tmp_path / "w.npz")
    classifier.save(params, weights)
    X, _ = iris_like(6)
    data = tmp_path / "x.npz"
    np.savez(data, X=X)  # no y: fine for predict
    code, out, err = run(classifier, capsys, "predict", data, "--weights", weights)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "label,p_0,p_1,p_2"
    assert [line.split(",")[0] for line in lines[1:]] == [
        str(v) for v in classifier.predict(params, X)
    ]


def test_predict_of_one_sigmoid_output(tmp_path: object, capsys: object) -> None:
    module = module_of([{"units": 1, "activation": "sigmoid"}], loss="binary_cross_entropy")
    params = {**module.init_params(seed=3), "classes": np.array(["no", "yes"])}
    weights = str(tmp_path / "w.npz")
    module.save(params, weights)
    X = np.random.default_rng(0).normal(size=(8, 3))
    data = tmp_path / "x.csv"
    write_csv(data, X)
    code, out, err = run(module, capsys, "predict", data, "--weights", weights)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "label,p_yes"
    p = module.forward(params, X)[:, 0]
    assert [line.split(",")[0] for line in lines[1:]] == ["yes" if v > 0.5 else "no" for v in p]
    write_csv(data, X, np.where(p > 0.5, "yes", "no"))
    code, out, err = run(module, capsys, "evaluate", data, "--weights", weights)
    assert code == 0, err and out.splitlines()[-1].endswith(" accuracy=1.0")


def test_an_image_net_predicts_from_flat_csv_rows(tmp_path: object, capsys: object) -> None:
    module = load_module(generate(load_spec("digits_cnn")))
    params = module.init_params(seed=0)
    weights = str(tmp_path / "w.npz")
    module.save(params, weights)
    X = np.random.default_rng(0).uniform(0, 16, size=(4, 64))
    data = tmp_path / "x.csv"
    data.write_text("\n".join(",".join(map(repr, row)) for row in X.tolist()) + "\n")
    code, out, err = run(module, capsys, "predict", data, "--weights", weights)
    assert code == 0, err
    assert out.splitlines()[0] == "label," + ",".join(f"p_{k}" for k in range(10))
    labels = [int(line.split(",")[0]) for line in out.splitlines()[1:]]
    assert labels == module.predict(params, X.reshape(4, 1, 8, 8)).tolist()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["evaluate", "{csv_names_bad}", "--weights", "{weights}"], "unknown class 'daisy'"),
        (["evaluate", "{csv_features}", "--weights", "{weights}"], "expected 4 columns, found 3"),
        (["evaluate", "{x_npz}", "--weights", "{weights}"], "expected arrays X and y"),
        (["predict", "{csv_features}"], "the following arguments are required: --weights"),
        (["predict", "{csv_features}", "--weights", "{csv_features}"], "not a .npz file"),
        (["predict", "{csv_features}", "--weights", "{x_npz}"], "params has keys"),
        (["predict", "{csv_features}", "--weights", "{tmp}/none.npz"], "No such file"),
        (["predict", "{tmp}/none.csv", "--weights", "{weights}"], "No such file"),
        (["predict", "{tmp}/data.txt", "--weights", "{weights}"], "expected a .npz, .csv"),
        (["predict", "{csv_ragged}", "--weights", "{weights}"], "row 2 has 2 columns"),
        (["predict", "{csv_text}", "--weights", "{weights}"], "row 2 has a feature that is not"),
        (["predict", "{csv_nan}", "--weights", "{weights}"], "NaN or infinite"),
        (["evaluate", "{csv_float_label}", "--weights", "{weights}"], "is not an integer"),
        (["evaluate", "{csv_label_range}", "--weights", "{weights}"], "class labels outside"),
    ],
)
def test_bad_script_input_is_one_line_and_exit_2(
    classifier: object,
    trained: tuple,
    tmp_path: object,
    capsys: object,
    argv: list,
    message: str,
) -> None:
    X, y = iris_like(4)
    files = {"tmp": tmp_path, "weights": trained[1]}
    for name, last in (("csv_names_bad", ["daisy"] * 4), ("csv_features", None)):
        write_csv(tmp_path / f"{name}.csv", X, last)
        files[name] = tmp_path / f"{name}.csv"
    (tmp_path / "csv_ragged.csv").write_text("1,2,3\n1,2\n")
    (tmp_path / "csv_text.csv").write_text("1,2,3\n1,x,3\n")
    (tmp_path / "csv_nan.csv").write_text("1,2,3\n1,nan,3\n")
    (tmp_path / "csv_float_label.csv").write_text("1,2,3,0\n1,2,3,1.5\n")
    (tmp_path / "csv_label_range.csv").write_text("1,2,3,0\n1,2,3,7\n")
    for name in ("csv_ragged", "csv_text", "csv_nan", "csv_float_label", "csv_label_range"):
        files[name] = tmp_path / f"{name}.csv"
    np.savez(tmp_path / "x.npz", X=X)
    files["x_npz"] = tmp_path / "x.npz"
    (tmp_path / "data.txt").write_text("1,2,3\n")
    code, out, err = run(classifier, capsys, *(a.format(**files) for a in argv))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert "Traceback" not in err


def test_the_file_runs_as_a_script(trained: tuple, tmp_path: object) -> None:
    import subprocess
    import sys

    source = generate(
        from_dict(
            {
                "name": "net",
                "inputs": 3,
                "loss": "cross_entropy",
                "layers": [
                    {"units": 5, "activation": "relu"},
                    {"units": 3, "activation": "softmax"},
                ],
            }
        )
    )
    script = tmp_path / "net.py"
    script.write_text(source, encoding="utf-8")
    X, y = iris_like()
    data = tmp_path / "d.csv"
    write_csv(data, X, NAMES[y])
    run_script = [sys.executable, str(script)]
    result = subprocess.run(
        [*run_script, "evaluate", str(data), "--weights", trained[1]],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("final: loss=")
    result = subprocess.run([*run_script, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "net.py predict DATA --weights W.npz" in result.stdout


def test_predict_of_several_sigmoid_outputs_names_those_above_one_half(
    tmp_path: object, capsys: object
) -> None:
    module = module_of([{"units": 3, "activation": "sigmoid"}], loss="binary_cross_entropy")
    params = {**module.init_params(seed=0), "classes": np.array(["red", "green", "blue"])}
    params["W1"] = np.array([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0]])
    weights = str(tmp_path / "w.npz")
    module.save(params, weights)
    X = np.array([[1.0, 1.0, -1.0], [-1.0, -1.0, -1.0], [-1.0, 1.0, 1.0]])
    data = tmp_path / "x.npz"
    np.savez(data, X=X)
    code, out, err = run(module, capsys, "predict", data, "--weights", weights)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "label,p_red,p_green,p_blue"
    assert [line.split(",")[0] for line in lines[1:]] == ["red;green", "", "green;blue"]
