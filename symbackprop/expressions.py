"""The safe parser for user expression strings.

Contract: ``parse_expression(text, field, variables)`` turns a user string (a custom
activation in ``x``, a custom loss in ``yhat`` and ``y``, the ``chain``/``descent`` EXPR)
into a SymPy expression, or raises ``InputError(field, problem)`` with a one-line problem.
No other exception escapes for any ``str`` input.

Why not ``sympify``/``parse_expr``: both executed an injected file write in our tests
(notes/sympy_feasibility.md, Q7).  Here the string is parsed by ``ast.parse`` only, checked
against a whitelist, and the whitelisted tree is converted to SymPy by walking it: nothing
from the string is ever evaluated by Python.

The language: numbers (int and float literals, scientific notation), the variables, the
constants ``pi`` and ``E``, ``+ - * / **``, unary ``-``/``+``, parentheses and calls to
exp, log, sqrt, sin, cos, tan, sinh, cosh, tanh, asin, acos, atan, asinh, atanh, erf, abs,
Max, Min (two or more arguments) and the symbackprop primitives sigmoid, softplus, relu.

Numbers are exact: an int literal becomes ``Integer``, a float literal the ``Rational`` of
its decimal text (``0.01`` -> ``1/100``, ``1e-3`` -> ``1/1000``), and ``1/2`` stays
``Rational(1, 2)``.  Exactness lets the certificate's exact witness mean what it says and
keeps ``0.1`` from turning into ``0.1000000000000000055...``; printing shows ``x/100``.

Limits (each against a denial of service, not a taste): at most 500 characters and 200
expression nodes; functions and powers nested at most 50 deep (the derivative of a tower
``x**x**...**x`` grows with the square of its height); a constant exponent may not contain
``**`` and its numbers are at most 100 (``x**9**9**9`` is refused, ``x**(1/3)`` and ``2**x``
are fine); the effective degree, with nested powers multiplied out (``(x**100)**100`` is
``x**10000``), at most 1000; exact numbers have at most 100 digits (SymPy factors big
integers inside sqrt and log); with ``variables=None`` a name must not be a SymPy name
(``I``, ``N``, ``beta``, ...) so printed results read back.  Every limit is a count, never
a clock, so the same input is accepted or refused whatever the machine's load.

With explicit ``variables`` (a spec's custom activation or loss, which become NumPy code)
the expression must also be real-valued for real variables: a constant with an imaginary
part (``asin(2)``, ``atanh(3)``, ``sqrt(-x**2)`` = i|x|), a negative constant to a variable
power (``(-1)**x``) and a ``Min``/``Max`` that cannot compare its arguments are refused.
``chain``/``descent`` (``variables=None``) accept complex constants: they only print them.

Beside the parser, the counts the clean-up budgets are measured in (``degree``,
``tree_size``, ``expansion_terms``) and ``simplify``: SymPy's own, without the import of
SymPy's unit systems it would make.
"""

from __future__ import annotations

import ast
import builtins
import decimal
import math
import re
import sys
import types
import warnings
from collections.abc import Callable, Sequence

import sympy

from symbackprop.errors import InputError
from symbackprop.primitives import relu, sigmoid, softplus

MAX_LENGTH = 500
MAX_NODES = 200
MAX_NAME_LENGTH = 30
# Literal numbers inside a constant exponent: x**100 is fine, x**1000 is a typo or an attack.
MAX_EXPONENT_LITERAL = 100
# A constant exponent after evaluation (x**(100*100) passes the literal rule).
MAX_EXPONENT_VALUE = 1000
# Exact numbers: SymPy factors integers inside sqrt/log/powers, which took 105 s for a
# 10,000-digit number and about a second for 400-digit rationals; 100 digits stay instant.
MAX_DIGITS = 100
MAX_BITS = int(MAX_DIGITS * math.log2(10)) + 1
# Functions and powers nested inside each other: sympy.diff of 99 nested sin took 3 s and
# of a 100-high x-tower 8 s (its derivative has ~n**2/2 terms); 50 keeps both well under 1 s.
MAX_NESTING = 50
# The polynomial degree once nested powers merge ((x**100)**2 is x**200): the same bound
# as a single exponent, which the nesting otherwise bypassed ((x**100)**100 ran for hours).
MAX_DEGREE = MAX_EXPONENT_VALUE

_UNARY: dict[str, Callable[[sympy.Expr], sympy.Expr]] = {
    "exp": sympy.exp,
    "log": sympy.log,
    "sqrt": sympy.sqrt,
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tan": sympy.tan,
    "sinh": sympy.sinh,
    "cosh": sympy.cosh,
    "tanh": sympy.tanh,
    "asin": sympy.asin,
    "acos": sympy.acos,
    "atan": sympy.atan,
    "asinh": sympy.asinh,
    "atanh": sympy.atanh,
    "erf": sympy.erf,
    "abs": sympy.Abs,
    "sigmoid": sigmoid,
    "softplus": softplus,
    "relu": relu,
}
_VARIADIC: dict[str, Callable[..., sympy.Expr]] = {"Max": sympy.Max, "Min": sympy.Min}
FUNCTIONS: tuple[str, ...] = tuple(_UNARY) + tuple(_VARIADIC)
CONSTANTS: dict[str, sympy.Expr] = {"pi": sympy.pi, "E": sympy.E}

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Names that sympify reads as something other than a Symbol (I, N, S, beta, gamma, ...).
# Free variables are printed back as text (chain's last line), which must round-trip.
_SYMPY_NAMES = frozenset(sympy.__all__)

_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Pow: "**",
}
_OTHER_BINOPS: dict[type[ast.operator], str] = {
    ast.Mod: "%",
    ast.FloorDiv: "//",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitAnd: "&",
}
# Contexts and operator tokens are attributes of a node, not parts of the expression.
_UNCOUNTED = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)

# Why each forbidden construct is named: the message should tell the user what they wrote.
_FORBIDDEN: tuple[tuple[type[ast.AST], str], ...] = (
    (ast.Attribute, "attribute access is not allowed"),
    (ast.Subscript, "subscripts (indexing) are not allowed"),
    (ast.Lambda, "lambda is not allowed"),
    (ast.IfExp, "conditional expressions (a if c else b) are not allowed"),
    (ast.Compare, "comparisons are not allowed"),
    (ast.BoolOp, "'and'/'or' are not allowed"),
    (ast.ListComp, "comprehensions are not allowed"),
    (ast.SetComp, "comprehensions are not allowed"),
    (ast.DictComp, "comprehensions are not allowed"),
    (ast.GeneratorExp, "comprehensions are not allowed"),
    (ast.JoinedStr, "strings are not allowed"),
    (ast.FormattedValue, "strings are not allowed"),
    (ast.Starred, "starred arguments are not allowed"),
    (ast.NamedExpr, "assignment (:=) is not allowed"),
    (ast.Await, "await is not allowed"),
    (ast.Yield, "yield is not allowed"),
    (ast.YieldFrom, "yield is not allowed"),
    (ast.Slice, "subscripts (indexing) are not allowed"),
    (ast.List, "lists are not allowed"),
    (ast.Tuple, "tuples are not allowed"),
    (ast.Set, "sets are not allowed"),
    (ast.Dict, "dicts are not allowed"),
)


def check_variable_name(name: str, field: str) -> str:
    """``name`` if it can be a free variable (chain --var, descent --start), else InputError.

    A free variable is an ASCII identifier of at most 30 characters, not starting with
    ``_``, and not a function, constant or other SymPy name (so that printed results can be
    read back by ``sympify``).
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InputError(field, f"{name!r} is not a valid variable name (letters, digits, _)")
    if name.startswith("_"):
        raise InputError(field, f"names starting with '_' are not allowed: {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise InputError(field, f"variable name longer than {MAX_NAME_LENGTH} characters")
    if name in _UNARY or name in _VARIADIC or name in CONSTANTS:
        raise InputError(field, f"{name!r} is a function or constant, not a variable name")
    if name in _SYMPY_NAMES:
        raise InputError(field, f"{name!r} is a reserved SymPy name; choose another variable name")
    return name


def parse_expression(text: str, field: str, variables: Sequence[str] | None = None) -> sympy.Expr:
    """The SymPy expression of ``text``; ``InputError(field, ...)`` for anything else.

    ``variables``: the allowed variable names, each becoming a plain ``Symbol``; ``None``
    accepts any valid free-variable name (see ``check_variable_name``).
    """
    tree = _parse_tree(text, field)
    _check_tree(tree, field, variables)
    _attach_sources(tree, text.strip())
    try:
        expr = _Converter(field, variables).convert(tree.body)
    except InputError:
        raise
    except RecursionError:
        raise InputError(field, "expression is nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - a SymPy failure is still the user's input
        problem = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(field, f"could not build the expression: {problem}") from None
    if not isinstance(expr, sympy.Expr):
        raise InputError(field, "not a scalar expression")
    if expr.has(sympy.zoo, sympy.oo, -sympy.oo, sympy.nan):
        raise InputError(field, "the expression is undefined or infinite (division by zero?)")
    if expr.has(sympy.I):
        raise InputError(field, "the expression is complex (e.g. sqrt of a negative number)")
    if degree(expr) > MAX_DEGREE:
        raise InputError(
            field, f"degree too high: nested powers multiply to more than {MAX_DEGREE}"
        )
    if variables is not None:
        check_real(expr, field)
    return expr


def _fold(expr: sympy.Basic, measure: Callable[[sympy.Basic, dict], int]) -> int:
    """The largest ``measure(node, memo)`` over the nodes of ``expr``, children first.

    A post-order walk without recursion (deep trees stay off the C stack); ``memo`` holds
    each child's measure when its parent is measured, and shared parts are measured once.
    """
    memo: dict[sympy.Basic, int] = {}
    worst = 0
    stack: list[tuple[sympy.Basic, bool]] = [(expr, False)]
    while stack:
        node, ready = stack.pop()
        if node in memo:
            continue
        if not ready and node.args:
            stack.append((node, True))
            stack.extend((arg, False) for arg in node.args if arg not in memo)
            continue
        memo[node] = value = measure(node, memo)
        worst = max(worst, value)
    return worst


def degree(expr: sympy.Expr) -> int:
    """The largest polynomial degree in ``expr``, function calls counted as variables.

    Nested powers multiply ((x**100)**3 has degree 300) and a product adds its factors'
    degrees; each function's argument is measured on its own (sin(x**50)**3 has degree 50).
    Only the numerator of a rational exponent counts: x**(100/3) costs SymPy what x**100 does.
    """

    def measure(node: sympy.Basic, memo: dict) -> int:
        if node.is_Symbol or (isinstance(node, sympy.Function) and not node.is_number):
            return 1
        if node.is_number:
            return 0
        if node.is_Add:
            return max(memo[a] for a in node.args)
        if node.is_Mul:
            return sum(memo[a] for a in node.args)
        if node.is_Pow and node.exp.is_Rational:
            return memo[node.base] * max(abs(node.exp.p), 1)
        if node.is_Pow:
            return max(memo[node.base], memo[node.exp], 1)
        return max((memo[a] for a in node.args), default=0)

    return _fold(expr, measure)


def tree_size(expr: sympy.Basic, cap: int) -> int:
    """The number of nodes of ``expr`` as a tree (shared parts counted each time), up to ``cap``.

    Stops counting at ``cap`` + 1, so that measuring a huge derivative costs no more than
    the budget it is measured against.
    """
    count = 0
    stack = [expr]
    while stack and count <= cap:
        node = stack.pop()
        count += 1
        stack.extend(node.args)
    return count


def expansion_terms(expr: sympy.Basic, cap: int) -> int:
    """An upper estimate of the terms ``sympy.expand`` makes of the largest part of ``expr``.

    A sum adds its terms, a product multiplies them, (t terms)**n gives C(t + n - 1, n);
    a function call is one term (its argument is estimated on its own).  Capped at ``cap`` + 1.
    """

    def measure(node: sympy.Basic, memo: dict) -> int:
        if node.is_Add:
            value = sum(memo[a] for a in node.args)
        elif node.is_Mul:
            value = math.prod(memo[a] for a in node.args)
        elif node.is_Pow and node.exp.is_Integer and node.exp > 0:
            terms, n = memo[node.base], int(node.exp)
            value = math.comb(min(terms, cap + 1) + n - 1, n) if terms > 1 else 1
        else:
            value = 1
        return min(value, cap + 1)

    return _fold(expr, measure)


# --- simplify, without loading SymPy's unit systems ----------------------------------------


class _NoQuantity(sympy.Basic):
    """Never made: what ``simplify`` looks for while sympy.physics.units is not loaded."""


_NO_UNITS = types.SimpleNamespace(Quantity=_NoQuantity)
_UNITS = "sympy.physics.units"


def _import(
    name: str,
    globals: dict | None = None,
    locals: dict | None = None,
    fromlist: Sequence[str] | None = (),
    level: int = 0,
) -> types.ModuleType | types.SimpleNamespace:
    """``__import__``, except ``from sympy.physics.units import Quantity`` while that module
    is not loaded: no expression can hold a Quantity then, so nothing is one."""
    if name == _UNITS and tuple(fromlist or ()) == ("Quantity",) and name not in sys.modules:
        return _NO_UNITS
    return builtins.__import__(name, globals, locals, fromlist, level)


def _without_units(function: Callable) -> Callable:
    """``function`` (SymPy's ``simplify``) run with its own module's names, except that its
    recursion calls the copy and its import of sympy.physics.units is ``_import``'s."""
    code = getattr(function, "__code__", None)
    if code is None or code.co_freevars or hasattr(function, "__wrapped__"):
        return function  # not the plain function this expects: SymPy's own, unchanged
    names = dict(function.__globals__)
    names["__builtins__"] = {**vars(builtins), "__import__": _import}
    copy = types.FunctionType(code, names, function.__name__, function.__defaults__)
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__doc__ = function.__doc__
    names[function.__name__] = copy
    return copy


_simplify = _without_units(sympy.simplify)


def simplify(expr: sympy.Expr) -> sympy.Expr:
    """``sympy.simplify(expr)``, the same result, without importing sympy.physics.units.

    SymPy's simplify ends by looking for physical quantities, ``from sympy.physics.units
    import Quantity``, and that import builds SymPy's unit systems: 0.2-0.35 s CPU, a sixth
    of ``symbackprop codegen`` and a quarter of ``symbackprop chain``.  This runs SymPy's own
    code object (``_without_units``), so every step and every choice is SymPy's; only that
    import is answered with a class no expression is an instance of, and only while the
    module is not loaded (an expression holding a Quantity implies it is).  SymPy functions
    that simplify on their own (``log``'s, ``Piecewise``'s) call SymPy's simplify, which may
    then load the units: the result is the same either way.
    """
    return _simplify(expr)


def check_real(expr: sympy.Expr, field: str) -> None:
    """InputError unless ``expr`` (plain symbols) is real-valued for real values of them.

    Refused: a constant with an imaginary part (``asin(2)``), which SymPy keeps unevaluated
    and NumPy code cannot hold; a negative constant to a variable power (``(-1)**x``); and a
    Min/Max whose arguments cannot be compared once the variables are real.
    """
    real = {s: sympy.Symbol(s.name, real=True) for s in expr.free_symbols}
    try:
        over_real = expr.xreplace(real)
    except (ValueError, TypeError) as exc:  # Min/Max: "The argument ... is not comparable."
        problem = " ".join(str(exc).split())[:120]
        raise InputError(
            field, f"the expression is not real-valued for real variables ({problem})"
        ) from None
    culprit = _complex_part(over_real)
    if culprit is not None:
        if culprit.is_Atom:  # I alone: show where it came from (sqrt(-x**2) is I*|x|)
            culprit = over_real
        text = sympy.sstr(culprit.xreplace({r: s for s, r in real.items()}))
        if len(text) > 60:
            text = text[:57] + "..."
        raise InputError(field, f"the expression is not real-valued for real variables ({text})")


def _complex_part(expr: sympy.Expr) -> sympy.Expr | None:
    """The first constant with an imaginary part, or (-c)**f(x), in ``expr``; else None."""
    walk = sympy.preorder_traversal(expr)
    for node in walk:
        if not isinstance(node, sympy.Expr):
            continue
        if node.is_number:
            walk.skip()
            if node.has(sympy.I) or node.is_extended_real is False:
                return node
            if node.is_Atom or node.is_extended_real:
                continue
            try:
                value = complex(node.evalf(15))
            except (TypeError, ValueError, ArithmeticError):
                return node
            if value.imag != 0 and abs(value.imag) > 1e-13 * max(1.0, abs(value.real)):
                return node
        elif node.is_Pow and node.base.is_number and node.base.is_extended_negative:
            return node
    return None


def _parse_tree(text: str, field: str) -> ast.Expression:
    if not isinstance(text, str):
        raise InputError(field, f"expected an expression string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise InputError(field, f"expression longer than {MAX_LENGTH} characters ({len(text)})")
    for column, char in enumerate(text, start=1):
        if not (char.isascii() and (char.isprintable() or char in " \t")):
            hint = "; use '-'" if char in "\u2212\u2013\u2014" else ""
            hint = "; use '*'" if char in "\u00b7\u00d7\u22c5" else hint
            raise InputError(field, f"character {char!r} at column {column} is not allowed{hint}")
    stripped = text.strip()
    if not stripped:
        raise InputError(field, "empty expression")
    try:
        # Python warns about things like invalid escapes in string literals; those strings
        # are rejected below anyway, and a CLI should not print compiler warnings.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(stripped, mode="eval")
    except SyntaxError as exc:
        column = max(exc.offset or 1, 1) + (len(text) - len(text.lstrip()))
        raise InputError(field, f"syntax error at column {column}") from None
    except (ValueError, RecursionError, MemoryError):
        raise InputError(field, "expression could not be parsed (too deeply nested?)") from None


def _check_tree(tree: ast.Expression, field: str, variables: Sequence[str] | None) -> None:
    """The whitelist walk: reject every node outside the expression language."""
    nodes = [node for node in ast.walk(tree) if not isinstance(node, _UNCOUNTED)]
    if len(nodes) > MAX_NODES + 1:  # + the Expression root
        raise InputError(field, f"expression too large (more than {MAX_NODES} parts)")
    if _nesting(tree.body) > MAX_NESTING:
        raise InputError(field, f"functions and powers nested more than {MAX_NESTING} deep")
    # A called name is checked by its Call, as a function; elsewhere a name is a value.
    callees = {id(node.func) for node in nodes if isinstance(node, ast.Call)}
    for node in nodes:
        if id(node) not in callees:
            _check_node(node, field, variables)


def _nesting(root: ast.AST) -> int:
    """The deepest chain of calls and powers inside one another (iterative: no recursion)."""
    deepest = 0
    stack: list[tuple[ast.AST, int]] = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, ast.Call) or (
            isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow)
        ):
            depth += 1
            deepest = max(deepest, depth)
        stack.extend((child, depth) for child in ast.iter_child_nodes(node))
    return deepest


def _check_node(node: ast.AST, field: str, variables: Sequence[str] | None) -> None:
    for kind, problem in _FORBIDDEN:
        if isinstance(node, kind):
            raise InputError(field, problem)
    if isinstance(node, ast.BinOp):
        _check_binop(node, field)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            raise InputError(field, "only unary '-' and '+' are allowed")
    elif isinstance(node, ast.Call):
        _check_call(node, field, variables)
    elif isinstance(node, ast.Name):
        _check_name(node.id, field, variables, called=False)
    elif isinstance(node, ast.Constant):
        _check_constant(node.value, field)
    elif not isinstance(node, ast.Expression):
        raise InputError(field, f"{type(node).__name__} is not allowed in an expression")


def _check_binop(node: ast.BinOp, field: str) -> None:
    if isinstance(node.op, ast.BitXor):
        raise InputError(field, "'^' is not a power here; write x**2 instead of x^2")
    if type(node.op) in _OTHER_BINOPS:
        symbol = _OTHER_BINOPS[type(node.op)]
        raise InputError(field, f"operator {symbol!r} is not allowed (allowed: + - * / **)")
    if type(node.op) not in _BINOPS:
        raise InputError(field, "operator not allowed (allowed: + - * / **)")
    if isinstance(node.op, ast.Pow) and _is_constant(node.right):
        # x**9**9**9 is x**(9**(9**9)): exact integer powers that never finish.
        for sub in ast.walk(node.right):
            if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Pow):
                raise InputError(field, "a constant exponent may not contain '**'")
            if isinstance(sub, ast.Constant) and _is_number(sub.value):
                if abs(sub.value) > MAX_EXPONENT_LITERAL:
                    raise InputError(
                        field, f"exponent too large (numbers in it at most {MAX_EXPONENT_LITERAL})"
                    )


def _check_call(node: ast.Call, field: str, variables: Sequence[str] | None) -> None:
    if node.keywords:
        raise InputError(field, "keyword arguments are not allowed")
    if isinstance(node.func, ast.Attribute):
        raise InputError(field, "attribute access is not allowed")
    if not isinstance(node.func, ast.Name):
        raise InputError(field, "only the allowed functions may be called, by their names")
    name = node.func.id
    _check_name(name, field, variables, called=True)
    if name in _UNARY and len(node.args) != 1:
        raise InputError(field, f"{name}() takes exactly one argument, got {len(node.args)}")
    if name in _VARIADIC and len(node.args) < 2:
        raise InputError(field, f"{name}() takes two or more arguments, got {len(node.args)}")


def _check_name(name: str, field: str, variables: Sequence[str] | None, called: bool) -> None:
    if name.startswith("_"):
        raise InputError(field, f"names starting with '_' are not allowed: {name!r}")
    is_function = name in _UNARY or name in _VARIADIC
    if called:
        if name in CONSTANTS or (variables is not None and name in variables):
            raise InputError(field, f"{name!r} is not a function (write {name}*(...) to multiply)")
        if not is_function:
            raise InputError(field, f"unknown function {name!r} ({_allowed(variables)})")
        return
    if is_function:
        raise InputError(field, f"{name!r} is a function; call it like {name}(...)")
    if name in CONSTANTS:
        return
    if variables is None:
        check_variable_name(name, field)
    elif name not in variables:
        raise InputError(field, f"unknown name {name!r} ({_allowed(variables)})")


def _check_constant(value: object, field: str) -> None:
    if isinstance(value, bool):
        raise InputError(field, "booleans are not allowed")
    if isinstance(value, (str, bytes)):
        raise InputError(field, "strings are not allowed")
    if isinstance(value, complex):
        raise InputError(field, "complex numbers are not allowed")
    if not _is_number(value):
        raise InputError(field, f"{value!r} is not allowed")
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(field, "number too large")


def _allowed(variables: Sequence[str] | None) -> str:
    names = ", ".join(variables) if variables is not None else "any variable name"
    return f"allowed: {names}; constants: pi, E; functions: {', '.join(FUNCTIONS)}"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_constant(node: ast.AST) -> bool:
    """True if the subtree has no variables (only numbers, constants and operators)."""
    return not any(
        isinstance(sub, ast.Name) and sub.id not in CONSTANTS and sub.id not in FUNCTIONS
        for sub in ast.walk(node)
    )


class _Converter:
    """Builds SymPy from a tree that already passed the whitelist."""

    def __init__(self, field: str, variables: Sequence[str] | None) -> None:
        self.field = field
        self.variables = variables

    def convert(self, node: ast.AST) -> sympy.Expr:
        if isinstance(node, ast.Constant):
            return self._number(node)
        if isinstance(node, ast.Name):
            return CONSTANTS.get(node.id) or sympy.Symbol(node.id)
        if isinstance(node, ast.UnaryOp):
            operand = self.convert(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.Call):
            args = [self.convert(arg) for arg in node.args]
            name = node.func.id  # type: ignore[attr-defined]  # checked: a Name
            return _UNARY[name](args[0]) if name in _UNARY else _VARIADIC[name](*args)
        raise InputError(self.field, f"{type(node).__name__} is not allowed")  # unreachable

    def _number(self, node: ast.Constant) -> sympy.Expr:
        value = node.value
        if isinstance(value, int):
            if value.bit_length() > MAX_BITS:
                raise InputError(self.field, f"number too large (at most {MAX_DIGITS} digits)")
            return sympy.Integer(value)
        text = getattr(node, "_source", None) or repr(value)
        number = decimal.Decimal(text)
        if abs(number.adjusted()) > MAX_DIGITS or len(number.as_tuple().digits) > MAX_DIGITS:
            raise InputError(self.field, f"number {text} out of range")
        numerator, denominator = number.as_integer_ratio()
        return sympy.Rational(numerator, denominator)

    def _binop(self, node: ast.BinOp) -> sympy.Expr:
        left, right = self.convert(node.left), self.convert(node.right)
        if isinstance(node.op, ast.Add):
            result = left + right
        elif isinstance(node.op, ast.Sub):
            result = left - right
        elif isinstance(node.op, ast.Mult):
            result = left * right
        elif isinstance(node.op, ast.Div):
            result = left / right
        else:
            self._check_power(left, right)
            result = left**right
        self._check_numbers(result)
        return result

    def _check_numbers(self, expr: sympy.Expr) -> None:
        for number in expr.atoms(sympy.Rational):
            if max(abs(number.p), abs(number.q)).bit_length() > MAX_BITS:
                raise InputError(self.field, f"number too large (at most {MAX_DIGITS} digits)")

    def _check_power(self, base: sympy.Expr, exponent: sympy.Expr) -> None:
        if not exponent.is_Number:
            return
        if abs(exponent) > MAX_EXPONENT_VALUE:
            raise InputError(self.field, f"exponent too large (at most {MAX_EXPONENT_VALUE})")
        if base.is_Rational and base != 0:
            # SymPy computes Integer/Rational powers exactly: estimate the digits first.
            bits = max(abs(base.p), abs(base.q)).bit_length()
            if bits * float(abs(exponent)) > 4 * MAX_BITS:
                raise InputError(self.field, f"number too large (at most {MAX_DIGITS} digits)")


def _attach_sources(tree: ast.AST, text: str) -> None:
    """Remember each float literal's own text, so that 0.1 means exactly 1/10."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, float):
            segment = ast.get_source_segment(text, node)
            node._source = segment  # type: ignore[attr-defined]
