"""The teaching parts of the derivation documents, for every network.

The article this project grew from tells backpropagation as a story: the forward pass, why
the non-linearity matters, the loss, the chain rule for A(B(C(x))) on a scalar before the
network, partial derivatives and the gradient, the errors flowing back, gradient descent, the
five training steps and the big picture.  render.py lays out the network's own derivation;
the functions here add the parts of that story a reader needs around it: each takes the
``document.Doc`` being built and appends blocks to its current section (or opens its own).

Every symbolic claim is checked with SymPy before it is printed, and every number is computed
exactly here (SymPy rationals) or comes from the worked example's exact evaluation.
"""

from __future__ import annotations

import math

import sympy

from symbackprop.derive import Derivation, Z
from symbackprop.document import Doc, decimal, ref, require
from symbackprop.functions import X
from symbackprop.lesson import Counts, Exercise, operation_counts

# --- why the non-linearity matters ---------------------------------------------------------

# pairs (u, v) at which an activation that is not affine shows it: f(u + v) differs from
# f(u) + f(v) - f(0) (ReLU is additive on same-sign pairs, tanh on opposite ones)
_AFFINE_PROBES = ((1, -1), (1, 1), (2, -1), (sympy.Rational(1, 2), sympy.Rational(1, 2)))


def collapse(doc: Doc) -> None:
    """What the network collapses to when every activation is the identity, for its sizes."""
    net = doc.d.network
    sizes = net.sizes
    n0, nL = sizes[0], net.output_layer.units
    affine = nL * n0 + nL
    doc.text(
        "Without a non-linear activation, stacked layers are no more expressive than one: a "
        "composition of affine maps is affine. If every $f_l$ of this network were the "
        f"identity, its {len(net.flat)} layers would collapse into one map from "
        f"$\\mathbb{{R}}^{{{n0}}}$ to $\\mathbb{{R}}^{{{nL}}}$,"
    )
    if net.plain:
        depth = net.depth
        product = " ".join(f"W^{{({layer})}}" for layer in range(depth, 0, -1))
        shifted = " + ".join(
            (
                " ".join(f"W^{{({m})}}" for m in range(depth, layer, -1)) + f" b^{{({layer})}}"
            ).strip()
            for layer in range(1, depth + 1)
        )
        rows = (
            (
                r"\hat y",
                rf" = W_{{\mathrm{{eff}}}}\, x + b_{{\mathrm{{eff}}}},\quad "
                rf"W_{{\mathrm{{eff}}}} = {product} \in \mathbb{{R}}^{{{nL} \times {n0}}},",
            ),
            ("", rf"\quad b_{{\mathrm{{eff}}}} = {shifted}"),
        )
        _check_collapse(sizes)
        doc.math(doc.sub("forward.linear", rows))
    else:
        doc.math(
            doc.sub(
                "forward.linear",
                (
                    (
                        r"\hat y",
                        rf" = W_{{\mathrm{{eff}}}}\, x + b_{{\mathrm{{eff}}}},\quad "
                        rf"W_{{\mathrm{{eff}}}} \in \mathbb{{R}}^{{{nL} \times {n0}}}",
                    ),
                ),
            )
        )
    doc.text(
        f"with ${nL} \\cdot {n0} + {nL} = {affine}$ numbers instead of the network's "
        f"{net.parameter_count} parameters: whatever the training, it could only fit an "
        "affine function of $x$ (for a classifier, linear decision boundaries)." + _breaks_it(doc.d)
    )


def _check_collapse(sizes: tuple[int, ...]) -> None:
    """The printed W_eff and b_eff equal the stacked identity layers (exact, on integers)."""
    widths = [min(n, 4) for n in sizes]  # the formula's shape does not depend on the widths
    state = 7

    def draw(rows: int, cols: int) -> sympy.Matrix:
        nonlocal state
        entries = []
        for _ in range(rows * cols):
            state = (state * 48271) % 2147483647
            entries.append(state % 11 - 5)
        return sympy.Matrix(rows, cols, entries)

    Ws = [draw(widths[k + 1], widths[k]) for k in range(len(widths) - 1)]
    bs = [draw(widths[k + 1], 1) for k in range(len(widths) - 1)]
    x = draw(widths[0], 1)
    stacked = x
    for W, b in zip(Ws, bs, strict=True):
        stacked = W * stacked + b
    W_eff = sympy.eye(widths[0])
    for W in Ws:
        W_eff = W * W_eff
    b_eff = sympy.zeros(widths[-1], 1)
    for layer in range(len(Ws)):
        shift = bs[layer]
        for W in Ws[layer + 1 :]:
            shift = W * shift
        b_eff += shift
    require(stacked == W_eff * x + b_eff, "the identity layers' collapse as printed is wrong")


def _breaks_it(d: Derivation) -> str:
    """One exact line showing that the network's first non-affine activation is not affine."""
    for ad in d.layers:
        if ad is None or ad.activation.softmax:
            continue
        f = ad.activation.expr
        if f == X:
            continue
        for u, v in _AFFINE_PROBES:
            at = [sympy.nsimplify(f.xreplace({X: sympy.sympify(t)})) for t in (u + v, u, v, 0)]
            gap = sympy.simplify(at[0] - (at[1] + at[2] - at[3]))
            if gap.is_number and gap != 0:
                name = ad.activation.name
                values = [decimal(float(sympy.N(t, 30))) for t in at]
                rest = decimal(float(sympy.N(at[1] + at[2] - at[3], 30)))
                return (
                    f" The `{name}` activation $f$ breaks the collapse: an affine $f$ has "
                    "$f(u + v) = f(u) + f(v) - f(0)$ for all $u$, $v$, but with "
                    f"$u = {_num(u)}$, $v = {_num(v)}$ the left side is "
                    f"$f({_num(u + v)}) = {values[0]}$ and the right side "
                    f"$f({_num(u)}) + f({_num(v)}) - f({_num(0)}) = {rest}$."
                )
    return ""


def _num(value: object) -> str:
    return decimal(float(value))


# --- the chain rule, on a scalar first -------------------------------------------------------


def chain_rule_scalar(doc: Doc) -> None:
    """The chain rule for f = A(B(C(w))) on one sigmoid neuron, then partial derivatives."""
    w, x, b, y = sympy.symbols("w x b y", real=True)
    u = w * x + b
    s = 1 / (1 + sympy.exp(-u))
    loss = (s - y) ** 2
    point = {w: sympy.Rational(1, 2), x: 2, b: -1, y: 1}
    claimed = 2 * (s - y) * s * (1 - s) * x
    require(sympy.simplify(sympy.diff(loss, w) - claimed) == 0, "the scalar chain rule differs")
    value = sympy.diff(loss, w).xreplace(point)
    require(sympy.nsimplify(value) == sympy.Rational(-1, 2), "the scalar example's value")
    doc.text(
        "First on a scalar, as a first course does. One neuron with a sigmoid "
        "$\\sigma(u) = 1/(1 + e^{-u})$ and a squared error is a chain of three functions of "
        "its weight $w$: $C(w) = w x + b$, then $B(u) = \\sigma(u)$, then "
        "$A(v) = (v - y)^2$, so $\\ell(w) = A(B(C(w)))$. The chain rule multiplies the "
        "derivative of each stage, taken at the value that stage receives:"
    )
    doc.math(
        doc.sub(
            "loss",
            (
                (
                    r"\frac{d\ell}{dw}",
                    r" = A'\left(B(C(w))\right)\, B'\left(C(w)\right)\, C'(w)"
                    r" = 2\left(\sigma(u) - y\right)\,\sigma(u)\left(1 - \sigma(u)\right) x",
                ),
            ),
        )
    )
    doc.text(
        "using $\\sigma'(u) = \\sigma(u)(1 - \\sigma(u))$. At $x = 2$, $b = -1$, $y = 1$ and "
        "$w = 0.5$: $u = 0$, $\\sigma(u) = 0.5$, $\\ell = 0.25$, and "
        "$d\\ell/dw = 2 \\cdot (0.5 - 1) \\cdot 0.5 \\cdot 0.5 \\cdot 2 = -0.5$ (SymPy's "
        "derivative of the composite gives the same). The negative sign says that a larger "
        "$w$ lowers the loss. A network is the same chain, with more stages and with vectors."
    )
    doc.text(
        "A function of several weights has one partial derivative per weight: change that "
        "weight, hold the others fixed. For the classic example $f(w_1, w_2) = w_1^2 + 3 w_2^2$, "
        "$\\partial f / \\partial w_1 = 2 w_1$ and $\\partial f / \\partial w_2 = 6 w_2$. "
        "Together they form the gradient, which points where $f$ grows fastest:"
    )
    doc.math(
        doc.sub(
            "loss",
            (
                (
                    r"\nabla f",
                    r" = \begin{pmatrix} \partial f / \partial w_1 \\ \partial f / \partial w_2"
                    r" \end{pmatrix} = \begin{pmatrix} 2 w_1 \\ 6 w_2 \end{pmatrix},\quad "
                    r"\nabla f(3, 1) = \begin{pmatrix} 6 \\ 6 \end{pmatrix}",
                ),
            ),
        )
    )
    doc.text(
        "When a variable reaches the loss along several paths, the contributions of the "
        "paths add (the multivariable chain rule: gradients add where a value forks). If "
        "$\\ell$ depends on $w$ through $u_1, \\dots, u_n$:"
    )
    doc.math(
        doc.sub(
            "loss",
            (
                (
                    r"\frac{\partial \ell}{\partial w}",
                    r" = \sum_{k=1}^{n} \frac{\partial \ell}{\partial u_k}"
                    r" \frac{\partial u_k}{\partial w}",
                ),
            ),
        )
    )
    doc.text(
        "Layout: a derivative of the scalar loss with respect to a vector or a matrix has the "
        "shape of that vector or matrix (a column for $z^{(l)}$, a matrix like $W^{(l)}$ for "
        "$W^{(l)}$), and a Jacobian $\\partial u / \\partial v$ has one row per entry of $u$. "
        "A chain of Jacobians, read left to right from the loss, is then a row vector times "
        "matrices; transposing it gives the column form that the recursion below uses."
    )


# --- what the symbols mean -------------------------------------------------------------------


def delta_meaning(doc: Doc) -> None:
    doc.text(
        "What $\\delta$ means: $\\delta^{(l)}_i = \\partial \\ell / \\partial z^{(l)}_i$ is how "
        "fast the loss changes when the weighted input of neuron $i$ of layer $l$ changes. A "
        "large $|\\delta^{(l)}_i|$ means that the neuron's weights and bias get large "
        "gradients and move much; $\\delta^{(l)}_i = 0$ means that the neuron learns nothing "
        "from this sample. Everything else follows from the $\\delta$'s: each weight's "
        "gradient is its neuron's $\\delta$ times the input that weight multiplies."
    )


def hadamard(doc: Doc) -> None:
    doc.text(
        "Here $\\odot$ is the elementwise (Hadamard) product of two vectors of the same "
        "length, $(u \\odot v)_i = u_i v_i$: each neuron's error is scaled by its own "
        "activation's slope."
    )


def shapes(doc: Doc) -> None:
    """Every array's shape, one sample and a batch, with the dimension check."""
    net = doc.d.network
    rows = []
    for layer in net.flat:
        if layer.kind != "dense":
            continue
        n, m = layer.units, layer.fan_in
        l_ = layer.index
        rows.append(
            [
                f"${l_}$",
                f"${n}$",
                f"${n} \\times {m}$",
                f"${n}$",
                f"$B \\times {n}$",
            ]
        )
    doc.text(
        "The shapes, layer by layer: $z^{(l)}$, $a^{(l)}$, $\\delta^{(l)}$ and $b^{(l)}$ have "
        "$n_l$ entries, $W^{(l)}$ and its gradient are $n_l \\times n_{l-1}$, and for a "
        "batch of $B$ samples the code's `Z`, `A` and `dZ` have one row per sample:"
    )
    doc.table(
        [
            "layer $l$",
            "$z, a, \\delta, b$",
            "$W, \\partial L / \\partial W$",
            "$\\partial L / \\partial b$",
            "`Zl`, `Al`, `dZl`",
        ],
        rows,
    )
    doc.text(
        "The dimension check: $\\partial L / \\partial W^{(l)}$ must have the shape of "
        "$W^{(l)}$, $n_l \\times n_{l-1}$, and the only product of $\\delta^{(l)}$ "
        "($n_l \\times 1$) and $a^{(l-1)}$ ($n_{l-1} \\times 1$) with that shape is "
        "$\\delta^{(l)} a^{(l-1)\\top}$. For a batch, $dZ^{(l)\\top} A^{(l-1)}$ is "
        "$(n_l \\times B)(B \\times n_{l-1})$, the same shape, summing over the samples."
    )


def saturation(doc: Doc) -> None:
    """Saturation and vanishing gradients, for sigmoid- and tanh-like activations present."""
    d = doc.d
    found = []
    for ad in d.layers:
        if ad is None or ad.activation.softmax or ad.activation.name in [f[0] for f in found]:
            continue
        slope = ad.derivative.xreplace({Z: 5})
        peak = ad.derivative.xreplace({Z: 0})
        try:
            small, top = float(sympy.N(slope, 20)), float(sympy.N(peak, 20))
        except TypeError:
            continue
        if top > 0 and abs(small) < 0.02 * top:
            found.append((ad.activation.name, top, small))
    if not found:
        return
    parts = [
        f"`{name}`'s slope is ${decimal(top)}$ at $z = 0$ but ${decimal(small)}$ at $z = 5$"
        for name, top, small in found
    ]
    doc.text(
        "Saturation: "
        + "; ".join(parts)
        + ". A neuron whose $|z|$ is large is saturated: by "
        + ref(d.number("delta.hidden"))
        + " its $\\delta$ is multiplied by that small slope, so its weights barely move "
        "however wrong the output is. Through several saturating layers the factors "
        "multiply, and the error reaching the first layers can vanish (the vanishing-gradient "
        "problem); this is why initializations keep $|z|$ small and why ReLU-like "
        "activations, whose slope is 1 for $z > 0$, train deep networks faster."
    )


# --- gradient descent -------------------------------------------------------------------------


def optimizer_rules(doc: Doc) -> None:
    """The update rule of the spec's optimizer when it is not plain SGD, and its schedule."""
    _optimizer_rule(doc)
    _schedule_rule(doc)


def _schedule_rule(doc: Doc) -> None:
    """The learning rate of each epoch e = 1, 2, ..., E when the spec schedules it."""
    train = doc.d.network.spec.train
    schedule = getattr(train, "schedule", "constant")
    if schedule == "step":
        doc.text(
            "The learning rate is not constant: as `torch.optim.lr_scheduler.StepLR`, it is "
            f"multiplied by $\\gamma = {decimal(train.gamma)}$ every {train.step_size} "
            f"epoch{'s' * (train.step_size != 1)}, so epoch $e$ (from 1) uses"
        )
        doc.math(
            doc.sub(
                "update",
                (
                    (
                        r"\eta_e",
                        rf" = \eta\, \gamma^{{\lfloor (e - 1) / {train.step_size} \rfloor}}",
                    ),
                ),
            )
        )
    elif schedule == "cosine":
        doc.text(
            "The learning rate is not constant: as "
            "`torch.optim.lr_scheduler.CosineAnnealingLR` over the "
            f"$E = {train.epochs}$ epochs, it falls from $\\eta$ along half a cosine towards "
            f"$\\eta_{{\\min}} = {decimal(train.min_lr)}$, so epoch $e$ (from 1) uses"
        )
        doc.math(
            doc.sub(
                "update",
                (
                    (
                        r"\eta_e",
                        r" = \eta_{\min} + \tfrac{1}{2}(\eta - \eta_{\min})"
                        r"\left(1 + \cos \frac{(e - 1)\pi}{E}\right)",
                    ),
                ),
            )
        )


def _optimizer_rule(doc: Doc) -> None:
    train = doc.d.network.spec.train
    if train.optimizer == "momentum":
        mu = train.momentum
        doc.text(
            f"The spec trains with momentum ($\\mu = {decimal(mu)}$, as `torch.optim.SGD`): "
            "each parameter keeps a velocity $v$, starting at 0, that accumulates its "
            "gradients, and moves along it:"
        )
        doc.math(
            doc.sub(
                "update",
                (
                    (
                        r"v",
                        r" \leftarrow \mu v + \frac{\partial L}{\partial \theta},\quad "
                        r"\theta \leftarrow \theta - \eta v",
                    ),
                ),
            )
        )
    elif train.optimizer == "rmsprop":
        alpha, eps = train.alpha, train.eps
        doc.text(
            "The spec trains with RMSprop (as `torch.optim.RMSprop`): each parameter keeps a "
            "running mean $v$ of its squared gradient $g^2$, starting at 0, and divides its "
            f"gradient by the root of it ($\\alpha = {decimal(alpha)}$, "
            f"$\\epsilon = {decimal(eps)}$):"
        )
        doc.math(
            doc.sub(
                "update",
                (
                    (
                        r"v",
                        r" \leftarrow \alpha v + (1 - \alpha)\, g^2,\quad "
                        r"\theta \leftarrow \theta - \eta\, \frac{g}{\sqrt{v} + \epsilon}",
                    ),
                ),
            )
        )
    elif train.optimizer == "adam":
        b1, b2, eps = train.beta1, train.beta2, train.eps
        doc.text(
            "The spec trains with Adam (as `torch.optim.Adam`): each parameter keeps running "
            "means of its gradient $g$ and of $g^2$, both starting at 0, corrects their bias "
            "towards 0 at step $t$, and divides the first by the square root of the second, "
            f"so every parameter takes steps of about $\\eta$ ($\\beta_1 = {decimal(b1)}$, "
            f"$\\beta_2 = {decimal(b2)}$, $\\epsilon = {decimal(eps)}$):"
        )
        doc.math(
            doc.sub(
                "update",
                (
                    (
                        r"m",
                        r" \leftarrow \beta_1 m + (1 - \beta_1)\, g,\quad "
                        r"v \leftarrow \beta_2 v + (1 - \beta_2)\, g^2,",
                    ),
                    (
                        r"\theta",
                        r" \leftarrow \theta - \eta\, \frac{\hat m}{\sqrt{\hat v} + \epsilon},"
                        r"\quad \hat m = \frac{m}{1 - \beta_1^t},\quad "
                        r"\hat v = \frac{v}{1 - \beta_2^t}",
                    ),
                ),
            )
        )


def descent_intro(doc: Doc) -> None:
    doc.text(
        "Gradient descent walks downhill: start at some point, find the direction of "
        "steepest descent, which is minus the gradient, take a small step of size $\\eta$ "
        "(the learning rate) along it, and repeat. The figure shows it on the same "
        "$f(w_1, w_2) = w_1^2 + 3 w_2^2$ from $(3, 1)$ with $\\eta = 0.1$; the first step "
        "goes to $(3, 1) - 0.1 \\cdot (6, 6) = (2.4, 0.4)$. Drawn at equal scale on both "
        "axes, each step leaves its contour line at a right angle, because the gradient is "
        "perpendicular to the level sets. The steps shrink near the minimum, where the "
        "gradient is small, and the path bends because each step multiplies $w_2$ by "
        "$1 - 0.1 \\cdot 6 = 0.4$ but $w_1$ only by $1 - 0.1 \\cdot 2 = 0.8$."
    )


# --- the summary -----------------------------------------------------------------------------


def summary(doc: Doc) -> None:
    """A box of the core equations the generated code cites."""
    d = doc.d
    displays = [
        doc.core(e.key) for e in sorted(d.equations, key=lambda e: e.number) if e.number in d.cited
    ]
    doc.box("Summary: the core equations, each one cited by the generated code", displays)


# --- why backpropagation is fast ------------------------------------------------------------


def why_fast(doc: Doc, counts: Counts | None) -> None:
    """One backward pass against one derivative per weight, with this network's counts."""
    if counts is None:
        return
    doc.text(
        "Why backpropagation is fast. For one sample this network's forward pass takes "
        f"{counts.forward:,} multiply-adds and the backward pass {counts.backward:,} (the "
        f"products $W^\\top \\delta$, the elementwise products by $f'$ and the outer "
        f"products $\\delta a^\\top$): {counts.backprop:,} in all for the whole gradient of "
        f"its {counts.parameters:,} parameters."
    )
    doc.text(
        "One derivative per parameter instead, by "
        "finite differences, costs a forward pass for each parameter plus the unperturbed "
        f"one, {counts.finite_difference:,} "
        f"multiply-adds ({_times(counts.finite_difference_ratio)}); and writing every "
        "derivative out as its sum over paths, as the chain rule alone gives it, takes "
        f"{counts.path_terms:,} product terms ({_times(counts.path_ratio)}), a number that "
        "grows exponentially with the depth. Backpropagation computes each "
        "$\\delta$ once and reuses it for every weight below it."
    )


def _times(ratio: float) -> str:
    return f"{ratio:.3g} times as many" if ratio >= 1 else f"{ratio:.2g} times as many"


# --- exercises ------------------------------------------------------------------------------


def large_exercises(d: Derivation) -> tuple[Exercise, ...]:
    """Exercises without the worked example's numbers (networks too large to show it)."""
    net = d.network
    dense = [layer for layer in net.flat if layer.kind == "dense"]
    first, last = dense[0], dense[-1]
    out = []
    for layer in (first, last) if first is not last else (first,):
        n, m = layer.units, layer.fan_in
        W = f"W^{{({layer.index})}}"
        out.append(
            Exercise(
                f"What shape has $\\partial L / \\partial {W}$, and how many entries?",
                f"${n} \\times {m}$, the shape of ${W}$: ${n} \\cdot {m} = {n * m}$ entries, "
                f"the outer product of $\\delta^{{({layer.index})}}$ ({n} entries) with the "
                f"layer's input ({m} entries), averaged over the batch.",
                ("entries", f"W{layer.index}"),
                n * m,
            )
        )
    total = sum(math.prod(shape) for shape in net.spec.parameters.values())
    out.append(
        Exercise(
            "How many numbers does one gradient-descent step change?",
            f"Every trainable parameter: {total:,}, one gradient entry each "
            "(the generated module's `PARAMETERS` lists their shapes).",
            ("parameters",),
            total,
        )
    )
    counts = operation_counts(net.spec)
    if counts is not None:
        out.append(
            Exercise(
                "How many multiply-adds do one forward and one backward pass take for one "
                "sample, and how many would finite differences take?",
                f"{counts.backprop:,}: {counts.forward:,} forward and {counts.backward:,} "
                f"backward. Finite differences take a forward pass per parameter, "
                f"{counts.finite_difference:,} multiply-adds.",
                ("backprop",),
                counts.backprop,
            )
        )
    return tuple(out)


def exercises(doc: Doc, items: tuple[Exercise, ...]) -> None:
    """The exercises, then their answers, as the document's last two sections."""
    doc.section("Exercises")
    doc.text(
        "Answers in the next section; the test suite checks each against the generated module."
    )
    doc.items([e.question for e in items], ordered=True)
    doc.section("Answers")
    doc.items([e.answer for e in items], ordered=True)
