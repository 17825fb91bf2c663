"""Smoke runs of the benchmark scripts: they run, write their JSON and pass their checks.

No timing is asserted: the scripts are run on demand for numbers (benchmarks/README.md); here
they only have to work, with or without the optional torch, threadpoolctl and pytensor.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
HAS_TORCH = importlib.util.find_spec("torch") is not None


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def train_step(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "train_step.json"
    args = ("--quick", "--configs", "tiny", "--threads", "1", "--no-pytensor", "--json", str(out))
    result = run("train_step.py", *args, *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(out.read_text(encoding="utf-8"))


def test_train_step_quick(tmp_path: Path) -> None:
    result, report = train_step(tmp_path)
    assert report.keys() >= {
        "environment",
        "settings",
        "gemm",
        "checks",
        "checks_passed",
        "results",
    }
    assert report["checks_passed"] is True
    env = report["environment"]
    for key in ("numpy", "torch", "blas", "cpu_model", "openblas_env", "unset_openblas_env"):
        assert key in env
    # tiny has two batches (1 and 32), two activations and two dtypes, one thread count
    assert len(report["checks"]) == 8
    assert len(report["results"]) == 8
    for check in report["checks"]:
        assert check["passed"] is True
        assert check["reference"]["passed"] is True
        if HAS_TORCH:
            assert check["torch"]["passed"] is True
    for row in report["results"]:
        assert row["numpy_s"] > 0
        assert row["threads"] == 1
        assert row["fraction_blas_peak"] > 0
        assert row["pytensor_s"] is None and row["pytensor_trust_s"] is None
        assert row["numpy_cpu_s"] > 0
        assert (row["ratio_cpu"] is not None) == HAS_TORCH
        assert (row["torch_s"] is not None) == HAS_TORCH
        assert (row["ratio"] is not None) == HAS_TORCH
    assert "| config |" in result.stdout
    assert "numpy/torch" in result.stdout


def test_train_step_without_torch(tmp_path: Path) -> None:
    result, report = train_step(tmp_path, "--no-torch", "--activations", "relu")
    assert report["checks_passed"] is True
    assert report["environment"]["torch"] is None
    for check in report["checks"]:
        assert check["torch"] is None
        assert check["reference"]["passed"] is True
    for row in report["results"]:
        assert row["torch_s"] is None and row["ratio"] is None
        assert row["numpy_s"] > 0
    assert "n/a" in result.stdout


def test_codegen_time_quick(tmp_path: Path) -> None:
    out = tmp_path / "codegen.json"
    result = run("codegen_time.py", "--quick", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report.keys() >= {"environment", "codegen", "width_ratio", "exact_witness", "all_passed"}
    assert report["all_passed"] is True
    assert [row["width"] for row in report["codegen"]] == [16, 512, 4096]
    for row in report["codegen"]:
        assert row["generate_s_median"] > 0 and row["source_chars"] > 0
    assert report["codegen"][0]["subprocess_s"] > 0
    (exact,) = report["exact_witness"]
    assert exact["passed"] is True
    assert "exact" in exact["witnesses"]
    assert exact["exact_graph_s"] > 0


def test_profile_step_runs(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    args = ("--configs", "tiny", "--activations", "relu", "--dtypes", "float64", "--steps", "30")
    result = run("profile_step.py", *args, "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train_step" in result.stdout and out.exists()


def kinds_step(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "kinds_step.json"
    result = run("kinds_step.py", "--quick", "--json", str(out), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(out.read_text(encoding="utf-8"))


def test_kinds_step_quick(tmp_path: Path) -> None:
    result, report = kinds_step(tmp_path)
    assert report["checks_passed"] is True
    assert report["settings"]["threads"] == 1
    assert report["environment"]["thread_env"]["OPENBLAS_NUM_THREADS"] == "1"
    configs = ["residual_ln", "batchnorm", "residual_ln_dropout"]
    pairs = [(c, d) for c in configs for d in ("float64", "float32")]
    assert [(c["config"], c["dtype"]) for c in report["checks"]] == pairs
    assert [(r["config"], r["dtype"]) for r in report["results"]] == pairs
    for check in report["checks"]:
        assert check["passed"] is True and check["gradients_leave_params"] is True
        oracles = [check["reference"]] + ([check["torch"]] if HAS_TORCH else [])
        assert (check["torch"] is not None) == HAS_TORCH
        for oracle in oracles:
            assert oracle["passed"] is True and oracle["missing"] == []
            assert oracle["max_rel_error"] <= check["tolerance"]
            stepped = oracle["errors"]["params_after_step"]
            if check["config"] == "batchnorm":  # the running statistics are compared too
                assert {"mean2", "var2", "mean4", "var4"} <= stepped.keys()
            if check["config"].startswith("residual_ln"):
                assert {"gamma4", "beta4", "gamma7", "beta7"} <= oracle["errors"]["grads"].keys()
        # the module drew a mask for the dropout layer (number 8) and both oracles used it
        assert check["dropout_masks"] == ([8] if check["config"] == "residual_ln_dropout" else [])
    for row in report["results"]:
        assert row["batch"] == 128 and row["threads"] == 1
        assert row["numpy_s"] > 0 and row["numpy_cpu_s"] > 0
        assert (row["ratio"] is not None) == HAS_TORCH
        assert (row["ratio_cpu"] is not None) == HAS_TORCH
    assert "numpy/torch (CPU)" in result.stdout and "all passed" in result.stdout


def test_kinds_step_without_torch_and_profile(tmp_path: Path) -> None:
    args = ("--no-torch", "--configs", "batchnorm", "residual_ln_dropout", "--dtypes", "float32")
    result, report = kinds_step(tmp_path, *args, "--profile", "--steps", "5")
    assert report["checks_passed"] is True and report["environment"]["torch"] is None
    assert len(report["checks"]) == 2
    for check in report["checks"]:
        assert check["torch"] is None and check["reference"]["passed"] is True
    assert report["results"] == []  # --profile: line times instead of the comparison
    assert [p["config"] for p in report["profiles"]] == ["batchnorm", "residual_ln_dropout"]
    for profile in report["profiles"]:
        assert profile["step_us"] > 0
        assert any("numpy.dot" in line["code"] for line in profile["lines"])
    assert "| µs/step | function:line | code |" in result.stdout


def test_targets_quick(tmp_path: Path) -> None:
    """targets.py --quick: every section runs, checks pass; optional peers may be absent."""
    out = tmp_path / "targets.json"
    result = run("targets.py", "--quick", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["checks_passed"] is True
    assert report["checks"] and all(check["passed"] for check in report["checks"])
    assert report["sections"] == ["cli", "exact", "step", "fit", "threads"]
    assert {row["section"] for row in report["rows"]} == set(report["sections"])
    env = report["environment"]
    assert env["thread_env_used"]["OPENBLAS_NUM_THREADS"] == "1"
    # the checkout's own package is what was measured
    assert Path(env["symbackprop_path"]) == ROOT / "symbackprop"
    for row in report["rows"]:
        assert row.keys() >= {"target", "ours", "peer", "ratio", "goal", "met"}
        if row["goal_kind"] is None or (row["ratio"] is None and row["goal_kind"] == "ratio<="):
            assert row["met"] is None
    targets = {row["target"]: row for row in report["rows"]}
    sympy_rows = [t for t in targets if t.startswith("CLI: codegen seed_mlp vs import sympy")]
    (codegen,) = sympy_rows
    assert targets[codegen]["ours"] > 0 and targets[codegen]["peer"] > 0
    assert targets[codegen]["difference"] is not None
    (probe,) = [row for t, row in targets.items() if "import torch without using it" in t]
    assert probe["ours"] is not None  # the import probe ran check --no-torch
    assert report["details"]["cli"]["imported_modules"].keys() == {"check --no-torch"}
    steps = [row for row in report["rows"] if row["section"] == "step"]
    assert len(steps) == 4  # 2-3-3-2 at batch 1 and 32, against PyTensor and PyTorch
    for row in steps:
        assert row["ours"] > 0
        if "PyTorch" in row["target"]:
            assert (row["peer"] is not None) == HAS_TORCH
    fit = [row for row in report["rows"] if row["section"] == "fit"]
    assert len(fit) == 2 and all(row["ours"] > 0 for row in fit)
    assert (fit[0]["ratio"] is not None) == HAS_TORCH
    assert "| target | ours | peer | ratio | goal | met |" in result.stdout
    assert "correctness checks: all passed" in result.stdout


def test_targets_without_optional_peers(tmp_path: Path) -> None:
    """Without torch, PyTensor and scikit-learn their rows read n/a and nothing fails."""
    out = tmp_path / "targets.json"
    args = ("--quick", "--sections", "step", "fit", "--no-torch", "--no-pytensor", "--no-sklearn")
    result = run("targets.py", *args, "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["checks_passed"] is True
    assert report["rows"]
    for row in report["rows"]:
        assert row["ours"] > 0
        assert row["peer"] is None and row["ratio"] is None and row["met"] is None
    assert "n/a" in result.stdout


@pytest.mark.slow
def test_conv_step_quick(tmp_path: Path) -> None:
    out = tmp_path / "conv_step.json"
    args = ("--quick", "--configs", "digits_cnn", "--batch", "16", "--json", str(out))
    result = run("conv_step.py", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["checks_passed"] is True
    assert [c["dtype"] for c in report["checks"]] == ["float64", "float32"]
    for check in report["checks"]:
        assert check["passed"] is True
        assert check["against"]["against"] == (
            "torch nn modules" if HAS_TORCH else "the module in float64"
        )
    for row in report["results"]:
        assert row["numpy_cpu_s"] > 0 and row["batch"] == 16 and row["threads"] == 1
        assert (row["ratio_cpu"] is not None) == HAS_TORCH
    assert "numpy/torch (CPU)" in result.stdout


def test_conv_step_without_torch(tmp_path: Path) -> None:
    out = tmp_path / "conv_step.json"
    args = ("--quick", "--configs", "digits_cnn", "--dtypes", "float32", "--no-torch")
    result = run("conv_step.py", *args, "--batch", "8", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["checks_passed"] is True and report["environment"]["torch"] is None
    assert report["checks"][0]["against"]["against"] == "the module in float64"
    assert report["results"][0]["ratio_cpu"] is None
