#!/usr/bin/env python
"""One SGD step of generated modules with residual, layer-norm, batch-norm and dropout layers
against PyTorch eager on CPU, one thread.

Run on demand, never as a timed test:

    python benchmarks/kinds_step.py [--quick] [--configs NAME ...] [--dtypes ...]
                                    [--json out.json] [--unset-openblas-env]

For every configuration x dtype (float64, float32) the script

1. generates the module (``symbackprop.codegen.generate`` of a ``from_dict`` spec) and loads
   it with ``symbackprop.checkpoint.load_module``;
2. checks, before any timing, the generated ``gradients`` and ``train_step`` against PyTorch
   eager built from ``nn.Linear``/``nn.ReLU``/``nn.LayerNorm``/``nn.BatchNorm1d``/``nn.Dropout``
   with the same parameters copied in, and against a plain NumPy backprop written here (no
   code shared with the generator): loss, every gradient, every parameter after one step,
   and the batch-norm running statistics after one step; the dropout masks are the module's
   own (``symbackprop.layers.draw_masks`` replays the module's rule), fed to both oracles;
   norm-wise relative error at most 1e-10 in float64, 1e-4 in float32;
3. times the steps interleaved in one process and one thread (BLAS and torch limited to one
   thread), in blocks in rotating order, after a warm-up, with ``time.perf_counter`` around
   every step and the garbage collector paused; the median per-step time is reported.

See benchmarks/README.md for what every number means.
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
import gc  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

# on import, train_step re-executes this script without the OpenBLAS variables when
# --unset-openblas-env is given (the thread variables above are kept)
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
from symbackprop.layers import draw_masks  # noqa: E402
from symbackprop.spec import from_dict  # noqa: E402

INPUTS, HIDDEN, OUTPUTS, BATCH = 784, 256, 10, 128
DTYPES = ("float64", "float32")
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
LR = 0.01
SEED = 0
MASK_SEED = 7


def _dense(units: int, activation: str = "relu") -> dict:
    return {"units": units, "activation": activation}


def _residual_ln() -> dict:
    return {"kind": "residual", "block": [_dense(HIDDEN), {"kind": "layer_norm"}]}


# name -> (layers of the spec, batch, what it is)
CONFIGS: dict[str, tuple[list[dict], int, str]] = {
    "residual_ln": (
        [_dense(HIDDEN), _residual_ln(), _residual_ln(), _dense(OUTPUTS, "softmax")],
        BATCH,
        "784-256-[256 relu, layer norm]x2 residual-10 softmax",
    ),
    "batchnorm": (
        [
            _dense(HIDDEN),
            {"kind": "batch_norm"},
            _dense(HIDDEN),
            {"kind": "batch_norm"},
            _dense(OUTPUTS, "softmax"),
        ],
        BATCH,
        "784-256 relu-batch norm-256 relu-batch norm-10 softmax",
    ),
    "residual_ln_dropout": (
        [
            _dense(HIDDEN),
            _residual_ln(),
            _residual_ln(),
            {"kind": "dropout", "rate": 0.1},
            _dense(OUTPUTS, "softmax"),
        ],
        BATCH,
        "residual_ln with dropout 0.1 before the output",
    ),
}


def _activation(entry: dict) -> str:
    """relu, or identity/softmax (no module: softmax is in the cross-entropy)."""
    name = entry.get("activation", "identity")
    if name not in ("relu", "identity", "softmax"):
        raise ValueError(f"kinds_step knows relu, identity and softmax layers, not {name!r}")
    return name


def make_spec(config: str):
    layers, _, _ = CONFIGS[config]
    return from_dict(
        {"name": f"bench_{config}", "inputs": INPUTS, "loss": "cross_entropy", "layers": layers}
    )


def numbered(layers: list[dict]) -> list[tuple[int, dict, list]]:
    """(l, layer, numbered block) depth first, as DESIGN §2b numbers them (here, not the spec)."""
    count = [0]

    def walk(entries):
        out = []
        for entry in entries:
            count[0] += 1
            index = count[0]
            block = walk(entry["block"]) if entry.get("kind") == "residual" else []
            out.append((index, entry, block))
        return out

    return walk(layers)


def make_problem(module, config: str, dtype: str):
    """init_params, then biases, gamma, beta and the running statistics moved off their
    defaults (so that a mix-up of them shows); inputs, one-hot targets, labels."""
    _, batch, _ = CONFIGS[config]
    rng = np.random.default_rng((SEED, batch))
    params = module.init_params(seed=SEED, dtype=dtype)
    for key, value in params.items():
        if key.startswith(("b", "beta", "mean")):
            value[...] = rng.normal(0.0, 0.1, size=value.shape)
        elif key.startswith("gamma"):
            value[...] = rng.uniform(0.5, 1.5, size=value.shape)
        elif key.startswith("var"):
            value[...] = rng.uniform(0.5, 2.0, size=value.shape)
    X = rng.normal(0.0, 1.0, size=(batch, INPUTS)).astype(dtype)
    labels = rng.integers(0, OUTPUTS, size=batch)
    Y = np.eye(OUTPUTS, dtype=dtype)[labels]
    return params, X, Y, labels


# --- the plain NumPy reference (shares no code with the generator) ---------------------------


def _normalize(A, axis, eps):
    mean = A.mean(axis=axis, keepdims=True)
    H = A - mean
    var = (H * H).mean(axis=axis, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    return H * rstd, rstd, mean, var


def _normalize_backward(G, xhat, rstd, axis):
    mean_g = G.mean(axis=axis, keepdims=True)
    mean_gx = (G * xhat).mean(axis=axis, keepdims=True)
    return rstd * (G - mean_g - xhat * mean_gx)


def reference_step(layers, params, X, Y, masks):
    """(loss, grads, state after the step's running-statistics update) in NumPy."""
    grads: dict = {}
    state: dict = {}
    batch = X.shape[0]

    def forward(entries, A):
        backs = []
        for index, entry, block in entries:
            kind = entry.get("kind", "dense")
            if kind == "dense":
                W, b = params[f"W{index}"], params[f"b{index}"]
                Z = A @ W.T + b
                relu = _activation(entry) == "relu"
                out = np.maximum(Z, 0) if relu else Z  # softmax: in the loss

                def back(G, A=A, Z=Z, W=W, relu=relu, index=index):
                    if relu:
                        G = G * (Z > 0)
                    grads[f"W{index}"] = G.T @ A
                    grads[f"b{index}"] = G.sum(axis=0)
                    return G @ W

            elif kind in ("layer_norm", "batch_norm"):
                axis = 1 if kind == "layer_norm" else 0
                eps = entry.get("eps", 1e-5)
                xhat, rstd, mean, var = _normalize(A, axis, eps)
                gamma = params[f"gamma{index}"]
                out = xhat * gamma + params[f"beta{index}"]
                if kind == "batch_norm":
                    m = entry.get("momentum", 0.1)
                    unbiased = var[0] * batch / (batch - 1)
                    state[f"mean{index}"] = (1 - m) * params[f"mean{index}"] + m * mean[0]
                    state[f"var{index}"] = (1 - m) * params[f"var{index}"] + m * unbiased

                def back(G, xhat=xhat, rstd=rstd, gamma=gamma, axis=axis, index=index):
                    grads[f"gamma{index}"] = (G * xhat).sum(axis=0)
                    grads[f"beta{index}"] = G.sum(axis=0)
                    return _normalize_backward(G * gamma, xhat, rstd, axis)

            elif kind == "dropout":
                rate = entry["rate"]
                scale = masks[index] / (1.0 - rate) if index in masks else 1.0
                out = A * scale

                def back(G, scale=scale):
                    return G * scale

            else:  # residual
                inner, inner_back = forward(block, A)
                out = A + inner

                def back(G, inner_back=inner_back):
                    return G + inner_back(G)

            backs.append(back)
            A = out

        def backward(G):
            for back in reversed(backs):
                G = back(G)
            return G

        return A, backward

    logits, backward = forward(numbered(layers), X)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-(Y * logp).sum() / batch)
    backward((np.exp(logp) - Y) / batch)
    return loss, grads, state


# --- PyTorch ---------------------------------------------------------------------------------


def torch_model(torch, layers, params, dtype, masks=None):
    """nn modules of the spec with params copied in; (model, {param name: tensor}, state).

    masks: {l: keep mask} replaces nn.Dropout of layer l by multiplication with that mask
    (the correctness check); without it the model has nn.Dropout (the timed model).
    """
    nn = torch.nn
    named: dict = {}
    state: dict = {}

    class Residual(nn.Module):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x):
            return x + self.block(x)

    class FixedDropout(nn.Module):
        def __init__(self, keep, rate):
            super().__init__()
            self.register_buffer("scale", torch.from_numpy(keep / (1.0 - rate)))

        def forward(self, x):
            return x * self.scale

    def tensor(name):
        return torch.from_numpy(np.array(params[name], dtype=dtype))

    def build(entries, n_in):
        mods = []
        for index, entry, block in entries:
            kind = entry.get("kind", "dense")
            if kind == "dense":
                units = entry["units"]
                linear = nn.Linear(n_in, units, dtype=getattr(torch, dtype))
                with torch.no_grad():
                    linear.weight.copy_(tensor(f"W{index}"))
                    linear.bias.copy_(tensor(f"b{index}"))
                named[f"W{index}"], named[f"b{index}"] = linear.weight, linear.bias
                mods.append(linear)
                if _activation(entry) == "relu":
                    mods.append(nn.ReLU())
                n_in = units
            elif kind in ("layer_norm", "batch_norm"):
                eps = entry.get("eps", 1e-5)
                if kind == "layer_norm":
                    norm = nn.LayerNorm(n_in, eps=eps, dtype=getattr(torch, dtype))
                else:
                    momentum = entry.get("momentum", 0.1)
                    norm = nn.BatchNorm1d(
                        n_in, eps=eps, momentum=momentum, dtype=getattr(torch, dtype)
                    )
                    with torch.no_grad():
                        norm.running_mean.copy_(tensor(f"mean{index}"))
                        norm.running_var.copy_(tensor(f"var{index}"))
                    state[f"mean{index}"], state[f"var{index}"] = (
                        norm.running_mean,
                        norm.running_var,
                    )
                with torch.no_grad():
                    norm.weight.copy_(tensor(f"gamma{index}"))
                    norm.bias.copy_(tensor(f"beta{index}"))
                named[f"gamma{index}"], named[f"beta{index}"] = norm.weight, norm.bias
                mods.append(norm)
            elif kind == "dropout":
                rate = entry["rate"]
                if masks is not None:
                    keep = masks.get(index)
                    ones = np.ones((1, n_in))
                    mods.append(FixedDropout(ones if keep is None else keep.astype(dtype), rate))
                else:
                    mods.append(nn.Dropout(rate))
            else:
                mods.append(Residual(nn.Sequential(*build(block, n_in))))
        return mods

    model = nn.Sequential(*build(numbered(layers), INPUTS))
    model.train()
    return model, named, state


class TorchStep:
    """One SGD step of the nn model: the same work as the generated train_step.

    variant "optim": ``optimizer.zero_grad(set_to_none=True)``, forward, ``F.cross_entropy``,
    ``backward()``, ``optimizer.step()`` (torch.optim.SGD); variant "manual": grads set to None,
    then ``p.sub_(p.grad, alpha=lr)`` under no_grad.  Both return ``loss.item()``.
    """

    def __init__(self, torch, layers, params, X, labels, dtype, variant="optim", masks=None):
        self.torch = torch
        self.model, self.named, self.running = torch_model(torch, layers, params, dtype, masks)
        self.params = list(self.model.parameters())
        self.X = torch.from_numpy(X.copy())
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.lr = LR
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
                p.sub_(p.grad, alpha=self.lr)
        return loss.item()

    def gradients(self):
        for p in self.params:
            p.grad = None
        loss = self._loss()
        loss.backward()
        return loss.item(), {k: t.grad.detach().numpy().copy() for k, t in self.named.items()}

    def state(self) -> dict:
        tensors = {**self.named, **self.running}
        return {k: t.detach().numpy().copy() for k, t in tensors.items()}


# --- checks ----------------------------------------------------------------------------------


def compare(name, tolerance, loss_pair, grads_pair, params_pair) -> dict:
    """Norm-wise relative errors; params_pair covers the batch-norm state as well."""
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


def run_checks(config, spec, module, params, X, Y, labels, dtype, torch) -> dict:
    """gradients and train_step (with the same masks) against the NumPy reference and torch."""
    layers, batch, _ = CONFIGS[config]
    tolerance = TOLERANCE[dtype]
    masks = draw_masks(spec.flat, spec.order, np.random.default_rng(MASK_SEED), batch)
    given = copy_params(params)
    ours_loss, ours_grads = module.gradients(given, X, Y, rng=np.random.default_rng(MASK_SEED))
    state_kept = all(np.array_equal(given[k], params[k]) for k in params)
    stepped = copy_params(params)
    step_loss = module.train_step(stepped, X, Y, LR, rng=np.random.default_rng(MASK_SEED))
    result: dict = {"tolerance": tolerance, "dropout_masks": sorted(masks)}
    result["gradients_leave_params"] = state_kept
    result["train_step_loss_matches"] = bool(rel_error(step_loss, ours_loss) <= tolerance)
    # 1. the NumPy reference, in float64 from the same (rounded) parameters and inputs
    wide = {k: v.astype(np.float64) for k, v in params.items()}
    ref_loss, ref_grads, ref_state = reference_step(
        layers, wide, X.astype(np.float64), Y.astype(np.float64), masks
    )
    ref_after = {k: wide[k] - LR * ref_grads[k] for k in ref_grads}
    ref_after.update(ref_state)
    result["reference"] = compare(
        "plain NumPy backprop",
        tolerance,
        (ours_loss, ref_loss),
        (ours_grads, ref_grads),
        (stepped, ref_after),
    )
    # 2. PyTorch eager: nn modules with the module's masks in place of nn.Dropout
    if torch is not None:
        grad_model = TorchStep(torch, layers, params, X, labels, dtype, masks=masks)
        t_loss, t_grads = grad_model.gradients()
        step_model = TorchStep(torch, layers, params, X, labels, dtype, masks=masks)
        step_model.step()
        result["torch"] = compare(
            "torch nn modules",
            tolerance,
            (ours_loss, t_loss),
            (ours_grads, t_grads),
            (stepped, step_model.state()),
        )
    else:
        result["torch"] = None
    result["passed"] = bool(
        state_kept
        and result["train_step_loss_matches"]
        and result["reference"]["passed"]
        and (result["torch"] is None or result["torch"]["passed"])
    )
    return result


# --- timing ----------------------------------------------------------------------------------


def time_interleaved(steps: dict, budget_s: float, min_rounds: int, warmup: int) -> dict:
    """Per variant: median seconds per step by the wall clock and by this process's CPU time.

    Blocks of steps in rotating order after a warm-up, the garbage collector paused (as in
    train_step.py).  The CPU time (``time.process_time``, all threads: one here) leaves out
    the time the process waits while another one runs on a shared machine; the wall clock
    (``time.perf_counter``) is what train_step.py reports.
    """
    names = list(steps)
    estimate = {}
    for name in names:
        fn = steps[name]
        fn()  # first call: allocations, lazy initialisation
        start = time.perf_counter()
        count = 0
        while count < warmup or (time.perf_counter() - start < 0.05 * budget_s and count < 2000):
            fn()
            count += 1
        estimate[name] = max((time.perf_counter() - start) / count, 1e-7)
    target = min(0.05, budget_s / (max(min_rounds, 10) * len(names)))
    block = {n: max(1, int(target / estimate[n])) for n in names}
    per_round = sum(block[n] * estimate[n] for n in names)
    rounds = max(min_rounds, int(budget_s / per_round))
    wall: dict = {n: [] for n in names}
    cpu: dict = {n: [] for n in names}
    clock, cpu_clock = time.perf_counter, time.process_time
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            for i in range(len(names)):
                name = names[(i + r) % len(names)]
                fn, out, out_cpu = steps[name], wall[name], cpu[name]
                for _ in range(block[name]):
                    c, t = cpu_clock(), clock()
                    fn()
                    out.append(clock() - t)
                    out_cpu.append(cpu_clock() - c)
    finally:
        if enabled:
            gc.enable()
    return {
        n: {
            "median_s": statistics.median(wall[n]),
            "min_s": min(wall[n]),
            "cpu_median_s": statistics.median(cpu[n]),
            "cpu_min_s": min(cpu[n]),
            "samples": len(wall[n]),
            "block": block[n],
            "rounds": rounds,
        }
        for n in names
    }


# --- the run ---------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--json", default=None, help="write all numbers to this JSON file")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of timed steps per row (default 6, --quick 0.15)",
    )
    parser.add_argument("--no-torch", action="store_true", help="run as if torch were absent")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the checks, time every line of the generated step (profile_step.py's "
        "instrumentation) instead of the side-by-side comparison",
    )
    parser.add_argument("--steps", type=int, default=200, help="steps per --profile")
    parser.add_argument("--top", type=int, default=25, help="lines printed per --profile")
    parser.add_argument(
        "--unset-openblas-env",
        action="store_true",
        help="re-execute without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in the environment",
    )
    args = parser.parse_args(argv)
    if args.budget is None:
        args.budget = 0.15 if args.quick else 6.0
    return args


def fmt_us(seconds) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e6:,.1f}"


def markdown_table(rows) -> str:
    head = (
        "| config | batch | dtype | numpy µs | torch µs | numpy/torch | numpy CPU µs "
        "| torch CPU µs | numpy/torch (CPU) | torch variant |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['batch']} | {r['dtype']} | {fmt_us(r['numpy_s'])} "
            f"| {fmt_us(r['torch_s'])} | {fmt_ratio(r['ratio'])} | {fmt_us(r['numpy_cpu_s'])} "
            f"| {fmt_us(r['torch_cpu_s'])} | {fmt_ratio(r['ratio_cpu'])} "
            f"| {r['torch_variant'] or 'n/a'} |"
        )
    return "\n".join(lines)


def fmt_ratio(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def time_row(config, module, params, X, Y, labels, dtype, torch, args) -> dict:
    """The generated train_step and both torch variants, timed side by side."""
    layers, batch, _ = CONFIGS[config]
    has_dropout = any(entry.get("kind") == "dropout" for entry in layers)
    np_params = copy_params(params)
    rng = np.random.default_rng(MASK_SEED) if has_dropout else None
    steps = {"numpy": lambda: module.train_step(np_params, X, Y, LR, rng=rng)}
    if torch is not None:
        torch.manual_seed(SEED)
        optim = TorchStep(torch, layers, params, X, labels, dtype, "optim")
        manual = TorchStep(torch, layers, params, X, labels, dtype, "manual")
        steps["torch_optim"] = optim.step
        steps["torch_manual"] = manual.step
    timing = time_interleaved(steps, args.budget, 2 if args.quick else 7, 1 if args.quick else 5)
    row = {
        "config": config,
        "description": CONFIGS[config][2],
        "batch": batch,
        "dtype": dtype,
        "threads": 1,
        "numpy_s": timing["numpy"]["median_s"],
        "numpy_cpu_s": timing["numpy"]["cpu_median_s"],
        "torch_s": None,
        "torch_cpu_s": None,
        "torch_variant": None,
        "ratio": None,
        "ratio_cpu": None,
        "timing": timing,
    }
    if torch is not None:
        variants = ("torch_optim", "torch_manual")
        variant = min(variants, key=lambda v: timing[v]["median_s"])
        cpu_variant = min(variants, key=lambda v: timing[v]["cpu_median_s"])
        row.update(
            torch_variant=variant,
            torch_cpu_variant=cpu_variant,
            torch_s=timing[variant]["median_s"],
            torch_cpu_s=timing[cpu_variant]["cpu_median_s"],
        )
        row["ratio"] = row["numpy_s"] / row["torch_s"]
        row["ratio_cpu"] = row["numpy_cpu_s"] / row["torch_cpu_s"]
    return row


def profile_row(config, spec, params, X, Y, dtype, args) -> dict:
    """Per-line times of the generated step (inclusive: a call line includes its callee)."""
    from profile_step import print_lines, profile_lines

    has_dropout = any(entry.get("kind") == "dropout" for entry in CONFIGS[config][0])

    def step(module):
        own = copy_params(params)
        rng = np.random.default_rng(MASK_SEED) if has_dropout else None
        return lambda: module.train_step(own, X, Y, LR, rng=rng)

    source = generate(spec)
    step_us, instrumented, lines = profile_lines(source, f"profile_{config}", step, args.steps)
    print(
        f"\n## {config} {dtype} batch {CONFIGS[config][1]}: train_step {step_us:,.1f} µs "
        f"(median; {instrumented:,.1f} µs instrumented)"
    )
    print_lines(lines, args.top)
    return {
        "config": config,
        "dtype": dtype,
        "step_us": step_us,
        "instrumented_step_us": instrumented,
        "lines": lines,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    torch, torch_note = _import_torch(args.no_torch)
    threadpoolctl = _import_threadpoolctl()
    env = environment(torch, torch_note, None, "not used", threadpoolctl, args.unset_openblas_env)
    env["thread_env"] = {
        k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    }
    print(f"# kinds_step benchmark: {env['cpu_model']}, one thread", file=sys.stderr)
    results: list = []
    checks: list = []
    profiles: list = []
    all_passed = True

    def write_report() -> None:
        if not args.json:
            return
        report = {
            "benchmark": "kinds_step",
            "argv": sys.argv[1:] if argv is None else list(argv),
            "quick": args.quick,
            "settings": {
                "lr": LR,
                "seed": SEED,
                "mask_seed": MASK_SEED,
                "budget_s_per_row": args.budget,
                "threads": 1,
                "configs": {
                    c: {"layers": CONFIGS[c][0], "batch": CONFIGS[c][1], "text": CONFIGS[c][2]}
                    for c in args.configs
                },
                "dtypes": list(args.dtypes),
                "tolerance": TOLERANCE,
            },
            "environment": env,
            "checks": checks,
            "checks_passed": all_passed,
            "results": results,
            "profiles": profiles,
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1, default=str)

    with thread_limit(1, torch, threadpoolctl):
        for config in args.configs:
            t0 = time.perf_counter()
            spec = make_spec(config)
            module = load_module(generate(spec), f"bench_{config}")
            codegen_s = time.perf_counter() - t0
            for dtype in args.dtypes:
                params, X, Y, labels = make_problem(module, config, dtype)
                check = run_checks(config, spec, module, params, X, Y, labels, dtype, torch)
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
                if args.profile:
                    profiles.append(profile_row(config, spec, params, X, Y, dtype, args))
                    continue
                row = time_row(config, module, params, X, Y, labels, dtype, torch, args)
                row["codegen_s"] = codegen_s
                results.append(row)
                write_report()
                print(
                    f"# {config} {dtype}: numpy {fmt_us(row['numpy_s'])} µs, "
                    f"torch {fmt_us(row['torch_s'])} µs ({row['torch_variant']}), "
                    f"ratio {fmt_ratio(row['ratio'])} (CPU time {fmt_ratio(row['ratio_cpu'])})",
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
