"""Own-data reference benchmark: ``symbackprop.training.train`` on csv files, beside a PyTorch
float64 twin and scikit-learn's MLP, on scikit-learn's bundled datasets.

Usage (from the repository root, with the package installed)::

    python benchmarks/own_data.py [--seeds 3] [--json out.json]

Needs scikit-learn (the datasets and its column); torch is optional (without it the twin's
columns read ``n/a``).  ``pip install -r benchmarks/requirements.txt`` has both.

What is trained
---------------
Five small networks, each a spec written below as TOML text (one hidden tanh layer of 16 or
32 units, Adam with betas 0.9/0.999 and eps 1e-8, no l2):

============== ======= ===================== ==================== ===== ====== =====
dataset        samples network               loss                 lr    epochs batch
============== ======= ===================== ==================== ===== ====== =====
iris           150     4-16 tanh-3 softmax   cross_entropy        0.01  100    16
wine           178     13-16 tanh-3 softmax  cross_entropy        0.01  100    16
breast_cancer  569     30-16 tanh-1 sigmoid  binary_cross_entropy 0.003 50     32
diabetes       442     10-16 tanh-1 identity mse (½ Σ per sample) 0.02  100    32
digits         1,797   64-32 tanh-10 softmax cross_entropy        0.003 30     64
============== ======= ===================== ==================== ===== ====== =====

Every dataset but digits is first written as a csv (features, then the target in the last
column, with a header row; iris with its class *names* as the labels, so that the csv's
class-name path is exercised; numbers written with ``repr``, so they read back exactly);
digits is the bundled ``--data digits``.  Diabetes's target stays in its own units (25-346).
Its settings keep the training out of a chaotic regime: at lr 0.05 for 200 epochs the twin
and the generated fit agree to 1e-15 after 10 epochs, 2e-9 after 50 and only 2e-2 after 200
(rounding differences amplified while the test RMSE rises again).

Per seed s in 0..N-1, three trainers on the same split and the same standardized features:

(a) ``symbackprop``: ``train(spec, csv, options(spec, seed=s), standardize=True,
    test_fraction=0.2, split_seed=0)``: derivation, code generation, the certificate on a
    batch of the data, then the generated ``fit``.  The split is fixed (``split_seed=0``,
    stratified for classification), so ``s`` only drives the initialisation and the batch
    order.  Its CPU column is the whole call; ``fit CPU`` is the generated ``fit`` alone, run
    again from ``init_params(seed=s)`` on the same standardized arrays (it must end at
    train()'s parameters bit for bit, else the script exits 1).
(b) ``torch twin``: ``nn.Linear`` layers float64, started from the generated module's
    ``init_params(seed=s)``, fed the generated ``fit``'s batch order
    (``numpy.random.default_rng(s).permutation`` per epoch, last partial batch kept),
    ``torch.optim.Adam`` with the same settings, on ``(X - x_mean) / x_scale`` with train()'s
    own ``scaling``; losses as DESIGN §3: ``F.cross_entropy`` on logits (mean),
    ``F.binary_cross_entropy_with_logits`` (mean), and ½ Σ (ŷ − y)² per sample, mean over the
    batch.  ``max |Δparam|`` is the largest difference of any final parameter from (a)'s,
    over every seed.
(c) ``sklearn``: ``MLPClassifier`` / ``MLPRegressor`` with the same hidden layer,
    activation, Adam settings, batch size and epochs (``tol=0``, ``n_iter_no_change`` out of
    reach, so every epoch runs; ``alpha=0``), ``random_state=s``, on the same training rows
    standardized by a ``StandardScaler`` fitted on them.  Its loss functions are the same
    (log-loss with a logistic output for one class column, softmax otherwise; half the
    squared error).  Unmatched: its Glorot-uniform initialisation of weights and biases,
    its own shuffling and its Adam's folded bias correction.

Reported: test accuracy (classification) or RMSE (regression, in the target's units) as
mean ± sample std over the seeds (ddof 1; 0 for one seed), and mean CPU seconds per seed
(``time.process_time``, one thread: the BLAS thread variables are set to 1 before NumPy
loads and ``torch.set_num_threads(1)``).  ``--json PATH`` writes every number, per seed.
"""

from __future__ import annotations

import os

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
for _key in THREAD_VARS:  # before NumPy (or anything that loads a BLAS) is imported
    os.environ[_key] = "1"

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from symbackprop.spec import NetworkSpec, load_spec  # noqa: E402
from symbackprop.training import TrainResult, options, train  # noqa: E402

SPLIT_SEED = 0
TEST_FRACTION = 0.2

# name: (hidden units, output units, output activation, loss, lr, epochs, batch size)
DATASETS: dict[str, tuple[int, int, str, str, float, int, int]] = {
    "iris": (16, 3, "softmax", "cross_entropy", 0.01, 100, 16),
    "wine": (16, 3, "softmax", "cross_entropy", 0.01, 100, 16),
    "breast_cancer": (16, 1, "sigmoid", "binary_cross_entropy", 0.003, 50, 32),
    "diabetes": (16, 1, "identity", "mse", 0.02, 100, 32),
    "digits": (32, 10, "softmax", "cross_entropy", 0.003, 30, 64),
}

SPEC_TEMPLATE = """\
name = "{name}_mlp"
inputs = {inputs}
loss = "{loss}"

[[layers]]
units = {hidden}
activation = "tanh"

[[layers]]
units = {outputs}
activation = "{output}"

[train]
optimizer = "adam"
lr = {lr}
epochs = {epochs}
batch_size = {batch}
seed = 0
"""


def _cpu() -> float:
    return time.process_time()


def bundled(name: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str] | None]:
    """(X, y, feature names, class names or None) of a scikit-learn bundled dataset."""
    import sklearn.datasets as sets

    loaded = getattr(sets, f"load_{name}")()
    names = list(loaded.target_names) if name == "iris" else None
    return loaded.data, loaded.target, list(loaded.feature_names), names


def write_csv(path: Path, X: np.ndarray, y: np.ndarray, features: list[str], classes) -> None:  # noqa: ANN001
    """Features then the target, a header row; numbers by repr (read back exactly);
    ``classes``: the label column holds the class names instead of their numbers."""
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([f.replace(",", " ") for f in features] + ["target"])
        for row, target in zip(X, y, strict=True):
            label = classes[int(target)] if classes is not None else repr(float(target))
            writer.writerow([repr(float(v)) for v in row] + [label])


def make_spec(name: str, inputs: int, folder: Path) -> NetworkSpec:
    hidden, outputs, output, loss, lr, epochs, batch = DATASETS[name]
    text = SPEC_TEMPLATE.format(
        name=name,
        inputs=inputs,
        loss=loss,
        hidden=hidden,
        outputs=outputs,
        output=output,
        lr=lr,
        epochs=epochs,
        batch=batch,
    )
    path = folder / f"{name}_mlp.toml"
    path.write_text(text)
    return load_spec(path)


# --- (a) symbackprop -------------------------------------------------------------------------


def run_symbackprop(spec: NetworkSpec, source: str, seed: int) -> tuple[TrainResult, float]:
    start = _cpu()
    result = train(
        spec,
        source,
        options(spec, seed=seed),
        standardize=True,
        test_fraction=TEST_FRACTION,
        split_seed=SPLIT_SEED,
    )
    return result, _cpu() - start


def standardized(result: TrainResult, X: np.ndarray) -> np.ndarray:
    mean, scale = result.scaling
    return (np.asarray(X) - mean) / scale


def refit(result: TrainResult, seed: int) -> tuple[dict[str, np.ndarray], float]:
    """The generated fit alone, from init_params(seed), on train()'s standardized arrays."""
    opts = result.options
    params = result.module.init_params(seed=seed)
    X = standardized(result, result.dataset.X_train)
    start = _cpu()
    result.module.fit(
        params,
        X,
        result.dataset.y_train,
        epochs=opts.epochs,
        batch_size=opts.batch_size,
        lr=opts.lr,
        optimizer=opts.optimizer,
        seed=seed,
    )
    return params, _cpu() - start


# --- (b) the PyTorch float64 twin ------------------------------------------------------------


def run_torch(spec: NetworkSpec, result: TrainResult, seed: int) -> tuple[float, float, float]:
    """(test metric, training CPU seconds, max |param difference| from train()'s)."""
    import torch
    import torch.nn.functional as F

    opts = result.options
    data = result.dataset
    init = result.module.init_params(seed=seed)
    layers = []
    for index, layer in enumerate(spec.layers, start=1):
        linear = torch.nn.Linear(spec.sizes[index - 1], layer.units, dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.array(init[f"W{index}"])))
            linear.bias.copy_(torch.from_numpy(np.array(init[f"b{index}"])))
        layers.append((linear, layer.activation.name))
    parameters = [p for linear, _ in layers for p in (linear.weight, linear.bias)]
    optimizer = torch.optim.Adam(
        parameters, lr=opts.lr, betas=(opts.beta1, opts.beta2), eps=opts.eps
    )

    def outputs(X: torch.Tensor) -> torch.Tensor:  # the last layer's pre-activation
        for linear, activation in layers[:-1]:
            X = linear(X)
            if activation == "tanh":
                X = torch.tanh(X)
            elif activation != "identity":
                raise ValueError(f"no twin here for activation {activation!r}")
        return layers[-1][0](X)

    loss_name = spec.loss.name

    def loss(Z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if loss_name == "cross_entropy":
            return F.cross_entropy(Z, y)
        if loss_name == "binary_cross_entropy":
            return F.binary_cross_entropy_with_logits(Z[:, 0], y.to(torch.float64))
        if loss_name == "mse":  # DESIGN §3: 1/2 sum over outputs per sample, mean over samples
            return 0.5 * ((Z - y) ** 2).sum(dim=1).mean()
        raise ValueError(f"no twin here for loss {loss_name!r}")

    X = torch.from_numpy(standardized(result, data.X_train))
    y = torch.from_numpy(np.array(data.y_train))
    rng = np.random.default_rng(seed)  # the generated fit's batch order
    start = _cpu()
    for _ in range(opts.epochs):
        order = torch.from_numpy(rng.permutation(len(X)))
        for first in range(0, len(X), opts.batch_size):
            batch = order[first : first + opts.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss(outputs(X[batch]), y[batch]).backward()
            optimizer.step()
    cpu = _cpu() - start
    with torch.no_grad():
        Z = outputs(torch.from_numpy(standardized(result, data.X_test))).numpy()
    metric = _metric(loss_name, Z, np.asarray(data.y_test))
    gap = 0.0
    for index, (linear, _) in enumerate(layers, start=1):
        for key, value in ((f"W{index}", linear.weight), (f"b{index}", linear.bias)):
            gap = max(gap, float(np.max(np.abs(value.detach().numpy() - result.params[key]))))
    return metric, cpu, gap


def _metric(loss_name: str, Z: np.ndarray, y: np.ndarray) -> float:
    """Accuracy from last-layer pre-activations, or RMSE over every target number."""
    if loss_name == "cross_entropy":
        return float(np.mean(Z.argmax(axis=1) == y))
    if loss_name == "binary_cross_entropy":
        return float(np.mean((Z[:, 0] > 0).astype(np.int64) == y))
    return math.sqrt(float(np.mean((Z - y.reshape(Z.shape)) ** 2)))


# --- (c) scikit-learn ------------------------------------------------------------------------


def run_sklearn(spec: NetworkSpec, result: TrainResult, seed: int) -> tuple[float, float]:
    """(test metric, training CPU seconds) of scikit-learn's MLP with the nearest settings."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.preprocessing import StandardScaler

    opts = result.options
    data = result.dataset
    classification = result.classification
    model_class = MLPClassifier if classification else MLPRegressor
    model = model_class(
        hidden_layer_sizes=tuple(layer.units for layer in spec.layers[:-1]),
        activation=spec.layers[0].activation.name,
        solver="adam",
        alpha=spec.l2,
        batch_size=opts.batch_size,
        learning_rate_init=opts.lr,
        max_iter=opts.epochs,
        shuffle=True,
        random_state=seed,
        tol=0.0,
        n_iter_no_change=10**9,
        early_stopping=False,
        beta_1=opts.beta1,
        beta_2=opts.beta2,
        epsilon=opts.eps,
    )
    scaler = StandardScaler().fit(np.asarray(data.X_train))
    X_train = scaler.transform(np.asarray(data.X_train))
    X_test = scaler.transform(np.asarray(data.X_test))
    y_train = np.asarray(data.y_train)
    y_train = y_train if classification else y_train[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter reached: intended
        start = _cpu()
        model.fit(X_train, y_train)
        cpu = _cpu() - start
    if model.n_iter_ != opts.epochs:
        raise RuntimeError(f"sklearn stopped after {model.n_iter_} of {opts.epochs} epochs")
    predicted = model.predict(X_test)
    y_test = np.asarray(data.y_test)
    if classification:
        return float(np.mean(predicted == y_test)), cpu
    return math.sqrt(float(np.mean((predicted - y_test[:, 0]) ** 2))), cpu


# --- running and reporting -------------------------------------------------------------------


def _available(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:
        return None


def run_dataset(
    name: str, seeds: int, folder: Path, use_torch: bool, log: Callable[[str], None]
) -> dict[str, object]:
    X, y, features, classes = bundled(name)
    if name == "digits":
        source = "digits"
    else:
        source = str(folder / f"{name}.csv")
        write_csv(Path(source), X, y, features, classes)
    spec = make_spec(name, X.shape[1], folder)
    runs = []
    indices = None
    for seed in range(seeds):
        result, cpu = run_symbackprop(spec, source, seed)
        if result.diverged:
            raise RuntimeError(f"{name} seed {seed}: symbackprop diverged: {result.stop_reason}")
        split = {part: rows.tolist() for part, rows in result.dataset.indices.items()}
        if indices is None:
            indices = split
        elif split != indices:
            raise RuntimeError(f"{name} seed {seed}: the split moved with the seed")
        if name == "iris" and result.dataset.class_names != tuple(classes):
            raise RuntimeError(f"iris: class names read as {result.dataset.class_names}")
        params, fit_cpu = refit(result, seed)
        for key, value in params.items():
            if not np.array_equal(value, result.params[key]):
                raise RuntimeError(f"{name} seed {seed}: fit alone ended elsewhere ({key})")
        run = {
            "seed": seed,
            "symbackprop": result.test_metric,
            "symbackprop_cpu": cpu,
            "fit_cpu": fit_cpu,
            "certificate_passed": result.certificate.passed,
        }
        if use_torch:
            metric, torch_cpu, gap = run_torch(spec, result, seed)
            run.update(torch=metric, torch_cpu=torch_cpu, max_param_difference=gap)
        metric, sk_cpu = run_sklearn(spec, result, seed)
        run.update(sklearn=metric, sklearn_cpu=sk_cpu)
        log(
            f"{name} seed {seed}: "
            + ", ".join(f"{k} {v:.4g}" for k, v in run.items() if isinstance(v, float))
        )
        runs.append(run)
    hidden, outputs, output, loss, lr, epochs, batch = DATASETS[name]
    return {
        "dataset": name,
        "source": "bundled digits" if name == "digits" else "csv",
        "network": "-".join(map(str, spec.sizes)),
        "output": output,
        "loss": loss,
        "metric": "accuracy" if result.classification else "rmse",
        "train": {"optimizer": "adam", "lr": lr, "epochs": epochs, "batch_size": batch},
        "n_train": len(indices["train"]),
        "n_test": len(indices["test"]),
        "runs": runs,
    }


def benchmark(seeds: int, log: Callable[[str], None]) -> dict[str, object]:
    torch_version = _available("torch")
    if torch_version is not None:
        import torch

        torch.set_num_threads(1)
    if _available("sklearn") is None:
        raise SystemExit("own_data.py needs scikit-learn (its datasets): pip install scikit-learn")
    with tempfile.TemporaryDirectory() as folder:
        rows = [
            run_dataset(name, seeds, Path(folder), torch_version is not None, log)
            for name in DATASETS
        ]
    return {
        "split": {"seed": SPLIT_SEED, "test_fraction": TEST_FRACTION, "standardize": True},
        "seeds": list(range(seeds)),
        "threads": {key: os.environ.get(key) for key in THREAD_VARS},
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "sklearn": _available("sklearn"),
            "torch": torch_version,
        },
        "datasets": rows,
    }


def _spread(values: list[float], percent: bool) -> str:
    if not values:
        return "n/a"
    scale = 100.0 if percent else 1.0
    mean = scale * float(np.mean(values))
    std = scale * (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
    return f"{mean:.2f} ± {std:.2f}" + (" %" if percent else "")


def markdown(report: dict[str, object]) -> str:
    lines = [
        f"Test metric, mean ± std over seeds {report['seeds'][0]}..{report['seeds'][-1]}, on "
        f"the fixed split (split seed {report['split']['seed']}, test fraction "
        f"{report['split']['test_fraction']}), standardized features; CPU seconds per seed, "
        "one thread.",
        "",
        "| dataset | network | train/test | metric | symbackprop | torch twin | max abs param "
        "diff | sklearn | CPU s: train() | fit alone | torch | sklearn |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["datasets"]:
        runs = row["runs"]
        percent = row["metric"] == "accuracy"

        def values(key: str, runs: list[dict] = runs) -> list[float]:
            return [run[key] for run in runs if key in run]

        def cpu(key: str) -> str:
            found = values(key)
            return f"{np.mean(found):.2f}" if found else "n/a"

        gaps = values("max_param_difference")
        lines.append(
            f"| {row['dataset']} | {row['network']} {row['output']} | {row['n_train']}/"
            f"{row['n_test']} | {row['metric']} | {_spread(values('symbackprop'), percent)} | "
            f"{_spread(values('torch'), percent)} | "
            f"{f'{max(gaps):.1e}' if gaps else 'n/a'} | {_spread(values('sklearn'), percent)} | "
            f"{cpu('symbackprop_cpu')} | {cpu('fit_cpu')} | {cpu('torch_cpu')} | "
            f"{cpu('sklearn_cpu')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="symbackprop's train() on own csv data beside a PyTorch twin and sklearn."
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = benchmark(args.seeds, log)
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
