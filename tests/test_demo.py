"""demo: the main job end to end, and its refusal to overwrite an earlier demo."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from symbackprop.cli import main


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("demo")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["demo"]) == 0
    finally:
        os.chdir(cwd)
    return folder / "symbackprop-demo", out.getvalue()


def test_demo_writes_every_file(demo_run: tuple[Path, str]) -> None:
    folder, out = demo_run
    names = {p.name for p in folder.iterdir()}
    expected = {"digits_mlp.py", "digits_mlp.tex", "digits_mlp.md", "digits_mlp_weights.npz"}
    expected |= {"seed_mlp.tex", "seed_mlp.md"}
    for name in ("digits_mlp", "seed_mlp"):  # the Markdown documents' figures
        expected |= {f"{name}-{f}.svg" for f in ("network", "descent", "big-picture")}
    if shutil.which("pdflatex"):
        expected |= {"digits_mlp.pdf", "seed_mlp.pdf"}
    elif os.environ.get("CI"):
        pytest.fail("CI installs pdflatex; the demo must write the PDFs")
    assert names == expected
    for name in names:
        assert f"  symbackprop-demo{os.sep}{name}" in out or f"symbackprop-demo/{name}" in out


def test_demo_prints_certificate_progress_accuracy_and_final_line(
    demo_run: tuple[Path, str],
) -> None:
    _, out = demo_run
    assert "PASS: 6/6 parameters agree with every witness" in out
    assert "epoch 30/30" in out
    assert "test accuracy:" in out and "try next:" in out
    lines = out.rstrip("\n").splitlines()
    final = [line for line in lines if line.startswith("final: ")]
    assert len(final) == 1
    fields = dict(item.split("=") for item in final[0][len("final: ") :].split())
    assert set(fields) == {"train_loss", "test_loss", "train_accuracy", "test_accuracy"}
    assert float(fields["test_accuracy"]) >= 0.97
    after = lines[lines.index(final[0]) + 1 :]
    assert after[0] == "files written:" and all(line.startswith("  ") for line in after[1:])


def test_demo_refuses_to_overwrite(
    demo_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    folder, _ = demo_run
    monkeypatch.chdir(folder.parent)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("symbackprop: error: --out:") and "--force" in err
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_demo_out_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["demo", "--out", str(target)]) == 2
    assert "--out" in capsys.readouterr().err


def test_demo_that_diverges_exits_1_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "d"
    assert (
        main(["demo", "--out", str(out), "--lr", "50", "--optimizer", "sgd", "--epochs", "3"]) == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diverged" in err[0] and "fit: the loss" in err[0], err
    assert not out.exists()
