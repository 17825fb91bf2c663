"""The derivation document: LaTeX and Markdown text from a ``Derivation`` (and a PDF).

Pure functions; the CLI writes the files.  The document follows a textbook's order: the
network and notation, the forward pass (neuron by neuron for networks within
``graph.EXPANDED_LIMIT`` parameters, then in matrix form), why the non-linearity matters
(only when consecutive identity layers exist), the loss, the chain rule, each activation's
derivative, the output error, the backward recursion and the gradients, a worked numeric
example (small networks), the update, and the certificate.

Numbering: the core equations (``derivation.equations``) keep their numbers, because the
generated module cites them; every other displayed equation is numbered ``N.k`` after the
core equation N it belongs to.  All mathematics is printed here (SymPy's LaTeX printer, with
``graph.latex_name`` for scalar symbols) and every symbolic claim shown is checked with SymPy
before it is printed; the templates only lay the strings out.  Wherever a printed expression
stands next to another factor (juxtaposed, ``\\cdot`` or ``\\odot``), it is printed by ``_factor``
(or ``_operand`` for a number), which brackets everything that is not atomic for a product.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2
import numpy as np
import sympy
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE, precedence, precedence_traditional

from symbackprop import exact
from symbackprop.checkpoint import point
from symbackprop.derive import LP, Derivation, P, Z, softmax_jacobian_check
from symbackprop.errors import InputError
from symbackprop.functions import A, X, Y
from symbackprop.graph import (
    EXPANDED_LIMIT,
    LOSS,
    SymbolicNetwork,
    activation,
    bias,
    latex_name,
    pre_activation,
    target,
    weight,
)
from symbackprop.primitives import step, to_textbook_form

PRECISION = 40  # decimal digits of the worked example's exact evaluation
WIDTH = 74  # rough glyph budget of one display line (10pt, 2.2 cm margins)
SOFTMAX_DEMO_MAX = 3  # outputs in the concrete softmax + cross-entropy derivation

Row = tuple[str, str]  # (left of the alignment point, from it on)


class PdfLatexError(InputError):
    """pdflatex is missing or failed on the document."""


# --- small printing helpers ------------------------------------------------------------------


@dataclass(frozen=True)
class Display:
    """One numbered displayed equation, as aligned rows (left, right)."""

    tag: str
    rows: tuple[Row, ...]


def _tex(expr: sympy.Expr, names: Mapping[sympy.Symbol, str] | None = None, **kw: object) -> str:
    return _printer(names, **kw).doprint(expr)


def _factor(expr: sympy.Expr, printer: LatexPrinter) -> str:
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


def _factors(expr: sympy.Expr, printer: LatexPrinter) -> list[str]:
    """The factors of a product, each by ``_factor`` (so that a line may break between them)."""
    return [_factor(f, printer) for f in sympy.Mul.make_args(expr)]


def _printer(names: Mapping[sympy.Symbol, str] | None = None, **kw: object) -> LatexPrinter:
    return LatexPrinter({"symbol_names": dict(names or {}), **kw})


def _names(symbols: Iterable[sympy.Symbol]) -> dict[sympy.Symbol, str]:
    return {s: latex_name(s) for s in symbols}


def _width(tex: str) -> int:
    """A rough count of the glyphs a LaTeX string prints (for line breaking only)."""
    s = re.sub(r"\\(left|right|big|Big|operatorname|mathrm|text|,|;|!|quad|qquad)", "", tex)
    s = re.sub(r"\\(frac|tfrac)\{([^{}]*)\}\{([^{}]*)\}", lambda m: max(m[2], m[3], key=len), s)
    s = re.sub(r"\\[A-Za-z]+", "x", s)
    return len(re.sub(r"[{}^_ &]", "", s))


def _signed(pieces: list[str]) -> list[str]:
    """Pieces after the first get a leading '+ ' unless they already start with a sign."""
    return [p if i == 0 or p.startswith(("- ", "+ ")) else f"+ {p}" for i, p in enumerate(pieces)]


def _wrap(left: str, relation: str, pieces: list[str], width: int = WIDTH) -> tuple[Row, ...]:
    """``left relation p1 p2 ...`` broken into aligned rows of at most ``width`` glyphs."""
    rows: list[Row] = []
    current = f"{relation} "
    budget = width - _width(left)
    for piece in pieces:
        candidate = f"{current}{piece} "
        if _width(candidate) > budget and current.strip() not in ("", relation):
            rows.append((left if not rows else "", current.rstrip()))
            current = r"\quad " + piece + " "
            budget = width - (0 if rows else _width(left))
        else:
            current = candidate
    rows.append((left if not rows else "", current.rstrip()))
    return tuple(rows)


def _terms(expr: sympy.Expr, names: Mapping[sympy.Symbol, str], **kw: object) -> list[str]:
    """The printed terms of a sum, signs attached, in the order SymPy prints them."""
    printer = _printer(names, **kw)
    terms = printer._as_ordered_terms(expr) if isinstance(expr, sympy.Add) else [expr]
    out = []
    for i, term in enumerate(terms):
        if term.could_extract_minus_sign():
            out.append("- " + _factors_text(-term, printer))
        else:
            out.append(("+ " if i else "") + _factors_text(term, printer))
    return out


def _factors_text(term: sympy.Expr, printer: LatexPrinter) -> str:
    text = printer.doprint(term)
    if _width(text) <= WIDTH - 12 or not isinstance(term, sympy.Mul):
        return text
    # a long product: print factor by factor so that _wrap may break between them
    return "\u0000".join(_factors(term, printer))


def _broken(
    left: str, relation: str, expr: sympy.Expr, names: Mapping, **kw: object
) -> tuple[Row, ...]:
    pieces: list[str] = []
    for term in _terms(expr, names, **kw):
        pieces.extend(_tidy_numbers(piece) for piece in term.split("\u0000"))
    return _wrap(left, relation, pieces)


def _number(value: float) -> str:
    """Four significant digits; powers of ten written out."""
    text = f"{float(value):.4g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = rf"{mantissa} \times 10^{{{int(exponent)}}}"
    return text


def _operand(value: float) -> str:
    """A number as one factor (or to substitute into a formula): ``_factor``'s rule for it.

    Bracketed exactly when SymPy's precedence for the number is below Mul: a negative one.
    """
    text = _number(value)
    if precedence(sympy.Float(float(value))) < PRECEDENCE["Mul"]:
        return rf"\left({text}\right)"
    return text


def _tidy_numbers(tex: str) -> str:
    """Drop the parentheses of a substituted negative number where the context has its own."""
    tex = re.sub(r"\\left\(\\left\((-[^()]*?)\\right\)\s*\\right\)", r"\\left(\1\\right)", tex)
    return re.sub(r"\^\{\\left\((-[^{}()]*?)\\right\)\}", r"^{\1}", tex)


def _split_core(latex: str) -> tuple[Row, ...]:
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


def _text_tex(text: str) -> str:
    """Mini-markup (``$math$``, ```code```, plain text) to LaTeX text."""
    out = []
    for i, chunk in enumerate(re.split(r"(\$[^$]*\$|`[^`]*`)", text)):
        if i % 2 == 1 and chunk.startswith("$"):
            out.append(chunk)
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
        ):
            body = body.replace(char, repl)
        out.append(rf"\texttt{{{body}}}" if code else body)
    return "".join(out).replace("--", "-{}-")


# --- the document model ----------------------------------------------------------------------


class _Doc:
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

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.sections[-1]["blocks"].append({"kind": "table", "header": header, "rows": rows})

    def core(self, key: str) -> Display:
        for eq in self.d.equations:
            if eq.key == key:
                return Display(str(eq.number), _split_core(eq.latex))
        raise KeyError(key)

    def sub(self, key: str, rows: Iterable[Row]) -> Display:
        number = self.d.number(key)
        self.counts[number] += 1
        return Display(f"{number}.{self.counts[number]}", tuple(rows))

    def math(self, *displays: Display) -> None:
        if displays:
            self.sections[-1]["blocks"].append({"kind": "math", "equations": list(displays)})


# --- facts about the network -----------------------------------------------------------------


def _is_identity(derivation: Derivation, layer: int) -> bool:
    act = derivation.layers[layer - 1].activation
    return not act.softmax and act.expr == X


def identity_runs(derivation: Derivation) -> list[tuple[int, int]]:
    """(first, last) layer of every run of two or more consecutive identity layers."""
    runs, start = [], None
    depth = derivation.network.depth
    for layer in range(1, depth + 2):
        if layer <= depth and _is_identity(derivation, layer):
            start = layer if start is None else start
            continue
        if start is not None and layer - 1 > start:
            runs.append((start, layer - 1))
        start = None
    return runs


def _small(net: SymbolicNetwork) -> bool:
    return net.parameter_count <= EXPANDED_LIMIT


def _act_name(derivation: Derivation, layer: int) -> str:
    act = derivation.layers[layer - 1].activation
    return act.name


def _f_latex(derivation: Derivation, layer: int, arg: str = "z") -> str:
    """f_l applied to ``arg``, as LaTeX (softmax as a vector function)."""
    act = derivation.layers[layer - 1].activation
    if act.softmax:
        return rf"\operatorname{{softmax}}({arg})"
    return _tex(act.expr, {X: arg})


# --- sections --------------------------------------------------------------------------------


def _intro(doc: _Doc) -> str:
    d = doc.d
    net = d.network
    cited = ", ".join(f"({n})" for n in d.cited)
    core = f"(1)--({len(d.equations)})".replace("--", "\u2013")
    return (
        f"This document derives backpropagation for the network `{net.spec.name}` "
        f"(sizes {'-'.join(map(str, net.sizes))}, {net.parameter_count} parameters) with SymPy. "
        f"Equations {core} are the core equations: the generated NumPy module "
        f"`{net.spec.name}.py` cites equations {cited} in its comments as (eq. N). "
        "Every other displayed equation is numbered N.k after the core equation N it "
        "belongs to, and every symbolic step shown was checked with SymPy."
    )


def _section_network(doc: _Doc) -> None:
    d, net = doc.d, doc.d.network
    sizes, depth = net.sizes, net.depth
    doc.section("The network and the notation")
    doc.text(
        f"The network has $n_0 = {sizes[0]}$ inputs and $L = {depth}$ layers. Layer $l$ has "
        "$n_l$ units, a weight matrix $W^{(l)}$, a bias vector $b^{(l)}$ and an activation "
        "$f_l$:"
    )
    rows = []
    for layer in range(1, depth + 1):
        count = sizes[layer] * sizes[layer - 1] + sizes[layer]
        rows.append(
            [
                f"${layer}$",
                f"${sizes[layer]}$",
                f"`{_act_name(d, layer)}`, $f_{{{layer}}}(x) = {_f_latex(d, layer, 'x')}$",
                f"${sizes[layer]} \\times {sizes[layer - 1]}$",
                f"${count}$",
            ]
        )
    doc.table(["layer $l$", "units $n_l$", "activation", "shape of $W^{(l)}$", "parameters"], rows)
    doc.text(
        "Notation: $a^{(0)} = x$ is the input; $z^{(l)} = W^{(l)} a^{(l-1)} + b^{(l)}$ is "
        "the pre-activation and $a^{(l)} = f_l(z^{(l)})$ the activation of layer $l$; the "
        "output is $\\hat y = a^{(L)}$ and the target $y$. The weight $w^{(l)}_{ij}$ "
        "(row $i$, column $j$ of $W^{(l)} \\in \\mathbb{R}^{n_l \\times n_{l-1}}$) connects "
        "neuron $j$ of layer $l-1$ to neuron $i$ of layer $l$, as in `torch.nn.Linear`. "
        "Indices start at 1. The error of layer $l$ is "
        "$\\delta^{(l)} = \\partial \\ell / \\partial z^{(l)}$, for the loss $\\ell$ of one sample."
    )
    doc.text(
        "Batches are rows: the code's `X` has shape $(B, n_0)$, one sample per row, so it "
        "computes $Z^{(l)} = A^{(l-1)} W^{(l)\\top} + b^{(l)}$ for all $B$ samples at once "
        "(names `Z1`, `A1`, `W1`, `b1`; `dZ1` holds $\\delta^{(1)}/B$). The loss is "
        f"`{net.loss.name}`; training uses `{net.spec.train.optimizer}` with learning rate "
        f"$\\eta = {_number(net.spec.train.lr)}$."
    )


def _linear_rows(net: SymbolicNetwork, layer: int, i: int) -> tuple[Row, ...]:
    node = next(n for n in net.neuron_graph if n.symbol == pre_activation(layer, i))
    fan_in = net.sizes[layer - 1]
    pieces = [
        f"{latex_name(weight(layer, i, j))} {latex_name(activation(layer - 1, j))}"
        for j in range(1, fan_in + 1)
    ] + [latex_name(bias(layer, i))]
    written = sum(weight(layer, i, j) * activation(layer - 1, j) for j in range(1, fan_in + 1))
    assert sympy.expand(written + bias(layer, i) - node.expr) == 0
    return _wrap(latex_name(node.symbol), "=", _signed(pieces))


def _section_forward(doc: _Doc) -> None:
    d, net = doc.d, doc.d.network
    doc.section("The forward pass")
    act_key = {True: "forward.softmax", False: "forward.activation"}
    if _small(net):
        names = _names(s for n in net.neuron_graph for s in n.expr.free_symbols | {n.symbol})
        doc.text(
            "Neuron by neuron, each pre-activation is a weighted sum of the previous layer's "
            "outputs plus a bias, and each activation applies $f_l$ to it:"
        )
        for layer in range(1, net.depth + 1):
            softmax = d.layers[layer - 1].activation.softmax
            doc.text(f"Layer {layer} (`{_act_name(d, layer)}`):")
            displays = [
                doc.sub("forward.linear", _linear_rows(net, layer, i))
                for i in range(1, net.sizes[layer] + 1)
            ]
            for node in net.neuron_graph:
                if node.kind == "a" and node.layer == layer:
                    rows = _broken(latex_name(node.symbol), "=", node.expr, names)
                    displays.append(doc.sub(act_key[softmax], rows))
            doc.math(*displays)
    else:
        doc.text(
            f"This network has {net.parameter_count} parameters, more than the "
            f"{EXPANDED_LIMIT} within which this document writes out every neuron, so the "
            "forward pass is given in matrix form only."
        )
    doc.text("In matrix form, for one sample, every layer computes")
    displays = [doc.core("forward.linear"), doc.core("forward.activation")]
    if net.output.softmax:
        displays.append(doc.core("forward.softmax"))
    doc.math(*displays)
    rows = []
    for layer in range(1, net.depth + 1):
        rows_, cols_ = net.sizes[layer], net.sizes[layer - 1]
        shape = rf"W^{{({layer})}} \in \mathbb{{R}}^{{{rows_} \times {cols_}}}"
        left = f"z^{{({layer})}}"
        prev = "x" if layer == 1 else f"a^{{({layer - 1})}}"
        rows.append(
            doc.sub(
                "forward.linear",
                ((left, rf" = W^{{({layer})}} {prev} + b^{{({layer})}},\quad {shape}"),),
            )
        )
    doc.text("Layer by layer, with the shapes:")
    doc.math(*rows)
    doc.text("and for a batch whose samples are the rows of $A^{(0)} = X$ (the code's convention):")
    doc.math(
        doc.sub(
            "forward.linear",
            (
                (
                    "Z^{(l)}",
                    r" = A^{(l-1)} W^{(l)\top} + \mathbf{1}\, b^{(l)\top},\quad A^{(l)} = "
                    r"f_l\left(Z^{(l)}\right)",
                ),
            ),
        )
    )


def _section_identity(doc: _Doc, runs: list[tuple[int, int]]) -> None:
    _d, net = doc.d, doc.d.network
    doc.section("Why the non-linearity matters")
    doc.text(
        "Without a non-linear activation, stacked layers are no more expressive than one: "
        "the composition of affine maps is affine. This network has consecutive identity "
        "layers, so here is the collapse, checked by SymPy."
    )
    for first, last in runs:
        for lower in range(first, last):
            upper = lower + 1
            n0, n1, n2 = net.sizes[lower - 1], net.sizes[lower], net.sizes[upper]
            actual = max(n0, n1, n2) <= 3
            if not actual:
                n0 = n1 = n2 = 2
            W1 = sympy.Matrix(
                [[weight(lower, i, j) for j in range(1, n0 + 1)] for i in range(1, n1 + 1)]
            )
            W2 = sympy.Matrix(
                [[weight(upper, i, j) for j in range(1, n1 + 1)] for i in range(1, n2 + 1)]
            )
            b1 = sympy.Matrix([bias(lower, i) for i in range(1, n1 + 1)])
            b2 = sympy.Matrix([bias(upper, i) for i in range(1, n2 + 1)])
            a = sympy.Matrix([activation(lower - 1, j) for j in range(1, n0 + 1)])
            stacked = W2 * (W1 * a + b1) + b2
            W_eff, b_eff = W2 * W1, W2 * b1 + b2
            difference = (stacked - (W_eff * a + b_eff)).applyfunc(sympy.expand)
            assert difference == sympy.zeros(n2, 1)
            prev = "x" if lower == 1 else f"a^{{({lower - 1})}}"
            where = (
                ""
                if actual
                else f" (entries shown for a {n2}×{n1}×{n0} instance of the same shapes)"
            )
            doc.text(f"Layers {lower} and {upper} are both identity layers{where}:")
            names = _names(
                W1.free_symbols
                | W2.free_symbols
                | b1.free_symbols
                | b2.free_symbols
                | a.free_symbols
            )
            displays = [
                doc.sub(
                    "forward.linear",
                    (
                        (
                            f"z^{{({upper})}}",
                            rf" = W^{{({upper})}}\left(W^{{({lower})}} {prev} + "
                            rf"b^{{({lower})}}\right) + b^{{({upper})}}",
                        ),
                        (
                            "",
                            rf" = \underbrace{{W^{{({upper})}} W^{{({lower})}}}}"
                            rf"_{{W_{{\mathrm{{eff}}}}}} {prev} + "
                            rf"\underbrace{{W^{{({upper})}} b^{{({lower})}} + b^{{({upper})}}}}"
                            r"_{b_{\mathrm{eff}}}",
                        ),
                    ),
                )
            ]
            for i in range(n2):
                for j in range(n0):
                    rows = _broken(
                        rf"\left(W_{{\mathrm{{eff}}}}\right)_{{{i + 1}{j + 1}}}",
                        "=",
                        W_eff[i, j],
                        names,
                    )
                    displays.append(doc.sub("forward.linear", rows))
                rows = _broken(
                    rf"\left(b_{{\mathrm{{eff}}}}\right)_{{{i + 1}}}", "=", b_eff[i], names
                )
                displays.append(doc.sub("forward.linear", rows))
            doc.math(*displays)
    doc.text(
        "SymPy expanded $W^{(l+1)}(W^{(l)} a + b^{(l)}) + b^{(l+1)} - (W_{\\mathrm{eff}} a + "
        "b_{\\mathrm{eff}})$ to zero. A non-linear $f_l$ between the layers is what breaks "
        "this collapse and lets depth add expressive power."
    )


def _section_loss(doc: _Doc) -> None:
    _d, net = doc.d, doc.d.network
    doc.section("The loss")
    doc.text(
        f"The loss `{net.loss.name}` compares each output $\\hat y_k$ with its target $y_k$; "
        "the loss of one sample is the sum over the outputs and the training loss $L$ is "
        "the mean over the batch"
        + (", plus an $\\ell_2$ penalty on the weights" if net.spec.l2 else "")
        + ":"
    )
    displays = [doc.core("loss")]
    n = net.sizes[-1]
    if _small(net):
        node = net.neuron_graph[-1]
        names = _names(node.expr.free_symbols) | {LOSS: r"\ell"}
        displays.append(doc.sub("loss", _broken(r"\ell", "=", node.expr, names)))
    else:
        displays.append(
            doc.sub(
                "loss",
                (
                    (
                        r"\ell",
                        rf" = \sum_{{k=1}}^{{{n}}} \ell\left(a^{{({net.depth})}}_k, y_k\right)",
                    ),
                ),
            )
        )
    doc.math(*displays)
    if net.spec.l2:
        doc.text(f"Here $\\lambda = {_number(net.spec.l2)}$; the biases are not penalized.")


def _section_chain(doc: _Doc) -> None:
    _d, net = doc.d, doc.d.network
    depth = net.depth
    doc.section("The chain rule")
    doc.text("The loss of one sample is a composite function of the parameters:")
    inner = r"W^{(1)} x + b^{(1)}"
    if depth <= 4:
        for layer in range(1, depth):
            inner = rf"W^{{({layer + 1})}} f_{{{layer}}}\left({inner}\right) + b^{{({layer + 1})}}"
        composite = rf"\ell\left(f_{{{depth}}}\left({inner}\right), y\right)"
    else:
        composite = (
            rf"\ell\left(f_{{{depth}}}\left(W^{{({depth})}} f_{{{depth - 1}}}\left(\cdots "
            rf"f_1\left({inner}\right)\cdots\right) + b^{{({depth})}}\right), y\right)"
        )
    doc.math(doc.sub("loss", ((r"\ell", " = " + composite),)))
    doc.text(
        "The chain rule splits its derivative into one factor per stage. For the first "
        "layer's weights, the longest path:"
    )
    factors = [
        rf"\frac{{\partial \ell}}{{\partial a^{{({depth})}}}}",
        rf"\frac{{\partial a^{{({depth})}}}}{{\partial z^{{({depth})}}}}",
    ]
    for layer in range(depth - 1, 0, -1):
        factors += [
            rf"\frac{{\partial z^{{({layer + 1})}}}}{{\partial a^{{({layer})}}}}",
            rf"\frac{{\partial a^{{({layer})}}}}{{\partial z^{{({layer})}}}}",
        ]
    factors.append(r"\frac{\partial z^{(1)}}{\partial W^{(1)}}")
    rows = []
    for start in range(0, len(factors), 5):
        chunk = " ".join(factors[start : start + 5])
        rows.append(
            ("", r"\quad " + chunk)
            if start
            else (r"\frac{\partial \ell}{\partial W^{(1)}}", " = " + chunk)
        )
    doc.math(doc.sub("loss", rows))
    doc.text("The factors are")
    doc.math(
        doc.sub(
            "loss",
            (
                (
                    r"\frac{\partial z^{(l+1)}}{\partial a^{(l)}}",
                    r" = W^{(l+1)},\quad "
                    r"\frac{\partial z^{(l)}_i}{\partial w^{(l)}_{ij}} = a^{(l-1)}_j,\quad "
                    r"\frac{\partial z^{(l)}_i}{\partial b^{(l)}_i} = 1",
                ),
            ),
        ),
        doc.sub(
            "loss",
            (
                (
                    r"\frac{\partial a^{(l)}}{\partial z^{(l)}}",
                    r" = \operatorname{diag}\left(f_l'\left(z^{(l)}\right)\right)"
                    r"\ \text{for an elementwise } f_l",
                ),
            ),
        ),
        doc.sub(
            "loss",
            (
                (
                    r"\delta^{(l)}",
                    r" = \frac{\partial \ell}{\partial z^{(l)}}"
                    r" = \frac{\partial \ell}{\partial z^{(l+1)}} "
                    r"\frac{\partial z^{(l+1)}}{\partial a^{(l)}}"
                    r" \frac{\partial a^{(l)}}{\partial z^{(l)}}",
                ),
            ),
        ),
    )
    doc.text(
        "Evaluating the product from the loss end keeps one vector, $\\delta^{(l)}$, per "
        "layer and reuses it for the layer below: that is backpropagation, and its cost is "
        "linear in the depth. What remains is each activation's derivative, the output error "
        "$\\delta^{(L)}$, and the recursion."
    )


def _section_activations(doc: _Doc) -> None:
    d, _net = doc.d, doc.d.network
    doc.section("The derivatives of the activations")
    doc.text(
        "SymPy differentiates each activation. First the function as a student writes it, "
        "with the smooth primitives spelled out in exp and log; then SymPy's derivative of the "
        "function as the code evaluates it, and, where one exists that is as accurate as the "
        "form in $z$ (checked against 30-digit values for $|z|$ up to 50), the same derivative "
        "written through the layer's output $a = f(z)$, which the backward pass has already "
        "computed."
    )
    seen: set[str] = set()
    for index, ad in enumerate(d.layers, start=1):
        act = ad.activation
        if act.softmax:
            doc.text(
                f"Layer {index} is a softmax layer, which is not elementwise; its Jacobian "
                "is derived with the output error below."
            )
            continue
        if act.name in seen:
            continue
        seen.add(act.name)
        used = [str(i) for i, o in enumerate(d.layers, start=1) if o.activation.name == act.name]
        kind = "custom activation" if act.custom else "activation"
        layers = "layer" + ("s " if len(used) > 1 else " ") + ", ".join(used)
        doc.text(f"The {kind} `{act.name}` ({layers}):")
        zn = {Z: "z"}
        book = to_textbook_form(ad.f)
        displays = [doc.sub(f"activation.{act.name}", _broken("f(z)", "=", book, zn))]
        if ad.f != book:
            displays.append(doc.sub(f"activation.{act.name}", (("", " = " + _tex(ad.f, zn)),)))
        if ad.textbook != ad.derivative:
            displays.append(
                doc.sub(
                    f"activation.{act.name}",
                    _broken(
                        rf"\frac{{d}}{{dz}}\left({_tex(book, zn)}\right)", "=", ad.textbook, zn
                    ),
                )
            )
        doc.math(*displays)
        doc.text("and SymPy's derivative, as the generated code uses it:")
        doc.math(doc.core(f"activation.{act.name}"))
        if ad.derivative.has(step):
            doc.text(
                "Here $\\operatorname{step}(z) = 1$ for $z > 0$ and $0$ otherwise: the kink at "
                "$z = 0$ has no derivative, and the convention (PyTorch's) takes the right-hand "
                "value at 0 to be 0 for ReLU and the slope for leaky ReLU."
            )


def _softmax_delta(n: int, k: int, zs: list, ps: list, ys: list, q: sympy.Expr) -> sympy.Expr:
    """The softmax output error for output k from the q rule, in ps and ys."""
    qs = [q.xreplace({P: p, Y: y, LP: sympy.log(p)}) for p, y in zip(ps, ys, strict=False)]
    return qs[k] - ps[k] * sympy.Add(*qs)


def _cross_entropy_like(d: Derivation) -> bool:
    """True when the softmax output error reduces to yhat - y once sum_j y_j = 1."""
    n = d.network.sizes[-1]
    ps = sympy.symbols(f"p1:{n + 1}", real=True)
    ys = sympy.symbols(f"y1:{n + 1}", real=True)
    assert d.output.q is not None
    expr = _softmax_delta(n, 0, [], list(ps), list(ys), d.output.q)
    expr = expr.subs(ys[-1], 1 - sum(ys[:-1]))
    return sympy.expand(expr - (ps[0] - ys[0])) == 0


def _section_output_softmax(doc: _Doc) -> None:
    d, net = doc.d, doc.d.network
    n = min(net.sizes[-1], SOFTMAX_DEMO_MAX)
    assert softmax_jacobian_check(n).shape == (n, n)
    z = [sympy.Symbol(f"z_{k}", real=True) for k in range(1, n + 1)]
    y = [sympy.Symbol(f"y_{k}", real=True) for k in range(1, n + 1)]
    names = {s: f"z_{{{i}}}" for i, s in enumerate(z, 1)} | {
        s: f"y_{{{i}}}" for i, s in enumerate(y, 1)
    }
    total = sympy.Add(*(sympy.exp(v) for v in z))
    p = [sympy.exp(v) / total for v in z]
    doc.text(
        "With a softmax output, every $\\hat y_j$ depends on every $z^{(L)}_k$. SymPy's "
        f"Jacobian of softmax (computed for $n = {n}$ and compared entry by entry) is"
    )
    doc.math(
        doc.sub(
            "delta.output",
            (
                (
                    r"\frac{\partial \hat y_j}{\partial z_k}",
                    r" = \hat y_j\left(\delta_{jk} - \hat y_k\right),"
                    r"\quad \text{i.e.}\quad J = \operatorname{diag}(\hat y) - \hat y \hat y^\top",
                ),
            ),
        )
    )
    if _cross_entropy_like(d) and net.loss.name == "cross_entropy":
        loss = -sympy.Add(*(yj * sympy.log(pj) for yj, pj in zip(y, p, strict=False)))
        raw = sympy.diff(loss, z[0])
        simple = sympy.simplify(raw)
        assert sympy.simplify(raw - simple) == 0
        regrouped = p[0] * sympy.Add(*y) - y[0]
        assert sympy.simplify(simple - regrouped) == 0
        final = sympy.simplify(simple.subs(y[-1], 1 - sympy.Add(*y[:-1])))
        assert sympy.simplify(final - (p[0] - y[0]).subs(y[-1], 1 - sympy.Add(*y[:-1]))) == 0
        doc.text(
            f"Softmax and cross-entropy together simplify. SymPy derives it for $n = {n}$ outputs "
            "(writing $z_k$ for $z^{(L)}_k$); the same steps hold for any $n$. The loss of one "
            "sample:"
        )
        displays = [doc.sub("delta.output", _broken(r"\ell", "=", loss, names))]
        displays.append(
            doc.sub("delta.output", _broken(r"\frac{\partial \ell}{\partial z_1}", "=", raw, names))
        )
        displays.append(doc.sub("delta.output", _broken("", "=", simple, names)))
        ysum = " + ".join(f"y_{{{j}}}" for j in range(1, n + 1))
        displays.append(doc.sub("delta.output", (("", rf" = \hat y_1 \left({ysum}\right) - y_1"),)))
        doc.math(*displays)
        doc.text(
            "The target is a probability vector (one-hot for a class label), so "
            f"${ysum} = 1$, and the error of the output layer is simply"
        )
        doc.math(
            doc.sub(
                "delta.output",
                (
                    (
                        r"\frac{\partial \ell}{\partial z_1}",
                        r" = \hat y_1 - y_1,\quad "
                        r"\delta^{(L)} = \hat y - y",
                    ),
                ),
            )
        )
        doc.text(
            "In general (the rule the generated code evaluates, for any loss of the probabilities):"
        )
        doc.math(doc.core("delta.output"))
    else:
        doc.text(
            "By the chain rule through the Jacobian, "
            "$\\partial \\ell/\\partial z_k = \\sum_j \\partial \\ell/\\partial \\hat y_j\\, "
            "\\hat y_j(\\delta_{jk} - \\hat y_k) = q_k - \\hat y_k \\sum_j q_j$ with "
            "$q_j = \\hat y_j\\, \\partial \\ell / \\partial \\hat y_j$, which SymPy gives as:"
        )
        doc.math(doc.core("delta.output"))


def _section_output(doc: _Doc) -> None:
    d, _net = doc.d, doc.d.network
    out = d.output
    doc.section("The output error")
    doc.text(
        "The backward pass starts at the output layer with "
        "$\\delta^{(L)} = \\partial \\ell / \\partial z^{(L)}$."
    )
    if out.softmax:
        _section_output_softmax(doc)
        return
    assert out.delta is not None and out.generic_delta is not None
    ad = d.layers[-1]
    names = {Z: "z", A: "a", Y: "y"}
    doc.text(
        "Each output is $\\hat y_k = f_L(z^{(L)}_k)$ and depends on its own $z^{(L)}_k$ only, so "
        "by the chain rule (writing $z$, $a$, $y$ for one output's $z^{(L)}_k$, $a^{(L)}_k$, "
        "$y_k$):"
    )
    displays = [
        doc.sub(
            "delta.output",
            _broken(
                r"\delta^{(L)}_k = \frac{\partial \ell}{\partial \hat y_k} f_L'\left(z\right)",
                "=",
                out.generic_delta,
                names,
            ),
        )
    ]
    if ad.activation.log_output is not None:
        doc.math(*displays)
        doc.text(
            "The probability output is better handled through the logit: SymPy writes the loss "
            "with $\\log f(z)$ and $\\log(1 - f(z))$ in overflow-free form,"
        )
        displays = [
            doc.sub("delta.output", _broken(r"\ell", "=", out.loss.xreplace({A: ad.f}), names))
        ]
        in_logit = out.loss.xreplace({A: ad.f})
        raw = sympy.diff(in_logit, Z)
        displays.append(
            doc.sub("delta.output", _broken(r"\frac{\partial \ell}{\partial z}", "=", raw, names))
        )
        simple = out.delta.xreplace({A: ad.f})
        assert sympy.simplify(sympy.expand(raw - simple).rewrite(sympy.exp)) == 0
        displays.append(doc.sub("delta.output", _broken("", "=", simple, names)))
        doc.math(*displays)
        doc.text("and with $a = f(z)$ the output error is")
    else:
        doc.math(*displays)
        doc.text("which SymPy simplifies to")
    doc.math(doc.core("delta.output"))


def _prime(ad, z: sympy.Symbol) -> sympy.Expr:  # noqa: ANN001 - ActivationDerivative
    return ad.derivative.xreplace({Z: z})


def _section_backward(doc: _Doc) -> None:
    d, net = doc.d, doc.d.network
    depth = net.depth
    doc.section("The backward recursion and the gradients")
    doc.text(
        "Going down one layer multiplies by $W^{(l+1)\\top}$ and, elementwise, by the "
        "derivative of the activation:"
    )
    doc.math(doc.core("delta.hidden"))
    displays = []
    for layer in range(depth - 1, 0, -1):
        ad = d.layers[layer - 1]
        fp = _factor(ad.derivative, _printer({Z: f"z^{{({layer})}}"}))
        displays.append(
            doc.sub(
                "delta.hidden",
                (
                    (
                        f"\\delta^{{({layer})}}",
                        rf" = \left(W^{{({layer + 1})\top}} \delta^{{({layer + 1})}}\right) "
                        rf"\odot {fp}",
                    ),
                ),
            )
        )
    if displays:
        doc.text("For this network:")
        doc.math(*displays)
    doc.text(
        "The gradients of the parameters follow from $\\partial z^{(l)}_i / \\partial w^{(l)}_{ij} "
        "= a^{(l-1)}_j$:"
    )
    doc.math(doc.core("grad.W"), doc.core("grad.b"))
    displays = []
    for layer in range(depth, 0, -1):
        prev = "x^\\top" if layer == 1 else f"a^{{({layer - 1})\\top}}"
        displays.append(
            doc.sub(
                "grad.W",
                (
                    (
                        rf"\frac{{\partial \ell}}{{\partial W^{{({layer})}}}}",
                        rf" = \delta^{{({layer})}} {prev} \in "
                        rf"\mathbb{{R}}^{{{net.sizes[layer]} \times {net.sizes[layer - 1]}}}",
                    ),
                ),
            )
        )
        displays.append(
            doc.sub(
                "grad.b",
                (
                    (
                        rf"\frac{{\partial \ell}}{{\partial b^{{({layer})}}}}",
                        rf" = \delta^{{({layer})}} \in \mathbb{{R}}^{{{net.sizes[layer]}}}",
                    ),
                ),
            )
        )
    doc.text("Per layer, for one sample:")
    doc.math(*displays)
    if _small(net):
        _per_weight(doc)


def _output_delta_expr(d: Derivation, k: int) -> sympy.Expr:
    """delta^{(L)}_k for this network in the symbols z, a, y of output k (scalar graph names)."""
    net, out = d.network, d.output
    depth, n = net.depth, net.sizes[-1]
    if out.softmax:
        assert out.q is not None
        ps = [activation(depth, j) for j in range(1, n + 1)]
        ys = [target(j) for j in range(1, n + 1)]
        expr = _softmax_delta(n, k - 1, [], ps, ys, out.q)
        if _cross_entropy_like(d):
            return ps[k - 1] - ys[k - 1]
        return expr
    assert out.delta is not None
    return out.delta.xreplace({Z: pre_activation(depth, k), A: activation(depth, k), Y: target(k)})


def _path_factors(net: SymbolicNetwork, layer: int, i: int, param: str) -> list[str]:
    depth = net.depth
    idx = {m: f"k_{{{m}}}" for m in range(layer + 1, depth + 1)}
    idx[layer] = str(i)
    out_idx = "m" if net.output.softmax else idx[depth]
    sums = "".join(rf"\sum_{{{idx[m]}}}" for m in range(layer + 1, depth + 1))
    if net.output.softmax:
        sums += r"\sum_{m}"
    factors = [
        rf"{sums} \frac{{\partial \ell}}{{\partial a^{{({depth})}}_{{{out_idx}}}}}",
        rf"\frac{{\partial a^{{({depth})}}_{{{out_idx}}}}}"
        rf"{{\partial z^{{({depth})}}_{{{idx[depth]}}}}}",
    ]
    for m in range(depth - 1, layer - 1, -1):
        factors += [
            rf"\frac{{\partial z^{{({m + 1})}}_{{{idx[m + 1]}}}}}"
            rf"{{\partial a^{{({m})}}_{{{idx[m]}}}}}",
            rf"\frac{{\partial a^{{({m})}}_{{{idx[m]}}}}}{{\partial z^{{({m})}}_{{{idx[m]}}}}}",
        ]
    factors.append(rf"\frac{{\partial z^{{({layer})}}_{{{i}}}}}{{\partial {param}}}")
    return factors


def _delta_one_level(d: Derivation, layer: int, i: int, names: Mapping, **kw: object) -> list[str]:
    """delta^{(layer)}_i expanded one level, as LaTeX pieces that may go on separate lines."""
    net = d.network
    times = r" \cdot " if kw.get("mul_symbol") == "dot" else " "
    printer = _printer(names, **kw)
    if layer == net.depth:
        return [_tidy_numbers(_factor(_output_delta_expr(d, i), printer))]
    terms = [
        f"{names[weight(layer + 1, k, i)]}{times}"
        f"{names[sympy.Symbol(f'delta{layer + 1}_{k}', real=True)]}"
        for k in range(1, net.sizes[layer + 1] + 1)
    ]
    prime = _prime(d.layers[layer - 1], pre_activation(layer, i))
    factors = _factors(prime, printer)
    pieces = [rf"\left({' + '.join(terms)}\right)"] + [
        times.strip() + " " + f if times.strip() else f for f in factors
    ]
    return [_tidy_numbers(p) for p in pieces]


def _scalar_names(net: SymbolicNetwork) -> dict[sympy.Symbol, str]:
    symbols = {s for n in net.neuron_graph for s in n.expr.free_symbols | {n.symbol}}
    for layer in range(1, net.depth + 1):
        symbols |= {
            sympy.Symbol(f"delta{layer}_{i}", real=True) for i in range(1, net.sizes[layer] + 1)
        }
    return _names(symbols)


def _per_weight(doc: _Doc) -> None:
    d, net = doc.d, doc.d.network
    names = _scalar_names(net)
    doc.text(
        "Weight by weight, each derivative is a sum over the paths from the weight to the loss "
        "of products of local partial derivatives; the sums over the later layers' neurons are "
        "exactly $\\delta^{(l)}_i$, expanded here one level"
        + (
            " (the $\\ell_2$ term adds $\\lambda w^{(l)}_{ij}$ to $\\partial L / \\partial "
            "w^{(l)}_{ij}$)"
            if net.spec.l2
            else ""
        )
        + ":"
    )
    for layer in range(net.depth, 0, -1):
        displays = []
        for i in range(1, net.sizes[layer] + 1):
            for j in range(1, net.sizes[layer - 1] + 1):
                w, a = weight(layer, i, j), activation(layer - 1, j)
                left = rf"\frac{{\partial \ell}}{{\partial {latex_name(w)}}}"
                rows = list(_wrap(left, "=", _path_factors(net, layer, i, latex_name(w))))
                rows.append(("", rf" = \delta^{{({layer})}}_{{{i}}} {latex_name(a)}"))
                rows += _wrap("", "=", [*_delta_one_level(d, layer, i, names), latex_name(a)])
                displays.append(doc.sub("grad.W", rows))
        doc.text(f"Layer {layer}, weights:")
        doc.math(*displays)
        displays = [
            doc.sub(
                "grad.b",
                (
                    (
                        rf"\frac{{\partial \ell}}{{\partial {latex_name(bias(layer, i))}}}",
                        rf" = \delta^{{({layer})}}_{{{i}}} \cdot 1 = \delta^{{({layer})}}_{{{i}}}",
                    ),
                ),
            )
            for i in range(1, net.sizes[layer] + 1)
        ]
        doc.text(f"Layer {layer}, biases:")
        doc.math(*displays)


# --- the worked example ----------------------------------------------------------------------


@dataclass(frozen=True)
class WorkedExample:
    """One sample's forward and backward pass, evaluated exactly (40 digits) on the graph."""

    params: dict[str, np.ndarray]
    x: np.ndarray
    y: np.ndarray
    values: dict[sympy.Symbol, sympy.Float]  # every node and input of the neuron graph
    adjoints: dict[sympy.Symbol, sympy.Float]  # d loss / d symbol, per sample (no l2)
    loss: float  # with the l2 term
    gradients: dict[str, np.ndarray]  # with the l2 term


def worked_example(derivation: Derivation, seed: int = 0) -> WorkedExample:
    """Parameters and data as the certificate's check point (batch 1), evaluated exactly.

    The point is ``checkpoint.point`` (the module's ``init_params(seed)`` as
    ``symbackprop.initialize`` computes it, with the certificate's bias draw); the numbers
    are ``exact.evaluate``'s, the certificate's own exact evaluation of the neuron-level graph.
    Nothing here generates or runs the module.
    """
    net = derivation.network
    params, X_, Y_ = point(net, batch=1, seed=seed)
    result = exact.evaluate(net, params, X_, Y_)
    adjoints = dict(result.adjoints[0])
    adjoints.update(result.shared)
    return WorkedExample(
        params, X_[0], Y_[0], dict(result.values[0]), adjoints, result.loss, result.gradients
    )


def _section_example(doc: _Doc) -> None:
    d, net = doc.d, doc.d.network
    ex = worked_example(d)
    depth = net.depth
    names = _scalar_names(net)
    val = dict(ex.values)
    for layer in range(1, depth + 1):
        for i in range(1, net.sizes[layer] + 1):
            val[sympy.Symbol(f"delta{layer}_{i}", real=True)] = ex.adjoints[
                pre_activation(layer, i)
            ]
    nums = {s: _operand(v) for s, v in val.items()}
    dot: dict[str, object] = {"mul_symbol": "dot"}

    doc.section("A worked example")
    doc.text(
        "One forward and one backward pass with numbers, for one sample ($B = 1$, so "
        "$L = \\ell$" + (" plus the $\\ell_2$ term" if net.spec.l2 else "") + "). The parameters "
        "are the generated module's `init_params(seed=0)` with the biases drawn as in the "
        "certificate's check point (seed 0), and so are the input and the target. Every number "
        "comes from an exact (40-digit) evaluation of the neuron-level graph, independent of "
        "the generated code; the test suite checks that the generated module computes the same "
        "values to $10^{-12}$. Numbers are shown to four significant digits."
    )
    data = [(latex_name(s), _number(val[s])) for s in net.inputs() + net.targets()]
    doc.text("Input and target: " + ", ".join(f"${n} = {v}$" for n, v in data) + ".")
    displays = []
    for layer in range(1, depth + 1):
        W, b = net.weights(layer), net.biases(layer)
        matrix = r" \\ ".join(" & ".join(_number(val[s]) for s in W.row(i)) for i in range(W.rows))
        vector = " & ".join(_number(val[s]) for s in b)
        displays.append(
            doc.sub(
                "forward.linear",
                (
                    (
                        f"W^{{({layer})}}",
                        rf" = \begin{{pmatrix}} {matrix} \end{{pmatrix}},\quad "
                        rf"b^{{({layer})}} = \begin{{pmatrix}} {vector} \end{{pmatrix}}^\top",
                    ),
                ),
            )
        )
    doc.text("The parameters:")
    doc.math(*displays)

    doc.text("Forward pass:")
    for layer in range(1, depth + 1):
        softmax = d.layers[layer - 1].activation.softmax
        displays = []
        for node in net.neuron_graph:
            if node.layer != layer or node.kind == "loss":
                continue
            if node.kind == "z":
                i = int(node.symbol.name.split("_")[1])
                fan_in = net.sizes[layer - 1]
                rows = list(_linear_rows(net, layer, i))
                pieces = [
                    f"{nums[weight(layer, i, j)]} \\cdot {nums[activation(layer - 1, j)]}"
                    for j in range(1, fan_in + 1)
                ] + [nums[bias(layer, i)]]
                rows += _wrap("", "=", _signed(pieces))
                key = "forward.linear"
            else:
                rows = list(_broken(latex_name(node.symbol), "=", node.expr, names))
                rows += _broken("", "=", node.expr, nums, **dot)
                key = "forward.softmax" if softmax else "forward.activation"
            rows.append(("", f" = {_number(val[node.symbol])}"))
            displays.append(doc.sub(key, rows))
        doc.math(*displays)
    node = net.neuron_graph[-1]
    rows = list(_broken(r"\ell", "=", node.expr, names))
    rows += _broken("", "=", node.expr, nums, **dot)
    rows.append(("", f" = {_number(val[LOSS])}"))
    displays = [doc.sub("loss", rows)]
    if net.spec.l2:
        displays.append(
            doc.sub(
                "loss",
                (
                    (
                        r"L",
                        rf" = \ell + \frac{{\lambda}}{{2}} \sum_{{l,i,j}} "
                        rf"\left(w^{{(l)}}_{{ij}}\right)^2 = {_number(ex.loss)}",
                    ),
                ),
            )
        )
    doc.text("The loss:")
    doc.math(*displays)

    doc.text("Backward pass: the output error, then the recursion, layer by layer:")
    for layer in range(depth, 0, -1):
        displays = []
        for i in range(1, net.sizes[layer] + 1):
            dsym = sympy.Symbol(f"delta{layer}_{i}", real=True)
            if layer == depth:
                expr = _output_delta_expr(d, i)
                key = "delta.output"
            else:
                expr = sympy.Add(
                    *(
                        weight(layer + 1, k, i) * sympy.Symbol(f"delta{layer + 1}_{k}", real=True)
                        for k in range(1, net.sizes[layer + 1] + 1)
                    )
                )
                expr = expr * _prime(d.layers[layer - 1], pre_activation(layer, i))
                key = "delta.hidden"
            check = to_textbook_form(expr).xreplace(val).evalf(PRECISION)
            assert abs(check - val[dsym]) <= 1e-25 * max(1, abs(val[dsym])), (
                dsym,
                check,
                val[dsym],
            )
            if layer == depth:  # on its own here, not a factor: no brackets
                rows = list(_broken(latex_name(dsym), "=", expr, names))
                rows += _broken("", "=", expr, nums, **dot)
            else:
                rows = list(_wrap(latex_name(dsym), "=", _delta_one_level(d, layer, i, names)))
                rows += _wrap("", "=", _delta_one_level(d, layer, i, nums, **dot))
            rows.append(("", f" = {_number(val[dsym])}"))
            displays.append(doc.sub(key, rows))
        doc.math(*displays)

    doc.text(
        "The gradient entries"
        + (" (with $\\lambda w$ for the weights)" if net.spec.l2 else "")
        + ":"
    )
    for layer in range(depth, 0, -1):
        displays = []
        for i in range(1, net.sizes[layer] + 1):
            dsym = sympy.Symbol(f"delta{layer}_{i}", real=True)
            for j in range(1, net.sizes[layer - 1] + 1):
                w, a = weight(layer, i, j), activation(layer - 1, j)
                extra = rf" + \lambda {latex_name(w)}" if net.spec.l2 else ""
                extra_n = rf" + {_operand(net.spec.l2)} \cdot {nums[w]}" if net.spec.l2 else ""
                value = ex.gradients[f"W{layer}"][i - 1, j - 1]
                displays.append(
                    doc.sub(
                        "grad.W",
                        (
                            (
                                rf"\frac{{\partial L}}{{\partial {latex_name(w)}}}",
                                rf" = {latex_name(dsym)} {latex_name(a)}{extra} = {nums[dsym]} "
                                rf"\cdot {nums[a]}{extra_n}"
                                rf" = {_number(value)}",
                            ),
                        ),
                    )
                )
            value = ex.gradients[f"b{layer}"][i - 1]
            displays.append(
                doc.sub(
                    "grad.b",
                    (
                        (
                            rf"\frac{{\partial L}}{{\partial {latex_name(bias(layer, i))}}}",
                            rf" = {latex_name(dsym)} = {_number(value)}",
                        ),
                    ),
                )
            )
        doc.math(*displays)
    lr = net.spec.train.lr
    w = weight(1, 1, 1)
    g = ex.gradients["W1"][0, 0]
    doc.text(
        f"One gradient-descent step with $\\eta = {_number(lr)}$ would then move, for example,"
    )
    doc.math(
        doc.sub(
            "update",
            (
                (
                    latex_name(w),
                    rf" \leftarrow {nums[w]} - {_operand(lr)} \cdot {_operand(g)}"
                    rf" = {_number(float(val[w]) - lr * g)}",
                ),
            ),
        )
    )


def _section_update(doc: _Doc) -> None:
    net = doc.d.network
    train = net.spec.train
    doc.section("Gradient descent")
    doc.text("Every parameter moves a small step against its gradient:")
    doc.math(doc.core("update"))
    doc.math(
        doc.sub(
            "update",
            (
                (
                    "W^{(l)}",
                    r" \leftarrow W^{(l)} - \eta \frac{\partial L}{\partial W^{(l)}},\quad "
                    r"b^{(l)} \leftarrow b^{(l)} - \eta \frac{\partial L}{\partial b^{(l)}},\quad "
                    rf"\eta = {_number(train.lr)}",
                ),
            ),
        )
    )
    doc.text(
        f"The spec sets learning rate {_number(train.lr)}, optimizer `{train.optimizer}`, "
        f"{train.epochs} epochs and batches of {train.batch_size}; the generated module's "
        "`train_step` is the plain step above, and `fit` also offers momentum and Adam. "
        "Training repeats five steps:"
    )
    d = doc.d
    fwd = [d.number("forward.linear"), d.number("forward.activation")]
    if net.output.softmax:
        fwd.append(d.number("forward.softmax"))
    doc.items(
        [
            "forward: compute every $z^{(l)}$ and $a^{(l)}$ for a batch, equations "
            + ", ".join(f"({n})" for n in fwd)
            + ";",
            f"loss: evaluate $L$, equation ({d.number('loss')});",
            f"backpropagate: $\\delta^{{(L)}}$ by ({d.number('delta.output')}), then "
            f"$\\delta^{{(l)}}$ by ({d.number('delta.hidden')}) and the gradients by "
            f"({d.number('grad.W')}) and ({d.number('grad.b')});",
            f"update: every parameter by ({d.number('update')});",
            "repeat with the next batch, for every batch of every epoch.",
        ],
        ordered=True,
    )


def _section_certificate(doc: _Doc, certificate: object | None) -> None:
    net = doc.d.network
    doc.section("The certificate")
    if certificate is None:
        doc.text(
            "The certificate was not run for this document. Run `symbackprop check "
            f"{net.spec.name}` to compare every gradient of the generated module with "
            "finite differences, the exact symbolic gradient and PyTorch."
        )
        return
    cert = certificate
    view = f" The exact witness used {cert.exact_view}." if cert.exact_view else ""
    doc.text(
        f"The generated gradients were compared with independent witnesses "
        f"({', '.join(cert.witnesses)}) on a batch of {cert.batch} samples (loss "
        f"${_number(cert.loss)}$).{view} Per parameter and witness, the largest absolute and "
        "relative errors:"
    )
    rows = []
    for p in cert.parameters:
        for r in p.results:
            rows.append(
                [
                    f"`{p.name}`",
                    "$" + r"\times".join(map(str, p.shape)) + "$",
                    r.witness,
                    str(r.checked),
                    f"{r.max_abs:.2e}",
                    f"{r.max_rel:.2e}",
                    "pass" if r.passed else "FAIL",
                ]
            )
    doc.table(
        ["parameter", "shape", "witness", "entries", "max abs err", "max rel err", "result"], rows
    )
    if getattr(cert, "large_inputs", None) is not None:  # the module at inputs x1e3, logits +-1e3
        doc.text(" ".join(line.strip() for line in cert.large_input_row().splitlines()) + ".")
    if cert.skipped:
        doc.items([f"skipped {w}: {why}" for w, why in cert.skipped])
    failed = sum(not p.passed for p in cert.parameters)
    verdict = "PASS" if cert.passed else "FAIL"
    doc.text(
        f"{verdict}: {len(cert.parameters) - failed} of {len(cert.parameters)} parameters agree "
        f"with every witness."
    )


def _document(derivation: Derivation, certificate: object | None) -> tuple[str, list[dict]]:
    doc = _Doc(derivation)
    intro = _intro(doc)
    _section_network(doc)
    _section_forward(doc)
    runs = identity_runs(derivation)
    if runs:
        _section_identity(doc, runs)
    _section_loss(doc)
    _section_chain(doc)
    _section_activations(doc)
    _section_output(doc)
    _section_backward(doc)
    if _small(derivation.network):
        _section_example(doc)
    _section_update(doc)
    _section_certificate(doc, certificate)
    return intro, doc.sections


# --- formats ---------------------------------------------------------------------------------


def _formatted(sections: list[dict], text: Callable[[str], str]) -> list[dict]:
    out = []
    for number, section in enumerate(sections, start=1):
        blocks = []
        for block in section["blocks"]:
            kind = block["kind"]
            if kind == "text":
                blocks.append({"kind": kind, "text": text(block["text"])})
            elif kind == "list":
                blocks.append(
                    {
                        "kind": kind,
                        "ordered": block["ordered"],
                        "entries": [text(i) for i in block["entries"]],
                    }
                )
            elif kind == "table":
                blocks.append(
                    {
                        "kind": kind,
                        "header": [text(h) for h in block["header"]],
                        "rows": [[text(c) for c in row] for row in block["rows"]],
                    }
                )
            else:
                blocks.append(
                    {
                        "kind": kind,
                        "equations": [
                            {
                                "tag": eq.tag,
                                "rows": [f"{left} &{right}" for left, right in eq.rows],
                                "single": "".join(eq.rows[0]) if len(eq.rows) == 1 else "",
                            }
                            for eq in block["equations"]
                        ],
                    }
                )
        out.append({"number": number, "title": text(section["title"]), "blocks": blocks})
    return out


def _check_tags(sections: list[dict], derivation: Derivation) -> None:
    tags = [
        eq.tag
        for s in sections
        for b in s["blocks"]
        if b["kind"] == "math"
        for eq in b["equations"]
    ]
    assert len(tags) == len(set(tags)), "duplicate equation numbers"
    assert {str(e.number) for e in derivation.equations} <= set(tags), "a core equation is missing"


def _context(
    derivation: Derivation, certificate: object | None, text: Callable[[str], str]
) -> dict:
    intro, sections = _document(derivation, certificate)
    _check_tags(sections, derivation)
    name = derivation.network.spec.name
    return {
        "name": name,
        "title": text(f"Backpropagation for `{name}`, derived with SymPy"),
        "intro": text(intro),
        "sections": _formatted(sections, text),
    }


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """The documents' Jinja environment: templates/ inside the package, else the checkout's."""
    here = Path(__file__).resolve().parent
    folder = next(
        (f for f in (here / "templates", here.parent / "templates") if (f / "latex").is_dir()),
        None,
    )
    if folder is None:
        raise FileNotFoundError("symbackprop's templates folder is missing from the installation")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_tex(derivation: Derivation, certificate: object | None = None) -> str:
    """The derivation document as a complete LaTeX document (pdflatex, texlive-latex-base)."""
    context = _context(derivation, certificate, _text_tex)
    return _environment().get_template("latex/derivation.tex.j2").render(context)


def render_markdown(derivation: Derivation, certificate: object | None = None) -> str:
    """The derivation document as Markdown with $...$ and $$...$$ math (GitHub, Jupyter)."""
    context = _context(derivation, certificate, lambda s: s)
    return _environment().get_template("markdown/derivation.md.j2").render(context)


def compile_pdf(tex: str) -> bytes:
    """The PDF of a LaTeX document, from pdflatex run in a temporary directory."""
    exe = shutil.which("pdflatex")
    if exe is None:
        raise PdfLatexError(
            "--format", "pdflatex is not installed; install texlive-latex-base or use --format tex"
        )
    # fixed dates make the PDF bytes reproducible
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "FORCE_SOURCE_DATE": "1"}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "derivation.tex"
        path.write_text(tex, encoding="utf-8")
        for _ in range(3):
            proc = subprocess.run(
                [exe, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", path.name],
                cwd=folder,
                capture_output=True,
                timeout=300,
                env=env,
                check=False,
            )
            log_path = path.with_suffix(".log")
            log = (
                log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
            )
            if proc.returncode != 0 or not path.with_suffix(".pdf").exists():
                first = next((line for line in log.splitlines() if line.startswith("!")), "")
                detail = first or proc.stdout.decode("utf-8", "replace").strip().splitlines()[-1:]
                raise PdfLatexError("pdflatex", f"compilation failed: {detail}")
            if "Rerun to get" not in log:
                break
        return path.with_suffix(".pdf").read_bytes()


def golden_documents() -> dict[str, str]:
    """generated/<name>.tex and .md for every bundled example (no certificate: deterministic)."""
    from symbackprop.derive import derive
    from symbackprop.spec import bundled_examples, load_spec

    files = {}
    for name, path in bundled_examples().items():
        derivation = derive(load_spec(path))
        files[f"generated/{name}.tex"] = render_tex(derivation)
        files[f"generated/{name}.md"] = render_markdown(derivation)
    return files
