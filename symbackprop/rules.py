"""Local backward rules of the layer kinds, derived by SymPy and proven (issue 9, item 2).

For each kind, ``derive_rule`` builds a small symbolic instance from the kind's forward map in
``symbackprop.layers`` (layer norm over n = 3 features of one sample; batch norm over a batch
of B = 3 samples taken as one function; dropout with a symbolic mask; a residual around a
2 x 2 tanh dense block), differentiates every output by every input with ``sympy.diff``, forms
the vector-Jacobian product g^T J with a symbolic upstream gradient g, and proves it equal to
the general formula the generated NumPy code computes, evaluated on the same instance:

- layer norm (over the features of a sample) and batch norm (over the samples, per feature):
  with xhat = (x - mean) / sqrt(var + eps), rstd = 1 / sqrt(var + eps) and h = g * gamma,
  dx = rstd * (h - mean(h) - xhat * mean(h * xhat)); dgamma = sum g * xhat, dbeta = sum g;
- RMS norm (over the features of a sample): with rstd = 1 / sqrt(mean(x^2) + eps),
  xhat = x * rstd and h = g * gamma, dx = rstd * (h - xhat * mean(h * xhat)); dgamma = sum g * xhat;
- dropout: dx = g * m (m the drawn mask entry, 0 or 1 / (1 - rate));
- residual y = x + F(x): dx = g + (F's backward of g), the sum over both paths (the
  multivariable chain rule).

eps stays a positive symbol, so the proof is of the rule, not of one eps.  The proof of every
entry: the difference is reduced to a rational function (sqrt(var + eps) becomes a positive
symbol r by eps = r^2 - var) and ``sympy.cancel`` must give 0 -- a decision procedure for
rational functions; where that reduction does not apply, ``sympy.simplify`` must give 0.  The
difference is then also evaluated at rational points to 50 digits.  A failure raises
``RuntimeError`` (never ``assert``: the check must survive ``python -O``).  ``check_equal`` is
that checker, exposed so that a wrong formula can be shown to fail.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

import sympy

from symbackprop import layers
from symbackprop.expressions import simplify
from symbackprop.spec import FlatLayer, LayerSpec, output_size

# the image kinds (DESIGN §2c) have rules of their own, on image instances: symbackprop.conv
CONV_KINDS = ("conv2d", "max_pool2d", "avg_pool2d", "flatten")
KINDS = tuple(kind for kind in layers.LAYERS if kind not in {"dense", *CONV_KINDS})
EPS = sympy.Symbol("epsilon", positive=True)  # the normalization's eps, kept symbolic

INDEX = 1  # the layer number of an instance's layer (its gamma1_i, beta1_i, m1_i)
MAX_SIZE = 6  # the largest instance derive_rule builds (proof cost grows fast with n)
NUMERIC_POINTS = 2  # rational points of the numeric check
NUMERIC_DIGITS = 50
NUMERIC_TOLERANCE = sympy.Rational(1, 10**40)

Rows = tuple[tuple[str, str, str], ...]


@dataclass(frozen=True)
class ParameterGrad:
    """dL/dtheta of one parameter of the instance: SymPy's, and the formula's."""

    name: str  # "gamma", "beta"; "W", "b" of a residual's block
    derived: sympy.ImmutableMatrix  # d(g . y)/dtheta by sympy.diff, one entry per scalar
    formula: sympy.ImmutableMatrix  # the generated code's formula on the instance


@dataclass(frozen=True)
class KindRule:
    """One kind's local backward rule: derived on an instance, proven equal to the formula.

    Instance layout: the ``shape`` (rows, features) of the input, flattened row-major into
    ``inputs`` (rows = the batch for batch norm, 1 otherwise); ``forward`` is a column of the
    outputs in the same order, ``jacobian`` is d forward_i / d inputs_j, ``upstream`` is the
    symbolic g = dL/dy, ``vjp`` the row g^T J and ``formula`` the row the code computes.
    """

    kind: str
    n: int  # features (layer norm, dropout, residual) or batch size B (batch norm)
    shape: tuple[int, int]
    inputs: tuple[sympy.Symbol, ...]
    upstream: tuple[sympy.Symbol, ...]
    forward: sympy.ImmutableMatrix
    jacobian: sympy.ImmutableMatrix
    vjp: sympy.ImmutableMatrix
    formula: sympy.ImmutableMatrix
    parameter_grads: tuple[ParameterGrad, ...]
    equations: Rows  # (key, title, LaTeX) for the document, general n and B
    names: tuple[tuple[sympy.Symbol, str], ...]  # LaTeX names of the instance's symbols
    proof: str  # one sentence: what was proven, and how
    seconds: float = field(default=0.0, compare=False)  # derivation and proof, wall clock

    @property
    def symbol_names(self) -> dict[sympy.Symbol, str]:
        """For ``sympy.latex(expr, symbol_names=rule.symbol_names)``: x_{i}, \\gamma_{i}."""
        return dict(self.names)

    def latex(self, expr: sympy.Basic) -> str:
        return sympy.latex(expr, symbol_names=self.symbol_names)


# --- the checker --------------------------------------------------------------------------


def check_equal(
    derived: sympy.MatrixBase, formula: sympy.MatrixBase, what: str, eps: sympy.Symbol = EPS
) -> None:
    """Raise RuntimeError unless every entry of ``derived - formula`` is identically zero.

    First at rational points to 50 digits (a counterexample refutes at once), then exactly:
    ``identically_zero``, or failing that ``sympy.simplify``, must give 0 for every entry.
    """
    if derived.shape != formula.shape:
        raise RuntimeError(f"{what}: shapes differ: {derived.shape} vs {formula.shape}")
    differences = [a - b for a, b in zip(derived, formula, strict=True)]
    symbols = sorted(
        set().union(*(d.free_symbols for d in differences)) - {eps}, key=sympy.default_sort_key
    )
    draw = random.Random(0)
    for _ in range(NUMERIC_POINTS):
        point = {s: _nonzero_rational(draw) for s in symbols}
        point[eps] = sympy.Rational(draw.randint(1, 9), 10)
        for k, difference in enumerate(differences):
            value = difference.xreplace(point).evalf(NUMERIC_DIGITS)
            if not abs(value) < NUMERIC_TOLERANCE:
                raise RuntimeError(
                    f"{what}: entry {k} of SymPy's derivative and the formula differ by "
                    f"{sympy.N(value, 6)} at {point}"
                )
    for k, difference in enumerate(differences):
        if not (identically_zero(difference) or simplify(difference) == 0):
            raise RuntimeError(
                f"{what}: entry {k}: SymPy's derivative minus the formula does not reduce to 0"
            )


def _nonzero_rational(draw: random.Random) -> sympy.Rational:
    return sympy.Rational(draw.choice((-1, 1)) * draw.randint(1, 9), draw.randint(1, 5))


def identically_zero(expr: sympy.Expr) -> bool:
    """True if ``expr`` is 0 as a function; False means not shown (a decision for radicals
    of distinct polynomials, such as sqrt(var + eps) per feature, and rational functions).

    Every sqrt(P)**k becomes r_P**k with r_P > 0; the expression is then a rational function
    whose numerator, reduced modulo r_P**2 = P, is multilinear in the r_P.  Distinct P of
    the form var + eps multiply to no square, so 1 and the products of r_P are linearly
    independent: the expression is 0 iff the reduced numerator expands to 0.
    """
    expr = sympy.sympify(expr)
    if expr == 0:
        return True
    roots: dict[sympy.Expr, sympy.Dummy] = {}
    replace: dict[sympy.Expr, sympy.Expr] = {}
    for power in expr.atoms(sympy.Pow):
        exponent = power.exp
        if exponent.is_Rational and exponent.q == 2:
            root = roots.setdefault(sympy.expand(power.base), sympy.Dummy("r", positive=True))
            replace[power] = root**exponent.p
    numerator, _ = sympy.fraction(sympy.cancel(sympy.together(expr.xreplace(replace))))
    for square, root in roots.items():
        numerator = sympy.rem(sympy.expand(numerator), root**2 - square, root)
    return sympy.expand(numerator) == 0


# --- instances ------------------------------------------------------------------------------


def _flat(kind: str, units: int) -> FlatLayer:
    return FlatLayer(INDEX, LayerSpec(units, kind=kind), "layers[0]", (0,), units, True)


def _vector(name: str, count: int) -> tuple[sympy.Symbol, ...]:
    return tuple(sympy.Symbol(f"{name}{i + 1}", real=True) for i in range(count))


def _grid(name: str, rows: int, cols: int) -> list[list[sympy.Symbol]]:
    return [
        [sympy.Symbol(f"{name}{s + 1}_{i + 1}", real=True) for i in range(cols)]
        for s in range(rows)
    ]


def _vjp(
    outputs: Sequence[sympy.Expr], inputs: Sequence[sympy.Symbol], g: Sequence[sympy.Symbol]
) -> tuple[sympy.Matrix, sympy.Matrix]:
    jacobian = sympy.Matrix(
        len(outputs), len(inputs), lambda i, j: sympy.diff(outputs[i], inputs[j])
    )
    return jacobian, sympy.Matrix([list(g)]) * jacobian


def normalization_formula(
    x: Sequence[sympy.Expr],
    g: Sequence[sympy.Expr],
    gamma: Sequence[sympy.Expr],
    groups: Sequence[Sequence[int]],
    eps: sympy.Expr = EPS,
) -> tuple[sympy.Matrix, list[sympy.Expr]]:
    """The generated code's dx of a normalization, and xhat, on a flattened instance.

    ``groups`` are the index sets sharing one mean and variance: the features of a sample
    (layer norm) or the samples of a feature (batch norm).  Within a group, with
    rstd = 1/sqrt(var + eps) and h = g * gamma: dx = rstd (h - mean h - xhat mean(h xhat)).
    """
    dx: list[sympy.Expr] = [sympy.S.Zero] * len(x)
    xhat: list[sympy.Expr] = [sympy.S.Zero] * len(x)
    for group in groups:
        values = [x[k] for k in group]
        mu = layers.mean(values)
        rstd = 1 / sympy.sqrt(layers.biased_variance(values, mu) + eps)
        h = {k: g[k] * gamma[k] for k in group}
        for k in group:
            xhat[k] = (x[k] - mu) * rstd
        mean_h = layers.mean([h[k] for k in group])
        mean_hx = layers.mean([h[k] * xhat[k] for k in group])
        for k in group:
            dx[k] = rstd * (h[k] - mean_h - xhat[k] * mean_hx)
    return sympy.Matrix([dx]), xhat


def _parameter_grad(
    name: str,
    outputs: Sequence[sympy.Expr],
    g: Sequence[sympy.Symbol],
    theta: Sequence[sympy.Symbol],
    formula: Sequence[sympy.Expr],
) -> ParameterGrad:
    loss = sum((gi * yi for gi, yi in zip(g, outputs, strict=True)), sympy.S.Zero)
    derived = sympy.ImmutableMatrix([[sympy.diff(loss, t) for t in theta]])
    return ParameterGrad(name, derived, sympy.ImmutableMatrix([list(formula)]))


@dataclass(frozen=True)
class _Instance:
    shape: tuple[int, int]
    inputs: tuple[sympy.Symbol, ...]
    upstream: tuple[sympy.Symbol, ...]
    outputs: tuple[sympy.Expr, ...]
    formula: sympy.Matrix
    parameter_grads: tuple[ParameterGrad, ...]
    names: tuple[tuple[sympy.Symbol, str], ...]


def _norm_names(
    x: Sequence[Sequence[sympy.Symbol]], g: Sequence[Sequence[sympy.Symbol]], features: int
) -> list[tuple[sympy.Symbol, str]]:
    batch = len(x) > 1
    names = [(EPS, r"\epsilon")]
    for s, (xs, gs) in enumerate(zip(x, g, strict=True)):
        for i in range(features):
            sub = f"{s + 1} {i + 1}" if batch else f"{i + 1}"
            names += [(xs[i], f"x_{{{sub}}}"), (gs[i], f"g_{{{sub}}}")]
    for i in range(features):
        names += [
            (layers.gamma(INDEX, i + 1), rf"\gamma_{{{i + 1}}}"),
            (layers.beta(INDEX, i + 1), rf"\beta_{{{i + 1}}}"),
        ]
    return names


def _layer_norm(n: int, features: int) -> _Instance:
    del features
    x, g = _vector("x", n), _vector("g", n)
    _, _, out = layers.layer_norm(_flat("layer_norm", n), list(x), eps=EPS)
    gamma = [layers.gamma(INDEX, i + 1) for i in range(n)]
    formula, xhat = normalization_formula(x, g, gamma, [range(n)])
    grads = (
        _parameter_grad("gamma", out, g, gamma, [g[i] * xhat[i] for i in range(n)]),
        _parameter_grad("beta", out, g, [layers.beta(INDEX, i + 1) for i in range(n)], g),
    )
    names = tuple(_norm_names([x], [g], n))
    return _Instance((1, n), x, g, tuple(out), formula, grads, names)


def _batch_norm(batch: int, features: int) -> _Instance:
    X, G = _grid("x", batch, features), _grid("g", batch, features)
    _, _, out = layers.batch_norm(_flat("batch_norm", features), X, eps=EPS)
    x = tuple(v for row in X for v in row)
    g = tuple(v for row in G for v in row)
    gamma = [layers.gamma(INDEX, k % features + 1) for k in range(len(x))]
    by_feature = [[s * features + i for s in range(batch)] for i in range(features)]
    formula, xhat = normalization_formula(x, g, gamma, by_feature)
    outputs = tuple(v for row in out for v in row)
    grads = (
        _parameter_grad(
            "gamma",
            outputs,
            g,
            [layers.gamma(INDEX, i + 1) for i in range(features)],
            [sum(g[k] * xhat[k] for k in column) for column in by_feature],
        ),
        _parameter_grad(
            "beta",
            outputs,
            g,
            [layers.beta(INDEX, i + 1) for i in range(features)],
            [sum(g[k] for k in column) for column in by_feature],
        ),
    )
    names = tuple(_norm_names(X, G, features))
    return _Instance((batch, features), x, g, outputs, formula, grads, names)


def _rms_norm(n: int, features: int) -> _Instance:
    del features
    x, g = _vector("x", n), _vector("g", n)
    _, out = layers.rms_norm(_flat("rms_norm", n), list(x), eps=EPS)
    gamma = [layers.gamma(INDEX, i + 1) for i in range(n)]
    rstd = 1 / sympy.sqrt(layers.mean_square(x) + EPS)
    xhat = [xi * rstd for xi in x]
    h = [g[i] * gamma[i] for i in range(n)]
    mean_hx = layers.mean([h[i] * xhat[i] for i in range(n)])
    formula = sympy.Matrix([[rstd * (h[i] - xhat[i] * mean_hx) for i in range(n)]])
    grads = (_parameter_grad("gamma", out, g, gamma, [g[i] * xhat[i] for i in range(n)]),)
    names = tuple(p for p in _norm_names([x], [g], n) if not p[0].name.startswith("beta"))
    return _Instance((1, n), x, g, tuple(out), formula, grads, names)


def _dropout(n: int, features: int) -> _Instance:
    del features
    x, g = _vector("x", n), _vector("g", n)
    out = layers.dropout(_flat("dropout", n), list(x))
    m = [layers.mask(INDEX, i + 1) for i in range(n)]
    formula = sympy.Matrix([[g[i] * m[i] for i in range(n)]])
    names = [
        (s, f"{c}_{{{i + 1}}}") for c, v in (("x", x), ("g", g), ("m", m)) for i, s in enumerate(v)
    ]
    return _Instance((1, n), x, g, tuple(out), formula, (), tuple(names))


def _residual(n: int, features: int) -> _Instance:
    """y = x + tanh(W x + b): the skip path and a dense tanh block, both reading x."""
    del features
    x, g = _vector("x", n), _vector("g", n)
    W = sympy.Matrix(n, n, lambda i, j: sympy.Symbol(f"w{i + 1}_{j + 1}", real=True))
    b = sympy.Matrix(_vector("b", n))
    block = [sympy.tanh(z) for z in W * sympy.Matrix(x) + b]
    out = layers.residual(list(x), block)
    # the block's own backward (the dense rule): delta = g * tanh'(z), dx = W^T delta
    delta = [g[i] * (1 - block[i] ** 2) for i in range(n)]
    through_block = W.T * sympy.Matrix(delta)
    formula = sympy.Matrix([[g[i] + through_block[i] for i in range(n)]])
    grads = (
        _parameter_grad(
            "W",
            out,
            g,
            list(W),
            [delta[i] * x[j] for i in range(n) for j in range(n)],
        ),
        _parameter_grad("b", out, g, list(b), delta),
    )
    names = [
        (s, f"{c}_{{{i + 1}}}") for c, v in (("x", x), ("g", g), ("b", b)) for i, s in enumerate(v)
    ]
    names += [(W[i, j], f"w_{{{i + 1}{j + 1}}}") for i in range(n) for j in range(n)]
    return _Instance((1, n), x, g, tuple(out), formula, grads, tuple(names))


# --- equations (general n features, B samples) ------------------------------------------

_NORM_GRADS = (
    r"\frac{\partial L}{\partial \gamma^{(l)}} = \frac{1}{B} \sum_{s=1}^{B} "
    r"\delta^{(l)}_s \odot \hat x_s,\quad "
    r"\frac{\partial L}{\partial \beta^{(l)}} = \frac{1}{B} \sum_{s=1}^{B} \delta^{(l)}_s"
)

EQUATIONS: dict[str, Rows] = {
    "layer_norm": (
        (
            "layer_norm.forward",
            "layer normalization (over the n features of a sample)",
            r"\mu = \frac{1}{n} \sum_{i=1}^{n} a^{(l-1)}_i,\quad "
            r"\sigma^2 = \frac{1}{n} \sum_{i=1}^{n} \left(a^{(l-1)}_i - \mu\right)^2,\quad "
            r"\hat x = \frac{a^{(l-1)} - \mu}{\sqrt{\sigma^2 + \epsilon}},\quad "
            r"a^{(l)} = \gamma^{(l)} \odot \hat x + \beta^{(l)}",
        ),
        (
            "layer_norm.backward",
            "layer normalization: the error at its input",
            r"\frac{\partial \ell}{\partial a^{(l-1)}} = \frac{1}{\sqrt{\sigma^2 + \epsilon}}"
            r" \left(h - \frac{1}{n} \sum_{j=1}^{n} h_j"
            r" - \hat x\, \frac{1}{n} \sum_{j=1}^{n} h_j \hat x_j\right),\quad "
            r"h = \gamma^{(l)} \odot \delta^{(l)},\quad "
            r"\delta^{(l)} = \frac{\partial \ell}{\partial a^{(l)}}",
        ),
        ("layer_norm.grad", "layer normalization: gradients of its parameters", _NORM_GRADS),
    ),
    "batch_norm": (
        (
            "batch_norm.forward",
            "batch normalization, training (each feature over the B samples of the batch)",
            r"\mu_B = \frac{1}{B} \sum_{s=1}^{B} a^{(l-1)}_s,\quad "
            r"\sigma_B^2 = \frac{1}{B} \sum_{s=1}^{B} \left(a^{(l-1)}_s - \mu_B\right)^2,\quad "
            r"\hat x_s = \frac{a^{(l-1)}_s - \mu_B}{\sqrt{\sigma_B^2 + \epsilon}},\quad "
            r"a^{(l)}_s = \gamma^{(l)} \odot \hat x_s + \beta^{(l)}",
        ),
        (
            "batch_norm.backward",
            "batch normalization: the error at its input (the batch as one function)",
            r"B\, \frac{\partial L}{\partial a^{(l-1)}_s} = "
            r"\frac{1}{\sqrt{\sigma_B^2 + \epsilon}} \odot"
            r" \left(h_s - \frac{1}{B} \sum_{t=1}^{B} h_t"
            r" - \hat x_s \odot \frac{1}{B} \sum_{t=1}^{B} h_t \odot \hat x_t\right),\quad "
            r"h_s = \gamma^{(l)} \odot \delta^{(l)}_s,\quad "
            r"\delta^{(l)}_s = B\, \frac{\partial L}{\partial a^{(l)}_s}",
        ),
        ("batch_norm.grad", "batch normalization: gradients of its parameters", _NORM_GRADS),
        (
            "batch_norm.running",
            "batch normalization: running statistics (momentum m, after each training step)",
            r"\mu^{(l)}_{\mathrm{run}} \leftarrow (1 - m)\, \mu^{(l)}_{\mathrm{run}} + m\, \mu_B,"
            r"\quad \sigma^{2\,(l)}_{\mathrm{run}} \leftarrow"
            r" (1 - m)\, \sigma^{2\,(l)}_{\mathrm{run}}"
            r" + m\, \frac{B}{B - 1}\, \sigma_B^2",
        ),
        (
            "batch_norm.inference",
            "batch normalization, inference (running statistics)",
            r"a^{(l)} = \gamma^{(l)} \odot \frac{a^{(l-1)} - \mu^{(l)}_{\mathrm{run}}}"
            r"{\sqrt{\sigma^{2\,(l)}_{\mathrm{run}} + \epsilon}} + \beta^{(l)}",
        ),
    ),
    "dropout": (
        (
            "dropout.forward",
            "dropout with rate p (training; the identity at inference)",
            r"a^{(l)} = a^{(l-1)} \odot m,\quad "
            r"m_i = \begin{cases} \frac{1}{1 - p} & \text{with probability } 1 - p \\"
            r" 0 & \text{with probability } p \end{cases}",
        ),
        (
            "dropout.backward",
            "dropout: the error at its input (the same mask)",
            r"\frac{\partial \ell}{\partial a^{(l-1)}} = \delta^{(l)} \odot m,\quad "
            r"\delta^{(l)} = \frac{\partial \ell}{\partial a^{(l)}}",
        ),
    ),
    "residual": (
        (
            "residual.forward",
            "residual connection (F: the block, which keeps the width)",
            r"a^{(l)} = a^{(l-1)} + F\left(a^{(l-1)}\right)",
        ),
        (
            "residual.backward",
            "residual connection: the input reaches the loss along two paths, which add",
            r"\frac{\partial \ell}{\partial a^{(l-1)}} = \underbrace{\delta^{(l)}}_{\text{skip}}"
            r" + \underbrace{\left(\frac{\partial F}{\partial a^{(l-1)}}\right)^{\top}"
            r" \delta^{(l)}}_{\text{through the block}},\quad "
            r"\delta^{(l)} = \frac{\partial \ell}{\partial a^{(l)}}",
        ),
    ),
    "rms_norm": (
        (
            "rms_norm.forward",
            "RMS normalization (over the n features of a sample)",
            r"\nu = \frac{1}{n} \sum_{i=1}^{n} \left(a^{(l-1)}_i\right)^2,\quad "
            r"\hat x = \frac{a^{(l-1)}}{\sqrt{\nu + \epsilon}},\quad "
            r"a^{(l)} = \gamma^{(l)} \odot \hat x",
        ),
        (
            "rms_norm.backward",
            "RMS normalization: the error at its input",
            r"\frac{\partial \ell}{\partial a^{(l-1)}} = \frac{1}{\sqrt{\nu + \epsilon}}"
            r" \left(h - \hat x\, \frac{1}{n} \sum_{j=1}^{n} h_j \hat x_j\right),\quad "
            r"h = \gamma^{(l)} \odot \delta^{(l)},\quad "
            r"\delta^{(l)} = \frac{\partial \ell}{\partial a^{(l)}}",
        ),
        (
            "rms_norm.grad",
            "RMS normalization: the gradient of its gain",
            r"\frac{\partial L}{\partial \gamma^{(l)}} = \frac{1}{B} \sum_{s=1}^{B} "
            r"\delta^{(l)}_s \odot \hat x_s",
        ),
    ),
}

# The image kinds: channels c = 1..C, rows i, columns j of the input a^{(l-1)} (1-based);
# outputs f, p, q; kernel k_h x k_w, stride S, zero padding P (per axis when pairs);
# \tilde a is the input padded with P zeros on each side.
_WINDOW = r"S(p-1)+u,\, S(q-1)+v"
_HAT = r"\tilde a^{(l-1)}"

EQUATIONS.update(
    {
        "conv2d": (
            (
                "conv2d.forward",
                "convolutional layer (the cross-correlation of nn.Conv2d: filter f, "
                "output row p, column q; stride S, zero padding P)",
                r"z^{(l)}_{f p q} = b^{(l)}_f + \sum_{c=1}^{C} \sum_{u=1}^{k_h}"
                r" \sum_{v=1}^{k_w} W^{(l)}_{f c u v}\, " + _HAT + r"_{c,\, " + _WINDOW + r"},"
                r"\quad a^{(l)} = f_l\left(z^{(l)}\right),\quad "
                r"H_o = \left\lfloor \frac{H + 2P - k_h}{S} \right\rfloor + 1",
            ),
            (
                "conv2d.im2col",
                "convolutional layer as matrix products (im2col: one column per output "
                "position, one row per kernel entry)",
                r"X^{(l)}_{(c u v),\, (p q)} = " + _HAT + r"_{c,\, " + _WINDOW + r"},\quad "
                r"Z^{(l)} = W^{(l)}_{\mathrm{mat}} X^{(l)} + b^{(l)} \mathbf{1}^{\top},\quad "
                r"\frac{\partial \ell}{\partial W^{(l)}_{\mathrm{mat}}} = "
                r"\Delta^{(l)} X^{(l)\top},\quad "
                r"\frac{\partial \ell}{\partial X^{(l)}} = "
                r"W^{(l)\top}_{\mathrm{mat}} \Delta^{(l)},\quad "
                r"\frac{\partial \ell}{\partial a^{(l-1)}} = "
                r"\mathrm{col2im}\left(\frac{\partial \ell}{\partial X^{(l)}}\right)",
            ),
            (
                "conv2d.backward",
                "convolutional layer: the error at its input (a term counts only where "
                "its indices are whole numbers in range; with S = 1 and P = 0 it is the full "
                "convolution of the error with the flipped kernel)",
                r"\frac{\partial \ell}{\partial a^{(l-1)}_{c i j}} = \sum_{f=1}^{F}"
                r" \sum_{u=1}^{k_h} \sum_{v=1}^{k_w} W^{(l)}_{f c u v}\,"
                r" \delta^{(l)}_{f p q},\quad p = \frac{i + P - u}{S} + 1,\quad "
                r"q = \frac{j + P - v}{S} + 1,\quad "
                r"\delta^{(l)} = \frac{\partial \ell}{\partial z^{(l)}}",
            ),
            (
                "conv2d.grad",
                "convolutional layer: gradients of its kernel (the cross-correlation of the "
                "input with the error) and bias (the sum of the error)",
                r"\frac{\partial L}{\partial W^{(l)}_{f c u v}} = \frac{1}{B} \sum_{s=1}^{B}"
                r" \sum_{p, q} \delta^{(l)}_{s f p q}\, " + _HAT + r"_{s c,\, " + _WINDOW + r"},"
                r"\quad \frac{\partial L}{\partial b^{(l)}_f} = \frac{1}{B} \sum_{s=1}^{B}"
                r" \sum_{p, q} \delta^{(l)}_{s f p q}",
            ),
        ),
        "max_pool2d": (
            (
                "max_pool2d.forward",
                "max pooling (kernel k_h x k_w, stride S, each channel alone)",
                r"a^{(l)}_{c p q} = \max_{1 \le u \le k_h,\ 1 \le v \le k_w}"
                r" a^{(l-1)}_{c,\, " + _WINDOW + r"}",
            ),
            (
                "max_pool2d.backward",
                "max pooling: the error goes to the first maximum of each window "
                "(row-major), the other inputs get none",
                r"\frac{\partial \ell}{\partial a^{(l-1)}_{c i j}} = \sum_{p, q}"
                r" \delta^{(l)}_{c p q}\, \left[(i, j) = m_{c p q}\right],\quad "
                r"m_{c p q} = \text{the first } \arg\max \text{ of window } (p, q),\quad "
                r"\delta^{(l)} = \frac{\partial \ell}{\partial a^{(l)}}",
            ),
        ),
        "avg_pool2d": (
            (
                "avg_pool2d.forward",
                "average pooling (kernel k_h x k_w, stride S, each channel alone)",
                r"a^{(l)}_{c p q} = \frac{1}{k_h k_w} \sum_{u=1}^{k_h} \sum_{v=1}^{k_w}"
                r" a^{(l-1)}_{c,\, " + _WINDOW + r"}",
            ),
            (
                "avg_pool2d.backward",
                "average pooling: the error of a window spreads evenly over its inputs",
                r"\frac{\partial \ell}{\partial a^{(l-1)}_{c i j}} = \frac{1}{k_h k_w}"
                r" \sum_{(p, q):\ (i, j) \in \text{window } (p, q)} \delta^{(l)}_{c p q},\quad "
                r"\delta^{(l)} = \frac{\partial \ell}{\partial a^{(l)}}",
            ),
        ),
        "flatten": (
            (
                "flatten.forward",
                "flattening (C order, as nn.Flatten)",
                r"a^{(l)}_{(c-1) H W + (i-1) W + j} = a^{(l-1)}_{c i j}",
            ),
            (
                "flatten.backward",
                "flattening: the error is reshaped back (a permutation)",
                r"\frac{\partial \ell}{\partial a^{(l-1)}_{c i j}} = "
                r"\delta^{(l)}_{(c-1) H W + (i-1) W + j},\quad "
                r"\delta^{(l)} = \frac{\partial \ell}{\partial a^{(l)}}",
            ),
        ),
    }
)

_INSTANCES: dict[str, Callable[[int, int], _Instance]] = {
    "layer_norm": _layer_norm,
    "batch_norm": _batch_norm,
    "dropout": _dropout,
    "residual": _residual,
    "rms_norm": _rms_norm,
}

_WHAT = {
    "layer_norm": "layer norm over {n} features of one sample",
    "batch_norm": "batch norm over a batch of B = {n} samples, {features} feature(s)",
    "dropout": "dropout of {n} features",
    "residual": "a residual around a {n} x {n} tanh dense block",
    "rms_norm": "RMS norm over {n} features of one sample",
}


# --- the rules ------------------------------------------------------------------------------


@cache
def derive_rule(kind: str, n: int = 3, features: int = 2) -> KindRule:
    """Derive ``kind``'s backward rule on an instance of size n and prove it (RuntimeError).

    n is the feature count (layer norm, dropout, residual) or, for batch norm, the batch size
    B; ``features`` is used by batch norm only (each feature over the batch).
    """
    if kind not in _INSTANCES:
        raise ValueError(f"no derived rule for kind {kind!r}; known: {', '.join(KINDS)}")
    if not 2 <= n <= MAX_SIZE or not 1 <= features <= MAX_SIZE:
        raise ValueError(f"instance size n={n}, features={features}: expected 2..{MAX_SIZE}")
    start = time.perf_counter()
    features = features if kind == "batch_norm" else 1
    instance = _INSTANCES[kind](n, features)
    jacobian, vjp = _vjp(instance.outputs, instance.inputs, instance.upstream)
    what = _WHAT[kind].format(n=n, features=features)
    check_equal(vjp, instance.formula, f"{what}: g^T J")
    for grad in instance.parameter_grads:
        check_equal(grad.derived, grad.formula, f"{what}: dL/d{grad.name}")
    entries = len(instance.outputs) * len(instance.inputs)
    proof = (
        f"For {what}, SymPy differentiated {len(instance.outputs)} outputs by "
        f"{len(instance.inputs)} inputs ({entries} entries); g^T J minus the formula "
        f"{'and each parameter gradient minus its formula ' if instance.parameter_grads else ''}"
        f"reduced to 0 exactly{' with eps symbolic' if kind.endswith('_norm') else ''}, "
        f"and at {NUMERIC_POINTS} rational points to {NUMERIC_DIGITS} digits."
    )
    return KindRule(
        kind=kind,
        n=n,
        shape=instance.shape,
        inputs=instance.inputs,
        upstream=instance.upstream,
        forward=sympy.ImmutableMatrix(list(instance.outputs)),
        jacobian=sympy.ImmutableMatrix(jacobian),
        vjp=sympy.ImmutableMatrix(vjp),
        formula=sympy.ImmutableMatrix(instance.formula),
        parameter_grads=instance.parameter_grads,
        equations=EQUATIONS[kind],
        names=instance.names,
        proof=proof,
        seconds=time.perf_counter() - start,
    )


def kind_equations(kind: str) -> Rows:
    """The document's rows of a kind other than dense, once its rule is proven."""
    if kind in CONV_KINDS:
        return derive_conv_rule(kind).equations
    return derive_rule(kind).equations


def all_rules() -> tuple[KindRule, ...]:
    """Every kind's rule at its default instance size (cached)."""
    return tuple(derive_rule(kind) for kind in KINDS)


# --- the image kinds (DESIGN §2c): derived on small image instances -----------------------
#
# Indices in code are 0-based (p, q output row and column; u, v kernel row and column); the
# document writes them 1-based.  Every rule is linear in g (and, for conv2d, bilinear in
# the kernel and the input), so each difference is a polynomial and check_equal decides it.


Pair = tuple[int, int]


@dataclass(frozen=True)
class ConvCase:
    """One image instance: shapes, what SymPy derived, and the formulas it was proven equal to."""

    what: str  # "1 channel, 3 x 3 input, 2 x 2 kernel, stride 1, padding 0"
    inputs: tuple[sympy.Symbol, ...]  # x[c, i, j], C order
    upstream: tuple[sympy.Symbol, ...]  # g = dl/d(output), C order
    forward: sympy.ImmutableMatrix  # the outputs (pre-activation z for conv2d), C order
    derived: tuple[tuple[str, sympy.ImmutableMatrix], ...]  # ("dx", ...), ("dW", ...), ...
    formulas: tuple[tuple[str, sympy.ImmutableMatrix], ...]  # the same names, the code's forms


@dataclass(frozen=True)
class ConvRule:
    """An image kind's backward rules, derived by sympy.diff and proven on every case."""

    kind: str
    cases: tuple[ConvCase, ...]
    equations: Rows
    proof: str
    seconds: float = field(default=0.0, compare=False)


def _image(name: str, shape: Sequence[int]) -> sympy.MutableDenseNDimArray:
    """Real symbols name<c>_<i>_<j> (1-based, as the document writes them) in an array."""

    def symbol(index: tuple[int, ...]) -> sympy.Symbol:
        return sympy.Symbol(name + "_".join(str(k + 1) for k in index), real=True)

    array = sympy.MutableDenseNDimArray.zeros(*shape)
    for index in _indices(shape):
        array[index] = symbol(index)
    return array


def _indices(shape: Sequence[int]) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = [()]
    for size in shape:
        out = [(*k, i) for k in out for i in range(size)]
    return out


def _flat_entries(array: sympy.NDimArray) -> list[sympy.Expr]:
    return [array[k] for k in _indices(array.shape)]


def _padded(x: sympy.NDimArray, padding: tuple[int, int]) -> Callable[[int, int, int], sympy.Expr]:
    """(c, i, j) -> the zero-padded input's entry (0-based padded indices)."""
    _, height, width = x.shape

    def entry(c: int, i: int, j: int) -> sympy.Expr:
        i, j = i - padding[0], j - padding[1]
        return x[c, i, j] if 0 <= i < height and 0 <= j < width else sympy.S.Zero

    return entry


def conv_forward(
    x: sympy.NDimArray,
    w: sympy.NDimArray,
    b: Sequence[sympy.Expr] | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> sympy.MutableDenseNDimArray:
    """z[f, p, q] = b[f] + sum_{c,u,v} W[f, c, u, v] xpad[c, S p + u, S q + v] (nn.Conv2d)."""
    filters, channels, kh, kw = w.shape
    _, height, width = x.shape
    ho = output_size(height, kh, stride[0], padding[0])
    wo = output_size(width, kw, stride[1], padding[1])
    xp = _padded(x, padding)
    z = sympy.MutableDenseNDimArray.zeros(filters, ho, wo)
    for f, p, q in _indices((filters, ho, wo)):
        total = b[f] if b is not None else sympy.S.Zero
        for c, u, v in _indices((channels, kh, kw)):
            total += w[f, c, u, v] * xp(c, stride[0] * p + u, stride[1] * q + v)
        z[f, p, q] = total
    return z


def conv_grad_kernel(
    x: sympy.NDimArray, g: sympy.NDimArray, kernel: Pair, stride: Pair, padding: Pair
) -> sympy.MutableDenseNDimArray:
    """dW[f, c, u, v] = sum_{p,q} g[f, p, q] xpad[c, S p + u, S q + v]: the cross-correlation
    of the (padded) input with the error."""
    filters, ho, wo = g.shape
    channels = x.shape[0]
    xp = _padded(x, padding)
    dw = sympy.MutableDenseNDimArray.zeros(filters, channels, *kernel)
    for f, c, u, v in _indices((filters, channels, *kernel)):
        dw[f, c, u, v] = sympy.Add(
            *(
                g[f, p, q] * xp(c, stride[0] * p + u, stride[1] * q + v)
                for p, q in _indices((ho, wo))
            )
        )
    return dw


def conv_grad_input(
    w: sympy.NDimArray, g: sympy.NDimArray, shape: tuple[int, ...], stride: Pair, padding: Pair
) -> sympy.MutableDenseNDimArray:
    """dx[c, i, j] = sum_{f,u,v} W[f, c, u, v] g[f, (i + P - u)/S, (j + P - v)/S], the terms
    with whole, in-range indices only: the index formula of equation conv2d.backward."""
    filters, channels, kh, kw = w.shape
    _, ho, wo = g.shape
    dx = sympy.MutableDenseNDimArray.zeros(*shape)
    for c, i, j in _indices(shape):
        total = sympy.S.Zero
        for f, u, v in _indices((filters, kh, kw)):
            rows, cols = i + padding[0] - u, j + padding[1] - v
            if rows % stride[0] or cols % stride[1]:
                continue
            p, q = rows // stride[0], cols // stride[1]
            if 0 <= p < ho and 0 <= q < wo:
                total += w[f, c, u, v] * g[f, p, q]
        dx[c, i, j] = total
    return dx


def conv_grad_input_full(
    w: sympy.NDimArray, g: sympy.NDimArray, shape: tuple[int, ...], stride: Pair, padding: Pair
) -> sympy.MutableDenseNDimArray:
    """The same dx as the full convolution of the error with the flipped kernel: the error
    dilated by S (S - 1 zeros between entries), padded by k - 1 - P, cross-correlated with
    W rotated by 180 degrees and summed over the filters."""
    filters, channels, kh, kw = w.shape
    _, ho, wo = g.shape

    def dilated(f: int, r: int, s: int) -> sympy.Expr:  # the padded, dilated error
        r, s = r - (kh - 1 - padding[0]), s - (kw - 1 - padding[1])
        if r < 0 or s < 0 or r % stride[0] or s % stride[1]:
            return sympy.S.Zero
        p, q = r // stride[0], s // stride[1]
        return g[f, p, q] if p < ho and q < wo else sympy.S.Zero

    dx = sympy.MutableDenseNDimArray.zeros(*shape)
    for c, i, j in _indices(shape):
        dx[c, i, j] = sympy.Add(
            *(
                dilated(f, i + u, j + v) * w[f, c, kh - 1 - u, kw - 1 - v]
                for f, u, v in _indices((filters, kh, kw))
            )
        )
    return dx


def im2col(x: sympy.NDimArray, kernel: Pair, stride: Pair, padding: Pair) -> sympy.Matrix:
    """The (C kh kw) x (Ho Wo) matrix of equation conv2d.im2col: row (c, u, v), column (p, q)."""
    channels, height, width = x.shape
    ho = output_size(height, kernel[0], stride[0], padding[0])
    wo = output_size(width, kernel[1], stride[1], padding[1])
    xp = _padded(x, padding)
    rows = _indices((channels, *kernel))
    cols = _indices((ho, wo))
    return sympy.Matrix(
        len(rows),
        len(cols),
        lambda r, k: xp(
            rows[r][0], stride[0] * cols[k][0] + rows[r][1], stride[1] * cols[k][1] + rows[r][2]
        ),
    )


def col2im(
    dcols: sympy.MatrixBase, shape: tuple[int, ...], kernel: Pair, stride: Pair, padding: Pair
) -> sympy.MutableDenseNDimArray:
    """Every entry of dcols added back to the input pixel it was copied from (the padding's
    entries dropped): the transpose of im2col."""
    channels, height, width = shape
    ho = output_size(height, kernel[0], stride[0], padding[0])
    wo = output_size(width, kernel[1], stride[1], padding[1])
    dx = sympy.MutableDenseNDimArray.zeros(*shape)
    rows = _indices((channels, *kernel))
    cols = _indices((ho, wo))
    for r, (c, u, v) in enumerate(rows):
        for k, (p, q) in enumerate(cols):
            i, j = stride[0] * p + u - padding[0], stride[1] * q + v - padding[1]
            if 0 <= i < height and 0 <= j < width:
                dx[c, i, j] += dcols[r, k]
    return dx


def _matrix_row(values: Sequence[sympy.Expr]) -> sympy.ImmutableMatrix:
    return sympy.ImmutableMatrix([list(values)])


def _diff_all(loss: sympy.Expr, symbols: Sequence[sympy.Symbol]) -> sympy.ImmutableMatrix:
    return _matrix_row([sympy.diff(loss, s) for s in symbols])


def _pair_text(pair: tuple[int, int]) -> str:
    """``2`` for (2, 2), ``(2, 1)`` otherwise: rows first, as the spec writes it."""
    return str(pair[0]) if pair[0] == pair[1] else f"({pair[0]}, {pair[1]})"


def _conv_case(
    channels: int,
    size: tuple[int, int],
    filters: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> ConvCase:
    x = _image("x", (channels, *size))
    w = _image("w", (filters, channels, *kernel))
    b = [sympy.Symbol(f"b{f + 1}", real=True) for f in range(filters)]
    z = conv_forward(x, w, b, stride, padding)
    g = _image("g", z.shape)
    xs, ws, gs, zs = (_flat_entries(a) for a in (x, w, g, z))
    loss = sympy.Add(*(gi * zi for gi, zi in zip(gs, zs, strict=True)))  # g . z: the VJP
    derived = (
        ("dx", _diff_all(loss, xs)),
        ("dW", _diff_all(loss, ws)),
        ("db", _diff_all(loss, b)),
    )
    dx = _flat_entries(conv_grad_input(w, g, x.shape, stride, padding))
    full = _flat_entries(conv_grad_input_full(w, g, x.shape, stride, padding))
    cols = im2col(x, kernel, stride, padding)
    w_mat = sympy.Matrix(filters, channels * kernel[0] * kernel[1], ws)
    g_mat = sympy.Matrix(filters, len(gs) // filters, gs)
    z_mat = w_mat * cols + sympy.Matrix(filters, 1, b) * sympy.ones(1, cols.shape[1])
    formulas = (
        ("dx", _matrix_row(dx)),
        ("dW", _matrix_row(_flat_entries(conv_grad_kernel(x, g, kernel, stride, padding)))),
        (
            "db",
            _matrix_row(
                [sympy.Add(*(g[f, p, q] for p, q in _indices(z.shape[1:]))) for f in range(filters)]
            ),
        ),
        ("dx full convolution", _matrix_row(full)),
        ("forward im2col", _matrix_row(list(z_mat))),
        ("dW im2col", _matrix_row(list(g_mat * cols.T))),
        (
            "dx col2im",
            _matrix_row(_flat_entries(col2im(w_mat.T * g_mat, x.shape, kernel, stride, padding))),
        ),
    )
    derived += (
        ("dx full convolution", derived[0][1]),
        ("forward im2col", _matrix_row(zs)),
        ("dW im2col", derived[1][1]),
        ("dx col2im", derived[0][1]),
    )
    what = (
        f"{channels} channel{'s' if channels > 1 else ''}, {size[0]} x {size[1]} input, "
        f"{filters} filter{'s' if filters > 1 else ''} of {kernel[0]} x {kernel[1]}, "
        f"stride {_pair_text(stride)}, padding {_pair_text(padding)}"
    )
    return ConvCase(what, tuple(xs), tuple(gs), sympy.ImmutableMatrix(zs), derived, formulas)


def _window_cases(
    size: tuple[int, int], kernel: int, stride: int
) -> tuple[sympy.NDimArray, list[list[tuple[int, int, int]]], tuple[int, int, int]]:
    """(x, windows, output symbols...) of a 1-channel pooling instance."""
    x = _image("x", (1, *size))
    ho = output_size(size[0], kernel, stride, 0)
    wo = output_size(size[1], kernel, stride, 0)
    windows = [
        [(0, stride * p + u, stride * q + v) for u in range(kernel) for v in range(kernel)]
        for p, q in _indices((ho, wo))
    ]
    return x, windows, (1, ho, wo)


def _avg_case(size: tuple[int, int], kernel: int, stride: int) -> ConvCase:
    x, windows, shape = _window_cases(size, kernel, stride)
    g = _image("g", shape)
    xs, gs = _flat_entries(x), _flat_entries(g)
    out = [sympy.Add(*(x[k] for k in window)) / kernel**2 for window in windows]
    loss = sympy.Add(*(gi * yi for gi, yi in zip(gs, out, strict=True)))
    spread = {k: sympy.S.Zero for k in _indices(x.shape)}
    for gi, window in zip(gs, windows, strict=True):
        for k in window:
            spread[k] += gi / kernel**2
    formula = _matrix_row([spread[k] for k in _indices(x.shape)])
    what = (
        f"average pooling, {size[0]} x {size[1]} input, {kernel} x {kernel} kernel, stride {stride}"
    )
    return ConvCase(
        what,
        tuple(xs),
        tuple(gs),
        sympy.ImmutableMatrix(out),
        (("dx", _diff_all(loss, xs)),),
        (("dx", formula),),
    )


MAX_POOL_ORDERINGS = 4  # strict orderings of the instance's values (seeded), each proven


def _max_case(size: tuple[int, int], kernel: int, stride: int, ordering: int) -> ConvCase:
    """Max pooling with the values in one strict order, as a chain of positive steps.

    x_{pi(1)} = t_0, x_{pi(k+1)} = x_{pi(k)} + t_k with t_k > 0: SymPy's derivative of Max
    (Heaviside factors) then reduces to 0 or 1 for every value with that order; the code's
    rule -- the window's first maximum in row-major order takes g -- must give the same.
    Ties have no derivative; there the rule is PyTorch's convention, not a theorem.
    """
    x, windows, shape = _window_cases(size, kernel, stride)
    g = _image("g", shape)
    xs, gs = _flat_entries(x), _flat_entries(g)
    out = [sympy.Max(*(x[k] for k in window)) for window in windows]
    loss = sympy.Add(*(gi * yi for gi, yi in zip(gs, out, strict=True)))
    order = list(range(len(xs)))
    random.Random(ordering).shuffle(order)
    base = sympy.Symbol("t0", real=True)
    steps = [sympy.Symbol(f"t{k}", positive=True) for k in range(1, len(xs))]
    chain, value = {}, base
    for rank, position in enumerate(order):
        if rank:
            value = value + steps[rank - 1]
        chain[xs[position]] = value
    rank_of = {xs[position]: rank for rank, position in enumerate(order)}
    derived = _matrix_row([sympy.diff(loss, s).subs(chain) for s in xs])
    routed = {s: sympy.S.Zero for s in xs}
    for gi, window in zip(gs, windows, strict=True):
        values = [x[k] for k in window]
        best = max(range(len(values)), key=lambda k: (rank_of[values[k]], -k))
        routed[values[best]] += gi
    formula = _matrix_row([routed[s] for s in xs])
    what = (
        f"max pooling, {size[0]} x {size[1]} input, {kernel} x {kernel} kernel, stride "
        f"{stride}, values in order {ordering + 1} of {MAX_POOL_ORDERINGS}"
    )
    return ConvCase(
        what,
        tuple(xs),
        tuple(gs),
        sympy.ImmutableMatrix(out),
        (("dx", derived),),
        (("dx", formula),),
    )


def _flatten_case(shape: tuple[int, int, int]) -> ConvCase:
    x = _image("x", shape)
    xs = _flat_entries(x)  # C order: the flattened output
    g = [sympy.Symbol(f"g{k + 1}", real=True) for k in range(len(xs))]
    loss = sympy.Add(*(gi * yi for gi, yi in zip(g, xs, strict=True)))
    channels, height, width = shape
    back = [g[c * height * width + i * width + j] for c, i, j in _indices(shape)]
    what = f"flattening a {channels} x {height} x {width} input"
    return ConvCase(
        what,
        tuple(xs),
        tuple(g),
        sympy.ImmutableMatrix(xs),
        (("dx", _diff_all(loss, xs)),),
        (("dx", _matrix_row(back)),),
    )


_CONV_CASES: dict[str, Callable[[], list[ConvCase]]] = {
    "conv2d": lambda: [
        _conv_case(1, (3, 3), 1, (2, 2), (1, 1), (0, 0)),
        _conv_case(1, (3, 3), 1, (2, 2), (2, 2), (1, 1)),
        _conv_case(2, (3, 3), 2, (2, 2), (1, 1), (0, 0)),
        _conv_case(1, (4, 3), 1, (3, 2), (2, 1), (1, 0)),
    ],
    "max_pool2d": lambda: [
        *(_max_case((4, 4), 2, 2, k) for k in range(MAX_POOL_ORDERINGS // 2)),
        *(_max_case((3, 3), 2, 1, k) for k in range(MAX_POOL_ORDERINGS // 2, MAX_POOL_ORDERINGS)),
    ],
    "avg_pool2d": lambda: [_avg_case((4, 4), 2, 2), _avg_case((3, 3), 2, 1)],
    "flatten": lambda: [_flatten_case((2, 2, 3))],
}


@cache
def derive_conv_rule(kind: str) -> ConvRule:
    """Derive an image kind's backward rules on its instances and prove them (RuntimeError)."""
    if kind not in _CONV_CASES:
        raise ValueError(f"no derived rule for image kind {kind!r}; known: {', '.join(CONV_KINDS)}")
    start = time.perf_counter()
    cases = tuple(_CONV_CASES[kind]())
    for case in cases:
        for (name, derived), (other, formula) in zip(case.derived, case.formulas, strict=True):
            if name != other:  # pragma: no cover - the cases pair them by construction
                raise RuntimeError(f"{case.what}: {name} paired with {other}")
            check_equal(derived, formula, f"{case.what}: {name}")
    names = ", ".join(dict.fromkeys(name for case in cases for name, _ in case.formulas))
    shapes = list(dict.fromkeys(case.what.split(", values in order")[0] for case in cases))
    orders = (
        f", each with its values in {MAX_POOL_ORDERINGS // len(shapes)} strict orders"
        if kind == "max_pool2d"
        else ""
    )
    proof = (
        f"SymPy differentiated g . y on {len(cases)} instance{'s' if len(cases) > 1 else ''} "
        f"({'; '.join(shapes)}{orders}); {names} minus SymPy's derivative reduced "
        f"to 0 exactly, and at {NUMERIC_POINTS} rational points to {NUMERIC_DIGITS} digits."
    )
    return ConvRule(kind, cases, EQUATIONS[kind], proof, time.perf_counter() - start)
