#!/usr/bin/env python
"""The certificate over a grid of networks: the largest error each witness saw.

Run on demand (about a minute; the conv grid alone about 15 s):

    python benchmarks/certificate_grid.py [--json out.json] [--conv N] [--conv-only]

The grid is the one the tests use: every built-in hidden activation and five custom ones
under a softmax/cross-entropy output, every output/loss pair (custom losses included) after
a tanh layer, depths 1 to 4, an l2 network and a larger one (150 parameters). For each
witness it reports the maximum over all parameters and networks of the error measure
(max |g - r| / max(max |g|, max |r|, floor), per parameter array) and of the maximum
absolute error, and which networks fail the large-input row (inf/nan where the exact value
is finite). Then the batch grid: seed_mlp and a ReLU/leaky-ReLU/abs network at batches 1,
7, 64, 1000 and 4096, with the finite-difference witness's worst error at each.  Then N
random small conv nets (``random_conv_spec``: kernels 1-3, strides 1-2, padding 0-1, 1-3
channels, max and average pools, flatten, dense), each witness's error measure per net.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from symbackprop.functions import ACTIVATIONS
from symbackprop.spec import from_dict
from symbackprop.verify import certify

CUSTOM = [
    {"name": "swish", "expr": "x*sigmoid(x)"},
    {"name": "softsign", "expr": "x/(1+abs(x))"},
    {"name": "bent", "expr": "(sqrt(x**2+1)-1)/2 + x"},
    {"name": "leaky_max", "expr": "Max(0.1*x, x)"},
    {"name": "gauss", "expr": "exp(-x**2)"},
]
OUTPUTS = [
    ("softmax", "cross_entropy", 2),
    ("sigmoid", "cross_entropy", 2),
    ("sigmoid", "binary_cross_entropy", 1),
    ("identity", "mse", 2),
    ("tanh", "mse", 2),
    ("sigmoid", "mse", 2),
    ("softmax", "mse", 2),
    ("identity", {"name": "logcosh", "expr": "log(cosh(yhat - y))"}, 2),
    ("softmax", {"name": "focal_ish", "expr": "-y*(1-yhat)**2*log(yhat)"}, 2),
]


def spec(hidden: list, output: str, loss: object, outputs: int = 2, **kw: int) -> object:
    inputs, units, l2 = kw.get("inputs", 3), kw.get("units", 3), kw.get("l2", 0.0)
    layers = [{"units": units, "activation": act} for act in hidden]
    layers.append({"units": outputs, "activation": output})
    return from_dict({"name": "net", "inputs": inputs, "loss": loss, "l2": l2, "layers": layers})


def grid() -> list[tuple[str, object]]:
    networks = []
    for act in [n for n, a in ACTIVATIONS.items() if not a.softmax] + CUSTOM:
        name = act if isinstance(act, str) else act["name"]
        networks.append((f"hidden {name}", spec([act], "softmax", "cross_entropy")))
    for output, loss, outputs in OUTPUTS:
        label = loss if isinstance(loss, str) else loss["name"]
        networks.append((f"{output} + {label}", spec(["tanh"], output, loss, outputs)))
    for depth in (1, 2, 3, 4):
        hidden = ["relu", "tanh", "elu", "silu"][: depth - 1]
        networks.append((f"depth {depth}", spec(hidden, "softmax", "cross_entropy", units=2)))
    networks.append(("l2", spec(["sigmoid", "softplus"], "softmax", "cross_entropy", l2=0.05)))
    big = spec(["relu", "gelu"], "softmax", "cross_entropy", outputs=4, inputs=6, units=8, l2=0.01)
    networks.append(("graph mode (150 params)", big))
    return networks


CONV_ACTIVATIONS = ["relu", "tanh", "identity", "leaky_relu", "sigmoid", "elu", "softplus"]


def random_conv_spec(seed: int) -> object:
    """A small random conv net: an image of 1-3 channels, 1-2 conv2d layers (kernel 1-3,
    stride 1-2, padding 0-1, 1-3 filters, with or without bias), a max or average pool
    where the image is large enough, flatten, an optional dense layer, a dense output.

    Small enough for the exact witness (at most a few thousand operations per sample).
    """
    rng = np.random.default_rng((seed, 12))
    channels = int(rng.integers(1, 4))
    height, width = int(rng.integers(3, 8)), int(rng.integers(3, 8))
    items: list[dict] = []
    shape = (channels, height, width)
    for k in range(int(rng.integers(1, 3))):
        kernel = int(rng.integers(1, 4))
        padding = int(rng.integers(0, 2))
        stride = int(rng.integers(1, 3))
        if min(shape[1:]) + 2 * padding < kernel:
            kernel = 1
        filters = int(rng.integers(1, 4))
        act = CONV_ACTIVATIONS[rng.integers(len(CONV_ACTIVATIONS))]
        item = {"kind": "conv2d", "filters": filters, "kernel": kernel, "stride": stride}
        item.update({"padding": padding, "activation": act, "bias": bool(rng.random() < 0.8)})
        items.append(item)
        rows = (shape[1] + 2 * padding - kernel) // stride + 1
        columns = (shape[2] + 2 * padding - kernel) // stride + 1
        shape = (filters, rows, columns)
        if min(rows, columns) >= 2 and (k == 0 or rng.random() < 0.5):
            pool = "max_pool2d" if rng.random() < 0.6 else "avg_pool2d"
            step = int(rng.integers(1, 3))
            items.append({"kind": pool, "kernel": 2, "stride": step})
            shape = (filters, (rows - 2) // step + 1, (columns - 2) // step + 1)
    items.append({"kind": "flatten"})
    if rng.random() < 0.4:
        act = CONV_ACTIVATIONS[rng.integers(len(CONV_ACTIVATIONS))]
        items.append({"units": int(rng.integers(2, 5)), "activation": act})
    if rng.random() < 0.7:
        loss, output, units = "cross_entropy", "softmax", int(rng.integers(2, 4))
    else:
        loss, output, units = "mse", "identity", int(rng.integers(1, 3))
    items.append({"units": units, "activation": output})
    return from_dict(
        {
            "name": f"conv{seed}",
            "inputs": [channels, height, width],
            "loss": loss,
            "l2": float(rng.choice([0.0, 0.01])),
            "layers": items,
        }
    )


def conv_grid(seeds: range) -> list[dict]:
    """The certificate of every random conv net: each witness's worst error measure."""
    rows = []
    for seed in seeds:
        network = random_conv_spec(seed)
        certificate = certify(network)
        row = {"network": network.name, "passed": certificate.passed}
        row["shapes"] = network.shape_text()
        for witness in ("finite-diff", "exact", "pytorch"):
            row[witness] = certificate.max_rel(witness)
        rows.append(row)
        errors = "  ".join(f"{w} {row[w]:.1e}" for w in ("finite-diff", "exact", "pytorch"))
        print(f"{network.name:<8} {'pass' if row['passed'] else 'FAIL'}  {errors}", file=sys.stderr)
    return rows


def print_conv(rows: list[dict]) -> None:
    """The conv grid as a table: each net's shapes and each witness's error measure, then
    the worst of each witness."""
    print("| conv net | shapes | finite-diff | exact | pytorch | result |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        errors = " | ".join(f"{r[w]:.1e}" for w in ("finite-diff", "exact", "pytorch"))
        print(
            f"| {r['network']} | {r['shapes']} | {errors} | {'pass' if r['passed'] else 'FAIL'} |"
        )
    worst = {
        w: max((r[w] for r in rows if r[w] == r[w]), default=float("nan"))
        for w in ("finite-diff", "exact", "pytorch")
    }
    cells = ", ".join(f"{w} {v:.1e}" for w, v in worst.items())
    print(f"worst over {len(rows)} conv nets: {cells}")


BATCHES = (1, 7, 64, 1000, 4096)


def batch_grid() -> list[dict]:
    """seed_mlp and a network of kinks at every batch size: does the certificate pass?"""
    from symbackprop.spec import load_spec

    kinked = spec(
        ["relu", "leaky_relu", {"name": "absish", "expr": "abs(x) + Max(x, 0.5*x)"}],
        "softmax",
        "cross_entropy",
        units=4,
    )
    rows = []
    for label, network in (("seed_mlp", load_spec("seed_mlp")), ("relu/leaky/abs", kinked)):
        for batch in BATCHES:
            certificate = certify(network, batch=batch, use_torch=False)
            fd = certificate.max_rel("finite-diff")
            rows.append({"network": label, "batch": batch, "passed": certificate.passed, "fd": fd})
            print(
                f"{label:<16} batch {batch:>5} {'pass' if certificate.passed else 'FAIL'}",
                file=sys.stderr,
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument(
        "--conv", type=int, default=40, metavar="N", help="random conv nets (default 40)"
    )
    parser.add_argument(
        "--conv-only", action="store_true", help="only the grid of random conv nets"
    )
    args = parser.parse_args(argv)
    if args.conv_only:
        start = time.perf_counter()
        conv = conv_grid(range(args.conv))
        print_conv(conv)
        print(f"all passed: {all(r['passed'] for r in conv)}; {time.perf_counter() - start:.1f} s")
        if args.json:
            with open(args.json, "w", encoding="utf-8") as stream:
                json.dump({"conv": conv}, stream, indent=2)
        return 0 if all(r["passed"] for r in conv) else 1
    worst: dict[str, dict[str, float]] = {}
    rows = []
    start = time.perf_counter()
    for label, network in grid():
        certificate = certify(network)
        large = certificate.large_inputs is None or certificate.large_inputs.passed
        rows.append({"network": label, "passed": certificate.passed, "large_inputs": large})
        for check in certificate.parameters:
            for result in check.results:
                entry = worst.setdefault(result.witness, {"max_rel": 0.0, "max_abs": 0.0})
                entry["max_rel"] = max(entry["max_rel"], result.max_rel)
                entry["max_abs"] = max(entry["max_abs"], result.max_abs)
        print(f"{label:<28} {'pass' if certificate.passed else 'FAIL'}", file=sys.stderr)
    print("| witness | networks | max relative error | max absolute error |")
    print("|---|---|---|---|")
    for witness, entry in worst.items():
        print(f"| {witness} | {len(rows)} | {entry['max_rel']:.2e} | {entry['max_abs']:.2e} |")
    overflowing = [r["network"] for r in rows if not r["large_inputs"]]
    print(f"large inputs: {', '.join(overflowing) or 'every network finite'}")
    batches = batch_grid()
    print()
    print("| network | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
    print("|---|" + "---|" * len(BATCHES))
    for label in dict.fromkeys(r["network"] for r in batches):
        cells = [
            f"{'pass' if r['passed'] else 'FAIL'} ({r['fd']:.1e})"
            for r in batches
            if r["network"] == label
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")
    conv = conv_grid(range(args.conv))
    print()
    print_conv(conv)
    everything = rows + batches + conv
    print(
        f"all passed: {all(r['passed'] for r in everything)}; {time.perf_counter() - start:.1f} s"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            numbers = {"witnesses": worst, "networks": rows, "batches": batches, "conv": conv}
            json.dump(numbers, stream, indent=2)
    return 0 if all(r["passed"] for r in everything) else 1


if __name__ == "__main__":
    sys.exit(main())
