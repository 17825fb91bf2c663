"""The generated module for image layers (DESIGN §2c): conv2d, max_pool2d, avg_pool2d and
flatten against torch.nn.functional built by hand, and against finite differences.

The reference forward pass is written here from the spec's plain data with F.conv2d,
F.max_pool2d, F.avg_pool2d and flatten (nothing of symbackprop's own PyTorch witness), the
generated module's parameters copied in.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from symbackprop.checkpoint import load_module
from symbackprop.codegen import generate
from symbackprop.derive import derive
from symbackprop.spec import from_dict

ROOT = Path(__file__).resolve().parent.parent


def conv(filters, kernel, activation="relu"):
    return {"kind": "conv2d", "filters": filters, "kernel": kernel, "activation": activation}


def spec_of(name, inputs, layers, loss="cross_entropy", l2=0.0):
    return {"name": name, "inputs": inputs, "loss": loss, "l2": l2, "layers": layers}


DIGITS_CNN = spec_of(
    "digits_cnn",
    [1, 8, 8],
    [
        {**conv(8, 3), "padding": 1},
        {"kind": "max_pool2d", "kernel": 2},
        {**conv(16, 3), "padding": 1},
        {"kind": "flatten"},
        {"units": 10, "activation": "softmax"},
    ],
)

# a grid of small nets: kernels (square, oblong), strides, padding, channels, both pools
# (tiling, overlapping, leaving a margin), flatten, dense, several activations, both losses
NETS = {
    "digits_cnn": DIGITS_CNN,
    "strided": spec_of(
        "strided",
        [2, 7, 6],
        [
            {**conv(3, [3, 2], "tanh"), "stride": [2, 1], "padding": [1, 0]},
            {"kind": "avg_pool2d", "kernel": 2, "stride": 1},
            {**conv(4, 2, "identity"), "bias": False},
            {"kind": "flatten"},
            {"units": 5, "activation": "sigmoid"},
            {"units": 3, "activation": "softmax"},
        ],
    ),
    "overlap_mse": spec_of(
        "overlap_mse",
        [3, 9, 9],
        [
            {**conv(4, 3, {"name": "leaky_relu", "slope": 0.1}), "padding": 2, "stride": 2},
            {"kind": "max_pool2d", "kernel": 3, "stride": [2, 1]},
            {"kind": "flatten"},
            {"units": 4, "activation": "elu"},
            {"units": 2, "activation": "identity"},
        ],
        loss="mse",
        l2=0.01,
    ),
    "margin": spec_of(
        "margin",
        [1, 7, 7],
        [
            conv(2, 2, "silu"),
            {"kind": "max_pool2d", "kernel": 4},  # 6x6 -> 1x1: a margin of 2 rows and columns
            {**conv(3, 1), "padding": 1},
            {"kind": "avg_pool2d", "kernel": [2, 3]},
            {"kind": "flatten"},
            {"units": 3, "activation": "softmax"},
        ],
    ),
    "pool_first": spec_of(
        "pool_first",
        [2, 6, 6],
        [
            {"kind": "avg_pool2d", "kernel": 2},
            {**conv(3, 3), "padding": 1},
            {"kind": "max_pool2d", "kernel": 2, "stride": 1},
            {"kind": "flatten"},
            {"units": 4, "activation": "softmax"},
        ],
    ),
    "flat_first": spec_of(
        "flat_first",
        [2, 3, 3],
        [{"kind": "flatten"}, {"units": 4, "activation": "tanh"}, {"units": 2}],
        loss="mse",
    ),
}


@pytest.fixture(scope="module")
def modules():
    return {name: load_module(generate(from_dict(data)), name) for name, data in NETS.items()}


def problem(data, module, batch=5, seed=0, dtype=np.float64):
    """Parameters with biases moved off zero, inputs, targets (labels or real rows)."""
    rng = np.random.default_rng(seed)
    params = module.init_params(seed=seed, dtype=dtype)
    for key, value in params.items():
        if key.startswith("b"):
            value[...] = rng.normal(0.0, 0.3, size=value.shape)
    X = rng.normal(size=(batch, *data["inputs"])).astype(dtype)
    outputs = module.LAYER_SIZES[-1]
    if data["loss"] == "mse":
        Y = rng.normal(size=(batch, outputs)).astype(dtype)
    else:
        Y = rng.integers(0, outputs, size=batch)
    return params, X, Y


def pair(value):
    return tuple(value) if isinstance(value, list) else (value, value)


def torch_loss(torch, data, tensors, X, Y):
    """The spec's network and loss with torch.nn.functional, from its plain data."""
    F = torch.nn.functional
    acts = {
        "relu": F.relu,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "identity": lambda z: z,
        "softmax": lambda z: z,  # in the loss
        "elu": F.elu,
        "silu": F.silu,
    }

    def act(entry):
        spec = entry.get("activation", "identity")
        if isinstance(spec, dict):  # leaky_relu here
            return lambda z: F.leaky_relu(z, spec["slope"])
        return acts[spec]

    h = torch.from_numpy(X)
    for index, entry in enumerate(data["layers"], start=1):
        kind = entry.get("kind", "dense")
        if kind == "conv2d":
            stride, padding = pair(entry.get("stride", 1)), pair(entry.get("padding", 0))
            h = F.conv2d(h, tensors[f"W{index}"], tensors.get(f"b{index}"), stride, padding)
            h = act(entry)(h)
        elif kind in ("max_pool2d", "avg_pool2d"):
            kernel = pair(entry["kernel"])
            stride = pair(entry.get("stride", entry["kernel"]))
            pool = F.max_pool2d if kind == "max_pool2d" else F.avg_pool2d
            h = pool(h, kernel, stride)
        elif kind == "flatten":
            h = torch.flatten(h, 1)
        else:
            h = act(entry)(F.linear(h, tensors[f"W{index}"], tensors[f"b{index}"]))
    if data["loss"] == "mse":
        loss = 0.5 * ((h - torch.from_numpy(Y)) ** 2).sum(dim=1).mean()
    else:
        loss = F.cross_entropy(h, torch.from_numpy(Y))
    l2 = data.get("l2", 0.0)
    for key, value in tensors.items():
        if key.startswith("W"):
            loss = loss + 0.5 * l2 * (value**2).sum()
    return loss


def torch_gradients(data, params, X, Y):
    torch = pytest.importorskip("torch")
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    loss = torch_loss(torch, data, tensors, X, Y)
    loss.backward()
    return loss.item(), {k: t.grad.numpy() for k, t in tensors.items()}


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.mark.parametrize("name", list(NETS))
def test_gradients_and_step_equal_pytorch(modules, name):
    data, module = NETS[name], modules[name]
    params, X, Y = problem(data, module)
    value, grads = module.gradients(params, X, Y)
    expected, theirs = torch_gradients(data, params, X, Y)
    assert value == pytest.approx(expected, rel=1e-13)
    assert grads.keys() == params.keys()
    for key in params:
        assert rel(grads[key], theirs[key]) < 1e-12, key
    # train_step takes the same step, and says the loss before it
    before = {k: v.copy() for k, v in params.items()}
    assert module.train_step(params, X, Y, 0.1) == pytest.approx(expected, rel=1e-13)
    for key in params:
        assert rel(params[key], before[key] - 0.1 * theirs[key]) < 1e-12, key


def test_max_pool_sends_the_error_to_the_first_maximum_of_each_window(modules):
    """Ties everywhere (integer inputs, all-zero windows after ReLU): PyTorch's rule."""
    data, module = NETS["digits_cnn"], modules["digits_cnn"]
    params, _, Y = problem(data, module, batch=4)
    rng = np.random.default_rng(3)
    X = rng.integers(-1, 2, size=(4, 1, 8, 8)).astype(np.float64)
    params["W1"][...] = np.rint(params["W1"] * 2)
    params["b1"][...] = 0.0
    _, grads = module.gradients(params, X, Y)
    _, theirs = torch_gradients(data, params, X, Y)
    for key in params:
        assert rel(grads[key], theirs[key]) < 1e-12, key


@pytest.mark.parametrize("name", ["strided", "overlap_mse"])
def test_gradients_equal_finite_differences(modules, name):
    data, module = NETS[name], modules[name]
    params, X, Y = problem(data, module, batch=3, seed=1)
    _, grads = module.gradients(params, X, Y)
    rng = np.random.default_rng(2)
    h = 1e-6
    for key, value in params.items():
        for flat in rng.choice(value.size, size=min(3, value.size), replace=False):
            index = np.unravel_index(flat, value.shape)
            saved = value[index]
            value[index] = saved + h
            up = module.loss(params, X, Y)
            value[index] = saved - h
            down = module.loss(params, X, Y)
            value[index] = saved
            assert (up - down) / (2 * h) == pytest.approx(grads[key][index], abs=1e-7, rel=1e-5)


def test_float32_follows_float64(modules):
    data, module = NETS["digits_cnn"], modules["digits_cnn"]
    params, X, Y = problem(data, module, batch=8)
    single = {k: v.astype(np.float32) for k, v in params.items()}
    value, grads = module.gradients(params, X, Y)
    value32, grads32 = module.gradients(single, X.astype(np.float32), Y)
    assert value32 == pytest.approx(value, rel=1e-5)
    for key in params:
        assert grads32[key].dtype == np.float32
        assert rel(grads32[key], grads[key]) < 1e-4, key
    assert module.forward(single, X.astype(np.float32)).dtype == np.float32


def test_flat_inputs_are_read_in_c_order(modules):
    data, module = NETS["strided"], modules["strided"]
    params, X, Y = problem(data, module)
    flat = X.reshape(len(X), -1)
    np.testing.assert_array_equal(module.forward(params, flat), module.forward(params, X))
    assert module.gradients(params, flat, Y)[0] == module.gradients(params, X, Y)[0]
    assert module.predict(params, flat).shape == (len(X),)


def test_bad_image_shapes_are_refused(modules):
    module = modules["digits_cnn"]
    params = module.init_params()
    assert module.LAYER_SIZES == ((1, 8, 8), (8, 8, 8), (8, 4, 4), (16, 4, 4), 256, 10)
    for shape in ((2, 1, 8, 7), (2, 2, 8, 8), (2, 63), (0, 1, 8, 8), (1, 8, 8)):
        with pytest.raises(ValueError, match=r"X has shape .*\(batch, 1, 8, 8\) or \(batch, 64\)"):
            module.forward(params, np.zeros(shape))


def test_threads_at_once_give_the_serial_results(modules):
    data, module = NETS["digits_cnn"], modules["digits_cnn"]
    problems = [problem(data, module, batch=b, seed=s) for s, b in enumerate((16, 16, 7, 16))]
    serial = [module.gradients(p, X, Y) for p, X, Y in problems]
    results: list = [None] * len(problems)
    barrier = threading.Barrier(len(problems))
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def work(i):
        params, X, Y = problems[i]
        barrier.wait()
        results[i] = [module.gradients(params, X, Y) for _ in range(15)]

    try:
        workers = [threading.Thread(target=work, args=(i,)) for i in range(len(problems))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(previous)
    for (value, grads), runs in zip(serial, results, strict=True):
        for run_value, run_grads in runs:
            assert run_value == value
            for key in grads:
                np.testing.assert_array_equal(run_grads[key], grads[key])


def test_fit_learns_and_the_script_imports_only_numpy(modules, tmp_path):
    data, module = NETS["digits_cnn"], modules["digits_cnn"]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 1, 8, 8))
    y = (X[:, 0, :4].sum(axis=(1, 2)) > 0).astype(np.int64)  # the top half's sign
    params = module.init_params(seed=0)
    history = module.fit(params, X, y, epochs=8, batch_size=16, lr=0.05, optimizer="adam")
    assert history[-1] < 0.5 * history[0]
    source = generate(from_dict(data))
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= {"numpy", *sys.stdlib_module_names}, imported


def test_generated_conv_modules_pass_ruff(tmp_path):
    paths = []
    for name, data in NETS.items():
        path = tmp_path / f"{name}.py"
        path.write_text(generate(from_dict(data)), encoding="utf-8")
        paths.append(str(path))
    command = [sys.executable, "-m", "ruff", "check", "--no-cache"]
    command += ["--config", str(ROOT / "pyproject.toml"), *paths]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", list(NETS))
def test_the_module_cites_every_equation_of_its_kinds(name):
    import re

    derivation = derive(from_dict(NETS[name]))
    text = generate(derivation)
    cited = {int(n) for g in re.findall(r"\(eq\. ([0-9, ]+)\)", text) for n in g.split(",")}
    assert cited == set(derivation.cited)
    for key in derivation.kind_keys:
        assert derivation.number(key) in cited, key


def test_the_script_trains_on_images_from_npz_and_csv(modules, tmp_path, capsys):
    module = modules["digits_cnn"]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 1, 8, 8))
    y = rng.integers(0, 10, size=12)
    np.savez(tmp_path / "images.npz", X=X, y=y)
    table = np.column_stack([X.reshape(12, -1), y])
    np.savetxt(tmp_path / "images.csv", table, delimiter=",")
    for data in ("images.npz", "images.csv"):
        out = tmp_path / f"{data}.weights.npz"
        args = [str(tmp_path / data), "--epochs", "1", "--batch-size", "4", "--out", str(out)]
        assert module.main(args) == 0, capsys.readouterr().err
        assert module.load(out).keys() == module.PARAMETERS.keys()
    assert "train_accuracy" in capsys.readouterr().out
