"""The document model of the derivation documents: sections of blocks, numbered displays.

A document is a list of sections; a section is a title and blocks (text, lists, tables,
displayed equations, figures, boxes).  ``Doc`` numbers every displayed equation: a core
equation keeps the derivation's fixed number (``derive.NUMBERS``), every other one is ``N.k``
after the core equation ``N`` it belongs to.  The printing helpers turn SymPy expressions into
LaTeX rows that fit a line: every printed expression that stands next to another factor goes
through ``factor`` (or ``operand`` for a number), which brackets what is not atomic for a
product.  Text blocks are a mini-markup (``$math$``, backticked code, plain text) that
``text_tex`` turns into LaTeX; Markdown keeps it as it is.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sympy
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE, precedence, precedence_traditional

from symbackprop.derive import Derivation
from symbackprop.graph import latex_name

WIDTH = 74  # rough glyph budget of one display line (10pt, 2.2 cm margins)

Row = tuple[str, str]  # (left of the alignment point, from it on)


# --- small printing helpers ------------------------------------------------------------------


@dataclass(frozen=True)
class Display:
    """One numbered displayed equation, as aligned rows (left, right)."""

    tag: str
    rows: tuple[Row, ...]


def require(condition: bool, what: str) -> None:
    """A check of a symbolic step the document shows: raises, even under ``python -O``."""
    if not condition:
        raise RuntimeError(f"derivation document: {what}")


def to_tex(expr: sympy.Expr, names: Mapping[sympy.Symbol, str] | None = None, **kw: object) -> str:
    return bars(make_printer(names, **kw).doprint(expr))


def bars(tex: str) -> str:
    """Absolute values with ``\\lvert``/``\\rvert``: a bare ``|`` splits a Markdown table cell."""
    return tex.replace(r"\left|", r"\left\lvert ").replace(r"\right|", r"\right\rvert ")


def as_factor(expr: sympy.Expr, printer: LatexPrinter) -> str:
    """``expr`` printed as one factor of a product (juxtaposed, ``\\cdot`` or ``\\odot``).

    Bracketed unless it is atomic for a product: a symbol, a positive number or fraction, a
    function application, a power, a product, or an already bracketed group, i.e. unless
    SymPy's precedence for it is below that of Mul (a sum, or anything with a leading sign).
    Every place that puts a printed expression next to another factor goes through here.
    """
    text = printer.doprint(expr)
    if min(precedence(expr), precedence_traditional(expr)) < PRECEDENCE["Mul"]:
        return rf"\left({text}\right)"
    return text


def as_factors(expr: sympy.Expr, printer: LatexPrinter) -> list[str]:
    """The factors of a product, each by ``factor`` (so that a line may break between them)."""
    return [as_factor(f, printer) for f in sympy.Mul.make_args(expr)]


def make_printer(names: Mapping[sympy.Symbol, str] | None = None, **kw: object) -> LatexPrinter:
    return LatexPrinter({"symbol_names": dict(names or {}), **kw})


def latex_names(symbols: Iterable[sympy.Symbol]) -> dict[sympy.Symbol, str]:
    return {s: latex_name(s) for s in symbols}


def glyphs(tex: str) -> int:
    """A rough count of the glyphs a LaTeX string prints (for line breaking only)."""
    s = re.sub(r"\\(left|right|big|Big|operatorname|mathrm|text|,|;|!|quad|qquad)", "", tex)
    s = re.sub(r"\\(frac|tfrac)\{([^{}]*)\}\{([^{}]*)\}", lambda m: max(m[2], m[3], key=len), s)
    # named functions print their names
    s = re.sub(r"\\(log|exp|sinh|cosh|tanh|sin|cos|tan|max|min|erf|sign)(?![A-Za-z])", r"\1", s)
    s = re.sub(r"\\[A-Za-z]+", "x", s)
    return len(re.sub(r"[{}^_ &]", "", s))


def signed(pieces: list[str]) -> list[str]:
    """Pieces after the first get a leading '+ ' unless they already start with a sign."""
    return [p if i == 0 or p.startswith(("- ", "+ ")) else f"+ {p}" for i, p in enumerate(pieces)]


def wrap(left: str, relation: str, pieces: list[str], width: int = WIDTH) -> tuple[Row, ...]:
    """``left relation p1 p2 ...`` broken into aligned rows of at most ``width`` glyphs."""
    rows: list[Row] = []
    current = f"{relation} "
    budget = width - glyphs(left)
    for piece in pieces:
        candidate = f"{current}{piece} "
        if glyphs(candidate) > budget and current.strip() not in ("", relation):
            rows.append((left if not rows else "", current.rstrip()))
            current = r"\quad " + piece + " "
            budget = width - (0 if rows else glyphs(left))
        else:
            current = candidate
    rows.append((left if not rows else "", current.rstrip()))
    return tuple(rows)


def printed_terms(expr: sympy.Expr, names: Mapping[sympy.Symbol, str], **kw: object) -> list[str]:
    """The printed terms of a sum, signs attached, in the order SymPy prints them."""
    printer = make_printer(names, **kw)
    terms = printer._as_ordered_terms(expr) if isinstance(expr, sympy.Add) else [expr]
    out = []
    for i, term in enumerate(terms):
        if term.could_extract_minus_sign():
            out.append("- " + factors_text(-term, printer))
        else:
            out.append(("+ " if i else "") + factors_text(term, printer))
    return out


def factors_text(term: sympy.Expr, printer: LatexPrinter) -> str:
    text = printer.doprint(term)
    if glyphs(text) <= WIDTH - 12 or not isinstance(term, sympy.Mul):
        return text
    # a long product: print factor by factor so that wrap may break between them
    return "\u0000".join(as_factors(term, printer))


def broken(
    left: str, relation: str, expr: sympy.Expr, names: Mapping, **kw: object
) -> tuple[Row, ...]:
    pieces: list[str] = []
    for term in printed_terms(expr, names, **kw):
        pieces.extend(tidy_numbers(piece) for piece in term.split("\u0000"))
    return wrap(left, relation, pieces)


def decimal(value: float) -> str:
    """Four significant digits; powers of ten written out."""
    text = f"{float(value):.4g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = rf"{mantissa} \times 10^{{{int(exponent)}}}"
    return text


def operand(value: float) -> str:
    """A number as one factor (or to substitute into a formula): ``factor``'s rule for it.

    Bracketed exactly when SymPy's precedence for the number is below Mul: a negative one.
    """
    text = decimal(value)
    if precedence(sympy.Float(float(value))) < PRECEDENCE["Mul"]:
        return rf"\left({text}\right)"
    return text


def tidy_numbers(tex: str) -> str:
    """Drop the parentheses of a substituted negative number where the context has its own."""
    tex = re.sub(r"\\left\(\\left\((-[^()]*?)\\right\)\s*\\right\)", r"\\left(\1\\right)", tex)
    return re.sub(r"\^\{\\left\((-[^{}()]*?)\\right\)\}", r"^{\1}", tex)


def split_core(latex: str) -> tuple[Row, ...]:
    """A core equation's LaTeX, split at its top-level ',\\quad' and aligned at its '='."""
    rows = []
    parts = latex.split(r",\quad ")
    for i, part in enumerate(parts):
        part = part + ("," if i < len(parts) - 1 else "")
        match = re.search(r"(?<![<>\\])=|\\leftarrow", part)
        if match is None:
            rows.append(("", part))
        else:
            rows.append((part[: match.start()].rstrip(), " " + part[match.start() :]))
    return tuple(rows)


_REF = re.compile(r"\u27e8eq:([0-9.]+)\u27e9")


def ref(number: object) -> str:
    """A reference to equation ``number`` in text: ``\\eqref`` in LaTeX, ``(N)`` in Markdown."""
    return f"\u27e8eq:{number}\u27e9"


def text_md(text: str) -> str:
    """Mini-markup to Markdown: the text itself, with equation references as (N)."""
    return _REF.sub(r"(\1)", text)


def text_tex(text: str) -> str:
    """Mini-markup (``$math$``, ```code```, equation references, plain text) to LaTeX text."""
    out = []
    for i, chunk in enumerate(re.split(r"(\$[^$]*\$|`[^`]*`|\u27e8eq:[0-9.]+\u27e9)", text)):
        if i % 2 == 1 and chunk.startswith("$"):
            out.append(chunk)
            continue
        if i % 2 == 1 and chunk.startswith("\u27e8"):
            out.append(_REF.sub(r"\\eqref{eq:\1}", chunk))
            continue
        code = i % 2 == 1
        body = chunk[1:-1] if code else chunk
        for char, repl in (
            ("\\", r"\textbackslash{}"),
            ("_", r"\_"),
            ("%", r"\%"),
            ("&", r"\&"),
            ("#", r"\#"),
            ("{", r"\{"),
            ("}", r"\}"),
            ("~", r"\~{}"),
            ("^", r"\^{}"),
        ):
            body = body.replace(char, repl)
        out.append(rf"\texttt{{{body}}}" if code else body)
    return "".join(out).replace("--", "-{}-")


# --- the document model ----------------------------------------------------------------------


class Doc:
    """Sections of blocks; sub-numbers N.k under the core equation N."""

    def __init__(self, derivation: Derivation) -> None:
        self.d = derivation
        self.sections: list[dict] = []
        self.counts: Counter[int] = Counter()

    def section(self, title: str) -> None:
        self.sections.append({"title": title, "blocks": []})

    def text(self, text: str) -> None:
        self.sections[-1]["blocks"].append({"kind": "text", "text": text})

    def items(self, items: list[str], ordered: bool = False) -> None:
        self.sections[-1]["blocks"].append({"kind": "list", "entries": items, "ordered": ordered})

    def table(self, header: list[str], rows: list[list[str]], columns: str | None = None) -> None:
        """A table; ``columns`` is LaTeX's column specification (default: all ``l``)."""
        self.sections[-1]["blocks"].append(
            {
                "kind": "table",
                "header": header,
                "rows": rows,
                "columns": columns or "l" * len(header),
            }
        )

    def figure(self, figure: object) -> None:
        """A ``figures.Figure``: LaTeX picture in the PDF, an SVG file beside the Markdown."""
        self.sections[-1]["blocks"].append({"kind": "figure", "figure": figure})

    def box(self, title: str, displays: Iterable[Display]) -> None:
        """A framed summary of equations shown elsewhere (tagged with their numbers)."""
        self.sections[-1]["blocks"].append(
            {"kind": "box", "title": title, "equations": list(displays)}
        )

    def core(self, key: str) -> Display:
        if key.startswith("activation."):
            key = "activation"
        for eq in self.d.equations:
            if eq.key == key:
                return Display(str(eq.number), split_core(eq.latex))
        raise KeyError(key)

    def sub(self, key: str, rows: Iterable[Row]) -> Display:
        number = self.d.number(key)
        self.counts[number] += 1
        return Display(f"{number}.{self.counts[number]}", tuple(rows))

    def math(self, *displays: Display) -> None:
        if displays:
            self.sections[-1]["blocks"].append({"kind": "math", "equations": list(displays)})
