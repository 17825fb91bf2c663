"""What each command imports: nothing it does not use (behaviour, not timing).

``codegen`` and ``chain`` print text from SymPy expressions: NumPy, PyTorch and SymPy's unit
systems (which ``sympy.simplify`` would load) are not needed for that; ``chain`` needs no
Jinja either.  ``derive`` runs its certificate without PyTorch unless given ``--torch``, and
``check --no-torch`` never imports it.  Each command runs in a fresh interpreter, which then
reports the modules of interest that were loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WATCHED = ("numpy", "torch", "sympy.physics.units", "jinja2", "matplotlib")

SCRIPT = """
import json, sys
from symbackprop.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
print(json.dumps({"code": code, "loaded": [m for m in WATCHED if m in sys.modules]}))
"""


def _loaded(argv: list[str], cwd: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", f"WATCHED = {WATCHED!r}\n{SCRIPT}", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
    )
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["code"] == 0, done.stderr[-2000:]
    return report["loaded"]


@pytest.mark.parametrize(
    ("argv", "absent"),
    [
        (["codegen", "seed_mlp", "-o", "x.py"], ("numpy", "torch", "sympy.physics.units")),
        (["codegen", "digits_mlp"], ("numpy", "torch", "sympy.physics.units")),
        (["chain", "sin(exp(x**2))"], WATCHED),
        (["chain", "log(cosh(exp(-t)))", "--format", "tex"], WATCHED),
        (["derive", "seed_mlp", "--no-check", "-o", "x.tex"], ("torch",)),
        (["check", "seed_mlp", "--no-torch"], ("torch",)),
    ],
    ids=["codegen", "codegen-digits", "chain", "chain-tex", "derive-no-check", "check-no-torch"],
)
def test_commands_import_only_what_they_use(
    argv: list[str], absent: tuple[str, ...], tmp_path: Path
) -> None:
    loaded = _loaded(argv, tmp_path)
    assert not set(loaded) & set(absent)


@pytest.mark.slow
def test_derive_certifies_without_torch_by_default(tmp_path: Path) -> None:
    loaded = _loaded(["derive", "seed_mlp", "-o", "x.md"], tmp_path)
    assert "torch" not in loaded
    assert "skipped pytorch: not requested" in (tmp_path / "x.md").read_text()
