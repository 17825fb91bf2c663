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
