"""Printers: SymPy expressions to NumPy source and to LaTeX (``_print_X`` methods only).

``NumPyKernelPrinter`` prints elementwise kernels for the generated module:
* every numeric constant becomes a Python float literal, so float32 arrays stay float32
  (a NumPy float64 scalar such as ``numpy.sqrt(2)`` would upcast them);
* ``Max``/``Min`` become nested ``numpy.maximum``/``numpy.minimum`` (the stock printer needs
  ``functools``);
* ``erf`` calls the module's own vectorized ``_erf`` (NumPy has none);
* symbols print as the array names given in ``names``;
* helper functions the printed code needs are collected in ``helpers``.
"""

from __future__ import annotations

from collections.abc import Mapping

import sympy
from sympy.printing.latex import LatexPrinter
from sympy.printing.numpy import NumPyPrinter


def floatify(expr: sympy.Expr) -> sympy.Expr:
    """Every non-integer numeric constant as a Float (printed as a Python float literal)."""
    return expr.replace(
        lambda e: isinstance(e, sympy.Expr) and e.is_number and not e.is_Integer and e.is_real,
        lambda e: sympy.Float(e, 17),
    )


class NumPyKernelPrinter(NumPyPrinter):
    def __init__(self, names: Mapping[sympy.Symbol, str] | None = None) -> None:
        super().__init__({"fully_qualified_modules": True, "allow_unknown_functions": False})
        self.names = dict(names or {})
        self.helpers: set[str] = set()

    def doprint(self, expr: object, assign_to: object = None) -> str:
        if isinstance(expr, sympy.Expr):
            expr = floatify(expr)
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
    return printer.doprint(expr), printer.helpers


def kernel_lines(
    exprs: list[sympy.Expr], names: Mapping[sympy.Symbol, str], temp: str = "t"
) -> tuple[list[str], list[str], set[str]]:
    """Statements (``t0 = ...``) shared by the expressions (per-kernel cse), and the results."""
    symbols = sympy.numbered_symbols(temp)
    replacements, reduced = sympy.cse(exprs, symbols=symbols, optimizations="basic")
    printer = NumPyKernelPrinter(names)
    lines = [f"{sym.name} = {printer.doprint(value)}" for sym, value in replacements]
    results = [printer.doprint(expr) for expr in reduced]
    return lines, results, printer.helpers


def latex(expr: sympy.Expr, names: Mapping[sympy.Symbol, str] | None = None) -> str:
    return LatexPrinter({"symbol_names": dict(names or {})}).doprint(expr)
