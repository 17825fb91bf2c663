#!/usr/bin/env python
"""How long symbackprop takes to derive and generate, and to run the exact witness.

Run on demand:

    python benchmarks/codegen_time.py [--quick] [--json out.json]

1. ``symbackprop codegen`` for a 10-layer network (inputs = width, 9 tanh hidden layers of
   ``width`` units, a softmax output of 10, cross-entropy) at width 16, 512 and 4096:
   in-process ``generate(spec)`` (spec -> derivation -> module text), median of repeats after
   one warm-up call, and the wall time of ``python -m symbackprop codegen SPEC.json -o FILE``
   in a subprocess (interpreter start and imports included).  The derivation is layer-level,
   so these times should not depend on the width.
2. The certificate's exact neuron-level witness (``symbackprop.verify.exact_graph``, 40-digit
   reverse accumulation) timed inside ``certify`` on networks of about 500, 2,000 and 5,000
   parameters (certify's own check point, batch 4, torch witness off), with certify's total.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import symbackprop
import symbackprop.verify as verify
from symbackprop.codegen import generate
from symbackprop.spec import from_dict, to_dict

WIDTHS = (16, 512, 4096)
DEPTH = 10
EXACT_SIZES = ((10, 20, 10, 4), (20, 40, 20, 10), (40, 64, 32, 10))  # 474, 1870, 5034 params


def make_spec(name: str, sizes: tuple[int, ...], activation: str = "tanh"):
    layers = [{"units": u, "activation": activation} for u in sizes[1:-1]]
    layers.append({"units": sizes[-1], "activation": "softmax"})
    return from_dict({"name": name, "inputs": sizes[0], "loss": "cross_entropy", "layers": layers})


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_generate(spec, repeats: int) -> dict:
    generate(spec)  # warm-up: templates, printers, SymPy caches
    times = []
    source = ""
    for _ in range(repeats):
        start = time.perf_counter()
        source = generate(spec)
        times.append(time.perf_counter() - start)
    return {
        "generate_s_median": statistics.median(times),
        "generate_s_min": min(times),
        "repeats": repeats,
        "source_chars": len(source),
    }


def time_subprocess(spec, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{spec.name}.json"
        path.write_text(json.dumps(to_dict(spec)), encoding="utf-8")
        out = Path(folder) / f"{spec.name}.py"
        command = [sys.executable, "-m", "symbackprop", "codegen", str(path), "-o", str(out)]
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            times.append(time.perf_counter() - start)
            if done.returncode != 0:
                return {"subprocess_s": None, "subprocess_error": done.stderr.strip()[-500:]}
        return {"subprocess_s": statistics.median(times), "subprocess_repeats": repeats}


def time_exact(spec) -> dict:
    """certify() with exact_graph wrapped by a timer (certify looks it up in verify)."""
    spent: list[float] = []
    original = verify.exact_graph

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    verify.exact_graph = timed
    try:
        start = time.perf_counter()
        certificate = verify.certify(spec, use_torch=False)
        total = time.perf_counter() - start
    finally:
        verify.exact_graph = original
    return {
        "exact_graph_s": spent[0] if spent else None,
        "certify_s": total,
        "exact_view": certificate.exact_view,
        "witnesses": list(certificate.witnesses),
        "passed": bool(certificate.passed),
        "max_rel_exact": (
            float(certificate.max_rel("exact")) if "exact" in certificate.witnesses else None
        ),
    }


def fmt(value, spec=".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--json", default=None, help="write all numbers to this JSON file")
    args = parser.parse_args(argv)

    codegen_rows = []
    for width in WIDTHS:
        sizes = (width,) * DEPTH + (10,)
        spec = make_spec(f"codegen_w{width}", sizes)
        row = {
            "width": width,
            "layers": DEPTH,
            "sizes": list(sizes),
            "parameters": spec.parameter_count,
        }
        row.update(time_generate(spec, 3 if args.quick else 10))
        if not args.quick or width == WIDTHS[0]:
            row.update(time_subprocess(spec, 1 if args.quick else 3))
        else:
            row["subprocess_s"] = None
        codegen_rows.append(row)
        print(
            f"# codegen width {width}: {row['generate_s_median'] * 1e3:.1f} ms in-process",
            file=sys.stderr,
        )

    exact_rows = []
    for sizes in EXACT_SIZES[:1] if args.quick else EXACT_SIZES:
        spec = make_spec("exact_" + "_".join(map(str, sizes)), sizes)
        row = {"sizes": list(sizes), "parameters": spec.parameter_count, "batch": 4}
        row.update(time_exact(spec))
        exact_rows.append(row)
        print(
            f"# exact witness {'-'.join(map(str, sizes))}: {fmt(row['exact_graph_s'])} s",
            file=sys.stderr,
        )

    times = [r["generate_s_median"] for r in codegen_rows]
    print("| width | layers | parameters | generate ms (median) | subprocess s |")
    print("|---|---|---|---|---|")
    for r in codegen_rows:
        print(
            f"| {r['width']} | {r['layers']} | {r['parameters']:,} "
            f"| {r['generate_s_median'] * 1e3:.1f} | {fmt(r['subprocess_s'], '.2f')} |"
        )
    print(f"\ngenerate time, widest / narrowest: {max(times) / min(times):.2f}x\n")
    print("| sizes | parameters | exact_graph s | certify s | witnesses | passed |")
    print("|---|---|---|---|---|---|")
    for r in exact_rows:
        print(
            f"| {'-'.join(map(str, r['sizes']))} | {r['parameters']:,} "
            f"| {fmt(r['exact_graph_s'])} | {fmt(r['certify_s'])} "
            f"| {', '.join(r['witnesses'])} | {r['passed']} |"
        )
    all_passed = all(r["passed"] for r in exact_rows) and all(
        r.get("subprocess_error") is None for r in codegen_rows
    )
    report = {
        "benchmark": "codegen_time",
        "quick": args.quick,
        "environment": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "numpy": np.__version__,
            "sympy": __import__("sympy").__version__,
            "symbackprop": symbackprop.__version__,
        },
        "codegen": codegen_rows,
        "width_ratio": max(times) / min(times),
        "exact_witness": exact_rows,
        "all_passed": all_passed,
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
