"""The layer kinds' backward rules: SymPy's derivation on an instance equals the formula the
generated code computes, a wrong formula is refused, and the general formulas match finite
differences at sizes the symbolic instance does not reach (n = 5 features, B = 6 samples)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import sympy

from symbackprop import layers, rules

EPS = 1e-5


# --- the proofs ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", rules.KINDS)
def test_every_kind_is_derived_and_proven(kind: str) -> None:
    rule = rules.derive_rule(kind)
    rows, cols = rule.shape
    size = rows * cols
    assert rule.kind == kind
    assert rule.jacobian.shape == (size, size)
    assert rule.vjp.shape == rule.formula.shape == (1, size)
    assert rule.vjp == sympy.ImmutableMatrix([list(rule.upstream)]) * rule.jacobian
    assert len(rule.inputs) == len(rule.upstream) == size
    for grad in rule.parameter_grads:
        assert rules.identically_zero(sympy.Add(*(grad.derived - grad.formula)))
    for k in range(size):
        assert rules.identically_zero(rule.vjp[k] - rule.formula[k])
    assert rules.derive_rule(kind) is rule  # cached


def test_normalizations_keep_eps_symbolic() -> None:
    for kind in ("layer_norm", "batch_norm"):
        rule = rules.derive_rule(kind)
        assert rules.EPS in rule.vjp.free_symbols
        assert rules.EPS in rule.formula.free_symbols


def test_batch_norm_couples_the_samples_not_the_features() -> None:
    rule = rules.derive_rule("batch_norm")
    batch, features = rule.shape
    assert (batch, features) == (3, 2)
    J = rule.jacobian
    for out in range(batch * features):
        for inp in range(batch * features):
            same_feature = out % features == inp % features
            assert (J[out, inp] == 0) != same_feature, (out, inp)


def test_dropout_jacobian_is_the_mask() -> None:
    rule = rules.derive_rule("dropout")
    n = rule.shape[1]
    assert rule.jacobian == sympy.diag(*(layers.mask(rules.INDEX, i + 1) for i in range(n)))


def test_residual_gradient_is_the_sum_of_both_paths() -> None:
    rule = rules.derive_rule("residual")
    n = rule.shape[1]
    block = rule.forward - sympy.Matrix(rule.inputs)  # F(x), the block alone
    block_jacobian = block.jacobian(rule.inputs)
    assert rule.jacobian == sympy.eye(n) + block_jacobian
    skip = sympy.Matrix([list(rule.upstream)])
    through_block = skip * block_jacobian
    assert (rule.vjp - skip - through_block).applyfunc(sympy.expand) == sympy.zeros(1, n)
    assert {g.name for g in rule.parameter_grads} == {"W", "b"}


def test_bigger_instance_is_proven_too() -> None:
    rule = rules.derive_rule("layer_norm", 4)
    assert rule.shape == (1, 4)
    assert rules.derive_rule("batch_norm", 3, 1).shape == (3, 1)


def test_unknown_kind_and_size_are_refused() -> None:
    with pytest.raises(ValueError, match="known: layer_norm, batch_norm"):
        rules.derive_rule("conv7d")
    with pytest.raises(ValueError, match="instance size"):
        rules.derive_rule("layer_norm", 40)


# --- wrong formulas are refused -------------------------------------------------------------


def _layer_norm_without_mean_h(rule: rules.KindRule) -> sympy.Matrix:
    x, g = rule.inputs, rule.upstream
    n = len(x)
    gamma = [layers.gamma(rules.INDEX, i + 1) for i in range(n)]
    mu = layers.mean(x)
    rstd = 1 / sympy.sqrt(layers.biased_variance(x, mu) + rules.EPS)
    xhat = [(xi - mu) * rstd for xi in x]
    h = [g[i] * gamma[i] for i in range(n)]
    mean_hx = layers.mean([h[i] * xhat[i] for i in range(n)])
    return sympy.Matrix([[rstd * (h[i] - xhat[i] * mean_hx) for i in range(n)]])


def _batch_norm_per_sample(rule: rules.KindRule) -> sympy.Matrix:
    batch, features = rule.shape
    gamma = [layers.gamma(rules.INDEX, k % features + 1) for k in range(batch * features)]
    per_sample = [[s * features + i for i in range(features)] for s in range(batch)]
    wrong, _ = rules.normalization_formula(rule.inputs, rule.upstream, gamma, per_sample)
    return wrong


def test_layer_norm_without_the_mean_of_h_is_refused() -> None:
    rule = rules.derive_rule("layer_norm")
    wrong = _layer_norm_without_mean_h(rule)
    with pytest.raises(RuntimeError, match="differ"):
        rules.check_equal(rule.vjp, wrong, "layer norm")
    assert not any(rules.identically_zero(d) for d in rule.vjp - wrong)


def test_batch_norm_with_per_sample_statistics_is_refused() -> None:
    rule = rules.derive_rule("batch_norm")
    wrong = _batch_norm_per_sample(rule)
    with pytest.raises(RuntimeError, match="differ"):
        rules.check_equal(rule.vjp, wrong, "batch norm")
    assert not rules.identically_zero((rule.vjp - wrong)[0])


def test_the_checker_refuses_other_wrong_rules() -> None:
    drop = rules.derive_rule("dropout")
    with pytest.raises(RuntimeError, match="dropout"):
        rules.check_equal(drop.vjp, sympy.Matrix([list(drop.upstream)]), "dropout without mask")
    res = rules.derive_rule("residual")
    block_only = res.formula - sympy.Matrix([list(res.upstream)])
    with pytest.raises(RuntimeError, match="skip"):
        rules.check_equal(res.vjp, block_only, "residual without the skip path")
    ln = rules.derive_rule("layer_norm")
    gamma_grad = next(g for g in ln.parameter_grads if g.name == "gamma")
    with pytest.raises(RuntimeError, match="dgamma"):
        rules.check_equal(gamma_grad.derived, sympy.Matrix([list(ln.upstream)]), "dgamma")
    with pytest.raises(RuntimeError, match="shapes"):
        rules.check_equal(ln.vjp, ln.vjp.T, "transposed")


def test_exact_check_uses_the_square_of_each_root() -> None:
    x = sympy.Symbol("x", real=True)
    r = sympy.sqrt(x**2 + rules.EPS)
    # r**3 = r (x**2 + eps) holds only through r**2 = x**2 + eps
    assert rules.identically_zero(r**3 - sympy.expand(r * (x**2 + rules.EPS)))
    assert not rules.identically_zero(r**3 - sympy.expand(r * (x**2 + 2 * rules.EPS)))
    assert not rules.identically_zero(r - x)


# --- the general formulas against finite differences (NumPy, n = 5, B = 6) -----------------


def _normalize(X: np.ndarray, gamma: np.ndarray, beta: np.ndarray, axis: int) -> np.ndarray:
    mu = X.mean(axis=axis, keepdims=True)
    var = ((X - mu) ** 2).mean(axis=axis, keepdims=True)
    return gamma * (X - mu) / np.sqrt(var + EPS) + beta


def _normalize_backward(
    X: np.ndarray, G: np.ndarray, gamma: np.ndarray, axis: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rule as the generated code computes it: (dX, dgamma, dbeta), batch-summed."""
    mu = X.mean(axis=axis, keepdims=True)
    rstd = 1 / np.sqrt(((X - mu) ** 2).mean(axis=axis, keepdims=True) + EPS)
    xhat = (X - mu) * rstd
    h = G * gamma
    dX = rstd * (
        h - h.mean(axis=axis, keepdims=True) - xhat * (h * xhat).mean(axis=axis, keepdims=True)
    )
    return dX, (G * xhat).sum(axis=0), G.sum(axis=0)


def _central(f, value: np.ndarray, step: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(value)
    for index in np.ndindex(value.shape):
        saved = value[index]
        value[index] = saved + step
        up = f()
        value[index] = saved - step
        down = f()
        value[index] = saved
        grad[index] = (up - down) / (2 * step)
    return grad


@pytest.mark.parametrize(("kind", "axis"), [("layer_norm", 1), ("batch_norm", 0)])
def test_normalization_formula_matches_finite_differences(kind: str, axis: int) -> None:
    rng = np.random.default_rng(9)
    batch, n = 6, 5
    X = rng.normal(size=(batch, n))
    G = rng.normal(size=(batch, n))
    gamma = rng.normal(size=n)
    beta = rng.normal(size=n)

    def loss() -> float:
        return float((G * _normalize(X, gamma, beta, axis)).sum())

    dX, dgamma, dbeta = _normalize_backward(X, G, gamma, axis)
    np.testing.assert_allclose(dX, _central(loss, X), rtol=0, atol=1e-8)
    np.testing.assert_allclose(dgamma, _central(loss, gamma), rtol=0, atol=1e-8)
    np.testing.assert_allclose(dbeta, _central(loss, beta), rtol=0, atol=1e-8)


@pytest.mark.parametrize(("kind", "axis"), [("layer_norm", 1), ("batch_norm", 0)])
def test_numpy_formula_is_the_proven_one(kind: str, axis: int) -> None:
    """The NumPy formula above is the rule's formula: equal on the instance's shape."""
    rule = rules.derive_rule(kind)
    rows, cols = rule.shape
    gamma_symbols = [layers.gamma(rules.INDEX, i + 1) for i in range(cols)]
    symbols = [*rule.inputs, *rule.upstream, *gamma_symbols, rules.EPS]
    evaluate = sympy.lambdify(symbols, rule.formula, "numpy")
    rng = np.random.default_rng(3)
    X, G, gamma = (
        rng.normal(size=(rows, cols)),
        rng.normal(size=(rows, cols)),
        rng.normal(size=cols),
    )
    got = np.asarray(evaluate(*X.ravel(), *G.ravel(), *gamma, EPS), dtype=float).reshape(rows, cols)
    dX, _, _ = _normalize_backward(X, G, gamma, axis)
    np.testing.assert_allclose(got, dX, rtol=1e-12, atol=1e-12)


# --- the document's rows --------------------------------------------------------------------


def _balanced(tex: str) -> bool:
    depth = 0
    for char in re.sub(r"\\[{}]", "", tex):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            return False
    pairs = [len(re.findall(rf"\\{word}(?![a-z])", tex)) for word in ("left", "right")]
    return depth == 0 and pairs[0] == pairs[1]


def test_equations_are_keyed_by_kind_and_well_formed() -> None:
    keys = []
    for kind in rules.KINDS:
        rule = rules.derive_rule(kind)
        assert rule.equations == rules.EQUATIONS[kind]
        for key, title, tex in rule.equations:
            assert key.startswith(f"{kind}.")
            assert title and _balanced(tex), key
            keys.append(key)
    assert len(keys) == len(set(keys))
    for kind in rules.KINDS:
        assert f"{kind}.forward" in keys and f"{kind}.backward" in keys
    running = dict((k, t) for k, _, t in rules.EQUATIONS["batch_norm"])["batch_norm.running"]
    assert r"\frac{B}{B - 1}" in running


def test_instance_prints_with_clean_names() -> None:
    rule = rules.derive_rule("layer_norm")
    tex = rule.latex(rule.vjp[0])
    assert r"\gamma_{1}" in tex and r"\epsilon" in tex and "g_{1}" in tex
    assert "gamma1" not in tex
