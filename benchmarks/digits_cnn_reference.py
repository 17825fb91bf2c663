"""Reference benchmark: the generated digits_cnn trainer beside its PyTorch twin.

Usage (from the repository root, with the package installed)::

    python benchmarks/digits_cnn_reference.py [--seeds 5] [--json out.json]

PyTorch is optional (``pip install torch``); without it the torch column reads ``n/a``.

What is trained
---------------
The bundled spec ``digits_cnn`` (examples/digits_cnn.toml): the digits as 1x8x8 images,
conv 3x3 x16 (padding 1) -> ReLU -> max-pool 2 -> conv 3x3 x32 (padding 1) -> ReLU ->
max-pool 2 -> flatten -> dense 10 softmax, mean cross-entropy plus (l2/2)·Σ‖W‖² over the
weights (conv kernels and the dense matrix, not the biases), with the spec's [train]
settings.  Both trainers see exactly the split of ``digits_mlp`` (``load_dataset("digits", ...,
test_fraction=0.2, seed=0)``: 1,438 training and 359 test samples, stratified; the same
rows, read as (n, 1, 8, 8)), in float64.

(a) ``generated``: ``symbackprop.codegen.generate(spec)``; ``init_params(seed=s)``, then
    ``fit`` with the spec's [train] settings and ``seed=s``.

(b) ``torch``: ``nn.Conv2d(1, 16, 3, padding=1)``, ``nn.ReLU``, ``nn.MaxPool2d(2)``,
    ``nn.Conv2d(16, 32, 3, padding=1)``, ``nn.ReLU``, ``nn.MaxPool2d(2)``, ``nn.Flatten``,
    ``nn.Linear(128, 10)``, built from the spec's layers (the equivalents DESIGN §2c names),
    started from the very numbers of the generated ``init_params(seed=s)`` and fed the same
    mini-batches in the same order (``numpy.random.default_rng(s).permutation`` each epoch,
    as the generated ``fit`` draws them, the last partial batch kept); ``torch.optim.Adam``
    with the same lr, betas and eps and ``weight_decay=l2`` on the weights only (Adam's
    weight decay adds l2·W to the gradient: the spec's (l2/2)·Σ‖W‖² term; not AdamW);
    ``F.cross_entropy`` (mean) on the logits. The two runs therefore differ only by
    rounding: the table shows the largest difference of their final parameters (``max
    |Δparam|``).

Reported: test accuracy per seed, its mean ± sample standard deviation, and the wall time
of training alone (``time.perf_counter`` around ``fit`` or the loop; code generation,
imports and data loading excluded).  Torch runs with one thread (``--torch-threads``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from symbackprop.checkpoint import load_module
from symbackprop.codegen import generate
from symbackprop.data import Dataset, accuracy, load_dataset
from symbackprop.spec import NetworkSpec, load_spec

SPEC_NAME = "digits_cnn"
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def load(spec: NetworkSpec) -> Dataset:
    """digits_mlp's split, read as images of the spec's input shape."""
    return load_dataset(
        "digits",
        outputs=spec.sizes[-1],
        classification=True,
        test_fraction=TEST_FRACTION,
        seed=SPLIT_SEED,
        shape=spec.input_shape,
    )


def run_generated(module, spec: NetworkSpec, data: Dataset, seed: int):  # noqa: ANN001, ANN201
    """(test accuracy, training seconds, final params) of the generated module's ``fit``."""
    train = spec.train
    params = module.init_params(seed=seed)
    start = time.perf_counter()
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
    seconds = time.perf_counter() - start
    return accuracy(module.predict(params, data.X_test), data.y_test), seconds, params


def torch_layers(spec: NetworkSpec):  # noqa: ANN201 - torch.nn.Sequential
    """The spec's layers as PyTorch modules, float64."""
    import torch
    from torch import nn

    layers: list[nn.Module] = []
    for layer in spec.flat:
        kind, item = layer.kind, layer.layer
        if kind == "conv2d":
            layers.append(
                nn.Conv2d(
                    layer.in_shape[0],
                    item.filters,
                    item.kernel,
                    stride=item.stride,
                    padding=item.padding,
                    bias=item.bias,
                    dtype=torch.float64,
                )
            )
        elif kind == "max_pool2d":
            layers.append(nn.MaxPool2d(item.kernel, item.stride))
        elif kind == "avg_pool2d":
            layers.append(nn.AvgPool2d(item.kernel, item.stride))
        elif kind == "flatten":
            layers.append(nn.Flatten())
        elif kind == "dense":
            layers.append(nn.Linear(layer.fan_in, item.units, bias=item.bias, dtype=torch.float64))
        else:
            raise ValueError(f"{layer.path}: no PyTorch twin here for kind {kind!r}")
        name = item.activation.name if kind in ("conv2d", "dense") else "identity"
        if name == "relu":
            layers.append(nn.ReLU())
        elif name not in ("identity", "softmax"):  # softmax: cross_entropy takes logits
            raise ValueError(f"{layer.path}: no PyTorch twin here for activation {name!r}")
    return nn.Sequential(*layers)


def run_torch(spec: NetworkSpec, data: Dataset, init: dict, seed: int):  # noqa: ANN201
    """(test accuracy, training seconds, final params) of the PyTorch twin from ``init``."""
    import torch
    import torch.nn.functional as F

    train = spec.train
    model = torch_layers(spec)
    learned = [layer for layer in spec.flat if layer.kind in ("conv2d", "dense")]
    modules = [m for m in model if hasattr(m, "weight")]
    named: dict[str, torch.nn.Parameter] = {}
    with torch.no_grad():
        for layer, module in zip(learned, modules, strict=True):
            named[f"W{layer.index}"] = module.weight
            module.weight.copy_(torch.from_numpy(np.array(init[f"W{layer.index}"])))
            if module.bias is not None:
                named[f"b{layer.index}"] = module.bias
                module.bias.copy_(torch.from_numpy(np.array(init[f"b{layer.index}"])))
    weights = [p for key, p in named.items() if key.startswith("W")]
    biases = [p for key, p in named.items() if key.startswith("b")]
    optimizer = torch.optim.Adam(
        [{"params": weights, "weight_decay": spec.l2}, {"params": biases, "weight_decay": 0.0}],
        lr=train.lr,
        betas=(train.beta1, train.beta2),
        eps=train.eps,
    )
    X = torch.from_numpy(np.array(data.X_train))
    y = torch.from_numpy(np.array(data.y_train))
    rng = np.random.default_rng(seed)  # the generated fit's batch order
    start = time.perf_counter()
    for _ in range(train.epochs):
        order = torch.from_numpy(rng.permutation(len(X)))
        for first in range(0, len(X), train.batch_size):
            batch = order[first : first + train.batch_size]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(X[batch]), y[batch]).backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        predicted = model(torch.from_numpy(np.array(data.X_test))).argmax(dim=1).numpy()
    final = {key: p.detach().numpy() for key, p in named.items()}
    return accuracy(predicted, data.y_test), seconds, final


def benchmark(seeds: int, torch_threads: int, log) -> dict:  # noqa: ANN001
    spec = load_spec(SPEC_NAME)
    data = load(spec)
    module = load_module(generate(spec), f"{spec.name}_generated")
    try:
        import torch

        torch.set_num_threads(torch_threads)
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    rows = []
    for seed in range(seeds):
        ours, ours_s, ours_params = run_generated(module, spec, data, seed)
        row = {"seed": seed, "generated": ours, "generated_seconds": ours_s}
        if torch_version is not None:
            theirs, theirs_s, theirs_params = run_torch(
                spec, data, module.init_params(seed=seed), seed
            )
            gap = max(float(np.max(np.abs(ours_params[k] - theirs_params[k]))) for k in ours_params)
            row.update(torch=theirs, torch_seconds=theirs_s, max_param_difference=gap)
        log(
            f"seed {seed}: generated {ours:.4f} ({ours_s:.2f} s)"
            + (
                f", torch {row['torch']:.4f} ({row['torch_seconds']:.2f} s), "
                f"max |dparam| {row['max_param_difference']:.1e}"
                if "torch" in row
                else ""
            )
        )
        rows.append(row)
    train = spec.train
    return {
        "spec": spec.name,
        "shapes": spec.shape_text(),
        "train": {
            "optimizer": train.optimizer,
            "lr": train.lr,
            "epochs": train.epochs,
            "batch_size": train.batch_size,
            "l2": spec.l2,
        },
        "split": {
            "seed": SPLIT_SEED,
            "test_fraction": TEST_FRACTION,
            "n_train": len(data.y_train),
            "n_test": len(data.y_test),
        },
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch_version,
        },
        "torch_threads": torch_threads if torch_version else None,
        "rows": rows,
    }


def _mean(values: list[float]) -> str:
    if not values:
        return "n/a"
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{100 * float(np.mean(values)):.2f} ± {100 * std:.2f} %"


def markdown(report: dict) -> str:
    train, split = report["train"], report["split"]
    lines = [
        f"Test accuracy (training wall time) of {report['spec']} {report['shapes']} on the "
        f"digits split of digits_mlp (seed {split['seed']}, {split['n_train']} train / "
        f"{split['n_test']} test), {train['optimizer']} lr {train['lr']}, "
        f"{train['epochs']} epochs, batch {train['batch_size']}, l2 {train['l2']}; both from "
        "the same initial weights and batch order.",
        "",
        "| seed | generated | torch | max \\|Δparam\\| |",
        "| --- | --- | --- | --- |",
    ]
    for row in report["rows"]:
        ours = f"{100 * row['generated']:.2f} % ({row['generated_seconds']:.2f} s)"
        if "torch" in row:
            theirs = f"{100 * row['torch']:.2f} % ({row['torch_seconds']:.2f} s)"
            gap = f"{row['max_param_difference']:.1e}"
        else:
            theirs = gap = "n/a"
        lines.append(f"| {row['seed']} | {ours} | {theirs} | {gap} |")
    ours = [row["generated"] for row in report["rows"]]
    theirs = [row["torch"] for row in report["rows"] if "torch" in row]
    lines.append(f"| mean ± std | {_mean(ours)} | {_mean(theirs)} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train digits_cnn with the generated module and its PyTorch twin."
    )
    parser.add_argument("--seeds", type=int, default=5, help="train with seeds 0..N-1 (default 5)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--torch-threads", type=int, default=1, metavar="N")
    parser.add_argument("--quiet", action="store_true", help="no per-run progress on stderr")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds: expected a positive integer, got {args.seeds}")
    if args.torch_threads < 1:
        parser.error(f"--torch-threads: expected 1 or more, got {args.torch_threads}")

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    report = benchmark(args.seeds, args.torch_threads, log)
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
