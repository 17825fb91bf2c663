"""Reference benchmark: the generated digits_mlp trainer against scikit-learn and PyTorch.

Usage (from the repository root, with the package installed)::

    python benchmarks/digits_reference.py [--seeds 5] [--json out.json]

Optional extras for the reference columns: ``pip install -r benchmarks/requirements.txt``
(scikit-learn) and ``pip install torch``.  A column whose library is missing, or whose run
fails, reads ``n/a``; the generated module needs NumPy only.

What is trained
---------------
The bundled spec ``digits_mlp`` (examples/digits_mlp.toml): 64-64-64-10, two ReLU hidden
layers, softmax output, mean cross-entropy plus (l2/2)·Σ‖W‖² over weights only (l2 = 1e-4),
Adam (lr 0.003, betas 0.9/0.999, eps 1e-8), 30 epochs, batch 64.  Every implementation sees
exactly the same split, ``load_dataset("digits", outputs=10, classification=True,
test_fraction=0.2, seed=0)`` (1,438 training and 359 test samples, stratified); the split is
fixed, and ``--seeds N`` varies only each trainer's own seed (0..N-1), which drives weight
initialisation and mini-batch shuffling.  All three train in float64.

(a) ``generated``: ``symbackprop.codegen.generate(spec)`` imported with
    ``symbackprop.checkpoint.load_module``; ``init_params(seed=s)`` (He-normal for the ReLU
    layers, Xavier-uniform for the output layer, zero biases), then ``fit`` with the spec's
    [train] defaults and ``seed=s``.

(b) ``sklearn``: ``MLPClassifier(hidden_layer_sizes=(64, 64), activation="relu",
    solver="adam", learning_rate_init=0.003, batch_size=64, max_iter=30, shuffle=True,
    random_state=s, early_stopping=False, tol=0, n_iter_no_change=10**9)``, so that all 30
    epochs run; its Adam uses the same betas and epsilon.
    The l2 mapping: per mini-batch of B samples, scikit-learn adds (alpha / (2·B))·Σ‖W‖² to
    the mean loss (gradient (alpha / B)·W), whereas the spec adds (l2 / 2)·Σ‖W‖² (gradient
    l2·W) regardless of B.  Hence ``alpha = l2 * batch_size`` (= 0.0064), which is exact for
    the 22 full batches per epoch; the last, partial batch (1438 mod 64 = 30 samples) gets
    an effective l2 of alpha/30 ≈ 2.1·l2 in scikit-learn.  Known, unmatched differences:
    scikit-learn initialises weights *and biases* Glorot-uniform (bound sqrt(6/(fan_in +
    fan_out))) rather than He-normal, folds Adam's bias corrections into the step size (eps
    is added to sqrt(v) without bias correction), and uses its own shuffling RNG.

(c) ``torch``: the same architecture as ``nn.Linear`` layers, weights re-initialised exactly
    like the generated module (He-normal std sqrt(2/fan_in) for the ReLU layers,
    Xavier-uniform for the output layer, zero biases) from ``torch.Generator`` seeded with
    s; ``torch.optim.Adam`` with the same lr, betas and eps and ``weight_decay=l2`` on the
    weight group only (torch's Adam weight decay adds l2·W to the gradient, i.e. exactly the
    spec's (l2/2)·Σ‖W‖² term; this is not AdamW); ``F.cross_entropy`` (mean) on logits;
    mini-batches of 64 from a fresh ``torch.randperm`` each epoch, last partial batch kept.
    (Checked once by hand: started from the generated module's initial weights and fed its
    batch order, this loop and the generated ``fit`` agree to 4e-15 after all 30 epochs, so
    the two columns differ only through their random draws.)

Reported: test accuracy per seed and its mean ± sample standard deviation (ddof = 1; 0 for
one seed), and the wall time of training alone (``time.perf_counter`` around ``fit`` or the
training loop; code generation, imports and data loading excluded), with the process's CPU
time over the same span (``time.process_time``) in the JSON (``train_cpu_seconds``).  The
networks are tiny, so per-step overhead dominates: torch runs single-threaded by default
(``--torch-threads N`` changes it; 0 keeps torch's own choice, which on a small or busy
machine can be several times slower), while NumPy and scikit-learn use whatever BLAS
threading the environment sets (e.g. ``OMP_NUM_THREADS=1``).  Timings on a shared machine
are noisy; compare them within one run (``benchmarks/targets.py`` times these same trainers
in interleaved rounds, one thread, by CPU time).  The Markdown table goes to standard
output; ``--json PATH`` also writes every number, the settings, the thread count and the
library versions.  A generated seed-0 accuracy below 97 % is flagged with a WARNING line
after the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from symbackprop.checkpoint import load_module
from symbackprop.codegen import generate
from symbackprop.data import Dataset, accuracy, load_dataset
from symbackprop.spec import NetworkSpec, load_spec

SPEC_NAME = "digits_mlp"
SPLIT_SEED = 0
TEST_FRACTION = 0.2
IMPLEMENTATIONS = ("generated", "sklearn", "torch")
ACCURACY_FLOOR = 0.97  # the generated trainer's seed-0 accuracy is expected to reach this

Result = dict[str, object]  # {"seed", "accuracy", "train_seconds", ...} or {"seed", "error"}
Run = tuple[float, float, float]  # (test accuracy, training wall seconds, training CPU seconds)


def _start() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _spent(start: tuple[float, float]) -> tuple[float, float]:
    """(wall, CPU) seconds since ``_start()``."""
    return time.perf_counter() - start[0], time.process_time() - start[1]


# --- the three trainers ----------------------------------------------------------------------


def run_generated(module, spec: NetworkSpec, data: Dataset, seed: int) -> Run:
    """(test accuracy, training wall and CPU seconds) of the generated module's ``fit``."""
    train = spec.train
    params = module.init_params(seed=seed)
    start = _start()
    module.fit(
        params,
        np.asarray(data.X_train),
        np.asarray(data.y_train),
        epochs=train.epochs,
        batch_size=train.batch_size,
        lr=train.lr,
        optimizer=train.optimizer,
        seed=seed,
    )
    seconds, cpu = _spent(start)
    return accuracy(module.predict(params, data.X_test), data.y_test), seconds, cpu


def sklearn_alpha(spec: NetworkSpec) -> float:
    """scikit-learn's alpha that gives the spec's l2 gradient on a full mini-batch."""
    return spec.l2 * spec.train.batch_size


def run_sklearn(spec: NetworkSpec, data: Dataset, seed: int) -> Run:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    train = spec.train
    model = MLPClassifier(
        hidden_layer_sizes=tuple(layer.units for layer in spec.layers[:-1]),
        activation="relu",
        solver="adam",
        alpha=sklearn_alpha(spec),
        batch_size=train.batch_size,
        learning_rate_init=train.lr,
        max_iter=train.epochs,
        shuffle=True,
        random_state=seed,
        tol=0.0,
        n_iter_no_change=10**9,
        early_stopping=False,
        beta_1=train.beta1,
        beta_2=train.beta2,
        epsilon=train.eps,
    )
    X_train, y_train = np.array(data.X_train), np.array(data.y_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter reached: intended
        start = _start()
        model.fit(X_train, y_train)
        seconds, cpu = _spent(start)
    if model.n_iter_ != train.epochs:
        raise RuntimeError(f"sklearn stopped after {model.n_iter_} of {train.epochs} epochs")
    return accuracy(model.predict(np.array(data.X_test)), data.y_test), seconds, cpu


def torch_model(spec: NetworkSpec, seed: int, init: dict | None = None):
    """(layers, logits, optimizer) of the PyTorch loop, float64.

    Weights drawn like the generated module's (He-normal for the ReLU layers, Xavier-uniform
    for the softmax layer, zero biases) from ``torch.Generator`` seeded with ``seed``, or
    copied from ``init`` (the generated module's ``{"W1", "b1", ...}``); ``torch.optim.Adam``
    with the spec's settings and ``weight_decay=l2`` on the weights only.
    """
    import torch

    train = spec.train
    dtype = torch.float64
    generator = torch.Generator().manual_seed(seed)
    sizes = spec.sizes
    layers = torch.nn.ModuleList(
        torch.nn.Linear(n_in, n_out, dtype=dtype)
        for n_in, n_out in zip(sizes, sizes[1:], strict=False)
    )
    with torch.no_grad():
        for index, layer in enumerate(layers):
            fan_out, fan_in = layer.weight.shape
            if init is not None:
                layer.weight.copy_(torch.from_numpy(np.asarray(init[f"W{index + 1}"])))
                layer.bias.copy_(torch.from_numpy(np.asarray(init[f"b{index + 1}"])))
                continue
            if index < len(layers) - 1:  # ReLU layers: He-normal, as the generated module
                layer.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
            else:  # the softmax layer: Xavier-uniform, as the generated module
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                layer.weight.uniform_(-limit, limit, generator=generator)
            layer.bias.zero_()

    def logits(X: torch.Tensor) -> torch.Tensor:
        for layer in layers[:-1]:
            X = torch.relu(layer(X))
        return layers[-1](X)

    optimizer = torch.optim.Adam(
        [
            {"params": [layer.weight for layer in layers], "weight_decay": spec.l2},
            {"params": [layer.bias for layer in layers], "weight_decay": 0.0},
        ],
        lr=train.lr,
        betas=(train.beta1, train.beta2),
        eps=train.eps,
    )
    return layers, logits, optimizer, generator


def torch_steps(logits, optimizer, X, y, batches) -> None:
    """The loop's mini-batch steps: zero_grad, mean cross-entropy on logits, backward, step."""
    import torch.nn.functional as F

    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(logits(X[batch]), y[batch])
        loss.backward()
        optimizer.step()


def run_torch(spec: NetworkSpec, data: Dataset, seed: int) -> Run:
    import torch

    train = spec.train
    dtype = torch.float64
    _, logits, optimizer, generator = torch_model(spec, seed)
    X_train = torch.tensor(np.array(data.X_train), dtype=dtype)
    y_train = torch.tensor(np.array(data.y_train), dtype=torch.int64)
    X_test = torch.tensor(np.array(data.X_test), dtype=dtype)
    count = X_train.shape[0]

    def batches():
        for _ in range(train.epochs):
            order = torch.randperm(count, generator=generator)
            for first in range(0, count, train.batch_size):
                yield order[first : first + train.batch_size]

    start = _start()
    torch_steps(logits, optimizer, X_train, y_train, batches())
    seconds, cpu = _spent(start)
    with torch.no_grad():
        predicted = logits(X_test).argmax(dim=1).numpy()
    return accuracy(predicted, data.y_test), seconds, cpu


# --- running and reporting -------------------------------------------------------------------


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sklearn": None,
        "torch": None,
    }
    try:
        import sklearn

        found["sklearn"] = sklearn.__version__
    except Exception:
        pass
    try:
        import torch

        found["torch"] = torch.__version__
    except Exception:
        pass
    try:
        from importlib.metadata import version

        found["symbackprop"] = version("symbackprop")
    except Exception:
        found["symbackprop"] = None
    return found


def summarise(results: list[Result]) -> dict[str, object]:
    accuracies = [r["accuracy"] for r in results if "accuracy" in r]
    times = [r["train_seconds"] for r in results if "train_seconds" in r]
    if not results or len(accuracies) != len(results):
        return {"available": False, "per_seed": results}

    def std(values: list[float]) -> float:
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    return {
        "available": True,
        "per_seed": results,
        "accuracy_mean": float(np.mean(accuracies)),
        "accuracy_std": std(accuracies),
        "train_seconds_mean": float(np.mean(times)),
        "train_seconds_std": std(times),
        "train_seconds_total": float(np.sum(times)),
    }


def benchmark(seeds: int, torch_threads: int, log: Callable[[str], None]) -> dict[str, object]:
    spec = load_spec(SPEC_NAME)
    data = load_dataset(
        "digits",
        outputs=spec.layers[-1].units,
        classification=True,
        test_fraction=TEST_FRACTION,
        seed=SPLIT_SEED,
    )
    module = load_module(generate(spec), f"{spec.name}_generated")
    available = versions()
    runners: dict[str, Callable[[int], Run]] = {
        "generated": lambda s: run_generated(module, spec, data, s),
        "sklearn": lambda s: run_sklearn(spec, data, s),
        "torch": lambda s: run_torch(spec, data, s),
    }
    if available["torch"] is not None:
        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        torch_threads = torch.get_num_threads()
    results: dict[str, list[Result]] = {name: [] for name in IMPLEMENTATIONS}
    missing = {name: available.get(name) is None for name in ("sklearn", "torch")}
    for name in IMPLEMENTATIONS:
        if missing.get(name):
            log(f"{name}: not installed; its column reads n/a")
            continue
        for seed in range(seeds):
            try:
                acc, seconds, cpu = runners[name](seed)
            except Exception as error:  # a broken optional library must not stop the others
                if name == "generated":
                    raise
                log(f"{name} seed {seed}: failed: {type(error).__name__}: {error}")
                results[name].append({"seed": seed, "error": f"{type(error).__name__}: {error}"})
                continue
            log(f"{name} seed {seed}: test accuracy {acc:.4f}, training {seconds:.2f} s")
            results[name].append(
                {"seed": seed, "accuracy": acc, "train_seconds": seconds, "train_cpu_seconds": cpu}
            )
    train = spec.train
    return {
        "spec": spec.name,
        "sizes": list(spec.sizes),
        "train": {
            "optimizer": train.optimizer,
            "lr": train.lr,
            "epochs": train.epochs,
            "batch_size": train.batch_size,
            "beta1": train.beta1,
            "beta2": train.beta2,
            "eps": train.eps,
            "l2": spec.l2,
            "sklearn_alpha": sklearn_alpha(spec),
        },
        "split": {
            "source": "digits",
            "seed": SPLIT_SEED,
            "test_fraction": TEST_FRACTION,
            "n_train": int(len(data.y_train)),
            "n_test": int(len(data.y_test)),
        },
        "seeds": list(range(seeds)),
        "torch_threads": torch_threads if available["torch"] is not None else None,
        "cpu_count": os.cpu_count(),
        "versions": available,
        "results": {name: summarise(results[name]) for name in IMPLEMENTATIONS},
    }


def _cell(result: Result | None) -> str:
    if result is None or "accuracy" not in result:
        return "n/a"
    return f"{100 * result['accuracy']:.2f} % ({result['train_seconds']:.2f} s)"


def markdown(report: dict[str, object]) -> str:
    results = report["results"]
    split = report["split"]
    lines = [
        f"Test accuracy (training wall time) on the digits split (seed {split['seed']}, "
        f"{split['n_train']} train / {split['n_test']} test), {report['spec']} "
        f"{'-'.join(map(str, report['sizes']))}, Adam lr {report['train']['lr']}, "
        f"{report['train']['epochs']} epochs, batch {report['train']['batch_size']}, "
        f"l2 {report['train']['l2']} (sklearn alpha {report['train']['sklearn_alpha']:g}).",
        "",
        "| seed | " + " | ".join(IMPLEMENTATIONS) + " |",
        "| --- | " + " | ".join("---" for _ in IMPLEMENTATIONS) + " |",
    ]
    for seed in report["seeds"]:
        cells = []
        for name in IMPLEMENTATIONS:
            match = [r for r in results[name]["per_seed"] if r["seed"] == seed]
            cells.append(_cell(match[0] if match else None))
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    means, times = [], []
    for name in IMPLEMENTATIONS:
        summary = results[name]
        if summary["available"]:
            means.append(
                f"{100 * summary['accuracy_mean']:.2f} ± {100 * summary['accuracy_std']:.2f} %"
            )
            times.append(
                f"{summary['train_seconds_mean']:.2f} ± {summary['train_seconds_std']:.2f} s"
            )
        else:
            means.append("n/a")
            times.append("n/a")
    lines.append("| mean ± std accuracy | " + " | ".join(means) + " |")
    lines.append("| mean ± std train time | " + " | ".join(times) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train digits_mlp with the generated module, scikit-learn and PyTorch."
    )
    parser.add_argument("--seeds", type=int, default=5, help="train with seeds 0..N-1 (default 5)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        metavar="N",
        help="torch.set_num_threads(N) for the torch column (default 1; 0 keeps torch's own)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-run progress on stderr")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds: expected a positive integer, got {args.seeds}")
    if args.torch_threads < 0:
        parser.error(f"--torch-threads: expected 0 or more, got {args.torch_threads}")

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    report = benchmark(args.seeds, args.torch_threads, log)
    print(markdown(report))
    generated = report["results"]["generated"]["per_seed"]
    seed0 = next((r["accuracy"] for r in generated if r["seed"] == 0), None)
    if seed0 is not None and seed0 < ACCURACY_FLOOR:
        print(
            f"\nWARNING: the generated trainer's seed-0 test accuracy {100 * seed0:.2f} % is "
            f"below {100 * ACCURACY_FLOOR:.0f} %."
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
