"""The notes' figures: LaTeX that compiles cleanly with texlive-latex-base alone, SVG of the
same drawing, the labels they promise, and the descent picture's geometry."""

from __future__ import annotations

import math
import random
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from symbackprop import figures
from symbackprop.calculus import descent
from symbackprop.functions import ACTIVATIONS
from symbackprop.spec import NetworkSpec, bundled_examples, from_dict, load_spec

SVG = "{http://www.w3.org/2000/svg}"
PREAMBLE = (
    "\\documentclass[10pt]{article}\\usepackage[margin=2.2cm]{geometry}"
    "\\usepackage{amsmath}\\usepackage{amssymb}\n\\begin{document}\n"
)
needs_pdflatex = pytest.mark.skipif(
    shutil.which("pdflatex") is None or shutil.which("pdftotext") is None,
    reason="pdflatex and pdftotext are not installed",
)


def _dense(units: int, activation: str = "relu") -> dict:
    return {"units": units, "activation": activation}


HAND_BUILT = {
    "depth1": {"name": "depth1", "inputs": 3, "loss": "mse", "layers": [_dense(1, "identity")]},
    "depth6": {
        "name": "depth6",
        "inputs": 4,
        "loss": "cross_entropy",
        "layers": [
            _dense(5, "tanh"),
            _dense(6, "sigmoid"),
            _dense(4, "gelu"),
            _dense(3, "elu"),
            _dense(5, "leaky_relu"),
            _dense(3, "softmax"),
        ],
    },
    "width1": {
        "name": "width1",
        "inputs": 1,
        "loss": "mse",
        "layers": [_dense(1, "tanh"), _dense(1, "tanh"), _dense(1, "identity")],
    },
    "softmax_out": {
        "name": "softmax_out",
        "inputs": 4,
        "loss": "cross_entropy",
        "layers": [_dense(3, "softmax")],
    },
    "nested": {
        "name": "nested",
        "inputs": 8,
        "loss": "mse",
        "layers": [
            _dense(8),
            {
                "kind": "residual",
                "block": [
                    _dense(8),
                    {"kind": "residual", "block": [_dense(8, "tanh"), {"kind": "rms_norm"}]},
                    {"kind": "batch_norm"},
                ],
            },
            {"kind": "dropout", "rate": 0.1},
            _dense(2, "identity"),
        ],
        "train": {"batch_size": 4},
    },
}
NEURON_DIAGRAMS = {"seed_mlp", "tanh_regression", "depth1", "width1", "softmax_out"}
BUNDLED = ["seed_mlp", "digits_mlp", "residual_mlp", "batchnorm_mlp", "tanh_regression"]
NAMES = [*BUNDLED, *HAND_BUILT]


def _spec(name: str) -> NetworkSpec:
    if name in HAND_BUILT:
        return from_dict(HAND_BUILT[name])
    return load_spec(bundled_examples()[name])


def _document(latex_figures: list[figures.Figure]) -> str:
    body = "".join(
        f"\\begin{{figure}}[htbp]\\centering\n{f.latex}\\caption{{{f.caption}}}\\end{{figure}}\n"
        "\\clearpage\n"
        for f in latex_figures
    )
    return PREAMBLE + body + "\\end{document}\n"


def _compile(tex: str, tmp_path) -> tuple[str, str]:  # noqa: ANN001
    """The log and pdftotext's text of the document."""
    path = tmp_path / "figures.tex"
    path.write_text(tex, encoding="utf-8")
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", path.name],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    log = path.with_suffix(".log").read_text(encoding="utf-8", errors="replace")
    assert proc.returncode == 0, next((x for x in log.splitlines() if x.startswith("!")), log)
    text = subprocess.run(
        ["pdftotext", "-layout", path.with_suffix(".pdf").name, "-"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8")
    return log, text


def _clean(log: str) -> None:
    bad = [x for x in log.splitlines() if re.search(r"Warning|Overfull|Underfull", x)]
    assert not bad, bad


def _size(latex: str) -> tuple[float, float]:
    match = re.search(r"\\begin\{picture\}\(([-0-9.]+),([-0-9.]+)\)", latex)
    assert match, latex[:200]
    return float(match.group(1)), float(match.group(2))


# --- LaTeX -----------------------------------------------------------------------------------


@pytest.mark.slow
@needs_pdflatex
@pytest.mark.parametrize("name", NAMES)
def test_the_figures_compile_cleanly_and_show_their_labels(name: str, tmp_path) -> None:  # noqa: ANN001
    spec = _spec(name)
    network, big = figures.network_figure(spec), figures.big_picture_figure(spec)
    log, text = _compile(_document([network, big]), tmp_path)
    _clean(log)
    pages = text.split("\f")
    if len(spec.flat) <= figures.MAX_STAGES:
        for layer in spec.flat:
            assert f"layer {layer.index}" in pages[1]  # every stage of the big picture
    if name in NEURON_DIAGRAMS:
        assert "input" in pages[0]
        for layer in spec.flat:
            assert f"layer {layer.index}" in pages[0]
            assert figures.activation_name(layer).replace("\\_", "_") in pages[0]
    else:
        for layer in spec.flat:
            if layer.kind == "dense":
                assert f"{layer.index}: dense {layer.units}" in pages[0]
            elif layer.kind == "residual":
                assert f"{layer.index}: residual" in pages[0]
        assert f"{spec.inputs} inputs" in pages[0]


@pytest.mark.slow
@needs_pdflatex
def test_the_descent_figure_compiles_cleanly(tmp_path) -> None:  # noqa: ANN001
    log, text = _compile(_document([figures.descent_figure()]), tmp_path)
    _clean(log)
    for label in ("start", "minimum", "(2.4, 0.4)", "6.24"):
        assert label in text
    for tick in ("\u22124", "\u22123", "\u22122", "\u22121", "0", "1", "2", "3", "4"):
        assert re.search(rf"(^|\s){tick}(\s|$)", text, flags=re.M), tick


@pytest.mark.slow
@needs_pdflatex
def test_random_specs_compile_cleanly(tmp_path) -> None:  # noqa: ANN001
    specs = _random_specs(random.Random(7), 8)
    shown = [
        f
        for spec in specs
        for f in (figures.network_figure(spec), figures.big_picture_figure(spec))
    ]
    log, _ = _compile(_document(shown), tmp_path)
    _clean(log)


ALLOWED = {
    "setlength", "unitlength", "begin", "end", "put", "qbezier", "line", "vector", "circle",
    "framebox", "makebox", "thinlines", "thicklines", "scriptsize", "footnotesize", "small",
    "hat", "delta", "ell", "partial", "gamma", "beta", "vdots", "cdots", "_",
}  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_the_latex_uses_the_picture_environment_only(name: str) -> None:
    spec = _spec(name)
    for figure in (figures.network_figure(spec), figures.big_picture_figure(spec)):
        _check_latex(figure.latex)


def test_the_descent_latex_uses_the_picture_environment_only() -> None:
    _check_latex(figures.descent_figure().latex)


def _check_latex(latex: str) -> None:
    assert latex.startswith("\\setlength{\\unitlength}{1pt}")
    assert latex.rstrip().endswith("\\end{picture}")
    assert set(re.findall(r"\\([A-Za-z]+|_)", latex)) <= ALLOWED
    # \line and \vector at axis slopes only; circles within what LaTeX's fonts have
    for kind, slope in re.findall(r"\\(line|vector)\((-?\d+,-?\d+)\)", latex):
        assert slope in ("1,0", "-1,0", "0,1", "0,-1"), (kind, slope)
    for size in re.findall(r"\\circle\{([0-9.]+)\}", latex):
        assert float(size) in figures.CIRCLE_SIZES
    for size in re.findall(r"\\circle\*\{([0-9.]+)\}", latex):
        assert float(size) <= figures.MAX_DOT
    dots = sum(int(n) for n in re.findall(r"\\qbezier\[(\d+)\]", latex))
    assert dots <= figures.MAX_DOTS
    assert "\\qbezier(" not in latex  # every \qbezier says how many dots (TeX's memory)
    width, height = _size(latex)
    assert 0 < width <= figures.MAX_WIDTH and 0 < height <= figures.MAX_HEIGHT


# --- SVG -------------------------------------------------------------------------------------


def _svg(figure: figures.Figure) -> ET.Element:
    assert figure.svg.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(figure.svg.encode("utf-8"))
    assert root.tag == f"{SVG}svg" and root.get("version") == "1.1"
    for key in ("width", "height", "viewBox"):
        assert root.get(key)
    for element in root.iter():
        assert element.tag.startswith(SVG), element.tag
        assert element.tag not in (f"{SVG}script", f"{SVG}image", f"{SVG}use", f"{SVG}style")
        assert not any(k.endswith("href") for k in element.attrib)
        assert element.get("font-family") in (None, "serif")
    return root


def _count(root: ET.Element, tag: str, kind: str) -> int:
    return sum(1 for e in root.iter(f"{SVG}{tag}") if e.get("class") == kind)


@pytest.mark.parametrize("name", NAMES)
def test_the_network_svg_has_a_circle_per_neuron_or_a_box_per_layer(name: str) -> None:
    spec = _spec(name)
    figure = figures.network_figure(spec)
    root = _svg(figure)
    assert figure.name == "network"
    if name in NEURON_DIAGRAMS:
        assert _count(root, "circle", "input") == spec.inputs
        assert _count(root, "circle", "neuron") == sum(spec.sizes[1:])
        assert _count(root, "rect", "layer") == 0
    else:
        kinds = [layer.kind for layer in spec.flat]
        assert _count(root, "rect", "layer") == 1 + len(kinds) - kinds.count("residual")
        assert _count(root, "circle", "plus") == kinds.count("residual")
        assert _count(root, "circle", "neuron") == 0


@pytest.mark.parametrize("name", NAMES)
def test_the_big_picture_svg_has_a_box_per_stage(name: str) -> None:
    spec = _spec(name)
    figure = figures.big_picture_figure(spec)
    root = _svg(figure)
    assert figure.name == "big-picture"
    stages = _count(root, "rect", "stage")
    assert stages == (len(spec.flat) if len(spec.flat) <= figures.MAX_STAGES else 4)
    assert _count(root, "rect", "input") == _count(root, "rect", "loss") == 1
    text = "".join(root.itertext())
    assert "\u2202\u2113/\u2202\u0177" in text  # the derivative at the loss
    assert f"\u03b4({spec.output_layer.index})" in text  # the output error


def test_the_descent_svg() -> None:
    root = _svg(figures.descent_figure())
    assert _count(root, "rect", "frame") == 1
    assert _count(root, "circle", "start") == 1 and _count(root, "circle", "minimum") == 1
    assert _count(root, "circle", "iterate") == 12
    assert _count(root, "polyline", "contour") >= len(figures.descent_layout().levels)


@pytest.mark.parametrize("name", NAMES)
def test_the_figures_are_deterministic(name: str) -> None:
    spec = _spec(name)
    assert figures.network_figure(spec) == figures.network_figure(_spec(name))
    assert figures.big_picture_figure(spec) == figures.big_picture_figure(_spec(name))


def test_the_descent_figure_is_deterministic() -> None:
    assert figures.descent_figure() == figures.descent_figure()


@pytest.mark.parametrize("name", NAMES)
def test_captions_are_one_sentence_with_balanced_math(name: str) -> None:
    spec = _spec(name)
    for figure in (figures.network_figure(spec), figures.big_picture_figure(spec)):
        _check_caption(figure.caption)


def _check_caption(caption: str) -> None:
    assert caption.endswith(".") and "\n" not in caption
    assert caption.count("$") % 2 == 0
    assert "--" not in caption  # Markdown would print it as is
    assert caption[0].isupper()


# --- what the network figure says ----------------------------------------------------------


def test_seed_mlp_names_every_weight_on_its_connection() -> None:
    spec = _spec("seed_mlp")
    figure = figures.network_figure(spec)
    assert "every weight is named" in figure.caption
    items, _ = figures._neuron_diagram(spec)
    centres = _neuron_centres(items)
    labels = [t for t in items if isinstance(t, figures.Text) and t.tex.startswith("$w^")]
    assert len(labels) == 2 * 3 + 3 * 3 + 3 * 2
    for label in labels:
        layer, i, j = (
            int(v) for v in re.fullmatch(r"\$w\^\{\((\d)\)\}_\{(\d)(\d)\}\$", label.tex).groups()
        )
        # w^{(l)}_{ij}: from unit j of layer l-1 to unit i of layer l, labelled next to it
        (x1, y1), (x2, y2) = centres[layer - 1][j - 1], centres[layer][i - 1]
        assert x1 < label.x < x2
        assert _distance((label.x, label.y), (x1, y1), (x2, y2)) < 12.0
        assert math.dist((label.x, label.y), (x2, y2)) < math.dist((label.x, label.y), (x1, y1))


def test_a_crowded_net_names_the_weights_into_the_first_neurons() -> None:
    spec = _spec("tanh_regression")  # 3-4-1: the connections into layer 1 cross too often
    figure = figures.network_figure(spec)
    assert "first neuron of each layer" in figure.caption
    items, _ = figures._neuron_diagram(spec)
    labels = [t.tex for t in items if isinstance(t, figures.Text) and t.tex.startswith("$w^")]
    assert sorted(labels) == sorted(
        [f"$w^{{(1)}}_{{1{j}}}$" for j in (1, 2, 3)]
        + [f"$w^{{(2)}}_{{1{j}}}$" for j in range(1, 5)]
    )


def _neuron_centres(items: list) -> list[list[tuple[float, float]]]:
    """Neuron centres by column (left to right), each column top to bottom."""
    circles = [c for c in items if isinstance(c, figures.Circle) and c.kind in ("input", "neuron")]
    xs = sorted({c.x for c in circles})
    return [sorted(((c.x, c.y) for c in circles if c.x == x), key=lambda p: -p[1]) for x in xs]


def _distance(p: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    dx, dy = b[0] - a[0], b[1] - a[1]
    t = max(0.0, min(1.0, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / (dx * dx + dy * dy)))
    return math.hypot(p[0] - a[0] - t * dx, p[1] - a[1] - t * dy)


def test_large_or_layered_nets_get_layer_boxes() -> None:
    digits = figures.network_figure(_spec("digits_mlp"))
    assert _count(_svg(digits), "circle", "neuron") == 0
    text = "".join(_svg(digits).itertext())
    for label in ("1: dense 64, ReLU", "2: dense 64, ReLU", "3: dense 10, softmax", "64 inputs"):
        assert label in text
    residual = figures.network_figure(_spec("residual_mlp"))
    text = "".join(_svg(residual).itertext())
    for label in ("2: residual", "5: layer norm", "6: dropout 0.2", "4: dense 64, identity"):
        assert label in text
    assert "the residual layer 2 adds its input to the output of layers 3 to 5" in residual.caption


def test_a_residual_inside_a_residual_gets_two_skip_arrows() -> None:
    spec = _spec("nested")
    caption = figures.network_figure(spec).caption
    assert "the residual layer 2 adds its input to the output of layers 3 to 7" in caption
    assert "the residual layer 4 adds its input to the output of layers 5 to 6" in caption
    items, _ = figures._layer_boxes(spec)
    arrows_left = [a for a in items if isinstance(a, figures.Arrow) and a.x2 < a.x1]
    assert len(arrows_left) == 2  # into the two "+" nodes
    assert len({a.x1 for a in arrows_left}) == 2  # the outer one around the inner one


def test_a_deep_net_elides_the_middle_layers() -> None:
    layers = [_dense(20, "tanh") for _ in range(40)] + [_dense(1, "identity")]
    spec = from_dict({"name": "deep", "inputs": 20, "loss": "mse", "layers": layers})
    network = figures.network_figure(spec)
    assert "33 layers in the middle are not shown" in network.caption
    assert _count(_svg(network), "rect", "layer") == figures.MAX_ROWS - 1
    big = figures.big_picture_figure(spec)
    assert "37 layers in the middle are not shown" in big.caption
    text = "".join(_svg(big).itertext())
    for label in ("layer 1", "layer 2", "layer 40", "layer 41", "\u22ef"):
        assert label in text
    assert "layer 3" not in text
    for figure in (network, big):
        _check_latex(figure.latex)


@pytest.mark.parametrize("depth", [3, 30])
def test_residuals_nested_as_deep_as_a_spec_may_fit(depth: int) -> None:
    block: list[dict] = [_dense(4, "tanh")]
    for _ in range(depth - 1):
        block = [_dense(4), {"kind": "residual", "block": block}]
    layers = [{"kind": "residual", "block": block}, _dense(2, "identity")]
    spec = from_dict({"name": "nest", "inputs": 4, "loss": "mse", "layers": layers})
    network, big = figures.network_figure(spec), figures.big_picture_figure(spec)
    for figure in (network, big):
        _check_latex(figure.latex)
    arrows = [a for a in _arrows(network.latex) if a.x2 < a.x1]  # into the "+" nodes drawn
    assert len({a.x1 for a in arrows}) == len(arrows) == (depth if depth < 5 else 4)


# --- the big picture -----------------------------------------------------------------------


def test_the_big_picture_of_seed_mlp() -> None:
    figure = figures.big_picture_figure(_spec("seed_mlp"))
    text = "".join(_svg(figure).itertext())
    for label in ("a(1)", "a(2)", "\u0177", "\u03b4(2)", "\u03b4(3)", "\u2202\u2113/\u2202W(1)"):
        assert label in text, label
    assert "\u2202\u2113/\u2202b(3)" in text
    assert "$\\delta^{(3)}$" in figure.caption
    # the backward arrows point left, the forward ones right, the gradients down
    items = _arrows(figure.latex)
    forward = [a for a in items if a.x2 > a.x1]
    backward = [a for a in items if a.x2 < a.x1]
    down = [a for a in items if a.y2 < a.y1]
    assert len(forward) == 4 and len(backward) == 3 and len(down) == 3 + 1  # and the target y
    assert min(a.y1 for a in forward) > max(a.y1 for a in backward)


def _arrows(latex: str) -> list[figures.Arrow]:
    """The arrows of a figure, read back from its LaTeX."""
    out = []
    for x, y, ux, uy, length in re.findall(
        r"\\put\(([-0-9.]+),([-0-9.]+)\)\{\\vector\((-?\d),(-?\d)\)\{([0-9.]+)\}\}", latex
    ):
        x, y, length = float(x), float(y), float(length)
        out.append(figures.Arrow(x, y, x + int(ux) * length, y + int(uy) * length))
    return out


def test_the_big_picture_names_the_parameters_of_norm_layers() -> None:
    text = "".join(_svg(figures.big_picture_figure(_spec("batchnorm_mlp"))).itertext())
    assert "\u2202\u2113/\u2202\u03b3(2)" in text and "\u2202\u2113/\u2202\u03b2(4)" in text


# --- gradient descent ----------------------------------------------------------------------


def test_the_descent_path_is_the_articles() -> None:
    layout = figures.descent_layout()
    assert layout.path[0] == (3.0, 1.0)
    assert layout.path[1] == pytest.approx((2.4, 0.4), abs=1e-12)
    assert layout.values[1] == pytest.approx(6.24, abs=1e-12)
    # the same walk as the bundled `symbackprop descent "w1**2 + 3*w2**2" --start w1=3,w2=1`
    run = descent("w1**2 + 3*w2**2", "w1=3,w2=1", lr=0.1, steps=12)
    walked = [w for row in run.trace for w in row[1]]
    assert walked == pytest.approx([w for p in layout.path for w in p], abs=1e-12)
    assert "$(2.4, 0.4)$" in figures.descent_figure().caption
    assert "$f = 6.24$" in figures.descent_figure().caption


def test_one_unit_is_the_same_length_on_both_axes() -> None:
    for layout in (
        figures.descent_layout(),
        figures.descent_layout(
            lambda a, b: (a - 1) ** 2 + 10 * (b + 2) ** 2, start=(4.0, 0.0), lr=0.02
        ),
        figures.descent_layout(window=(-1.0, 5.0, -0.5, 1.5)),
    ):
        s1, s2 = layout.scale
        assert s1 == s2
        x0, _, y0, _ = layout.window
        origin = layout.point(x0, y0)
        assert math.dist(origin, layout.point(x0 + 1, y0)) == pytest.approx(
            math.dist(origin, layout.point(x0, y0 + 1)), rel=1e-12
        )
        width, height = layout.point(layout.window[1], layout.window[3])
        assert width <= figures.PLOT_WIDTH + 1e-9 and height <= figures.PLOT_HEIGHT + 1e-9


def test_each_step_leaves_its_contour_at_a_right_angle() -> None:
    """On the page: the contour through an iterate is perpendicular to the step from it."""
    layout = figures.descent_layout()
    for k in range(3):
        p = np.array(layout.point(*layout.path[k]))
        q = np.array(layout.point(*layout.path[k + 1]))
        near = [
            (line[n], line[n + 1])
            for line in layout.contours
            for n in range(len(line) - 1)
            if _distance(tuple(p), line[n], line[n + 1]) < 0.5
        ]
        assert near, k  # the iterate lies on a contour line
        tangent = np.array(near[0][1]) - np.array(near[0][0])
        step = q - p
        cosine = abs(tangent @ step) / (np.linalg.norm(tangent) * np.linalg.norm(step))
        assert cosine < 0.1, (k, cosine)


def test_the_default_levels_pass_through_the_first_iterates() -> None:
    layout = figures.descent_layout()
    assert layout.levels == pytest.approx(layout.values[: len(layout.levels)])
    assert len(layout.levels) == figures.DEFAULT_LEVELS


def test_a_callable_without_gradient_and_a_chosen_window() -> None:
    def f(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a - 1) ** 2 + 10 * (b + 2) ** 2

    layout = figures.descent_layout(f, start=(4.0, 0.0), lr=0.02, steps=100)
    exact = figures.descent_path(lambda a, b: (2 * (a - 1), 20 * (b + 2)), (4.0, 0.0), 0.02, 100)
    assert np.allclose(layout.path, exact, atol=1e-6, rtol=0)
    assert layout.minimum == pytest.approx((1.0, -2.0), abs=0.1)  # the lowest grid point
    # after 20 steps the window ends before the minimum: its lowest point is not marked
    assert figures.descent_layout(f, start=(4.0, 0.0), lr=0.02, steps=20).minimum is None
    figure = figures.descent_figure(f, start=(4.0, 0.0), lr=0.02, steps=100, names=("u", "v"))
    _check_latex(figure.latex)
    _svg(figure)
    assert figure.caption.startswith("Gradient descent on $f(u, v)$ from $(4, 0)$")


def test_marching_squares_draws_a_circle() -> None:
    n = 60
    t = np.linspace(-2.0, 2.0, n + 1)
    a, b = np.meshgrid(t, t)
    lines = figures.marching_squares(a**2 + b**2, 1.0)
    assert len(lines) == 1
    line = lines[0]
    assert line[0] == line[-1]  # closed
    radii = [math.hypot(-2 + 4 * i / n, -2 + 4 * j / n) for i, j in line]
    assert max(abs(r - 1) for r in radii) < 0.01
    assert len(line) > 40


def test_contours_stay_within_the_dot_budget() -> None:
    layout = figures.descent_layout(lambda a, b: np.sin(5 * a) * np.cos(5 * b), start=(0.3, 0.2))
    polylines = [figures.Polyline(line) for line in layout.contours if len(line) > 1]
    assert figures.dot_count(polylines) <= figures.CONTOUR_DOTS


def test_descent_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="steps"):
        figures.descent_layout(steps=0)
    with pytest.raises(ValueError, match="lr"):
        figures.descent_layout(lr=-1.0)
    with pytest.raises(ValueError, match="window"):
        figures.descent_layout(window=(1.0, 0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="levels"):
        figures.descent_layout(levels=list(range(1, figures.MAX_LEVELS + 2)))


# --- labels ----------------------------------------------------------------------------------


def test_labels_become_svg_text() -> None:
    svg = figures.to_svg([figures.Text(0.0, 0.0, "$a^{(1)}_{2} - \\hat y$", "", "small")], "t")
    text = ET.fromstring(svg.encode("utf-8")).find(f"{SVG}g/{SVG}text")
    assert "".join(text.itertext()) == "a(1)2 \u2212 \u0177"
    spans = list(text.iter(f"{SVG}tspan"))
    assert [s.get("font-style") for s in spans if s.text in ("a", "\u0177")] == ["italic"] * 2
    assert spans[1].get("dy") and spans[1].get("font-size")  # the superscript, raised
    assert spans[2].get("dx", "").startswith("-")  # the subscript, under it


def test_unary_minus_has_no_spaces() -> None:
    svg = figures.to_svg([figures.Text(0.0, 0.0, "$-2$", "", "small")], "t")
    assert ">\u22122<" in svg


def test_a_label_the_svg_cannot_show_is_refused() -> None:
    with pytest.raises(ValueError, match="frac"):
        figures.to_svg([figures.Text(0.0, 0.0, "$\\frac{1}{2}$")], "t")
    with pytest.raises(ValueError, match="unclosed"):
        figures.to_latex([figures.Text(0.0, 0.0, "$x")])


def test_latex_refuses_what_the_picture_environment_cannot_draw() -> None:
    with pytest.raises(ValueError, match="open circle"):
        figures.to_latex([figures.Circle(0.0, 0.0, 13.0)])
    with pytest.raises(ValueError, match="fills circles"):
        figures.to_latex([figures.Circle(0.0, 0.0, 20.0, filled=True)])
    with pytest.raises(ValueError, match="horizontal or vertical"):
        figures.to_latex([figures.Arrow(0.0, 0.0, 1.0, 1.0)])


def test_numbers_have_a_fixed_format() -> None:
    assert figures._n(2.4000000000000004) == "2.4"
    assert figures._n(-0.001) == "0"
    assert figures._n(12.0) == "12"
    assert figures._float_text(2.4000000000000004) == "2.4"
    assert figures._float_text(1e-5) == "1\\times 10^{-5}"


# --- random specs ----------------------------------------------------------------------------


def _random_specs(rng: random.Random, count: int) -> list[NetworkSpec]:
    names = sorted(ACTIVATIONS)
    specs = []
    for n in range(count):
        layers: list[dict] = []
        inputs = width = rng.randint(1, 16)
        for _ in range(rng.randint(1, 6)):
            kind = rng.choice(["dense"] * 4 + ["residual", "layer_norm", "dropout", "rms_norm"])
            if kind == "dense":
                width = rng.randint(1, 16)
                act = rng.choice([a for a in names if a != "softmax"])
                layers.append({"units": width, "activation": act})
            elif kind == "residual":
                layers.append({"kind": "residual", "block": [_dense(width, "tanh")]})
            elif kind == "dropout":
                layers.append({"kind": "dropout", "rate": 0.25})
            else:
                layers.append({"kind": kind})
        layers.append({"units": rng.randint(1, 16), "activation": rng.choice(names)})
        loss = "cross_entropy" if layers[-1]["activation"] == "softmax" else "mse"
        specs.append(from_dict({"name": f"r{n}", "inputs": inputs, "loss": loss, "layers": layers}))
    return specs


def test_random_specs_fit_and_parse() -> None:
    for spec in _random_specs(random.Random(1), 40):
        for figure in (figures.network_figure(spec), figures.big_picture_figure(spec)):
            _check_latex(figure.latex)
            _check_caption(figure.caption)
            _svg(figure)


# --- the image kinds' figures ---------------------------------------------------------------


def test_the_conv_figures_use_the_picture_environment_only() -> None:
    for figure in (figures.convolution_figure(), figures.pooling_figure()):
        _check_latex(figure.latex.replace("\\star", "").replace("\\cdot", ""))
        assert set(re.findall(r"\\([A-Za-z]+)", figure.latex)) - ALLOWED <= {"star", "cdot"}
        root = _svg(figure)
        assert root.find(f"{SVG}title") is not None


def test_the_conv_figures_show_the_worked_numbers() -> None:
    conv = figures.convolution_figure()
    # the output of the worked example, and the sum of its framed window
    assert "z_{12} = 1\\cdot 2 + 0\\cdot 0 + (-1)\\cdot 1 + 2\\cdot 3 = 7" in conv.latex
    for value in (3, 7, 1, 4):
        assert f"{{\\small ${value}$}}" in conv.latex
    assert conv.svg.count('class="window"') == 4  # the input's window and the output cell
    pool = figures.pooling_figure()
    assert pool.svg.count('class="max"') == 4  # one circled maximum per window
    for text in ("2.5", "2.25", "1.75"):  # the averages
        assert f"${text}$" in pool.latex
    windows = figures.pool_windows(figures.POOL_INPUT)
    assert [max(c[0] for c in cells) for _, _, cells in windows] == [4, 5, 6, 3]


@pytest.mark.slow
@needs_pdflatex
def test_the_conv_figures_compile_cleanly(tmp_path) -> None:  # noqa: ANN001
    log, text = _compile(
        _document([figures.convolution_figure(), figures.pooling_figure()]), tmp_path
    )
    _clean(log)
    for label in ("input x", "kernel W", "output z", "max pool", "average pool", "slide"):
        assert label in text, label


def test_the_layer_boxes_of_a_conv_net_give_each_kernel_and_output_shape() -> None:
    spec = load_spec("digits_cnn")
    figure = figures.network_figure(spec)
    for text in (
        "x: 1×8×8 image",
        "1: conv 3×3, ReLU → 16×8×8",
        "2: max pool 2×2 → 16×4×4",
        "4: max pool 2×2 → 32×2×2",
        "5: flatten → 128",
        "6: dense 10, softmax",
    ):
        plain = "".join(re.sub(r"<[^>]+>", "", line) for line in figure.svg.splitlines())
        assert text.replace(" ", "") in plain.replace(" ", "").replace("\u2009", ""), text
    assert "a $1 \\times 8 \\times 8$ image input (64 values)" in figure.caption


def test_word_breaks_between_a_labels_runs_survive_every_svg_renderer() -> None:
    # "max sends δ_pq to the circled entry": the space opens the run after the subscript;
    # without xml:space="preserve" some renderers strip it and print "δpqto"
    root = ET.fromstring(figures.pooling_figure().svg)
    texts = [e for e in root.iter() if e.tag.endswith("text")]
    assert texts
    spaced = [e for e in texts if any((t.text or "").startswith(" ") for t in e.iter())]
    assert spaced, "the pooling caption has a run that starts with a space"
    for element in texts:
        assert element.get("{http://www.w3.org/XML/1998/namespace}space") == "preserve"
