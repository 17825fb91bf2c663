"""The chain rule, layer by layer: the derivation as a frozen value.

For every layer the activation's derivative comes from ``sympy.diff`` of its expression and
is rewritten through the activation's output a = f(z) where a validated rewrite exists
(sigmoid' = a(1 - a), tanh' = 1 - a^2).  The output error dL/dz_L is derived by SymPy from
the loss: for an elementwise output, as d l(f(z), y)/dz after putting log f and log(1 - f)
in overflow-free form (so sigmoid + binary cross-entropy becomes sigmoid(z) - y); for a
softmax output, through the softmax Jacobian dyhat_j/dz_k = yhat_j (delta_jk - yhat_k) (derived
and checked here), which gives dL/dz_k = q_k - yhat_k sum_j q_j with q = yhat * dl/dyhat (so
softmax + cross-entropy becomes yhat_k sum_j y_j - y_k).  The rest is the matrix recursion
delta_l = (W_{l+1}^T delta_{l+1}) * f_l'(z_l), dL/dW_l = delta_l a_{l-1}^T, dL/db_l = delta_l,
whose cost is linear in depth and independent of width.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import sympy

from symbackprop import rules
from symbackprop.expressions import degree, expansion_terms, simplify, tree_size
from symbackprop.forms import teacher_latex
from symbackprop.functions import ACTIVATIONS, YHAT, A, Activation, Loss, X, Y
from symbackprop.graph import SymbolicNetwork, build
from symbackprop.layers import LAYERS
from symbackprop.lazy import lazy
from symbackprop.primitives import (
    NUMPY_HELPERS,
    expm1,
    sigmoid,
    softplus,
    step,
    to_textbook_form,
)
from symbackprop.printing import inplace_statements, numpy_code
from symbackprop.spec import NetworkSpec

# the float64 checks of the printed kernels only: a derivation of the built-in activations
# (tabulated below) and of softmax outputs needs no NumPy
np = lazy("numpy")

Z = sympy.Symbol("z", real=True)
P = sympy.Symbol("p", real=True)  # softmax probability yhat
LP = sympy.Symbol("logp", real=True)  # log yhat, computed as a max-shifted log-softmax

# Clean-up budgets (operation counts): past them a step is skipped, never timed out.
# expand/factor of (x + sin(x) + exp(x) + 1)**99 and factor of an x-tower ran for hours;
# simplify's trigsimp took 15 s on the 20-operation derivative of Max(x**100, sin(x)).
TIDY_MAX_NODES = 600  # tree nodes of the expression being tidied
EXPAND_MAX_TERMS = 500  # estimated terms of its expansion
FACTOR_MAX_DEGREE = 40
SIMPLIFY_MAX_OPS = 60
SIMPLIFY_MAX_DEGREE = 16

_KIND_PREFIXES = tuple(kind for kind in LAYERS if kind != "dense")  # the registry's

# Every equation's number is the same in every network, so that a handout can cite it: the
# output error is always (6).  A network without softmax has no (3), and the layer kinds'
# equations are numbered from 11 on in the registry's order, whether a network uses them or
# not.  All activations share (5), one row each.
CORE_KEYS = (
    "forward.linear",
    "forward.activation",
    "forward.softmax",
    "loss",
    "activation",
    "delta.output",
    "delta.hidden",
    "grad.W",
    "grad.b",
    "update",
)
NUMBERS: dict[str, int] = {key: n for n, key in enumerate(CORE_KEYS, start=1)} | {
    key: n
    for n, key in enumerate(
        (key for kind in LAYERS for key, _, _ in rules.EQUATIONS.get(kind, ())),
        start=len(CORE_KEYS) + 1,
    )
}
_SAMPLE_POINTS = [sympy.Rational(k, 4) for k in range(-20, 21)] + [sympy.Rational(1, 1000)]


@dataclass(frozen=True)
class ActivationDerivative:
    """f, f' from sympy.diff (in z), the textbook form's derivative, and f' through a."""

    activation: Activation
    f: sympy.Expr  # f(z)
    derivative: sympy.Expr  # f'(z) = sympy.diff(f, z)
    textbook: sympy.Expr  # d/dz of the exp/log form (what a student differentiates by hand)
    through_output: sympy.Expr | None  # h(a) with h(f(z)) = f'(z), validated; None if none found

    @property
    def uses_output(self) -> bool:
        return self.through_output is not None


@dataclass(frozen=True)
class OutputRule:
    """The loss and dL/dz for the last layer, per sample and output, before the batch mean.

    elementwise: ``loss`` and ``delta`` are expressions in Z (logit), A (output) and Y.
    softmax: ``loss`` and ``q`` are expressions in P, LP (= log P) and Y, and
    dL/dz_k = q_k - p_k * sum_j q_j.
    """

    softmax: bool
    loss: sympy.Expr
    delta: sympy.Expr | None = None  # elementwise only
    q: sympy.Expr | None = None  # softmax only
    generic_delta: sympy.Expr | None = None  # elementwise: dl/dyhat * f'(z), before simplifying


@dataclass(frozen=True)
class Equation:
    number: int
    key: str
    title: str
    latex: str


@dataclass(frozen=True)
class Derivation:
    network: SymbolicNetwork
    # one per layer in numbering order: dense layers' activation derivatives (the softmax
    # layer's is trivial), None for the other kinds
    layers: tuple[ActivationDerivative | None, ...]
    output: OutputRule
    equations: tuple[Equation, ...]

    def number(self, key: str) -> int:
        """The number of the equation ``key`` (``activation.<name>``: the activations' (5))."""
        if key.startswith("activation."):
            key = "activation"
        if not self.has(key):
            raise KeyError(key)
        return NUMBERS[key]

    @property
    def cited(self) -> tuple[int, ...]:
        """The equation numbers the generated module cites in its comments (sorted).

        codegen cites nothing else (tests/test_golden.py reads them back from the module's
        text), so the document can say which equations the code implements without
        generating it.
        """
        keys = ["forward.linear", "forward.activation", "loss", "delta.output", "update"]
        keys += ["grad.W", "grad.b"]
        if self.network.output.softmax:
            keys.append("forward.softmax")
        if self.network.depth > 1:
            keys.append("delta.hidden")
        out = self.network.output_layer.index
        for index, d in enumerate(self.layers, start=1):
            if d is None or index == out:
                continue
            if (d.through_output if d.uses_output else d.derivative) != 1:
                keys.append(f"activation.{d.activation.name}")
        keys += list(self.kind_keys)
        return tuple(sorted({self.number(key) for key in keys}))

    @property
    def kind_keys(self) -> tuple[str, ...]:
        """Keys of the equations the layer kinds other than dense contribute."""
        return tuple(e.key for e in self.equations if e.key.split(".")[0] in _KIND_PREFIXES)

    def has(self, key: str) -> bool:
        return any(e.key == key for e in self.equations)

    def _repr_markdown_(self) -> str:
        """The numbered core equations for Jupyter (the full document: render.render_markdown)."""
        spec = self.network.spec
        sizes = "-".join(map(str, spec.sizes))
        lines = [f"**Backpropagation for `{spec.name}`** ({sizes}, loss `{spec.loss.name}`)", ""]
        for e in self.equations:
            lines += [f"{e.title}:", "", "$$", rf"{e.latex} \tag{{{e.number}}}", "$$", ""]
        return "\n".join(lines)

    def _repr_latex_(self) -> str:
        lines = [rf"\text{{({e.number}) {e.title}:}}\quad {e.latex}" for e in self.equations]
        return "$\\begin{array}{l}" + r"\\ ".join(lines) + r"\end{array}$"


# --- activations -----------------------------------------------------------------------------


def _simplest(*candidates: sympy.Expr) -> sympy.Expr:
    # ties keep the earliest candidate: the raw derivative, whose form reads through a
    return min(candidates, key=sympy.count_ops)


def _expand(expr: sympy.Expr) -> sympy.Expr:
    """sympy.expand, or ``expr`` itself when the expansion would exceed the budget."""
    if tree_size(expr, TIDY_MAX_NODES) > TIDY_MAX_NODES:
        return expr
    if expansion_terms(expr, EXPAND_MAX_TERMS) > EXPAND_MAX_TERMS:
        return expr
    return sympy.expand(expr)


def _factor(expr: sympy.Expr) -> sympy.Expr:
    """sympy.factor, or ``expr`` itself past the size or degree budget."""
    if tree_size(expr, TIDY_MAX_NODES) > TIDY_MAX_NODES or degree(expr) > FACTOR_MAX_DEGREE:
        return expr
    return sympy.factor(expr)


def _tidy(expr: sympy.Expr) -> sympy.Expr:
    """The shortest of ``expr``, its expansion, factorization and (small ones) simplification.

    Each clean-up runs only within an operation budget (never a clock), so the result is
    the same on any machine: past it the step is skipped and ``expr`` stays as it is.
    """
    candidates = [expr, _expand(expr), _factor(expr)]
    if (
        tree_size(expr, TIDY_MAX_NODES) <= TIDY_MAX_NODES
        and sympy.count_ops(expr) < SIMPLIFY_MAX_OPS
        and degree(expr) <= SIMPLIFY_MAX_DEGREE
    ):
        candidates.append(simplify(expr))
    return _simplest(*candidates)


def _agrees(left: sympy.Expr, right: sympy.Expr) -> bool:
    """Equal at every sample point (both sides of the kinks) to 1e-12 relative."""
    for point in _SAMPLE_POINTS:
        a = complex(left.xreplace({Z: point}).evalf(30))
        b = complex(right.xreplace({Z: point}).evalf(30))
        if not (math.isfinite(abs(a)) and math.isfinite(abs(b))):
            return False
        if abs(a - b) > 1e-12 * max(1.0, abs(b)):
            return False
    return True


# f' through a is used only where it is as accurate as f' in z: at the sample points and far
# into both tails, the float64 kernel as printed (from a = f(z) as the forward pass computes
# it) must be within ACCURACY (relative) of the truth wherever that is a normal float.
ACCURACY = 1e-13
# The accuracy search evaluates every candidate in 30 digits at the tail points: past this
# many tree nodes a derivative is printed in z as derived (a count, never a clock).
ACCURACY_MAX_NODES = 200
_TAIL_POINTS = (
    [sympy.Integer(sign * v) for v in (50, 40, 30, 20, 10, 5, 2) for sign in (-1, 1)]
    + [sympy.Rational(sign * k, 4) for k in (1, 3, 5) for sign in (-1, 1)]
    + [sympy.Rational(sign, 10**8) for sign in (-1, 1)]
)
_TINY = 1e-300  # below this a true value counts as underflow: the kernel must give ~0 there
_SLOW = ("exp", "log", "cosh", "sinh", "tanh", "_ndtr", "_erf", "power", "sin", "cos", "arc")


def _kernel(expr: sympy.Expr) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The float64 NumPy kernel of ``expr`` in z and a, exactly as the module prints it."""
    code, helpers = numpy_code(expr, {Z: "z", A: "a", Y: "y"})
    namespace: dict = {"numpy": np.module}
    for helper in sorted(helpers):
        exec(NUMPY_HELPERS[helper], namespace)  # our own helper source
    # printed from a validated expression, never from user text
    return eval(f"lambda z, a, y=0.0: {code}", namespace)


def _cost(expr: sympy.Expr) -> int:
    """Passes over the array, a transcendental one counted as 5."""
    lines, _, _ = inplace_statements(expr, {Z: "Z", A: "A", Y: "Y"}, "G", "T")
    return sum(5 if any(name in line for name in _SLOW) else 1 for line in lines)


def _occurrences(expr: sympy.Expr, f: sympy.Expr) -> int:
    return 1 if expr == f else sum(_occurrences(arg, f) for arg in expr.args)


def _substitutions(expr: sympy.Expr, f: sympy.Expr, limit: int = 4) -> list[sympy.Expr]:
    """``expr`` with every nonempty subset of its occurrences of f written as A."""
    n = _occurrences(expr, f)
    if n == 0:
        return []
    if n > limit:
        return [expr.xreplace({f: A})]
    out = []
    for mask in range(2**n - 1, 0, -1):  # all of them first
        counter = iter(range(n))

        def rebuild(e: sympy.Basic, mask: int = mask, counter: object = counter) -> sympy.Basic:
            if e == f:
                return A if mask >> next(counter) & 1 else e
            return e.func(*(rebuild(arg) for arg in e.args)) if e.args else e

        out.append(rebuild(expr))
    return out


def _max_error(
    candidate: sympy.Expr,
    forward: Callable,
    zs: np.ndarray,
    truth: list[float],
    ys: np.ndarray | float = 0.0,
) -> float:
    """The largest relative error of ``candidate``'s float64 kernel at zs (inf: unusable)."""
    try:
        with np.errstate(all="ignore"):
            got = np.broadcast_to(_kernel(candidate)(zs, forward(zs, zs), ys), zs.shape)
    except (ArithmeticError, TypeError, ValueError, NameError, KeyError):
        return math.inf
    worst = 0.0
    for value, true in zip(got.tolist(), truth, strict=True):
        if not math.isfinite(value):
            return math.inf
        if abs(true) < _TINY:
            error = 0.0 if abs(value) < 2 * _TINY else math.inf
        else:
            error = abs(value - true) / abs(true)
        worst = max(worst, error)
    return worst


def _true_values(
    derivative: sympy.Expr, points: list[sympy.Expr], y: sympy.Expr = sympy.S.Zero
) -> list[float] | None:
    """f'(z) at the exact points, to 30 digits (SymPy's evalf handles the cancellations)."""
    values = []
    for point in points:
        value = complex(derivative.xreplace({Z: point, Y: y}).evalf(30))
        if value.imag != 0 or not math.isfinite(value.real):
            return None
        values.append(value.real)
    return values


def _through_output(act: Activation, f: sympy.Expr, derivative: sympy.Expr) -> sympy.Expr | None:
    """h(a) with h(f(z)) = f'(z), when one is equal and as accurate as the z form, and cheaper.

    Candidates: the registry's hint and f' with some or all of its occurrences of f(z) written
    as a.  Each must equal f' (30 digits at the sample points) and its printed float64 kernel
    must be accurate to ACCURACY at the sample points and out to |z| = 50; of those and of f'
    in z (when it is accurate itself), the cheapest is used, a form through a on a tie.
    """
    if not derivative.free_symbols - {Z}:
        if Z not in derivative.free_symbols:
            return derivative
    else:
        return None
    if tree_size(derivative, ACCURACY_MAX_NODES) > ACCURACY_MAX_NODES:
        return None
    candidates = []
    if act.via_output_hint is not None:
        candidates.append(act.via_output_hint)
    if f != Z:
        candidates.extend(_substitutions(derivative, f))
    candidates = [_tidy(c) for c in candidates if A in c.free_symbols]
    if not candidates:
        return None
    points = _TAIL_POINTS
    truth = _true_values(derivative, points)
    if truth is None:
        return None
    zs = np.array([float(p) for p in points])
    forward = _kernel(f)
    accurate = [c for c in candidates if _max_error(c, forward, zs, truth) <= ACCURACY]
    in_z = _cost(derivative) if _max_error(derivative, forward, zs, truth) <= ACCURACY else None
    for best in sorted(accurate, key=_cost):  # stable: the earliest candidate on a tie
        if in_z is not None and in_z < _cost(best):
            return None
        if _agrees(best.xreplace({A: f}), derivative):
            return best
    return None


def derive_in_full(act: Activation) -> tuple[sympy.Expr, sympy.Expr | None]:
    """f'(z) from sympy.diff, tidied, and f' through a (``_through_output``): the work."""
    f = act.expr.xreplace({X: Z})
    # Max/Min/abs in custom activations differentiate to Heaviside, whose H(0) = 1/2;
    # symbackprop's convention is step(0) = 0 (ReLU'(0) = 0, as in PyTorch).
    derivative = _tidy(sympy.diff(f, Z).replace(sympy.Heaviside, lambda arg, *_: step(arg)))
    return derivative, _through_output(act, f, derivative)


def _leaky(u: sympy.Expr) -> sympy.Expr:
    """factor's (99 u + 1)/100, the number left outside (SymPy would distribute it)."""
    return sympy.Mul(sympy.Rational(1, 100), 99 * u + 1, evaluate=False)


def _gelu() -> sympy.Expr:
    root2 = sympy.sqrt(2)
    return (
        root2 * Z * sympy.exp(-(Z**2) / 2) / (2 * sympy.sqrt(sympy.pi))
        + sympy.erf(root2 * Z / 2) / 2
        + sympy.Rational(1, 2)
    )


# ``derive_in_full`` of each built-in activation, as it gives them, node for node: the
# through-a search evaluates every candidate's float64 kernel (NumPy) and its exact value
# (30 digits) at the tail points, 0.02-0.3 s CPU per activation and NumPy's import, for
# results that never change.  tests/test_derive_table.py derives each entry again and
# compares the trees node by node, so that a change to the derivation that changes one fails
# there, printing the new tree.  Each is built when first asked for.
_BUILT_IN: dict[str, Callable[[], tuple[sympy.Expr, sympy.Expr | None]]] = {
    "identity": lambda: (sympy.S.One, sympy.S.One),
    "relu": lambda: (step(Z), step(A)),
    "leaky_relu": lambda: (_leaky(step(Z)), _leaky(step(A))),
    "sigmoid": lambda: ((1 - sigmoid(Z)) * sigmoid(Z), A * (1 - sigmoid(Z))),
    "tanh": lambda: (1 - sympy.tanh(Z) ** 2, None),
    "softplus": lambda: (sigmoid(Z), -expm1(-A)),
    "elu": lambda: (sympy.exp(sympy.Min(0, Z)), None),
    "gelu": lambda: (_gelu(), None),
    "silu": lambda: ((1 - Z * (sigmoid(Z) - 1)) * sigmoid(Z), None),
    "softmax": lambda: (sympy.S.One, sympy.S.One),
}


def built_in_derivative(act: Activation) -> tuple[sympy.Expr, sympy.Expr | None] | None:
    """f'(z) and f' through a of a built-in registry entry, from the table; None for any
    other activation (custom, or a built-in with parameters of its own)."""
    build = _BUILT_IN.get(act.name)
    if build is None or ACTIVATIONS.get(act.name) is not act:
        return None
    return build()


@lru_cache(maxsize=256)
def derive_activation(act: Activation) -> ActivationDerivative:
    f = act.expr.xreplace({X: Z})
    # as a student would write it by hand: simplify() turns swish' into cosh(z/2) forms
    textbook = sympy.diff(to_textbook_form(f), Z).replace(
        sympy.Heaviside, lambda arg, *_: step(arg)
    )
    derivative, through = built_in_derivative(act) or derive_in_full(act)
    return ActivationDerivative(act, f, derivative, textbook, through)


# --- stable forms for the printed kernels ----------------------------------------------------


def stable_form(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` with the known overflow-prone patterns in their stable forms (real arguments).

    Custom expressions are taken as written, and written forms overflow where the built-ins
    do not: log(1 + exp(u)) is inf for u > 709 (softplus is finite), its derivative
    exp(u)/(1 + exp(u)) is inf/inf = nan, log(cosh(u)) is inf for |u| > 710.  The rewrites,
    each an identity for real u (tests/test_stable_rewrites.py proves them):

    * log(1 + exp(u)) -> softplus(u)
    * log(cosh(u)) -> |u| + softplus(-2|u|) - log 2
    * log(sigmoid(u)) -> -softplus(-u);  log(1 - sigmoid(u)) -> -softplus(u)
    * exp(m u) / (1 + exp(u))**n -> sigmoid(u)**m (1 - sigmoid(u))**(n - m), 0 <= m <= n
      (so exp(u)/(1 + exp(u)) and 1/(1 + exp(-u)) are sigmoid(u))

    Applied to what the generated module computes (codegen); the document keeps the form
    the user wrote.  Built-in kernels contain none of these patterns and print unchanged.
    """
    memo: dict[sympy.Basic, sympy.Basic] = {}

    def walk(node: sympy.Basic) -> sympy.Basic:
        if not node.args:
            return node
        if node not in memo:
            rewritten = _stable_rule(node, walk)
            if rewritten is None:
                args = tuple(walk(arg) for arg in node.args)
                rewritten = node.func(*args) if args != node.args else node
            memo[node] = rewritten
        return memo[node]

    return walk(expr)


def _one_plus_exp(expr: sympy.Basic) -> sympy.Expr | None:
    """u when ``expr`` is 1 + exp(u), else None."""
    if expr.is_Add and len(expr.args) == 2 and sympy.S.One in expr.args:
        (other,) = (arg for arg in expr.args if arg != sympy.S.One)
        if isinstance(other, sympy.exp):
            return other.args[0]
    return None


def _stable_rule(
    node: sympy.Basic, walk: Callable[[sympy.Basic], sympy.Basic]
) -> sympy.Expr | None:
    if isinstance(node, sympy.log):
        arg = node.args[0]
        u = _one_plus_exp(arg)
        if u is not None:
            return softplus(walk(u))
        if isinstance(arg, sympy.cosh):
            size = sympy.Abs(walk(arg.args[0]))
            return size + softplus(-2 * size) - sympy.log(2)
        if isinstance(arg, sigmoid):
            return -softplus(-walk(arg.args[0]))
        if arg.is_Add and len(arg.args) == 2 and sympy.S.One in arg.args:
            (other,) = (a for a in arg.args if a != sympy.S.One)
            if other.is_Mul and other.args[0] == -1 and isinstance(other.args[1], sigmoid):
                if len(other.args) == 2:
                    return -softplus(walk(other.args[1].args[0]))
        return None
    if node.is_Pow and node.exp.is_Integer and node.exp < 0:
        u = _one_plus_exp(node.base)
        if u is not None:
            return (1 - sigmoid(walk(u))) ** int(-node.exp)
        return None
    if node.is_Mul:
        factors = list(node.args)
        for i, factor in enumerate(factors):
            if not (factor.is_Pow and factor.exp.is_Integer and factor.exp < 0):
                continue
            u = _one_plus_exp(factor.base)
            if u is None:
                continue
            n = int(-factor.exp)
            for j, partner in enumerate(factors):
                if j == i or not isinstance(partner, sympy.exp):
                    continue
                # exp(m u) with m u built by SymPy (a number times a sum distributes)
                m = next((k for k in range(1, n + 1) if partner.args[0] == k * u), None)
                if m is not None:
                    rest = [f for k, f in enumerate(factors) if k not in (i, j)]
                    s_u = sigmoid(walk(u))
                    return s_u**m * (1 - s_u) ** (n - m) * walk(sympy.Mul(*rest))
        return None
    return None


# --- the output layer ------------------------------------------------------------------------


def _stable_loss_in_logit(act: Activation, loss: Loss) -> sympy.Expr:
    """l(f(z), y) with log f and log(1 - f) replaced by overflow-free forms of z."""
    expr = loss.expr
    if act.log_output is not None:
        expr = expr.subs(sympy.log(YHAT), act.log_output.xreplace({X: Z}))
    if act.log_one_minus_output is not None:
        expr = expr.subs(sympy.log(1 - YHAT), act.log_one_minus_output.xreplace({X: Z}))
    return expr.xreplace({YHAT: act.expr.xreplace({X: Z})})


def _through(expr: sympy.Expr, f: sympy.Expr) -> sympy.Expr:
    """Write f(z) as the layer output A wherever it occurs (A is already computed)."""
    return expr if f == Z else expr.xreplace({f: A})


def _output_delta(f: sympy.Expr, raw: sympy.Expr) -> sympy.Expr:
    """dl/dz in the form the module computes: the cheapest accurate one, preferring a.

    Candidates are SymPy's forms of dl/dz, each also with some or all of its occurrences of
    f(z) written as the output a.  Their printed float64 kernels are compared with the exact
    dl/dz at the tail points for the target y = -7 (far from a, so that a - y does not
    cancel; a form through a such as tanh + mse's (a - y)(1 - a^2) is 0 for |z| > 19, where
    the true value is not), and must not overflow at |z| = 1e4.  When none is accurate to
    ACCURACY, the most accurate is used.
    """
    forms = list(dict.fromkeys((raw, _expand(raw), _factor(raw), _tidy(raw))))
    if f == Z or tree_size(raw, ACCURACY_MAX_NODES) > ACCURACY_MAX_NODES:
        return _simplest(*forms)
    through = [_through(e, f) for e in forms]
    partial = [p for e in forms for p in _substitutions(e, f)]
    in_a = [e for e in through if Z not in e.free_symbols]
    candidates = list(dict.fromkeys(in_a + partial + forms))
    zs = np.array([float(p) for p in _TAIL_POINTS])
    forward = _kernel(f)
    truth = _true_values(raw, _TAIL_POINTS, sympy.Integer(-7))
    if truth is None:
        return _simplest(*candidates)
    huge = np.array([-1e4, -1e3, 1e3, 1e4])
    scores = {}
    for c in candidates:
        scores[c] = _max_error(c, forward, zs, truth, -7.0)
        try:  # the module must not overflow where the mathematics is finite (cosh(1e3))
            with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
                _kernel(c)(huge, forward(huge, huge), -7.0)
        except (ArithmeticError, ValueError):
            scores[c] = math.inf
    accurate = [c for c in candidates if scores[c] <= ACCURACY]
    if accurate:
        return min(accurate, key=lambda c: (_cost(c), sympy.count_ops(c)))
    return min(candidates, key=lambda c: (scores[c], _cost(c)))


@lru_cache(maxsize=256)
def derive_output(act: Activation, loss: Loss) -> OutputRule:
    if act.softmax:
        logged = loss.expr.subs(sympy.log(YHAT), LP)
        q = _tidy(YHAT * sympy.diff(loss.expr, YHAT))
        return OutputRule(
            softmax=True,
            loss=logged.xreplace({YHAT: P}),
            q=q.subs(sympy.log(YHAT), LP).xreplace({YHAT: P}),
        )
    f = act.expr.xreplace({X: Z})
    in_logit = _stable_loss_in_logit(act, loss)
    generic = sympy.diff(loss.expr, YHAT).xreplace({YHAT: f}) * sympy.diff(f, Z)
    raw = sympy.diff(in_logit, Z)
    delta = _output_delta(f, raw)
    return OutputRule(
        softmax=False,
        loss=_through(in_logit, f),
        delta=delta,
        generic_delta=generic,
    )


def softmax_jacobian_check(n: int = 3) -> sympy.Matrix:
    """SymPy's Jacobian of softmax for n outputs, verified equal to diag(p) - p p^T."""
    z = sympy.symbols(f"z1:{n + 1}", real=True)
    total = sum(sympy.exp(zi) for zi in z)
    p = [sympy.exp(zi) / total for zi in z]
    jacobian = sympy.Matrix(n, n, lambda j, k: sympy.diff(p[j], z[k]))
    rule = sympy.Matrix(n, n, lambda j, k: p[j] * ((1 if j == k else 0) - p[k]))
    if (jacobian - rule).applyfunc(simplify) != sympy.zeros(n, n):  # pragma: no cover
        raise RuntimeError(f"SymPy's softmax Jacobian for n = {n} is not diag(p) - p p^T")
    return jacobian


# --- equations -------------------------------------------------------------------------------


def _kind_rows(net: SymbolicNetwork, part: str) -> list[tuple[str, str, str]]:
    """The equations of the layer kinds other than dense that the network uses."""
    kinds = {layer.kind for layer in net.flat}
    used = [kind for kind in LAYERS if kind != "dense" and kind in kinds]
    rows = []
    for kind in used:
        for key, title, tex in rules.kind_equations(kind):
            is_forward = key.endswith((".forward", ".inference", ".im2col"))
            if (part == "forward") == is_forward:
                rows.append((key, title, tex))
    return rows


def _equations(
    net: SymbolicNetwork, layers: tuple[ActivationDerivative, ...], out: OutputRule
) -> tuple[Equation, ...]:
    rows: list[tuple[str, str, str]] = [
        (
            "forward.linear",
            "pre-activation",
            r"z^{(l)} = W^{(l)} a^{(l-1)} + b^{(l)},\quad a^{(0)} = x",
        ),
        ("forward.activation", "activation", r"a^{(l)} = f_l\left(z^{(l)}\right)"),
    ]
    if net.output.softmax:
        rows.append(
            (
                "forward.softmax",
                "softmax output",
                r"\hat y_k = \frac{e^{z^{(L)}_k}}{\sum_j e^{z^{(L)}_j}},\quad "
                r"\log \hat y_k = z^{(L)}_k - \max_j z^{(L)}_j"
                r" - \log \sum_j e^{z^{(L)}_j - \max_i z^{(L)}_i}",
            )
        )
    rows += _kind_rows(net, "forward")
    l2 = r" + \frac{\lambda}{2}\sum_l \lVert W^{(l)} \rVert^2" if net.spec.l2 else ""
    rows.append(
        (
            "loss",
            "loss (batch mean)",
            r"L = \frac{1}{B} \sum_{s=1}^{B} \sum_k \ell\left(\hat y_{sk}, y_{sk}\right)"
            rf"{l2},\quad "
            rf"\ell(\hat y, y) = "
            + teacher_latex(net.loss.expr, {YHAT: r"\hat y", Y: "y"}, prefer=(YHAT, Y)),
        )
    )
    activations = _activation_rows(layers)
    if activations:
        rows.append(
            (
                "activation",
                "derivatives of the activations",
                r",\quad ".join(
                    rf"f_{{\mathrm{{{_tex_name(n)}}}}}'(z) = {b}" for n, b in activations
                ),
            )
        )
    if out.softmax:
        if out.q is None:  # pragma: no cover - derive_output always sets it for softmax
            raise RuntimeError("a softmax output rule without q")
        rows.append(
            (
                "delta.output",
                "output error (softmax)",
                r"\delta^{(L)}_k = q_k - \hat y_k \sum_j q_j,\quad "
                r"q = \hat y \odot \frac{\partial \ell}{\partial \hat y} = "
                + teacher_latex(out.q, {P: r"\hat y", LP: r"\log \hat y", Y: "y"}, prefer=(P, Y)),
            )
        )
    else:
        if out.delta is None:  # pragma: no cover - derive_output always sets it
            raise RuntimeError("an elementwise output rule without delta")
        rows.append(
            (
                "delta.output",
                "output error",
                r"\delta^{(L)} = \frac{\partial \ell}{\partial z^{(L)}} = "
                + _output_delta_tex(net, out.delta),
            )
        )
    rows += _kind_rows(net, "backward")
    rows += [
        (
            "delta.hidden",
            "error recursion",
            r"\delta^{(l)} = \left(W^{(l+1)\top} \delta^{(l+1)}\right)"
            r" \odot f_l'\left(z^{(l)}\right)"
            if net.plain
            else r"\delta^{(l)} = \frac{\partial \ell}{\partial a^{(l)}}"
            r" \odot f_l'\left(z^{(l)}\right),\quad"
            r" \frac{\partial \ell}{\partial a^{(l)}} = \sum_{c \,\text{reads}\, a^{(l)}}"
            r" \frac{\partial \ell}{\partial a^{(l)}}\Big|_{c},\quad"
            r" \text{dense } c:\ W^{(c)\top} \delta^{(c)}",
        ),
        (
            "grad.W",
            "weight gradient",
            r"\frac{\partial L}{\partial W^{(l)}} = "
            r"\frac{1}{B}\sum_s \delta^{(l)}_s a^{(l-1)\top}_s"
            + (r" + \lambda W^{(l)}" if net.spec.l2 else ""),
        ),
        (
            "grad.b",
            "bias gradient",
            r"\frac{\partial L}{\partial b^{(l)}} = \frac{1}{B}\sum_s \delta^{(l)}_s",
        ),
        (
            "update",
            "gradient descent",
            r"\theta \leftarrow \theta - \eta \frac{\partial L}{\partial \theta}",
        ),
    ]
    return tuple(Equation(NUMBERS[key], key, title, tex) for key, title, tex in rows)


def _activation_rows(layers: tuple[ActivationDerivative | None, ...]) -> list[tuple[str, str]]:
    """(name, LaTeX of f'(z)) per distinct elementwise activation, in layer order."""
    rows: list[tuple[str, str]] = []
    for d in layers:
        if d is None or d.activation.softmax:
            continue
        name = d.activation.name
        if any(name == seen for seen, _ in rows):
            continue
        body = teacher_latex(d.derivative, {Z: "z"})
        if d.through_output is not None and d.through_output != d.derivative:
            through = teacher_latex(d.through_output, {Z: "z", A: "a"}, prefer=((A, d.f),))
            body += rf" = {through}\ \text{{with }} a = f(z)"
        rows.append((name, body))
    return rows


def _output_delta_tex(net: SymbolicNetwork, delta: sympy.Expr) -> str:
    """The output error in the teacher's form: through a = f(z), the target y after it."""
    f = net.output.expr.xreplace({X: Z})
    prefer = (Z, Y) if f == Z else ((A, f), Y)
    return teacher_latex(delta, {Z: "z", A: "a", Y: "y"}, prefer=prefer)


def _tex_name(name: str) -> str:
    """An activation's name inside \\mathrm{}: underscores escaped, parameters dropped."""
    return name.split("(")[0].replace("_", r"\_")


def derive(spec_or_network: NetworkSpec | SymbolicNetwork) -> Derivation:
    """The whole derivation for a spec (validating it) or an already built network."""
    net = (
        spec_or_network if isinstance(spec_or_network, SymbolicNetwork) else build(spec_or_network)
    )
    layers = tuple(None if act is None else derive_activation(act) for act in net.activations)
    out = derive_output(net.output, net.loss)
    return Derivation(net, layers, out, _equations(net, layers, out))
