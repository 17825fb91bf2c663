"""Printers: SymPy expressions to NumPy source (``_print_X`` methods and in-place plans).

``NumPyKernelPrinter`` prints elementwise kernels for the generated module:
* every numeric constant becomes a Python float literal, so float32 arrays stay float32
  (a NumPy float64 scalar such as ``numpy.sqrt(2)`` would upcast them);
* ``Max``/``Min`` become nested ``numpy.maximum``/``numpy.minimum`` (the stock printer needs
  ``functools``);
* ``erf`` calls the module's own vectorized ``_erf`` (NumPy has none);
* ``stable_form`` first rewrites the sums that cancel in floating point into forms accurate to
  a few ulps: c(1 + erf(u)) as 2c Phi(sqrt(2) u) (the module's ``_ndtr``), c(1 - sigmoid(u)) as
  c exp(-softplus(u)), c(1 - tanh(u)^2) as 4c t/(1 + t)^2 with t = exp(-2|u|);
* symbols print as the array names given in ``names``;
* helper functions the printed code needs are collected in ``helpers``.
"""

from __future__ import annotations

from collections.abc import Mapping

import sympy
from sympy.printing.numpy import NumPyPrinter

from symbackprop.primitives import ndtr, sigmoid, softplus, with_dependencies


def floatify(expr: sympy.Expr, digits: int = 17, keep_rationals: bool = False) -> sympy.Expr:
    """Every non-integer numeric constant (sqrt(2), pi, 1/3) as a Float of ``digits`` digits.

    17 digits print as Python float literals; ``keep_rationals`` leaves exact fractions alone.
    """

    def constant(e: sympy.Basic) -> bool:
        if not (isinstance(e, sympy.Expr) and e.is_number and e.is_real):
            return False
        return not (e.is_Rational if keep_rationals else e.is_Integer)

    return expr.replace(constant, lambda e: sympy.Float(e.evalf(digits), digits))


def _stable_add(expr: sympy.Add) -> sympy.Expr:
    """One cancelling pair (a constant and k*erf(u), k*sigmoid(u) or k*tanh(u)**2) rewritten."""
    constant, terms = expr.as_coeff_Add()
    if constant == 0:
        return expr
    for term in sympy.Add.make_args(terms):
        k, core = term.as_coeff_Mul()
        if isinstance(core, sympy.erf) and constant == k:  # k (1 + erf u)
            u = core.args[0]
            return expr - term - constant + 2 * k * ndtr(sympy.sqrt(2) * u)
        if isinstance(core, sympy.erf) and constant == -k:  # -k (1 - erf u)
            u = core.args[0]
            return expr - term - constant - 2 * k * ndtr(-sympy.sqrt(2) * u)
        if isinstance(core, sigmoid) and constant == -k:  # -k (1 - sigmoid u)
            return expr - term - constant - k * sympy.exp(-softplus(core.args[0]))
        if (
            isinstance(core, sympy.Pow)
            and core.exp == 2
            and isinstance(core.base, sympy.tanh)
            and constant == -k
        ):  # -k (1 - tanh(u)**2) = -k sech(u)**2, without cosh's overflow
            t = sympy.exp(-2 * sympy.Abs(core.base.args[0]))
            return expr - term - constant - 4 * k * t / (1 + t) ** 2
    return expr


def stable_form(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` with the sums that cancel in floating point in an accurate form (see above)."""
    if not isinstance(expr, sympy.Basic):
        return expr
    return expr.replace(lambda e: isinstance(e, sympy.Add), _stable_add)


class NumPyKernelPrinter(NumPyPrinter):
    def __init__(self, names: Mapping[sympy.Symbol, str] | None = None) -> None:
        super().__init__({"fully_qualified_modules": True, "allow_unknown_functions": False})
        self.names = dict(names or {})
        self.helpers: set[str] = set()

    def doprint(self, expr: object, assign_to: object = None) -> str:
        if isinstance(expr, sympy.Expr):
            expr = floatify(stable_form(expr))
        return super().doprint(expr, assign_to)

    def _print_Symbol(self, expr: sympy.Symbol) -> str:
        return self.names.get(expr, expr.name)

    def _nested(self, func: str, args: tuple[sympy.Expr, ...]) -> str:
        code = self._print(args[0])
        for arg in args[1:]:
            code = f"numpy.{func}({code}, {self._print(arg)})"
        return code

    def _print_Max(self, expr: sympy.Max) -> str:
        return self._nested("maximum", expr.args)

    def _print_Min(self, expr: sympy.Min) -> str:
        return self._nested("minimum", expr.args)

    def _print_erf(self, expr: sympy.Expr) -> str:
        self.helpers.add("_erf")
        return f"_erf({self._print(expr.args[0])})"

    def _print_Heaviside(self, expr: sympy.Expr) -> str:
        return f"numpy.heaviside({self._print(expr.args[0])}, 0)"


def numpy_code(expr: sympy.Expr, names: Mapping[sympy.Symbol, str]) -> tuple[str, set[str]]:
    """One expression as NumPy source, and the helper functions it calls."""
    printer = NumPyKernelPrinter(names)
    code = printer.doprint(expr)
    return code, with_dependencies(printer.helpers)


# --- in-place statements: kernels that write into preallocated buffers ----------------------

# ufuncs of one argument, by SymPy class name
_UNARY = {
    "exp": "exp", "log": "log", "sin": "sin", "cos": "cos", "tan": "tan", "sinh": "sinh",
    "cosh": "cosh", "tanh": "tanh", "asin": "arcsin", "acos": "arccos", "atan": "arctan",
    "asinh": "arcsinh", "acosh": "arccosh", "atanh": "arctanh", "Abs": "absolute",
    "sign": "sign", "expm1": "expm1",
}  # fmt: skip

# several ufunc calls; {x} is the argument, {t} the target (never the argument's buffer)
_RECIPES = {
    "relu": ["numpy.maximum({x}, 0.0, out={t})"],
    # step(x) = max(sign(x), 0), with step(0) = 0: ~7x faster than numpy.heaviside
    "step": ["numpy.sign({x}, out={t})", "numpy.maximum({t}, 0.0, out={t})"],
    "Heaviside": ["numpy.sign({x}, out={t})", "numpy.maximum({t}, 0.0, out={t})"],
    "softplus": ["numpy.logaddexp(0.0, {x}, out={t})"],
    # leaky_relu(x) = max(x, 0.01 x) and elu(x) = max(x, expm1(min(x, 0))): both exact
    "leaky_relu": ["numpy.multiply({x}, 0.01, out={t})", "numpy.maximum({x}, {t}, out={t})"],
    "elu": [
        "numpy.minimum({x}, 0.0, out={t})",
        "numpy.expm1({t}, out={t})",
        "numpy.maximum({x}, {t}, out={t})",
    ],
    # sigmoid(x) = exp(-log(1 + exp(-x))): no overflow for any finite x
    "sigmoid": [
        "numpy.negative({x}, out={t})",
        "numpy.logaddexp(0.0, {t}, out={t})",
        "numpy.negative({t}, out={t})",
        "numpy.exp({t}, out={t})",
    ],
}


class InplacePlan:
    """Statements computing an elementwise expression into ``out`` with ufunc ``out=`` calls.

    Intermediate results go to scratch buffers named ``<prefix>0``, ``<prefix>1``, ... (the
    caller preallocates ``count`` of them, each of the kernel's shape), so that evaluating the
    kernel allocates no array.  Operations NumPy has no ufunc for (``erf``) fall back to an
    assignment from the allocating printer.
    """

    def __init__(self, names: Mapping[sympy.Symbol, str], prefix: str) -> None:
        self.names = dict(names)
        self.prefix = prefix
        self.count = 0
        self.lines: list[str] = []
        self.helpers: set[str] = set()
        self._held: set[str] = set()

    def _temp(self) -> str:
        name = f"{self.prefix}{self.count}"
        self.count += 1
        return name

    def _is_temp(self, name: str) -> bool:
        return name.startswith(self.prefix) and name not in self._held

    def _number(self, value: sympy.Expr) -> str:
        number = float(value)
        return repr(number) if number >= 0 else f"({number!r})"

    def operand(self, expr: sympy.Expr) -> str:
        """The name of a buffer or a scalar literal holding ``expr``'s value."""
        if expr.is_Symbol:
            return self.names[expr]
        if expr.is_number:
            return self._number(expr)
        return self.compute(expr, None)

    def _target(self, dest: str | None, children: list[str], reuse: bool) -> str:
        if dest is not None:
            return dest
        if reuse:
            for child in children:
                if self._is_temp(child):
                    return child
        return self._temp()

    def compute(self, expr: sympy.Expr, dest: str | None) -> str:
        name = type(expr).__name__
        if isinstance(expr, sympy.Add):
            return self._fold(expr.args, "add", dest, negate_with="subtract")
        if isinstance(expr, sympy.Mul):
            coeff, rest = expr.as_coeff_Mul()
            if coeff == -1:
                inner = self.operand(rest)
                target = self._target(dest, [inner], True)
                self.lines.append(f"numpy.negative({inner}, out={target})")
                return target
            return self._fold(expr.args, "multiply", dest)
        if isinstance(expr, sympy.Pow):
            return self._power(expr, dest)
        if name in _UNARY:
            arg = self.operand(expr.args[0])
            target = self._target(dest, [arg], True)
            self.lines.append(f"numpy.{_UNARY[name]}({arg}, out={target})")
            return target
        if name in _RECIPES and len(expr.args) == 1:
            arg = self.operand(expr.args[0])
            # the target may be the argument's own buffer when only the first step reads it
            single = all("{x}" not in step for step in _RECIPES[name][1:])
            target = self._target(dest if dest != arg else None, [arg], single)
            self.lines.extend(step.format(x=arg, t=target) for step in _RECIPES[name])
            return target
        if isinstance(expr, (sympy.Max, sympy.Min)):
            func = "maximum" if isinstance(expr, sympy.Max) else "minimum"
            return self._fold(expr.args, func, dest)
        return self._fallback(expr, dest)

    def _fold(
        self, args: tuple, func: str, dest: str | None, negate_with: str | None = None
    ) -> str:
        """a op b op c ... into one target; ``negate_with`` handles -x terms of a sum."""
        terms = sorted(args, key=lambda a: (a.is_number, sympy.default_sort_key(a)))
        pieces = []
        for term in terms:
            if negate_with and isinstance(term, sympy.Mul) and term.as_coeff_Mul()[0] == -1:
                pieces.append((negate_with, self.operand(-term)))
            else:
                pieces.append((func, self.operand(term)))
        target = dest
        if target is None:
            # write into a temporary child's buffer when one exists: it goes first, so it is
            # read before it is overwritten
            reusable = [i for i, (op, p) in enumerate(pieces) if op == func and self._is_temp(p)]
            if reusable:
                pieces.insert(0, pieces.pop(reusable[0]))
                target = pieces[0][1]
            else:
                target = self._temp()
        positive = [i for i, (op, _) in enumerate(pieces) if op == func]
        if positive:
            pieces.insert(0, pieces.pop(positive[0]))
            current = pieces[0][1]
        else:  # every term negated: start from -first
            self.lines.append(f"numpy.negative({pieces[0][1]}, out={target})")
            current = target
        for op, piece in pieces[1:]:
            self.lines.append(f"numpy.{op}({current}, {piece}, out={target})")
            current = target
        if current != target:
            self.lines.append(f"numpy.copyto({target}, {current})")
        return target

    def _power(self, expr: sympy.Pow, dest: str | None) -> str:
        base, exponent = expr.args
        arg = self.operand(base)
        target = self._target(dest, [arg], True)
        if exponent == 2:
            self.lines.append(f"numpy.square({arg}, out={target})")
        elif exponent == -1:
            self.lines.append(f"numpy.divide(1.0, {arg}, out={target})")
        elif exponent == -2:
            self.lines.append(f"numpy.square({arg}, out={target})")
            self.lines.append(f"numpy.divide(1.0, {target}, out={target})")
        elif exponent == sympy.S.Half:
            self.lines.append(f"numpy.sqrt({arg}, out={target})")
        elif exponent == -sympy.S.Half:
            self.lines.append(f"numpy.sqrt({arg}, out={target})")
            self.lines.append(f"numpy.divide(1.0, {target}, out={target})")
        else:
            power = self.operand(exponent)
            self.lines.append(f"numpy.power({arg}, {power}, out={target})")
        return target

    def _fallback(self, expr: sympy.Expr, dest: str | None) -> str:
        printer = NumPyKernelPrinter(self.names)
        code = printer.doprint(expr)
        self.helpers |= with_dependencies(printer.helpers)
        target = dest or self._temp()
        self.lines.append(f"{target}[...] = {code}")
        return target


def inplace_statements(
    expr: sympy.Expr, names: Mapping[sympy.Symbol, str], out: str, prefix: str
) -> tuple[list[str], int, set[str]]:
    """(statements, scratch buffers needed, helpers) that write ``expr`` into ``out``.

    Shared subexpressions (``cse``) are computed once into scratch buffers that stay live
    until the result is written.
    """
    plan = InplacePlan(names, prefix)
    stable = floatify(stable_form(expr))
    replacements, (reduced,) = sympy.cse([stable], symbols=sympy.numbered_symbols("_c"))
    for symbol, value in replacements:
        if value.is_Symbol or value.is_number:
            plan.names[symbol] = plan.operand(value)
            continue
        buffer = plan.compute(value, None)
        plan._held.add(buffer)
        plan.names[symbol] = buffer
    if reduced.is_Symbol or reduced.is_number:
        plan.lines.append(f"numpy.copyto({out}, {plan.operand(reduced)})")
    else:
        plan.compute(reduced, out)
    return plan.lines, plan.count, plan.helpers
