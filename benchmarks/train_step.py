#!/usr/bin/env python
"""One SGD step of a generated symbackprop module against PyTorch eager (and PyTensor) on CPU.

Run on demand, never as a timed test:

    python benchmarks/train_step.py [--quick] [--threads 1 2] [--json out.json]
                                    [--configs NAME ...] [--unset-openblas-env]

For every configuration x activation (relu, tanh) x dtype (float64, float32) the script

1. generates the module with ``symbackprop.codegen.generate`` from a ``from_dict`` spec and
   loads it with ``symbackprop.checkpoint.load_module``;
2. checks, before any timing, that the generated ``gradients`` and ``train_step`` agree with
   PyTorch autograd (loss, every gradient, every parameter after one step), with a plain
   hand-written NumPy backprop that shares no code with the generator, and (loss and
   parameters after one step) with PyTensor, as compiled and with ``trust_input``; relative
   tolerance 1e-10 in float64, 1e-4 in float32;
3. for each thread count, limits NumPy's BLAS (threadpoolctl) and torch
   (``torch.set_num_threads``) to the same number of threads, measures the GEMM rate of this
   process, and times the steps interleaved: blocks of numpy, torch (two variants), pytensor
   (as compiled and with ``trust_input``) steps in rotating order, after a warm-up, with
   ``time.perf_counter`` and ``time.process_time`` around every step and the garbage
   collector paused (as ``timeit`` does); the median per-step times are reported.

See benchmarks/README.md for what every number means.
"""

from __future__ import annotations

import json
import os
import sys

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_ORIGINAL_ENV_KEY = "SYMBACKPROP_BENCH_ORIGINAL_OPENBLAS_ENV"


def _reexec_without_openblas_env() -> None:
    """--unset-openblas-env: start again without the variables, before NumPy is loaded."""
    if "--unset-openblas-env" not in sys.argv[1:]:
        return
    present = {k: os.environ[k] for k in OPENBLAS_VARS if k in os.environ}
    if not present:
        return
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
    env[_ORIGINAL_ENV_KEY] = json.dumps(present)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


_reexec_without_openblas_env()

import argparse  # noqa: E402
import gc  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from contextlib import contextmanager, nullcontext  # noqa: E402

import numpy as np  # noqa: E402

from symbackprop.codegen import generate  # noqa: E402
from symbackprop.spec import from_dict  # noqa: E402
from symbackprop.verify import load_module  # noqa: E402

# name -> list of (layer sizes, batch)
CONFIGS: dict[str, list[tuple[tuple[int, ...], int]]] = {
    "tiny": [((2, 3, 3, 2), 1), ((2, 3, 3, 2), 32)],
    "mnist_small": [((784, 128, 64, 10), 64)],
    "mnist_wide": [((784, 512, 512, 10), 256)],
    "big": [((2048, 2048, 2048, 10), 512)],
    "deep_narrow": [((64,) + (64,) * 10 + (10,), 32)],
}
ACTIVATIONS = ("relu", "tanh")
DTYPES = ("float64", "float32")
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
LR = 0.01
SEED = 0
PEAK_GEMM = 1024  # the "BLAS limit": an n x n x n GEMM in NumPy


# --- optional dependencies -------------------------------------------------------------------


def _import_torch(disabled: bool):
    if disabled:
        return None, "disabled with --no-torch"
    try:
        import torch
        import torch.nn.functional  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        return None, f"not importable: {type(err).__name__}: {err}"
    return torch, None


def _import_pytensor(disabled: bool):
    if disabled:
        return None, "disabled with --no-pytensor"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pytensor
            import pytensor.tensor  # noqa: F401
            import pytensor.tensor.special  # noqa: F401
    except Exception as err:  # noqa: BLE001
        return None, f"not importable: {type(err).__name__}: {err}"
    return pytensor, None


def _import_threadpoolctl():
    try:
        import threadpoolctl
    except Exception:  # noqa: BLE001
        return None
    return threadpoolctl


@contextmanager
def thread_limit(n: int, torch, threadpoolctl):
    """The same number of threads for NumPy's BLAS (and OpenMP) and for torch."""
    previous = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    limiter = threadpoolctl.threadpool_limits(limits=n) if threadpoolctl else nullcontext()
    try:
        with limiter:
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(previous)


# --- environment -----------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(torch, torch_note, pytensor, pytensor_note, threadpoolctl, unset_flag) -> dict:
    original = os.environ.get(_ORIGINAL_ENV_KEY)
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "torch_note": torch_note,
        "pytensor": pytensor.__version__ if pytensor is not None else None,
        "pytensor_note": pytensor_note,
        "threadpoolctl": threadpoolctl.__version__ if threadpoolctl else None,
        "blas": threadpoolctl.threadpool_info() if threadpoolctl else None,
        "openblas_env": {k: os.environ.get(k) for k in OPENBLAS_VARS},
        "openblas_env_at_start": json.loads(original) if original else None,
        "unset_openblas_env": bool(unset_flag),
        "openblas_env_used": (
            "unset (re-executed without them)"
            if original
            else (
                "as found (none set)"
                if not any(os.environ.get(k) for k in OPENBLAS_VARS)
                else "as found (set)"
            )
        ),
    }
    if pytensor is not None:
        env["pytensor_blas_ldflags"] = pytensor.config.blas__ldflags
        env["pytensor_cxx"] = pytensor.config.cxx
        env["pytensor_mode"] = str(pytensor.config.mode)
        env["pytensor_linker"] = str(pytensor.config.linker)
    if torch is not None:
        env["torch_default_threads"] = torch.get_num_threads()
        env["torch_mkl"] = bool(torch.backends.mkl.is_available())
        env["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
        try:
            env["torch_parallel_info"] = torch.__config__.parallel_info()
        except Exception:  # noqa: BLE001
            pass
    return env


# --- the networks ----------------------------------------------------------------------------


def make_spec(name: str, sizes: tuple[int, ...], activation: str):
    layers = [{"units": u, "activation": activation} for u in sizes[1:-1]]
    layers.append({"units": sizes[-1], "activation": "softmax"})
    return from_dict({"name": name, "inputs": sizes[0], "loss": "cross_entropy", "layers": layers})


def make_problem(module, sizes, batch, dtype):
    """Parameters (He/Xavier init, small random biases), inputs, one-hot targets, labels."""
    rng = np.random.default_rng((SEED, batch, len(sizes)))
    params = module.init_params(seed=SEED, dtype=dtype)
    for key, value in params.items():
        if key.startswith("b"):
            value[...] = rng.normal(0.0, 0.1, size=value.shape)
    X = rng.normal(0.0, 1.0, size=(batch, sizes[0])).astype(dtype)
    labels = rng.integers(0, sizes[-1], size=batch)
    Y = np.eye(sizes[-1], dtype=dtype)[labels]
    return params, X, Y, labels


def copy_params(params: dict) -> dict:
    return {k: v.copy() for k, v in params.items()}


def flops_per_step(sizes, batch) -> int:
    """Forward Z = A W^T, backward dW = dZ^T A and dA = dZ W: 3 GEMMs of 2 b n_in n_out."""
    return 6 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


# --- the plain NumPy reference (shares no code with the generator) ---------------------------


def reference_gradients(params, X, Y, activation):
    depth = len(params) // 2
    activations = [X]
    A = X
    for layer in range(1, depth + 1):
        Z = A @ params[f"W{layer}"].T + params[f"b{layer}"]
        if layer < depth:
            A = np.maximum(Z, 0) if activation == "relu" else np.tanh(Z)
        else:
            shifted = Z - Z.max(axis=1, keepdims=True)
            logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            A = np.exp(logp)
        activations.append(A)
    batch = X.shape[0]
    loss = float(-(Y * logp).sum() / batch)
    grads = {}
    dZ = (activations[-1] - Y) / batch
    for layer in range(depth, 0, -1):
        grads[f"W{layer}"] = dZ.T @ activations[layer - 1]
        grads[f"b{layer}"] = dZ.sum(axis=0)
        if layer > 1:
            A = activations[layer - 1]
            prime = (A > 0).astype(A.dtype) if activation == "relu" else 1 - A * A
            dZ = (dZ @ params[f"W{layer}"]) * prime
    return loss, grads


# --- PyTorch ---------------------------------------------------------------------------------


class TorchStep:
    """The same step in PyTorch eager: F.linear layers (nn.Linear's own op), mean CE.

    variant "manual": grads set to None, loss.backward(), then under no_grad
    ``p.sub_(p.grad, alpha=lr)`` (p -= lr * grad without a temporary);
    variant "optim": ``torch.optim.SGD`` with ``zero_grad(set_to_none=True)``.
    Both return ``loss.item()``, as the generated step returns a Python float.
    """

    def __init__(self, torch, params, X, labels, activation, lr, variant="manual"):
        self.torch = torch
        self.F = torch.nn.functional
        self.depth = len(params) // 2
        self.params = [
            torch.tensor(params[f"{kind}{layer}"]).requires_grad_()
            for layer in range(1, self.depth + 1)
            for kind in ("W", "b")
        ]
        self.X = torch.from_numpy(X.copy())
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.act = torch.relu if activation == "relu" else torch.tanh
        self.lr = lr
        self.variant = variant
        self.optimizer = torch.optim.SGD(self.params, lr=lr) if variant == "optim" else None

    def _loss(self):
        A = self.X
        p = self.params
        for layer in range(self.depth):
            Z = self.F.linear(A, p[2 * layer], p[2 * layer + 1])
            A = self.act(Z) if layer < self.depth - 1 else Z
        return self.F.cross_entropy(A, self.labels)

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
        grads = self._as_dict([p.grad for p in self.params])
        for p in self.params:
            p.grad = None
        return loss.item(), grads

    def _as_dict(self, tensors):
        names = [f"{k}{layer}" for layer in range(1, self.depth + 1) for k in ("W", "b")]
        return {n: t.detach().numpy().copy() for n, t in zip(names, tensors, strict=True)}

    def state(self):
        return self._as_dict(self.params)


# --- PyTensor --------------------------------------------------------------------------------


class PyTensorStep:
    """The same step compiled by pytensor.function: forward, mean CE, grad, SGD ``updates=``."""

    def __init__(self, pytensor, params, activation, dtype, lr):
        pt = pytensor.tensor
        from pytensor.tensor.special import log_softmax

        self.depth = len(params) // 2
        self.names = [f"{k}{layer}" for layer in range(1, self.depth + 1) for k in ("W", "b")]
        self.shared = {n: pytensor.shared(params[n].copy(), name=n) for n in self.names}
        Xv = pt.matrix("X", dtype=dtype)
        Yv = pt.matrix("Y", dtype=dtype)
        A = Xv
        for layer in range(1, self.depth + 1):
            Z = pt.dot(A, self.shared[f"W{layer}"].T) + self.shared[f"b{layer}"]
            if layer < self.depth:
                A = pt.switch(Z > 0, Z, 0) if activation == "relu" else pt.tanh(Z)
        loss = -(Yv * log_softmax(Z, axis=1)).sum(axis=1).mean()
        shared = [self.shared[n] for n in self.names]
        grads = pytensor.grad(loss, shared)
        rate = np.asarray(lr, dtype=dtype)
        updates = [(p, (p - rate * g).astype(dtype)) for p, g in zip(shared, grads, strict=True)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.function = pytensor.function([Xv, Yv], loss, updates=updates)

    def step(self, X, Y) -> float:
        return float(self.function(X, Y))

    def trusted(self):
        """The same compiled function and parameters with ``trust_input = True``.

        PyTensor then skips its per-call input checks and conversions (the caller passes
        arrays of the exact dtype and rank); a copy that shares the parameters' storage, so
        ``state`` and ``reset`` apply to it too.
        """
        if getattr(self, "_trusted", None) is None:
            self._trusted = self.function.copy(share_memory=True)
            self._trusted.trust_input = True
        return self._trusted

    def step_trusted(self, X, Y) -> float:
        return float(self.trusted()(X, Y))

    def state(self):
        return {n: self.shared[n].get_value() for n in self.names}

    def reset(self, params):
        for n in self.names:
            self.shared[n].set_value(params[n].copy())


# --- checks ----------------------------------------------------------------------------------


def rel_error(value, reference) -> float:
    """max |value - reference| / max(max |reference|, tiny): a norm-wise relative error."""
    value = np.asarray(value, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    scale = max(float(np.max(np.abs(reference))), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(value - reference)) / scale)


def compare(name, tolerance, loss_pair=None, grads_pair=None, params_pair=None) -> dict:
    errors = {}
    if loss_pair is not None:
        errors["loss"] = rel_error(*loss_pair)
    if grads_pair is not None:
        ours, theirs = grads_pair
        errors["grads"] = {k: rel_error(ours[k], theirs[k]) for k in ours}
    if params_pair is not None:
        ours, theirs = params_pair
        errors["params_after_step"] = {k: rel_error(ours[k], theirs[k]) for k in ours}
    flat = [errors.get("loss", 0.0)]
    for key in ("grads", "params_after_step"):
        flat += list(errors.get(key, {}).values())
    worst = max(flat)
    return {
        "against": name,
        "tolerance": tolerance,
        "max_rel_error": worst,
        "passed": bool(worst <= tolerance),
        "errors": errors,
    }


def run_checks(module, params, X, Y, labels, activation, dtype, torch, pytensor_fn) -> dict:
    tolerance = TOLERANCE[dtype]
    ours_loss, ours_grads = module.gradients(copy_params(params), X, Y)
    stepped = copy_params(params)
    step_loss = module.train_step(stepped, X, Y, LR)
    result = {"tolerance": tolerance}
    # 1. hand-written NumPy backprop (always available)
    ref_loss, ref_grads = reference_gradients(params, X, Y, activation)
    ref_after = {k: params[k] - LR * ref_grads[k] for k in params}
    result["reference"] = compare(
        "plain NumPy backprop",
        tolerance,
        loss_pair=(ours_loss, ref_loss),
        grads_pair=(ours_grads, ref_grads),
        params_pair=(stepped, ref_after),
    )
    # train_step returns the same loss as gradients, before the step
    result["reference"]["train_step_loss_matches"] = bool(
        rel_error(step_loss, ours_loss) <= tolerance
    )
    result["reference"]["passed"] &= result["reference"]["train_step_loss_matches"]
    # 2. PyTorch autograd
    if torch is not None:
        reference = TorchStep(torch, params, X, labels, activation, LR)
        t_loss, t_grads = reference.gradients()
        reference.step()
        result["torch"] = compare(
            "torch autograd",
            tolerance,
            loss_pair=(ours_loss, t_loss),
            grads_pair=(ours_grads, t_grads),
            params_pair=(stepped, reference.state()),
        )
    else:
        result["torch"] = None
    # 3. PyTensor (loss and parameters after one step)
    if pytensor_fn is not None:
        fn = pytensor_fn()
        if isinstance(fn, str):
            result["pytensor"] = {"passed": None, "note": fn}
        else:
            p_loss = fn.step(X, Y)
            result["pytensor"] = compare(
                "pytensor",
                tolerance,
                loss_pair=(ours_loss, p_loss),
                params_pair=(stepped, fn.state()),
            )
            # the same compiled step without PyTensor's input checks (trust_input)
            fn.reset(params)
            trusted = compare(
                "pytensor trust_input",
                tolerance,
                loss_pair=(ours_loss, fn.step_trusted(X, Y)),
                params_pair=(stepped, fn.state()),
            )
            result["pytensor"]["trust_input"] = trusted
            result["pytensor"]["passed"] &= trusted["passed"]
    else:
        result["pytensor"] = None
    result["passed"] = all(
        entry["passed"] is not False
        for entry in (result["reference"], result["torch"], result["pytensor"])
        if entry is not None
    )
    return result


# --- timing ----------------------------------------------------------------------------------


def _median_call(fn, budget_s: float, min_calls: int = 3) -> float:
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or (time.perf_counter() - start < budget_s and len(times) < 10000):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def gemm_rate_numpy(m, k, n, dtype, budget_s) -> float:
    """FLOP/s of A (m x k) @ W.T with W (n x k), the layer's own product shape."""
    rng = np.random.default_rng(7)
    A = rng.standard_normal((m, k)).astype(dtype)
    W = rng.standard_normal((n, k)).astype(dtype)
    return 2.0 * m * k * n / _median_call(lambda: A @ W.T, budget_s)


def gemm_rate_torch(torch, m, k, n, dtype, budget_s) -> float:
    A = torch.randn(m, k, dtype=getattr(torch, dtype))
    W = torch.randn(n, k, dtype=getattr(torch, dtype))
    return 2.0 * m * k * n / _median_call(lambda: A @ W.T, budget_s)


def time_interleaved(steps: dict, budget_s: float, min_rounds: int, warmup: int) -> dict:
    """Median per-step seconds per variant, from blocks of steps run in rotating order.

    Each step is timed by the wall clock (``median_s``) and by this process's CPU time
    (``cpu_median_s``, ``time.process_time``: all threads, so with one thread the step's own
    work, without the time the process waits for a CPU on a shared machine).
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
    # blocks of ~budget/(rounds * variants), at most 50 ms, at least one step
    target = min(0.05, budget_s / (max(min_rounds, 10) * len(names)))
    block = {n: max(1, int(target / estimate[n])) for n in names}
    per_round = sum(block[n] * estimate[n] for n in names)
    rounds = max(min_rounds, int(budget_s / per_round))
    samples = {n: [] for n in names}
    cpu = {n: [] for n in names}
    clock, cpu_clock = time.perf_counter, time.process_time
    enabled = gc.isenabled()
    gc.collect()  # once, before: a collection of this heap (SymPy, torch) takes ~0.1 s
    gc.disable()
    try:
        for r in range(rounds):
            for i in range(len(names)):
                name = names[(i + r) % len(names)]
                fn = steps[name]
                out, out_cpu = samples[name], cpu[name]
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
            "median_s": statistics.median(samples[n]),
            "min_s": min(samples[n]),
            "cpu_median_s": statistics.median(cpu[n]),
            "samples": len(samples[n]),
            "block": block[n],
        }
        for n in names
    }


# --- the run ---------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="BLAS/torch thread counts (default: 1 and the number of usable CPUs)",
    )
    parser.add_argument("--json", default=None, help="write all numbers to this JSON file")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=None)
    parser.add_argument("--activations", nargs="+", choices=ACTIVATIONS, default=ACTIVATIONS)
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=DTYPES)
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of timed steps per row (default 3, --quick 0.15)",
    )
    parser.add_argument("--no-torch", action="store_true", help="run as if torch were absent")
    parser.add_argument("--no-pytensor", action="store_true", help="skip PyTensor")
    parser.add_argument(
        "--unset-openblas-env",
        action="store_true",
        help=f"re-execute with {' and '.join(OPENBLAS_VARS)} removed from the environment",
    )
    args = parser.parse_args(argv)
    if args.threads is None:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        args.threads = sorted({1, usable or 1})
    if any(n < 1 for n in args.threads):
        parser.error("--threads: expected positive integers")
    if args.configs is None:
        args.configs = list(CONFIGS)
    if args.budget is None:
        args.budget = 0.15 if args.quick else 3.0
    return args


def fmt_us(seconds) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e6:,.1f}"


def fmt(value, spec) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown_table(rows) -> str:
    head = (
        "| config | sizes | batch | act | dtype | threads | numpy µs | torch µs | numpy/torch "
        "| numpy/torch (CPU) | BLAS frac (peak) | BLAS frac (layer) | torch BLAS frac (peak) "
        "| pytensor µs | pytensor trust µs |"
    )
    lines = [head, head_rule(head)]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['sizes_text']} | {r['batch']} | {r['activation']} "
            f"| {r['dtype']} | {r['threads']} | {fmt_us(r['numpy_s'])} | {fmt_us(r['torch_s'])} "
            f"| {fmt(r['ratio'], '.2f')} | {fmt(r['ratio_cpu'], '.2f')} "
            f"| {fmt(r['fraction_blas_peak'], '.3f')} "
            f"| {fmt(r['fraction_blas_layer'], '.3f')} "
            f"| {fmt(r['torch_fraction_blas_peak'], '.3f')} | {fmt_us(r['pytensor_s'])} "
            f"| {fmt_us(r['pytensor_trust_s'])} |"
        )
    return "\n".join(lines)


def head_rule(head: str) -> str:
    return "|" + "---|" * (head.count("|") - 1)


def sizes_text(sizes) -> str:
    if len(sizes) > 6 and len(set(sizes[1:-1])) == 1:
        return f"{sizes[0]}-{sizes[1]}x{len(sizes) - 2}-{sizes[-1]}"
    return "-".join(map(str, sizes))


def main(argv=None) -> int:
    args = parse_args(argv)
    # PyTensor without a linked BLAS and Numba's contiguity hints: recorded, not printed
    warnings.filterwarnings("ignore", message=".*could not link to a BLAS.*")
    warnings.filterwarnings("ignore", message=r".*np\.dot\(\) is faster.*")
    torch, torch_note = _import_torch(args.no_torch)
    pytensor, pytensor_note = _import_pytensor(args.no_pytensor)
    threadpoolctl = _import_threadpoolctl()
    env = environment(
        torch, torch_note, pytensor, pytensor_note, threadpoolctl, args.unset_openblas_env
    )
    print(f"# train_step benchmark: {env['cpu_model']}, {env['cpu_count']} CPUs", file=sys.stderr)
    if env["blas"]:
        for lib in env["blas"]:
            print(
                f"#   {lib.get('internal_api')} {lib.get('version')} "
                f"({lib.get('architecture', lib.get('threading_layer'))}) {lib.get('prefix')}",
                file=sys.stderr,
            )
    print(f"#   OpenBLAS env: {env['openblas_env']} -> {env['openblas_env_used']}", file=sys.stderr)

    gemm_budget = 0.05 if args.quick else 0.4
    peak_cache: dict = {}
    layer_cache: dict = {}

    def peak_rates(dtype, threads):
        key = (dtype, threads)
        if key not in peak_cache:
            n = 256 if args.quick else PEAK_GEMM
            entry = {
                "dtype": dtype,
                "threads": threads,
                "shape": f"({n} x {n}) @ ({n} x {n})",
                "numpy_gflops": gemm_rate_numpy(n, n, n, dtype, gemm_budget) / 1e9,
                "torch_gflops": (
                    gemm_rate_torch(torch, n, n, n, dtype, gemm_budget) / 1e9 if torch else None
                ),
            }
            peak_cache[key] = entry
        return peak_cache[key]

    results = []
    checks = []
    all_passed = True

    def write_report(final: bool) -> None:
        """The JSON file, rewritten after every row (a crash keeps what was measured)."""
        report = {
            "benchmark": "train_step",
            "argv": sys.argv[1:] if argv is None else list(argv),
            "quick": args.quick,
            "settings": {
                "lr": LR,
                "seed": SEED,
                "budget_s_per_row": args.budget,
                "threads": args.threads,
                "configs": {c: [[list(s), b] for s, b in CONFIGS[c]] for c in args.configs},
                "activations": list(args.activations),
                "dtypes": list(args.dtypes),
                "tolerance": TOLERANCE,
                "peak_gemm": "numpy (n x n) @ (n x n), n = 1024 (256 with --quick)",
            },
            "environment": env,
            "gemm": list(peak_cache.values()),
            "checks": checks,
            "checks_passed": all_passed,
            "results": results,
        }
        if args.json:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump(report, handle, indent=1, default=str)
            if final:
                print(f"wrote {args.json}", file=sys.stderr)

    for config in args.configs:
        for sizes, batch in CONFIGS[config]:
            flops = flops_per_step(sizes, batch)
            widest = max(range(len(sizes) - 1), key=lambda i: sizes[i] * sizes[i + 1])
            m, k, n = batch, sizes[widest], sizes[widest + 1]
            for activation in args.activations:
                name = f"bench_{config}_{activation}"
                t0 = time.perf_counter()
                try:
                    module = load_module(generate(make_spec(name, sizes, activation)), name)
                except Exception as err:  # noqa: BLE001 - report, go on with the others
                    all_passed = False
                    note = f"generation failed: {type(err).__name__}: {err}"
                    checks.append(
                        {
                            "config": config,
                            "batch": batch,
                            "activation": activation,
                            "passed": False,
                            "note": note,
                        }
                    )
                    print(f"# {config} b={batch} {activation}: {note}", file=sys.stderr)
                    continue
                codegen_s = time.perf_counter() - t0
                for dtype in args.dtypes:
                    params, X, Y, labels = make_problem(module, sizes, batch, dtype)
                    label = f"{config} b={batch} {activation} {dtype}"
                    pt_state: dict = {}

                    def pytensor_step(
                        params=params, activation=activation, dtype=dtype, pt_state=pt_state
                    ):
                        if "fn" not in pt_state:
                            try:
                                t = time.perf_counter()
                                pt_state["fn"] = PyTensorStep(
                                    pytensor, params, activation, dtype, LR
                                )
                                pt_state["compile_s"] = time.perf_counter() - t
                            except Exception as err:  # noqa: BLE001
                                pt_state["fn"] = f"compile failed: {type(err).__name__}: {err}"
                        return pt_state["fn"]

                    check = run_checks(
                        module,
                        params,
                        X,
                        Y,
                        labels,
                        activation,
                        dtype,
                        torch,
                        pytensor_step if pytensor is not None else None,
                    )
                    check.update(config=config, batch=batch, activation=activation, dtype=dtype)
                    checks.append(check)
                    status = "pass" if check["passed"] else "FAIL"
                    print(f"# check {label}: {status}", file=sys.stderr)
                    if not check["passed"]:
                        all_passed = False
                        print(json.dumps(check, indent=1, default=str), file=sys.stderr)
                        continue
                    pt_ok = (
                        pytensor is not None
                        and check["pytensor"] is not None
                        and check["pytensor"].get("passed")
                    )
                    # fresh copies per side: each trains on its own parameters
                    for threads in args.threads:
                        with thread_limit(threads, torch, threadpoolctl):
                            peak = peak_rates(dtype, threads)
                            lkey = (m, k, n, dtype, threads)
                            if lkey not in layer_cache:
                                layer_cache[lkey] = gemm_rate_numpy(m, k, n, dtype, gemm_budget)
                            layer_rate = layer_cache[lkey]
                            np_params = copy_params(params)
                            steps = {
                                "numpy": lambda p=np_params, m=module, X=X, Y=Y: m.train_step(
                                    p, X, Y, LR
                                ),
                            }
                            if torch is not None:
                                manual = TorchStep(torch, params, X, labels, activation, LR)
                                optim = TorchStep(torch, params, X, labels, activation, LR, "optim")
                                steps["torch_manual"] = manual.step
                                steps["torch_optim"] = optim.step
                            if pt_ok:
                                compiled = pt_state["fn"]
                                compiled.reset(params)
                                steps["pytensor"] = lambda f=compiled, X=X, Y=Y: f.step(X, Y)
                                trusted = compiled.trusted()
                                steps["pytensor_trust"] = lambda f=trusted, X=X, Y=Y: float(f(X, Y))
                            timing = time_interleaved(
                                steps, args.budget, 2 if args.quick else 5, 1 if args.quick else 3
                            )
                        numpy_s = timing["numpy"]["median_s"]
                        torch_s = variant = None
                        if torch is not None:
                            variant = min(
                                ("torch_manual", "torch_optim"),
                                key=lambda v: timing[v]["median_s"],
                            )
                            torch_s = timing[variant]["median_s"]
                        pytensor_s = timing["pytensor"]["median_s"] if pt_ok else None
                        trust_s = timing["pytensor_trust"]["median_s"] if pt_ok else None
                        numpy_cpu = timing["numpy"]["cpu_median_s"]
                        torch_cpu = timing[variant]["cpu_median_s"] if torch is not None else None
                        peak_rate = peak["numpy_gflops"] * 1e9
                        torch_peak = peak["torch_gflops"]
                        row = {
                            "config": config,
                            "sizes": list(sizes),
                            "sizes_text": sizes_text(sizes),
                            "batch": batch,
                            "activation": activation,
                            "dtype": dtype,
                            "threads": threads,
                            "flops_per_step": flops,
                            "numpy_s": numpy_s,
                            "torch_s": torch_s,
                            "torch_variant": variant,
                            "torch_manual_s": (
                                timing["torch_manual"]["median_s"] if torch else None
                            ),
                            "torch_optim_s": timing["torch_optim"]["median_s"] if torch else None,
                            "pytensor_s": pytensor_s,
                            "pytensor_trust_s": trust_s,
                            "pytensor_compile_s": pt_state.get("compile_s"),
                            "pytensor_note": (
                                None
                                if pt_ok
                                else (
                                    pytensor_note
                                    or (check["pytensor"] or {}).get("note")
                                    or "check did not pass"
                                )
                            ),
                            "ratio": numpy_s / torch_s if torch_s else None,
                            "ratio_pytensor": numpy_s / pytensor_s if pytensor_s else None,
                            "ratio_pytensor_trust": numpy_s / trust_s if trust_s else None,
                            "numpy_cpu_s": numpy_cpu,
                            "torch_cpu_s": torch_cpu,
                            "ratio_cpu": numpy_cpu / torch_cpu if torch_cpu else None,
                            "gemm_peak_gflops": peak["numpy_gflops"],
                            "gemm_layer_shape": f"({m} x {k}) @ ({k} x {n})",
                            "gemm_layer_gflops": layer_rate / 1e9,
                            "fraction_blas_peak": flops / peak_rate / numpy_s,
                            "fraction_blas_layer": flops / layer_rate / numpy_s,
                            "torch_fraction_blas_peak": (
                                flops / peak_rate / torch_s if torch_s else None
                            ),
                            "torch_fraction_own_gemm_peak": (
                                flops / (torch_peak * 1e9) / torch_s
                                if torch_s and torch_peak
                                else None
                            ),
                            "codegen_s": codegen_s,
                            "timing": timing,
                        }
                        results.append(row)
                        write_report(False)
                        print(
                            f"# {label} threads={threads}: numpy {fmt_us(numpy_s)} µs, "
                            f"torch {fmt_us(torch_s)} µs ({variant}), "
                            f"pytensor {fmt_us(pytensor_s)} µs (trust_input {fmt_us(trust_s)})",
                            file=sys.stderr,
                        )

    print(markdown_table(results))
    print()
    print("GEMM rates (median of repeated NumPy / torch matmuls in this process):")
    for entry in peak_cache.values():
        print(
            f"- {entry['dtype']}, {entry['threads']} thread(s), {entry['shape']}: "
            f"numpy {entry['numpy_gflops']:.1f} GFLOP/s, "
            f"torch {fmt(entry['torch_gflops'], '.1f')} GFLOP/s"
        )
    print(f"correctness checks: {'all passed' if all_passed else 'SOME FAILED'}")
    write_report(True)
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
