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
        assert row["pytensor_s"] is None
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
