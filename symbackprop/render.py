"""The derivation document: LaTeX and Markdown text from a ``Derivation`` (and a PDF).

Pure functions; the CLI writes the files.  The document follows a textbook's order: the
network and notation, the forward pass (neuron by neuron for networks within
``graph.EXPANDED_LIMIT`` parameters, then in matrix form), why the non-linearity matters
(only when consecutive identity layers exist), the loss, the chain rule, each activation's
derivative, the output error, the backward recursion and the gradients, a worked numeric
example (small networks), the update, and the certificate.

A network with layers of other kinds (DESIGN §2b) gets the same order in matrix form: every
layer by number, kind and input; each kind's forward equation; the multivariable chain rule
(an output read by two layers, as a residual block's input, sums two contributions); one
section per kind with its backward rule as SymPy derived it on the small instance of
``symbackprop.rules`` (its Jacobian in closed form, checked entry by entry, and the
vector-Jacobian product, proven equal to the formula the code uses); and the backward pass
layer by layer.  The neuron-by-neuron sections and the worked example are for plain dense
stacks (the document says so).

The image kinds (DESIGN §2c) get the same treatment, as a course teaches them: the
convolutional layer's section shows the kernel sliding over the input (a figure), the
forward sum with indices, a worked 3 x 3 example with numbers, the three backward rules
derived step by step on the proven instance of ``rules.derive_conv_rule`` (dW the
cross-correlation of the input with the error, db the sum of the error, dx the full
convolution of the error with the flipped kernel) and im2col's matrix products with the
network's shapes; pooling (a figure of the windows: the max route, the even spread) and
flattening follow.  None of it appears in the documents of specs without those kinds.

Nothing here generates or runs the module: the cited equation numbers are
``Derivation.cited``, the worked example's point is ``checkpoint.point`` (with
``symbackprop.initialize``'s init_params) and its numbers ``exact.evaluate``, the
certificate's own exact evaluation.

Numbering: the core equations (``derivation.equations``) keep their numbers, because the
generated module cites them; every other displayed equation is numbered ``N.k`` after the
core equation N it belongs to.  All mathematics is printed here (SymPy's LaTeX printer, with
``graph.latex_name`` for scalar symbols) and every symbolic claim shown is checked with SymPy
before it is printed; the templates only lay the strings out.  Wherever a printed expression
stands next to another factor (juxtaposed, ``\\cdot`` or ``\\odot``), it is printed by ``as_factor``
(or ``operand`` for a number), which brackets everything that is not atomic for a product.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from functools import cache, lru_cache
from pathlib import Path

import jinja2
import numpy as np
import sympy

import symbackprop.layers as layer_maps
from symbackprop import figures, lesson, rules, teaching
from symbackprop.derive import LP, Derivation, P, Z, derive_activation, softmax_jacobian_check
from symbackprop.document import (
    WIDTH,
    Display,
    Doc,
    Row,
    as_factors,
    broken,
    decimal,
    glyphs,
    latex_names,
    make_printer,
    operand,
    printed_terms,
    ref,
    require,
    signed,
    text_md,
    text_tex,
    tidy_numbers,
    to_tex,
    wrap,
)
from symbackprop.errors import InputError
from symbackprop.forms import hadamard, teacher_latex, teacher_terms
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
from symbackprop.layers import LAYERS
from symbackprop.lesson import EXAMPLE_SEEDS, WorkedExample, silent_units, worked_example
from symbackprop.primitives import step, to_textbook_form
from symbackprop.spec import FlatLayer, NetworkSpec, layer_parameters

PRECISION = 40  # decimal digits of the worked example's exact evaluation
SOFTMAX_DEMO_MAX = 3  # outputs in the concrete softmax + cross-entropy derivation


class PdfLatexError(InputError):
    """pdflatex is missing or failed on the document."""


# --- facts about the network -----------------------------------------------------------------


def _is_identity(derivation: Derivation, layer: int) -> bool:
    ad = derivation.layers[layer - 1]
    if ad is None:
        return False
    act = ad.activation
    return not act.softmax and act.expr == X


def _reads_previous(derivation: Derivation, layer: int) -> bool:
    """Layer ``layer`` is a dense layer with a bias that reads layer ``layer - 1``."""
    flat = derivation.network.flat[layer - 1]
    return flat.kind == "dense" and flat.layer.bias and flat.sources == (layer - 1,)


def identity_runs(derivation: Derivation) -> list[tuple[int, int]]:
    """(first, last) layer of every run of two or more consecutive identity layers.

    Consecutive: each layer of the run after the first reads the one before it (always so
    in a plain stack); the layers are dense with biases.
    """
    runs, start = [], None
    depth = derivation.network.depth
    for layer in range(1, depth + 2):
        joins = (
            layer <= depth
            and start is not None
            and _is_identity(derivation, layer)
            and _reads_previous(derivation, layer)
        )
        if joins:
            continue
        if start is not None and layer - 1 > start:
            runs.append((start, layer - 1))
        start = None
        if layer <= depth and _is_identity(derivation, layer):
            if derivation.network.flat[layer - 1].layer.bias:
                start = layer
    return runs


def _small(net: SymbolicNetwork) -> bool:
    """Within the neuron-by-neuron view: a plain dense stack of few parameters."""
    return net.plain and net.parameter_count <= EXPANDED_LIMIT


def _a(layer: int) -> str:
    """The output of layer ``layer`` (0: the input x), as LaTeX."""
    return "x" if layer == 0 else f"a^{{({layer})}}"


def _da(layer: int) -> str:
    """The error at the output of layer ``layer``, as LaTeX."""
    return rf"\frac{{\partial \ell}}{{\partial {_a(layer)}}}"


def _readers(net: SymbolicNetwork) -> dict[int, list[int]]:
    """For the input (0) and every layer: the layers that read its output, in numbering order."""
    readers: dict[int, list[int]] = {0: [], **{layer.index: [] for layer in net.flat}}
    for layer in net.flat:
        for source in layer.sources:
            readers[source].append(layer.index)
    return readers


def _kinds_used(net: SymbolicNetwork) -> list[str]:
    """The kinds other than dense that the network uses, in the registry's order."""
    kinds = {layer.kind for layer in net.flat}
    return [kind for kind in LAYERS if kind != "dense" and kind in kinds]


def _of_kind(net: SymbolicNetwork, kind: str) -> list[int]:
    return [layer.index for layer in net.flat if layer.kind == kind]


def _listing(numbers: list[int]) -> str:
    """'layer 4' or 'layers 4, 6'."""
    return ("layers " if len(numbers) > 1 else "layer ") + ", ".join(map(str, numbers))


def _act_name(derivation: Derivation, layer: int) -> str:
    act = derivation.layers[layer - 1].activation
    return act.name


def _f_latex(derivation: Derivation, layer: int, arg: str = "z") -> str:
    """f_l applied to ``arg``, as LaTeX (softmax as a vector function)."""
    act = derivation.layers[layer - 1].activation
    if act.softmax:
        return rf"\operatorname{{softmax}}({arg})"
    return to_tex(act.expr, {X: arg})


# --- sections --------------------------------------------------------------------------------


def _ranges(numbers: Iterable[int]) -> str:
    """(1)–(4), (6) for 1, 2, 3, 4, 6."""
    numbers = sorted(numbers)
    out: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(f"({start})" if start == prev else f"({start})\u2013({prev})")
        if n is not None:
            start = prev = n
    return ", ".join(out)


def _intro(doc: Doc) -> str:
    d = doc.d
    net = d.network
    return (
        f"This document derives backpropagation for the network `{net.spec.name}` "
        f"(sizes {'-'.join(map(str, net.sizes))}, {net.parameter_count} parameters) with "
        "SymPy, in the order a first course tells it: the forward pass, why the non-linearity "
        "matters, the loss, the chain rule, the errors flowing back, gradient descent"
        + (", a worked example" if _small(net) else "")
        + " and the big picture.\n\n"
        f"Equations {_ranges(e.number for e in d.equations)} are the core equations. Each has "
        "the same number in every document symbackprop writes (the output error is always "
        "(6)), and the generated NumPy module "
        f"`{net.spec.name}.py` cites equations {', '.join(ref(n) for n in d.cited)} in its "
        "comments as (eq. N).\n\n"
        "Every other displayed equation is numbered N.k and follows its core equation N. "
        "Every symbolic step shown was checked with SymPy, and every number comes from an "
        "exact evaluation."
    )


def _section_network(doc: Doc) -> None:
    d, net = doc.d, doc.d.network
    if not net.plain:
        _network_kinds(doc)
        return
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
    doc.figure(document_figures(net.spec)["network"])
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
        f"$\\eta = {decimal(net.spec.train.lr)}$."
    )


def _linear_rows(net: SymbolicNetwork, layer: int, i: int) -> tuple[Row, ...]:
    node = next(n for n in net.neuron_graph if n.symbol == pre_activation(layer, i))
    fan_in = net.sizes[layer - 1]
    pieces = [
        f"{latex_name(weight(layer, i, j))} {latex_name(activation(layer - 1, j))}"
        for j in range(1, fan_in + 1)
    ] + [latex_name(bias(layer, i))]
    written = sum(weight(layer, i, j) * activation(layer - 1, j) for j in range(1, fan_in + 1))
    require(
        sympy.expand(written + bias(layer, i) - node.expr) == 0,
        "a pre-activation as written is not the graph's",
    )
    return wrap(latex_name(node.symbol), "=", signed(pieces))


def _section_forward(doc: Doc) -> None:
    d, net = doc.d, doc.d.network
    if not net.plain:
        _forward_kinds(doc)
        return
    doc.section("The forward pass")
    doc.text(
        "Every layer computes, for one sample, weighted sums of the previous layer's outputs "
        "plus a bias, the pre-activations, and applies its activation to them:"
    )
    displays = [doc.core("forward.linear"), doc.core("forward.activation")]
    if net.output.softmax:
        displays.append(doc.core("forward.softmax"))
    doc.math(*displays)
    if net.output.softmax:
        doc.text(
            "The softmax output turns the last pre-activations into probabilities; the code "
            "evaluates its logarithm with the largest $z^{(L)}_j$ subtracted, which changes "
            "nothing mathematically and keeps $e^z$ from overflowing."
        )
    act_key = {True: "forward.softmax", False: "forward.activation"}
    if _small(net):
        names = latex_names(s for n in net.neuron_graph for s in n.expr.free_symbols | {n.symbol})
        doc.text("Neuron by neuron, for this network:")
        for layer in range(1, net.depth + 1):
            softmax = d.layers[layer - 1].activation.softmax
            doc.text(f"Layer {layer} (`{_act_name(d, layer)}`):")
            zs = [_linear_rows(net, layer, i) for i in range(1, net.sizes[layer] + 1)]
            acts = [
                broken(latex_name(node.symbol), "=", node.expr, names)
                for node in net.neuron_graph
                if node.kind == "a" and node.layer == layer
            ]
            doc.math(*_neurons(doc, zs, acts, act_key[softmax]))
    else:
        doc.text(
            f"This network has {net.parameter_count} parameters, more than the "
            f"{EXPANDED_LIMIT} within which this document writes out every neuron, so the "
            "forward pass is given in matrix form only."
        )
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
    doc.text("In matrix form, layer by layer, with the shapes:")
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


def _neurons(
    doc: Doc, zs: list[tuple[Row, ...]], acts: list[tuple[Row, ...]], act_key: str
) -> list[Display]:
    """Each neuron's pre-activation and activation: on one line (numbered under (1)) when
    both fit, else the pre-activations under (1) and the activations under (2) or (3)."""
    pairs = list(zip(zs, acts, strict=True))
    if all(
        len(z) == 1 and len(a) == 1 and glyphs("".join(z[0]) + "".join(a[0])) <= WIDTH - 6
        for z, a in pairs
    ):
        return [
            doc.sub("forward.linear", ((z[0][0], rf"{z[0][1]},\quad {''.join(a[0])}"),))
            for z, a in pairs
        ]
    return [doc.sub("forward.linear", z) for z in zs] + [doc.sub(act_key, a) for a in acts]


def _section_nonlinearity(doc: Doc) -> None:
    doc.section("Why the non-linearity matters")
    teaching.collapse(doc)
    runs = identity_runs(doc.d)
    if runs:
        doc.text(
            "This network does have consecutive identity layers, and those collapse: here "
            "is the collapse, checked by SymPy."
        )
        _identity_runs(doc, runs)


def _identity_runs(doc: Doc, runs: list[tuple[int, int]]) -> None:
    _d, net = doc.d, doc.d.network
    for first, last in runs:
        for lower in range(first, last):
            upper = lower + 1
            source = net.flat[lower - 1].sources[0]
            n0, n1, n2 = net.flat[lower - 1].fan_in, net.sizes[lower], net.sizes[upper]
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
            a = sympy.Matrix([activation(source, j) for j in range(1, n0 + 1)])
            stacked = W2 * (W1 * a + b1) + b2
            W_eff, b_eff = W2 * W1, W2 * b1 + b2
            difference = (stacked - (W_eff * a + b_eff)).applyfunc(sympy.expand)
            require(
                difference == sympy.zeros(n2, 1),
                "two identity layers do not collapse to one affine map",
            )
            prev = _a(source)
            where = (
                ""
                if actual
                else f" (entries shown for a {n2}×{n1}×{n0} instance of the same shapes)"
            )
            doc.text(f"Layers {lower} and {upper} are both identity layers{where}:")
            names = latex_names(
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
                    rows = broken(
                        rf"\left(W_{{\mathrm{{eff}}}}\right)_{{{i + 1}{j + 1}}}",
                        "=",
                        W_eff[i, j],
                        names,
                    )
                    displays.append(doc.sub("forward.linear", rows))
                rows = broken(
                    rf"\left(b_{{\mathrm{{eff}}}}\right)_{{{i + 1}}}", "=", b_eff[i], names
                )
                displays.append(doc.sub("forward.linear", rows))
            doc.math(*displays)
    doc.text(
        "SymPy expanded $W^{(l+1)}(W^{(l)} a + b^{(l)}) + b^{(l+1)} - (W_{\\mathrm{eff}} a + "
        "b_{\\mathrm{eff}})$ to zero. A non-linear $f_l$ between the layers is what breaks "
        "this collapse and lets depth add expressive power."
    )


def _section_loss(doc: Doc) -> None:
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
    n, out = net.output_layer.units, net.output_layer.index
    if _small(net):
        node = net.neuron_graph[-1]
        names = latex_names(node.expr.free_symbols) | {LOSS: r"\ell"}
        displays.append(doc.sub("loss", broken(r"\ell", "=", node.expr, names)))
    else:
        displays.append(
            doc.sub(
                "loss",
                (
                    (
                        r"\ell",
                        rf" = \sum_{{k=1}}^{{{n}}} \ell\left(a^{{({out})}}_k, y_k\right)",
                    ),
                ),
            )
        )
    doc.math(*displays)
    if net.spec.l2:
        doc.text(f"Here $\\lambda = {decimal(net.spec.l2)}$; the biases are not penalized.")


def _section_chain(doc: Doc) -> None:
    _d, net = doc.d, doc.d.network
    if not net.plain:
        _chain_kinds(doc)
        return
    depth = net.depth
    doc.section("The chain rule")
    teaching.chain_rule_scalar(doc)
    doc.text(
        "The network as a composite function: the loss of one sample is a chain of the "
        "layers' maps, applied to the parameters:"
    )
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
    rows = wrap(r"\frac{\partial \ell}{\partial W^{(1)}}", "=", factors)
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


def _section_activations(doc: Doc) -> None:
    d, _net = doc.d, doc.d.network
    doc.section("The derivatives of the activations")
    if d.has("activation"):
        doc.text(
            "SymPy differentiates each activation. The derivatives the generated code uses "
            "are these; where a form exists that is as accurate as the form in $z$ (checked "
            "against 30-digit values for $|z|$ up to 50), the derivative is also written "
            "through the layer's output $a = f(z)$, which the forward pass has already computed:"
        )
        doc.math(doc.core("activation"))
        doc.text(
            "Each activation as a student writes it (smooth primitives such as the sigmoid "
            "spelled out in exp and log), and the derivative of that form:"
        )
    seen: set[str] = set()
    for index, ad in enumerate(d.layers, start=1):
        if ad is None:
            continue
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
        used = [
            str(i)
            for i, o in enumerate(d.layers, start=1)
            if o is not None and o.activation.name == act.name
        ]
        kind = "custom activation" if act.custom else "activation"
        layers = "layer" + ("s " if len(used) > 1 else " ") + ", ".join(used)
        doc.text(f"The {kind} `{act.name}` ({layers}):")
        zn = {Z: "z"}
        book = to_textbook_form(ad.f)
        displays = [doc.sub(f"activation.{act.name}", broken("f(z)", "=", book, zn))]
        if ad.f != book:
            displays.append(doc.sub(f"activation.{act.name}", (("", " = " + to_tex(ad.f, zn)),)))
        if ad.textbook != ad.derivative:
            displays.append(
                doc.sub(
                    f"activation.{act.name}",
                    broken(
                        rf"\frac{{d}}{{dz}}\left({to_tex(book, zn)}\right)", "=", ad.textbook, zn
                    ),
                )
            )
        doc.math(*displays)
        if ad.derivative.has(step):
            doc.text(
                "Here $\\operatorname{step}(z) = 1$ for $z > 0$ and $0$ otherwise. At the kink "
                "$z = 0$ the function has no derivative; the code, like PyTorch, uses the "
                "left-hand derivative there: 0 for ReLU, the slope for leaky ReLU."
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
    require(d.output.q is not None, "a softmax output rule without q")
    expr = _softmax_delta(n, 0, [], list(ps), list(ys), d.output.q)
    expr = expr.subs(ys[-1], 1 - sum(ys[:-1]))
    return sympy.expand(expr - (ps[0] - ys[0])) == 0


def _section_output_softmax(doc: Doc) -> None:
    d, net = doc.d, doc.d.network
    n = min(net.sizes[-1], SOFTMAX_DEMO_MAX)
    require(softmax_jacobian_check(n).shape == (n, n), "the softmax Jacobian has the wrong shape")
    z = [sympy.Symbol(f"z_{k}", real=True) for k in range(1, n + 1)]
    y = [sympy.Symbol(f"y_{k}", real=True) for k in range(1, n + 1)]
    names = {s: f"z_{{{i}}}" for i, s in enumerate(z, 1)} | {
        s: f"y_{{{i}}}" for i, s in enumerate(y, 1)
    }
    total = sympy.Add(*(sympy.exp(v) for v in z))
    p = [sympy.exp(v) / total for v in z]
    doc.text(
        "With a softmax output, every $\\hat y_j$ depends on every $z^{(L)}_k$. SymPy's "
        f"Jacobian of softmax (computed for $n = {n}$ and compared entry by entry) is, with "
        "$[j = k]$ for 1 when $j = k$ and 0 otherwise,"
    )
    doc.math(
        doc.sub(
            "delta.output",
            (
                (
                    r"\frac{\partial \hat y_j}{\partial z_k}",
                    r" = \hat y_j\left([j = k] - \hat y_k\right),"
                    r"\quad \text{i.e.}\quad J = \operatorname{diag}(\hat y) - \hat y \hat y^\top",
                ),
            ),
        )
    )
    if _cross_entropy_like(d) and net.loss.name == "cross_entropy":
        loss = -sympy.Add(*(yj * sympy.log(pj) for yj, pj in zip(y, p, strict=False)))
        raw = sympy.diff(loss, z[0])
        simple = sympy.simplify(raw)
        require(
            sympy.simplify(raw - simple) == 0,
            "the simplified softmax + cross-entropy error differs",
        )
        regrouped = p[0] * sympy.Add(*y) - y[0]
        require(
            sympy.simplify(simple - regrouped) == 0,
            "the regrouped softmax + cross-entropy error differs",
        )
        final = sympy.simplify(simple.subs(y[-1], 1 - sympy.Add(*y[:-1])))
        require(
            sympy.simplify(final - (p[0] - y[0]).subs(y[-1], 1 - sympy.Add(*y[:-1]))) == 0,
            "softmax + cross-entropy does not reduce to yhat - y",
        )
        doc.text(
            f"Softmax and cross-entropy together simplify. SymPy derives it for $n = {n}$ outputs "
            "(writing $z_k$ for $z^{(L)}_k$); the same steps hold for any $n$. The loss of one "
            "sample:"
        )
        displays = [doc.sub("delta.output", broken(r"\ell", "=", loss, names))]
        displays.append(
            doc.sub("delta.output", broken(r"\frac{\partial \ell}{\partial z_1}", "=", raw, names))
        )
        displays.append(doc.sub("delta.output", broken("", "=", simple, names)))
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
            "The rule the generated code evaluates, "
            + ref(d.number("delta.output"))
            + ", holds for any loss of the probabilities and reduces to this one."
        )
    else:
        doc.text(
            "By the chain rule through the Jacobian, "
            "$\\partial \\ell/\\partial z_k = \\sum_j \\partial \\ell/\\partial \\hat y_j\\, "
            "\\hat y_j([j = k] - \\hat y_k) = q_k - \\hat y_k \\sum_j q_j$ with "
            "$q_j = \\hat y_j\\, \\partial \\ell / \\partial \\hat y_j$, as in "
            + ref(d.number("delta.output"))
            + "."
        )


def _section_output(doc: Doc) -> None:
    d, net = doc.d, doc.d.network
    out = d.output
    doc.section("The output error")
    output_layer = net.output_layer
    if output_layer.kind != "dense":
        doc.text(
            f"The output layer, layer $L = {output_layer.index}$, is a "
            f"{LAYERS[output_layer.kind].title}, which has no activation: "
            "$\\hat y = a^{(L)}$, and the backward pass starts with the error at its output, "
            "$\\delta^{(L)} = \\partial \\ell / \\partial a^{(L)}$. Below, $z^{(L)}$ stands "
            "for $a^{(L)}$ and $f_L$ is the identity."
        )
    else:
        doc.text(
            "The backward pass starts at the output layer with "
            "$\\delta^{(L)} = \\partial \\ell / \\partial z^{(L)}$."
        )
    doc.text("For this network's output layer and loss it is")
    doc.math(doc.core("delta.output"))
    doc.text("and here is how SymPy derives it.")
    if out.softmax:
        _section_output_softmax(doc)
        return
    require(
        out.delta is not None and out.generic_delta is not None,
        "an elementwise output rule without delta",
    )
    ad = d.layers[output_layer.index - 1] or derive_activation(net.output)
    names = {Z: "z", A: "a", Y: "y"}
    doc.text(
        "Each output is $\\hat y_k = f_L(z^{(L)}_k)$ and depends on its own $z^{(L)}_k$ only, so "
        "by the chain rule (writing $z$, $a$, $y$ for one output's $z^{(L)}_k$, $a^{(L)}_k$, "
        "$y_k$):"
    )
    displays = [
        doc.sub(
            "delta.output",
            wrap(
                r"\delta^{(L)}_k = \frac{\partial \ell}{\partial \hat y_k} f_L'\left(z\right)",
                "=",
                # a probability output keeps the product, simplified through the logit below
                printed_terms(out.generic_delta, names)
                if ad.activation.log_output is not None
                else teacher_terms(out.generic_delta, names, prefer=_output_prefer(ad)),
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
            doc.sub("delta.output", broken(r"\ell", "=", out.loss.xreplace({A: ad.f}), names))
        ]
        in_logit = out.loss.xreplace({A: ad.f})
        raw = sympy.diff(in_logit, Z)
        displays.append(
            doc.sub("delta.output", broken(r"\frac{\partial \ell}{\partial z}", "=", raw, names))
        )
        simple = out.delta.xreplace({A: ad.f})
        require(
            sympy.simplify(sympy.expand(raw - simple).rewrite(sympy.exp)) == 0,
            "the output error through the logit differs",
        )
        displays.append(doc.sub("delta.output", broken("", "=", simple, names)))
        doc.math(*displays)
        doc.text("and with $a = f(z)$ this is the output error " + ref(d.number("delta.output")))
    else:
        doc.math(*displays)
        doc.text("which SymPy simplifies to the output error " + ref(d.number("delta.output")))


def _output_prefer(ad) -> tuple:  # noqa: ANN001 - ActivationDerivative
    """The teacher's form of an output error: through a = f(z) (z for identity), y last."""
    return (Z, Y) if ad.f == Z else ((A, ad.f), Y)


def _prime(ad, z: sympy.Symbol) -> sympy.Expr:  # noqa: ANN001 - ActivationDerivative
    return ad.derivative.xreplace({Z: z})


def _section_backward(doc: Doc) -> None:
    d, net = doc.d, doc.d.network
    if not net.plain:
        _backward_kinds(doc)
        return
    depth = net.depth
    doc.section("The backward recursion and the gradients")
    doc.text(
        "Going down one layer multiplies by $W^{(l+1)\\top}$ and, elementwise, by the "
        "derivative of the activation:"
    )
    doc.math(doc.core("delta.hidden"))
    teaching.hadamard(doc)
    displays = []
    for layer in range(depth - 1, 0, -1):
        ad = d.layers[layer - 1]
        left = rf"\left(W^{{({layer + 1})\top}} \delta^{{({layer + 1})}}\right)"
        right = hadamard(left, ad.derivative, {Z: f"z^{{({layer})}}"})
        displays.append(doc.sub("delta.hidden", ((f"\\delta^{{({layer})}}", f" = {right}"),)))
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
    teaching.shapes(doc)
    teaching.why_fast(doc, lesson.operation_counts(net.spec))
    if _small(net):
        _per_weight(doc)
    else:
        _one_path(doc)


def _output_delta_expr(d: Derivation, k: int) -> sympy.Expr:
    """delta^{(L)}_k for this network in the symbols z, a, y of output k (scalar graph names)."""
    net, out = d.network, d.output
    depth, n = net.depth, net.sizes[-1]
    if out.softmax:
        require(out.q is not None, "a softmax output rule without q")
        ps = [activation(depth, j) for j in range(1, n + 1)]
        ys = [target(j) for j in range(1, n + 1)]
        expr = _softmax_delta(n, k - 1, [], ps, ys, out.q)
        if _cross_entropy_like(d):
            return ps[k - 1] - ys[k - 1]
        return expr
    require(out.delta is not None, "an elementwise output rule without delta")
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
    printer = make_printer(names, **kw)
    if layer == net.depth:  # on its own: no brackets
        expr = _output_delta_expr(d, i)
        if "mul_symbol" not in kw:  # symbols: the teacher's form, the output before the target
            a, y = activation(layer, i), target(i)
            return [teacher_latex(expr, names, prefer=(a, pre_activation(layer, i), y))]
        return [tidy_numbers(printer.doprint(expr))]
    terms = [
        f"{names[weight(layer + 1, k, i)]}{times}"
        f"{names[sympy.Symbol(f'delta{layer + 1}_{k}', real=True)]}"
        for k in range(1, net.sizes[layer + 1] + 1)
    ]
    prime = _prime(d.layers[layer - 1], pre_activation(layer, i))
    factors = [] if prime == 1 else as_factors(prime, printer)
    joined = " + ".join(terms)
    if glyphs(joined) <= WIDTH // 2:
        head = [rf"\left({joined}\right)"]
    else:  # one piece per term, so that the line may break inside the sum
        head = [rf"\bigl({terms[0]}"] + [f"+ {t}" for t in terms[1:]]
        head[-1] += r"\bigr)"
    pieces = head + [times.strip() + " " + f if times.strip() else f for f in factors]
    return [tidy_numbers(p) for p in pieces]


def _scalar_names(net: SymbolicNetwork) -> dict[sympy.Symbol, str]:
    symbols = {s for n in net.neuron_graph for s in n.expr.free_symbols | {n.symbol}}
    for layer in range(1, net.depth + 1):
        symbols |= {
            sympy.Symbol(f"delta{layer}_{i}", real=True) for i in range(1, net.sizes[layer] + 1)
        }
    return latex_names(symbols)


PER_NEURON_INPUTS = 5  # a neuron's weights in one line up to this many inputs


def _per_weight(doc: Doc) -> None:
    """Each layer's first weight through every path in full, then every weight in one line."""
    d, net = doc.d, doc.d.network
    names = _scalar_names(net)
    doc.text(
        "Weight by weight, each derivative is a sum over the paths from the weight to the loss "
        "of products of local partial derivatives (the sums run over the neurons of the later "
        "layers). For the first weight of each layer in full:"
    )
    displays = []
    for layer in range(net.depth, 0, -1):
        w, a = weight(layer, 1, 1), activation(layer - 1, 1)
        left = rf"\frac{{\partial \ell}}{{\partial {latex_name(w)}}}"
        rows = list(wrap(left, "=", _path_factors(net, layer, 1, latex_name(w))))
        rows.append(("", rf" = \delta^{{({layer})}}_{{1}} {latex_name(a)}"))
        displays.append(doc.sub("grad.W", rows))
    doc.math(*displays)
    doc.text(
        "The sums over the later layers are exactly $\\delta^{(l)}_i$: computing the "
        "$\\delta$'s once, layer by layer from the output, is what saves backpropagation "
        "from summing over every path again for every weight. With them, every weight and "
        "bias of neuron $i$ of layer $l$ takes one line"
        + (
            " (the $\\ell_2$ term adds $\\lambda w^{(l)}_{ij}$ to $\\partial L / \\partial "
            "w^{(l)}_{ij}$)"
            if net.spec.l2
            else ""
        )
        + ", with $\\delta^{(l)}_i$ expanded one level:"
    )
    for layer in range(net.depth, 0, -1):
        displays = []
        prev = [latex_name(activation(layer - 1, j)) for j in range(1, net.sizes[layer - 1] + 1)]
        fan_in = net.sizes[layer - 1]
        for i in range(1, net.sizes[layer] + 1):
            ws = [latex_name(weight(layer, i, j)) for j in range(1, fan_in + 1)]
            dname = names[sympy.Symbol(f"delta{layer}_{i}", real=True)]
            if fan_in <= PER_NEURON_INPUTS:
                rows: tuple[Row, ...] = (
                    (
                        rf"\frac{{\partial \ell}}{{\partial \left({', '.join(ws)}, "
                        rf"{latex_name(bias(layer, i))}\right)}}",
                        rf" = {dname} \left({', '.join(prev)}, 1\right)",
                    ),
                )
            else:  # too many inputs for one line: the pattern, with its range
                w_ij = f"w^{{({layer})}}_{{{i}{',' if i > 9 else ''}j}}"
                a_j = "x_{j}" if layer == 1 else f"a^{{({layer - 1})}}_{{j}}"
                rows = (
                    (
                        rf"\frac{{\partial \ell}}{{\partial {w_ij}}}",
                        rf" = {dname} {a_j}\ \ (j = 1, \dots, {fan_in}),\quad "
                        rf"\frac{{\partial \ell}}{{\partial {latex_name(bias(layer, i))}}}"
                        rf" = {dname}",
                    ),
                )
            displays.append(doc.sub("grad.W", rows))
        for i in range(1, net.sizes[layer] + 1):
            dname = names[sympy.Symbol(f"delta{layer}_{i}", real=True)]
            key = "delta.output" if layer == net.depth else "delta.hidden"
            displays.append(doc.sub(key, wrap(dname, "=", _delta_one_level(d, layer, i, names))))
        doc.text(f"Layer {layer}:")
        doc.math(*displays)


def _one_path(doc: Doc) -> None:
    """For networks too large to list every weight: one weight of layer 1 through every path."""
    net = doc.d.network
    w = weight(1, 1, 1)
    doc.text(
        f"This network has {net.parameter_count} parameters, too many to list every weight "
        "(this document writes every weight out up to "
        f"{EXPANDED_LIMIT}). One path in full instead: the first weight of layer 1 reaches the "
        "loss through every neuron of every later layer, and the chain rule sums over all of "
        "those paths:"
    )
    left = rf"\frac{{\partial \ell}}{{\partial {latex_name(w)}}}"
    rows = list(wrap(left, "=", _path_factors(net, 1, 1, latex_name(w))))
    rows.append(("", rf" = \delta^{{(1)}}_{{1}} {latex_name(activation(0, 1))}"))
    doc.math(doc.sub("grad.W", rows))


# --- networks with layers of other kinds (DESIGN §2b) ----------------------------------------
#
# A plain dense stack keeps the sections above, byte for byte.  Any other network gets the
# sections below in their place: every layer by its number, kind and input; the kinds' own
# forward equations; the multivariable chain rule (a residual block's input is read twice);
# for every kind its backward rule as SymPy derived it on the small instance of
# ``symbackprop.rules``; and the backward pass layer by layer, in the reverse of the forward
# pass's order.  The neuron-by-neuron sections and the worked example stay for plain networks.

_IMAGE_JACOBIANS: dict[str, tuple[Row, ...]] = {
    "conv2d": (
        (
            r"\frac{\partial z^{(l)}_{f p q}}{\partial \tilde a^{(l-1)}_{c,\, S(p-1)+u,\,"
            r" S(q-1)+v}}",
            r" = W^{(l)}_{f c u v},\quad \frac{\partial z^{(l)}_{f p q}}"
            r"{\partial W^{(l)}_{f c u v}} = \tilde a^{(l-1)}_{c,\, S(p-1)+u,\, S(q-1)+v}"
            r"\ \text{(convolution)}",
        ),
    ),
    "max_pool2d": (
        (
            r"\frac{\partial a^{(l)}_{c p q}}{\partial a^{(l-1)}_{c i j}}",
            r" = 1 \text{ if } (i, j) \text{ is the first maximum of window } (p, q),"
            r" \text{ else } 0\ \text{(max pooling)}",
        ),
    ),
    "avg_pool2d": (
        (
            r"\frac{\partial a^{(l)}_{c p q}}{\partial a^{(l-1)}_{c i j}}",
            r" = \frac{1}{k_h k_w} \text{ if } (i, j) \text{ is in window } (p, q),"
            r" \text{ else } 0\ \text{(average pooling)}",
        ),
    ),
    "flatten": (
        (
            r"\frac{\partial a^{(l)}}{\partial a^{(l-1)}}",
            r" = \text{a permutation matrix}\ \text{(flattening)}",
        ),
    ),
}
_IMAGE_OPERATOR = {
    "max_pool2d": r"\operatorname{maxpool}",
    "avg_pool2d": r"\operatorname{avgpool}",
    "flatten": r"\operatorname{flat}",
}
_OPERATOR = {
    "layer_norm": r"\operatorname{LN}",
    "batch_norm": r"\operatorname{BN}",
    "rms_norm": r"\operatorname{RMS}",
}


def _rule(kind: str) -> rules.KindRule:
    """The kind's backward rule, derived and proven on its default instance (cached)."""
    return rules.derive_rule(kind)


def _proof(rule: rules.KindRule) -> str:
    """The rule's proof sentence with its formulas as math."""
    text = rule.proof.replace("g^T J", "$g^\\top J$")
    text = text.replace("eps symbolic", "$\\epsilon$ symbolic").replace("B = ", "$B$ = ")
    return re.sub(r"(\d+) x (\d+)", lambda m: f"{m[1]} $\\times$ {m[2]}", text)


@cache
def _disproof(derived: sympy.ImmutableMatrix, shown: sympy.ImmutableMatrix) -> str | None:
    """Why ``derived`` and ``shown`` differ (None: proven equal); cached, as the instances
    are fixed and a document is rendered twice (.tex and .md)."""
    try:
        rules.check_equal(derived, shown, "")
    except RuntimeError as err:
        return str(err)
    return None


def _equal(derived: sympy.MatrixBase, shown: sympy.MatrixBase, what: str) -> None:
    """Raise RuntimeError unless SymPy's ``derived`` and the ``shown`` form are equal."""
    problem = _disproof(sympy.ImmutableMatrix(derived), sympy.ImmutableMatrix(shown))
    if problem is not None:
        raise RuntimeError(f"{what}{problem}")


def _check(derived: sympy.Expr, shown: sympy.Expr, what: str) -> None:
    """``_equal`` for one entry."""
    _equal(sympy.Matrix([derived]), sympy.Matrix([shown]), what)


def _block_layers(net: SymbolicNetwork, residual: FlatLayer) -> list[int]:
    """The numbers of a residual's block's layers (its own and nested blocks' layers)."""
    prefix = f"{residual.path}.block["
    return [layer.index for layer in net.flat if layer.path.startswith(prefix)]


def _span(numbers: list[int]) -> str:
    """'layer 4' or 'layers 3\u20135' (a block's layers are consecutive)."""
    if len(numbers) == 1:
        return f"layer {numbers[0]}"
    return f"layers {numbers[0]}\u2013{numbers[-1]}"


def _parameter_tex(key: str) -> str:
    """W3 -> W^{(3)}, gamma4 -> \\gamma^{(4)}."""
    head = key.rstrip("0123456789")
    base = {"gamma": r"\gamma", "beta": r"\beta"}.get(head, head)
    return f"{base}^{{({key[len(head) :]})}}"


def _shape_tex(shape: tuple[int, ...]) -> str:
    return r" \times ".join(map(str, shape))


def _details(d: Derivation, layer: FlatLayer) -> str:
    spec = layer.layer
    if layer.kind == "dense":
        text = f"`{_act_name(d, layer.index)}`"
        return text if spec.bias else text + ", no bias"
    if layer.kind in ("layer_norm", "rms_norm"):
        return f"$\\epsilon = {decimal(spec.eps)}$"
    if layer.kind == "batch_norm":
        return f"$\\epsilon = {decimal(spec.eps)}$, momentum ${decimal(spec.momentum)}$"
    if layer.kind == "dropout":
        return f"rate $p = {decimal(spec.rate)}$"
    if layer.kind in _IMAGE_KINDS:
        return _image_details(d, layer)
    return f"block: {_span(_block_layers(d.network, layer))}"


_IMAGE_KINDS = ("conv2d", "max_pool2d", "avg_pool2d", "flatten")


def _pair_tex(pair: tuple[int, int], sep: str = r" \times ") -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}{sep}{pair[1]}"


def _compact_shape(shape: tuple[int, ...]) -> str:
    """C x H x W with tight signs: the network's table has seven columns."""
    return r"{\times}".join(map(str, shape))


def _image_details(d: Derivation, layer: FlatLayer) -> str:
    """Short, for the network's table (a kernel's size is in its W's shape): the activation,
    a stride other than 1 (a pool's other than its kernel), the padding, no bias."""
    spec = layer.layer
    if layer.kind == "flatten":
        return "C order"
    parts = [] if layer.kind != "conv2d" else [f"`{_act_name(d, layer.index)}`"]
    if layer.kind != "conv2d":
        parts.append(rf"${spec.kernel[0]} \times {spec.kernel[1]}$")
    if spec.stride != (1, 1) and (layer.kind == "conv2d" or spec.stride != spec.kernel):
        parts.append(f"stride ${_pair_tex(spec.stride)}$")
    if any(spec.padding):
        parts.append(f"pad ${_pair_tex(spec.padding)}$")
    if layer.kind == "conv2d" and not spec.bias:
        parts.append("no bias")
    return ", ".join(parts)


def _network_kinds(doc: Doc) -> None:
    d, net = doc.d, doc.d.network
    out = net.output_layer.index
    doc.section("The network and the notation")
    doc.figure(document_figures(net.spec)["network"])
    doc.text(
        f"The network has $n_0 = {net.sizes[0]}$ inputs and {net.depth} layers, numbered "
        + (
            "from 1 depth first: a residual layer takes a number, then the layers of its "
            "block follow it"
            if "residual" in _kinds_used(net)
            else "from 1"
        )
        + ". Each layer reads the output of the layer (or the input $x$) in the column "
        "'reads' and has an output $a^{(l)}$ of $n_l$ units:"
    )
    rows = []
    for layer in net.flat:
        params = layer_parameters(layer)
        names = ", ".join(f"${_parameter_tex(k)}$: ${_shape_tex(v)}$" for k, v in params.items())
        count = sum(math.prod(v) for v in params.values())
        rows.append(
            [
                f"${layer.index}$",
                "convolution" if layer.kind == "conv2d" else LAYERS[layer.kind].title,
                ", ".join(f"${_a(s)}$" for s in layer.sources),
                f"${_compact_shape(layer.shape) if layer.image else layer.units}$",
                _details(d, layer),
                names or "none",
                f"${count}$",
            ]
        )
    doc.table(
        ["$l$", "kind", "reads", "$n_l$", "details", "parameters", "count"],
        rows,
    )
    doc.text(
        f"Notation: $a^{{(0)}} = x$ is the input and $a^{{(l)}}$ the output of layer $l$, "
        f"whatever its kind; the network's output is $\\hat y = a^{{(L)}}$ with $L = {out}$, "
        "the last layer of the top-level list, and the target is $y$. In the equations of "
        "a layer $l$, $a^{(l-1)}$ stands for its input: the output of the layer it reads "
        "(in a plain stack, layer $l-1$). A dense layer has a weight matrix $W^{(l)}$ "
        "(row $i$, column $j$: $w^{(l)}_{ij}$, as in `torch.nn.Linear`), a bias $b^{(l)}$, "
        "the pre-activation $z^{(l)}$ and the activation $f_l$. Indices start at 1. "
        "The error of a dense layer is $\\delta^{(l)} = \\partial \\ell / \\partial z^{(l)}$; "
        "that of a layer of any other kind is the error at its output, "
        "$\\delta^{(l)} = \\partial \\ell / \\partial a^{(l)}$, for the loss $\\ell$ of one "
        "sample."
        + (
            " A batch normalization layer also keeps running statistics, which are not "
            "trained (the code's `mean<l>` and `var<l>`, entries of `params`)."
            " Batch normalization couples the samples of a batch: there, and below it, the "
            "error of sample $s$ is $B\\, \\partial L / \\partial a^{(l)}_s$ for the batch's "
            "loss $L$ (which is $\\partial \\ell_s / \\partial a^{(l)}_s$ wherever the samples "
            "are not coupled)."
            if "batch_norm" in _kinds_used(net)
            else ""
        )
    )
    doc.text(
        "Batches are rows: the code's `X` has shape $(B, n_0)$, one sample per row; a dense "
        "layer computes $Z^{(l)} = A^{(l-1)} W^{(l)\\top} + b^{(l)}$ for all $B$ samples at "
        "once. The code's names carry the layer's number (`Z<l>`, `A<l>`, `W<l>`, `b<l>`, "
        "`gamma<l>`, `beta<l>`); `dZ<l>` holds $\\delta^{(l)}/B$ of a dense layer and `dA<l>` "
        "the error at the output of a layer of another kind, over $B$. The loss is "
        f"`{net.loss.name}`; training uses `{net.spec.train.optimizer}` with learning rate "
        f"$\\eta = {decimal(net.spec.train.lr)}$."
    )
    if net.spec.image:
        channels, height, width = net.spec.input_shape
        doc.text(
            f"The input is an image: the code's `X` has shape $(B, {channels}, {height}, "
            f"{width})$, as in PyTorch (a flat $(B, {net.sizes[0]})$ array is reshaped in C "
            "order), and so does the output of every convolutional and pooling layer, "
            "$(B, C, H, W)$ with its own channels $C$, rows $H$ and columns $W$; indices "
            "$c, i, j$ (channel, row, column) start at 1."
        )


Step = tuple[str, tuple[Row, ...]]  # (the key a sub-equation is numbered under, its rows)


def _layer_rows(d: Derivation, layer: FlatLayer) -> list[Step]:
    """(key, rows) of one layer's forward map in this network, as sub-equations."""
    net, idx = d.network, layer.index
    spec, src = layer.layer, layer.sources[0]
    if layer.kind == "dense":
        bias_term = f" + b^{{({idx})}}" if spec.bias else ""
        shape = rf"W^{{({idx})}} \in \mathbb{{R}}^{{{layer.units} \times {layer.fan_in}}}"
        act = d.layers[idx - 1].activation
        return [
            (
                "forward.linear",
                ((f"z^{{({idx})}}", rf" = W^{{({idx})}} {_a(src)}{bias_term},\quad {shape}"),),
            ),
            (
                "forward.softmax" if act.softmax else "forward.activation",
                ((_a(idx), f" = {_f_latex(d, idx, f'z^{{({idx})}}')}"),),
            ),
        ]
    if layer.kind == "layer_norm":
        return [
            (
                "layer_norm.forward",
                (
                    (
                        _a(idx),
                        rf" = \gamma^{{({idx})}} \odot \frac{{{_a(src)} - \mu^{{({idx})}}}}"
                        rf"{{\sqrt{{\sigma^{{2\,({idx})}} + \epsilon}}}} + \beta^{{({idx})}},",
                    ),
                    (
                        "",
                        rf"\quad \mu^{{({idx})}}, \sigma^{{2\,({idx})}}:\ \text{{mean and variance "
                        rf"of the {layer.units} features of }} {_a(src)},\quad "
                        rf"\epsilon = {decimal(spec.eps)}",
                    ),
                ),
            )
        ]
    if layer.kind == "rms_norm":
        return [
            (
                "rms_norm.forward",
                (
                    (
                        _a(idx),
                        rf" = \gamma^{{({idx})}} \odot \frac{{{_a(src)}}}"
                        rf"{{\sqrt{{\nu^{{({idx})}} + \epsilon}}}},",
                    ),
                    (
                        "",
                        rf"\quad \nu^{{({idx})}}:\ \text{{mean of the squares of the {layer.units} "
                        rf"features of }} {_a(src)},\quad \epsilon = {decimal(spec.eps)}",
                    ),
                ),
            )
        ]
    if layer.kind == "batch_norm":
        return [
            (
                "batch_norm.forward",
                (
                    (
                        f"{_a(idx)}_s",
                        rf" = \gamma^{{({idx})}} \odot \frac{{{_a(src)}_s - \mu^{{({idx})}}_B}}"
                        rf"{{\sqrt{{\sigma^{{2\,({idx})}}_B + \epsilon}}}} + \beta^{{({idx})}},",
                    ),
                    (
                        "",
                        rf"\quad \mu^{{({idx})}}_B, \sigma^{{2\,({idx})}}_B:\ \text{{per feature, "
                        rf"over the }} B \text{{ samples}},\quad \epsilon = {decimal(spec.eps)},"
                        rf"\quad m = {decimal(spec.momentum)}",
                    ),
                ),
            )
        ]
    if layer.kind == "dropout":
        return [
            (
                "dropout.forward",
                (
                    (
                        _a(idx),
                        rf" = {_a(src)} \odot m^{{({idx})}},\quad p = {decimal(spec.rate)}",
                    ),
                ),
            )
        ]
    if layer.kind in _IMAGE_KINDS:
        return _image_rows(d, layer)
    block = _block_layers(net, layer)
    return [
        (
            "residual.forward",
            (
                (
                    _a(idx),
                    rf" = {_a(src)} + F^{{({idx})}}\left({_a(src)}\right) = {_a(src)} + "
                    rf"{_a(layer.sources[1])},\quad F^{{({idx})}}:\ \text{{the block, }}"
                    + (
                        rf"\text{{layer {block[0]}}}"
                        if len(block) == 1
                        else f"\\text{{layers {block[0]}\u2013{block[-1]}}}"
                    ),
                ),
            ),
        )
    ]


def _at(stride: int, out: str, offset: str) -> str:
    """The input row (or column) of output ``out`` and kernel offset: S(p-1)+u, 1-based."""
    return f"{out}+{offset}-1" if stride == 1 else f"{stride}({out}-1)+{offset}"


def _window_tex(source: str, spec: object, padded: bool) -> str:
    """source_{c, S(p-1)+u, S(q-1)+v} (the padded input's entry when ``padded``)."""
    stride = spec.stride
    base = rf"\tilde a^{{({source})}}" if padded else _a(int(source))
    return rf"{base}_{{c,\, {_at(stride[0], 'p', 'u')},\, {_at(stride[1], 'q', 'v')}}}"


def _image_rows(d: Derivation, layer: FlatLayer) -> list[Step]:
    """(key, rows) of a conv2d, pooling or flatten layer's forward map, with its numbers."""
    idx, src, spec = layer.index, layer.sources[0], layer.layer
    channels, height, width = layer.in_shape
    out = _shape_tex(layer.shape)
    if layer.kind == "flatten":
        return [
            (
                "flatten.forward",
                (
                    (
                        rf"{_a(idx)}_{{{height * width}(c-1) + {width}(i-1) + j}}",
                        rf" = {_a(src)}_{{c i j}},\quad {_a(src)} \in \mathbb{{R}}"
                        rf"^{{{_shape_tex(layer.in_shape)}}},\quad {_a(idx)} \in "
                        rf"\mathbb{{R}}^{{{layer.units}}}",
                    ),
                ),
            )
        ]
    kh, kw = spec.kernel
    if layer.kind in ("max_pool2d", "avg_pool2d"):
        window = _window_tex(str(src), spec, False)
        if layer.kind == "max_pool2d":
            body = rf" = \max_{{1 \le u \le {kh},\ 1 \le v \le {kw}}} {window},"
        else:
            body = (
                rf" = \frac{{1}}{{{kh * kw}}} \sum_{{u=1}}^{{{kh}}} \sum_{{v=1}}^{{{kw}}}"
                rf" {window},"
            )
        return [
            (
                f"{layer.kind}.forward",
                (
                    (rf"{_a(idx)}_{{c p q}}", body),
                    ("", rf"\quad {_a(idx)} \in \mathbb{{R}}^{{{out}}}"),
                ),
            )
        ]
    padded = any(spec.padding)
    kernel_shape = (spec.filters, channels, kh, kw)
    bias_term = rf"b^{{({idx})}}_f + " if spec.bias else ""
    rows: tuple[Row, ...] = (
        (
            rf"z^{{({idx})}}_{{f p q}}",
            rf" = {bias_term}\sum_{{c=1}}^{{{channels}}} \sum_{{u=1}}^{{{kh}}}"
            rf" \sum_{{v=1}}^{{{kw}}} W^{{({idx})}}_{{f c u v}}\, "
            + _window_tex(str(src), spec, padded)
            + ",",
        ),
        (
            "",
            rf"\quad W^{{({idx})}} \in \mathbb{{R}}^{{{_shape_tex(kernel_shape)}}}"
            rf",\quad z^{{({idx})}} \in \mathbb{{R}}^{{{out}}}"
            + (
                rf",\quad \tilde a^{{({src})}}:\ {_a(src)}\ \text{{with {_pair_text(spec.padding)}"
                rf" zero{'s' if max(spec.padding) > 1 else ''} around}}"
                if padded
                else ""
            ),
        ),
    )
    return [
        ("conv2d.forward", rows),
        ("forward.activation", ((_a(idx), f" = {_f_latex(d, idx, f'z^{{({idx})}}')}"),)),
    ]


def _pair_text(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]} (rows) and {pair[1]} (columns)"


def _forward_kinds(doc: Doc) -> None:
    d, net = doc.d, doc.d.network
    doc.section("The forward pass")
    doc.text(
        "This document writes out the forward and backward passes neuron by neuron (and "
        "works an example with numbers) for plain stacks of dense layers only; this network "
        "has layers of other kinds, so its passes are given in matrix form, layer by layer."
    )
    doc.text("For one sample, a dense layer computes")
    displays = [doc.core("forward.linear"), doc.core("forward.activation")]
    if net.output.softmax:
        displays.append(doc.core("forward.softmax"))
    doc.math(*displays)
    for kind in _kinds_used(net):
        numbers = _of_kind(net, kind)
        title = LAYERS[kind].title
        title += "" if title.endswith(" layer") else " layer"
        article = "An" if title[0] in "aeiou" else "A"
        doc.text(f"{article} {title} ({_listing(numbers)} here) computes")
        doc.math(doc.core(f"{kind}.forward"))
        if kind == "batch_norm":
            doc.text(
                "Unlike every other kind, its output for one sample depends on the other "
                "samples of the batch, through the batch's mean and variance."
            )
    doc.text(
        "Layer by layer, in the order the forward pass computes them (a residual layer's "
        "number comes before its block's layers, its sum after them):"
    )
    displays = []
    for index in net.spec.order:
        for key, rows in _layer_rows(d, net.flat[index - 1]):
            displays.append(doc.sub(key, rows))
    doc.math(*displays)
    doc.text(
        "For a batch whose samples are the rows of $A^{(0)} = X$ (the code's convention), a "
        "dense layer computes"
    )
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
    doc.text(
        "and every other kind acts on each row alone, except batch normalization, which "
        "normalizes each column over the rows."
        if "batch_norm" in _kinds_used(net)
        else "and every other kind acts on each row alone."
    )
    moded = [k for k in _kinds_used(net) if LAYERS[k].modes]
    if moded:
        doc.text(
            "Training and inference differ: `loss`, `gradients`, `train_step` and `fit` run "
            "in training mode, as above"
            + (
                " (dropout draws a fresh mask $m^{(l)}$ for every sample)"
                if "dropout" in moded
                else ""
            )
            + "; `forward` and `predict` run in inference mode, as PyTorch's `eval()`"
            + (", where dropout is the identity" if "dropout" in moded else "")
            + (
                " and batch normalization uses its running statistics:"
                if "batch_norm" in moded
                else "."
            )
        )
        if "batch_norm" in moded:
            doc.math(doc.core("batch_norm.inference"))


def _composite(net: SymbolicNetwork, index: int, named: set[int]) -> tuple[str, str]:
    """a^{(index)} as a composite of the layer maps, stopping at ``named`` outputs.

    Returns (LaTeX, its operator: "+" for a residual's sum, "odot" for a dropout's product,
    "" for an atom or a function application), so that whatever reads it can bracket it.
    """
    if index == 0:
        return "x", ""
    layer = net.flat[index - 1]
    inputs = []
    for source in layer.sources:
        if source in named:
            inputs.append((_a(source), ""))
        else:
            inputs.append(_composite(net, source, named))
    (inner, op), idx = inputs[0], layer.index
    if layer.kind == "dense":  # W times a sum or an elementwise product: brackets
        arg = rf"\left({inner}\right)" if op else inner
        bias_term = f" + b^{{({idx})}}" if layer.layer.bias else ""
        return rf"f_{{{idx}}}\left(W^{{({idx})}} {arg}{bias_term}\right)", ""
    if layer.kind in _OPERATOR:
        return rf"{_OPERATOR[layer.kind]}_{{{idx}}}\left({inner}\right)", ""
    if layer.kind == "conv2d":  # the cross-correlation binds like a product: brackets
        arg = rf"\left({inner}\right)" if op else inner
        bias_term = f" + b^{{({idx})}}" if layer.layer.bias else ""
        return rf"f_{{{idx}}}\left(W^{{({idx})}} \star {arg}{bias_term}\right)", ""
    if layer.kind in _IMAGE_OPERATOR:
        return rf"{_IMAGE_OPERATOR[layer.kind]}_{{{idx}}}\left({inner}\right)", ""
    if layer.kind == "dropout":  # m odot a sum: brackets; odot is associative
        arg = rf"\left({inner}\right)" if op == "+" else inner
        return rf"m^{{({idx})}} \odot {arg}", "odot"
    return f"{inner} + {inputs[1][0]}", "+"


def _composite_rows(net: SymbolicNetwork) -> tuple[Row, ...] | None:
    """ell as a composite of the layers, shared outputs (read twice) given their own rows."""
    readers = _readers(net)
    shared = {s for s, r in readers.items() if s and len(r) > 1}
    residuals = set(_of_kind(net, "residual"))
    top = {layer.index for layer in net.flat if layer.top}
    out = net.output_layer.index
    for candidates in (shared, shared | residuals, shared | residuals | top):
        named = candidates - {out}
        text, _ = _composite(net, out, named)
        rows = [(r"\ell", rf" = \ell\left({text}, y\right),")]
        for index in net.spec.order:
            if index in named:
                rows.append((_a(index), f" = {_composite(net, index, named - {index})[0]},"))
        if all(glyphs(left + right) <= WIDTH for left, right in rows):
            last = rows[-1]
            rows[-1] = (last[0], last[1].rstrip(","))
            return tuple(rows)
    return None


def _chain_kinds(doc: Doc) -> None:
    net = doc.d.network
    doc.section("The chain rule")
    teaching.chain_rule_scalar(doc)
    rows = _composite_rows(net)
    if rows is not None:
        operators = [
            f"${_OPERATOR[k]}_l$ the {LAYERS[k].title} of layer $l$"
            for k in _kinds_used(net)
            if k in _OPERATOR
        ]
        if "conv2d" in _kinds_used(net):
            operators.append(r"$W^{(l)} \star$ the cross-correlation of a convolutional layer")
        operators += [
            f"${_IMAGE_OPERATOR[k]}_l$ the {LAYERS[k].title} of layer $l$"
            for k in _kinds_used(net)
            if k in _IMAGE_OPERATOR
        ]
        doc.text(
            "The loss of one sample is a composite of the layers' maps"
            + (" (" + ", ".join(operators) + ")" if operators else "")
            + ":"
        )
        doc.math(doc.sub("loss", rows))
    readers = _readers(net)
    shared = [s for s in sorted(readers) if s and len(readers[s]) > 1]
    doc.text(
        "The chain rule splits its derivative into one factor per layer, each layer's "
        "Jacobian. Where the output of a layer is read by more than one layer, the loss "
        "depends on it along several paths, and the multivariable chain rule adds their "
        "contributions: for the output of layer $l$,"
    )
    doc.math(
        doc.sub(
            "loss",
            (
                (
                    r"\frac{\partial \ell}{\partial a^{(l)}}",
                    r" = \sum_{c \,\text{reads}\, a^{(l)}} "
                    r"\left(\frac{\partial a^{(c)}}{\partial a^{(l)}}\right)^{\top} "
                    r"\frac{\partial \ell}{\partial a^{(c)}}",
                ),
            ),
        )
    )
    if shared:
        items = []
        for s in shared:
            who = []
            for c in readers[s]:
                layer = net.flat[c - 1]
                role = ""
                if layer.kind == "residual":
                    role = ": its skip connection"
                else:
                    owner = next(
                        (
                            r
                            for r in _of_kind(net, "residual")
                            if _block_layers(net, net.flat[r - 1])[:1] == [c]
                        ),
                        None,
                    )
                    if owner is not None:
                        role = f": the first of residual layer {owner}'s block"
                who.append(f"layer {c} ({LAYERS[layer.kind].title}{role})")
            items.append(f"${_a(s)}$, read by " + " and by ".join(who) + ";")
        items[-1] = items[-1].rstrip(";") + "."
        doc.text("In this network the sum has more than one term for")
        doc.items(items)
        doc.text("Every other output is read by one layer only, and its sum has a single term.")
    else:
        doc.text("In this network every output is read by one layer, so each sum has one term.")
    doc.text("The layers' Jacobians, by kind:")
    displays = [
        doc.sub(
            "loss",
            (
                (
                    r"\frac{\partial a^{(l)}}{\partial a^{(l-1)}}",
                    r" = \operatorname{diag}\left(f_l'\left(z^{(l)}\right)\right) W^{(l)}"
                    r"\ \text{(dense, elementwise } f_l\text{)},\quad "
                    r"\frac{\partial z^{(l)}_i}{\partial w^{(l)}_{ij}} = a^{(l-1)}_j",
                ),
            ),
        )
    ]
    for kind in _kinds_used(net):
        if kind == "dropout":
            rows = (
                (
                    r"\frac{\partial a^{(l)}}{\partial a^{(l-1)}}",
                    r" = \operatorname{diag}\left(m^{(l)}\right)\ \text{(dropout)}",
                ),
            )
        elif kind == "residual":
            rows = (
                (
                    r"\frac{\partial a^{(l)}}{\partial a^{(l-1)}}",
                    r" = I\ \text{(the skip)},\quad "
                    r"\frac{\partial a^{(l)}}{\partial F^{(l)}} = I\ \text{(the block's output)}"
                    r"\quad \text{(residual)}",
                ),
            )
        elif kind in _IMAGE_JACOBIANS:
            rows = _IMAGE_JACOBIANS[kind]
        else:
            continue  # the normalizations: below
        displays.append(doc.sub("loss", rows))
    doc.math(*displays)
    norms = [LAYERS[k].title for k in _kinds_used(net) if k in _OPERATOR]
    if norms:
        over = (
            " (for batch normalization: of all the samples of the batch, per feature)"
            if "batch_norm" in _kinds_used(net)
            else ""
        )
        stats = "mean and variance"
        if "rms_norm" in _kinds_used(net):  # it has no mean: its statistic is the mean square
            stats = "mean square" if len(norms) == 1 else stats + " (the mean square for RMS)"
        doc.text(
            f"The Jacobian of {' and that of '.join(norms)} is full: every output reads the "
            f"{stats} of all the features of its sample{over}."
        )
    doc.text("SymPy derives each kind's Jacobian in its own section below.")
    doc.text(
        "Evaluating the product from the loss end keeps one vector per layer, the error at "
        "its output, and reuses it for the layers below: that is backpropagation, and its "
        "cost is linear in the number of layers. What remains is each activation's and each "
        "kind's derivative, the output error $\\delta^{(L)}$, and the recursion."
    )


# - the kinds' backward rules, as SymPy derived them on a small instance


def _norm_abbreviations(
    x: list[sympy.Symbol], tag: str
) -> tuple[sympy.Symbol, sympy.Symbol, list[sympy.Symbol], dict, dict]:
    """mu, sigma^2 and xhat_k for the group of inputs ``x``: symbols, names, and their values."""
    mu = sympy.Symbol(f"mu_{tag}", real=True)
    var = sympy.Symbol(f"var_{tag}", positive=True)
    hats = [sympy.Symbol(f"xhat_{s.name}", real=True) for s in x]
    mean = layer_maps.mean(x)
    variance = layer_maps.biased_variance(x, mean)
    root = sympy.sqrt(variance + rules.EPS)
    values = {mu: mean, var: variance}
    values.update({h: (xi - mean) / root for h, xi in zip(hats, x, strict=True)})
    sub = f"_{{{tag}}}" if tag else ""
    names = {mu: rf"\mu{sub}", var: rf"\sigma^{{2}}{sub}"}
    return mu, var, hats, names, values


def _instance_names(rule: rules.KindRule) -> dict[sympy.Symbol, str]:
    """LaTeX names of an instance's symbols; a batch's x_{s,i} with a comma."""
    return {s: name.replace(" ", ",") for s, name in rule.symbol_names.items()}


def _hat_names(rule: rules.KindRule, hats: list[sympy.Symbol], x: list) -> dict:
    names = _instance_names(rule)
    return {h: names[xi].replace("x_", r"\hat x_", 1) for h, xi in zip(hats, x, strict=True)}


def _rule_first(doc: Doc, kind: str) -> None:
    """A kind's section opens with its backward rule; the derivation follows."""
    doc.text("The rule the generated code evaluates, derived by SymPy below:")
    doc.math(doc.core(f"{kind}.backward"))


def _rule_norm(doc: Doc, kind: str) -> None:
    """Layer norm (one sample's n features) or batch norm (each feature over B samples)."""
    net = doc.d.network
    rule = _rule(kind)
    batch = kind == "batch_norm"
    rows_, cols_ = rule.shape
    inputs, upstream = list(rule.inputs), list(rule.upstream)
    names = _instance_names(rule)
    gammas = {
        k: layer_maps.gamma(rules.INDEX, (k % cols_ if batch else k) + 1)
        for k in range(len(inputs))
    }
    # the groups sharing one mean and variance: the features of the sample, or each feature's
    # column over the batch (inputs are row-major: sample s, feature i -> s * cols + i)
    groups = (
        [[s * cols_ + i for s in range(rows_)] for i in range(cols_)]
        if batch
        else [list(range(len(inputs)))]
    )
    size = rows_ if batch else cols_
    hat, root, abbreviation_names, values = {}, {}, {}, {}
    mus, variances = [], []
    for g, group in enumerate(groups):
        tag = str(g + 1) if batch else ""
        mu, var, hats, group_names, group_values = _norm_abbreviations(
            [inputs[k] for k in group], tag
        )
        mus.append(mu)
        variances.append(var)
        abbreviation_names.update(group_names)
        abbreviation_names.update(_hat_names(rule, hats, [inputs[k] for k in group]))
        values.update(group_values)
        for k, h in zip(group, hats, strict=True):
            hat[k], root[k] = h, sympy.sqrt(var + rules.EPS)
    h_symbols = [sympy.Symbol(f"h_{s.name}", real=True) for s in upstream]
    for k, hs in enumerate(h_symbols):
        abbreviation_names[hs] = names[upstream[k]].replace("g_", "h_", 1)
        values[hs] = upstream[k] * gammas[k]
    show = {**names, **abbreviation_names}

    def expand(expr: sympy.Expr) -> sympy.Expr:
        """An expression in the abbreviations, in the instance's own symbols."""
        out = expr.xreplace({s: v for s, v in values.items() if s.name.startswith("h_")})
        out = out.xreplace({s: v for s, v in values.items() if s.name.startswith("xhat_")})
        return out.xreplace({s: v for s, v in values.items() if s in mus or s in variances})

    what = f"{LAYERS[kind].title}, n = {size}"
    title = LAYERS[kind].title
    numbers = _of_kind(net, kind)
    doc.section(f"The backward rule of {title}")
    _rule_first(doc, kind)
    if batch:
        doc.text(
            f"Batch normalization ({_listing(numbers)}) couples the samples of a batch, so its "
            "backward rule is derived over the batch, the batch taken as one function. SymPy "
            f"builds a small instance from the layer's forward map: $B = {rows_}$ samples of "
            f"{cols_} features, $x_{{si}}$ being feature $i$ of sample $s$ of the layer's "
            "input, $\\epsilon$ kept as a symbol:"
        )
    else:
        doc.text(
            f"Layer normalization ({_listing(numbers)}) normalizes each sample over its "
            "features, so every output depends on every feature of its input. SymPy builds "
            f"a small instance from the layer's forward map: $n = {cols_}$ features $x_i$ "
            "of one sample (the layer's input), $\\epsilon$ kept as a symbol:"
        )
    displays = []
    for g, group in enumerate(groups):
        xs = [inputs[k] for k in group]
        mean_tex = " + ".join(show[x] for x in xs)
        var_tex = " + ".join(rf"\left({show[x]} - {show[mus[g]]}\right)^2" for x in xs)
        rows = (
            (show[mus[g]], rf" = \frac{{1}}{{{size}}}\left({mean_tex}\right),"),
            (show[variances[g]], rf" = \frac{{1}}{{{size}}}\left({var_tex}\right),"),
        )
        displays.append(doc.sub(f"{kind}.backward", rows))
    k0 = 0
    y0 = (
        rf"\gamma_{{1}} \frac{{{show[inputs[k0]]} - {show[mus[0]]}}}"
        rf"{{\sqrt{{{show[variances[0]]} + \epsilon}}}} + \beta_{{1}}"
    )
    _check(
        rule.forward[k0],
        expand(gammas[k0] * hat[k0]) + layer_maps.beta(rules.INDEX, 1),
        f"{what}: the forward map",
    )
    out_name = "y_{1,1}" if batch else "y_{1}"
    in_name = show[inputs[k0]]
    displays.append(
        doc.sub(
            f"{kind}.backward",
            (
                (
                    out_name,
                    f" = {y0} = \\gamma_{{1}} {abbreviation_names[hat[k0]]} + \\beta_{{1}}",
                ),
            ),
        )
    )
    doc.math(*displays)
    doc.text(
        f"and the other outputs alike. SymPy differentiates every output by every input "
        f"({len(inputs)} $\\times$ {len(inputs)} entries). In closed form, with "
        f"$\\hat x = (x - \\mu)/\\sqrt{{\\sigma^2 + \\epsilon}}$, checked entry by entry "
        "against SymPy's:"
    )
    # the Jacobian in closed form, checked against SymPy's on every entry
    closed = sympy.zeros(len(inputs), len(inputs))
    for group in groups:
        for a in group:
            for b in group:
                kron = 1 if a == b else 0
                closed[a, b] = (
                    gammas[a] / root[a] * (kron - sympy.Rational(1, size) - hat[a] * hat[b] / size)
                )
    _equal(rule.jacobian, closed.applyfunc(expand), f"{what}: the Jacobian in closed form")
    if batch:
        general = (
            r"\frac{\partial y_{si}}{\partial x_{tj}}",
            rf" = [i = j]\, \frac{{\gamma_i}}{{\sqrt{{\sigma^2_i + \epsilon}}}}"
            rf"\left(\delta_{{st}} - \frac{{1}}{{{size}}} - "
            rf"\frac{{\hat x_{{si}} \hat x_{{ti}}}}{{{size}}}\right)",
        )
        picks = [(0, 0), (0, cols_), (0, 1)]  # itself; the same feature of sample 2; feature 2
    else:
        general = (
            r"\frac{\partial y_{i}}{\partial x_{j}}",
            rf" = \frac{{\gamma_i}}{{\sqrt{{\sigma^2 + \epsilon}}}}"
            rf"\left(\delta_{{ij}} - \frac{{1}}{{{size}}} - "
            rf"\frac{{\hat x_{{i}} \hat x_{{j}}}}{{{size}}}\right)",
        )
        picks = [(0, 0), (0, 1)]
    displays = [doc.sub(f"{kind}.backward", (general,))]
    out_names = [names[x].replace("x_", "y_", 1) for x in inputs]
    for a, b in picks:
        entry = closed[a, b]
        left = rf"\frac{{\partial {out_names[a]}}}{{\partial {names[inputs[b]]}}}"
        text = "0" if entry == 0 else to_tex(sympy.factor(entry), show)
        _check(rule.jacobian[a, b], expand(entry), f"{what}: entry ({a}, {b})")
        displays.append(doc.sub(f"{kind}.backward", ((left, f" = {text}"),)))
    doc.math(*displays)
    zeros = sum(1 for v in rule.jacobian if v == 0)
    if batch:
        doc.text(
            f"The entries across samples, such as $\\partial y_{{1,1}} / \\partial x_{{2,1}}$, "
            "are not zero: the samples are coupled through the batch's mean and variance. "
            f"The {zeros} entries across features are 0, as SymPy finds."
        )
    else:
        doc.text(
            "Unlike an elementwise activation's, this Jacobian is not diagonal: the mean and "
            "variance are shared by all the features."
        )
    g_name = "g_{si}" if batch else "g_{i}"
    doc.text(
        f"With a symbolic upstream gradient ${g_name}$ (the error at the layer's output"
        + (
            ", for the batch's summed loss: $g_{si} = B\\, \\partial L / \\partial y_{si}$"
            if batch
            else ": $g_i = \\partial \\ell / \\partial y_i$"
        )
        + "), the vector\u2013Jacobian product $g^\\top J$ is the error at its input. "
        f"SymPy's first entry, {sympy.count_ops(rule.vjp[0])} operations in the instance's "
        "symbols, equals (checked) this form, with $h = \\gamma \\odot g$:"
    )
    group = groups[0]
    b0 = group[0]
    mean_h = " + ".join(abbreviation_names[h_symbols[k]] for k in group)
    mean_hx = " + ".join(
        f"{abbreviation_names[h_symbols[k]]} {abbreviation_names[hat[k]]}" for k in group
    )
    shown = (
        h_symbols[b0]
        - sympy.Add(*(h_symbols[k] for k in group)) / size
        - hat[b0] * sympy.Add(*(h_symbols[k] * hat[k] for k in group)) / size
    ) / root[b0]
    _check(rule.vjp[b0], expand(shown), f"{what}: the first entry of g^T J")
    left = rf"\left(g^\top J\right)_{{{'1,1' if batch else '1'}}}"
    rows = (
        (
            left,
            rf" = \sum_{{{'t,j' if batch else 'i'}}} {g_name.replace('si', 'tj')} "
            rf"\frac{{\partial {'y_{tj}' if batch else 'y_{i}'}}}{{\partial {in_name}}}",
        ),
        (
            "",
            rf" = \frac{{1}}{{\sqrt{{{show[variances[0]]} + \epsilon}}}}\left("
            rf"{abbreviation_names[h_symbols[b0]]} - \frac{{{mean_h}}}{{{size}}} - "
            rf"{abbreviation_names[hat[b0]]}\, \frac{{{mean_hx}}}{{{size}}}\right)",
        ),
    )
    doc.math(doc.sub(f"{kind}.backward", rows))
    doc.text(
        f"{_proof(rule)} For any ${'B' if batch else 'n'}$, the same steps give the rule the "
        f"generated code evaluates, {ref(doc.d.number(f'{kind}.backward'))} above."
    )
    grads = {p.name: p for p in rule.parameter_grads}
    doc.text(
        "SymPy's derivatives of $g^\\top y$ by the layer's own parameters are "
        + (
            "$\\sum_s g_{si} \\hat x_{si}$ and $\\sum_s g_{si}$"
            if batch
            else "$g_i \\hat x_i$ and $g_i$"
        )
        + f" (for $\\gamma_i$ and $\\beta_i$; {len(grads['gamma'].derived)} and "
        f"{len(grads['beta'].derived)} entries, proven equal to the formulas), which over a "
        "batch give"
    )
    doc.math(doc.core(f"{kind}.grad"))


def _rule_rms_norm(doc: Doc) -> None:
    """RMS norm: one sample's n features over their mean square (no mean, no shift)."""
    net = doc.d.network
    rule = _rule("rms_norm")
    n = rule.shape[1]
    inputs, upstream = list(rule.inputs), list(rule.upstream)
    names = _instance_names(rule)
    gammas = [layer_maps.gamma(rules.INDEX, i + 1) for i in range(n)]
    nu = sympy.Symbol("nu", positive=True)
    hats = [sympy.Symbol(f"xhat_{x.name}", real=True) for x in inputs]
    hs = [sympy.Symbol(f"h_{g.name}", real=True) for g in upstream]
    root = sympy.sqrt(nu + rules.EPS)
    show = {**names, nu: r"\nu", **_hat_names(rule, hats, inputs)}
    show.update({h: names[g].replace("g_", "h_", 1) for h, g in zip(hs, upstream, strict=True)})
    mean_square = layer_maps.mean_square(inputs)

    def expand(expr: sympy.Expr) -> sympy.Expr:
        """An expression in the abbreviations, in the instance's own symbols."""
        out = expr.xreplace({h: g * gm for h, g, gm in zip(hs, upstream, gammas, strict=True)})
        out = out.xreplace({h: x / root for h, x in zip(hats, inputs, strict=True)})
        return out.xreplace({nu: mean_square})

    what = f"RMS normalization, n = {n}"
    doc.section(f"The backward rule of {LAYERS['rms_norm'].title}")
    _rule_first(doc, "rms_norm")
    doc.text(
        f"RMS normalization ({_listing(_of_kind(net, 'rms_norm'))}) divides each sample by the "
        "root of the mean square of its features; it subtracts no mean and adds no shift. "
        "Every output depends on every feature of its input. SymPy builds a small instance "
        f"from the layer's forward map: $n = {n}$ features $x_i$ of one sample (the layer's "
        "input), $\\epsilon$ kept as a symbol:"
    )
    squares = " + ".join(f"{show[x]}^2" for x in inputs)
    _check(rule.forward[0], expand(gammas[0] * hats[0]), f"{what}: the forward map")
    doc.math(
        doc.sub("rms_norm.backward", ((r"\nu", rf" = \frac{{1}}{{{n}}}\left({squares}\right),"),)),
        doc.sub(
            "rms_norm.backward",
            (
                (
                    "y_{1}",
                    rf" = \gamma_{{1}} \frac{{{show[inputs[0]]}}}{{\sqrt{{\nu + \epsilon}}}}"
                    rf" = \gamma_{{1}} {show[hats[0]]}",
                ),
            ),
        ),
    )
    doc.text(
        f"and the other outputs alike. SymPy differentiates every output by every input "
        f"({n} $\\times$ {n} entries). In closed form, with "
        "$\\hat x = x/\\sqrt{\\nu + \\epsilon}$, checked entry by entry against SymPy's:"
    )
    closed = sympy.Matrix(
        n, n, lambda i, j: gammas[i] / root * ((1 if i == j else 0) - hats[i] * hats[j] / n)
    )
    _equal(rule.jacobian, closed.applyfunc(expand), f"{what}: the Jacobian in closed form")
    displays = [
        doc.sub(
            "rms_norm.backward",
            (
                (
                    r"\frac{\partial y_{i}}{\partial x_{j}}",
                    rf" = \frac{{\gamma_i}}{{\sqrt{{\nu + \epsilon}}}}"
                    rf"\left(\delta_{{ij}} - \frac{{\hat x_{{i}} \hat x_{{j}}}}{{{n}}}\right)",
                ),
            ),
        )
    ]
    for a, b in [(0, 0), (0, 1)]:
        _check(rule.jacobian[a, b], expand(closed[a, b]), f"{what}: entry ({a}, {b})")
        left = rf"\frac{{\partial y_{{{a + 1}}}}}{{\partial {show[inputs[b]]}}}"
        text = to_tex(sympy.factor(closed[a, b]), show)
        displays.append(doc.sub("rms_norm.backward", ((left, f" = {text}"),)))
    doc.math(*displays)
    doc.text(
        "With a symbolic upstream gradient $g_i = \\partial \\ell / \\partial y_i$ (the "
        "error at the layer's output), the vector\u2013Jacobian product $g^\\top J$ is the "
        f"error at its input. SymPy's first entry, {sympy.count_ops(rule.vjp[0])} operations "
        "in the instance's symbols, equals (checked) this form, with $h = \\gamma \\odot g$:"
    )
    shown = (
        hs[0] - hats[0] * sympy.Add(*(h * x for h, x in zip(hs, hats, strict=True))) / n
    ) / root
    _check(rule.vjp[0], expand(shown), f"{what}: the first entry of g^T J")
    mean_hx = " + ".join(f"{show[h]} {show[x]}" for h, x in zip(hs, hats, strict=True))
    doc.math(
        doc.sub(
            "rms_norm.backward",
            (
                (
                    r"\left(g^\top J\right)_{1}",
                    rf" = \sum_{{i}} g_{{i}} \frac{{\partial y_{{i}}}}"
                    rf"{{\partial {show[inputs[0]]}}}",
                ),
                (
                    "",
                    rf" = \frac{{1}}{{\sqrt{{\nu + \epsilon}}}}\left({show[hs[0]]} - "
                    rf"{show[hats[0]]}\, \frac{{{mean_hx}}}{{{n}}}\right)",
                ),
            ),
        )
    )
    doc.text(
        f"{_proof(rule)} Without the mean, the term $-\\frac{{1}}{{n}} \\sum_j h_j$ of layer "
        "normalization's rule is absent. For any $n$, the same steps give the rule the "
        f"generated code evaluates, {ref(doc.d.number('rms_norm.backward'))} above."
    )
    (grad,) = rule.parameter_grads
    doc.text(
        "SymPy's derivative of $g^\\top y$ by the layer's gain is $g_i \\hat x_i$ (for "
        f"$\\gamma_i$; {len(grad.derived)} entries, proven equal to the formula), which over "
        "a batch gives"
    )
    doc.math(doc.core("rms_norm.grad"))


def _rule_dropout(doc: Doc) -> None:
    net = doc.d.network
    rule = _rule("dropout")
    names = rule.symbol_names
    n = rule.n
    doc.section("The backward rule of dropout")
    _rule_first(doc, "dropout")
    doc.text(
        f"Dropout ({_listing(_of_kind(net, 'dropout'))}) multiplies each feature by its mask "
        "entry $m_i$, drawn in the forward pass: $0$ with probability $p$, else $1/(1 - p)$. "
        f"SymPy's instance: $n = {n}$ features $x_i$ and the mask entries $m_i$ as symbols,"
    )
    ys = ", ".join(rf"y_{{{i + 1}}} = {to_tex(rule.forward[i], names)}" for i in range(n))
    jac = to_tex(sympy.Matrix(rule.jacobian), names)
    vjp = to_tex(sympy.Matrix(rule.vjp), names)
    g = r"\left(" + ", ".join(f"g_{{{i + 1}}}" for i in range(n)) + r"\right)"
    diag = sympy.diag(*(layer_maps.mask(rules.INDEX, i + 1) for i in range(n)))
    _equal(rule.jacobian, diag, "dropout: the Jacobian is diag(m)")
    doc.math(
        doc.sub("dropout.backward", ((r"y", rf" = x \odot m:\quad {ys}"),)),
        doc.sub("dropout.backward", ((r"J", rf" = {jac} = \operatorname{{diag}}(m),"),)),
        doc.sub("dropout.backward", ((r"g^\top J", rf" = {g} J = {vjp} = g \odot m"),)),
    )
    doc.text(
        f"{_proof(rule)} The error passes the units that were kept, scaled by $1/(1 - p)$ as "
        "they were, with the same mask as the forward pass; at inference the layer is the "
        f"identity. In general, this is {ref(doc.d.number('dropout.backward'))} above."
    )


def _rule_residual(doc: Doc) -> None:
    net = doc.d.network
    rule = _rule("residual")
    n = rule.n
    names = dict(rule.symbol_names)
    zs = [sympy.Symbol(f"z{i + 1}", real=True) for i in range(n)]
    names.update({z: f"z_{{{i + 1}}}" for i, z in enumerate(zs)})
    x = list(rule.inputs)
    g = list(rule.upstream)
    w = [[sympy.Symbol(f"w{i + 1}_{j + 1}", real=True) for j in range(n)] for i in range(n)]
    b = [sympy.Symbol(f"b{i + 1}", real=True) for i in range(n)]
    z_values = {zs[i]: b[i] + sum(w[i][j] * x[j] for j in range(n)) for i in range(n)}
    numbers = _of_kind(net, "residual")
    doc.section("The backward rule of the residual connection")
    _rule_first(doc, "residual")
    doc.text(
        f"A residual layer ({_listing(numbers)}) adds its input to its block's output, "
        "$a^{(l)} = a^{(l-1)} + F(a^{(l-1)})$: the input reaches the output along two paths, "
        "the skip and the block. SymPy's instance: a block of one dense $\\tanh$ layer of "
        f"$n = {n}$ units, $y = x + \\tanh(W x + b)$, with $z_i = b_i + \\sum_j w_{{ij}} x_j$:"
    )
    y1 = x[0] + sympy.tanh(zs[0])
    _check(rule.forward[0], y1.xreplace(z_values), "residual: the forward map")
    j11, j12 = rule.jacobian[0, 0], rule.jacobian[0, 1]
    shown11 = 1 + w[0][0] * (1 - sympy.tanh(zs[0]) ** 2)
    shown12 = w[0][1] * (1 - sympy.tanh(zs[0]) ** 2)
    _check(j11, shown11.xreplace(z_values), "residual: J_11")
    _check(j12, shown12.xreplace(z_values), "residual: J_12")
    closed = sympy.Matrix(
        n,
        n,
        lambda i, j: (1 if i == j else 0) + w[i][j] * (1 - sympy.tanh(z_values[zs[i]]) ** 2),
    )
    _equal(rule.jacobian, closed, "residual: the Jacobian I + diag(tanh') W")
    doc.math(
        doc.sub(
            "residual.backward",
            (
                (
                    r"y_{1}",
                    f" = {to_tex(y1, names)},\\quad z_{{1}} = {to_tex(z_values[zs[0]], names)}",
                ),
            ),
        ),
        doc.sub(
            "residual.backward",
            (
                (
                    r"\frac{\partial y_{1}}{\partial x_{1}}",
                    rf" = {to_tex(shown11, names)},\quad "
                    rf"\frac{{\partial y_{{1}}}}{{\partial x_{{2}}}} = {to_tex(shown12, names)},",
                ),
            ),
        ),
        doc.sub(
            "residual.backward",
            (
                (
                    "J",
                    r" = \underbrace{I}_{\text{skip}} + \underbrace{\operatorname{diag}"
                    r"\left(1 - \tanh^{2} z\right) W}_{\text{the block}}",
                ),
            ),
        ),
    )
    skip = g[0]
    through = sympy.Add(*(g[i] * w[i][0] * (1 - sympy.tanh(zs[i]) ** 2) for i in range(n)))
    _check(rule.vjp[0], (skip + through).xreplace(z_values), "residual: (g^T J)_1")
    terms = " + ".join(
        rf"g_{{{i + 1}}} w_{{{i + 1}1}} \left(1 - \tanh^{{2}}{{z_{{{i + 1}}}}}\right)"
        for i in range(n)
    )
    doc.text(
        "With a symbolic upstream gradient $g = \\partial \\ell / \\partial y$, SymPy's first "
        "entry of $g^\\top J$, the error at the input, is one term from the skip and one "
        "from each unit of the block:"
    )
    doc.math(
        doc.sub(
            "residual.backward",
            (
                (
                    r"\left(g^\top J\right)_{1}",
                    rf" = \underbrace{{g_{{1}}}}_{{\text{{skip}}}} + "
                    rf"\underbrace{{{terms}}}_{{\text{{through the block}}}}",
                ),
            ),
        )
    )
    doc.text(
        f"{_proof(rule)} This is the multivariable chain rule: $x$ is read twice, by the skip "
        "and by the block, so the error at $x$ is the sum of the two paths' contributions. "
        "The skip passes $\\delta^{(l)}$ on unchanged; the block's last layer receives the "
        "same $\\delta^{(l)}$ at its output, the block's own backward pass carries it to "
        "its input, and the result is added (`+=` in the code) to the skip's, as "
        f"{ref(doc.d.number('residual.backward'))} above says."
    )
    doc.text(
        "The block's parameters get their gradients from their own layers' rules (SymPy's "
        "$\\partial (g^\\top y) / \\partial w_{ij}$ on the instance is the dense rule's "
        "$\\delta_i x_j$, proven alike)."
    )


def _section_rule(doc: Doc, kind: str) -> None:
    if kind in ("layer_norm", "batch_norm"):
        _rule_norm(doc, kind)
    elif kind == "dropout":
        _rule_dropout(doc)
    elif kind == "residual":
        _rule_residual(doc)
    elif kind == "rms_norm":
        _rule_rms_norm(doc)
    elif kind == "conv2d":
        _rule_conv2d(doc)
    elif kind in ("max_pool2d", "avg_pool2d"):
        _rule_pool(doc, kind)
    elif kind == "flatten":
        _rule_flatten(doc)
    else:  # pragma: no cover - a kind added to the registry without a document section
        raise RuntimeError(f"the document has no section for layer kind {kind!r}")


# --- the image kinds (DESIGN §2c): convolution, pooling, flattening ---------------------


def _int_matrix(values: Iterable[Iterable[object]]) -> str:
    """A small matrix of integers or LaTeX entries as a pmatrix."""
    body = r" \\ ".join(" & ".join(str(v) for v in row) for row in values)
    return rf"\begin{{pmatrix}} {body} \end{{pmatrix}}"


def _case_names(case: rules.ConvCase) -> dict[sympy.Symbol, str]:
    """x1_2_3 -> x_{23}, w1_1_1_2 -> w_{12}, g1_1_2 -> \\delta_{12}, b1 -> b (one channel)."""
    names: dict[sympy.Symbol, str] = {}
    for symbol in sorted(
        set().union(*(m.free_symbols for _, m in case.derived), case.forward.free_symbols),
        key=str,
    ):
        head = symbol.name.rstrip("0123456789_")
        digits = symbol.name[len(head) :].split("_")
        if head == "b":
            names[symbol] = "b"
            continue
        base = {"x": "x", "w": "w", "g": r"\delta"}[head]
        names[symbol] = f"{base}_{{{''.join(digits[-2:])}}}"
    return names


def _grid_of(values: Iterable[sympy.Expr], rows: int, cols: int) -> list[list[sympy.Expr]]:
    values = list(values)
    return [values[i * cols : (i + 1) * cols] for i in range(rows)]


def _conv_example(case: rules.ConvCase) -> dict[str, object]:
    """The documents' 3 x 3 example evaluated exactly on the proven instance."""
    x = [v for row in figures.CONV_INPUT for v in row]
    w = [v for row in figures.CONV_KERNEL for v in row]
    delta = [1, -1, 2, 0]
    point = dict(zip(case.inputs, map(sympy.Integer, x), strict=True))
    kernel = sorted(
        (s for s in case.forward.free_symbols if s.name.startswith("w")), key=lambda s: s.name
    )
    point.update(zip(kernel, map(sympy.Integer, w), strict=True))
    point.update({s: sympy.S.Zero for s in case.forward.free_symbols if s.name.startswith("b")})
    point.update(zip(case.upstream, map(sympy.Integer, delta), strict=True))
    z = [e.xreplace(point) for e in case.forward]
    require(
        _grid_of(z, 2, 2)
        == [list(r) for r in figures.conv_output(figures.CONV_INPUT, figures.CONV_KERNEL)],
        "the worked convolution differs from its figure",
    )
    derived = dict(case.derived)
    return {
        "point": point,
        "z": z,
        "delta": delta,
        "dW": [e.xreplace(point) for e in derived["dW"]],
        "db": [e.xreplace(point) for e in derived["db"]],
        "dx": [e.xreplace(point) for e in derived["dx"]],
    }


def _rule_conv2d(doc: Doc) -> None:
    d, net = doc.d, doc.d.network
    rule = rules.derive_conv_rule("conv2d")
    case = rule.cases[0]  # 1 channel, 3 x 3 input, 2 x 2 kernel, stride 1, no padding
    names = _case_names(case)
    tex = lambda e: sympy.latex(e, symbol_names=names)  # noqa: E731 - a local printer
    ex = _conv_example(case)
    doc.section("The convolutional layer")
    convs = _of_kind(net, "conv2d")
    doc.text(
        f"A convolutional layer ({_listing(convs)} here) does not connect every input to every "
        "output. It slides a small kernel over its input image, and at every position it "
        "multiplies the kernel's entries with the input entries under it and adds them up. "
        "Every output entry reads one window of the input, and every window is read with the "
        "same kernel: the layer shares its weights across positions. A layer has one kernel "
        "per output channel (a filter), and each filter spans all the input channels. "
        "This is the cross-correlation that `torch.nn.Conv2d` computes (the kernel is not "
        "flipped), and the generated code computes the same."
    )
    doc.figure(document_figures(net.spec)["convolution"])
    doc.text(
        "With input channels $c = 1, \\dots, C$, a $k_h \\times k_w$ kernel, stride $S$ (the "
        "step between windows) and $P$ rows and columns of zeros around the input "
        "($\\tilde a$, the padded input), output $f, p, q$ (filter, row, column) is "
        f"equation {ref(d.number('conv2d.forward'))} of the forward pass: a sum over the "
        "input channels and the kernel's rows and columns."
    )
    doc.text(
        "A worked example, the one in the figure: one channel, a $3 \\times 3$ input, a "
        "$2 \\times 2$ kernel, stride 1, no padding and no bias, so the output is "
        "$2 \\times 2$. Output $z_{pq}$ reads the window whose upper left corner is $x_{pq}$:"
    )
    x_grid = [list(r) for r in figures.CONV_INPUT]
    w_grid = [list(r) for r in figures.CONV_KERNEL]
    rows: list[Row] = [("x", f" = {_int_matrix(x_grid)},\\quad W = {_int_matrix(w_grid)},")]
    symbolic = _grid_of(case.forward, 2, 2)

    def without_bias(expr: sympy.Expr) -> sympy.Expr:
        return expr.xreplace({s: 0 for s in expr.free_symbols if s.name.startswith("b")})

    for p in range(2):
        for q in range(2):
            terms = []
            for u in range(2):
                for v in range(2):
                    weight_value = w_grid[u][v]
                    shown = f"({weight_value})" if weight_value < 0 else str(weight_value)
                    terms.append(rf"{shown} \cdot {x_grid[p + u][q + v]}")
            end = "," if (p, q) != (1, 1) else ""
            rows.append(
                (
                    f"z_{{{p + 1}{q + 1}}}",
                    f" = {tex(without_bias(symbolic[p][q]))}"
                    f" = {' + '.join(terms)} = {ex['z'][2 * p + q]}{end}",
                )
            )
    doc.math(doc.sub("conv2d.forward", rows))
    doc.text(
        "In every layer below the error at the layer's output, "
        "$\\delta_{pq} = \\partial \\ell / \\partial z_{pq}$, is known (it came back through "
        f"the activation's derivative, equation {ref(d.number('delta.hidden'))}). The layer "
        "needs three things from it: the gradients of its kernel and its bias, and the error "
        "at its input, to pass on. The rules the generated code evaluates, derived by SymPy "
        "below:"
    )
    doc.math(doc.core("conv2d.backward"), doc.core("conv2d.grad"))
    derived = dict(case.derived)
    doc.text(
        "The kernel. Every output depends on every kernel entry, so the chain rule sums over "
        "the outputs, and SymPy's derivative of the forward sum gives "
        "$\\partial z_{pq} / \\partial w_{uv} = x_{p+u-1,\\, q+v-1}$:"
    )
    dw = derived["dW"]

    def shift(var: str, by: int) -> str:
        return f"{var}+{by}" if by else var

    rows = []
    for k in range(4):
        u, v = divmod(k, 2)
        rows.append(
            (
                rf"\frac{{\partial \ell}}{{\partial w_{{{u + 1}{v + 1}}}}}",
                rf" = \sum_{{p,q}} \delta_{{pq}} x_{{{shift('p', u)},\, {shift('q', v)}}}"
                rf" = {tex(dw[k])}" + ("," if k < 3 else ""),
            )
        )
    doc.math(doc.sub("conv2d.grad", rows))
    doc.text(
        "That is the cross-correlation of the input with the error: slide $\\delta$ over $x$ "
        "as if it were the kernel. The bias is added to every output of its filter, so its "
        "gradient is the sum of the error:"
    )
    db = derived["db"]
    doc.math(
        doc.sub(
            "conv2d.grad",
            (
                (
                    r"\frac{\partial \ell}{\partial b}",
                    rf" = \sum_{{p,q}} \delta_{{pq}} = {tex(db[0])}",
                ),
            ),
        )
    )
    doc.text(
        "The input. Entry $x_{ij}$ is read by every window that covers it, by a different "
        "kernel entry in each: a corner by one window, the centre by all four. SymPy's "
        "derivative:"
    )
    dx = _grid_of(derived["dx"], 3, 3)
    rows = [
        (
            r"\frac{\partial \ell}{\partial x}",
            rf" = {_int_matrix([[tex(e) for e in row] for row in dx])}",
        )
    ]
    doc.math(doc.sub("conv2d.backward", rows))
    flipped = [[f"w_{{{2 - u}{2 - v}}}" for v in range(2)] for u in range(2)]
    padded = [["0"] * 4] + [["0", rf"\delta_{{{p}1}}", rf"\delta_{{{p}2}}", "0"] for p in (1, 2)]
    padded.append(["0"] * 4)
    doc.text(
        "Read it as a convolution: pad $\\delta$ with a ring of $k - 1 = 1$ zeros and slide "
        "the kernel rotated by 180 degrees over it; each position gives one entry of "
        "$\\partial \\ell / \\partial x$. This is the full convolution of the error with the "
        "flipped kernel:"
    )
    doc.math(
        doc.sub(
            "conv2d.backward",
            (
                (
                    r"\frac{\partial \ell}{\partial x}",
                    rf" = {_int_matrix(padded)} \star {_int_matrix(flipped)}",
                ),
            ),
        )
    )
    doc.text(
        "With numbers, for the error "
        f"$\\delta = {_int_matrix(_grid_of(ex['delta'], 2, 2))}$ (chosen for the example):"
    )
    doc.math(
        doc.sub(
            "conv2d.grad",
            (
                (
                    r"\frac{\partial \ell}{\partial W}",
                    rf" = {_int_matrix(_grid_of(ex['dW'], 2, 2))},\quad "
                    rf"\frac{{\partial \ell}}{{\partial b}} = {ex['db'][0]},\quad "
                    rf"\frac{{\partial \ell}}{{\partial x}} = "
                    + _int_matrix(_grid_of(ex["dx"], 3, 3)),
                ),
            ),
        )
    )
    doc.text(
        "In general, with channels, filters, stride and padding, the same three sums are "
        "equations "
        f"{ref(d.number('conv2d.backward'))} and {ref(d.number('conv2d.grad'))}. With a "
        "stride $S > 1$ an input entry is read by fewer windows: in the index formula only "
        "the terms whose output index $(i + P - u)/S + 1$ is a whole number in range count "
        "(as a convolution: $S - 1$ zeros between the entries of $\\delta$ before the "
        "padding); padding only shifts the indices."
    )
    doc.text("SymPy derived them, and they were proven, as follows. " + _conv_proof(rule.proof))
    _im2col(doc, ex)


def _conv_proof(text: str) -> str:
    text = text.replace("g . y", "$g \\cdot y$")
    return re.sub(r"(\d+) x (?=\d)", lambda m: f"{m[1]} $\\times$ ", text)


def _im2col(doc: Doc, ex: dict) -> None:
    net = doc.d.network
    x = figures.CONV_INPUT
    cols = [
        [x[p + u][q + v] for p in range(2) for q in range(2)] for u in range(2) for v in range(2)
    ]
    w_row = [[v for row in figures.CONV_KERNEL for v in row]]
    product = [[sum(w_row[0][r] * cols[r][k] for r in range(4)) for k in range(4)]]
    require(product[0] == ex["z"], "im2col's product differs from the worked convolution")
    doc.text(
        "The code runs none of these sums as loops. im2col copies every window into one "
        "column of a matrix (row $(c, u, v)$, column $(p, q)$), so that the whole layer "
        "becomes one matrix product with the kernel flattened into rows, one per filter; "
        "the backward pass is two more products, and col2im adds every entry of the input's "
        "gradient back to the pixel it was copied from:"
    )
    doc.math(doc.core("conv2d.im2col"))
    doc.text("For the example, the four windows are the four columns:")
    doc.math(
        doc.sub(
            "conv2d.im2col",
            (
                (
                    r"W_{\mathrm{mat}} X",
                    rf" = {_int_matrix(w_row)} {_int_matrix(cols)} = {_int_matrix(product)},",
                ),
                ("", r"\quad \text{the output } z \text{ row by row}"),
            ),
        )
    )
    doc.text(
        "The code puts the columns of all the samples of a batch side by side, so that one "
        "product serves the whole batch."
    )
    rows = []
    for index in _of_kind(net, "conv2d"):
        layer = net.flat[index - 1]
        channels = layer.in_shape[0]
        kh, kw = layer.layer.kernel
        filters, ho, wo = layer.shape
        k = channels * kh * kw
        rows.append(
            [
                f"${index}$",
                f"${k} \\times {ho * wo}B$",
                f"${filters} \\times {k}$",
                f"${filters} \\times {ho * wo}B$",
                f"${k} \\times {ho * wo}B$",
            ]
        )
    doc.text(
        "The shapes in this network, for a batch of $B$ samples (the code's `X` has shape "
        "$(B, C, H, W)$, as in PyTorch):"
    )
    doc.table(
        [
            "layer",
            "$X^{(l)}$ (im2col)",
            "$W^{(l)}_{\\mathrm{mat}}$",
            "$Z^{(l)}$, $\\Delta^{(l)}$",
            "$\\partial \\ell / \\partial X^{(l)}$",
        ],
        rows,
    )
    doc.text(
        "So the forward pass and the kernel's gradient are each one matrix product per layer "
        "(BLAS), and the input's gradient one product and one col2im."
    )


def _rule_pool(doc: Doc, kind: str) -> None:
    d, net = doc.d, doc.d.network
    rule = rules.derive_conv_rule(kind)
    numbers = _of_kind(net, kind)
    first = kind == "max_pool2d" or "max_pool2d" not in _kinds_used(net)
    name = "max" if kind == "max_pool2d" else "average"
    doc.section(f"{name.capitalize()} pooling")
    side = all(net.flat[i - 1].layer.stride == net.flat[i - 1].layer.kernel for i in numbers)
    doc.text(
        f"{'An' if name == 'average' else 'A'} {LAYERS[kind].title} layer "
        f"({_listing(numbers)} here) shrinks each channel of its input: it cuts it into "
        + (
            "windows side by side (the stride is the kernel's size)"
            if side
            else "windows that overlap where the stride is smaller than the kernel"
        )
        + " and keeps "
        + ("the largest entry of each." if name == "max" else "the mean of each.")
        + " It has no parameters."
    )
    if first:
        doc.figure(document_figures(net.spec)["pooling"])
    doc.text(
        f"Its forward map is equation {ref(d.number(f'{kind}.forward'))}; the rule the "
        "generated code evaluates backward, derived by SymPy below:"
    )
    doc.math(doc.core(f"{kind}.backward"))
    windows = figures.pool_windows(figures.POOL_INPUT)
    if name == "max":
        doc.text(
            "Within a window only the largest entry reaches the output, so a small change of "
            "any other entry changes nothing: its derivative is 0, and that of the maximum "
            "is 1. The error of the window goes to its maximum, all of it:"
        )
        routes = []
        for p, q, cells in windows:
            best = max(range(len(cells)), key=lambda k: (cells[k][0], -k))
            value, i, j = cells[best]
            routes.append(
                rf"\frac{{\partial \ell}}{{\partial a_{{{i + 1}{j + 1}}}}} = "
                rf"\delta_{{{p + 1}{q + 1}}}\ (\text{{the }} {value})"
            )
        doc.text("In the figure's example:")
        doc.math(
            doc.sub(f"{kind}.backward", ((routes[0], r",\quad " + r",\quad ".join(routes[1:])),))
        )
        doc.text(
            "and every other entry gets 0. Where a window has two equal maxima the maximum "
            "has no derivative; the code, as PyTorch, gives the error to the first of them "
            "in row-major order."
        )
    else:
        doc.text(
            "Every entry of a window reaches its output with weight $1/(k_h k_w)$, so each "
            "entry receives that share of the window's error; in the figure's example, each "
            "entry of window $(p, q)$ gets $\\delta_{pq}/4$."
        )
    doc.text("SymPy derived it, and it was proven, as follows. " + _conv_proof(rule.proof))


def _rule_flatten(doc: Doc) -> None:
    d, net = doc.d, doc.d.network
    rule = rules.derive_conv_rule("flatten")
    numbers = _of_kind(net, "flatten")
    doc.section("Flattening")
    doc.text(
        f"A flattening layer ({_listing(numbers)} here) turns its $C \\times H \\times W$ "
        "input into a vector, channel after channel and row after row (C order, as "
        "`torch.nn.Flatten`), so that a dense layer can read it. It moves entries and "
        "computes nothing, so its Jacobian is a permutation matrix and the backward pass "
        f"moves the error back (its forward map is equation {ref(d.number('flatten.forward'))}):"
    )
    doc.math(doc.core("flatten.backward"))
    doc.text("SymPy derived it, and it was proven, as follows. " + _conv_proof(rule.proof))


# - the backward pass, layer by layer


def _contribution(reader: FlatLayer, source: int) -> str:
    """What layer ``reader`` passes back to the output of ``source`` (LaTeX)."""
    idx = reader.index
    if reader.kind == "dense":
        return rf"W^{{({idx})\top}} \delta^{{({idx})}}"
    if reader.kind == "conv2d":
        return rf"W^{{({idx})}} \star^{{\top}} \delta^{{({idx})}}"
    if reader.kind == "residual":
        return _da(idx)
    if reader.kind == "dropout":
        return rf"{_da(idx)} \odot m^{{({idx})}}"
    return rf"{_da(source)}\Big|_{{{idx}}}"  # a normalization: its own step gives it


def _backward_rows(d: Derivation, layer: FlatLayer, readers: dict) -> list[Step]:
    """(key, rows) of one layer's backward step in this network."""
    net, idx = d.network, layer.index
    out = net.output_layer.index
    src = layer.sources[0]
    # what this layer sends to its input: the input's error itself when the layer is its only
    # reader, else this layer's contribution to the sum
    target = _da(src) if len(readers[src]) == 1 else rf"{_da(src)}\Big|_{{{idx}}}"
    steps: list[Step] = []
    if layer.kind == "dense":
        if idx != out:
            ad = d.layers[idx - 1]
            right = hadamard(_da(idx), ad.derivative, {Z: f"z^{{({idx})}}"})
            steps.append(("delta.hidden", ((rf"\delta^{{({idx})}}", f" = {right}"),)))
        if src != 0:
            steps.append(
                ("delta.hidden", ((target, rf" = W^{{({idx})\top}} \delta^{{({idx})}}"),)),
            )
        return steps
    if layer.kind == "conv2d":
        return _conv_backward_rows(d, layer, target)
    if src == 0 and layer.kind != "residual":
        return []  # the input x needs no error
    if layer.kind in _IMAGE_KINDS:
        return _image_backward_rows(layer, target)
    if layer.kind == "layer_norm":
        return [
            (
                "layer_norm.backward",
                (
                    (
                        target,
                        rf" = \frac{{1}}{{\sqrt{{\sigma^{{2\,({idx})}} + \epsilon}}}}\left(h - "
                        rf"\frac{{1}}{{{layer.units}}} \sum_j h_j - \hat x^{{({idx})}}\, "
                        rf"\frac{{1}}{{{layer.units}}} \sum_j h_j \hat x^{{({idx})}}_j\right),",
                    ),
                    ("", rf"\quad h = \gamma^{{({idx})}} \odot {_da(idx)}"),
                ),
            )
        ]
    if layer.kind == "batch_norm":
        return [
            (
                "batch_norm.backward",
                (
                    (
                        rf"\left({target}\right)_s",
                        rf" = \frac{{1}}{{\sqrt{{\sigma^{{2\,({idx})}}_B + \epsilon}}}} \odot"
                        rf"\left(h_s - \frac{{1}}{{B}} \sum_t h_t - \hat x^{{({idx})}}_s \odot "
                        rf"\frac{{1}}{{B}} \sum_t h_t \odot \hat x^{{({idx})}}_t\right),",
                    ),
                    ("", rf"\quad h_s = \gamma^{{({idx})}} \odot \left({_da(idx)}\right)_s"),
                ),
            )
        ]
    if layer.kind == "rms_norm":
        return [
            (
                "rms_norm.backward",
                (
                    (
                        target,
                        rf" = \frac{{1}}{{\sqrt{{\nu^{{({idx})}} + \epsilon}}}}\left(h - "
                        rf"\hat x^{{({idx})}}\, "
                        rf"\frac{{1}}{{{layer.units}}} \sum_j h_j \hat x^{{({idx})}}_j\right),",
                    ),
                    ("", rf"\quad h = \gamma^{{({idx})}} \odot {_da(idx)}"),
                ),
            )
        ]
    if layer.kind == "dropout":
        return [("dropout.backward", ((target, rf" = {_da(idx)} \odot m^{{({idx})}}"),))]
    end = layer.sources[1]
    rows: list[Row] = [(_da(end), rf" = {_da(idx)}\ \text{{(layer {end}, the block's output)}}")]
    if src != 0:  # the input x needs no error
        rows[0] = (rows[0][0], rows[0][1] + ",")
        rows.append((target, rf" = {_da(idx)}\ \text{{(the skip)}}"))
    return [("residual.backward", tuple(rows))]


def _conv_backward_rows(d: Derivation, layer: FlatLayer, target: str) -> list[Step]:
    """A convolutional layer's backward step: through its activation, then to its input."""
    idx, src, spec = layer.index, layer.sources[0], layer.layer
    steps: list[Step] = []
    if idx != d.network.output_layer.index:
        ad = d.layers[idx - 1]
        right = hadamard(_da(idx), ad.derivative, {Z: f"z^{{({idx})}}"})
        steps.append(("delta.hidden", ((rf"\delta^{{({idx})}}", f" = {right}"),)))
    if src == 0:
        return steps  # the input x needs no error
    kh, kw = spec.kernel
    (sh, sw), (ph, pw) = spec.stride, spec.padding

    def index(var: str, pad: int, offset: str, stride: int) -> str:
        shifted = f"{var} + {pad} - {offset}" if pad else f"{var} - {offset}"
        return f"{shifted} + 1" if stride == 1 else rf"\frac{{{shifted}}}{{{stride}}} + 1"

    right = (
        rf" = \sum_{{f=1}}^{{{spec.filters}}} \sum_{{u=1}}^{{{kh}}} \sum_{{v=1}}^{{{kw}}}"
        rf" W^{{({idx})}}_{{f c u v}}\, \delta^{{({idx})}}_{{f,\, {index('i', ph, 'u', sh)},\, "
        rf"{index('j', pw, 'v', sw)}}}"
    )
    steps.append(("conv2d.backward", ((rf"\left({target}\right)_{{c i j}}", right),)))
    return steps


def _image_backward_rows(layer: FlatLayer, target: str) -> list[Step]:
    """A pooling or flattening layer's backward step (no parameters)."""
    idx, spec = layer.index, layer.layer
    if layer.kind == "flatten":
        right = (
            rf" = {_da(idx)}\ \text{{reshaped to }} {_shape_tex(layer.in_shape)}"
            r"\ \text{(C order)}"
        )
        return [("flatten.backward", ((target, right),))]
    kh, kw = spec.kernel
    if layer.kind == "max_pool2d":
        right = (
            rf" = {_da(idx)}\ \text{{routed to the first maximum of each }} "
            rf"{kh} \times {kw} \text{{ window, 0 elsewhere}}"
        )
        return [("max_pool2d.backward", ((target, right),))]
    right = (
        rf" = \frac{{1}}{{{kh * kw}}} \sum_{{(p, q):\ (i, j) \in \text{{window }} (p, q)}}"
        rf" \left({_da(idx)}\right)_{{c p q}}"
    )
    return [("avg_pool2d.backward", ((rf"\left({target}\right)_{{c i j}}", right),))]


def _backward_kinds(doc: Doc) -> None:
    d, net = doc.d, doc.d.network
    out = net.output_layer.index
    readers = _readers(net)
    doc.section("The backward recursion and the gradients")
    doc.text(
        "The backward pass visits the layers in the reverse of the forward pass's order. "
        "Each layer receives the error at its output and passes the error at its input to "
        "the layer it reads; where two layers read one output, their contributions add (the "
        "multivariable chain rule). A dense layer takes the error at its output through its "
        "activation's derivative and passes $W^{(l)\\top} \\delta^{(l)}$ on:"
    )
    doc.math(doc.core("delta.hidden"))
    teaching.hadamard(doc)
    doc.text(
        f"For this network, starting from the output error $\\delta^{{({out})}}$ "
        f"(equation {ref(d.number('delta.output'))}):"
    )
    for index in reversed(net.spec.order):
        layer = net.flat[index - 1]
        displays = []
        if len(readers[index]) > 1:
            parts = [rf"{_da(index)}\Big|_{{{c}}}" for c in readers[index]]
            values = [_contribution(net.flat[c - 1], index) for c in readers[index]]
            displays.append(
                doc.sub(
                    "delta.hidden",
                    ((_da(index), " = " + " + ".join(parts) + " = " + " + ".join(values)),),
                )
            )
        for key, rows in _backward_rows(d, layer, readers):
            displays.append(doc.sub(key, rows))
        if displays:
            doc.text(f"Layer {index} ({LAYERS[layer.kind].title}):")
            doc.math(*displays)
    doc.text(
        "The gradients of a dense layer's parameters follow from $\\partial z^{(l)}_i / "
        "\\partial w^{(l)}_{ij} = a^{(l-1)}_j$:"
    )
    doc.math(doc.core("grad.W"), doc.core("grad.b"))
    displays = []
    for index in reversed(net.spec.order):
        layer = net.flat[index - 1]
        idx, src = layer.index, layer.sources[0]
        if layer.kind == "dense":
            prev = "x^\\top" if src == 0 else f"a^{{({src})\\top}}"
            displays.append(
                doc.sub(
                    "grad.W",
                    (
                        (
                            rf"\frac{{\partial \ell}}{{\partial W^{{({idx})}}}}",
                            rf" = \delta^{{({idx})}} {prev} \in "
                            rf"\mathbb{{R}}^{{{layer.units} \times {layer.fan_in}}}",
                        ),
                    ),
                )
            )
            if layer.layer.bias:
                displays.append(
                    doc.sub(
                        "grad.b",
                        (
                            (
                                rf"\frac{{\partial \ell}}{{\partial b^{{({idx})}}}}",
                                rf" = \delta^{{({idx})}} \in \mathbb{{R}}^{{{layer.units}}}",
                            ),
                        ),
                    )
                )
        elif layer.kind == "conv2d":
            displays += _conv_grad_displays(doc, layer)
        elif layer.kind in _OPERATOR:
            s = "_s" if layer.kind == "batch_norm" else ""
            err = rf"\left({_da(idx)}\right)_s" if s else _da(idx)
            beta = f"beta{idx}" in layer_parameters(layer)  # RMS norm has none
            displays.append(
                doc.sub(
                    f"{layer.kind}.grad",
                    (
                        (
                            rf"\frac{{\partial \ell}}{{\partial \gamma^{{({idx})}}}}",
                            rf" = {err} \odot \hat x^{{({idx})}}{s},\quad "
                            + (
                                rf"\frac{{\partial \ell}}{{\partial \beta^{{({idx})}}}} = "
                                rf"{err},\quad "
                                rf"\gamma^{{({idx})}}, \beta^{{({idx})}} \in "
                                if beta
                                else rf"\gamma^{{({idx})}} \in "
                            )
                            + rf"\mathbb{{R}}^{{{layer.units}}}",
                        ),
                    ),
                )
            )
    doc.text(
        "Per layer, for one sample (the normalizations' by their equations "
        + ", ".join(ref(d.number(f"{k}.grad")) for k in _kinds_used(net) if k in _OPERATOR)
        + "; a batch's gradient is the mean over its samples):"
        if any(k in _OPERATOR for k in _kinds_used(net))
        else "Per layer, for one sample (a batch's gradient is the mean over its samples):"
    )
    doc.math(*displays)
    teaching.shapes(doc)


def _conv_grad_displays(doc: Doc, layer: FlatLayer) -> list[Display]:
    """A convolutional layer's kernel and bias gradients, for one sample, with its sizes."""
    idx, src, spec = layer.index, layer.sources[0], layer.layer
    filters, channels = spec.filters, layer.in_shape[0]
    kh, kw = spec.kernel
    _, ho, wo = layer.shape
    window = _window_tex(str(src), spec, any(spec.padding))
    kernel = _shape_tex((filters, channels, kh, kw))
    rows: list[Row] = [
        (
            rf"\frac{{\partial \ell}}{{\partial W^{{({idx})}}_{{f c u v}}}}",
            rf" = \sum_{{p=1}}^{{{ho}}} \sum_{{q=1}}^{{{wo}}} \delta^{{({idx})}}_{{f p q}}\, "
            rf"{window},\quad W^{{({idx})}} \in \mathbb{{R}}^{{{kernel}}}",
        )
    ]
    out = [doc.sub("conv2d.grad", rows)]
    if spec.bias:
        out.append(
            doc.sub(
                "conv2d.grad",
                (
                    (
                        rf"\frac{{\partial \ell}}{{\partial b^{{({idx})}}_f}}",
                        rf" = \sum_{{p=1}}^{{{ho}}} \sum_{{q=1}}^{{{wo}}} "
                        rf"\delta^{{({idx})}}_{{f p q}},\quad b^{{({idx})}} \in "
                        rf"\mathbb{{R}}^{{{filters}}}",
                    ),
                ),
            )
        )
    return out


def _update_kinds(doc: Doc) -> None:
    d, net = doc.d, doc.d.network
    train = net.spec.train
    norms = [k for k in _kinds_used(net) if k in _OPERATOR]
    doc.section("Gradient descent")
    teaching.descent_intro(doc)
    doc.figure(document_figures(doc.d.network.spec)["descent"])
    doc.text("In the network, every parameter moves a small step against its gradient:")
    doc.math(doc.core("update"))
    rows: list[Row] = [
        (
            "W^{(l)}",
            r" \leftarrow W^{(l)} - \eta \frac{\partial L}{\partial W^{(l)}},\quad "
            r"b^{(l)} \leftarrow b^{(l)} - \eta \frac{\partial L}{\partial b^{(l)}},",
        )
    ]
    if norms and any(key.startswith("beta") for key in net.spec.parameters):
        rows.append(
            (
                "",
                r"\quad \gamma^{(l)} \leftarrow \gamma^{(l)} - \eta \frac{\partial L}"
                r"{\partial \gamma^{(l)}},\quad \beta^{(l)} \leftarrow \beta^{(l)} - \eta "
                r"\frac{\partial L}{\partial \beta^{(l)}},",
            )
        )
    elif norms:  # RMS norms only: a gain and no shift
        rows.append(
            (
                "",
                r"\quad \gamma^{(l)} \leftarrow \gamma^{(l)} - \eta \frac{\partial L}"
                r"{\partial \gamma^{(l)}},",
            )
        )
    last = rows[-1]
    rows[-1] = (last[0], last[1] + rf"\quad \eta = {decimal(train.lr)}")
    doc.math(doc.sub("update", rows))
    if "batch_norm" in _kinds_used(net):
        doc.text(
            "Batch normalization's running statistics are not trained: after every training "
            "step (`train_step`, `fit`) they move towards the batch's statistics, as PyTorch "
            "moves them (the running variance from the unbiased batch variance), and "
            "inference reads them:"
        )
        doc.math(doc.core("batch_norm.running"))
    doc.text(
        f"The network's spec file sets learning rate {decimal(train.lr)}, optimizer "
        f"`{train.optimizer}`, {train.epochs} epochs and batches of {train.batch_size}. The "
        "generated module's `train_step` is the plain step above; its `fit`, which "
        "`symbackprop train` runs, uses the spec's optimizer"
        + (" (the same plain step)." if train.optimizer == "sgd" else ", below.")
    )
    teaching.optimizer_rules(doc)
    doc.section("The five training steps")
    doc.text("Training repeats five steps, each one an equation of this document:")
    kinds = _kinds_used(net)
    fwd = [d.number("forward.linear"), d.number("forward.activation")]
    if net.output.softmax:
        fwd.append(d.number("forward.softmax"))
    fwd += [d.number(f"{k}.forward") for k in kinds]
    back = [d.number(f"{k}.backward") for k in kinds]
    grads = [d.number("grad.W"), d.number("grad.b")] + [d.number(f"{k}.grad") for k in norms]
    if "conv2d" in kinds:
        fwd.insert(fwd.index(d.number("conv2d.forward")) + 1, d.number("conv2d.im2col"))
        grads.append(d.number("conv2d.grad"))
    doc.items(
        [
            "forward: every layer's output for a batch, in training mode, equations "
            + ", ".join(ref(n) for n in fwd)
            + ";",
            f"loss: evaluate $L$, equation {ref(d.number('loss'))};",
            f"backpropagate: $\\delta^{{(L)}}$ by {ref(d.number('delta.output'))}, then layer by "
            f"layer by {ref(d.number('delta.hidden'))} and "
            + ", ".join(ref(n) for n in back)
            + ", and the gradients by "
            + ", ".join(ref(n) for n in grads)
            + ";",
            f"update: every parameter by {ref(d.number('update'))}"
            + (
                f", and the running statistics by {ref(d.number('batch_norm.running'))};"
                if "batch_norm" in kinds
                else ";"
            ),
            "repeat with the next batch, for every batch of every epoch.",
        ],
        ordered=True,
    )


# --- the worked example ----------------------------------------------------------------------


def _seed_reason(d: Derivation, ex: WorkedExample) -> str:
    """Why this seed: the first at which the error reaches every unit (or the fewest dead)."""
    dead = silent_units(d, ex)
    if dead == 0:
        if ex.seed == 0:
            return "; at this point every unit passes an error back"
        return (
            f"; seed {ex.seed} is the first at which every unit passes an error back (at "
            "smaller seeds a ReLU-like unit is inactive, its error 0, and so are the "
            "gradients of its weights)"
        )
    units = "unit" if dead == 1 else "units"
    return (
        f"; no seed below {EXAMPLE_SEEDS} lets the error reach every unit, and seed {ex.seed} "
        f"leaves the fewest, {dead} {units} with error 0"
    )


def _section_example(doc: Doc) -> None:
    d, net = doc.d, doc.d.network
    ex = worked_example(d)
    depth = net.depth
    val = dict(ex.values)
    for layer in range(1, depth + 1):
        for i in range(1, net.sizes[layer] + 1):
            val[sympy.Symbol(f"delta{layer}_{i}", real=True)] = ex.adjoints[
                pre_activation(layer, i)
            ]
    nums = {s: operand(v) for s, v in val.items()}
    dot: dict[str, object] = {"mul_symbol": "dot"}

    doc.section("A worked example")
    doc.text(
        "One forward and one backward pass with numbers, for one sample ($B = 1$, so "
        "$L = \\ell$" + (" plus the $\\ell_2$ term" if net.spec.l2 else "") + "). The parameters "
        f"are the generated module's `init_params(seed={ex.seed})` with the biases drawn as in "
        f"the certificate's check point (seed {ex.seed}), and so are the input and the target"
        + _seed_reason(d, ex)
        + ". Every number "
        "comes from an exact (40-digit) evaluation of the neuron-level graph, independent of "
        "the generated code; the test suite checks that the generated module computes the same "
        "values to $10^{-12}$. Numbers are rounded to four significant digits (trailing zeros "
        "dropped), so a result recomputed by hand from the rounded numbers may differ in its "
        "last digit."
    )
    data = [(latex_name(s), decimal(val[s])) for s in net.inputs() + net.targets()]
    doc.text("Input and target: " + ", ".join(f"${n} = {v}$" for n, v in data) + ".")
    displays = []
    for layer in range(1, depth + 1):
        W, b = net.weights(layer), net.biases(layer)
        Wv = np.array([[float(val[s]) for s in W.row(i)] for i in range(W.rows)])
        bv = np.array([float(val[s]) for s in b])
        rows = _pair(f"W^{{({layer})}}", "", Wv, f"b^{{({layer})}}", "", bv)
        displays.append(doc.sub("forward.linear", rows))
    doc.text("The parameters:")
    doc.math(*displays)

    doc.text(
        "Forward pass, with the numbers put into "
        + ", ".join(ref(d.number(k)) for k in ("forward.linear", "forward.activation"))
        + (" and the softmax " + ref(d.number("forward.softmax")) if net.output.softmax else "")
        + ":"
    )
    for layer in range(1, depth + 1):
        softmax = d.layers[layer - 1].activation.softmax
        zs, acts = [], []
        for node in net.neuron_graph:
            if node.layer != layer or node.kind == "loss":
                continue
            if node.kind == "z":
                i = int(node.symbol.name.split("_")[1])
                fan_in = net.sizes[layer - 1]
                pieces = [
                    f"{nums[weight(layer, i, j)]} \\cdot {nums[activation(layer - 1, j)]}"
                    for j in range(1, fan_in + 1)
                ] + [nums[bias(layer, i)]]
                rows = list(wrap(latex_name(node.symbol), "=", signed(pieces)))
            else:
                rows = list(broken(latex_name(node.symbol), "=", node.expr, nums, **dot))
            last = rows[-1]
            rows[-1] = (last[0], f"{last[1]} = {decimal(val[node.symbol])}")
            (zs if node.kind == "z" else acts).append(tuple(rows))
        key = "forward.softmax" if softmax else "forward.activation"
        doc.math(*_neurons(doc, zs, acts, key))
    node = net.neuron_graph[-1]
    rows = list(broken(r"\ell", "=", node.expr, nums, **dot))
    last = rows[-1]
    rows[-1] = (last[0], f"{last[1]} = {decimal(val[LOSS])}")
    displays = [doc.sub("loss", rows)]
    if net.spec.l2:
        displays.append(
            doc.sub(
                "loss",
                (
                    (
                        r"L",
                        rf" = \ell + \frac{{\lambda}}{{2}} \sum_{{l,i,j}} "
                        rf"\left(w^{{(l)}}_{{ij}}\right)^2 = {decimal(ex.loss)}",
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
            require(
                abs(check - val[dsym]) <= 1e-25 * max(1, abs(val[dsym])),
                f"the worked example's {dsym}: the recursion gives {check}, not {val[dsym]}",
            )
            if layer == depth:  # on its own here, not a factor: no brackets
                rows = list(broken(latex_name(dsym), "=", expr, nums, **dot))
            else:
                rows = list(wrap(latex_name(dsym), "=", _delta_one_level(d, layer, i, nums, **dot)))
            last = rows[-1]
            rows[-1] = (last[0], f"{last[1]} = {decimal(val[dsym])}")
            displays.append(doc.sub(key, rows))
        doc.math(*displays)

    doc.text(
        "The gradients, $\\partial \\ell / \\partial W^{(l)} = \\delta^{(l)} a^{(l-1)\\top}$ "
        "and $\\partial \\ell / \\partial b^{(l)} = \\delta^{(l)}$"
        + (" (with $\\lambda W^{(l)}$ added for the weights)" if net.spec.l2 else "")
        + ":"
    )
    displays = []
    for layer in range(depth, 0, -1):
        G, g = ex.gradients[f"W{layer}"], ex.gradients[f"b{layer}"]
        dW = rf"\frac{{\partial L}}{{\partial W^{{({layer})}}}}"
        db = rf"\frac{{\partial L}}{{\partial b^{{({layer})}}}}"
        displays.append(doc.sub("grad.W", _pair(dW, "", G, db, "", g)))
    doc.math(*displays)
    _example_step(doc, ex)


MATRIX_COLUMNS = 6  # wider matrices of numbers are printed transposed (narrower then)
SHARED_ROW_COLUMNS = 3  # a matrix and a vector this narrow share one row


def _pair(
    left: str, rule: str, matrix: np.ndarray, vleft: str, vrule: str, vector: np.ndarray
) -> tuple[Row, ...]:
    """``left rule = matrix, vleft vrule = vector`` as aligned rows that fit the line: one
    row when both are narrow, else one each, the value on its own row after a long rule."""
    shown = _matrix(matrix)
    rows_, columns = np.atleast_2d(matrix).shape
    if columns > MATRIX_COLUMNS and rows_ < columns:  # _matrix prints it transposed
        columns = rows_
    vec = _column(vector)
    relation = " =" if not vrule else ""
    if columns <= SHARED_ROW_COLUMNS and len(np.ravel(vector)) <= SHARED_ROW_COLUMNS:
        return ((left, rf"{rule} = {shown},\quad {vleft}{vrule}{relation} {vec}"),)
    if rule and columns > SHARED_ROW_COLUMNS:
        rows: list[Row] = [(left, rule), ("", f" = {shown},")]
    else:
        rows = [(left, f"{rule} = {shown},")]
    rows.append((vleft, f"{vrule}{relation} {vec}"))
    return tuple(rows)


def _matrix(values: np.ndarray) -> str:
    """A matrix of numbers as a LaTeX pmatrix (four significant digits), transposed with
    a ``^\\top`` when it is wider than ``MATRIX_COLUMNS`` and taller than wide."""
    values = np.atleast_2d(values)
    top = ""
    if values.shape[1] > MATRIX_COLUMNS and values.shape[0] < values.shape[1]:
        values, top = values.T, r"^\top"
    body = r" \\ ".join(" & ".join(decimal(v) for v in row) for row in values)
    return rf"\begin{{pmatrix}} {body} \end{{pmatrix}}{top}"


def _column(values: np.ndarray) -> str:
    """A vector of numbers: a transposed row when short, else a column."""
    values = np.ravel(values)
    if len(values) <= MATRIX_COLUMNS:
        return _matrix(values[None]) + r"^\top"
    return _matrix(values[:, None])


def _example_step(doc: Doc, ex: WorkedExample) -> None:
    """One full SGD step of every parameter, the loss before and after, then the optimizer's."""
    d, net = doc.d, doc.d.network
    _ex, step, _dead = _lesson(d)
    doc.text(
        f"One gradient-descent step {ref(d.number('update'))} with $\\eta = {decimal(step.lr)}$ "
        "moves every parameter against its gradient:"
    )
    displays = []
    for layer in range(1, net.depth + 1):
        W, b = f"W{layer}", f"b{layer}"
        after_W, after_b = step.params[W], step.params[b]
        rule = (
            rf" \leftarrow W^{{({layer})}} - {operand(step.lr)}\,"
            rf"\frac{{\partial L}}{{\partial W^{{({layer})}}}}"
        )
        rows = _pair(f"W^{{({layer})}}", rule, after_W, f"b^{{({layer})}}", r" \leftarrow", after_b)
        displays.append(doc.sub("update", rows))
    doc.math(*displays)
    fell = step.loss_after < step.loss_before
    doc.text(
        f"On the same sample the loss goes from ${decimal(step.loss_before)}$ to "
        f"${decimal(step.loss_after)}$"
        + (
            ": the step helped. "
            if fell
            else ": it rose, because this step is too long for the curvature here. "
        )
        + "To first order in $\\eta$ a step against the gradient lowers the loss by "
        f"$\\eta \\lVert \\nabla L \\rVert^2 = {decimal(step.first_order)}$; the actual "
        f"change, ${decimal(step.loss_after - step.loss_before)}$, differs because $L$ is "
        "not linear over a step this long."
    )
    _example_optimizer(doc, ex)
    _example_dead(doc, ex)


def _example_optimizer(doc: Doc, ex: WorkedExample) -> None:
    d = doc.d
    opt = lesson.optimizer_step(d, ex)
    if opt is None:
        return
    e = opt.entry("W1", 0, 0)
    w = latex_name(e.symbol)
    if opt.optimizer == "momentum":
        doc.text(
            "The spec trains with momentum. Its first step is the same as SGD's, because the "
            f"velocity starts at 0: for ${w}$, $v = {decimal(e.velocity)}$ and "
            f"${w} \\leftarrow {decimal(e.before)} - {operand(opt.lr)} \\cdot "
            f"{operand(e.velocity)} = {decimal(e.after)}$. Later steps add $\\mu v$ from "
            "the steps before."
        )
        return
    doc.text(
        f"The spec trains with Adam, whose first step {ref(d.number('update'))} differs: for "
        f"${w}$, with $g = {decimal(e.gradient)}$,"
    )
    doc.math(
        doc.sub(
            "update",
            (
                (
                    "m",
                    rf" = (1 - \beta_1)\, g = {decimal(e.m)},\quad "
                    rf"v = (1 - \beta_2)\, g^2 = {decimal(e.v)},",
                ),
                (
                    r"\hat m",
                    rf" = {decimal(e.m_hat)},\quad \hat v = {decimal(e.v_hat)},",
                ),
                (
                    w,
                    rf" \leftarrow {decimal(e.before)} - {operand(opt.lr)}"
                    rf" \cdot \frac{{{decimal(e.m_hat)}}}{{\sqrt{{{decimal(e.v_hat)}}} + "
                    rf"\epsilon}} = {decimal(e.after)}",
                ),
            ),
        )
    )
    doc.text(
        "At the first step $\\hat m / \\sqrt{\\hat v} = \\pm 1$ for every entry: Adam "
        f"moves every parameter by almost exactly $\\eta = {decimal(opt.lr)}$, whatever the "
        f"size of its gradient. On the sample, the loss goes from "
        f"${decimal(opt.loss_before)}$ to ${decimal(opt.loss_after)}$."
    )


def _example_dead(doc: Doc, ex: WorkedExample) -> None:
    """The dead-ReLU lesson: one unit pushed below 0 on purpose."""
    d = doc.d
    dead = _lesson(d)[2]
    if dead is None:
        return
    l_, i = dead.layer, dead.unit
    z, b = f"z^{{({l_})}}_{{{i}}}", f"b^{{({l_})}}_{{{i}}}"
    relu = dead.slope == 0
    fan_in = d.network.sizes[l_ - 1]
    doc.text(
        f"A dead unit, on purpose. Neuron {i} of layer {l_} has ${z} = {decimal(dead.z_before)}$ "
        f"and passes the error $\\delta^{{({l_})}}_{{{i}}} = {decimal(dead.delta_before)}$ back. "
        f"Set its bias to ${b} = {decimal(dead.bias)}$ instead of "
        f"${decimal(dead.bias_before)}$: now ${z} = {decimal(dead.z)} < 0$, so "
        + (
            f"$a^{{({l_})}}_{{{i}}} = 0$ and, since ReLU's slope is 0 there, "
            f"$\\delta^{{({l_})}}_{{{i}}} = 0$. Every gradient through this unit is 0: the "
            f"{fan_in} weights into it and its bias (each gradient is $\\delta^{{({l_})}}_{{{i}}}$ "
            "times something), and the weights out of it (each is a later $\\delta$ times "
            f"$a^{{({l_})}}_{{{i}}} = 0$). Of the {dead.total} gradient entries, "
            f"{dead.zero_after} are now 0. Gradient descent cannot change any of them, so the "
            "unit stays off for this input: a dead ReLU. If $z < 0$ for every input, the unit "
            "never learns again; a smaller learning rate, a careful initialization or a leaky "
            "ReLU avoid it."
            if relu
            else f"its slope there is ${decimal(float(dead.slope))}$ and "
            f"$\\delta^{{({l_})}}_{{{i}}} = {decimal(dead.delta)}$: the error still passes, "
            "scaled down, which is why a leaky ReLU cannot die."
        )
    )


def _section_update(doc: Doc) -> None:
    net = doc.d.network
    if not net.plain:
        _update_kinds(doc)
        return
    train = net.spec.train
    doc.section("Gradient descent")
    teaching.descent_intro(doc)
    doc.figure(document_figures(doc.d.network.spec)["descent"])
    doc.text("In the network, every parameter moves a small step against its gradient:")
    doc.math(doc.core("update"))
    doc.math(
        doc.sub(
            "update",
            (
                (
                    "W^{(l)}",
                    r" \leftarrow W^{(l)} - \eta \frac{\partial L}{\partial W^{(l)}},\quad "
                    r"b^{(l)} \leftarrow b^{(l)} - \eta \frac{\partial L}{\partial b^{(l)}},\quad "
                    rf"\eta = {decimal(train.lr)}",
                ),
            ),
        )
    )
    doc.text(
        f"The network's spec file sets learning rate {decimal(train.lr)}, optimizer "
        f"`{train.optimizer}`, {train.epochs} epochs and batches of {train.batch_size}. The "
        "generated module's `train_step` is the plain step above; its `fit`, which "
        "`symbackprop train` runs, uses the spec's optimizer"
        + (" (the same plain step)." if train.optimizer == "sgd" else ", below.")
    )
    teaching.optimizer_rules(doc)
    doc.section("The five training steps")
    doc.text("Training repeats five steps, each one an equation of this document:")
    d = doc.d
    fwd = [d.number("forward.linear"), d.number("forward.activation")]
    if net.output.softmax:
        fwd.append(d.number("forward.softmax"))
    doc.items(
        [
            "forward: compute every $z^{(l)}$ and $a^{(l)}$ for a batch, equations "
            + ", ".join(ref(n) for n in fwd)
            + ";",
            f"loss: evaluate $L$, equation {ref(d.number('loss'))};",
            f"backpropagate: $\\delta^{{(L)}}$ by {ref(d.number('delta.output'))}, then "
            f"$\\delta^{{(l)}}$ by {ref(d.number('delta.hidden'))} and the gradients by "
            f"{ref(d.number('grad.W'))} and {ref(d.number('grad.b'))};",
            f"update: every parameter by {ref(d.number('update'))};",
            "repeat with the next batch, for every batch of every epoch.",
        ],
        ordered=True,
    )


def _section_certificate(doc: Doc, certificate: object | None) -> None:
    net = doc.d.network
    doc.section("The certificate")
    if certificate is None:
        doc.text(
            "This copy was written without the certificate (`--no-check`): `symbackprop "
            f"check {net.spec.name}` compares every gradient of the generated module with "
            "finite differences, the exact symbolic gradient and PyTorch."
        )
        return
    cert = certificate
    view = f" The exact witness used {cert.exact_view}." if cert.exact_view else ""
    doc.text(
        f"The generated gradients were compared with independent witnesses "
        f"({', '.join(cert.witnesses)}) on a batch of {cert.batch} samples (loss "
        f"${decimal(cert.loss)}$).{view} Per parameter and witness, the largest absolute and "
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
    doc = Doc(derivation)
    intro = _intro(doc)
    _section_network(doc)
    _section_forward(doc)
    _section_nonlinearity(doc)
    _section_loss(doc)
    _section_chain(doc)
    _section_activations(doc)
    teaching.saturation(doc)
    for kind in _kinds_used(derivation.network):
        _section_rule(doc, kind)
    _section_output(doc)
    teaching.delta_meaning(doc)
    _section_backward(doc)
    _section_update(doc)
    if _small(derivation.network):
        _section_example(doc)
    _section_big_picture(doc)
    _section_certificate(doc, certificate)
    if _small(derivation.network):
        ex, step, dead = _lesson(derivation)
        items = lesson.exercises(derivation, ex, step, dead)
    else:
        items = teaching.large_exercises(derivation)
    teaching.exercises(doc, items)
    return intro, doc.sections


@lru_cache(maxsize=64)
def _lesson(
    derivation: Derivation,
) -> tuple[WorkedExample, lesson.Step, lesson.DeadUnit | None]:
    """The worked example, its SGD step and its dead unit (each an exact evaluation)."""
    ex = worked_example(derivation)
    step = lesson.sgd_step(derivation, ex)
    require(step is not None, "a worked example without its step")
    return ex, step, lesson.dead_unit(derivation, ex)


def _section_big_picture(doc: Doc) -> None:
    d = doc.d
    doc.section("The big picture")
    doc.text(
        "Input, forward, loss, derivative, backpropagation of errors: the input goes forward "
        "through every layer to the prediction and the loss; the derivative of the loss gives "
        "the output error $\\delta^{(L)}$ " + ref(d.number("delta.output")) + "; the errors "
        "flow back stage by stage, each layer's $\\delta$ from the one above "
        + ref(d.number("delta.hidden"))
        + "; each stage's $\\delta$ gives the gradients of that stage's parameters "
        + ref(d.number("grad.W"))
        + ", "
        + ref(d.number("grad.b"))
        + "; and gradient descent "
        + ref(d.number("update"))
        + " moves every parameter against its gradient."
    )
    doc.figure(document_figures(d.network.spec)["big-picture"])
    teaching.summary(doc)


# --- formats ---------------------------------------------------------------------------------


def _displays(equations: list[Display]) -> list[dict]:
    return [
        {
            "tag": eq.tag,
            "rows": [f"{left} &{right}" for left, right in eq.rows],
            "single": "".join(eq.rows[0]) if len(eq.rows) == 1 else "",
        }
        for eq in equations
    ]


def _formatted(sections: list[dict], text: Callable[[str], str], stem: str) -> list[dict]:
    out = []
    figures = 0
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
                        "columns": block["columns"],
                    }
                )
            elif kind == "figure":
                figures += 1
                fig = block["figure"]
                blocks.append(
                    {
                        "kind": kind,
                        "number": figures,
                        "name": fig.name,
                        "latex": fig.latex,
                        "caption": text(fig.caption),
                        "alt": re.sub(r"[$\\[\]{}^_]", "", fig.caption),
                        "file": f"{stem}-{fig.name}.svg",
                    }
                )
            elif kind == "box":
                blocks.append(
                    {
                        "kind": kind,
                        "title": text(block["title"]),
                        "equations": _displays(block["equations"]),
                    }
                )
            else:
                blocks.append({"kind": kind, "equations": _displays(block["equations"])})
        title = text(section["title"])
        if text is text_tex and "$" in section["title"]:  # PDF bookmarks hold no math
            plain = re.sub(r"[$\\{}^_]", "", section["title"])
            title = rf"\texorpdfstring{{{title}}}{{{plain}}}"
        out.append({"number": number, "title": title, "blocks": blocks})
    return out


def _check_tags(sections: list[dict], derivation: Derivation) -> None:
    tags = [
        eq.tag
        for s in sections
        for b in s["blocks"]
        if b["kind"] == "math"
        for eq in b["equations"]
    ]
    require(len(tags) == len(set(tags)), "duplicate equation numbers")
    seen: set[str] = set()
    for tag in tags:  # a handout reads the core equation before its sub-equations
        core = tag.split(".")[0]
        require(core == tag or core in seen, f"equation {tag} comes before equation {core}")
        seen.add(tag)
    require(
        {str(e.number) for e in derivation.equations} <= set(tags), "a core equation is missing"
    )


def _context(
    derivation: Derivation,
    certificate: object | None,
    text: Callable[[str], str],
    stem: str | None = None,
) -> dict:
    intro, sections = _document(derivation, certificate)
    _check_tags(sections, derivation)
    name = derivation.network.spec.name
    return {
        "name": name,
        "title": text(f"Backpropagation for `{name}`, derived with SymPy"),
        "intro": text(intro),
        "sections": _formatted(sections, text, stem or name),
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
    context = _context(derivation, certificate, text_tex)
    return _environment().get_template("latex/derivation.tex.j2").render(context)


def render_markdown(
    derivation: Derivation, certificate: object | None = None, stem: str | None = None
) -> str:
    """The derivation document as Markdown with $...$ and $$...$$ math (GitHub, Jupyter).

    Its figures are SVG files beside it, named ``<stem>-<figure>.svg`` (``stem``: the
    document's file name without ``.md``, by default the spec's name); ``markdown_figures``
    gives their contents.
    """
    context = _context(derivation, certificate, text_md, stem)
    return _environment().get_template("markdown/derivation.md.j2").render(context)


@lru_cache(maxsize=64)
def document_figures(spec: NetworkSpec) -> dict[str, figures.Figure]:
    """The figures every derivation document shows, by name (``figures.FIGURES``' order)."""
    drawn = {
        "network": figures.network_figure(spec),
        "descent": figures.descent_figure(),
        "big-picture": figures.big_picture_figure(spec),
    }
    require(tuple(drawn) == figures.FIGURES, "a figure without its name in figures.FIGURES")
    kinds = {layer.kind for layer in spec.flat}
    if "conv2d" in kinds:
        drawn["convolution"] = figures.convolution_figure()
    if kinds & {"max_pool2d", "avg_pool2d"}:
        drawn["pooling"] = figures.pooling_figure()
    return drawn


def markdown_figures(derivation: Derivation, stem: str | None = None) -> dict[str, str]:
    """The SVG files the Markdown document refers to: {file name: SVG text}."""
    stem = stem or derivation.network.spec.name
    return {
        f"{stem}-{name}.svg": figure.svg
        for name, figure in document_figures(derivation.network.spec).items()
    }


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
        for file, svg in markdown_figures(derivation).items():
            files[f"generated/{file}"] = svg
    return files
