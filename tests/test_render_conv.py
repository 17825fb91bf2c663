"""Documents of convolutional specs (DESIGN §2c): the conv layer's section (the sliding
kernel's figure, the forward sum, the worked 3 x 3 example, the three backward rules derived
on the proven instance, im2col's products), pooling and flattening; Markdown that KaTeX
renders and LaTeX that pdflatex compiles cleanly; and nothing of it in a dense spec's
documents."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from test_rules_conv import CNN

from symbackprop import figures, render, rules
from symbackprop.derive import derive
from symbackprop.spec import bundled_examples, from_dict, load_spec

# every image kind, stride and padding, a filter without bias, two input channels
MIXED = {
    "name": "mixed_cnn",
    "inputs": [2, 7, 7],
    "loss": "cross_entropy",
    "layers": [
        {"kind": "conv2d", "filters": 3, "kernel": 3, "stride": 2, "padding": 1},
        {"kind": "avg_pool2d", "kernel": 2, "stride": 1},
        {
            "kind": "conv2d",
            "filters": 2,
            "kernel": [2, 1],
            "stride": 2,
            "padding": 1,
            "bias": False,
            "activation": "tanh",
        },
        {"kind": "max_pool2d", "kernel": 2, "stride": 1},
        {"kind": "flatten"},
        {"units": 3, "activation": "softmax"},
    ],
}


@pytest.fixture(scope="module", params=["cnn", "mixed"])
def rendered(request: pytest.FixtureRequest) -> tuple:
    spec = from_dict(CNN if request.param == "cnn" else MIXED)
    d = derive(spec)
    return spec, d, render.render_markdown(d), render.render_tex(d)


def _tags(md: str) -> list[str]:
    return re.findall(r"\\tag\{([0-9.]+)\}", md)


def test_every_image_kind_has_its_section_and_equations(rendered: tuple) -> None:
    spec, d, md, tex = rendered
    kinds = {layer.kind for layer in spec.flat}
    sections = {
        "conv2d": "The convolutional layer",
        "max_pool2d": "Max pooling",
        "avg_pool2d": "Average pooling",
        "flatten": "Flattening",
    }
    tags = set(_tags(md))
    for kind, title in sections.items():
        assert ("## " in md and title in md) == (kind in kinds), kind
        for key, _, _ in rules.EQUATIONS[kind]:
            assert (str(d.number(key)) in tags) == (kind in kinds) if d.has(key) else True
            assert d.has(key) == (kind in kinds), key
    assert len(_tags(md)) == len(set(_tags(md)))  # each equation once
    assert tex.count(r"\section{The convolutional layer}") == 1


def test_the_worked_example_has_its_numbers(rendered: tuple) -> None:
    _, _, md, _ = rendered
    z = figures.conv_output(figures.CONV_INPUT, figures.CONV_KERNEL)
    assert z == ((3, 7), (1, 4))
    assert r"1 \cdot 2 + 0 \cdot 0 + (-1) \cdot 1 + 2 \cdot 3 = 7" in md
    # SymPy's derivatives on the instance: the cross-correlation of x with delta, ...
    assert (
        r"\delta_{11} x_{11} + \delta_{12} x_{12} + \delta_{21} x_{21} + \delta_{22} x_{22}" in md
    )
    # ... the sum of delta, and the full convolution of the padded error with the flipped kernel
    assert r"\delta_{11} + \delta_{12} + \delta_{21} + \delta_{22}" in md
    assert r"\star \begin{pmatrix} w_{22} & w_{21} \\ w_{12} & w_{11} \end{pmatrix}" in md
    # im2col: the kernel row times the windows' columns is the output, row by row
    assert r"\begin{pmatrix} 3 & 7 & 1 & 4 \end{pmatrix}" in md
    assert "full convolution" in md and "cross-correlation" in md and "im2col" in md


def test_the_network_shapes_are_in_the_im2col_table() -> None:
    md = render.render_markdown(derive(from_dict(CNN)))
    # layer 1: C kh kw = 9 rows, 8 x 8 positions; layer 3: 8 channels x 9 = 72, 4 x 4
    assert "| $1$ | $9 \\times 64B$ | $8 \\times 9$ | $8 \\times 64B$ | $9 \\times 64B$ |" in md
    assert "| $3$ | $72 \\times 16B$ | $16 \\times 72$ |" in md


def test_stride_and_padding_reach_the_layer_rows() -> None:
    md = render.render_markdown(derive(from_dict(MIXED)))
    assert r"\tilde a^{(0)}_{c,\, 2(p-1)+u,\, 2(q-1)+v}" in md  # stride 2, padded
    assert r"\frac{i + 1 - u}{2} + 1" in md  # the backward index of stride 2, padding 1
    assert r"\frac{1}{4} \sum_{(p, q):" in md  # average pooling spreads over 2 x 2 windows


def test_figures_are_listed_only_for_specs_that_use_them() -> None:
    cnn = render.document_figures(from_dict(CNN))
    assert tuple(cnn) == (*figures.FIGURES, "convolution", "pooling")
    no_pool = dict(CNN, layers=[CNN["layers"][0], *CNN["layers"][3:]])
    assert tuple(render.document_figures(from_dict(no_pool))) == (*figures.FIGURES, "convolution")
    for path in bundled_examples().values():
        spec = load_spec(path)
        if not spec.image:
            assert tuple(render.document_figures(spec)) == figures.FIGURES
    d = derive(from_dict(CNN))
    md = render.render_markdown(d)
    files = render.markdown_figures(d)
    assert set(files) == {f"cnn-{name}.svg" for name in cnn}
    for name in files:
        assert f"({name})" in md


def test_the_document_cites_what_the_code_cites() -> None:
    d = derive(from_dict(CNN))
    md = render.render_markdown(d)
    for number in (26, 27, 28, 29, 30, 31, 34, 35):
        assert number in d.cited
        assert f"\\tag{{{number}}}" in md


def test_markdown_renders_with_katex(tmp_path: Path) -> None:
    from test_notes_render import run_katex

    paths = []
    for spec in (CNN, MIXED):
        path = tmp_path / f"{spec['name']}.md"
        path.write_text(render.render_markdown(derive(from_dict(spec))), encoding="utf-8")
        paths.append(path)
    report = run_katex(paths)
    assert report["documents"] == 2 and report["count"] > 300
    assert report["failures"] == [], report["failures"][:3]


def test_markdown_math_is_whitelisted() -> None:
    from test_notes_render import whitelist_failures

    for spec in (CNN, MIXED):
        md = render.render_markdown(derive(from_dict(spec)))
        assert whitelist_failures(spec["name"], md) == []


@pytest.mark.slow
@pytest.mark.parametrize("spec", [CNN, MIXED], ids=["cnn", "mixed"])
def test_pdflatex_compiles_without_any_warning(spec: dict, tmp_path: Path) -> None:
    from test_notes_render import compile_tex, log_problems

    pdf, log, _ = compile_tex(render.render_tex(derive(from_dict(spec))), tmp_path)
    assert log_problems(log) == []
    text = subprocess.run(
        ["pdftotext", pdf.name, "-"], cwd=tmp_path, capture_output=True, check=True
    ).stdout.decode("utf-8")
    for label in ("kernel W", "output z", "input x", "max pool", "average pool"):
        assert label in text, label
