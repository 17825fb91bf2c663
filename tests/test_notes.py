"""The derivation documents as lecture notes: the story's order, stable equation numbers,
figures, the worked example's step, exercises, teacher forms, length."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from symbackprop import lesson, render
from symbackprop.checkpoint import load_module
from symbackprop.cli import main
from symbackprop.codegen import generate
from symbackprop.derive import NUMBERS, derive
from symbackprop.spec import bundled_examples, from_dict, load_spec

STORY = [
    "The network and the notation",
    "The forward pass",
    "Why the non-linearity matters",
    "The loss",
    "The chain rule",
    "The derivatives of the activations",
    "The output error",
    "The backward recursion and the gradients",
    "Gradient descent",
    "The five training steps",
    "The big picture",
    "The certificate",
    "Exercises",
    "Answers",
]

TANH_MSE = {
    "name": "tanh_mse",
    "inputs": 2,
    "layers": [{"units": 3, "activation": "relu"}, {"units": 1, "activation": "tanh"}],
    "loss": "mse",
}


def _md(name: str) -> str:
    return Path("generated", f"{name}.md").read_text(encoding="utf-8")


def _sections(md: str) -> list[str]:
    return re.findall(r"^## \d+\. (.*)$", md, flags=re.MULTILINE)


@pytest.mark.parametrize("name", sorted(bundled_examples()))
def test_every_document_tells_the_whole_story_in_order(name: str) -> None:
    sections = _sections(_md(name))
    found = [s for s in sections if s in STORY]
    assert found == STORY, sections
    small = derive(load_spec(name)).network.parameter_count <= 50
    assert ("A worked example" in sections) is small
    if small:  # between the five steps and the big picture
        assert sections.index("The five training steps") < sections.index("A worked example")
        assert sections.index("A worked example") < sections.index("The big picture")


@pytest.mark.parametrize("name", sorted(bundled_examples()))
def test_equation_numbers_are_the_same_in_every_document(name: str) -> None:
    d = derive(load_spec(name))
    for e in d.equations:
        assert e.number == NUMBERS[e.key]
    assert d.number("delta.output") == 6
    assert d.number("delta.hidden") == 7
    assert d.number("update") == 10
    assert r"\tag{6}" in _md(name)


@pytest.mark.parametrize("name", sorted(bundled_examples()))
def test_sub_equations_follow_their_core_equation(name: str) -> None:
    tags = re.findall(r"\\tag\{([0-9.]+)\}", _md(name))
    seen: set[str] = set()
    for tag in tags:
        core = tag.split(".")[0]
        assert core == tag or core in seen, tag
        seen.add(tag)
    tex = Path("generated", f"{name}.tex").read_text(encoding="utf-8")
    assert r"\tableofcontents" in tex
    assert r"\label{eq:6}" in tex and r"\eqref{eq:" in tex


def test_markdown_figures_are_the_files_the_document_names() -> None:
    d = derive(load_spec("seed_mlp"))
    md = render.render_markdown(d, stem="notes")
    files = render.markdown_figures(d, "notes")
    assert sorted(files) == ["notes-big-picture.svg", "notes-descent.svg", "notes-network.svg"]
    for file, svg in files.items():
        assert f"]({file})" in md
        assert svg.lstrip().startswith(("<svg", "<?xml"))
    for name in ("network", "descent", "big-picture"):  # the golden copies
        assert Path("generated", f"seed_mlp-{name}.svg").is_file()


def test_derive_writes_the_figures_beside_the_markdown(tmp_path: Path) -> None:
    out = tmp_path / "notes.md"
    assert main(["derive", "seed_mlp", "--no-check", "-o", str(out)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == [
        "notes-big-picture.svg",
        "notes-descent.svg",
        "notes-network.svg",
        "notes.md",
    ]


def test_derive_refuses_a_figure_path_that_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "notes-network.svg").mkdir()
    assert main(["derive", "seed_mlp", "--no-check", "-o", str(tmp_path / "notes.md")]) == 2
    assert not (tmp_path / "notes.md").exists()


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext is not installed")
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_seed_mlp_pdf_has_its_figures_and_is_shorter_than_before(tmp_path: Path) -> None:
    pdf = render.compile_pdf(render.render_tex(derive(load_spec("seed_mlp"))))
    path = tmp_path / "seed_mlp.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout
    for label in ("Figure 1", "Figure 2", "Figure 3", "layer 1", "start", "minimum"):
        assert label in text, label
    pages = text.count("\f")  # pdftotext ends every page with a form feed
    assert 0 < pages < 14  # the first version's notes took 14 pages, without figures


def test_worked_example_shows_a_full_step_and_the_loss_falling() -> None:
    d = derive(load_spec("seed_mlp"))
    ex = lesson.worked_example(d)
    step = lesson.sgd_step(d, ex)
    md = render.render_markdown(d)
    assert step.loss_after < step.loss_before
    assert f"from ${render.decimal(step.loss_before)}$ to ${render.decimal(step.loss_after)}$" in md
    for layer in (1, 2, 3):  # every parameter moves
        assert rf"W^{{({layer})}} \leftarrow W^{{({layer})}} - 0.1" in md
    assert "a dead ReLU" in md
    module = load_module(generate(d), "seed_mlp_step")
    params = {k: np.array(v) for k, v in ex.params.items()}
    module.train_step(params, ex.x[None], ex.y[None], 0.1)
    for key, value in step.params.items():
        np.testing.assert_allclose(params[key], value, rtol=1e-12, atol=1e-15)


def test_adam_spec_shows_its_first_update() -> None:
    md = _md("digits_mlp")
    assert "trains with Adam" in md and r"\hat m" in md


@pytest.mark.parametrize("name", ["seed_mlp", "tanh_regression", "sigmoid_bce"])
def test_exercise_answers_are_in_the_document_and_match_the_module(name: str) -> None:
    d = derive(load_spec(name))
    ex = lesson.worked_example(d)
    items = lesson.exercises(d, ex)
    assert 3 <= len(items) <= 5
    md = _md(name)
    answers = md[md.index("## ") :].split("Answers")[-1]
    for item in items:
        assert item.answer in answers
        assert item.question in md
    module = load_module(generate(d), f"{name}_exercises")
    _loss, grads = module.gradients(ex.params, ex.x[None], ex.y[None])
    for item in items:
        if item.key[0] == "grad":
            _, key, i, j = item.key
            assert float(item.value) == pytest.approx(grads[key][i - 1, j - 1], rel=1e-12)
        elif item.key[0] == "entries":
            assert item.value == grads[item.key[1]].size


def test_large_network_exercises_match_the_module() -> None:
    d = derive(load_spec("digits_mlp"))
    md = _md("digits_mlp")
    module = load_module(generate(d), "digits_mlp_exercises")
    for item in render.teaching.large_exercises(d):
        assert item.answer in md
        if item.key[0] == "entries":
            assert item.value == int(np.prod(module.PARAMETERS[item.key[1]]))
        elif item.key[0] == "parameters":
            assert item.value == sum(int(np.prod(s)) for s in module.PARAMETERS.values())


def test_teacher_forms_in_the_core_equations() -> None:
    d = derive(from_dict(TANH_MSE))
    output = next(e for e in d.equations if e.key == "delta.output")
    assert output.latex.endswith(r"\left(a - y\right) \left(1 - a^{2}\right)")
    tex = render.render_tex(d)
    assert r"\odot \left(1 - " not in tex or r"\odot 1" not in tex
    assert "851}{500}" not in render.render_tex(derive(load_spec("sigmoid_bce")))


def test_relu_prose_says_left_hand_derivative() -> None:
    md = _md("seed_mlp")
    assert "left-hand derivative" in md and "right-hand" not in md


def test_teaching_paragraphs_are_present() -> None:
    md = _md("seed_mlp")
    for phrase in (
        "elementwise (Hadamard) product",  # ⊙ defined where it is first used
        "The dimension check",
        "What $\\delta$ means",
        "Why backpropagation is fast",
        "First on a scalar",
        "hold the others fixed",
        "Summary: the core equations",
    ):
        assert phrase in md, phrase
    assert "Saturation" in _md("tanh_regression")
