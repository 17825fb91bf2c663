"""Figures of the lecture notes, drawn from the spec: each as LaTeX and as SVG.

- ``network_figure(spec)``: the network.  A small stack of dense layers is drawn neuron by
  neuron (inputs on the left, one column of neurons per layer, every connection, each
  layer's activation under its column, and the weights w^{(l)}_{ij} named when there are
  few); any other network as a column of layer boxes, a residual block with its skip
  connection into a "+" node.
- ``big_picture_figure(spec)``: input -> every stage -> prediction -> loss, forward arrows
  above the stages, the errors delta^{(l)} flowing back below them, and the gradients each
  stage with parameters yields.
- ``descent_figure(...)``: gradient descent on a function of two weights: contour lines
  (marching squares over a fixed grid) and the descent path, one unit the same length on
  both axes, so the path is seen to cross the contours at right angles.

A ``Figure`` holds a LaTeX fragment that uses only LaTeX's own ``picture`` environment
(``\\put``, ``\\qbezier`` for lines of any slope, ``\\line`` and ``\\vector`` at axis
slopes only, ``\\circle`` and ``\\circle*`` within their size limits, ``\\makebox``,
``\\framebox``: no package), and a standalone SVG 1.1 document of the same drawing, one
unit a point in both.  Labels are written once, in a small subset of LaTeX, and turned into
SVG text by ``_text_runs`` (an unknown macro is refused, never dropped).  Every figure is
at most ``MAX_WIDTH`` by ``MAX_HEIGHT`` points (14 by 9 cm), its sloped lines hold at most
``MAX_DOTS`` of the dots TeX draws them with (TeX's memory), and its numbers are printed in
a fixed format, so the output is the same on every machine.  Nothing here writes a file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np

from symbackprop.spec import FlatLayer, NetworkSpec, layer_parameters

MAX_WIDTH = 398.0  # points: 14 cm
MAX_HEIGHT = 256.0  # points: 9 cm
MARGIN = 2.0  # points of white around the drawing's bounding box


# The figures of every derivation document, by name: the Markdown's SVG files are
# <stem>-<name>.svg.
FIGURES = ("network", "descent", "big-picture")


@dataclass(frozen=True)
class Figure:
    """One figure: a file stem, a one-sentence caption (``$...$`` math valid in LaTeX and
    KaTeX), the LaTeX ``picture`` fragment and the standalone SVG document."""

    name: str
    caption: str
    latex: str
    svg: str


# --- labels: a subset of LaTeX, and its SVG text ------------------------------------------

SIZES = {"scriptsize": 7.0, "footnotesize": 8.0, "small": 9.0, "normalsize": 10.0}
SCRIPT = 0.7  # a sub- or superscript's size, relative to its base

# LaTeX macros a label may use, and their characters
_SYMBOLS = {
    "delta": "\u03b4",
    "ell": "\u2113",
    "partial": "\u2202",
    "gamma": "\u03b3",
    "beta": "\u03b2",
    "eta": "\u03b7",
    "sigma": "\u03c3",
    "mu": "\u03bc",
    "nabla": "\u2207",
    "top": "\u22a4",
    "cdots": "\u22ef",
    "ldots": "\u2026",
    "vdots": "\u22ee",
    "in": "\u2208",
    "times": "\u00d7",
    "cdot": "\u22c5",
    "star": "\u22c6",
    "to": "\u2192",
    "odot": "\u2299",
    "quad": "\u2003",
    ",": "\u2009",
    "_": "_",
    "%": "%",
    "&": "&",
    "#": "#",
}
_ACCENTS = {("hat", "y"): "\u0177", ("hat", "x"): "x\u0302"}
_FONTS = ("mathbb", "mathrm", "operatorname", "text")
_BLACKBOARD = {"R": "\u211d"}
_GREEK = frozenset("\u03b4\u2113\u03b3\u03b2\u03b7\u03c3\u03bc")
# em widths, generous (a serif SVG font is wider than Computer Modern): boxes are sized
# from these, so the text fits in both renderings
_WIDE = {"m": 0.95, "w": 0.86, "M": 0.9, "W": 1.0, "\u2003": 1.0, "\u22ef": 1.0}
_NARROW = {
    **dict.fromkeys("ijl.,", 0.32),
    **dict.fromkeys(":;/|' ", 0.34),
    **dict.fromkeys("()[]", 0.39),
    "f": 0.37,
    "t": 0.4,
    "r": 0.48,
    "s": 0.51,
    "\u2009": 0.2,
    "\u2113": 0.42,
}
_MATH_SPACE = {"+": 0.44, "\u2212": 0.44, "=": 0.56, "\u2208": 0.56, "\u2192": 0.56, ",": 0.17}


@dataclass(frozen=True)
class Run:
    """A piece of a label in one style: ``level`` 0 base, 1 superscript, -1 subscript;
    ``back`` is how far (em of the base) it starts left of the previous run's end."""

    text: str
    italic: bool = False
    level: int = 0
    back: float = 0.0


def _char_width(c: str) -> float:
    if c in _WIDE:
        return _WIDE[c]
    if c in _NARROW:
        return _NARROW[c]
    if c.isdigit():
        return 0.64
    if c.isupper():
        return 0.74
    if c in "+=\u2212\u2208\u2192\u00d7\u2299":
        return 0.84
    return 0.62


def _run_width(run: Run) -> float:
    scale = SCRIPT if run.level else 1.0
    return scale * sum(_char_width(c) for c in run.text)


def _argument(tex: str, i: int) -> tuple[str, int]:
    """The group or single character at ``tex[i]`` (spaces skipped, as TeX does) and the
    index after it."""
    while i < len(tex) and tex[i] == " ":
        i += 1
    if i >= len(tex):
        raise ValueError(f"label {tex!r}: a script or macro lacks its argument")
    if tex[i] != "{":
        if tex[i] == "\\":
            name = re.match(r"\\([A-Za-z]+|.)", tex[i:])
            if name is None:  # pragma: no cover - the pattern matches any "\" + character
                raise ValueError(f"label {tex!r}: a lone backslash")
            return name.group(0), i + len(name.group(0))
        return tex[i], i + 1
    depth = 0
    for j in range(i, len(tex)):
        depth += {"{": 1, "}": -1}.get(tex[j], 0)
        if depth == 0:
            return tex[i + 1 : j], j + 1
    raise ValueError(f"label {tex!r}: an unclosed brace")


def _math_runs(tex: str, level: int = 0) -> list[Run]:
    """Runs of math-mode ``tex``: letters italic, scripts one level up or down."""
    runs: list[Run] = []
    i = 0
    last_sup: list[Run] | None = None  # the superscript just written, for a stacked subscript
    while i < len(tex):
        c = tex[i]
        if c in "^_":
            if level:
                raise ValueError(f"label {tex!r}: a script inside a script")
            body, i = _argument(tex, i + 1)
            script = _math_runs(body, 1 if c == "^" else -1)
            back = 0.0
            if c == "_" and last_sup is not None:
                back = sum(_run_width(r) for r in last_sup)
            if back and script:
                script[0] = Run(script[0].text, script[0].italic, script[0].level, back)
            runs += script
            last_sup = script if c == "^" else None
            continue
        last_sup = None
        if c == "\\":
            run, i = _macro(tex, i, level)
            runs.append(run)
            continue
        if c == "{":
            body, i = _argument(tex, i)
            runs += _math_runs(body, level)
            continue
        i += 1
        if c == " ":
            continue
        if c == "-":
            c = "\u2212"
        operand = bool(runs) and runs[-1].text[-1:] not in "(,[=+\u2212 \u2009\u2208\u2192"
        if level == 0 and c in _MATH_SPACE and (operand or c == ","):
            pad = "\u2009" if _MATH_SPACE[c] < 0.3 else " "
            c = c + pad if c == "," else pad + c + pad
        runs.append(Run(c, c.isalpha() and c.isascii(), level))
    return runs


def _macro(tex: str, i: int, level: int) -> tuple[Run, int]:
    """The run of the macro at ``tex[i]`` (a backslash) and the index after it."""
    name = re.match(r"\\([A-Za-z]+|.)", tex[i:])
    if name is None:
        raise ValueError(f"label {tex!r}: a lone backslash")
    macro, i = name.group(1), i + len(name.group(0))
    if macro == "hat":
        body, i = _argument(tex, i)
        if ("hat", body) not in _ACCENTS:
            raise ValueError(f"label {tex!r}: no SVG form for \\hat{{{body}}}")
        return Run(_ACCENTS["hat", body], True, level), i
    if macro in _FONTS:
        body, i = _argument(tex, i)
        text = "".join(_BLACKBOARD.get(ch, ch) for ch in body) if macro == "mathbb" else body
        return Run(text, False, level), i
    if macro in _SYMBOLS:
        symbol = _SYMBOLS[macro]
        return Run(symbol, symbol in _GREEK, level), i
    raise ValueError(f"label {tex!r}: the macro \\{macro} has no SVG form")


def _text_runs(tex: str) -> list[Run]:
    """Runs of a label: text mode outside ``$...$``, math inside."""
    runs: list[Run] = []
    for k, part in enumerate(tex.split("$")):
        if k % 2:
            runs += _math_runs(part)
            continue
        part = part.replace("--", "\u2013").replace("~", "\u00a0")
        for token in re.split(r"(\\[A-Za-z]+\s?|\\.)", part):
            if not token:
                continue
            if token.startswith("\\"):
                name = token[1:].strip()
                if name not in _SYMBOLS:
                    raise ValueError(f"label {tex!r}: the macro \\{name} has no SVG form")
                runs.append(Run(_SYMBOLS[name]))
            else:
                runs.append(Run(token))
    if len(tex.split("$")) % 2 == 0:
        raise ValueError(f"label {tex!r}: an unclosed $")
    merged: list[Run] = []
    for run in runs:  # one run per style: fewer tspans
        last = merged[-1] if merged else None
        if last and (last.italic, last.level) == (run.italic, run.level) and not run.back:
            merged[-1] = Run(last.text + run.text, last.italic, last.level, last.back)
        else:
            merged.append(run)
    return merged


def label_width(tex: str, size: str) -> float:
    """An upper estimate of the label's width in points."""
    em = SIZES[size]
    return em * sum(_run_width(r) - r.back for r in _text_runs(tex))


def _has(tex: str, level: int) -> bool:
    return any(r.level == level for r in _text_runs(tex))


# --- drawing primitives --------------------------------------------------------------------


def _n(value: float) -> str:
    """A coordinate in a fixed format: two decimals at most, no trailing zeros, no -0."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True)
class Line:
    """A straight line of any slope; ``thick`` for the emphasized ones."""

    x1: float
    y1: float
    x2: float
    y2: float
    thick: bool = False


@dataclass(frozen=True)
class Polyline:
    points: tuple[tuple[float, float], ...]
    thick: bool = False
    kind: str = "path"  # the SVG class


@dataclass(frozen=True)
class Arrow:
    """A line from (x1, y1) to (x2, y2) with its head at the end; horizontal or vertical."""

    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class Circle:
    x: float
    y: float
    diameter: float
    filled: bool = False
    kind: str = "dot"


@dataclass(frozen=True)
class Box:
    """A frame with its lower left corner at (x, y)."""

    x: float
    y: float
    width: float
    height: float
    kind: str = "box"


@dataclass(frozen=True)
class Text:
    """A label at (x, y); ``pos`` is LaTeX's \\makebox position: "" centred, or letters of
    "lrtb" for the side of the text at the point."""

    x: float
    y: float
    tex: str
    pos: str = ""
    size: str = "small"


Item = Line | Polyline | Arrow | Circle | Box | Text

# LaTeX draws open circles of these diameters only (lcircle10), filled ones up to 15 pt
CIRCLE_SIZES = (4, 8, 12, 16, 20, 24, 28, 32, 36, 40)
MAX_DOT = 15.0
THIN, THICK = 0.4, 0.8  # points: LaTeX's \\thinlines and \\thicklines
# TeX's default main memory (5,000,000 words) holds about 58,000 dots in one picture
MAX_DOTS = 20_000
DOT_SPACING = 1.0  # \\qbezier's dots, in line widths
ARROW_LENGTH = 4.5  # the SVG head, drawn like LaTeX's thin arrow head
ARROW_HALF_WIDTH = 1.6


def _text_box(item: Text) -> tuple[float, float, float, float]:
    """The label's extent (x0, y0, x1, y1), generously."""
    em = SIZES[item.size]
    width = label_width(item.tex, item.size)
    up = em * (0.75 + (0.3 if _has(item.tex, 1) else 0.0))
    down = em * (0.25 + (0.15 if _has(item.tex, -1) else 0.0))
    if "l" in item.pos:
        x0 = item.x
    elif "r" in item.pos:
        x0 = item.x - width
    else:
        x0 = item.x - width / 2
    if "b" in item.pos:
        y0 = item.y
    elif "t" in item.pos:
        y0 = item.y - up - down
    else:
        y0 = item.y - (up + down) / 2
    return x0, y0, x0 + width, y0 + up + down


def _extent(item: Item) -> tuple[float, float, float, float]:
    if isinstance(item, (Line, Arrow)):
        pad = ARROW_HALF_WIDTH if isinstance(item, Arrow) else 0.5
        xs, ys = (item.x1, item.x2), (item.y1, item.y2)
        return min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad
    if isinstance(item, Polyline):
        xs = [p[0] for p in item.points]
        ys = [p[1] for p in item.points]
        return min(xs) - 1, min(ys) - 1, max(xs) + 1, max(ys) + 1
    if isinstance(item, Circle):
        r = item.diameter / 2 + 0.5
        return item.x - r, item.y - r, item.x + r, item.y + r
    if isinstance(item, Box):
        return item.x - 0.5, item.y - 0.5, item.x + item.width + 0.5, item.y + item.height + 0.5
    return _text_box(item)


def bounds(items: Sequence[Item]) -> tuple[float, float, float, float]:
    """The drawing's extent with ``MARGIN`` around it."""
    boxes = [_extent(item) for item in items]
    return (
        min(b[0] for b in boxes) - MARGIN,
        min(b[1] for b in boxes) - MARGIN,
        max(b[2] for b in boxes) + MARGIN,
        max(b[3] for b in boxes) + MARGIN,
    )


def _axis_direction(dx: float, dy: float, what: str) -> tuple[int, int, float]:
    if abs(dx) > 1e-9 and abs(dy) > 1e-9:
        raise ValueError(f"{what} must be horizontal or vertical, got ({dx}, {dy})")
    if abs(dx) > 1e-9:
        return (1 if dx > 0 else -1), 0, abs(dx)
    return 0, (1 if dy > 0 else -1), abs(dy)


def _dots(x1: float, y1: float, x2: float, y2: float, thick: bool = False) -> int:
    """How many dots LaTeX draws for a line: 0 for a rule (horizontal or vertical)."""
    dx, dy = x2 - x1, y2 - y1
    if abs(dx) < 1e-9 or abs(dy) < 1e-9:
        return 0
    return max(2, math.ceil(math.hypot(dx, dy) / (DOT_SPACING * (THICK if thick else THIN))))


def dot_count(items: Sequence[Item]) -> int:
    """The dots of every sloped line: TeX holds them all in memory until the page is out."""
    total = 0
    for item in items:
        if isinstance(item, Line):
            total += _dots(item.x1, item.y1, item.x2, item.y2, item.thick)
        elif isinstance(item, Polyline):
            pts = item.points
            total += sum(_dots(*pts[k], *pts[k + 1], item.thick) for k in range(len(pts) - 1))
    return total


def _latex_line(x1: float, y1: float, x2: float, y2: float, thick: bool = False) -> str:
    dots = _dots(x1, y1, x2, y2, thick)
    if dots == 0:  # a rule: crisper than a row of dots
        ux, uy, length = _axis_direction(x2 - x1, y2 - y1, "a line")
        return f"\\put({_n(x1)},{_n(y1)}){{\\line({ux},{uy}){{{_n(length)}}}}}"
    # \qbezier draws dots a quarter of the line's width apart unless told how many;
    # DOT_SPACING widths apart they still touch, at a quarter of TeX's memory
    xm, ym = (x1 + x2) / 2, (y1 + y2) / 2
    return f"\\qbezier[{dots}]({_n(x1)},{_n(y1)})({_n(xm)},{_n(ym)})({_n(x2)},{_n(y2)})"


def _latex_item(item: Item) -> list[str]:
    if isinstance(item, Line):
        return [_latex_line(item.x1, item.y1, item.x2, item.y2, item.thick)]
    if isinstance(item, Polyline):
        pts = item.points
        return [_latex_line(*pts[k], *pts[k + 1], item.thick) for k in range(len(pts) - 1)]
    if isinstance(item, Arrow):
        ux, uy, length = _axis_direction(item.x2 - item.x1, item.y2 - item.y1, "an arrow")
        return [f"\\put({_n(item.x1)},{_n(item.y1)}){{\\vector({ux},{uy}){{{_n(length)}}}}}"]
    if isinstance(item, Circle):
        star = "*" if item.filled else ""
        return [f"\\put({_n(item.x)},{_n(item.y)}){{\\circle{star}{{{_n(item.diameter)}}}}}"]
    if isinstance(item, Box):
        size = f"({_n(item.width)},{_n(item.height)})"
        return [f"\\put({_n(item.x)},{_n(item.y)}){{\\framebox{size}{{}}}}"]
    pos = f"[{item.pos}]" if item.pos else ""
    return [f"\\put({_n(item.x)},{_n(item.y)}){{\\makebox(0,0){pos}{{\\{item.size} {item.tex}}}}}"]


def _check(item: Item) -> None:
    if isinstance(item, Circle):
        if item.filled and item.diameter > MAX_DOT:
            raise ValueError(f"LaTeX fills circles of at most {MAX_DOT} pt, not {item.diameter}")
        if not item.filled and item.diameter not in CIRCLE_SIZES:
            raise ValueError(f"LaTeX draws no open circle of {item.diameter} pt")
    if isinstance(item, Text):
        _text_runs(item.tex)  # a label the SVG cannot show is refused here


def to_latex(items: Sequence[Item]) -> str:
    """The picture: ``\\setlength{\\unitlength}{1pt}\\begin{picture}...\\end{picture}``."""
    dots = dot_count(items)
    if dots > MAX_DOTS:
        raise ValueError(f"the picture has {dots} dots of sloped lines, at most {MAX_DOTS}")
    x0, y0, x1, y1 = bounds(items)
    lines = [
        "\\setlength{\\unitlength}{1pt}%",
        f"\\begin{{picture}}({_n(x1 - x0)},{_n(y1 - y0)})({_n(x0)},{_n(y0)})",
    ]
    thick = False
    for item in items:
        _check(item)
        wants = bool(getattr(item, "thick", False))
        if wants != thick:
            lines.append("\\thicklines" if wants else "\\thinlines")
            thick = wants
        lines += _latex_item(item)
    lines.append("\\end{picture}")
    return "\n".join(lines) + "\n"


def _svg_text(item: Text, flip: Callable[[float], float]) -> str:
    em = SIZES[item.size]
    _, y0, _, _ = _text_box(item)
    down = em * (0.25 + (0.15 if _has(item.tex, -1) else 0.0))
    baseline = flip(y0 + down)
    anchor = "start" if "l" in item.pos else "end" if "r" in item.pos else "middle"
    parts: list[str] = []
    shift = 0.0  # the current baseline offset, points up
    for run in _text_runs(item.tex):
        want = {0: 0.0, 1: 0.36 * em, -1: -0.24 * em}[run.level]
        attrs = []
        if run.back:
            attrs.append(f'dx="{_n(-run.back * em)}"')
        if want != shift:
            attrs.append(f'dy="{_n(shift - want)}"')
            shift = want
        if run.level:
            attrs.append(f'font-size="{_n(em * SCRIPT)}"')
        if run.italic:
            attrs.append('font-style="italic"')
        body = escape(run.text)
        parts.append(f"<tspan {' '.join(attrs)}>{body}</tspan>" if attrs else body)
    return (
        f'<text x="{_n(item.x)}" y="{_n(baseline)}" font-size="{_n(em)}" '
        f'text-anchor="{anchor}" stroke="none" xml:space="preserve">{"".join(parts)}</text>'
    )  # preserve: a run's leading space ("δ_pq to ...") is a word break in every renderer


def _svg_item(item: Item, flip: Callable[[float], float]) -> str:
    if isinstance(item, Line):
        width = "0.8" if item.thick else "0.4"
        return (
            f'<line x1="{_n(item.x1)}" y1="{_n(flip(item.y1))}" x2="{_n(item.x2)}" '
            f'y2="{_n(flip(item.y2))}" stroke-width="{width}"/>'
        )
    if isinstance(item, Polyline):
        width = "0.8" if item.thick else "0.4"
        points = " ".join(f"{_n(x)},{_n(flip(y))}" for x, y in item.points)
        return (
            f'<polyline class="{item.kind}" points="{points}" fill="none" stroke-width="{width}"/>'
        )
    if isinstance(item, Arrow):
        ux, uy, length = _axis_direction(item.x2 - item.x1, item.y2 - item.y1, "an arrow")
        bx, by = item.x2 - ux * ARROW_LENGTH, item.y2 - uy * ARROW_LENGTH
        px, py = -uy * ARROW_HALF_WIDTH, ux * ARROW_HALF_WIDTH
        head = " ".join(
            f"{_n(x)},{_n(flip(y))}"
            for x, y in ((item.x2, item.y2), (bx + px, by + py), (bx - px, by - py))
        )
        return (
            f'<g class="arrow"><line x1="{_n(item.x1)}" y1="{_n(flip(item.y1))}" '
            f'x2="{_n(bx)}" y2="{_n(flip(by))}" stroke-width="0.4"/>'
            f'<polygon points="{head}" fill="black" stroke="none"/></g>'
        )
    if isinstance(item, Circle):
        fill = 'fill="black" stroke="none"' if item.filled else 'fill="none" stroke-width="0.4"'
        return (
            f'<circle class="{item.kind}" cx="{_n(item.x)}" cy="{_n(flip(item.y))}" '
            f'r="{_n(item.diameter / 2)}" {fill}/>'
        )
    if isinstance(item, Box):
        return (
            f'<rect class="{item.kind}" x="{_n(item.x)}" y="{_n(flip(item.y + item.height))}" '
            f'width="{_n(item.width)}" height="{_n(item.height)}" fill="none" '
            'stroke-width="0.4"/>'
        )
    return _svg_text(item, flip)


def to_svg(items: Sequence[Item], title: str) -> str:
    """A standalone SVG 1.1 document of the drawing, one user unit a point."""
    x0, y0, x1, y1 = bounds(items)
    width, height = x1 - x0, y1 - y0

    def flip(y: float) -> float:
        return y1 - y + y0  # SVG's y grows downwards; the viewBox keeps the picture's origin

    body = []
    for item in items:
        _check(item)
        body.append(_svg_item(item, flip))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<svg xmlns="http://www.w3.org/2000/svg" version="1.1" '
        f'width="{_n(width)}pt" height="{_n(height)}pt" '
        f'viewBox="{_n(x0)} {_n(y0)} {_n(width)} {_n(height)}">\n'
        f"<title>{escape(title)}</title>\n"
        '<g stroke="black" stroke-linecap="round" font-family="serif" fill="black">\n'
        + "\n".join(body)
        + "\n</g>\n</svg>\n"
    )


# --- names ---------------------------------------------------------------------------------

_KIND_NAMES = {
    "layer_norm": "layer norm",
    "batch_norm": "batch norm",
    "rms_norm": "RMS norm",
    "dropout": "dropout",
    "residual": "residual",
}
_KIND_SHORT = {"layer_norm": "LN", "batch_norm": "BN", "rms_norm": "RMS", "dropout": "drop"}
_PARAMETER_SYMBOLS = {"W": "W", "b": "b", "gamma": "\\gamma", "beta": "\\beta"}
NAME_WIDTH = 34.0  # points at \scriptsize: a longer activation name is written f_l in a figure
WIDE_NAME = 46.0  # the same, where the figure has room (LeakyReLU)


def _escape(text: str) -> str:
    """A spec name (an identifier) in LaTeX text mode."""
    return text.replace("_", "\\_")


def activation_name(layer: FlatLayer) -> str:
    """The activation as the text names it: the registry's operator name (ReLU, softmax),
    else the spec's name (sigmoid, tanh, identity, a custom name)."""
    from symbackprop.functions import ACTIVATIONS

    spec = layer.layer.activation
    entry = ACTIVATIONS.get(spec.name)
    match = (
        re.match(r"\\operatorname\{(\w+)\}", entry.latex) if entry and not spec.is_custom else None
    )
    return _escape(match.group(1) if match else spec.name)


def _short_activation(layer: FlatLayer, width: float = NAME_WIDTH) -> str:
    name = activation_name(layer)
    if label_width(name, "scriptsize") > width:
        return f"$f_{{{layer.index}}}$"
    return name


def _float_text(value: float) -> str:
    """A number as the figures print it: at most 4 significant digits, never an exponent
    below 1e-3 or past 1e5 (written as a power of ten in math mode)."""
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        text = f"{value:.4g}"
        if "e" in text:
            text = f"{value:.0f}"
        return "0" if text == "-0" else text
    mantissa, exponent = f"{value:.3e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}\\times 10^{{{int(exponent)}}}"


def _words(items: Sequence[str]) -> str:
    """a, b and c."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# --- the network ---------------------------------------------------------------------------

NEURON = 24.0  # a neuron's diameter (one of CIRCLE_SIZES)
STEP = 66.0  # vertical distance of neurons, at most
SMALL_WIDTH = 8  # neuron by neuron when the inputs and every layer have at most this many
LABELLED_WEIGHTS = 30  # every weight named up to this many
MAX_ROWS = 10  # layer boxes in a column, the input's included; more are elided in the middle


def network_figure(spec: NetworkSpec) -> Figure:
    """The network: neuron by neuron when small and plain, else one box per layer."""
    drawn = _neuron_diagram(spec) if _small(spec) else None
    if drawn is None:
        items, caption = _layer_boxes(spec)
    else:
        items, caption = drawn
    return Figure("network", caption, to_latex(items), to_svg(items, f"the network {spec.name}"))


def _small(spec: NetworkSpec) -> bool:
    return spec.plain and max(spec.sizes) <= SMALL_WIDTH


def _neuron_diagram(spec: NetworkSpec) -> tuple[list[Item], str] | None:
    """Columns of neurons, or None when the columns do not fit the width."""
    sizes = spec.sizes
    layers = list(spec.flat)
    acts = [activation_name(layer) for layer in layers]
    heads = ["input", *(f"layer {layer.index}" for layer in layers)]
    feet = ["", *acts]
    widest = max(label_width(t, "footnotesize") for t in (*heads, *feet))
    right = 8.0 + 16.0 + 4.0 + label_width("$\\hat y_{8}$", "small")  # the output arrows
    pitch = min(120.0, (MAX_WIDTH - 2 * MARGIN - NEURON - right) / (len(sizes) - 1))
    if pitch < max(widest + 8.0, NEURON + 18.0):
        return None
    rows = max(sizes)
    step = min(STEP, (MAX_HEIGHT - 2 * MARGIN - 40.0) / rows)
    r = NEURON / 2

    def centre(column: int, i: int) -> tuple[float, float]:
        return column * pitch, ((sizes[column] + 1) / 2 - i) * step

    items: list[Item] = []
    top = (rows - 1) * step / 2 + NEURON / 2 + 6.0
    bottom = -(rows - 1) * step / 2 - NEURON / 2 - 5.0
    for column, n in enumerate(sizes):
        x = column * pitch
        items.append(Text(x, top, heads[column], "b", "footnotesize"))
        if feet[column]:
            items.append(Text(x, bottom, feet[column], "t", "footnotesize"))
        for i in range(1, n + 1):
            cx, cy = centre(column, i)
            name = f"$x_{{{i}}}$" if column == 0 else f"$a^{{({column})}}_{{{i}}}$"
            kind = "input" if column == 0 else "neuron"
            items += [Circle(cx, cy, NEURON, kind=kind), Text(cx, cy, name, "", "footnotesize")]
    edges: list[tuple[int, int, int]] = []
    for column in range(1, len(sizes)):
        for i in range(1, sizes[column] + 1):
            for j in range(1, sizes[column - 1] + 1):
                (x1, y1), (x2, y2) = centre(column - 1, j), centre(column, i)
                length = math.hypot(x2 - x1, y2 - y1)
                ux, uy = (x2 - x1) / length, (y2 - y1) / length
                items.append(Line(x1 + r * ux, y1 + r * uy, x2 - r * ux, y2 - r * uy))
                edges.append((column, i, j))
    last = len(sizes) - 1
    for i in range(1, sizes[last] + 1):
        cx, cy = centre(last, i)
        items.append(Arrow(cx + r + 2.0, cy, cx + r + 18.0, cy))
        items.append(Text(cx + r + 21.0, cy, f"$\\hat y_{{{i}}}$", "l", "small"))
    if dot_count(items) > MAX_DOTS:
        return None  # too many connections for TeX's memory: the layer boxes instead
    labels, which = _weight_labels(edges, centre, pitch)
    items += labels
    return items, _neuron_caption(sizes, acts, which)


def _neuron_caption(sizes: Sequence[int], acts: Sequence[str], which: str) -> str:
    neurons = "neuron" if tuple(sizes[1:]) == (1,) else "neurons"
    return (
        f"The network: {sizes[0]} input{'s' if sizes[0] > 1 else ''} and "
        f"{'a dense layer' if len(sizes) == 2 else 'dense layers'} of "
        f"{_words([str(n) for n in sizes[1:]])} {neurons}"
        f" ({_words(list(acts))}); the weight $w^{{(l)}}_{{ij}}$ connects neuron $j$ of layer "
        "$l-1$ to neuron $i$ of layer $l$"
        + {
            "all": ", and every weight is named on its connection.",
            "first": ", named on the connections into the first neuron of each layer.",
            "none": ".",
        }[which]
    )


def _weight_labels(
    edges: Sequence[tuple[int, int, int]],
    centre: Callable[[int, int], tuple[float, float]],
    pitch: float,
) -> tuple[list[Text], str]:
    """Labels w^{(l)}_{ij} near the receiving neuron: all of them when each finds a place
    that no other label, connection or neuron touches, else those into each layer's first
    neuron, else none."""
    segments = [(*centre(c - 1, j), *centre(c, i)) for c, i, j in edges]
    first = [e for e in edges if e[1] == 1]
    tries = [  # above its connection; for the first neurons' alone, else below it
        ("all", list(edges), (1.0,)),
        ("first", first, (1.0,)),
        ("first", first, (1.0, -1.0)),
    ]
    for which, chosen, sides in tries:
        if which == "all" and len(chosen) > LABELLED_WEIGHTS:
            continue
        placed = _place_weights(chosen, centre, pitch, segments, sides)
        if placed is not None:
            return placed, which
    return [], "none"


LABEL_GAP = 1.5  # points between two weight labels, at least
WEIGHT_PLACES = (0.2, 0.25, 0.3, 0.35, 0.4, 0.46)  # from the receiver, in pitches


def _place_weights(
    edges: Sequence[tuple[int, int, int]],
    centre: Callable[[int, int], tuple[float, float]],
    pitch: float,
    segments: Sequence[tuple[float, float, float, float]],
    sides: Sequence[float],
) -> list[Text] | None:
    texts: list[Text] = []
    boxes: list[tuple[float, float, float, float]] = []
    neurons = {centre(c, i) for c, i, _ in edges} | {centre(c - 1, j) for c, _, j in edges}
    for column, i, j in edges:
        (x1, y1), (x2, y2) = centre(column - 1, j), centre(column, i)
        own = (x1, y1, x2, y2)
        slope = (y2 - y1) / (x2 - x1)
        tex = f"$w^{{({column})}}_{{{i}{j}}}$"
        half = label_width(tex, "scriptsize") / 2
        for place, side in ((p, s) for p in WEIGHT_PLACES for s in sides):
            x = x2 - place * pitch
            y = y2 - place * pitch * slope + side * (1.0 + abs(slope) * half)
            text = Text(x, y, tex, "b" if side > 0 else "t", "scriptsize")
            box = _text_box(text)
            if not (
                any(_overlap(_grow(box, LABEL_GAP), other) for other in boxes)
                or any(_crosses(box, seg) for seg in segments if seg != own)
                or any(_near(box, n, NEURON / 2 + 1.0) for n in neurons)
            ):
                texts.append(text)
                boxes.append(box)
                break
        else:
            return None
    return texts


def _grow(box: tuple[float, float, float, float], by: float) -> tuple[float, float, float, float]:
    return box[0] - by, box[1] - by, box[2] + by, box[3] + by


def _near(box: tuple[float, float, float, float], point: tuple[float, float], r: float) -> bool:
    """Whether a circle of radius r around point touches the box."""
    dx = max(box[0] - point[0], 0.0, point[0] - box[2])
    dy = max(box[1] - point[1], 0.0, point[1] - box[3])
    return dx * dx + dy * dy < r * r


def _crosses(
    box: tuple[float, float, float, float], seg: tuple[float, float, float, float]
) -> bool:
    """Whether the segment passes through the box (Liang-Barsky)."""
    return _clip(seg, box) is not None


def _clip(
    seg: tuple[float, float, float, float], box: tuple[float, float, float, float]
) -> tuple[float, float, float, float] | None:
    """The part of the segment inside the box, or None."""
    x1, y1, x2, y2 = seg
    dx, dy = x2 - x1, y2 - y1
    low, high = 0.0, 1.0
    for p, q in ((-dx, x1 - box[0]), (dx, box[2] - x1), (-dy, y1 - box[1]), (dy, box[3] - y1)):
        if p == 0:
            if q < 0:
                return None
            continue
        t = q / p
        if p < 0:
            low = max(low, t)
        else:
            high = min(high, t)
        if low > high:
            return None
    return x1 + low * dx, y1 + low * dy, x1 + high * dx, y1 + high * dy


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


BOX_HEIGHT = 15.0
ROW = 30.0  # vertical distance of layer boxes, at most
PLUS = 12.0  # the diameter of a residual's "+" node (one of CIRCLE_SIZES)
SKIP = 10.0  # horizontal distance of nested skip connections


@dataclass(frozen=True)
class _Row:
    """One row of the layer-box column: a box, a residual's "+" or the elided middle."""

    kind: str  # "box", "plus" or "gap"
    tex: str
    layer: int  # 0 for the input and the gap


def _dims(shape: Sequence[int]) -> str:
    """16 x 8 x 8 (math, for a label)."""
    return "$" + " \\times ".join(map(str, shape)) + "$"


def _box_name(layer: FlatLayer) -> str:
    name = activation_name(layer)
    return f"$f_{{{layer.index}}}$" if label_width(name, "small") > 4 * NAME_WIDTH else name


def _box_text(layer: FlatLayer) -> str:
    kind, spec = layer.kind, layer.layer
    if kind == "dense":
        bias = "" if spec.bias else ", no bias"
        return f"{layer.index}: dense {layer.units}, {_box_name(layer)}{bias}"
    if kind == "dropout":
        return f"{layer.index}: dropout {_float_text(spec.rate)}"
    if kind == "conv2d":
        bias = "" if spec.bias else ", no bias"
        return (
            f"{layer.index}: conv {_dims(spec.kernel)}, {_box_name(layer)}{bias} "
            f"$\\to$ {_dims(layer.shape)}"
        )
    if kind in ("max_pool2d", "avg_pool2d"):
        what = "max" if kind == "max_pool2d" else "average"
        return f"{layer.index}: {what} pool {_dims(spec.kernel)} $\\to$ {_dims(layer.shape)}"
    if kind == "flatten":
        return f"{layer.index}: flatten $\\to$ {layer.units}"
    return f"{layer.index}: {_KIND_NAMES.get(kind, _escape(kind))}"


def _input_text(spec: NetworkSpec) -> str:
    if spec.image:
        return f"$x$: {_dims(spec.input_shape)} image"
    return f"$x$: {spec.inputs} input{'s' if spec.inputs > 1 else ''}"


def _block_range(spec: NetworkSpec, residual: FlatLayer) -> tuple[int, int]:
    """The first and last layer numbers of a residual's block (numbered depth first)."""
    inside = [f.index for f in spec.flat if f.path.startswith(f"{residual.path}.block")]
    return inside[0], inside[-1]


def _levels(spec: NetworkSpec) -> dict[int, int]:
    """A residual's nesting height: 1 with no residual in its block, else one more than
    the highest inside (its skip connection goes around theirs)."""
    levels: dict[int, int] = {}
    for layer in reversed(spec.flat):
        if layer.kind == "residual":
            first, last = _block_range(spec, layer)
            inner = [levels[i] for i in range(first, last + 1) if i in levels]
            levels[layer.index] = 1 + max(inner, default=0)
    return levels


def _ranks(spec: NetworkSpec, shown: Sequence[int]) -> dict[int, int]:
    """The nesting heights of the residuals whose skips are drawn, renumbered 1, 2, ... so
    that the drawn ones sit next to each other."""
    levels = _levels(spec)
    order = sorted({levels[r] for r in shown})
    return {r: order.index(levels[r]) + 1 for r in shown}


def _elide(count: int, limit: int) -> tuple[list[int | None], dict[int, int]]:
    """Which of ``count`` rows to show (None for the elided middle) and where each row went."""
    if count <= limit:
        return list(range(count)), {k: k for k in range(count)}
    head = (limit - 1) // 2
    tail = limit - 1 - head
    shown: list[int | None] = [*range(head), None, *range(count - tail, count)]
    where = {
        k: (k if k < head else head if k < count - tail else k - (count - tail) + head + 1)
        for k in range(count)
    }
    return shown, where


def _layer_boxes(spec: NetworkSpec) -> tuple[list[Item], str]:
    """A column of layer boxes in the order of the forward pass, the input on top."""
    flat = spec.flat
    rows = [_Row("box", _input_text(spec), 0)]
    for index in spec.order:
        layer = flat[index - 1]
        if layer.kind == "residual":
            rows.append(_Row("plus", f"{index}: residual", index))
        else:
            rows.append(_Row("box", _box_text(layer), index))
    row_of = {row.layer: k for k, row in enumerate(rows)}
    shown, where = _elide(len(rows), MAX_ROWS)
    gap = shown.index(None) if None in shown else -1
    hidden = [rows[k].layer for k in range(len(rows)) if where[k] == gap]
    drawn = [rows[k] if k is not None else _Row("gap", "$\\vdots$", 0) for k in shown]
    width = max(label_width(r.tex, "small") for r in drawn if r.kind == "box") + 12.0
    items: list[Item] = []
    pitch = min(ROW, (MAX_HEIGHT - 2 * MARGIN - 48.0) / max(len(drawn) - 1, 1))

    def y(k: int) -> float:
        return -k * pitch

    def half(k: int) -> float:
        return {"box": BOX_HEIGHT / 2, "plus": PLUS / 2, "gap": 5.0}[drawn[k].kind]

    for k, row in enumerate(drawn):
        if row.kind == "box":
            items.append(Box(-width / 2, y(k) - BOX_HEIGHT / 2, width, BOX_HEIGHT, "layer"))
            items.append(Text(0.0, y(k), row.tex, "", "small"))
        elif row.kind == "plus":
            items.append(Circle(0.0, y(k), PLUS, kind="plus"))
            items.append(Text(0.0, y(k), "$+$", "", "small"))
            items.append(Text(-PLUS / 2 - 4.0, y(k), row.tex, "r", "small"))
        else:
            items.append(Text(0.0, y(k), row.tex, "", "small"))
            more = f"{len(hidden)} layers"
            items.append(Text(PLUS / 2 + 4.0, y(k), more, "l", "scriptsize"))
        if k and "gap" not in (row.kind, drawn[k - 1].kind):
            items.append(Arrow(0.0, y(k - 1) - half(k - 1), 0.0, y(k) + half(k)))
    last = len(drawn) - 1
    items.append(Arrow(0.0, y(last) - half(last), 0.0, y(last) - half(last) - 12.0))
    items.append(Text(0.0, y(last) - half(last) - 14.0, "$\\hat y$", "t", "small"))
    skips = [  # (residual, source row, "+" row) of each skip drawn
        (layer.index, where[row_of[layer.sources[0]]], where[row_of[layer.index]])
        for layer in flat
        if layer.kind == "residual"
    ]
    skips = [(r, source, plus) for r, source, plus in skips if source != plus]  # not elided
    levels = _ranks(spec, [r for r, _, _ in skips])
    left = max(
        (label_width(r.tex, "small") + PLUS / 2 + 4.0 for r in drawn if r.kind == "plus"),
        default=0.0,
    )
    room = MAX_WIDTH - 2 * MARGIN - 4.0 - width / 2 - max(width / 2, left)
    skip = min(SKIP, room / max(levels.values(), default=1))  # nested ones closer together
    for residual, source, plus in skips:
        x = width / 2 + skip * levels[residual]
        branch = (y(source) - half(source) + y(source + 1) + half(source + 1)) / 2
        end = y(plus)
        tip = PLUS / 2 if drawn[plus].kind == "plus" else 6.0
        items += [
            Circle(0.0, branch, 2.5, filled=True),
            Line(0.0, branch, x, branch),
            Line(x, branch, x, end),
            Arrow(x, end, tip, end),
        ]
    return items, _boxes_caption(spec, hidden)


def _input_caption(spec: NetworkSpec) -> str:
    if spec.image:
        return f"a {_dims(spec.input_shape)} image input ({spec.inputs} values)"
    return f"{spec.inputs} input{'s' if spec.inputs > 1 else ''}"


def _boxes_caption(spec: NetworkSpec, hidden: Sequence[int]) -> str:
    flat = spec.flat
    parts = [
        f"The network, one box per layer in the order of the forward pass: "
        f"{_input_caption(spec)}, {len(flat)} "
        f"layer{'s' if len(flat) > 1 else ''} and {spec.output_layer.units} "
        f"output{'s' if spec.output_layer.units > 1 else ''}"
    ]
    skips = []
    for layer in flat:
        if layer.kind == "residual":
            first, last = _block_range(spec, layer)
            block = f"layer {first}" if first == last else f"layers {first} to {last}"
            skips.append(
                f"the residual layer {layer.index} adds its input to the output of {block}"
            )
    if skips:
        parts.append("; " + "; ".join(skips) + " (the arrow on the right)")
    if hidden:
        parts.append(f"; {len(hidden)} layers in the middle are not shown")
    return "".join(parts) + "."


# --- the big picture -----------------------------------------------------------------------

MAX_STAGES = 7  # stages drawn; more are elided to the first two, "...", the last two
STAGE_HEIGHT = 26.0
FLOW = 6.0  # the forward arrows run this far above the boxes' middle, the backward below
GRADIENT = 30.0  # the length of the arrows down to the gradients
END_BOX = 20.0  # the width of the input's and the loss's boxes
GAP_SLOT = 12.0  # the width of the elided middle
MIN_ARROW, MAX_ARROW = 10.0, 48.0  # the length of the arrows between the boxes
SKIP_RISE = 7.0  # points between nested skip connections, at most
SKIP_ROOM = 120.0  # points of height for all of them


@dataclass(frozen=True)
class _Slot:
    kind: str  # "input", "stage", "gap" or "loss"
    layer: int = 0


def _stage_lines(layer: FlatLayer, name_width: float) -> tuple[str, str]:
    if layer.kind == "dense":
        second = _short_activation(layer, name_width)
    elif layer.kind == "residual":
        second = "$+$"
    else:
        second = _KIND_SHORT.get(layer.kind, _escape(layer.kind))
    return f"layer {layer.index}", second


def _gradients(layer: FlatLayer) -> list[str]:
    out = []
    for key in layer_parameters(layer):
        symbol = _PARAMETER_SYMBOLS[key.rstrip("0123456789")]
        out.append(f"$\\partial\\ell/\\partial {symbol}^{{({layer.index})}}$")
    return out


def big_picture_figure(spec: NetworkSpec) -> Figure:
    """Input -> stages -> prediction -> loss, and the errors back, with the gradients."""
    flat, order = spec.flat, spec.order
    elided = [*order[:2], None, *order[-2:]]
    tries = [  # every stage with the activations' names, then shorter names, then elided
        (stages, width)
        for stages in ([list(order)] if len(order) <= MAX_STAGES else [])
        + ([elided] if len(order) > 4 else [])
        for width in (WIDE_NAME, NAME_WIDTH)
    ]
    for stages, name_width in tries:
        texts = {s: _stage_lines(flat[s - 1], name_width) for s in order}
        layout = _stage_layout(stages, texts)
        if layout is not None:
            break
    else:  # pragma: no cover - names are capped at NAME_WIDTH, so five stages fit
        raise ValueError("the big picture's stages do not fit the width")
    slots, centres, box = layout
    items = _big_picture_items(spec, slots, centres, box, texts)
    items += _skips(spec, slots, stages, centres, STAGE_HEIGHT / 2)
    return Figure(
        "big-picture",
        _big_picture_caption(spec, stages, texts),
        to_latex(items),
        to_svg(items, f"the big picture of backpropagation for {spec.name}"),
    )


def _big_picture_items(
    spec: NetworkSpec,
    slots: Sequence[_Slot],
    centres: Sequence[float],
    box: float,
    texts: dict[int, tuple[str, str]],
) -> list[Item]:
    """The boxes, the arrows forward above and back below, and the gradients."""
    flat, order = spec.flat, spec.order
    position = {s: k for k, s in enumerate(order)}

    def width(k: int) -> float:
        return {"input": END_BOX, "loss": END_BOX, "stage": box, "gap": GAP_SLOT}[slots[k].kind]

    def left(k: int) -> float:
        return centres[k] - width(k) / 2

    def right(k: int) -> float:
        return centres[k] + width(k) / 2

    items: list[Item] = []
    top, bottom = STAGE_HEIGHT / 2, -STAGE_HEIGHT / 2
    for k, slot in enumerate(slots):
        x = centres[k]
        if slot.kind == "gap":
            items.append(Text(x, 0.0, "$\\cdots$", "", "small"))
            continue
        items.append(Box(x - width(k) / 2, bottom, width(k), STAGE_HEIGHT, slot.kind))
        if slot.kind == "stage":
            first, second = texts[slot.layer]
            items += [
                Text(x, 5.0, first, "", "scriptsize"),
                Text(x, -5.0, second, "", "scriptsize"),
            ]
            grads = _gradients(flat[slot.layer - 1])
            if grads:
                items.append(Arrow(x, bottom, x, bottom - GRADIENT))
                delta = f"$\\delta^{{({slot.layer})}}$"
                items.append(Text(x + 2.0, bottom - 21.0, delta, "l", "scriptsize"))
                for g, tex in enumerate(grads):
                    items.append(Text(x, bottom - GRADIENT - 2.0 - 9.0 * g, tex, "t", "scriptsize"))
        else:
            items.append(Text(x, 0.0, "$x$" if slot.kind == "input" else "$\\ell$", "", "small"))
    for k in range(len(slots) - 1):
        mid = (right(k) + left(k + 1)) / 2
        items.append(Arrow(right(k), FLOW, left(k + 1), FLOW))
        items.append(
            Text(mid, top + 2.0, _forward_label(slots, k, order, position), "b", "scriptsize")
        )
        if k:
            items.append(Arrow(left(k + 1), -FLOW, right(k), -FLOW))
            items.append(
                Text(
                    mid, bottom - 2.0, _backward_label(slots, k, order, position), "t", "scriptsize"
                )
            )
    loss = centres[-1]
    items += [Arrow(loss, top + 16.0, loss, top), Text(loss, top + 18.0, "$y$", "b", "scriptsize")]
    return items


def _stage_layout(
    stages: Sequence[int | None], texts: dict[int, tuple[str, str]]
) -> tuple[list[_Slot], list[float], float] | None:
    """The slots, their centres and the stage boxes' width; None when the arrows between
    them would be shorter than ``MIN_ARROW``."""
    slots = [
        _Slot("input"),
        *(_Slot("stage", s) if s is not None else _Slot("gap") for s in stages),
        _Slot("loss"),
    ]
    box = max(label_width(t, "scriptsize") for s in stages if s for t in texts[s]) + 6.0
    widths = [
        {"input": END_BOX, "loss": END_BOX, "stage": box, "gap": GAP_SLOT}[s.kind] for s in slots
    ]
    arrow = min(MAX_ARROW, (MAX_WIDTH - 2 * MARGIN - 4.0 - sum(widths)) / (len(slots) - 1))
    if arrow < MIN_ARROW:
        return None
    centres, x = [], 0.0
    for k, w in enumerate(widths):
        if k:
            x += widths[k - 1] / 2 + arrow + w / 2
        centres.append(x)
    return slots, centres, box


def _forward_label(
    slots: Sequence[_Slot], k: int, order: Sequence[int], position: dict[int, int]
) -> str:
    """What the arrow from slot k to slot k+1 carries forward."""
    here, there = slots[k], slots[k + 1]
    if here.kind == "input":
        return "$x$"
    if there.kind == "loss":
        return "$\\hat y$"
    if here.kind == "gap":
        return f"$a^{{({order[position[there.layer] - 1]})}}$"
    return f"$a^{{({here.layer})}}$"


def _backward_label(
    slots: Sequence[_Slot], k: int, order: Sequence[int], position: dict[int, int]
) -> str:
    """What the arrow from slot k+1 back to slot k carries: the error of slot k+1's stage."""
    here, there = slots[k], slots[k + 1]
    if there.kind == "loss":
        return "$\\partial\\ell/\\partial\\hat y$"
    if there.kind == "gap":
        return f"$\\delta^{{({order[position[here.layer] + 1]})}}$"
    return f"$\\delta^{{({there.layer})}}$"


def _skips(
    spec: NetworkSpec,
    slots: Sequence[_Slot],
    stages: Sequence[int | None],
    centres: Sequence[float],
    top: float,
) -> list[Item]:
    """Each residual's skip connection, above the forward labels: from the box of its input
    to the box of its "+" (to the elided middle where one of them is there)."""
    gap = stages.index(None) + 1 if None in stages else -1
    slot_of = {slot.layer: k for k, slot in enumerate(slots) if slot.kind == "stage"}
    slot_of[0] = 0
    skips = [
        (layer.index, slot_of.get(layer.sources[0], gap), slot_of.get(layer.index, gap))
        for layer in spec.flat
        if layer.kind == "residual"
    ]
    skips = [(r, source, plus) for r, source, plus in skips if source != plus]  # not elided
    levels = _ranks(spec, [r for r, _, _ in skips])
    rise = min(SKIP_RISE, SKIP_ROOM / max(levels.values(), default=1))
    items: list[Item] = []
    for residual, source, plus in skips:
        height = top + 16.0 + rise * (levels[residual] - 1)
        x1, x2 = centres[source] + 3.0, centres[plus] - 3.0
        items += [
            Line(x1, top, x1, height),
            Line(x1, height, x2, height),
            Arrow(x2, height, x2, top),
        ]
    return items


def _big_picture_caption(
    spec: NetworkSpec, stages: Sequence[int | None], texts: dict[int, tuple[str, str]]
) -> str:
    flat = spec.flat
    out = spec.output_layer.index
    n = len(flat)
    if n == 1:
        text = (
            "The big picture: the forward pass (the arrows pointing right) takes $x$ through the "
            "layer to the prediction $\\hat y$ and the loss $\\ell$; the backward pass (the arrow "
            "pointing left) starts from the derivative $\\partial\\ell/\\partial\\hat y$, "
            "which gives "
            f"the output error $\\delta^{{({out})}}$, and the layer turns its error into the "
            "gradients of its parameters"
        )
    else:
        text = (
            "The big picture: the forward pass (the arrows pointing right) takes $x$ through the "
            f"{n} layers to the prediction $\\hat y$ and the loss $\\ell$; the backward pass "
            "(the arrows pointing left) starts from the derivative "
            "$\\partial\\ell/\\partial\\hat y$ and "
            "carries each layer's error back to the layer before it, from the output error "
            f"$\\delta^{{({out})}}$ on; each layer with parameters turns its error "
            "$\\delta^{(l)}$ into their gradients"
        )
    if any(layer.kind == "residual" for layer in flat):
        text += (
            "; a residual layer adds its input (the line above) and sends its error back both ways"
        )
    shown = [s for s in stages if s is not None]
    if len(shown) < n:
        text += f"; {n - len(shown)} layers in the middle are not shown"
    notes = [
        f"{_KIND_SHORT[k]}: {_KIND_NAMES[k]}"
        for k in sorted({flat[s - 1].kind for s in shown} & set(_KIND_SHORT))
    ]
    notes += [
        f"{texts[s][1]}: {activation_name(flat[s - 1])}"
        for s in shown
        if texts[s][1].startswith("$f_")
    ]
    if notes:
        text += " (" + ", ".join(notes) + ")"
    return text + "."


# --- gradient descent ----------------------------------------------------------------------

GRID = 60  # marching-squares cells along the window's longer side
MAX_LEVELS = 12  # contour lines, at most; by default the levels of the first iterates
DEFAULT_LEVELS = 7
MAX_STEPS = 200
CONTOUR_DOTS = 16_000  # of MAX_DOTS, for the contour lines and the path
SIMPLIFY = 0.3  # points: a contour's polyline may leave the marching-squares one by this much
PLOT_WIDTH, PLOT_HEIGHT = 330.0, 210.0  # the frame, at most (the ticks' labels lie outside)
BOWL_WINDOW = (-4.0, 4.0, -2.5, 2.5)
DIFFERENCE = 1e-6  # the central difference's step, relative, for a function without gradient

Function = Callable[[np.ndarray, np.ndarray], np.ndarray]
Gradient = Callable[[float, float], tuple[float, float]]


def bowl(w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """The article's example f(w1, w2) = w1^2 + 3 w2^2."""
    return w1**2 + 3 * w2**2


def bowl_gradient(w1: float, w2: float) -> tuple[float, float]:
    return 2 * w1, 6 * w2


@dataclass(frozen=True)
class DescentLayout:
    """The descent picture's geometry, in the weights' coordinates and in points.

    ``scale`` is points per unit of w1 and of w2: equal, so that a right angle between the
    path and a contour in the weights is a right angle on the page.
    """

    window: tuple[float, float, float, float]  # w1 from, w1 to, w2 from, w2 to
    scale: tuple[float, float]
    path: tuple[tuple[float, float], ...]
    values: tuple[float, ...]  # f along the path
    levels: tuple[float, ...]
    minimum: tuple[float, float] | None  # None: not in the window
    contours: tuple[tuple[tuple[float, float], ...], ...]  # polylines, in points

    def point(self, w1: float, w2: float) -> tuple[float, float]:
        """Where the weights (w1, w2) lie in the picture, in points."""
        return (w1 - self.window[0]) * self.scale[0], (w2 - self.window[2]) * self.scale[1]


def _numeric_gradient(f: Function) -> Gradient:
    def gradient(w1: float, w2: float) -> tuple[float, float]:
        h1, h2 = DIFFERENCE * max(1.0, abs(w1)), DIFFERENCE * max(1.0, abs(w2))
        a = np.asarray([w1 + h1, w1 - h1, w1, w1], dtype=float)
        b = np.asarray([w2, w2, w2 + h2, w2 - h2], dtype=float)
        v = np.asarray(f(a, b), dtype=float)
        return float((v[0] - v[1]) / (2 * h1)), float((v[2] - v[3]) / (2 * h2))

    return gradient


def descent_path(
    gradient: Gradient, start: tuple[float, float], lr: float, steps: int
) -> tuple[tuple[float, float], ...]:
    """w <- w - lr * grad f(w), ``steps`` times (fewer if a value stops being finite)."""
    path = [(float(start[0]), float(start[1]))]
    for _ in range(steps):
        w1, w2 = path[-1]
        g1, g2 = gradient(w1, w2)
        nxt = (w1 - lr * g1, w2 - lr * g2)
        if not all(math.isfinite(v) for v in nxt):
            break
        path.append(nxt)
    return tuple(path)


def _window(
    path: Sequence[tuple[float, float]], minimum: tuple[float, float]
) -> tuple[float, float, float, float]:
    """The path and the minimum, a quarter of the larger extent around them, and neither
    side under 0.4 of the other."""
    xs = [p[0] for p in path] + [minimum[0]]
    ys = [p[1] for p in path] + [minimum[1]]
    extent = max(max(xs) - min(xs), max(ys) - min(ys), 1e-3)
    pad = 0.25 * extent
    x0, x1, y0, y1 = min(xs) - pad, max(xs) + pad, min(ys) - pad, max(ys) + pad
    wide, high = x1 - x0, y1 - y0
    if high < 0.4 * wide:
        y0, y1 = (y0 + y1) / 2 - 0.2 * wide, (y0 + y1) / 2 + 0.2 * wide
    if wide < 0.4 * high:
        x0, x1 = (x0 + x1) / 2 - 0.2 * high, (x0 + x1) / 2 + 0.2 * high
    return x0, x1, y0, y1


def descent_layout(
    f: Function | None = None,
    start: tuple[float, float] = (3.0, 1.0),
    lr: float = 0.1,
    steps: int = 12,
    gradient: Gradient | None = None,
    window: tuple[float, float, float, float] | None = None,
    levels: Sequence[float] | None = None,
    minimum: tuple[float, float] | None = None,
) -> DescentLayout:
    """The geometry of ``descent_figure`` (its arguments are described there)."""
    if not (isinstance(steps, int) and 1 <= steps <= MAX_STEPS):
        raise ValueError(f"steps: expected an integer from 1 to {MAX_STEPS}, got {steps!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: expected a positive number, got {lr!r}")
    if f is None:
        f, gradient = bowl, bowl_gradient
        minimum = (0.0, 0.0) if minimum is None else minimum
        window = BOWL_WINDOW if window is None else window
    if gradient is None:
        gradient = _numeric_gradient(f)
    path = descent_path(gradient, start, lr, steps)
    if window is None:
        window = _window(path, minimum if minimum is not None else path[-1])
    x0, x1, y0, y1 = (float(v) for v in window)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"window: expected (w1 from, w1 to, w2 from, w2 to), got {window!r}")
    scale = min(PLOT_WIDTH / (x1 - x0), PLOT_HEIGHT / (y1 - y0))
    cell = max(x1 - x0, y1 - y0) / GRID
    nx, ny = max(2, round((x1 - x0) / cell)), max(2, round((y1 - y0) / cell))
    g1, g2 = np.meshgrid(np.linspace(x0, x1, nx + 1), np.linspace(y0, y1, ny + 1))
    grid = np.asarray(f(g1, g2), dtype=float)
    if grid.shape != g1.shape:
        raise ValueError(f"f: expected an array of shape {g1.shape}, got {grid.shape}")
    if minimum is None:  # the lowest grid point, unless it lies on the edge of the window
        j, i = np.unravel_index(
            int(np.nanargmin(np.where(np.isfinite(grid), grid, np.nan))), grid.shape
        )
        if 0 < i < nx and 0 < j < ny:
            minimum = (float(g1[j, i]), float(g2[j, i]))
    values = tuple(float(np.asarray(f(np.asarray(a), np.asarray(b)), dtype=float)) for a, b in path)
    chosen = _contour_levels(values, grid) if levels is None else tuple(float(v) for v in levels)
    if len(chosen) > MAX_LEVELS:
        raise ValueError(f"levels: at most {MAX_LEVELS}, got {len(chosen)}")
    # the levels in the order given (by default the first iterate's first), each while its
    # lines fit in what TeX's memory leaves after the path
    path_points = [((a - x0) * scale, (b - y0) * scale) for a, b in path]
    budget = CONTOUR_DOTS - dot_count([Polyline(tuple(path_points), thick=True)])
    lines: list[tuple[tuple[float, float], ...]] = []
    kept: list[float] = []
    for level in chosen:
        new = []
        for line in marching_squares(grid, level):
            points = [((x1 - x0) * i / nx * scale, (y1 - y0) * j / ny * scale) for i, j in line]
            new.append(tuple(simplify(points, SIMPLIFY)))
        cost = dot_count([Polyline(line) for line in new if len(line) > 1])
        if cost <= budget:
            budget -= cost
            lines += new
            kept.append(level)
    return DescentLayout(
        window=(x0, x1, y0, y1),
        scale=(scale, scale),
        path=path,
        values=values,
        levels=tuple(kept),
        minimum=minimum,
        contours=tuple(lines),
    )


def _contour_levels(values: Sequence[float], grid: np.ndarray) -> tuple[float, ...]:
    """f at the first iterates, distinct and above the grid's lowest value: each iterate then
    lies on a contour line, and its step leaves that line at a right angle."""
    low = float(np.nanmin(np.where(np.isfinite(grid), grid, np.nan)))
    chosen: list[float] = []
    for v in values:
        if (
            math.isfinite(v)
            and v > low
            and all(abs(v - c) > 1e-9 * max(1.0, abs(c)) for c in chosen)
        ):
            chosen.append(v)
        if len(chosen) == DEFAULT_LEVELS:
            break
    return tuple(chosen)


# corners: 1 lower left, 2 lower right, 4 upper right, 8 upper left (set when above the level);
# edges: "b" bottom, "r" right, "t" top, "l" left.  Saddles (5, 10) are split by the centre.
_CASES: dict[int, tuple[tuple[str, str], ...]] = {
    1: (("l", "b"),),
    2: (("b", "r"),),
    3: (("l", "r"),),
    4: (("r", "t"),),
    6: (("b", "t"),),
    7: (("l", "t"),),
    8: (("l", "t"),),
    9: (("b", "t"),),
    11: (("r", "t"),),
    12: (("l", "r"),),
    13: (("b", "r"),),
    14: (("l", "b"),),
}
_SADDLES = {  # (case, centre above) -> segments
    (5, True): (("b", "r"), ("l", "t")),
    (5, False): (("l", "b"), ("r", "t")),
    (10, True): (("l", "b"), ("r", "t")),
    (10, False): (("b", "r"), ("l", "t")),
}

Key = tuple[str, int, int]


def marching_squares(grid: np.ndarray, level: float) -> list[list[tuple[float, float]]]:
    """The polylines where ``grid`` (rows j, columns i) crosses ``level``, in grid units
    (i, j); cells with a value that is not finite are left out."""
    rows, cols = grid.shape
    points: dict[Key, tuple[float, float]] = {}

    def point(key: Key) -> Key:
        if key not in points:
            kind, i, j = key
            a = grid[j, i]
            b = grid[j, i + 1] if kind == "h" else grid[j + 1, i]
            t = (level - a) / (b - a)
            points[key] = (i + t, float(j)) if kind == "h" else (float(i), j + t)
        return key

    segments: list[tuple[Key, Key]] = []
    for j in range(rows - 1):
        for i in range(cols - 1):
            v = (grid[j, i], grid[j, i + 1], grid[j + 1, i + 1], grid[j + 1, i])
            if not all(math.isfinite(x) for x in v):
                continue
            case = sum(1 << k for k in range(4) if v[k] > level)
            if case in (5, 10):
                pairs = _SADDLES[case, sum(v) / 4 > level]
            else:
                pairs = _CASES.get(case, ())
            edges = {"b": ("h", i, j), "r": ("v", i + 1, j), "t": ("h", i, j + 1), "l": ("v", i, j)}
            segments += [(point(edges[a]), point(edges[b])) for a, b in pairs]
    return [[points[k] for k in chain] for chain in _join(segments)]


def _join(segments: Sequence[tuple[Key, Key]]) -> list[list[Key]]:
    """Chains of segments that share their ends, in the order the segments came."""
    touching: dict[Key, list[int]] = {}
    for n, (a, b) in enumerate(segments):
        touching.setdefault(a, []).append(n)
        touching.setdefault(b, []).append(n)
    used = [False] * len(segments)

    def extend(chain: list[Key]) -> None:
        while True:
            end = chain[-1]
            nxt = next((n for n in touching[end] if not used[n]), None)
            if nxt is None:
                return
            used[nxt] = True
            a, b = segments[nxt]
            chain.append(b if a == end else a)

    chains = []
    for n, (a, b) in enumerate(segments):
        if used[n]:
            continue
        used[n] = True
        chain = [a, b]
        extend(chain)
        chain.reverse()
        extend(chain)
        chains.append(chain)
    return chains


def simplify(points: Sequence[tuple[float, float]], tolerance: float) -> list[tuple[float, float]]:
    """Douglas-Peucker: the fewest of the points that stay within ``tolerance`` of them all."""
    pts: list[tuple[float, float]] = []
    for p in points:
        if not pts or math.dist(p, pts[-1]) > 1e-9:
            pts.append(p)
    if len(pts) < 3:
        return pts
    keep = [False] * len(pts)
    keep[0] = keep[-1] = True
    stack = [(0, len(pts) - 1)]
    while stack:
        a, b = stack.pop()
        far, where = 0.0, -1
        for k in range(a + 1, b):
            d = _distance(pts[k], pts[a], pts[b])
            if d > far:
                far, where = d, k
        if far > tolerance:
            keep[where] = True
            stack += [(a, where), (where, b)]
    return [p for p, k in zip(pts, keep, strict=True) if k]


def _distance(p: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    """From p to the segment a-b."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = dx * dx + dy * dy
    t = (
        0.0
        if length == 0
        else max(0.0, min(1.0, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / length))
    )
    return math.hypot(p[0] - a[0] - t * dx, p[1] - a[1] - t * dy)


def _tick_step(extent: float) -> float:
    raw = extent / 8
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw * 0.999)


def _tick_text(value: float, step: float) -> str:
    decimals = 0
    while decimals < 6 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-9:
        decimals += 1
    text = f"{value:.{decimals}f}"
    if float(text) == 0:
        text = text.lstrip("-")
    return f"${text}$"


def _ticks(low: float, high: float, step: float) -> list[float]:
    first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
    return [k * step for k in range(first, last + 1)]


def descent_figure(
    f: Function | None = None,
    start: tuple[float, float] = (3.0, 1.0),
    lr: float = 0.1,
    steps: int = 12,
    gradient: Gradient | None = None,
    window: tuple[float, float, float, float] | None = None,
    levels: Sequence[float] | None = None,
    minimum: tuple[float, float] | None = None,
    formula: str | None = None,
    names: tuple[str, str] = ("w_1", "w_2"),
) -> Figure:
    """Gradient descent on f(w1, w2) from ``start`` with learning rate ``lr``.

    ``f`` takes two NumPy arrays and returns their array of values; None is the article's
    bowl w1^2 + 3 w2^2 with its exact gradient.  ``gradient(w1, w2)`` returns the two
    partial derivatives (central differences of f when None).  ``window`` is (w1 from, w1
    to, w2 from, w2 to), by default the path and the minimum with a margin; ``levels`` the
    contour values, by default f at the first iterates; ``minimum`` the point marked as the
    minimum, by default the lowest grid point (the origin for the bowl).  ``formula`` is
    f's right-hand side in LaTeX for the caption, ``names`` the two weights' names (LaTeX,
    a subset that the SVG can show: letters, digits, scripts, Greek).
    """
    layout = descent_layout(f, start, lr, steps, gradient, window, levels, minimum)
    if f is None and formula is None:
        formula = "w_1^2 + 3 w_2^2"
    items = _descent_items(layout, names)
    a, b = names
    path, values = layout.path, layout.values
    caption = (
        f"Gradient descent on $f({a}, {b})"
        + (f" = {formula}" if formula else "")
        + f"$ from $({_float_text(path[0][0])}, {_float_text(path[0][1])})$ with learning rate "
        rf"$\eta = {_float_text(lr)}$, {len(path) - 1} step{'s' if len(path) > 2 else ''}"
    )
    if len(path) > 1:
        caption += (
            f" (the first to $({_float_text(path[1][0])}, {_float_text(path[1][1])})$, where "
            f"$f = {_float_text(values[1])}$)"
        )
    caption += (
        ": the contour lines are the levels of $f$ at the first iterates, and each step, "
        "along $-\\nabla f$, leaves its contour at a right angle (one unit is the same length "
        "on both axes)."
    )
    return Figure("descent", caption, to_latex(items), to_svg(items, "gradient descent"))


def _descent_items(layout: DescentLayout, names: tuple[str, str]) -> list[Item]:
    x0, x1, y0, y1 = layout.window
    width, height = layout.point(x1, y1)
    items: list[Item] = [Box(0.0, 0.0, width, height, "frame")]
    items += [Polyline(line, kind="contour") for line in layout.contours if len(line) > 1]
    step = _tick_step(max(x1 - x0, y1 - y0))
    for t in _ticks(x0, x1, step):
        x, _ = layout.point(t, y0)
        items += [Line(x, 0.0, x, 3.0), Text(x, -2.5, _tick_text(t, step), "t", "scriptsize")]
    labels = [_tick_text(t, step) for t in _ticks(y0, y1, step)]
    for t, tex in zip(_ticks(y0, y1, step), labels, strict=True):
        _, y = layout.point(x0, t)
        items += [Line(0.0, y, 3.0, y), Text(-2.5, y, tex, "r", "scriptsize")]
    widest = max((label_width(t, "scriptsize") for t in labels), default=0.0)
    items.append(Text(width / 2, -13.0, f"${names[0]}$", "t", "small"))
    items.append(Text(-6.0 - widest, height / 2, f"${names[1]}$", "r", "small"))
    frame = (0.0, 0.0, width, height)
    points = [layout.point(*p) for p in layout.path]
    pieces: list[list[tuple[float, float]]] = []
    for a, b in zip(points, points[1:], strict=False):
        clipped = _clip((*a, *b), frame)
        if clipped is None:
            continue
        p, q = clipped[:2], clipped[2:]
        if pieces and math.dist(pieces[-1][-1], p) < 1e-9:
            pieces[-1].append(q)
        else:
            pieces.append([p, q])
    items += [Polyline(tuple(piece), thick=True, kind="path") for piece in pieces]
    inside = [p for p in points if 0 <= p[0] <= width and 0 <= p[1] <= height]
    items += [Circle(x, y, 2.5, filled=True, kind="iterate") for x, y in inside[1:]]
    sx, sy = points[0]
    if points[0] in inside:
        right = len(points) < 2 or points[1][0] <= sx
        up = len(points) < 2 or points[1][1] <= sy
        items.append(Circle(sx, sy, 5.0, filled=True, kind="start"))
        items.append(
            Text(
                sx + (5.0 if right else -5.0),
                sy + (4.0 if up else -4.0),
                "start",
                ("l" if right else "r") + ("b" if up else "t"),
                "scriptsize",
            )
        )
    mx, my = layout.point(*layout.minimum) if layout.minimum else (-1.0, -1.0)
    if 0 <= mx <= width and 0 <= my <= height:
        below = sy >= my  # the label on the side away from the start
        items.append(Circle(mx, my, 8.0, kind="minimum"))
        items.append(
            Text(mx, my + (-6.0 if below else 6.0), "minimum", "t" if below else "b", "scriptsize")
        )
    return items


# --- convolution and pooling (the documents of specs with those kinds) ---------------------

# The documents' worked convolution: a 3 x 3 input, a 2 x 2 kernel, no bias, stride 1.
CONV_INPUT = ((1, 2, 0), (0, 1, 3), (1, 1, 2))
CONV_KERNEL = ((1, 0), (-1, 2))
# The documents' pooling example: a 4 x 4 input, 2 x 2 windows, stride 2.
POOL_INPUT = ((1, 3, 2, 0), (4, 2, 1, 5), (0, 1, 3, 2), (2, 6, 1, 1))
CELL = 22.0  # a grid cell's side, points
CONV_FIGURES = ("convolution", "pooling")  # the image kinds' figures, when a spec uses them


def conv_output(
    x: Sequence[Sequence[int]], w: Sequence[Sequence[int]]
) -> tuple[tuple[int, ...], ...]:
    """The cross-correlation (stride 1, no padding) of x with w, as integers."""
    kh, kw = len(w), len(w[0])
    return tuple(
        tuple(
            sum(w[u][v] * x[p + u][q + v] for u in range(kh) for v in range(kw))
            for q in range(len(x[0]) - kw + 1)
        )
        for p in range(len(x) - kh + 1)
    )


def pool_windows(x: Sequence[Sequence[int]], k: int = 2) -> list[tuple[int, int, list]]:
    """(p, q, [(value, i, j), ...] in row-major order) of every k x k window, stride k."""
    out = []
    for p in range(len(x) // k):
        for q in range(len(x[0]) // k):
            cells = [
                (x[k * p + u][k * q + v], k * p + u, k * q + v) for u in range(k) for v in range(k)
            ]
            out.append((p, q, cells))
    return out


def _grid(
    x0: float, top: float, values: Sequence[Sequence[object]], name: str, size: str = "small"
) -> list[Item]:
    """A grid of numbered cells, its upper left corner at (x0, top), its name above; the
    numbers at ``size``."""
    rows, cols = len(values), len(values[0])
    items: list[Item] = []
    for i in range(rows):
        for j in range(cols):
            x, y = x0 + j * CELL, top - (i + 1) * CELL
            items.append(Box(x, y, CELL, CELL, "cell"))
            text = values[i][j]
            text = f"${text}$" if isinstance(text, int) else str(text)
            items.append(Text(x + CELL / 2, y + CELL / 2, text, size=size))
    items.append(Text(x0 + cols * CELL / 2, top + 9, name))
    return items


def _frame(x0: float, top: float, i: int, j: int, rows: int, cols: int) -> list[Item]:
    """A thick frame around cells (i..i+rows-1, j..j+cols-1) of a grid at (x0, top)."""
    left, right = x0 + j * CELL, x0 + (j + cols) * CELL
    upper, lower = top - i * CELL, top - (i + rows) * CELL
    out: list[Item] = []
    for inset in (0.0, 1.6):  # a double frame: seen at once in both renderings
        a, b, c, d = left + inset, right - inset, upper - inset, lower + inset
        out.append(Polyline(((a, d), (a, c), (b, c), (b, d), (a, d)), thick=True, kind="window"))
    return out


def convolution_figure() -> Figure:
    """The kernel sliding over the input: the window of output (1, 2) framed, its sum."""
    z = conv_output(CONV_INPUT, CONV_KERNEL)
    top = 80.0
    items = _grid(0, top, CONV_INPUT, "input $x$")
    items += _frame(0, top, 0, 1, 2, 2)
    items.append(Text(84, top - CELL * 1.5, "$\\star$"))
    items += _grid(102, top - CELL / 2, CONV_KERNEL, "kernel $W$")
    items += [Text(166, top - CELL * 1.5, "$=$")]
    items += _grid(180, top - CELL / 2, z, "output $z$")
    items += _frame(180, top - CELL / 2, 0, 1, 1, 1)
    w, x = CONV_KERNEL, CONV_INPUT
    terms = " + ".join(
        f"({w[u][v]})\\cdot {x[u][1 + v]}" if w[u][v] < 0 else f"{w[u][v]}\\cdot {x[u][1 + v]}"
        for u in range(2)
        for v in range(2)
    )
    items.append(Text(0, 2, f"$z_{{12}} = {terms} = {z[0][1]}$", pos="l"))
    items.append(Arrow(0, top + 20, 2 * CELL, top + 20))
    items.append(Text(CELL, top + 27, "slide", size="scriptsize"))
    caption = (
        "The kernel slides over the input, one step at a time; at each position the output "
        "is the sum of the products of the kernel's entries with the input entries under "
        f"it (framed: the window of $z_{{12}} = {z[0][1]}$)."
    )
    return Figure(
        "convolution",
        caption,
        to_latex(items),
        to_svg(items, "a 2 x 2 kernel sliding over a 3 x 3 input"),
    )


def pooling_figure() -> Figure:
    """A 4 x 4 input in 2 x 2 windows: the max of each (its first maximum framed), the
    average, and where each window's error goes back."""
    windows = pool_windows(POOL_INPUT)
    top = 100.0
    items = _grid(0, top, POOL_INPUT, "input $a$")
    for p in range(2):
        for q in range(2):
            items += _frame(0, top, 2 * p, 2 * q, 2, 2)
    maxima = [[0, 0], [0, 0]]
    means = [[0, 0], [0, 0]]
    for p, q, cells in windows:
        best = max(range(len(cells)), key=lambda k: (cells[k][0], -k))
        value, i, j = cells[best]
        items.append(Circle(j * CELL + CELL / 2, top - i * CELL - CELL / 2, 16, kind="max"))
        maxima[p][q] = value
        total = sum(c[0] for c in cells)
        means[p][q] = f"${_float_text(total / 4)}$"
    items += _grid(120, top - CELL, maxima, "max pool")
    items += _grid(200, top - CELL, means, "average pool", "footnotesize")  # 2.25 fits
    items.append(Arrow(96, top - 2 * CELL, 114, top - 2 * CELL))
    items.append(
        Text(
            0,
            2,
            "backward: max sends $\\delta_{pq}$ to the circled entry, "
            "average $\\delta_{pq}/4$ to all four",
            pos="l",
            size="scriptsize",
        )
    )
    caption = (
        "Pooling $2 \\times 2$ windows with stride 2: max pooling keeps each window's "
        "largest entry (circled), average pooling its mean; backward, max pooling sends the "
        "error of a window to its maximum only, average pooling spreads a quarter of it over "
        "each entry."
    )
    return Figure(
        "pooling",
        caption,
        to_latex(items),
        to_svg(items, "max and average pooling of a 4 x 4 input"),
    )
