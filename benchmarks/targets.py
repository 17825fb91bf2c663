#!/usr/bin/env python
"""The speed targets, each as a ratio beside its peer, measured side by side in one run.

Run on demand, never as a timed test:

    python benchmarks/targets.py [--quick] [--json out.json] [--sections cli exact ...]

One table, "target | ours | peer | ratio | goal | met", for five sections:

- ``cli``: CPU time (user + sys of the child, from ``resource.getrusage(RUSAGE_CHILDREN)``)
  of fresh ``python -m symbackprop ...`` processes against ``python -c "import sympy"`` (and
  ``import torch``), in a fresh temporary folder each; the certificate's cost as the
  command with it minus the command without it;
- ``exact``: the certificate's exact witness, ``symbackprop.exact.evaluate``, against the
  previous algorithm ``symbackprop.exact.evaluate_reference`` when the checkout has it, on
  tanh MLPs of about 1k, 5k and 10k parameters (each call cold, in its own process);
- ``step``: the generated ``train_step`` against PyTensor's compiled step (Numba backend,
  ``trust_input``) and PyTorch eager, per-step CPU time;
- ``fit``: the bundled ``digits_mlp`` trained by the generated ``fit`` against a plain
  PyTorch loop and scikit-learn's ``MLPClassifier`` with the same settings;
- ``threads``: the generated step on 784-128-64-10 with one BLAS thread against all.

One thread for every ratio: ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``
and ``NUMBA_NUM_THREADS`` are set to 1 before NumPy loads (child processes inherit them),
threadpoolctl limits the BLAS when it is installed, ``torch.set_num_threads(1)``.
Candidates run in interleaved rounds (A, B, C, then B, C, A, ...), the garbage collector
paused in timed blocks; a value is the median over rounds, a ratio the median of the
per-round ratios.  Every comparison is checked before it is timed (the same step's
parameters agree, the commands succeed); a failed check leaves its rows unmet and the script
exits 1.  PyTorch, PyTensor and scikit-learn are optional: their rows read n/a without them.
See benchmarks/README.md for every row's definition.
"""

from __future__ import annotations

import os
import sys

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
FOUND_THREAD_ENV = {key: os.environ.get(key) for key in THREAD_VARS}
for _key in THREAD_VARS:  # before NumPy (or anything that loads a BLAS) is imported
    os.environ[_key] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from contextlib import contextmanager, nullcontext  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# measure the checkout this script is in, not whichever symbackprop is installed
if (ROOT / "symbackprop" / "__init__.py").exists() and str(ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(HERE))

import numpy as np  # noqa: E402

SECTIONS = ("cli", "exact", "step", "fit", "threads")
LR = 0.01
SEED = 0
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
EXACT_SIZES = ((20, 30, 10, 4), (40, 64, 32, 10), (64, 96, 32, 10))  # 984, 5034, 9674 params
EXACT_SIZES_QUICK = ((6, 8, 4, 3),)  # 107 params
EXACT_SAME_DIGITS = 1e-15  # evaluate against evaluate_reference: the same float64 numbers
EXACT_MODULE_TOLERANCE = 1e-9  # the exact gradient against the module's float64 one
LINEARITY_GOAL = 1.5  # CPU per parameter per sample, largest network / smallest
# (name, layer sizes, batch, goal on generated / PyTensor, or None: report)
STEP_ROWS = (
    ("2-3-3-2 b1", (2, 3, 3, 2), 1, 1.0),
    ("2-3-3-2 b32", (2, 3, 3, 2), 32, 1.5),
    ("64-(64x10)-10 b32", (64,) + (64,) * 10 + (10,), 32, 1.5),
    ("784-128-64-10 b64", (784, 128, 64, 10), 64, None),
    ("784-512-512-10 b256", (784, 512, 512, 10), 256, None),
)
THREADS_ROW = ("784-128-64-10 b64", (784, 128, 64, 10), 64)
CLI_GOALS = {"startup_over_sympy": 0.25, "check_no_torch": 1.0, "train": 3.0}
FIT_GOALS = {"torch": 3.0, "sklearn": 1.8}
FIT_ACCURACY = {"generated": 0.95, "torch": 0.9, "sklearn": 0.9}


# --- small helpers ---------------------------------------------------------------------------


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rotated(names: list, shift: int) -> list:
    shift %= max(1, len(names))
    return names[shift:] + names[:shift]


@contextmanager
def gc_paused():
    """The collector off while timing (as timeit does), after one collection."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def child_env() -> dict:
    """The environment of every child: this checkout first on the path, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    for key in THREAD_VARS:
        env[key] = "1"
    return env


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class Checks:
    """Every correctness check of the run; ``passed`` is False once one fails."""

    def __init__(self):
        self.entries: list[dict] = []

    def add(self, section: str, name: str, passed: bool, **detail) -> bool:
        self.entries.append({"section": section, "name": name, "passed": bool(passed), **detail})
        if not passed:
            log(f"CHECK FAILED: {section}: {name}: {json.dumps(detail, default=str)[:800]}")
        return bool(passed)

    @property
    def passed(self) -> bool:
        return all(entry["passed"] for entry in self.entries)


def make_row(
    section,
    target,
    ours,
    peer,
    *,
    unit="s",
    goal=None,
    ratio=None,
    ratio_of="ours/peer",
    difference=None,
    note=None,
    peer_text=None,
    ours_text=None,
    goal_text=None,
):
    """One line of the table.

    ``goal``: None (reported only), ``("ratio<=", t)``, ``("ratio>=", t)``, ``("ours<=", t)``
    or ``("diff<=", t)`` (ours − peer, median of the per-round differences).  ``ours_text``,
    ``peer_text`` and ``goal_text`` replace the printed value or goal.
    """
    if ratio is None and ours is not None and peer:
        ratio = ours / peer if ratio_of == "ours/peer" else peer / ours
    met = None
    text = "report"
    if goal is not None:
        kind, threshold = goal
        if kind == "ratio<=":
            text = f"{ratio_of} ≤ {threshold:g}"
            met = None if ratio is None else ratio <= threshold
        elif kind == "ratio>=":
            text = f"{ratio_of} ≥ {threshold:g}"
            met = None if ratio is None else ratio >= threshold
        elif kind == "ours<=":
            text = f"ours ≤ {threshold:g} {unit}"
            met = None if ours is None else ours <= threshold
        elif kind == "diff<=":
            text = f"ours − peer ≤ {threshold:g} {unit}"
            met = None if difference is None else difference <= threshold
        else:
            raise ValueError(kind)
    return {
        "section": section,
        "target": target,
        "ours": ours,
        "peer": peer,
        "unit": unit,
        "ratio": ratio,
        "ratio_of": ratio_of,
        "difference": difference,
        "goal": text if goal_text is None else goal_text,
        "goal_kind": None if goal is None else goal[0],
        "goal_threshold": None if goal is None else goal[1],
        "met": met,
        "note": note,
        "peer_text": peer_text,
        "ours_text": ours_text,
    }


def fmt_value(value, unit) -> str:
    if value is None:
        return "n/a"
    if unit == "µs":
        return f"{value * 1e6:,.1f} µs"
    if unit == "ms":
        return f"{value * 1e3:,.3f} ms"
    return f"{value:,.2f} {unit}".rstrip()


def fmt_met(row) -> str:
    if row["goal_kind"] is None:
        return "report"
    if row["met"] is None:
        return "n/a"
    text = "yes" if row["met"] else "no"
    if row["goal_kind"] == "diff<=" and row["difference"] is not None:
        text += f" ({row['difference']:+.2f} {row['unit']})"
    return text


def table(rows) -> str:
    lines = ["| target | ours | peer | ratio | goal | met |", "|---|---|---|---|---|---|"]
    for r in rows:
        peer = fmt_value(r["peer"], r["unit"])
        if r["peer"] is None and r.get("peer_text"):
            peer = r["peer_text"]
        elif r["peer"] is None and r.get("note"):
            peer = f"n/a ({r['note']})"
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}"
        ours = r.get("ours_text") or fmt_value(r["ours"], r["unit"])
        lines.append(f"| {r['target']} | {ours} | {peer} | {ratio} | {r['goal']} | {fmt_met(r)} |")
    return "\n".join(lines)


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


def git_state() -> dict:
    def git(*args):
        try:
            done = subprocess.run(
                ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def version_of(name: str):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - not installed
        return None


def environment(threadpoolctl) -> dict:
    import sympy

    import symbackprop

    return {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "numpy": np.__version__,
        "sympy": sympy.__version__,
        "torch": version_of("torch"),
        "pytensor": version_of("pytensor"),
        "numba": version_of("numba"),
        "scikit-learn": version_of("scikit-learn"),
        "threadpoolctl": version_of("threadpoolctl"),
        "blas": threadpoolctl.threadpool_info() if threadpoolctl else None,
        "thread_env_found": FOUND_THREAD_ENV,
        "thread_env_used": {key: os.environ.get(key) for key in THREAD_VARS},
        "openblas_env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
        "symbackprop": symbackprop.__version__,
        "symbackprop_path": str(Path(symbackprop.__file__).resolve().parent),
        "git": git_state(),
    }


# --- section: CLI ----------------------------------------------------------------------------

MODULE = ["-m", "symbackprop"]


def cli_commands(quick: bool, torch_ok: bool, flags: dict) -> dict:
    """name -> (python arguments, file or folder the command must write, stdout marker)."""
    commands = {
        "import sympy": (["-c", "import sympy"], None, None),
        "codegen": (MODULE + ["codegen", "seed_mlp", "-o", "seed_mlp.py"], "seed_mlp.py", None),
        "chain": (MODULE + ["chain", "sin(exp(x**2))"], None, "="),
        "check --no-torch": (MODULE + ["check", "seed_mlp", "--no-torch"], None, None),
    }
    if quick:
        return commands
    if torch_ok:
        commands["import torch"] = (["-c", "import torch"], None, None)
        commands["check"] = (MODULE + ["check", "seed_mlp"], None, None)
    derive = MODULE + ["derive", "seed_mlp", "-o", "seed_mlp.md"]
    commands["derive"] = (derive, "seed_mlp.md", None)
    if flags.get("derive"):
        commands["derive --no-check"] = (derive + ["--no-check"], "seed_mlp.md", None)
    train = MODULE + ["train", "digits_mlp", "--data", "digits"]
    commands["train"] = (train, None, "final:")
    if flags.get("train"):
        commands["train --no-check"] = (train + ["--no-check"], None, "final:")
    demo = MODULE + ["demo", "--out", "demo"]
    commands["demo"] = (demo, "demo", "final:")
    if flags.get("demo"):
        commands["demo --no-check"] = (demo + ["--no-check"], "demo", "final:")
    return commands


def no_check_flags(commands: tuple[str, ...]) -> dict:
    """Which commands take --no-check, from their --help."""
    found = {}
    for command in commands:
        done = subprocess.run(
            [sys.executable, *MODULE, command, "--help"],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=300,
            check=False,
        )
        found[command] = done.returncode == 0 and "--no-check" in done.stdout
    return found


def run_child(argv: list[str], cwd: str, timeout: float = 900) -> dict:
    """One fresh process: its CPU (user + sys, its own children included) and wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, *argv],
            cwd=cwd,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        return {"ok": False, "note": f"timed out after {err.timeout} s"}
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "ok": done.returncode == 0,
        "returncode": done.returncode,
        "cpu_s": cpu,
        "wall_s": wall,
        "stdout": done.stdout,
        "stderr_tail": done.stderr[-1500:],
    }


# run as `python -c PROBE ARGS...`: the command as `python -m symbackprop ARGS...` would run
# it, then, at exit, which of these modules it had imported
WATCHED_MODULES = ("torch", "numpy", "matplotlib", "jinja2", "sympy.physics.units")
PROBE_MARK = "symbackprop-targets-imported:"
PROBE = f"""
import atexit, runpy, sys
def _imported():
    names = [m for m in {WATCHED_MODULES!r} if m in sys.modules]
    sys.stderr.write("\\n{PROBE_MARK}" + ",".join(names) + "\\n")
atexit.register(_imported)
sys.argv = ["symbackprop", *sys.argv[1:]]
runpy.run_module("symbackprop", run_name="__main__", alter_sys=True)
"""
# the commands that must not import torch (the PyTorch witness is not used in them)
NO_TORCH = ("codegen", "chain", "check --no-torch", "derive --no-check")


def imported_modules(argv: list[str], cwd: str) -> list[str] | None:
    """The watched modules a command imports (None when the probe could not tell)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv[len(MODULE) :]],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    for line in reversed(done.stderr.splitlines()):
        if line.startswith(PROBE_MARK):
            return [name for name in line[len(PROBE_MARK) :].split(",") if name]
    return None


def cli_section(args, checks: Checks, torch_ok: bool) -> tuple[list, dict]:
    flags = {} if args.quick else no_check_flags(("derive", "train", "demo"))
    commands = cli_commands(args.quick, torch_ok, flags)
    rounds = args.rounds or (1 if args.quick else 3)
    names = list(commands)
    samples: dict[str, list[dict]] = {name: [] for name in names}
    failed: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="symbackprop-targets-") as scratch:
        # untimed: the checkout's bytecode written, the files in the page cache
        run_child(MODULE + ["--version"], scratch)
        run_child(["-c", "import sympy, symbackprop.cli"], scratch)
        for r in range(rounds):
            for name in rotated(names, r):
                argv, output, marker = commands[name]
                folder = tempfile.mkdtemp(dir=scratch)
                result = run_child(argv, folder)
                ok = result["ok"]
                if ok and output is not None:
                    path = Path(folder) / output
                    ok = path.exists() and (path.is_dir() or path.stat().st_size > 0)
                    if not ok:
                        result["note"] = f"{output} was not written"
                if ok and marker is not None:
                    ok = marker in result.get("stdout", "")
                    if not ok:
                        result["note"] = f"no {marker!r} in its output"
                result["ok"] = ok
                shutil.rmtree(folder, ignore_errors=True)
                result.pop("stdout", None)
                samples[name].append(result)
                if not ok:
                    failed.add(name)
                log(
                    f"cli round {r + 1}/{rounds} {name}: "
                    + (f"{result['cpu_s']:.2f} s CPU" if "cpu_s" in result else result["note"])
                )
        # untimed: which modules the commands that need no torch import
        probed = [
            n for n in NO_TORCH if n in commands and (not args.quick or n.startswith("check"))
        ]
        imports = {}
        for name in probed:
            imports[name] = imported_modules(commands[name][0], tempfile.mkdtemp(dir=scratch))
    for name in names:
        bad = [s for s in samples[name] if not s["ok"]]
        checks.add(
            "cli",
            f"{name} runs (exit 0, its output written)",
            not bad,
            failures=[{k: s.get(k) for k in ("returncode", "note", "stderr_tail")} for s in bad],
        )

    def cpu(name):
        if name not in samples or name in failed:
            return None
        return median(s["cpu_s"] for s in samples[name])

    def per_round(a, b, how):
        if any(n not in samples or n in failed for n in (a, b)):
            return None
        pairs = zip(samples[a], samples[b], strict=True)
        return median(how(x["cpu_s"], y["cpu_s"]) for x, y in pairs)

    def diff(a, b):
        return per_round(a, b, lambda x, y: x - y)

    def ratio(a, b):
        return per_round(a, b, lambda x, y: x / y)

    rows = []
    limit = CLI_GOALS["startup_over_sympy"]
    for name, label in (("codegen", "codegen seed_mlp"), ("chain", 'chain "sin(exp(x**2))"')):
        rows.append(
            make_row(
                "cli",
                f"CLI: {label} vs import sympy (CPU)",
                cpu(name),
                cpu("import sympy"),
                goal=("diff<=", limit),
                ratio=ratio(name, "import sympy"),
                difference=diff(name, "import sympy"),
            )
        )
    rows.append(
        make_row(
            "cli",
            "CLI: check seed_mlp --no-torch (CPU) vs import sympy",
            cpu("check --no-torch"),
            cpu("import sympy"),
            goal=("ours<=", CLI_GOALS["check_no_torch"]),
            ratio=ratio("check --no-torch", "import sympy"),
        )
    )
    unknown = [name for name, found in imports.items() if found is None]
    checks.add("cli", "the import probe ran every command", not unknown, commands=unknown)
    importing = [name for name, found in imports.items() if found and "torch" in found]
    rows.append(
        make_row(
            "cli",
            "CLI: commands that import torch without using it (of: " + ", ".join(probed) + ")",
            None if unknown else len(importing),
            None,
            unit="",
            goal=None if unknown else ("ours<=", 0),
            ours_text="none" if not importing and not unknown else ", ".join(importing) or None,
            peer_text="—",
            goal_text="none",
        )
    )
    skipped = "not run with --quick" if args.quick else None
    no_torch = skipped or (None if torch_ok else "torch not importable")
    rows.append(
        make_row(
            "cli",
            "CLI: PyTorch witness (check − check --no-torch) vs import torch",
            diff("check", "check --no-torch"),
            cpu("import torch"),
            note=no_torch,
        )
    )

    def certificate_row(command, label):
        with_it, without = command, f"{command} --no-check"
        note = skipped or (None if without in commands else f"{command} has no --no-check")
        return make_row(
            "cli",
            f"CLI: {label}: certificate ({command} − --no-check) vs own work (--no-check)",
            diff(with_it, without),
            cpu(without),
            goal=("ratio<=", 1.0),
            ratio=per_round(with_it, without, lambda x, y: (x - y) / y),
            note=note,
        )

    rows.append(certificate_row("derive", "derive seed_mlp -o F.md"))
    rows.append(
        make_row(
            "cli",
            "CLI: train digits_mlp --data digits, total (CPU)",
            cpu("train"),
            None,
            goal=("ours<=", CLI_GOALS["train"]),
            note=skipped,
            peer_text="—",
        )
    )
    rows.append(certificate_row("train", "train digits_mlp --data digits"))
    rows.append(
        make_row(
            "cli",
            "CLI: demo --out DIR, total (CPU)",
            cpu("demo"),
            None,
            note=skipped,
            peer_text="—",
        )
    )
    rows.append(certificate_row("demo", "demo --out DIR"))
    detail = {
        "rounds": rounds,
        "no_check_flags": flags,
        "imported_modules": imports,
        "watched_modules": list(WATCHED_MODULES),
        "commands": {name: " ".join(commands[name][0]) for name in names},
        "median_cpu_s": {name: cpu(name) for name in names},
        "median_wall_s": {
            name: median(s.get("wall_s") for s in samples[name] if s["ok"]) for name in names
        },
        "samples": samples,
    }
    return rows, detail


# --- section: exact witness ------------------------------------------------------------------


def tanh_spec(name: str, sizes: tuple[int, ...]):
    from symbackprop.spec import from_dict

    layers = [{"units": u, "activation": "tanh"} for u in sizes[1:-1]]
    layers.append({"units": sizes[-1], "activation": "softmax"})
    return from_dict({"name": name, "inputs": sizes[0], "loss": "cross_entropy", "layers": layers})


def exact_child(request: dict) -> dict:
    """In a fresh process: one cold call of one exact evaluator, and its checks."""
    from symbackprop import exact, verify
    from symbackprop.checkpoint import load_module, point
    from symbackprop.codegen import generate
    from symbackprop.derive import derive

    sizes = tuple(request["sizes"])
    spec = tanh_spec("exact_" + "_".join(map(str, sizes)), sizes)
    net = derive(spec).network
    try:  # the certificate's own sample count at this size
        batch = max(1, min(4, verify.EXACT_BUDGET // verify.exact_cost(net)))
    except AttributeError:
        batch = 4
    params, X, Y = point(net, 4, SEED)
    X, Y = X[:batch], Y[:batch]
    evaluator = getattr(exact, request["evaluator"], None)
    if evaluator is None:
        return {"available": False}
    with gc_paused():
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = evaluator(net, params, X, Y)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    module = load_module(generate(spec), spec.name)
    loss, grads = module.gradients(params, X, Y)
    errors = [rel_error(result.gradients[k], grads[k]) for k in grads]
    errors.append(rel_error(result.loss, loss))
    np.savez(request["out"], loss=np.float64(result.loss), **result.gradients)
    return {
        "available": True,
        "parameters": net.parameter_count,
        "batch": batch,
        "cpu_s": cpu,
        "wall_s": wall,
        "module_max_rel_error": max(errors),
    }


def rel_error(value, reference) -> float:
    """max |value − reference| / max |reference|: a norm-wise relative error."""
    value = np.asarray(value, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    scale = max(float(np.max(np.abs(reference))), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(value - reference)) / scale)


def exact_section(args, checks: Checks) -> tuple[list, dict]:
    from symbackprop import exact

    evaluators = ["evaluate"]
    if hasattr(exact, "evaluate_reference"):
        evaluators.append("evaluate_reference")
    sizes_list = EXACT_SIZES_QUICK if args.quick else EXACT_SIZES
    rounds = 1 if args.quick else (args.rounds or 3)
    measured: dict = {}
    with tempfile.TemporaryDirectory(prefix="symbackprop-exact-") as scratch:
        for sizes in sizes_list:
            key = "-".join(map(str, sizes))
            runs = {name: [] for name in evaluators}
            for r in range(rounds):
                for name in rotated(evaluators, r):
                    out = str(Path(scratch) / f"{key}_{name}_{r}.npz")
                    request = json.dumps({"sizes": list(sizes), "evaluator": name, "out": out})
                    done = subprocess.run(
                        [sys.executable, str(Path(__file__).resolve()), "--exact-child", request],
                        capture_output=True,
                        text=True,
                        env=child_env(),
                        timeout=1800,
                        check=False,
                    )
                    try:
                        result = json.loads(done.stdout.strip().splitlines()[-1])
                    except (IndexError, json.JSONDecodeError):
                        result = {"available": True, "error": done.stderr[-1500:]}
                    if result.get("available") and "error" not in result:
                        with np.load(out) as saved:
                            result["numbers"] = {k: saved[k] for k in saved.files}
                    runs[name].append(result)
                    log(
                        f"exact {key} round {r + 1}/{rounds} {name}: "
                        + (f"{result['cpu_s']:.2f} s CPU" if "cpu_s" in result else "failed")
                    )
            measured[key] = runs
            for name, results in runs.items():
                errors = [res.get("error") for res in results if "error" in res]
                checks.add("exact", f"{key}: {name} runs", not errors, errors=errors)
                worst = max((res.get("module_max_rel_error", 0.0) for res in results), default=0)
                checks.add(
                    "exact",
                    f"{key}: {name} agrees with the module's float64 gradients",
                    not errors and worst <= EXACT_MODULE_TOLERANCE,
                    max_rel_error=worst,
                    tolerance=EXACT_MODULE_TOLERANCE,
                )
            if "evaluate_reference" in runs:
                ours = runs["evaluate"][0].get("numbers")
                theirs = runs["evaluate_reference"][0].get("numbers")
                if ours is not None and theirs is not None:
                    worst = max(rel_error(ours[k], theirs[k]) for k in theirs)
                    identical = all(np.array_equal(ours[k], theirs[k]) for k in theirs)
                else:
                    worst, identical = float("inf"), False
                checks.add(
                    "exact",
                    f"{key}: evaluate gives evaluate_reference's numbers",
                    worst <= EXACT_SAME_DIGITS,
                    max_rel_error=worst,
                    bitwise_identical=identical,
                    tolerance=EXACT_SAME_DIGITS,
                )

    rows, detail_rows = [], []
    per_unit = {}
    for sizes in sizes_list:
        key = "-".join(map(str, sizes))
        runs = measured[key]
        ok = {name: [res for res in results if "cpu_s" in res] for name, results in runs.items()}
        first = (ok["evaluate"] or [{}])[0]
        params, batch = first.get("parameters"), first.get("batch")
        ours = median(res["cpu_s"] for res in ok["evaluate"])
        reference = None
        ratio = None
        note = None
        if "evaluate_reference" in ok:
            reference = median(res["cpu_s"] for res in ok["evaluate_reference"])
            pairs = zip(ok["evaluate"], ok["evaluate_reference"], strict=False)
            ratio = median(b["cpu_s"] / a["cpu_s"] for a, b in pairs)
        else:
            note = "no exact.evaluate_reference in this checkout"
        if ours is not None and params:
            per_unit[key] = ours / (params * batch)
        label = f"{params:,} params" if params else key
        rows.append(
            make_row(
                "exact",
                f"exact witness {key} ({label}, batch {batch}): evaluate vs reference (CPU)",
                ours,
                reference,
                goal=("ratio>=", 3.0),
                ratio=ratio,
                ratio_of="peer/ours",
                note=note,
            )
        )
        detail_rows.append(
            {
                "sizes": list(sizes),
                "parameters": params,
                "batch": batch,
                "evaluate_cpu_s": ours,
                "evaluate_reference_cpu_s": reference,
                "speedup": ratio,
                "evaluate_ms_per_parameter": None if ours is None else 1e3 * ours / params,
                "evaluate_ms_per_parameter_sample": (
                    None if ours is None else 1e3 * ours / (params * batch)
                ),
                "reference_ms_per_parameter": (
                    None if reference is None else 1e3 * reference / params
                ),
                "runs": {
                    name: [{k: v for k, v in res.items() if k != "numbers"} for res in results]
                    for name, results in runs.items()
                },
            }
        )
    if len(per_unit) > 1:
        keys = list(per_unit)
        rows.append(
            make_row(
                "exact",
                f"exact witness linearity: CPU per parameter·sample, {keys[-1]} vs {keys[0]}",
                per_unit[keys[-1]],
                per_unit[keys[0]],
                unit="ms",
                goal=("ratio<=", LINEARITY_GOAL),
            )
        )
    return rows, {"rounds": rounds, "evaluators": evaluators, "rows": detail_rows}


# --- timing of steps -------------------------------------------------------------------------


def time_blocks(candidates: dict, budget_s: float, min_rounds: int, contexts=None) -> dict:
    """Per candidate, per-round (CPU, wall) seconds per call, from blocks in rotating order.

    ``contexts``: name -> a context manager factory entered around each block (outside the
    timing), e.g. a thread limit.
    """
    names = list(candidates)
    contexts = contexts or {}
    estimate = {}
    for name in names:
        fn = candidates[name]
        with contexts.get(name, nullcontext)():
            fn()  # first call: workspaces, lazy initialisation
            count, start = 0, time.perf_counter()
            while count < 3 or (time.perf_counter() - start < 0.05 * budget_s and count < 2000):
                fn()
                count += 1
        estimate[name] = max((time.perf_counter() - start) / count, 1e-7)
    target = min(0.02, budget_s / (max(min_rounds, 10) * len(names)))
    block = {n: max(1, int(target / estimate[n])) for n in names}
    per_round = sum(block[n] * estimate[n] for n in names)
    rounds = max(min_rounds, int(budget_s / per_round))
    cpu = {n: [] for n in names}
    wall = {n: [] for n in names}
    with gc_paused():  # one collection before the rounds: this heap's takes ~0.1 s
        for r in range(rounds):
            for name in rotated(names, r):
                fn, n = candidates[name], block[name]
                with contexts.get(name, nullcontext)():
                    c0, w0 = time.process_time(), time.perf_counter()
                    for _ in range(n):
                        fn()
                    c1, w1 = time.process_time(), time.perf_counter()
                cpu[name].append((c1 - c0) / n)
                wall[name].append((w1 - w0) / n)
    return {"rounds": rounds, "block": block, "cpu": cpu, "wall": wall}


def summarize(timing: dict, ours: str, peer: str) -> dict:
    """Medians of ours and peer and of the per-round ratios ours/peer, by both clocks."""
    out = {}
    for clock in ("cpu", "wall"):
        a, b = timing[clock][ours], timing[clock][peer]
        out[f"{clock}_ours_s"] = median(a)
        out[f"{clock}_peer_s"] = median(b)
        out[f"{clock}_ratio"] = median(x / y for x, y in zip(a, b, strict=True))
    return out


# --- section: smallest networks (train_step) -------------------------------------------------


def step_section(args, checks: Checks, torch, pytensor) -> tuple[list, dict]:
    import train_step as ts

    from symbackprop.checkpoint import load_module
    from symbackprop.codegen import generate

    dtype = args.dtype
    tolerance = TOLERANCE[dtype]
    budget = args.budget if args.budget is not None else (0.3 if args.quick else 3.0)
    min_rounds = 3 if args.quick else 7
    configs = STEP_ROWS[:2] if args.quick else STEP_ROWS
    rows, details = [], []
    for label, sizes, batch, goal in configs:
        name = "targets_" + "_".join(map(str, sizes[:3])) + f"_{len(sizes)}_b{batch}"
        module = load_module(generate(ts.make_spec(name, sizes, "relu")), name)
        params, X, Y, labels = ts.make_problem(module, sizes, batch, dtype)
        stepped = ts.copy_params(params)
        step_loss = module.train_step(stepped, X, Y, LR)
        base = ts.run_checks(module, params, X, Y, labels, "relu", dtype, torch, None)
        ok = checks.add(
            "step",
            f"{label}: generated gradients and step against plain NumPy"
            + (" and PyTorch autograd" if torch is not None else ""),
            base["passed"],
            reference=base["reference"]["max_rel_error"],
            torch=None if base["torch"] is None else base["torch"]["max_rel_error"],
        )
        detail = {"network": label, "sizes": list(sizes), "batch": batch, "dtype": dtype}
        own = ts.copy_params(params)
        candidates = {"generated": lambda m=module, p=own, X=X, Y=Y: m.train_step(p, X, Y, LR)}
        if torch is not None and ok:
            candidates["torch"] = ts.TorchStep(torch, params, X, labels, "relu", LR).step
        pt_note = None if pytensor is not None else args.pytensor_note
        if pytensor is not None and ok:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    c0, w0 = time.process_time(), time.perf_counter()
                    compiled = ts.PyTensorStep(pytensor, params, "relu", dtype, LR)
                    trusted = compiled.trusted()
                    trusted(X, Y)  # the first call compiles the Numba code
                    detail["pytensor_compile_cpu_s"] = time.process_time() - c0
                    detail["pytensor_compile_wall_s"] = time.perf_counter() - w0
                    compiled.reset(params)
                    p_loss = float(trusted(X, Y))
                check = ts.compare(
                    "pytensor trust_input",
                    tolerance,
                    loss_pair=(step_loss, p_loss),
                    params_pair=(stepped, compiled.state()),
                )
                if checks.add(
                    "step",
                    f"{label}: PyTensor trust_input step agrees with the generated step",
                    check["passed"],
                    max_rel_error=check["max_rel_error"],
                ):
                    compiled.reset(params)
                    candidates["pytensor"] = lambda f=trusted, X=X, Y=Y: float(f(X, Y))
                else:
                    pt_note = "check failed"
            except Exception as err:  # noqa: BLE001 - a broken optional peer: n/a
                pt_note = f"compile failed: {type(err).__name__}"
                detail["pytensor_error"] = f"{type(err).__name__}: {err}"
                log(f"step {label}: PyTensor {detail['pytensor_error']}")
        if not ok:
            details.append(detail)
            continue
        log(f"step {label}: timing {', '.join(candidates)}")
        timing = time_blocks(candidates, budget, min_rounds)
        detail["rounds"], detail["block"] = timing["rounds"], timing["block"]
        detail["median_cpu_s"] = {n: median(v) for n, v in timing["cpu"].items()}
        detail["median_wall_s"] = {n: median(v) for n, v in timing["wall"].items()}
        for peer, peer_label, peer_goal in (
            ("pytensor", "PyTensor trust_input (Numba)", goal),
            ("torch", "PyTorch eager", None),
        ):
            if peer in candidates:
                summary = summarize(timing, "generated", peer)
                detail[f"vs_{peer}"] = summary
                ours, theirs, ratio = (
                    summary["cpu_ours_s"],
                    summary["cpu_peer_s"],
                    summary["cpu_ratio"],
                )
                note = None
            else:
                ours, theirs, ratio = median(timing["cpu"]["generated"]), None, None
                note = pt_note if peer == "pytensor" else "torch not importable"
            rows.append(
                make_row(
                    "step",
                    f"train_step {label} vs {peer_label} (CPU/step)",
                    ours,
                    theirs,
                    unit="µs",
                    goal=None if peer_goal is None else ("ratio<=", peer_goal),
                    ratio=ratio,
                    note=note,
                )
            )
        details.append(detail)
    return rows, {"dtype": dtype, "activation": "relu", "budget_s": budget, "rows": details}


# --- section: threads ------------------------------------------------------------------------


def threads_section(args, checks: Checks, threadpoolctl) -> tuple[list, dict]:
    import train_step as ts

    from symbackprop.checkpoint import load_module
    from symbackprop.codegen import generate

    label, sizes, batch = THREADS_ROW
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    target = f"threads: train_step {label}, {usable} BLAS threads vs 1 (wall/step)"
    if threadpoolctl is None or not usable or usable < 2:
        note = "threadpoolctl not installed" if threadpoolctl is None else "one usable CPU"
        row = make_row("threads", target, None, None, unit="µs", note=note)
        return [row], {"note": note}
    module = load_module(generate(ts.make_spec("targets_threads", sizes, "relu")), "threads")
    params, X, Y, _ = ts.make_problem(module, sizes, batch, "float64")
    stepped = ts.copy_params(params)
    module.train_step(stepped, X, Y, LR)
    info = {}
    with threadpoolctl.threadpool_limits(limits=usable):
        info["all"] = [lib.get("num_threads") for lib in threadpoolctl.threadpool_info()]
        again = ts.copy_params(params)
        module.train_step(again, X, Y, LR)
    error = max(rel_error(again[k], stepped[k]) for k in stepped)
    checks.add(
        "threads",
        f"{label}: the step with {usable} threads agrees with the step with 1",
        error <= TOLERANCE["float64"],
        max_rel_error=error,
    )
    budget = args.budget if args.budget is not None else (0.3 if args.quick else 3.0)
    p1, pn = ts.copy_params(params), ts.copy_params(params)
    candidates = {
        "1 thread": lambda: module.train_step(p1, X, Y, LR),
        f"{usable} threads": lambda: module.train_step(pn, X, Y, LR),
    }
    contexts = {
        "1 thread": lambda: threadpoolctl.threadpool_limits(limits=1),
        f"{usable} threads": lambda: threadpoolctl.threadpool_limits(limits=usable),
    }
    timing = time_blocks(candidates, budget, 3 if args.quick else 7, contexts)
    summary = summarize(timing, f"{usable} threads", "1 thread")
    rows = [
        make_row(
            "threads",
            target,
            summary["wall_ours_s"],
            summary["wall_peer_s"],
            unit="µs",
            ratio=summary["wall_ratio"],
        ),
        make_row(
            "threads",
            f"threads: train_step {label}, {usable} BLAS threads vs 1 (CPU/step, all threads)",
            summary["cpu_ours_s"],
            summary["cpu_peer_s"],
            unit="µs",
            ratio=summary["cpu_ratio"],
        ),
    ]
    detail = {
        "network": label,
        "usable_cpus": usable,
        "num_threads_under_limit": info,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "rounds": timing["rounds"],
        "block": timing["block"],
        **summary,
    }
    return rows, detail


# --- section: fit ----------------------------------------------------------------------------


def fit_section(args, checks: Checks, torch, sklearn_ok: bool) -> tuple[list, dict]:
    import digits_reference as dr

    from symbackprop.checkpoint import load_module
    from symbackprop.codegen import generate
    from symbackprop.data import load_dataset
    from symbackprop.spec import load_spec

    spec = load_spec(dr.SPEC_NAME)
    train = spec.train
    data = load_dataset(
        "digits",
        outputs=spec.layers[-1].units,
        classification=True,
        test_fraction=dr.TEST_FRACTION,
        seed=dr.SPLIT_SEED,
    )
    module = load_module(generate(spec), f"{spec.name}_targets")
    runners = {"generated": lambda: dr.run_generated(module, spec, data, SEED)}
    # check: two full-batch Adam steps of fit and of the torch loop, from the same weights
    if torch is not None:
        init = module.init_params(seed=SEED)
        ours = {k: v.copy() for k, v in init.items()}
        X, y = np.asarray(data.X_train), np.asarray(data.y_train)
        module.fit(ours, X, y, epochs=2, batch_size=len(X), lr=train.lr, optimizer=train.optimizer)
        layers, logits, optimizer, _ = dr.torch_model(spec, SEED, init=init)
        whole = torch.arange(len(X))
        Xt = torch.tensor(X, dtype=torch.float64)
        yt = torch.tensor(y, dtype=torch.int64)
        dr.torch_steps(logits, optimizer, Xt, yt, [whole, whole])
        theirs = {}
        for index, layer in enumerate(layers, start=1):
            theirs[f"W{index}"] = layer.weight.detach().numpy()
            theirs[f"b{index}"] = layer.bias.detach().numpy()
        error = max(rel_error(ours[k], theirs[k]) for k in ours)
        if checks.add(
            "fit",
            "digits: fit and the PyTorch loop agree after two full-batch Adam steps",
            error <= TOLERANCE["float64"],
            max_rel_error=error,
        ):
            runners["torch"] = lambda: dr.run_torch(spec, data, SEED)
    if sklearn_ok:
        runners["sklearn"] = lambda: dr.run_sklearn(spec, data, SEED)
    rounds = 1 if args.quick else (args.rounds or 5)
    names = list(runners)
    results = {n: [] for n in names}
    warm = 0 if args.quick else 1
    for r in range(-warm, rounds):
        for name in rotated(names, r):
            with gc_paused():
                acc, wall, cpu = runners[name]()
            if r >= 0:
                results[name].append({"accuracy": acc, "wall_s": wall, "cpu_s": cpu})
                log(f"fit round {r + 1}/{rounds} {name}: {cpu:.2f} s CPU, accuracy {acc:.4f}")
    for name in names:
        worst = min(res["accuracy"] for res in results[name])
        checks.add(
            "fit",
            f"digits: {name} reaches test accuracy ≥ {FIT_ACCURACY[name]}",
            worst >= FIT_ACCURACY[name],
            accuracy=worst,
        )
    ours = median(res["cpu_s"] for res in results["generated"])
    rows = []
    for peer, label in (("torch", "PyTorch loop"), ("sklearn", "scikit-learn MLPClassifier")):
        if peer in results:
            theirs = median(res["cpu_s"] for res in results[peer])
            ratio = median(
                b["cpu_s"] / a["cpu_s"]
                for a, b in zip(results["generated"], results[peer], strict=True)
            )
            note = None
        else:
            theirs = ratio = None
            note = (
                "torch not importable"
                if peer == "torch" and torch is None
                else "check failed"
                if peer == "torch"
                else "scikit-learn not installed"
            )
        rows.append(
            make_row(
                "fit",
                f"fit digits_mlp (64-64-64-10, Adam, batch 64, 30 epochs) vs {label} (CPU)",
                ours,
                theirs,
                goal=("ratio>=", FIT_GOALS[peer]),
                ratio=ratio,
                ratio_of="peer/ours",
                note=note,
            )
        )
    detail = {
        "rounds": rounds,
        "epochs": train.epochs,
        "batch_size": train.batch_size,
        "optimizer": train.optimizer,
        "n_train": int(len(data.y_train)),
        "median_cpu_s": {n: median(res["cpu_s"] for res in results[n]) for n in names},
        "median_wall_s": {n: median(res["wall_s"] for res in results[n]) for n in names},
        "runs": results,
    }
    return rows, detail


# --- the run ---------------------------------------------------------------------------------


def optional_imports(args, sections):
    torch = pytensor = threadpoolctl = None
    notes = {}
    try:
        import threadpoolctl
    except Exception:  # noqa: BLE001
        threadpoolctl = None
    if threadpoolctl is not None:
        threadpoolctl.threadpool_limits(limits=1)  # for the whole run; threads raises it
    if not args.no_torch and {"step", "fit"} & set(sections):
        try:
            import torch

            torch.set_num_threads(1)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:
                pass
        except Exception as err:  # noqa: BLE001
            torch, notes["torch"] = None, f"not importable: {type(err).__name__}"
    if not args.no_pytensor and "step" in sections:
        import train_step as ts

        pytensor, note = ts._import_pytensor(False)
        notes["pytensor"] = note and "not installed"
    elif args.no_pytensor:
        notes["pytensor"] = "--no-pytensor"
    return torch, pytensor, threadpoolctl, notes


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (well under 60 s)")
    parser.add_argument("--json", default=None, help="write every number to this JSON file")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds of the cli, exact and fit sections"
    )
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds of timed steps per step row"
    )
    parser.add_argument("--dtype", choices=sorted(TOLERANCE), default="float64")
    parser.add_argument("--no-torch", action="store_true", help="run as if torch were absent")
    parser.add_argument("--no-pytensor", action="store_true", help="skip PyTensor")
    parser.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn")
    parser.add_argument("--exact-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds: expected a positive integer")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.exact_child is not None:
        print(json.dumps(exact_child(json.loads(args.exact_child))))
        return 0
    warnings.filterwarnings("ignore", module=r"(pytensor|numba)(\.|$)")
    warnings.filterwarnings("ignore", message=".*could not link to a BLAS.*")
    started = time.perf_counter()
    sections = [s for s in SECTIONS if s in args.sections]
    torch, pytensor, threadpoolctl, notes = optional_imports(args, sections)
    args.pytensor_note = notes.get("pytensor")
    torch_ok = not args.no_torch and has_module("torch")
    sklearn_ok = not args.no_sklearn and has_module("sklearn")
    env = environment(threadpoolctl)
    env["optional_notes"] = notes
    load = env.get("load_average_start")
    log(f"targets: {env['cpu_model']}, {env['usable_cpus']} usable CPUs, load average {load}")
    checks = Checks()
    rows: list[dict] = []
    details: dict = {}

    def report() -> dict:
        return {
            "benchmark": "targets",
            "argv": sys.argv[1:] if argv is None else list(argv),
            "quick": args.quick,
            "sections": sections,
            "environment": env,
            "checks_passed": checks.passed,
            "checks": checks.entries,
            "rows": rows,
            "details": details,
            "elapsed_s": time.perf_counter() - started,
        }

    def write():
        if args.json:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump(report(), handle, indent=1, default=str)

    for section in sections:
        log(f"section {section}")
        section_start = time.perf_counter()
        if section == "cli":
            new_rows, detail = cli_section(args, checks, torch_ok)
        elif section == "exact":
            new_rows, detail = exact_section(args, checks)
        elif section == "step":
            new_rows, detail = step_section(args, checks, torch, pytensor)
        elif section == "fit":
            new_rows, detail = fit_section(args, checks, torch, sklearn_ok)
        else:
            new_rows, detail = threads_section(args, checks, threadpoolctl)
        rows.extend(new_rows)
        detail["elapsed_s"] = time.perf_counter() - section_start
        details[section] = detail
        write()
    env["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print(table(rows))
    print()
    print(
        "ours: this checkout; CPU time (children: user + sys; in process: process_time, one "
        "thread); values are medians over interleaved rounds, ratios the median of per-round "
        "ratios, as the goal names them (ours/peer unless it says peer/ours)."
    )
    print(details_text(details))
    print(f"correctness checks: {'all passed' if checks.passed else 'SOME FAILED'}")
    write()
    if args.json:
        log(f"wrote {args.json}")
    return 0 if checks.passed else 1


def details_text(details: dict) -> str:
    out = []
    cli = details.get("cli")
    if cli:
        out += [
            "",
            f"CLI commands ({cli['rounds']} rounds; imports: which of "
            f"{', '.join(cli['watched_modules'])} the command imported):",
            "",
            "| command | CPU s | wall s | imports |",
            "|---|---|---|---|",
        ]
        for name, cpu in cli["median_cpu_s"].items():
            wall = cli["median_wall_s"].get(name)
            command = cli["commands"][name]
            found = cli["imported_modules"].get(name, "—")  # —: not probed
            if isinstance(found, list):
                found = ", ".join(found) or "none"
            elif found is None:
                found = "n/a"
            out.append(f"| {command} | {fmt_value(cpu, '')} | {fmt_value(wall, '')} | {found} |")
    exact = details.get("exact")
    if exact:
        out += [
            "",
            f"Exact witness, one cold call per process ({exact['rounds']} rounds):",
            "",
            "| sizes | parameters | batch | evaluate s | reference s | ms/param "
            "| ms/(param·sample) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in exact["rows"]:
            out.append(
                f"| {'-'.join(map(str, r['sizes']))} | {r['parameters']} | {r['batch']} "
                f"| {fmt_value(r['evaluate_cpu_s'], '')} "
                f"| {fmt_value(r['evaluate_reference_cpu_s'], '')} "
                f"| {fmt_value(r['evaluate_ms_per_parameter'], '')} "
                f"| {fmt_value(r['evaluate_ms_per_parameter_sample'], '')} |"
            )
    step = details.get("step")
    if step:
        out += [
            "",
            f"train_step, {step['activation']}, {step['dtype']}, CPU µs per step (wall):",
            "",
            "| network | generated | PyTensor trust_input | PyTorch eager | PyTensor compile s |",
            "|---|---|---|---|---|",
        ]
        for r in step["rows"]:
            cpu, wall = r.get("median_cpu_s", {}), r.get("median_wall_s", {})

            def cell(name, cpu=cpu, wall=wall):
                if name not in cpu:
                    return "n/a"
                return f"{cpu[name] * 1e6:,.1f} ({wall[name] * 1e6:,.1f})"

            compile_s = r.get("pytensor_compile_wall_s")
            out.append(
                f"| {r['network']} | {cell('generated')} | {cell('pytensor')} | {cell('torch')} "
                f"| {'n/a' if compile_s is None else f'{compile_s:.1f}'} |"
            )
    fit = details.get("fit")
    if fit:
        out += ["", f"fit on digits ({fit['rounds']} rounds):", "", "| trainer | CPU s | wall s |"]
        out.append("|---|---|---|")
        for name, cpu in fit["median_cpu_s"].items():
            out.append(
                f"| {name} | {fmt_value(cpu, '')} | {fmt_value(fit['median_wall_s'][name], '')} |"
            )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
