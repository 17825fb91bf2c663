"""Forms a teacher would write: SymPy's expressions as the LaTeX of a handout, checked equal.

SymPy prints what its canonical order gives: tanh + MSE's output error as
``(-a + y)(a - 1)(a + 1)``, a spec's 1.702 as ``851/500``, ``-y + \\hat y``.  A teacher
writes ``(a - y)(1 - a^2)``, ``1.702``, ``\\hat y - y``.  ``teacher_latex(expr, names,
prefer=...)`` prints the teacher's form by a fixed rule:

1. **Candidates** (``_candidates``), in this order, each step within the operation budgets
   below (else skipped).  Bases: the expression with each ``prefer`` meaning written as its
   symbol (tanh(z) -> a, by ``subs``), when ``prefer`` gives one; the expression itself;
   for a ``prefer`` primitive, the expression through it (e^(-u) -> (1 - sigma(u))/sigma(u),
   one base per argument u tried).  Every base has expm1(u) spelled e^u - 1, u sign(u)
   written |u| and sinh/cosh written tanh (sin/cos: tan).  Of each base: itself, its number
   multiplied into a sum (0.01 (1 + 99 s) -> 0.01 + 0.99 s), ``factor``, ``factor`` with
   conjugate pairs merged ((a - 1)(a + 1) -> a^2 - 1), ``factor`` with its number multiplied
   in, ``cancel``, ``together``, ``expand`` and ``collect`` of the expansion over the
   preferred symbols.  Last, the expression exactly as given.
2. **Shape** (``_shape``): in every product the sign of each sum factor (and of each sum
   inside an odd or even function: tanh(y - a) = -tanh(a - y), |y - a| = |a - y|) is
   chosen so that the fewest minus signs are printed, counting the product's own (turning
   a factor with an odd power round turns the product's sign, so pairs of minus signs
   cancel: -(a - y)(a^2 - 1) -> (a - y)(1 - a^2)); ties go to the choice that makes the term
   with the earliest ``prefer`` symbol positive, factor by factor in printed order, then to
   the fewest turns.  A sum with more negative terms than positive ones + 1 prints as
   -(...).  A ``Sum`` whose limits are equal is its one term.
3. **Cost** (``_cost``) of the shaped form: ``ADD_COST`` per + or - joining terms,
   ``POWER_COST`` per power, ``PRODUCT_COST`` per juxtaposition or fraction bar,
   ``CALL_COST`` per function call, ``MINUS_COST`` per minus sign.  Forms that do not use a
   ``prefer`` primitive come after those that do; then the cheapest wins, ties going to
   the earlier candidate.  So a(1 - a) (cost 4) beats a - a^2 (5), (a - y)(1 - a^2) (9)
   beats -(a - y)(a - 1)(a + 1).
4. **Check** (``_same``): a candidate is printed only once it is shown equal to the input,
   with every ``prefer`` symbol replaced by its meaning: by exact algebra (the difference
   is 0 as built, or expands to 0), else by agreement at ``POINTS`` fixed rational points
   evaluated to ``DIGITS`` digits (a disagreement rejects it), else, when too few points
   give numbers on both sides, by ``sympy.simplify`` of a difference within
   ``SIMPLIFY_MAX_OPS``.  simplify comes last because it has no bound of its own (its
   trigsimp ran for minutes on a 7-operation derivative, see calculus.py); the points
   decide in practice.  A candidate that fails is never printed.  The chosen form is
   re-evaluated (``_evaluate``) and checked against the input once more: shown different,
   it raises ``FormError``; not shown either way, SymPy's own form is printed.
5. **Print** (``_TeacherPrinter``, SymPy's LatexPrinter with its own Add, Mul, Pow and
   Rational): a sum lists its terms in SymPy's order, stably sorted so that terms with an
   earlier ``prefer`` symbol come first; in a sum that is not a polynomial a positive
   number leads (``1 + \\left|{z}\\right|``, ``\\frac{1}{2} + ...``, but ``3 x + 1``); then
   the first positive term is moved to the front (``1 - a^{2}``, ``\\hat{y} - y``).  A
   product lists its constant factors first, then those with more distinct symbols (the
   error (a - y) before the activation's derivative), then the cheaper ones, then SymPy's
   order: ``a \\left(1 - a\\right)``, ``\\left(a - y\\right) \\left(1 - a^{2}\\right)``.  Factors
   with negative powers go to a denominator, a rational coefficient p/q splits into both.

Numbers: an integer prints as an integer; a rational whose denominator has no prime factor
but 2 and 5, is at least ``DECIMAL_MIN_DENOMINATOR`` (1/2 and 3/4 stay fractions) and has
at most ``DECIMAL_MAX_PLACES`` decimal places prints as its exact terminating decimal
(851/500 -> 1.702, 1/100 -> 0.01, 1/8 -> 0.125); every other rational stays a fraction
(1/3, 1/1024).  The decimal is exact, so the printed number is the rational.

Budgets are operation counts, never a clock: an input of more than ``MAX_NODES`` tree nodes
prints in SymPy's own form at once (no candidates, no checks), and each candidate step has
its own size, degree and generator budget (``factor`` also needs every rational in an
exponent within ``FACTOR_MAX_DEGREE``: to it e^(851 z/500) is a polynomial of degree 851).
Results are cached per (expression, prefer).

``hadamard(left_tex, factor, names)`` writes ``left \\odot factor`` for the recursion
delta = (W^T delta) * f'(z): just ``left`` when the factor is 1, and the factor in brackets
when it is a sum or starts with a minus sign (⊙ binds as a product does).
``sum_tex(index, count, term)`` writes a sum over ``count`` terms, or its one term.
``teacher_terms`` gives the printed terms of a sum one by one, for breaking long displays.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import sympy
from sympy.core.function import FunctionClass
from sympy.printing.latex import LatexPrinter, _between_two_numbers_p

from symbackprop.expressions import degree, expansion_terms, tree_size
from symbackprop.primitives import expm1, sigmoid, to_textbook_form

# --- budgets (operation counts, never a clock) ---------------------------------------------

MAX_NODES = 300  # tree nodes of the input: past this, SymPy's own form
TRANSFORM_MAX_NODES = 150  # factor, cancel, together, expand, collect only below this
EXPAND_MAX_TERMS = 60  # estimated terms of an expansion (expressions.expansion_terms)
FACTOR_MAX_DEGREE = 12  # polynomial degree (expressions.degree)
MAX_GENERATORS = 6  # distinct symbols and function calls for factor/cancel/together
SIMPLIFY_MAX_OPS = 25  # sympy.count_ops of a difference that simplify may see
SIGN_MAX_FACTORS = 8  # sum factors whose signs are chosen jointly (2**8 choices); more: one by one
REWRITE_MAX_ARGUMENTS = 4  # distinct exponentials tried as the argument of a primitive

# --- numbers and the check of equality -----------------------------------------------------

DECIMAL_MIN_DENOMINATOR = 5  # 1/2 and 3/4 stay fractions; 1/5 is 0.2
DECIMAL_MAX_PLACES = 6  # 1/1024 = 0.0009765625 stays a fraction
DIGITS = 50  # digits of the point evaluations
TOLERANCE = sympy.Float(10) ** -40  # relative, at DIGITS digits
MIN_POINTS = 4  # conclusive points needed for agreement
# fixed "random" rationals in (-2, 2), none a simple number (0, 1, 1/2) where kinks or
# removable singularities sit; symbol i at point j takes _VALUES[(j + 5 i) % len]
_VALUES = tuple(
    sympy.Rational(p, q)
    for p, q in (
        (7, 13),
        (-11, 17),
        (23, 19),
        (-5, 7),
        (13, 29),
        (31, 23),
        (-19, 11),
        (3, 37),
        (-29, 31),
        (17, 41),
        (-3, 43),
        (37, 47),
    )
)
POINTS = 6


class FormError(RuntimeError):
    """A teacher's form, re-evaluated, differs from the expression it was made from (a bug)."""


Prefer = sympy.Symbol | tuple[sympy.Symbol, sympy.Expr] | FunctionClass


@dataclass(frozen=True)
class _Preferences:
    """``prefer`` sorted out: symbols in order, their meanings, primitives to rewrite into."""

    symbols: tuple[sympy.Symbol, ...]
    meanings: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    primitives: tuple[FunctionClass, ...]

    def rank(self, expr: sympy.Basic) -> int:
        """The index of the earliest preferred symbol in ``expr`` (len(symbols) if none)."""
        free = expr.free_symbols
        return next((i for i, s in enumerate(self.symbols) if s in free), len(self.symbols))

    def penalty(self, expr: sympy.Expr) -> int:
        """The preferred primitives ``expr`` does not use: such forms come after those that do."""
        return sum(1 for primitive in self.primitives if not expr.has(primitive))

    def meant(self, expr: sympy.Expr) -> sympy.Expr:
        """``expr`` with every preferred symbol replaced by what it means (a -> tanh(z))."""
        return expr.xreplace(dict(self.meanings)) if self.meanings else expr


def _preferences(prefer: Iterable[Prefer]) -> _Preferences:
    symbols: list[sympy.Symbol] = []
    meanings: list[tuple[sympy.Symbol, sympy.Expr]] = []
    primitives: list[FunctionClass] = []
    for item in prefer:
        if isinstance(item, sympy.Symbol):
            symbols.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], sympy.Symbol):
            symbols.append(item[0])
            if item[1] != item[0]:
                meanings.append((item[0], sympy.sympify(item[1])))
        elif isinstance(item, FunctionClass) and item in _INVERSES:
            primitives.append(item)
        else:
            known = ", ".join(f.__name__ for f in _INVERSES)
            raise TypeError(
                f"prefer: {item!r} is not a symbol, a (symbol, meaning) pair or one of: {known}"
            )
    return _Preferences(tuple(symbols), tuple(meanings), tuple(primitives))


# --- the entry points ----------------------------------------------------------------------


def teacher_latex(
    expr: sympy.Expr,
    names: Mapping[sympy.Symbol, str] | None = None,
    *,
    prefer: Sequence[Prefer] = (),
) -> str:
    """The LaTeX of ``expr`` in the teacher's form (the module docstring's rule).

    ``names`` maps symbols to their LaTeX (as ``graph.latex_name`` gives them).  ``prefer``
    lists what to express the result in, earliest first: a symbol (its terms lead), a pair
    (a, f(z)) meaning the symbol a stands for f(z), so that f(z) is written a (the check
    puts f(z) back), or a primitive class such as ``sigmoid`` (exponentials rewritten
    through it, 3 e^{-u}/(1 + e^{-u})^2 -> 3 sigma(u)(1 - sigma(u))).
    """
    return _choose(sympy.sympify(expr), names, _preferences(prefer))[1]


def teacher_terms(
    expr: sympy.Expr,
    names: Mapping[sympy.Symbol, str] | None = None,
    *,
    prefer: Sequence[Prefer] = (),
) -> list[str]:
    """The terms of ``teacher_latex``'s sum, signs attached (``["a", "- y"]``), for breaking
    a long display between terms: ``" ".join`` of them is ``teacher_latex``'s string."""
    expr = sympy.sympify(expr)
    prefs = _preferences(prefer)
    form, tex = _choose(expr, names, prefs)
    if not form.is_Add:
        return [tex]
    if form is expr:  # SymPy's own form: its order and signs
        printer = LatexPrinter({"symbol_names": dict(names or {})})
        terms = printer._as_ordered_terms(form)
        negative = [t.could_extract_minus_sign() for t in terms]
        texts = [printer.doprint(-t if n else t) for t, n in zip(terms, negative, strict=True)]
    else:
        printer = _TeacherPrinter(names, prefs)
        terms = printer._ordered_terms(form)
        negative = [_negative(t) for t in terms]
        texts = [
            printer._term_tex(_negate(t) if n else t) for t, n in zip(terms, negative, strict=True)
        ]
    signs = ["- " if n else ("+ " if i else "") for i, n in enumerate(negative)]
    return [sign + text for sign, text in zip(signs, texts, strict=True)]


def teacher_form(expr: sympy.Expr, *, prefer: Sequence[Prefer] = ()) -> sympy.Expr:
    """The chosen form itself: an unevaluated SymPy expression (``expr`` past the budget)."""
    return _choose(sympy.sympify(expr), None, _preferences(prefer))[0]


def hadamard(
    left_tex: str,
    factor: sympy.Expr,
    names: Mapping[sympy.Symbol, str] | None = None,
    *,
    prefer: Sequence[Prefer] = (),
) -> str:
    """``left ⊙ factor``: ``left_tex`` alone when the factor is 1, a sum factor bracketed.

    (W^T delta) ⊙ (1 - tanh^2 z), not (W^T delta) ⊙ 1 - tanh^2 z, which reads as
    ((W^T delta) ⊙ 1) - tanh^2 z: ⊙ binds as a product does.
    """
    factor = sympy.sympify(factor)
    if factor == 1:
        return left_tex
    form, tex = _choose(factor, names, _preferences(prefer))
    if form.is_Add or _negative(form):
        tex = rf"\left({tex}\right)"
    return rf"{left_tex} \odot {tex}"


def sum_tex(index: str, count: int, term: Callable[[str], str]) -> str:
    """``\\sum_{index=1}^{count} term(index)``, or ``term("1")`` when there is one term."""
    if count == 1:
        return term("1")
    return rf"\sum_{{{index}=1}}^{{{count}}} {term(index)}"


def decimal_tex(number: sympy.Rational) -> str | None:
    """The exact terminating decimal of ``number`` by the module's rule, or None."""
    number = sympy.Rational(number)
    if number.q == 1 or number.q < DECIMAL_MIN_DENOMINATOR:
        return None
    twos = fives = 0
    q = number.q
    while q % 2 == 0:
        q, twos = q // 2, twos + 1
    while q % 5 == 0:
        q, fives = q // 5, fives + 1
    places = max(twos, fives)
    if q != 1 or places > DECIMAL_MAX_PLACES:
        return None
    digits = str(abs(number.p) * 10**places // number.q).rjust(places + 1, "0")
    sign = "-" if number.p < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


# --- choosing ------------------------------------------------------------------------------


def _choose(
    expr: sympy.Expr, names: Mapping[sympy.Symbol, str] | None, prefs: _Preferences
) -> tuple[sympy.Expr, str]:
    """The chosen (form, LaTeX); SymPy's own form and LaTeX past the budget or unchecked."""
    form = _chosen(expr, prefs) if isinstance(expr, sympy.Expr) else None
    if form is None:
        return expr, LatexPrinter({"symbol_names": dict(names or {})}).doprint(expr)
    return form, _TeacherPrinter(names, prefs).doprint(form)


@functools.lru_cache(maxsize=1024)
def _chosen(expr: sympy.Expr, prefs: _Preferences) -> sympy.Expr | None:
    """The cheapest checked form of ``expr``, or None for SymPy's own (module docstring)."""
    if tree_size(expr, MAX_NODES) > MAX_NODES:
        return None
    scored = []
    for index, candidate in enumerate(_candidates(expr, prefs)):
        form = _shape(candidate, prefs)
        scored.append((prefs.penalty(candidate), _cost(form), index, candidate, form))
    scored.sort(key=lambda item: item[:3])
    for _, _, _, candidate, form in scored:
        if _same(candidate, expr, prefs) is not True:
            continue  # never printed
        verdict = _same(_evaluate(form), expr, prefs)
        if verdict is False:
            raise FormError(f"the form {form!r} of {expr!r} differs from it")
        # None: not shown equal, only not shown different; SymPy's own form then
        return form if verdict else None
    return None


def _candidates(expr: sympy.Expr, prefs: _Preferences) -> list[sympy.Expr]:
    """The candidate forms in the module docstring's order, without repeats."""
    spelled = _spelled(expr)
    bases = []
    if prefs.meanings:
        written = spelled
        for symbol, meaning in prefs.meanings:  # subs: z sigma(z) inside y - z sigma(z) too
            written = written.subs(meaning, symbol)
        bases.append(written)
    bases.append(spelled)
    for primitive in prefs.primitives:
        bases.extend(_through_primitive(spelled, primitive))
    out: list[sympy.Expr] = []
    for base in bases:
        out.append(base)
        if not _transformable(base):
            continue
        small = _factorable(base)
        factored = sympy.factor(base) if small else base
        out += [_distributed(base), factored, _merge_pairs(factored), _distributed(factored)]
        if small and _has_denominator(base):  # without one, both give base or its factors
            out += [sympy.cancel(base), sympy.together(base)]
        if expansion_terms(base, EXPAND_MAX_TERMS) <= EXPAND_MAX_TERMS:
            expanded = sympy.expand(base)
            out.append(expanded)
            symbols = [s for s in prefs.symbols if s in expanded.free_symbols]
            if symbols:
                out.append(sympy.collect(expanded, symbols))
    out.append(expr)
    return list(dict.fromkeys(out))


def _has_denominator(expr: sympy.Expr) -> bool:
    return any(
        node.is_Pow and node.exp.is_negative is True for node in sympy.preorder_traversal(expr)
    )


def _transformable(expr: sympy.Expr) -> bool:
    return tree_size(expr, TRANSFORM_MAX_NODES) <= TRANSFORM_MAX_NODES


def _factorable(expr: sympy.Expr) -> bool:
    """Within the degree and generator budgets of factor, cancel and together."""
    if degree(expr) > FACTOR_MAX_DEGREE:
        return False
    generators = expr.atoms(sympy.Symbol) | {
        node for node in sympy.preorder_traversal(expr) if isinstance(node, sympy.Function)
    }
    if len(generators) > MAX_GENERATORS:
        return False
    # the polynomial code writes e^(851 z / 500) as (e^(z / 500))^851: a degree-851 polynomial
    for node in sympy.preorder_traversal(expr):
        exponent = node.args[0] if isinstance(node, sympy.exp) else None
        if node.is_Pow and not node.exp.is_Integer:
            exponent = node.exp
        if exponent is not None:
            for c in exponent.atoms(sympy.Rational):
                if max(abs(c.p), c.q) > FACTOR_MAX_DEGREE:
                    return False
    return True


def _spelled(expr: sympy.Expr) -> sympy.Expr:
    """expm1(u) as e^u - 1 (the code's accurate spelling is not the document's), u sign(u)
    as |u| (equal for real u, and at u = 0), sinh/cosh as tanh and sin/cos as tan."""
    expr = expr.replace(lambda e: isinstance(e, expm1), lambda e: sympy.exp(e.args[0]) - 1)
    expr = expr.replace(lambda e: e.is_Mul and _has_sign_pair(e), _abs_of_sign_pair)
    return expr.replace(lambda e: e.is_Mul, _quotients)


_QUOTIENTS = ((sympy.sinh, sympy.cosh, sympy.tanh), (sympy.sin, sympy.cos, sympy.tan))


def _quotients(mul: sympy.Mul) -> sympy.Expr:
    """sinh(u)^k / cosh(u)^k as tanh(u)^k, sin(u)^k / cos(u)^k as tan(u)^k."""
    powers = [f.as_base_exp() for f in mul.args]
    for top, bottom, quotient in _QUOTIENTS:
        for i, (b, k) in enumerate(powers):
            if not (isinstance(b, top) and k.is_Integer and k > 0):
                continue
            match = next((j for j, p in enumerate(powers) if p == (bottom(*b.args), -k)), None)
            if match is not None:
                rest = [f for n, f in enumerate(mul.args) if n not in (i, match)]
                return _quotients(sympy.Mul(quotient(*b.args) ** k, *rest))
    return mul


def _has_sign_pair(mul: sympy.Mul) -> bool:
    signs = [f.args[0] for f in mul.args if isinstance(f, sympy.sign)]
    bases = {f.as_base_exp()[0] for f in mul.args if f.as_base_exp()[1].is_positive}
    return any(u in bases for u in signs)


def _abs_of_sign_pair(mul: sympy.Mul) -> sympy.Expr:
    factors = list(mul.args)
    for i, f in enumerate(factors):
        if not isinstance(f, sympy.sign):
            continue
        u = f.args[0]
        for j, g in enumerate(factors):
            base, power = g.as_base_exp()
            if j != i and base == u and power.is_positive:
                factors[i] = sympy.Abs(u)
                factors[j] = u ** (power - 1)
                return sympy.Mul(*factors)
    return mul


def _distributed(expr: sympy.Expr) -> sympy.Expr:
    """A product's number multiplied into one of its sums, term by term (not deeper):
    0.01 (1 + 99 s) -> 0.01 + 0.99 s.  The sum: the only one, else the first (in SymPy's
    order) with a number among its terms, else none."""

    def distribute(mul: sympy.Mul) -> sympy.Expr:
        coefficient, factors = mul.as_coeff_mul()
        sums = [f for f in factors if f.is_Add]
        if len(sums) > 1:
            sums = [f for f in sums if any(t.is_Number for t in f.args)][:1]
        if abs(coefficient) == 1 or len(sums) != 1:
            return mul
        rest = [f for f in factors if f is not sums[0]]
        return sympy.Mul(sympy.Add(*(coefficient * t for t in sums[0].args)), *rest)

    # the outermost products only: inside, 851 (1 - s) would become 851 - 851 s
    if expr.is_Add:
        return sympy.Add(*(distribute(t) if t.is_Mul else t for t in expr.args))
    return distribute(expr) if expr.is_Mul else expr


def _merge_pairs(expr: sympy.Expr) -> sympy.Expr:
    """(u - c)^k (u + c)^k as (u^2 - c^2)^k in every product: two sums become one."""

    def merge(mul: sympy.Mul) -> sympy.Expr:
        factors = list(mul.args)
        for i, j in itertools.combinations(range(len(factors)), 2):
            (p, k), (q, m) = factors[i].as_base_exp(), factors[j].as_base_exp()
            if not (p.is_Add and q.is_Add and len(p.args) == len(q.args) == 2 and k == m):
                continue
            product = sympy.expand(p * q)
            if product.is_Add and len(product.args) == 2:
                rest = [f for n, f in enumerate(factors) if n not in (i, j)]
                return merge(sympy.Mul(product**k, *rest)) if rest else product**k
        return mul

    return expr.replace(lambda e: e.is_Mul, merge)


# Each primitive F with an exponential inverse: e^(scale u) = inverse(F(u)).
_INVERSES: dict[FunctionClass, tuple[int, Callable[[sympy.Expr], sympy.Expr]]] = {
    sigmoid: (1, lambda s: s / (1 - s)),
    sympy.tanh: (2, lambda t: (1 + t) / (1 - t)),
}


def _through_primitive(expr: sympy.Expr, primitive: FunctionClass) -> list[sympy.Expr]:
    """``expr`` written through primitive(u), one candidate per argument u tried.

    The exponentials of ``expr`` (after rewriting into exp) must all be e^(n scale u) for
    integers n; each is replaced by inverse(F)^n, which leaves a rational function of F(u).
    """
    if not _transformable(expr):
        return []
    scale, inverse = _INVERSES[primitive]
    spelled = expr.rewrite(sympy.exp)
    if spelled.has(sympy.I) or not _transformable(spelled):  # sin, cos: not through sigma
        return []
    spelled = sympy.expand(spelled, power_exp=False)
    if not _transformable(spelled):
        return []
    exps = sympy.expand(sympy.powsimp(spelled, deep=True), power_exp=False)
    arguments = sorted({e.args[0] for e in exps.atoms(sympy.exp)}, key=sympy.default_sort_key)
    tried: list[sympy.Expr] = []
    for w in arguments[:REWRITE_MAX_ARGUMENTS]:
        for u in (w / scale, 2 * w / scale):
            u = -u if u.could_extract_minus_sign() else u
            if u in tried or u.is_number:
                continue
            tried.append(u)
    out = []
    for u in tried:
        ratios = {e: sympy.cancel(e.args[0] / (scale * u)) for e in exps.atoms(sympy.exp)}
        if not all(r.is_Integer for r in ratios.values()):
            continue
        f = sympy.Dummy("f")
        rational = exps.xreplace({e: inverse(f) ** int(r) for e, r in ratios.items()})
        if rational.has(sympy.exp) or not _factorable(rational):
            continue
        out.append(sympy.factor(sympy.cancel(rational)).xreplace({f: primitive(u)}))
    return out


# --- shaping: signs chosen, sums of one term removed ---------------------------------------


def _negative(form: sympy.Basic) -> bool:
    """Whether the form prints with a leading minus sign (structurally, no evaluation)."""
    if form.is_Mul and form.args:
        form = form.args[0]
    return bool(form.is_Number and form.is_extended_negative)


def _negate(form: sympy.Expr) -> sympy.Expr:
    """-form without evaluation: a leading -1 dropped or added, a leading number negated."""
    if form.is_Number:
        return -form
    if form.is_Mul and form.args[0].is_Number:
        coefficient, rest = -form.args[0], list(form.args[1:])
        args = rest if coefficient == 1 else [coefficient, *rest]
        return args[0] if len(args) == 1 else sympy.Mul(*args, evaluate=False)
    return sympy.Mul(sympy.S.NegativeOne, form, evaluate=False)


def _product(negative: bool, coefficient: sympy.Expr, factors: list[sympy.Expr]) -> sympy.Expr:
    args = ([sympy.S.NegativeOne] if negative else []) + ([coefficient] if coefficient != 1 else [])
    args += factors
    if not args:
        return sympy.S.One
    if len(args) == 1:
        return args[0]
    if negative and len(args) == 2 and args[1].is_Number:
        return -args[1]
    return sympy.Mul(*args, evaluate=False)


@functools.lru_cache(maxsize=4096)
def _shape(expr: sympy.Basic, prefs: _Preferences) -> sympy.Basic:
    """The printed form of ``expr``: unevaluated, with every sign chosen (module docstring)."""
    if not expr.args or expr.is_Number:
        return expr
    if isinstance(expr, sympy.Sum):
        return _shape_sum(expr, prefs)
    if expr.is_Add:
        terms = [_shape(t, prefs) for t in expr.args]
        negatives = sum(_negative(t) for t in terms)
        if len(terms) - negatives + 1 < negatives:  # -a - b - c as -(a + b + c)
            flipped = sympy.Add(*(_negate(t) for t in terms), evaluate=False)
            return sympy.Mul(sympy.S.NegativeOne, flipped, evaluate=False)
        return sympy.Add(*terms, evaluate=False)
    if expr.is_Mul or _flippable(expr):
        return _shape_product(expr, prefs)
    if expr.is_Pow:
        return sympy.Pow(_shape(expr.base, prefs), _shape(expr.exp, prefs), evaluate=False)
    args = [_shape(a, prefs) for a in expr.args]
    if isinstance(expr, sympy.Function):
        return expr.func(*args, evaluate=False)
    return expr.func(*args)


def _shape_sum(expr: sympy.Sum, prefs: _Preferences) -> sympy.Basic:
    body, limits = expr.function, []
    for index, lower, upper in expr.limits:
        if lower == upper:
            body = body.xreplace({index: lower})
        else:
            limits.append((index, lower, upper))
    if not limits:
        return _shape(body, prefs)
    return sympy.Sum(_shape(body, prefs), *limits)


def _sum_orientations(base: sympy.Add, prefs: _Preferences) -> tuple[sympy.Expr, sympy.Expr]:
    terms = [_shape(t, prefs) for t in base.args]
    plus = sympy.Add(*terms, evaluate=False)
    minus = sympy.Add(*(_negate(t) for t in terms), evaluate=False)
    return plus, minus


def _leading_negative(form: sympy.Add, prefs: _Preferences) -> int:
    """1 when the sum's term with the earliest preferred symbol is negative (0 if none)."""
    ranked = [(prefs.rank(t), i) for i, t in enumerate(form.args)]
    rank, i = min(ranked)
    return int(rank < len(prefs.symbols) and _negative(form.args[i]))


_ODD = (sympy.tanh, sympy.sinh, sympy.sin, sympy.tan, sympy.erf, sympy.atan, sympy.asinh)
_EVEN = (sympy.cosh, sympy.cos, sympy.Abs)


@dataclass(frozen=True)
class _Flip:
    """A factor whose sum can be printed either way round: S or -S inside."""

    plus: sympy.Expr  # the factor with the sum's terms as they are
    minus: sympy.Expr  # the factor with every term negated
    inside: tuple[sympy.Add, sympy.Add]  # the sum itself, as it is and negated
    odd: bool  # whether turning the sum round turns the factor's sign


def _flippable(factor: sympy.Expr) -> bool:
    base, power = factor.as_base_exp()
    if not power.is_Integer:
        return False
    if base.is_Add:
        return True
    return isinstance(base, _ODD + _EVEN) and len(base.args) == 1 and base.args[0].is_Add


def _flip(factor: sympy.Expr, prefs: _Preferences) -> _Flip | None:
    """The two ways round of a sum factor, a power of one, or an odd or even function of
    one (tanh(y - a) = -tanh(a - y), |y - a| = |a - y|); None for any other factor."""
    if not _flippable(factor):
        return None
    base, power = factor.as_base_exp()
    if base.is_Add:
        inside, wrap, odd = base, (lambda s: s), True
    elif isinstance(base, _ODD + _EVEN) and len(base.args) == 1 and base.args[0].is_Add:
        inside, odd = base.args[0], isinstance(base, _ODD)
        wrap = lambda s, f=base.func: f(s, evaluate=False)  # noqa: E731
    else:
        return None
    plus, minus = _sum_orientations(inside, prefs)
    if power != 1:
        raised = lambda s: sympy.Pow(wrap(s), power, evaluate=False)  # noqa: E731
    else:
        raised = wrap
    return _Flip(raised(plus), raised(minus), (plus, minus), odd and bool(power % 2))


def _shape_product(expr: sympy.Expr, prefs: _Preferences) -> sympy.Expr:
    coefficient, factors = expr.as_coeff_mul() if expr.is_Mul else (sympy.S.One, (expr,))
    negative = _negative(coefficient)
    coefficient = abs(coefficient)
    fixed: list[sympy.Expr] = []
    flips: list[_Flip] = []
    for factor in factors:
        flip = _flip(factor, prefs)
        if flip is None:
            fixed.append(_shape(factor, prefs))
        else:
            flips.append(flip)
    order = sorted(range(len(flips)), key=lambda i: _factor_key(flips[i].plus, prefs))
    # per factor and way round: its minus signs, and whether its leading term is negative
    minus = [[sum(_negative(t) for t in f.inside[w].args) for w in (0, 1)] for f in flips]
    leads = [[_leading_negative(f.inside[w], prefs) for w in (0, 1)] for f in flips]

    def score(turns: tuple[int, ...]) -> tuple:
        sign = negative ^ (sum(t for t, f in zip(turns, flips, strict=True) if f.odd) % 2 == 1)
        signs = sum(minus[i][t] for i, t in enumerate(turns)) + int(sign)
        return (signs, tuple(leads[i][turns[i]] for i in order), sum(turns))

    if len(flips) <= SIGN_MAX_FACTORS:
        best = min(itertools.product((0, 1), repeat=len(flips)), key=score)
    else:  # one by one: each with its fewer minus signs
        best = tuple(int(m[1] < m[0]) for m in minus)
    for flip, turned in zip(flips, best, strict=True):
        negative ^= bool(turned and flip.odd)
        fixed.append(flip.minus if turned else flip.plus)
    return _product(negative, coefficient, fixed)


def _evaluate(form: sympy.Basic) -> sympy.Basic:
    """The form rebuilt with SymPy's evaluation (for the check of the printed form)."""
    if not form.args:
        return form
    return form.func(*(_evaluate(a) for a in form.args))


# --- cost ----------------------------------------------------------------------------------


# weights of the printed operations (module docstring, step 3)
ADD_COST = 2  # each + or - that joins two terms
POWER_COST = 2  # a power (a product in disguise: a - a^2 costs more than a(1 - a))
PRODUCT_COST = 1  # each juxtaposition, and each fraction bar
CALL_COST = 1  # each function call
MINUS_COST = 1  # each minus sign


def _cost(form: sympy.Basic) -> int:
    """The weighted count of the printed operations and minus signs (module docstring)."""
    if form.is_Number:
        return MINUS_COST * int(_negative(form))
    if not form.args:
        return 0
    if form.is_Add:
        return ADD_COST * (len(form.args) - 1) + sum(_cost(t) for t in form.args)
    if form.is_Mul:
        args = list(form.args)
        cost = 0
        if _negative(args[0]):
            cost, args[0] = MINUS_COST, -args[0]
            args = args[1:] if args[0] == 1 else args
        return cost + PRODUCT_COST * max(len(args) - 1, 0) + sum(_cost(a) for a in args)
    if form.is_Pow:
        if form.exp.is_Rational and form.exp.is_negative:  # a fraction 1 / base^(-exp)
            power = POWER_COST if form.exp != -1 else 0
            return PRODUCT_COST + power + _cost(form.base) + _cost(-form.exp)
        return POWER_COST + _cost(form.base) + _cost(form.exp)
    if isinstance(form, expm1):  # printed as (e^u - 1)
        return _cost(sympy.Add(sympy.exp(form.args[0]), sympy.S.NegativeOne, evaluate=False))
    return CALL_COST + sum(_cost(a) for a in form.args if isinstance(a, sympy.Basic))


# --- the check of equality -----------------------------------------------------------------


def _same(left: sympy.Expr, right: sympy.Expr, prefs: _Preferences) -> bool | None:
    """True: shown equal; False: shown different; None: neither (module docstring, step 4)."""
    left, right = _finite_sums(prefs.meant(left)), _finite_sums(prefs.meant(right))
    difference = left - right
    if difference == 0:
        return True
    if _transformable(difference) and (
        expansion_terms(difference, EXPAND_MAX_TERMS) <= EXPAND_MAX_TERMS
        and sympy.expand(difference) == 0
    ):
        return True
    verdict = _agree_at_points(left, right)
    if verdict is not None:
        return verdict
    if _transformable(difference) and sympy.count_ops(difference) <= SIMPLIFY_MAX_OPS:
        if sympy.simplify(difference) == 0:
            return True
    return None


def _finite_sums(expr: sympy.Expr) -> sympy.Expr:
    return expr.replace(
        lambda e: (
            isinstance(e, sympy.Sum) and all(b.is_Integer for lim in e.limits for b in lim[1:])
        ),
        lambda e: e.doit(),
    )


def _agree_at_points(left: sympy.Expr, right: sympy.Expr) -> bool | None:
    """Equal to TOLERANCE at the fixed points (None: too few points where both are numbers)."""
    symbols = sorted(
        left.free_symbols | right.free_symbols,
        key=lambda s: (sympy.default_sort_key(s), sorted(s.assumptions0.items())),
    )
    # sigmoid and softplus evaluate only at Numbers: at tanh(5/7) they are their exp forms
    left, right = to_textbook_form(left), to_textbook_form(right)
    conclusive = 0
    for j in range(POINTS):
        point = {s: _VALUES[(j + 5 * i) % len(_VALUES)] for i, s in enumerate(symbols)}
        try:
            a = left.xreplace(point).evalf(DIGITS)
            b = right.xreplace(point).evalf(DIGITS)
        except (ArithmeticError, TypeError, ValueError):
            continue
        if not (_finite_number(a) and _finite_number(b)):
            continue
        conclusive += 1
        if abs(a - b) > TOLERANCE * max(1, abs(b)):
            return False
    return True if conclusive >= MIN_POINTS else None


def _finite_number(value: sympy.Basic) -> bool:
    """A finite number written with digits (not a call that did not evaluate)."""
    if not value.is_number or value.atoms(sympy.Function) or value.has(sympy.nan, sympy.zoo):
        return False
    return bool(value.is_finite)


# --- printing ------------------------------------------------------------------------------


def _factor_key(form: sympy.Basic, prefs: _Preferences) -> tuple:
    """Constants first, then more distinct symbols, then fewer operations, then SymPy's order."""
    return (
        bool(form.free_symbols),
        -len(form.free_symbols),
        _cost(form),
        prefs.rank(form),
        sympy.default_sort_key(form),
    )


class _TeacherPrinter(LatexPrinter):
    """SymPy's LaTeX printer with the teacher's sums, products, powers and numbers."""

    def __init__(self, names: Mapping[sympy.Symbol, str] | None, prefs: _Preferences) -> None:
        super().__init__({"symbol_names": dict(names or {})})
        self._prefs = prefs

    def _print_Rational(self, expr: sympy.Rational) -> str:
        decimal = decimal_tex(expr)
        return decimal if decimal is not None else super()._print_Rational(expr)

    def _ordered_terms(self, expr: sympy.Add) -> list[sympy.Expr]:
        """SymPy's order, then by preference rank (stably), then a positive term first."""
        terms = list(expr.args)
        values = [_evaluate(t) for t in terms]
        order = sympy.Add(*values, evaluate=False).as_ordered_terms()
        position = {v: order.index(v) if v in order else len(order) for v in values}
        terms = [
            t for _, t in sorted(zip(values, terms, strict=True), key=lambda vt: position[vt[0]])
        ]
        terms = sorted(terms, key=self._prefs.rank)  # stable: SymPy's order within a rank
        if not sympy.Add(*values).is_polynomial():  # 1 + |z|, but 3 x + 1 and x^2 + 1
            terms.sort(key=lambda t: not (t.is_Number and t.is_extended_positive))
        first = next((i for i, t in enumerate(terms) if not _negative(t)), 0)
        return [terms[first], *terms[:first], *terms[first + 1 :]]

    def _print_Add(self, expr: sympy.Add, order: str | None = None) -> str:
        tex = ""
        for i, term in enumerate(self._ordered_terms(expr)):
            if _negative(term):
                tex += "- " if i == 0 else " - "
                term = _negate(term)
            elif i:
                tex += " + "
            tex += self._term_tex(term)
        return tex

    def _term_tex(self, term: sympy.Basic) -> str:
        text = self._print(term)
        return rf"\left({text}\right)" if term.is_Add else text

    def _factor_tex(self, factor: sympy.Basic) -> str:
        text = self._print(factor)
        if factor.is_Add or _negative(factor):
            return rf"\left({text}\right)"
        return text

    def _juxtapose(self, factors: list[sympy.Basic], alone: bool = False) -> str:
        """The factors side by side; ``alone``: a lone factor needs no brackets (in a \\frac)."""
        tex = last = ""
        for factor in sorted(factors, key=lambda f: _factor_key(f, self._prefs)):
            text = self._print(factor) if alone and len(factors) == 1 else self._factor_tex(factor)
            if _between_two_numbers_p[0].search(last) and _between_two_numbers_p[1].match(text):
                tex += r" \cdot "
            elif tex:
                tex += " "
            tex += text
            last = text
        return tex

    def _print_Mul(self, expr: sympy.Expr) -> str:
        args = list(sympy.Mul.make_args(expr)) if expr.is_Mul else [expr]
        coefficient = sympy.S.One
        numerator: list[sympy.Basic] = []
        denominator: list[sympy.Basic] = []
        for arg in args:
            if arg.is_Rational:
                coefficient *= arg
            elif arg.is_Pow and arg.exp.is_negative and arg.exp.is_Rational:
                positive = -arg.exp
                denominator.append(
                    arg.base if positive == 1 else sympy.Pow(arg.base, positive, evaluate=False)
                )
            else:
                numerator.append(arg)
        sign = "- " if _negative(coefficient) else ""
        coefficient = abs(coefficient)
        if decimal_tex(coefficient) is not None or coefficient.q == 1:
            top = ([coefficient] if coefficient != 1 else []) + numerator
            if not denominator:
                return sign + (self._juxtapose(top) or "1")
            bottom = denominator
        else:  # p/q: p joins the numerator, q the denominator
            top = ([sympy.Integer(coefficient.p)] if coefficient.p != 1 else []) + numerator
            bottom = [sympy.Integer(coefficient.q), *denominator]
        num = self._juxtapose(top, alone=True) or "1"
        return rf"{sign}\frac{{{num}}}{{{self._juxtapose(bottom, alone=True)}}}"

    def _print_Pow(self, expr: sympy.Pow) -> str:
        if expr.exp.is_Rational and expr.exp.is_negative:
            return self._print_Mul(expr)
        if expr.exp.is_Integer and (expr.base.is_Add or expr.base.is_Mul or _negative(expr.base)):
            return rf"\left({self._print(expr.base)}\right)^{{{self._print(expr.exp)}}}"
        return super()._print_Pow(expr)


__all__ = [
    "DECIMAL_MAX_PLACES",
    "DECIMAL_MIN_DENOMINATOR",
    "FormError",
    "MAX_NODES",
    "decimal_tex",
    "hadamard",
    "sum_tex",
    "teacher_form",
    "teacher_latex",
    "teacher_terms",
]
