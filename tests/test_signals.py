"""The command ends cleanly on SIGTERM and on a closed output pipe.

SIGTERM: exit 143, "symbackprop: terminated", no temporary folder, no pdflatex left, no output.
A broken pipe (``symbackprop check seed_mlp | head -1``): a quiet exit 141, no traceback.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from symbackprop import cli
from symbackprop.cli import main

ROOT = Path(__file__).resolve().parent.parent


def environment(**extra: str) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), path) if p), **extra}


def children(pid: int) -> dict[int, str]:
    """The live child processes of pid, with their command names, from /proc."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry)] = comm
    return found


def alive(pid: int, comm: str) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = text[text.rindex(")") + 2 :].split()[0]
    return state != "Z" and f"({comm})" in text


@pytest.mark.slow  # a real pdflatex run; the in-process test below is the fast one
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_sigterm_during_pdflatex_cleans_up(tmp_path):
    temp = tmp_path / "tmp"
    work = tmp_path / "work"
    temp.mkdir()
    work.mkdir()
    argv = ["derive", "seed_mlp", "--no-check", "--format", "pdf", "-o", "x.pdf"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "symbackprop", *argv],
        cwd=work,
        env=environment(TMPDIR=str(temp)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    latex = None
    try:
        for _ in range(6000):  # polls, not a clock: the first pdflatex appears within seconds
            latex = next((p for p, comm in children(proc.pid).items() if comm == "pdflatex"), None)
            if latex is not None or proc.poll() is not None:
                break
            time.sleep(0.01)
        assert latex is not None, "pdflatex never started"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (out + err).decode("utf-8", "replace")
    assert proc.returncode == 143, text
    assert err.decode().strip() == "symbackprop: terminated"
    assert "Traceback" not in text
    assert list(work.iterdir()) == []
    assert list(temp.iterdir()) == []
    assert not alive(latex, "pdflatex")


def test_sigterm_in_process_unwinds_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    import symbackprop.codegen

    real = symbackprop.codegen.generate
    previous = signal.getsignal(signal.SIGTERM)

    def terminated_midway(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):  # the handler runs at the next bytecode boundary
            pass
        return real(*args, **kwargs)

    class Leaked(Exception):
        pass

    def guard(signum, frame):
        raise Leaked("main() did not handle SIGTERM")  # rather than the default: kill pytest

    monkeypatch.setattr(symbackprop.codegen, "generate", terminated_midway)
    signal.signal(signal.SIGTERM, guard)
    try:
        assert main(["codegen", "seed_mlp", "-o", "model.py"]) == 143
        assert signal.getsignal(signal.SIGTERM) is guard
    finally:
        signal.signal(signal.SIGTERM, previous)
    out, err = capsys.readouterr()
    assert err.strip() == "symbackprop: terminated"
    assert "Traceback" not in out + err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["codegen", "seed_mlp"], ["codegen", "nope.toml"], ["--version"]])
def test_main_restores_the_sigterm_handler(tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)

    def mine(signum, frame):  # pragma: no cover - never called
        raise AssertionError

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        try:
            main(argv)
        except SystemExit:  # --version
            pass
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- broken pipe -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "codes"),
    [
        (["codegen", "seed_mlp"], {141}),
        pytest.param(["check", "seed_mlp", "--no-torch"], {141}, marks=pytest.mark.slow),
        (["chain", "sin(exp(x**2))"], {141}),
        (["--help"], {0, 141}),  # argparse itself ignores a failed write of the help
    ],
    ids=["codegen", "check", "chain", "help"],
)
def test_closed_stdout_exits_quietly(tmp_path, argv, codes):
    read, write = os.pipe()
    os.close(read)  # every write to the pipe fails with EPIPE, as after `| head -1` has quit
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "symbackprop", *argv],
            cwd=tmp_path,
            env=environment(),
            stdout=write,
            stderr=subprocess.PIPE,
            timeout=300,
        )
    finally:
        os.close(write)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode in codes, err
    assert err == ""
    assert list(tmp_path.iterdir()) == []


def test_head_closes_the_pipe_early(tmp_path):
    """The reported case: the reader takes one line and goes away."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "symbackprop", "codegen", "seed_mlp"],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode("utf-8", "replace")
    proc.wait(timeout=120)
    assert first.startswith(b"# generated by symbackprop")
    # the whole module may have fitted into the pipe before it was closed: 0 or 141, quietly
    assert proc.returncode in (0, 141), err
    assert "Traceback" not in err and "Exception ignored" not in err


def test_broken_pipe_in_process_returns_141(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    class Closed:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert cli.main(["codegen", "seed_mlp"]) == 141
