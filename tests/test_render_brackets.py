"""Every product in the document brackets its non-atomic factors (issue 8, item 2).

The documents juxtapose printed SymPy expressions with other factors (the matrix δ recursion
``(W^T δ) ⊙ f'(z)``, the per-weight chain-rule products, the worked example's numbers).  A
factor that is a sum, or that starts with a sign, must be bracketed there, or
``(W^T δ) ⊙ 1 - tanh^2(z)`` reads as ``((W^T δ) ⊙ 1) - tanh^2(z)``.  The checks below scan the
LaTeX of every displayed equation at the top level of its brackets: they know nothing of how
the renderer builds a row, only which sides of which equations are products.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sympy
from sympy.printing.latex import LatexPrinter

from symbackprop import document, render
from symbackprop.derive import derive
from symbackprop.spec import from_dict, load_spec


def _spec(name: str, hidden: list, loss: object = "mse", out: str = "identity", **kw) -> dict:  # noqa: ANN003
    layers = [{"units": 2, "activation": a} for a in hidden]
    layers.append({"units": 2 if out == "softmax" else 1, "activation": out})
    return {"name": name, "inputs": 2, "loss": loss, "layers": layers, **kw}


QUARTIC = {"name": "quartic", "expr": "(yhat - y)**2/2 + (yhat - y)**4/4"}
SPECS = {
    # three tanh hidden layers: the derivative 1 - tanh^2 is a sum
    "deep_tanh": _spec("deep_tanh", ["tanh", "tanh", "tanh"]),
    # GELU's derivative is a sum of three terms; sigmoid's a product with a sum factor
    "gelu_sigmoid": _spec("gelu_sigmoid", ["gelu", "sigmoid"], "cross_entropy", "softmax"),
    # ELU's derivative is min(0, ELU(z)) + 1; softplus' is sigma(z)
    "softplus_elu": _spec("softplus_elu", ["softplus", "elu"]),
    # a custom activation whose derivative is a sum
    "swish2": _spec("swish2", [{"name": "swish2", "expr": "x*sigmoid(x) + x"}]),
    # a custom activation whose derivative has a sign: f'(z) = -2 z
    "negsquare": _spec("negsquare", [{"name": "negsquare", "expr": "1 - x**2"}]),
    # a custom loss whose output error is a sum, behind a tanh layer
    "quartic_loss": _spec("quartic_loss", ["tanh"], QUARTIC),
    # a custom loss whose output error is a sum behind a tanh output: a product of sums
    "quartic_tanh_out": _spec("quartic_tanh_out", ["sigmoid"], QUARTIC, "tanh"),
    # too large for the neuron-level sections: only the matrix form is printed
    "wide_tanh": {
        "name": "wide_tanh",
        "inputs": 8,
        "loss": "mse",
        "layers": [
            {"units": 8, "activation": "tanh"},
            {"units": 8, "activation": "gelu"},
            {"units": 1, "activation": "identity"},
        ],
    },
}
CASES = [*SPECS, "tanh_regression", "sigmoid_bce", "swish_mlp", "seed_mlp"]


@pytest.fixture(scope="module", params=CASES)
def documents(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    name = request.param
    if name not in SPECS:  # the bundled examples: their goldens (test_golden keeps them current)
        root = Path(__file__).resolve().parent.parent / "generated"
        return name, (root / f"{name}.tex").read_text(), (root / f"{name}.md").read_text()
    d = derive(from_dict(SPECS[name]))
    return name, render.render_tex(d), render.render_markdown(d)


# --- a scanner for the top level of a LaTeX formula ------------------------------------------

_OPEN = re.compile(r"\\left[(\[.|]|\\left\\\{|\\\{|[({\[]")
_CLOSE = re.compile(r"\\right[)\].|]|\\right\\\}|\\\}|[)}\]]")
_SIGN_BEFORE = re.compile(r"(\\cdot|\\odot|\\times|[=(\[{,&]|\\quad|\\leftarrow)\s*$")


def _top_level(formula: str) -> list[tuple[int, str]]:
    """(position, token) of every character or control word at bracket depth 0."""
    out, depth, i = [], 0, 0
    while i < len(formula):
        rest = formula[i:]
        opened, closed = _OPEN.match(rest), _CLOSE.match(rest)
        if opened:
            depth += 1
            i += opened.end()
            continue
        if closed:
            depth -= 1
            i += closed.end()
            continue
        word = re.match(r"\\[A-Za-z]+|\\.", rest)
        token = word.group(0) if word else formula[i]
        if depth == 0:
            out.append((i, token))
        i += len(token)
    if depth != 0:
        raise AssertionError(f"unbalanced brackets in {formula!r}")
    return out


def _binary_signs(side: str) -> list[int]:
    """Positions of the top-level + and - that are binary (not a leading or unary sign)."""
    return [
        pos
        for pos, tok in _top_level(side)
        if tok in "+-" and side[:pos].strip() and not _SIGN_BEFORE.search(side[:pos])
    ]


def _sides(formula: str) -> list[str]:
    """A displayed equation cut at its top-level relations (=, \\leftarrow, \\in, ,\\quad)."""
    cuts = [
        (pos, len(tok)) for pos, tok in _top_level(formula) if tok in ("=", r"\leftarrow", r"\in")
    ]
    pieces, start = [], 0
    for pos, length in cuts:
        pieces.append(formula[start:pos])
        start = pos + length
    pieces.append(formula[start:])
    return [p.strip().rstrip(",").strip() for p in pieces]


def _equations(text: str) -> list[str]:
    """Every displayed equation of a .tex or .md document, its rows joined into one formula."""
    if r"\begin{align}" in text:
        blocks = re.findall(r"\\begin\{align\}\n(.*?)\\end\{align\}", text, flags=re.S)
        equations, current = [], []
        for block in blocks:
            for row in block.split("\\\\\n"):
                row = row.strip()
                if not row:
                    continue
                current.append(re.sub(r"\\(notag|tag\{[0-9.]+\}|label\{[^}]*\})", "", row))
                if r"\tag{" in row:
                    equations.append(current)
                    current = []
    else:
        equations = []
        for block in re.findall(r"\$\$\n(.*?)\n\$\$", text, flags=re.S):
            block = re.sub(r"\\tag\{[0-9.]+\}", "", block)
            block = block.replace(r"\begin{aligned}", "").replace(r"\end{aligned}", "")
            equations.append([r.strip() for r in block.split("\\\\\n") if r.strip()])
    formulas = []
    for rows in equations:
        joined = " ".join(re.sub(r"^\s*\\quad", "", row.replace("&", " ")) for row in rows)
        formulas.append(joined.replace(r",\quad", " = "))
    return formulas


def _is_product(side: str) -> bool:
    return not _binary_signs(side)


# --- the checks ------------------------------------------------------------------------------


def _violations(text: str, checked: list[str] | None = None) -> list[str]:
    """What is wrong with the products of a document; ``checked`` collects the product sides."""
    found, checked = [], [] if checked is None else checked
    for formula in _equations(text):
        sides = _sides(formula)
        for side in sides:
            tokens = _top_level(side)
            for pos, tok in tokens:
                if tok in (r"\odot", r"\cdot"):
                    # a factor right of a product sign must not start with a bare sign
                    if side[pos + len(tok) :].lstrip()[:1] in ("+", "-"):
                        found.append(f"signed factor after {tok}: {side}")
            if any(tok == r"\odot" for _, tok in tokens) and not _is_product(side):
                found.append(f"a sum as a factor of \\odot: {side}")
        left = sides[0]
        # the rows that are products by construction: delta_i of a hidden layer, the
        # per-weight chain rule, the gradient entries and the output error as a factor
        hidden = re.fullmatch(r"\\delta\^\{\((\d+)\)\}_\{\d+\}", left)
        if hidden and (r"\left(w^{" in formula or r"\bigl(w^{" in formula):
            # all but the final number of the worked example's rows
            numeric = re.fullmatch(r"\s*-?[0-9.]+(\s*\\times 10\^\{-?\d+\})?\s*", sides[-1])
            products = sides[1:-1] if numeric else sides[1:]
        elif re.fullmatch(r"\\frac\{\\partial \\ell\}\{\\partial w\^\{\(\d+\)\}_\{\d+\}\}", left):
            products = sides[2:]  # after the sum over the paths
        elif re.fullmatch(r"\\frac\{\\partial L\}\{\\partial w\^\{\(\d+\)\}_\{\d+\}\}", left):
            # delta a (+ the l2 term, one more product): at most that many top-level terms
            terms = 2 if r"\lambda" in formula else 1
            for side in sides[1:-1]:
                if len(_binary_signs(side)) + 1 > terms:
                    found.append(f"a sum as a factor of a product: {side}")
            products = []
            checked.extend(sides[1:-1])
        elif left.startswith(r"\frac{d}{dz}") or r"f_L'" in left:
            products = [left]
        else:
            products = []
        checked.extend(products)
        for side in products:
            if not _is_product(side):
                found.append(f"a sum as a factor of a product: {side}")
    return found


def test_the_scanner_sees_the_bug_class() -> None:
    bad = (
        "\\begin{align}\n"
        r"\delta^{(1)} & = \left(W^{(2)\top} \delta^{(2)}\right) \odot 1 - \tanh^{2}{\left(z "
        r"\right)} \tag{7.1} \\" + "\n"
        r"\frac{\partial \ell}{\partial w^{(1)}_{11}} &= \sum_{k} a \notag \\" + "\n"
        r" & = \delta^{(1)}_{1} x_{1} \notag \\" + "\n"
        r" &= \left(w_{1} \delta_{1}\right) 1 - \tanh^{2}{\left(z \right)} x_{1} \tag{8.7} \\"
        + "\n"
        r"z & = 0.5 \cdot -0.3 + \left(-0.2\right) \cdot \left(-1\right) \tag{1.1}" + "\n"
        "\\end{align}\n"
    )
    found = _violations(bad)
    assert any("\\odot" in f for f in found)
    assert any("a product" in f for f in found)
    assert any("signed factor" in f for f in found)
    good = bad.replace(r"\odot 1 - \tanh^{2}{\left(z \right)}", r"\odot \left(1 - a\right)")
    good = good.replace(
        r"\right) 1 - \tanh^{2}{\left(z \right)} x", r"\right) \left(1 - a\right) x"
    )
    good = good.replace(r"0.5 \cdot -0.3", r"0.5 \cdot \left(-0.3\right)")
    assert _violations(good) == []
    # a sum of products is fine where a sum is meant
    assert _violations("$$\nz = a \\cdot b + c \\cdot d \\tag{1}\n$$") == []


def test_no_product_has_an_unbracketed_sum_as_a_factor(documents: tuple[str, str, str]) -> None:
    name, tex, md = documents
    for text in (tex, md):
        problems = _violations(text)
        assert problems == [], f"{name}: {problems[:3]}"


def test_the_check_sees_the_rows_it_is_about(documents: tuple[str, str, str]) -> None:
    """The check above must have looked at the rows it is about."""
    name, tex, md = documents
    for text in (tex, md):
        rows = [
            f
            for f in _equations(text)
            if r"\odot" in f and "W^{(l+1)" not in f and r"\hat y \odot" not in f  # not q's
        ]
        hidden = SPECS[name]["layers"][:-1] if name in SPECS else None
        if hidden is not None:
            assert len(rows) == len(hidden), name
        assert rows, name
        checked: list[str] = []
        _violations(text, checked)
        if "A worked example" in text:
            # every hidden delta twice (per-weight lines, worked example) and the first
            # weight of each layer through its paths
            assert len(checked) >= 4, (name, len(checked))


def test_tanh_recursion_reads_with_brackets() -> None:
    d = derive(load_spec("tanh_regression"))
    expected = (
        r"\delta^{(1)} & = \left(W^{(2)\top} \delta^{(2)}\right) \odot "
        r"\left(1 - \tanh^{2}{\left(z^{(1)} \right)}\right)"
    )
    assert expected in render.render_tex(d)
    assert expected.replace(" & ", " ") in render.render_markdown(d)


def test_custom_loss_output_error_is_bracketed_as_a_factor() -> None:
    d = derive(from_dict(SPECS["quartic_loss"]))
    md = render.render_markdown(d)
    # on its own, the output error (a sum) needs no brackets
    assert re.search(r"\\delta\^\{\(2\)\}_\{1\}= z\^\{\(2\)\}_\{1\} \+ \\left\(z", md)
    # as a factor of the recursion into layer 1, through its own symbol
    assert re.search(
        r"\\delta\^\{\(1\)\}_\{1\}= \\left\(w\^\{\(2\)\}_\{11\} \\delta\^\{\(2\)\}_\{1\}", md
    )


X = sympy.Symbol("x")
PRINTER = LatexPrinter()


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        (X, "x"),
        (sympy.Integer(2), "2"),
        (sympy.Rational(1, 2), r"\frac{1}{2}"),
        (sympy.tanh(X), r"\tanh{\left(x \right)}"),
        (X**2, "x^{2}"),
        ((X + 1) ** 2, r"\left(x + 1\right)^{2}"),
        (2 * X, "2 x"),
        (1 - sympy.tanh(X) ** 2, r"\left(1 - \tanh^{2}{\left(x \right)}\right)"),
        (-X, r"\left(- x\right)"),
        (-2 * X, r"\left(- 2 x\right)"),
        (sympy.Integer(-3), r"\left(-3\right)"),
        (sympy.Float(-0.5), r"\left(-0.5\right)"),
    ],
)
def test_factor_brackets_exactly_the_non_atomic(expr: sympy.Expr, text: str) -> None:
    assert document.as_factor(expr, PRINTER) == text
