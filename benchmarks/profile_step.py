#!/usr/bin/env python
"""Where the generated ``train_step`` spends its time: per-line timing of the module's code.

Run on demand:

    python benchmarks/profile_step.py [--configs tiny deep_narrow] [--steps N] [--json out.json]

The module is generated for a configuration of ``train_step.py`` (float64 and float32, relu
and tanh), then every top-level statement of its internal functions (``train_step``,
``_prepare``, ``_check_params``, ``_inputs``, ``_targets``, ``_forward``, ``_gradients``,
``_loss_value``, the kernels) is wrapped in a ``perf_counter`` pair by rewriting the module's
AST.  Times are inclusive (a line that calls ``_forward`` includes all of ``_forward``) and
carry ~0.1 µs of timer overhead per line; the uninstrumented step time is printed beside them.
A cProfile summary (Python-level functions only: NumPy ufuncs are not seen by cProfile, their
time lands in the calling line) and a few micro-measurements of alternatives follow.
"""

from __future__ import annotations

import argparse
import ast
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_step import CONFIGS, make_problem, make_spec  # noqa: E402

from symbackprop.checkpoint import load_module  # noqa: E402
from symbackprop.codegen import generate  # noqa: E402

SKIP = {"init_params", "fit", "predict", "save", "load", "main", "_read_data", "_optimizer"}
LR = 0.01


class _LineTimer(ast.NodeTransformer):
    """Wrap each top-level statement of every (non-skipped) function in a timer."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        if node.name in SKIP:
            return node
        body = []
        for index, stmt in enumerate(node.body):
            if index == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                body.append(stmt)  # the docstring
                continue
            key = f"{node.name}:{stmt.lineno}"
            self.keys.append(key)
            start = ast.parse("_lt_t = _LT_PC()").body
            stop = ast.parse(f"_LT_ACC[{key!r}] += _LT_PC() - _lt_t").body
            if isinstance(stmt, ast.Return) and stmt.value is not None:
                keep = ast.Assign(
                    targets=[ast.Name("_lt_v", ast.Store())], value=stmt.value, lineno=stmt.lineno
                )
                body += start + [keep] + stop + [ast.Return(ast.Name("_lt_v", ast.Load()))]
            else:
                body += start + [stmt] + stop
        node.body = body
        return node


def instrument(source: str, name: str):
    timer = _LineTimer()
    tree = timer.visit(ast.parse(source))
    ast.fix_missing_locations(tree)
    module = type(sys)(name)
    accumulator = dict.fromkeys(timer.keys, 0.0)  # a plain dict: C-speed += per line
    module.__dict__["_LT_PC"] = time.perf_counter
    module.__dict__["_LT_ACC"] = accumulator
    exec(compile(tree, f"<{name}>", "exec"), module.__dict__)  # our own generated code
    return module, accumulator, source.splitlines()


def median_step(fn, steps: int) -> float:
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def micro(fn, repeats: int = 2000) -> float:
    fn()
    return median_step(fn, repeats)


def alternatives(module, params, X, Y) -> dict[str, float]:
    """A few statements of the step and cheaper spellings, µs each (median)."""
    A = np.maximum(X @ params["W1"].T + params["b1"], 0)
    Z = X @ params["W1"].T + params["b1"]
    ws = module._workspace(X.shape[0], params["W1"].dtype)
    G = np.empty_like(A)
    out = {
        "_step (validation, targets, forward, loss)": micro(lambda: module._step(params, X, Y)),
        "_check_params only": micro(lambda: module._check_params(params)),
        "_workspace lookup": micro(lambda: module._workspace(X.shape[0], params["W1"].dtype)),
        "numpy.heaviside(A1, 0, out=G)": micro(lambda: np.heaviside(A, 0, out=G)),
        "sign + maximum into G (the step recipe)": micro(
            lambda: (np.sign(A, out=G), np.maximum(G, 0.0, out=G))
        ),
        "numpy.maximum(Z1, 0, out=G)": micro(lambda: np.maximum(Z, 0, out=G)),
        "numpy.tanh(Z1, out=G)": micro(lambda: np.tanh(Z, out=G)),
        "numpy.dot(X, W1.T, out=Z1)": micro(lambda: np.dot(X, params["W1"].T, out=ws["Z1"])),
        "dict(params) lookup x 2L": micro(lambda: [params[k] for k in params]),
        "empty Python call": micro(lambda: None),
    }
    return {k: v * 1e6 for k, v in out.items()}


def profile_lines(source: str, name: str, step, steps: int) -> tuple[float, float, list[dict]]:
    """(step µs uninstrumented, step µs instrumented, per-line times sorted costliest first).

    step(module) makes the function that runs one step of that module (its own params).
    """
    plain = load_module(source, name)
    run = step(plain)
    for _ in range(50):
        run()
    step_us = median_step(run, steps) * 1e6

    module, acc, lines = instrument(source, name + "_lt")
    run = step(module)
    for _ in range(50):
        run()
    for key in acc:
        acc[key] = 0.0
    instrumented = median_step(run, steps) * 1e6
    # per line: the median over steps of its time in that step (robust to preemption)
    samples: dict[str, list[float]] = {key: [] for key in acc}
    previous = dict(acc)
    for _ in range(steps):
        run()
        current = dict(acc)
        for key, value in current.items():
            samples[key].append(value - previous[key])
        previous = current
    per_line = []
    for key, values in samples.items():
        function, lineno = key.rsplit(":", 1)
        text = lines[int(lineno) - 1].strip()
        per_line.append(
            {
                "function": function,
                "line": int(lineno),
                "code": text,
                "us_per_step": statistics.median(values) * 1e6,
            }
        )
    per_line = [r for r in per_line if r["us_per_step"] > 0]
    per_line.sort(key=lambda r: -r["us_per_step"])
    return step_us, instrumented, per_line


def print_lines(per_line: list[dict], top: int) -> None:
    print("| µs/step | function:line | code |")
    print("|---|---|---|")
    for line in per_line[:top]:
        code = line["code"].replace("|", "\\|")
        print(f"| {line['us_per_step']:.2f} | {line['function']}:{line['line']} | `{code}` |")


def profile_config(config: str, sizes, batch, activation, dtype, steps) -> dict:
    name = f"profile_{config}_{activation}"
    source = generate(make_spec(name, sizes, activation))
    plain = load_module(source, name)
    params, X, Y, _ = make_problem(plain, sizes, batch, dtype)

    def step(module):
        own = {k: v.copy() for k, v in params.items()}
        return lambda: module.train_step(own, X, Y, LR)

    step_us, instrumented, per_line = profile_lines(source, name, step, steps)

    profiler = cProfile.Profile()
    p_prof = {k: v.copy() for k, v in params.items()}
    profiler.enable()
    for _ in range(steps):
        plain.train_step(p_prof, X, Y, LR)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
    return {
        "config": config,
        "sizes": list(sizes),
        "batch": batch,
        "activation": activation,
        "dtype": dtype,
        "step_us": step_us,
        "instrumented_step_us": instrumented,
        "lines": per_line,
        "cprofile": text.getvalue(),
        "alternatives_us": alternatives(plain, p_prof, X, Y),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", nargs="+", choices=sorted(CONFIGS), default=["tiny", "deep_narrow"]
    )
    parser.add_argument("--activations", nargs="+", default=["relu", "tanh"])
    parser.add_argument("--dtypes", nargs="+", default=["float64"])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--top", type=int, default=14)
    parser.add_argument("--cprofile", action="store_true", help="print cProfile summaries too")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    reports = []
    for config in args.configs:
        for sizes, batch in CONFIGS[config]:
            for activation in args.activations:
                for dtype in args.dtypes:
                    r = profile_config(config, sizes, batch, activation, dtype, args.steps)
                    reports.append(r)
                    print(
                        f"\n## {config} {'-'.join(map(str, sizes))} batch {batch} "
                        f"{activation} {dtype}: train_step {r['step_us']:.1f} µs (median; "
                        f"{r['instrumented_step_us']:.1f} µs instrumented)"
                    )
                    print_lines(r["lines"], args.top)
                    print("\nalternatives (µs, median of 2000):")
                    for k, v in r["alternatives_us"].items():
                        print(f"- {k}: {v:.2f}")
                    if args.cprofile:
                        print(r["cprofile"])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(reports, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
