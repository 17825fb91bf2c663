"""SymPy functions for the kinks and the numerically delicate activations.

Why not plain SymPy: ``Max(0, x)`` differentiates to ``Heaviside(x)`` with SymPy's
``Heaviside(0) = 1/2`` (PyTorch and symbackprop use ReLU'(0) = 0), ``Piecewise`` nests into
conditions NumPy cannot run, and ``1/(1 + exp(-x))`` overflows for x = -1e4.  Each function
here carries its own derivative (``fdiff``), exact value at numbers (``eval``), LaTeX, a
NumPy spelling that is stable for every finite input, and, where it is smooth, a rewrite
into ``exp``/``log`` so that independent witnesses can differentiate the textbook form.

Conventions: step(0) = 0, so relu'(0) = 0 and leaky_relu'(0) = slope (PyTorch's).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import sympy
from mpmath.libmp import prec_to_dps
from sympy import Function, Rational, exp, log
from sympy.printing.printer import Printer

LEAKY_SLOPE = Rational(1, 100)


class _Helpers(Mapping[str, str]):
    """Helper name -> its source; the ones in numpy_erf.py are read when first asked for.

    Their source is that of the tested functions themselves (``inspect.getsource``), which
    imports NumPy and tokenizes the file (together 0.2 s CPU): a kernel without erf never
    pays for it.
    """

    def __init__(self, sources: dict[str, str], from_numpy_erf: tuple[str, ...]) -> None:
        self._sources = dict(sources)
        self._names = (*sources, *from_numpy_erf)

    def __getitem__(self, name: str) -> str:
        if name not in self._sources and name in self._names:
            import inspect

            from symbackprop import numpy_erf

            self._sources[name] = inspect.getsource(getattr(numpy_erf, name))
        return self._sources[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names


# NumPy helper functions the generated module defines when a kernel uses them.  Each is
# stable for every finite input and keeps the dtype of its argument (float32 stays float32).
# NumPy has no erf: the generated module carries its own, vectorized (numpy_erf.py).
NUMPY_HELPERS: Mapping[str, str] = _Helpers(
    {
        "_stable_sigmoid": (
            "def _stable_sigmoid(x):\n"
            "    # exp(-log(1 + exp(-x))): never overflows, exact in both tails\n"
            "    return numpy.exp(-numpy.logaddexp(0, -x))\n"
        ),
    },
    ("_erf", "_ndtr"),
)
# helpers that call other helpers
HELPER_NEEDS: dict[str, tuple[str, ...]] = {"_ndtr": ("_erf",)}


def with_dependencies(helpers: set[str]) -> set[str]:
    """``helpers`` and every helper they call."""
    result = set(helpers)
    for helper in helpers:
        result.update(HELPER_NEEDS.get(helper, ()))
    return result


class _Primitive(Function):
    """An elementwise function of one argument with a NumPy spelling and a LaTeX name."""

    latex_name = ""

    @classmethod
    def numpy_template(cls) -> str:
        raise NotImplementedError

    def _numpycode(self, printer: Printer) -> str:
        arg = printer._print(self.args[0])
        helpers = getattr(printer, "helpers", None)
        template = self.numpy_template()
        if helpers is not None:
            helpers.update(
                with_dependencies({name for name in NUMPY_HELPERS if f"{name}(" in template})
            )
        return template.format(x=arg)

    def _latex(self, printer: Printer, exp: object = None) -> str:
        body = rf"{self.latex_name}\left({printer._print(self.args[0])}\right)"
        return rf"{body}^{{{exp}}}" if exp is not None else body

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real


class step(_Primitive):
    """The unit step with step(0) = 0 (the derivative of ReLU, PyTorch's convention)."""

    latex_name = r"\operatorname{step}"

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_extended_positive:
            return sympy.S.One
        if x.is_extended_nonpositive:
            return sympy.S.Zero
        return None

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return sympy.S.Zero  # zero almost everywhere; the kink is a convention, not a delta

    @classmethod
    def numpy_template(cls) -> str:
        return "numpy.heaviside({x}, 0)"


class relu(_Primitive):
    """max(0, x) with relu'(0) = 0."""

    latex_name = r"\operatorname{ReLU}"

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_extended_nonnegative:
            return x
        if x.is_extended_negative:
            return sympy.S.Zero
        return None

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return step(self.args[0])

    @classmethod
    def numpy_template(cls) -> str:
        return "numpy.maximum({x}, 0)"


class leaky_relu(_Primitive):
    """x for x > 0, slope·x otherwise (slope 0.01), with derivative slope at 0."""

    latex_name = r"\operatorname{LeakyReLU}"

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_extended_nonnegative:
            return x
        if x.is_extended_negative:
            return LEAKY_SLOPE * x
        return None

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return LEAKY_SLOPE + (1 - LEAKY_SLOPE) * step(self.args[0])

    @classmethod
    def numpy_template(cls) -> str:
        return "numpy.where({x} > 0, {x}, 0.01*{x})"


class elu(_Primitive):
    """x for x > 0, exp(x) - 1 otherwise (alpha = 1)."""

    latex_name = r"\operatorname{ELU}"

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_extended_nonnegative:
            return x
        if x.is_extended_negative:
            return exp(x) - 1
        return None

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        # exp(min(x, 0)): 1 for x > 0 and exp(x) otherwise, never exp of a large positive
        # number, and accurate to an ulp for x -> -inf, where 1 + elu(x) = 1 + expm1(x) would
        # cancel (all digits lost below x = -37).
        return exp(sympy.Min(self.args[0], 0))

    @classmethod
    def numpy_template(cls) -> str:
        return "numpy.where({x} > 0, {x}, numpy.expm1(numpy.minimum({x}, 0)))"


class sigmoid(_Primitive):
    """The logistic function 1 / (1 + exp(-x))."""

    latex_name = r"\sigma"

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_Number:
            return 1 / (1 + exp(-x))
        if x.could_extract_minus_sign():
            return 1 - cls(-x)  # sigma(-x) = 1 - sigma(x): lets SymPy cancel BCE to yhat - y
        return None

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return self * (1 - self)

    def _eval_rewrite_as_exp(self, x: sympy.Expr, **kwargs: object) -> sympy.Expr:
        return 1 / (1 + exp(-x))

    @classmethod
    def numpy_template(cls) -> str:
        return "_stable_sigmoid({x})"


class softplus(_Primitive):
    """log(1 + exp(x)), evaluated without overflow."""

    latex_name = r"\operatorname{softplus}"

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_Number:
            return log(1 + exp(x))
        return None

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return sigmoid(self.args[0])

    def _eval_rewrite_as_exp(self, x: sympy.Expr, **kwargs: object) -> sympy.Expr:
        return log(1 + exp(x))

    _eval_rewrite_as_log = _eval_rewrite_as_exp

    @classmethod
    def numpy_template(cls) -> str:
        return "numpy.logaddexp(0, {x})"


class expm1(_Primitive):
    """exp(x) - 1, evaluated without cancellation for small x (NumPy's expm1)."""

    latex_name = ""

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_Number:
            return exp(x) - 1
        return None

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return exp(self.args[0])

    def _eval_rewrite_as_exp(self, x: sympy.Expr, **kwargs: object) -> sympy.Expr:
        return exp(x) - 1

    def _latex(self, printer: Printer, exp: object = None) -> str:
        body = rf"\left(e^{{{printer._print(self.args[0])}}} - 1\right)"
        return rf"{body}^{{{exp}}}" if exp is not None else body

    def _eval_evalf(self, prec: int) -> sympy.Expr:
        return (exp(self.args[0]) - 1).evalf(prec_to_dps(prec))

    @classmethod
    def numpy_template(cls) -> str:
        return "numpy.expm1({x})"


class ndtr(_Primitive):
    """The standard normal CDF (1 + erf(x/sqrt(2)))/2, a code-only spelling.

    ``printing.stable_form`` writes c*(1 + erf(u)) as 2c*ndtr(sqrt(2)*u) before printing
    NumPy code, so that the generated module calls ``_ndtr``, accurate in the lower tail where
    1 + erf cancels; documents keep SymPy's erf form.
    """

    latex_name = r"\Phi"

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        x = self.args[0]
        return exp(-(x**2) / 2) / sympy.sqrt(2 * sympy.pi)

    def _eval_rewrite_as_erf(self, x: sympy.Expr, **kwargs: object) -> sympy.Expr:
        return (1 + sympy.erf(x / sympy.sqrt(2))) / 2

    def _eval_evalf(self, prec: int) -> sympy.Expr:
        return (sympy.erfc(-self.args[0] / sympy.sqrt(2)) / 2).evalf(prec_to_dps(prec))

    @classmethod
    def numpy_template(cls) -> str:
        return "_ndtr({x})"


PRIMITIVES: tuple[type[_Primitive], ...] = (
    step,
    relu,
    leaky_relu,
    elu,
    sigmoid,
    softplus,
)


def to_textbook_form(expr: sympy.Expr) -> sympy.Expr:
    """The same function with the smooth primitives spelled out in exp/log.

    Used by the independent witnesses, so that SymPy's own differentiation rules (not the
    ``fdiff`` above) produce their derivatives.  The kinks (step, relu, leaky_relu, elu)
    stay: they have no smooth closed form.
    """
    # only the primitive node itself: rewrite(exp) would also turn sin(x) into exp(I*x)
    return expr.replace(
        lambda e: isinstance(e, (sigmoid, softplus)),
        lambda e: e._eval_rewrite_as_exp(*e.args),
    )
