"""Where the CLI may write: never onto an input, never onto anything but a regular file.

Every refusal is bad input (exit 2, one line naming the flag) and leaves every file as it was.
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from symbackprop import cli
from symbackprop import spec as spec_module
from symbackprop.cli import main
from symbackprop.spec import bundled_examples

NET_TOML = (
    'name = "net"\ninputs = 2\nloss = "mse"\n'
    '[[layers]]\nunits = 2\nactivation = "tanh"\n'
    '[[layers]]\nunits = 1\nactivation = "identity"\n'
)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(folder) -> dict[str, bytes | str]:
    """Every entry under folder: a regular file's bytes, else what kind of thing it is."""
    entries: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        mode = path.lstat().st_mode
        name = str(path.relative_to(folder))
        if stat.S_ISLNK(mode):
            entries[name] = "link -> " + os.readlink(path)
        elif stat.S_ISREG(mode):
            entries[name] = path.read_bytes()
        else:
            entries[name] = f"mode {stat.S_IFMT(mode):o}"
    return entries


def refused(argv: list[str], capsys, flag: str) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"symbackprop: error: {flag}:"), lines[0]
    return lines[0]


def write_data(path) -> None:
    rng = np.random.default_rng(0)
    np.savez(path, X=rng.normal(size=(20, 2)), y=np.arange(20) % 2)


# --- item 5: an output is never an input -------------------------------------------------------


def test_train_out_is_the_data(workdir, capsys):
    write_data(workdir / "d.npz")
    before = snapshot(workdir)
    line = refused(["train", "seed_mlp", "--data", "d.npz", "--out", "d.npz"], capsys, "--out")
    assert "d.npz" in line and "--data" in line
    assert snapshot(workdir) == before


def test_train_out_is_the_spec(workdir, capsys):
    write_data(workdir / "d.npz")
    (workdir / "net.toml").write_text(NET_TOML.replace('"mse"', '"cross_entropy"'), "utf-8")
    before = snapshot(workdir)
    refused(["train", "net.toml", "--data", "d.npz", "--out", "./net.toml"], capsys, "--out")
    assert snapshot(workdir) == before


def test_codegen_output_is_the_spec(workdir, capsys):
    (workdir / "net.toml").write_text(NET_TOML, "utf-8")
    before = snapshot(workdir)
    line = refused(["codegen", "net.toml", "-o", "net.toml"], capsys, "-o")
    assert "SPEC" in line
    assert snapshot(workdir) == before


def test_codegen_output_is_a_hard_link_to_the_spec(workdir, capsys):
    (workdir / "net.toml").write_text(NET_TOML, "utf-8")
    os.link(workdir / "net.toml", workdir / "other.py")
    before = snapshot(workdir)
    refused(["codegen", "net.toml", "-o", "other.py"], capsys, "-o")
    assert snapshot(workdir) == before


def test_codegen_output_is_a_symlink_to_the_spec(workdir, capsys):
    (workdir / "net.toml").write_text(NET_TOML, "utf-8")
    (workdir / "sub").mkdir()
    os.symlink("../net.toml", workdir / "sub" / "model.py")
    before = snapshot(workdir)
    refused(["codegen", "net.toml", "-o", "sub/model.py"], capsys, "-o")
    assert snapshot(workdir) == before


def test_codegen_output_is_the_spec_through_a_symlinked_folder(workdir, capsys):
    (workdir / "real").mkdir()
    (workdir / "real" / "net.toml").write_text(NET_TOML, "utf-8")
    os.symlink("real", workdir / "alias")
    before = snapshot(workdir)
    refused(["codegen", "alias/net.toml", "-o", "real/net.toml"], capsys, "-o")
    assert snapshot(workdir) == before


@pytest.fixture
def examples(tmp_path, monkeypatch):
    """Private copies of the bundled examples, so that a failing test cannot harm the real ones."""
    folder = tmp_path / "examples"
    folder.mkdir()
    copies = {}
    for name, path in bundled_examples().items():
        copies[name] = folder / path.name
        copies[name].write_bytes(path.read_bytes())
    monkeypatch.setattr(spec_module, "bundled_examples", lambda: dict(copies))
    return copies


def test_codegen_output_is_a_bundled_examples_file(workdir, capsys, examples):
    path = examples["seed_mlp"]
    before = path.read_bytes()
    line = refused(["codegen", "seed_mlp", "-o", str(path)], capsys, "-o")
    assert "SPEC" in line
    assert path.read_bytes() == before


def test_derive_output_is_the_spec(workdir, capsys):
    (workdir / "net.toml").write_text(NET_TOML, "utf-8")
    before = snapshot(workdir)
    refused(["derive", "net.toml", "--no-check", "--format", "tex", "-o", "net.toml"], capsys, "-o")
    assert snapshot(workdir) == before


def test_demo_out_holding_its_inputs(workdir, capsys, examples):
    # a demo file that is (a link to) the bundled spec the demo reads
    spec = examples[cli.DEMO_SPEC]
    before_spec = spec.read_bytes()
    (workdir / "ex").mkdir()
    os.symlink(spec, workdir / "ex" / f"{cli.DEMO_SPEC}.py")
    before = snapshot(workdir / "ex")
    line = refused(["demo", "--out", "ex", "--force", "--epochs", "1"], capsys, "--out")
    assert "the bundled spec digits_mlp" in line and "digits_mlp.toml" in line
    assert snapshot(workdir / "ex") == before
    assert spec.read_bytes() == before_spec


def test_distinct_paths_are_fine(workdir, capsys):
    (workdir / "net.toml").write_text(NET_TOML, "utf-8")
    assert main(["codegen", "net.toml", "-o", "net.py"]) == 0
    assert (workdir / "net.toml").read_text("utf-8") == NET_TOML
    assert (workdir / "net.py").read_text("utf-8").startswith("# generated by symbackprop")


# --- item 6: only regular files ----------------------------------------------------------------


def make_device(path) -> str:
    """A private character device (1, 3) -- /dev/null's numbers -- or a FIFO if mknod is denied."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        return "device"
    except PermissionError:
        os.mkfifo(path)
        return "fifo"


@pytest.mark.parametrize(
    "argv",
    [
        ["codegen", "seed_mlp", "-o", "{}"],
        ["derive", "seed_mlp", "--no-check", "-o", "{}"],
        ["descent", "w**2", "--start", "w=1", "--plot", "{}"],
    ],
    ids=["codegen", "derive", "descent"],
)
@pytest.mark.parametrize("kind", ["device", "fifo", "socket", "link-to-device"])
def test_output_that_is_not_a_regular_file(workdir, capsys, argv, kind):
    import socket

    target = workdir / "target"
    if kind == "device":
        make_device(target)
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(target))
        server.close()
    else:
        make_device(workdir / "dev")
        os.symlink("dev", target)
    before = snapshot(workdir)
    flag = "--plot" if argv[0] == "descent" else "-o"
    line = refused([a.replace("{}", "target") for a in argv], capsys, flag)
    assert "not a regular file" in line
    assert snapshot(workdir) == before


def test_output_symlink_to_a_regular_file_replaces_the_link(workdir, capsys):
    (workdir / "mine.py").write_text("# mine\n", "utf-8")
    os.symlink("mine.py", workdir / "link.py")
    assert main(["codegen", "seed_mlp", "-o", "link.py"]) == 0
    assert (workdir / "mine.py").read_text("utf-8") == "# mine\n"
    assert not (workdir / "link.py").is_symlink()
    assert (workdir / "link.py").read_text("utf-8").startswith("# generated by symbackprop")


def test_train_out_is_a_device(workdir, capsys):
    write_data(workdir / "d.npz")
    make_device(workdir / "w.npz")
    before = snapshot(workdir)
    refused(["train", "seed_mlp", "--data", "d.npz", "--out", "w.npz"], capsys, "--out")
    assert snapshot(workdir) == before


def test_write_outputs_itself_refuses_a_device(workdir):
    make_device(workdir / "dev")
    before = snapshot(workdir)
    with pytest.raises(cli.InputError, match="not a regular file"):
        cli.write_outputs({workdir / "ok.txt": "a", workdir / "dev": "b"})
    assert snapshot(workdir) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["derive", "seed_mlp", "--no-check", "-o", ""],
        ["derive", "seed_mlp", "--no-check", "--format", "pdf", "-o", "  "],
        ["codegen", "seed_mlp", "-o", ""],
        ["codegen", "seed_mlp", "-o", "."],
        ["codegen", "seed_mlp", "-o", "sub/"],
        ["descent", "w**2", "--start", "w=1", "--plot", ""],
    ],
    ids=[
        "derive-empty",
        "derive-blank-pdf",
        "codegen-empty",
        "codegen-dot",
        "trailing-slash",
        "plot",
    ],
)
def test_empty_or_folder_like_output_names(workdir, capsys, argv):
    flag = "--plot" if argv[0] == "descent" else "-o"
    refused(argv, capsys, flag)
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("pdf", "x.tex"), ("tex", "x.pdf"), ("md", "x.TEX"), ("tex", "x.md"), ("pdf", "x.md")],
)
def test_suffix_contradicting_format(workdir, capsys, fmt, name):
    line = refused(["derive", "seed_mlp", "--no-check", "--format", fmt, "-o", name], capsys, "-o")
    assert "--format" in line
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "name", "tex"),
    [
        (["--format", "md", "-o", "notes.txt"], "notes.txt", False),
        (["-o", "x.md"], "x.md", False),
        (["-o", "x.TeX"], "x.TeX", True),
        (["--format", "tex", "-o", "x.tex"], "x.tex", True),
        (["-o", "noext"], "noext", True),
    ],
)
def test_format_and_suffix_that_agree(workdir, argv, name, tex):
    assert main(["derive", "seed_mlp", "--no-check", *argv]) == 0
    text = (workdir / name).read_text("utf-8")
    assert ("\\documentclass" in text) is tex
    assert ("$$" in text) is not tex
    stem = name.rsplit(".", 1)[0]
    figures = [] if tex else [f"{stem}-{f}.svg" for f in ("big-picture", "descent", "network")]
    assert sorted(p.name for p in workdir.iterdir()) == sorted([name, *figures])


def test_long_file_name_is_written(workdir):
    # the staging file's name must not be longer than the allowed output name
    name = "m" * 250 + ".py"
    assert main(["codegen", "seed_mlp", "-o", name]) == 0
    assert [p.name for p in workdir.iterdir()] == [name]


def test_interrupted_write_leaves_no_staging_files(workdir, capsys, monkeypatch):
    (workdir / "model.py").write_text("# mine\n", "utf-8")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.os, "replace", interrupt)
    assert main(["codegen", "seed_mlp", "-o", "model.py"]) == 130
    assert [p.name for p in workdir.iterdir()] == ["model.py"]
    assert (workdir / "model.py").read_text("utf-8") == "# mine\n"
