#!/usr/bin/env python
"""One SGD step of generated conv modules against PyTorch eager on CPU, one thread.

Run on demand, never as a timed test:

    python benchmarks/conv_step.py [--quick] [--configs NAME ...] [--dtypes ...]
                                   [--batch N] [--json out.json] [--no-torch]

Configurations: ``digits_cnn`` (examples/digits_cnn.toml, 1x8x8: conv 3x3 x16 padding 1 relu,
max-pool 2, conv 3x3 x32 padding 1 relu, max-pool 2, flatten, dense 10 softmax) and
``lenet`` (1x28x28: conv 5x5 x6 relu, max-pool 2, conv 5x5 x16 relu, max-pool 2, flatten,
dense 120 relu, 84 relu, 10 softmax), at batch 64.  For every configuration x dtype (float64,
float32) the script

1. generates the module (``symbackprop.codegen.generate`` of a ``from_dict`` spec) and loads
   it with ``symbackprop.checkpoint.load_module``;
2. checks, before any timing, the generated ``gradients`` and ``train_step`` against
   PyTorch eager built from ``nn.Conv2d``/``nn.MaxPool2d``/``nn.Flatten``/``nn.Linear`` with
   the same parameters copied in: loss, every gradient, every parameter after one step,
   norm-wise relative error at most 1e-10 in float64, 1e-4 in float32 (without torch: the
   float32 module against the float64 one);
3. times ``train_step`` and PyTorch's step (``torch.optim.SGD``: zero_grad, forward,
   ``F.cross_entropy``, backward, step; and the same with a manual update, the faster of
   the two is compared) interleaved in one process and one thread (BLAS and torch limited
   to one thread), in blocks in rotating order after a warm-up, the garbage collector
   paused; the median per-step CPU time (``time.process_time``) is the headline, the wall
   clock is reported beside it.

PyTorch runs its float32 convolutions through oneDNN (mkldnn) and its float64 ones through
its own im2col and GEMM; both are what a user of nn.Conv2d gets.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# One thread, set before NumPy loads its BLAS (threadpoolctl, when installed, limits it too).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parent))

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from kinds_step import fmt_ratio, fmt_us, time_interleaved  # noqa: E402
from train_step import (  # noqa: E402
    _import_threadpoolctl,
    _import_torch,
    copy_params,
    environment,
    rel_error,
    thread_limit,
)

from symbackprop.checkpoint import load_module  # noqa: E402
from symbackprop.codegen import generate  # noqa: E402
from symbackprop.spec import from_dict  # noqa: E402

DTYPES = ("float64", "float32")
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
LR = 0.01
SEED = 0
BATCH = 64
TARGET = 1.5  # issue 12: at most 1.5x PyTorch eager's time


def _conv(filters: int, kernel: int, padding: int = 0) -> dict:
    return {
        "kind": "conv2d",
        "filters": filters,
        "kernel": kernel,
        "padding": padding,
        "activation": "relu",
    }


POOL = {"kind": "max_pool2d", "kernel": 2}
FLATTEN = {"kind": "flatten"}

# name -> (inputs, layers, what it is)
CONFIGS: dict[str, tuple[list[int], list[dict], str]] = {
    "digits_cnn": (
        [1, 8, 8],
        [
            _conv(16, 3, 1),
            POOL,
            _conv(32, 3, 1),
            POOL,
            FLATTEN,
            {"units": 10, "activation": "softmax"},
        ],
        "1x8x8: conv 3x3 x16 pad 1 relu, max-pool 2, conv 3x3 x32 pad 1 relu, max-pool 2, "
        "flatten, 10 softmax (examples/digits_cnn.toml)",
    ),
    "lenet": (
        [1, 28, 28],
        [
            _conv(6, 5),
            POOL,
            _conv(16, 5),
            POOL,
            FLATTEN,
            {"units": 120, "activation": "relu"},
            {"units": 84, "activation": "relu"},
            {"units": 10, "activation": "softmax"},
        ],
        "1x28x28: conv 5x5 x6 relu, max-pool 2, conv 5x5 x16 relu, max-pool 2, flatten, "
        "120 relu, 84 relu, 10 softmax",
    ),
}


def make_spec(config: str):
    inputs, layers, _ = CONFIGS[config]
    data = {"name": f"bench_{config}", "inputs": inputs, "loss": "cross_entropy"}
    return from_dict({**data, "layers": layers})


def make_problem(module, config: str, dtype: str, batch: int):
    """init_params with the biases moved off zero; images, one-hot targets, labels."""
    inputs, _, _ = CONFIGS[config]
    rng = np.random.default_rng((SEED, batch))
    params = module.init_params(seed=SEED, dtype=dtype)
    for key, value in params.items():
        if key.startswith("b"):
            value[...] = rng.normal(0.0, 0.1, size=value.shape)
    X = rng.normal(0.0, 1.0, size=(batch, *inputs)).astype(dtype)
    labels = rng.integers(0, 10, size=batch)
    Y = np.eye(10, dtype=dtype)[labels]
    return params, X, Y, labels


# --- PyTorch ---------------------------------------------------------------------------------


def torch_model(torch, config, params, dtype):
    """nn modules of the configuration with params copied in; (model, {name: tensor})."""
    nn = torch.nn
    inputs, layers, _ = CONFIGS[config]
    kind = getattr(torch, dtype)
    named: dict = {}
    mods = []
    channels, width = inputs[0], None
    for index, entry in enumerate(layers, start=1):
        if entry.get("kind") == "conv2d":
            conv = nn.Conv2d(
                channels, entry["filters"], entry["kernel"], padding=entry["padding"], dtype=kind
            )
            named[f"W{index}"], named[f"b{index}"] = conv.weight, conv.bias
            mods += [conv, nn.ReLU()]
            channels = entry["filters"]
        elif entry.get("kind") == "max_pool2d":
            mods.append(nn.MaxPool2d(entry["kernel"]))
        elif entry.get("kind") == "flatten":
            mods.append(nn.Flatten())
            width = params[f"W{index + 1}"].shape[1]
        else:
            linear = nn.Linear(width, entry["units"], dtype=kind)
            named[f"W{index}"], named[f"b{index}"] = linear.weight, linear.bias
            mods.append(linear)
            if entry["activation"] == "relu":
                mods.append(nn.ReLU())
            width = entry["units"]
    with torch.no_grad():
        for key, tensor in named.items():
            tensor.copy_(torch.from_numpy(np.array(params[key], dtype=dtype)))
    return nn.Sequential(*mods), named


class TorchStep:
    """One SGD step of the nn model, "optim" (torch.optim.SGD) or "manual" (p.sub_)."""

    def __init__(self, torch, config, params, X, labels, dtype, variant="optim"):
        self.torch = torch
        self.model, self.named = torch_model(torch, config, params, dtype)
        self.params = list(self.model.parameters())
        self.X = torch.from_numpy(X.copy())
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.variant = variant
        self.optimizer = torch.optim.SGD(self.params, lr=LR) if variant == "optim" else None

    def _loss(self):
        return self.torch.nn.functional.cross_entropy(self.model(self.X), self.labels)

    def step(self) -> float:
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._loss()
            loss.backward()
            self.optimizer.step()
            return loss.item()
        for p in self.params:
            p.grad = None
        loss = self._loss()
        loss.backward()
        with self.torch.no_grad():
            for p in self.params:
                p.sub_(p.grad, alpha=LR)
        return loss.item()

    def gradients(self):
        for p in self.params:
            p.grad = None
        loss = self._loss()
        loss.backward()
        return loss.item(), {k: t.grad.detach().numpy().copy() for k, t in self.named.items()}

    def state(self) -> dict:
        return {k: t.detach().numpy().copy() for k, t in self.named.items()}


# --- checks ----------------------------------------------------------------------------------


def compare(name, tolerance, loss_pair, grads_pair, params_pair) -> dict:
    ours, theirs = grads_pair
    stepped, expected = params_pair
    errors = {
        "loss": rel_error(*loss_pair),
        "grads": {k: rel_error(ours[k], theirs[k]) for k in ours.keys() & theirs.keys()},
        "params_after_step": {
            k: rel_error(stepped[k], expected[k]) for k in stepped.keys() & expected.keys()
        },
    }
    missing = sorted((set(ours) ^ set(theirs)) | (set(stepped) ^ set(expected)))
    worst = max([errors["loss"], *errors["grads"].values(), *errors["params_after_step"].values()])
    return {
        "against": name,
        "tolerance": tolerance,
        "max_rel_error": worst,
        "missing": missing,
        "passed": bool(worst <= tolerance and not missing),
        "errors": errors,
    }


def run_checks(config, module, params, X, Y, labels, dtype, torch) -> dict:
    tolerance = TOLERANCE[dtype]
    ours_loss, ours_grads = module.gradients(copy_params(params), X, Y)
    stepped = copy_params(params)
    step_loss = module.train_step(stepped, X, Y, LR)
    result: dict = {"tolerance": tolerance}
    result["train_step_loss_matches"] = bool(rel_error(step_loss, ours_loss) <= tolerance)
    if torch is not None:
        grad_model = TorchStep(torch, config, params, X, labels, dtype)
        t_loss, t_grads = grad_model.gradients()
        step_model = TorchStep(torch, config, params, X, labels, dtype)
        step_model.step()
        against = compare(
            "torch nn modules",
            tolerance,
            (ours_loss, t_loss),
            (ours_grads, t_grads),
            (stepped, step_model.state()),
        )
    else:  # the module in float64 from the same (rounded) parameters and inputs
        wide = {k: v.astype(np.float64) for k, v in params.items()}
        wide_loss, wide_grads = module.gradients(wide, X.astype(np.float64), Y)
        after = {k: wide[k] - LR * wide_grads[k] for k in wide}
        against = compare(
            "the module in float64",
            max(tolerance, 1e-12),
            (ours_loss, wide_loss),
            (ours_grads, wide_grads),
            (stepped, after),
        )
    result["against"] = against
    result["passed"] = bool(result["train_step_loss_matches"] and against["passed"])
    return result


# --- the run ---------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--json", default=None, help="write all numbers to this JSON file")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of timed steps per row (default 8, --quick 0.15)",
    )
    parser.add_argument("--no-torch", action="store_true", help="run as if torch were absent")
    args = parser.parse_args(argv)
    if args.budget is None:
        args.budget = 0.15 if args.quick else 8.0
    return args


def markdown_table(rows) -> str:
    head = (
        "| config | batch | dtype | numpy CPU µs | torch CPU µs | numpy/torch (CPU) "
        "| numpy µs | torch µs | numpy/torch | torch variant |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['batch']} | {r['dtype']} | {fmt_us(r['numpy_cpu_s'])} "
            f"| {fmt_us(r['torch_cpu_s'])} | {fmt_ratio(r['ratio_cpu'])} "
            f"| {fmt_us(r['numpy_s'])} | {fmt_us(r['torch_s'])} | {fmt_ratio(r['ratio'])} "
            f"| {r['torch_variant'] or 'n/a'} |"
        )
    return "\n".join(lines)


def time_row(config, module, params, X, Y, labels, dtype, torch, args) -> dict:
    np_params = copy_params(params)
    steps = {"numpy": lambda: module.train_step(np_params, X, Y, LR)}
    if torch is not None:
        torch.manual_seed(SEED)
        steps["torch_optim"] = TorchStep(torch, config, params, X, labels, dtype, "optim").step
        steps["torch_manual"] = TorchStep(torch, config, params, X, labels, dtype, "manual").step
    timing = time_interleaved(steps, args.budget, 2 if args.quick else 7, 1 if args.quick else 5)
    row = {
        "config": config,
        "description": CONFIGS[config][2],
        "batch": X.shape[0],
        "dtype": dtype,
        "threads": 1,
        "numpy_s": timing["numpy"]["median_s"],
        "numpy_cpu_s": timing["numpy"]["cpu_median_s"],
        "torch_s": None,
        "torch_cpu_s": None,
        "torch_variant": None,
        "ratio": None,
        "ratio_cpu": None,
        "within_target": None,
        "timing": timing,
    }
    if torch is not None:
        variants = ("torch_optim", "torch_manual")
        variant = min(variants, key=lambda v: timing[v]["cpu_median_s"])
        wall_variant = min(variants, key=lambda v: timing[v]["median_s"])
        row.update(
            torch_variant=variant,
            torch_wall_variant=wall_variant,
            torch_cpu_s=timing[variant]["cpu_median_s"],
            torch_s=timing[wall_variant]["median_s"],
        )
        row["ratio"] = row["numpy_s"] / row["torch_s"]
        row["ratio_cpu"] = row["numpy_cpu_s"] / row["torch_cpu_s"]
        row["within_target"] = bool(row["ratio_cpu"] <= TARGET)
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    torch, torch_note = _import_torch(args.no_torch)
    threadpoolctl = _import_threadpoolctl()
    env = environment(torch, torch_note, None, "not used", threadpoolctl, False)
    env["thread_env"] = {
        k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    }
    print(f"# conv_step benchmark: {env['cpu_model']}, one thread", file=sys.stderr)
    results: list = []
    checks: list = []
    all_passed = True

    def write_report() -> None:
        if not args.json:
            return
        report = {
            "benchmark": "conv_step",
            "argv": sys.argv[1:] if argv is None else list(argv),
            "quick": args.quick,
            "settings": {
                "lr": LR,
                "seed": SEED,
                "batch": args.batch,
                "budget_s_per_row": args.budget,
                "threads": 1,
                "target_ratio": TARGET,
                "configs": {
                    c: {"inputs": CONFIGS[c][0], "layers": CONFIGS[c][1], "text": CONFIGS[c][2]}
                    for c in args.configs
                },
                "dtypes": list(args.dtypes),
                "tolerance": TOLERANCE,
            },
            "environment": env,
            "checks": checks,
            "checks_passed": all_passed,
            "results": results,
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1, default=str)

    with thread_limit(1, torch, threadpoolctl):
        for config in args.configs:
            t0 = time.perf_counter()
            module = load_module(generate(make_spec(config)), f"bench_{config}")
            codegen_s = time.perf_counter() - t0
            for dtype in args.dtypes:
                params, X, Y, labels = make_problem(module, config, dtype, args.batch)
                check = run_checks(config, module, params, X, Y, labels, dtype, torch)
                check.update(config=config, dtype=dtype)
                checks.append(check)
                print(
                    f"# check {config} {dtype}: {'pass' if check['passed'] else 'FAIL'}",
                    file=sys.stderr,
                )
                if not check["passed"]:
                    all_passed = False
                    print(json.dumps(check, indent=1, default=str), file=sys.stderr)
                    write_report()
                    continue
                row = time_row(config, module, params, X, Y, labels, dtype, torch, args)
                row["codegen_s"] = codegen_s
                results.append(row)
                write_report()
                print(
                    f"# {config} {dtype}: numpy {fmt_us(row['numpy_cpu_s'])} µs CPU, "
                    f"torch {fmt_us(row['torch_cpu_s'])} µs ({row['torch_variant']}), "
                    f"ratio {fmt_ratio(row['ratio_cpu'])} (wall {fmt_ratio(row['ratio'])})",
                    file=sys.stderr,
                )
    if results:
        print(markdown_table(results))
    print(f"correctness checks: {'all passed' if all_passed else 'SOME FAILED'}")
    write_report()
    if args.json:
        print(f"wrote {args.json}", file=sys.stderr)
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
