"""A sixth layer kind, rms_norm, end to end (issue 9: what a new kind touches).

a = gamma * x / sqrt(mean(x^2) + eps) over the n features of one sample, as
torch.nn.RMSNorm(n, eps=eps).  Its spec fields and bad input, its backward rule derived by
SymPy and proven, its generated code against torch.nn.RMSNorm built by hand (nothing here
uses symbackprop's own PyTorch witness), and the certificate with all three witnesses.
"""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import sympy

from symbackprop import layers, rules
from symbackprop.checkpoint import load_module
from symbackprop.cli import main
from symbackprop.codegen import generate
from symbackprop.derive import derive
from symbackprop.errors import InputError
from symbackprop.layers import draw_masks
from symbackprop.spec import KINDS, from_dict, to_dict
from symbackprop.verify import certify

ROOT = Path(__file__).resolve().parent.parent
EPS = 1e-5

ALONE = [{"kind": "rms_norm"}]  # the whole network: gamma is its only parameter
BETWEEN = [
    {"units": 5, "activation": "tanh"},
    {"kind": "rms_norm"},
    {"units": 3, "activation": "softmax"},
]
RESIDUAL = [
    {"units": 4, "activation": "relu"},
    {
        "kind": "residual",
        "block": [{"units": 4, "activation": "tanh"}, {"kind": "rms_norm", "eps": 1e-3}],
    },
    {"units": 3, "activation": "softmax"},
]
MIXED = [
    {"units": 5, "activation": {"name": "leaky_relu", "slope": 0.2}},
    {"kind": "batch_norm", "momentum": 0.2},
    {"kind": "rms_norm", "eps": 1e-4},
    {"kind": "dropout", "rate": 0.3},
    {"kind": "residual", "block": [{"units": 5, "activation": "elu"}, {"kind": "rms_norm"}]},
    {"units": 3, "activation": "softmax"},
]
NETWORKS = {"alone": ALONE, "between": BETWEEN, "residual": RESIDUAL, "mixed": MIXED}


def spec_for(layer_list, inputs=4):
    loss = "mse" if layer_list is ALONE else "cross_entropy"
    return from_dict({"name": "rms", "inputs": inputs, "loss": loss, "layers": layer_list})


# --- the spec ---------------------------------------------------------------------------------


def test_rms_norm_is_a_kind_with_gamma_only():
    assert "rms_norm" in KINDS and "rms_norm" in layers.LAYERS
    spec = spec_for(RESIDUAL)
    layer = spec.flat[3]
    assert (layer.kind, layer.units, layer.layer.eps, layer.path) == (
        "rms_norm",
        4,
        1e-3,
        "layers[1].block[1]",
    )
    assert layers.parameters(layer) == {"gamma4": (4,)}
    assert spec.state == {}
    assert from_dict(to_dict(spec)) == spec
    assert spec_for(ALONE).flat[0].layer.eps == EPS


def test_parameter_limit_counts_gamma_only():
    wide = [{"units": 10_000, "bias": False}] * 2 + [{"kind": "rms_norm"}]
    data = {"name": "wide", "inputs": 10_000, "loss": "mse", "layers": wide}
    with pytest.raises(InputError, match="200,010,000 trainable parameters"):  # no beta
        from_dict(data)


@pytest.mark.parametrize(
    ("layer", "path", "fragment"),
    [
        ({"kind": "rms_norm", "eps": 0}, "layers[1].eps", "expected a positive number, got 0"),
        ({"kind": "rms_norm", "eps": -1e-5}, "layers[1].eps", "expected a positive number"),
        ({"kind": "rms_norm", "eps": "small"}, "layers[1].eps", "expected a number, got 'small'"),
        ({"kind": "rms_norm", "momentum": 0.1}, "layers[1].momentum", "unknown field"),
        ({"kind": "rms_norm", "units": 5}, "layers[1].units", "unknown field for a rms_norm"),
    ],
)
def test_bad_rms_norm_fields_name_the_field(layer, path, fragment):
    data = {"name": "bad", "inputs": 3, "loss": "mse", "layers": [{"units": 3}, layer]}
    with pytest.raises(InputError) as caught:
        from_dict(data)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert fragment in message, message


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("eps = 0.0", "layers[1].block[0].eps: expected a positive number, got 0.0"),
        ("beta = 1.0", "layers[1].block[0].beta: unknown field for a rms_norm layer"),
    ],
)
def test_cli_bad_rms_norm_exits_2_with_the_field_path(tmp_path, capsys, fields, expected):
    text = (
        'name = "bad"\ninputs = 3\nloss = "mse"\n[[layers]]\nunits = 3\n'
        '[[layers]]\nkind = "residual"\n  [[layers.block]]\n  kind = "rms_norm"\n'
        f"  {fields}\n"
    )
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "bad.py"
    assert main(["codegen", str(path), "-o", str(out)]) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith(f"symbackprop: error: {expected}"), stderr
    assert not out.exists()


# --- the rule -----------------------------------------------------------------------------------


def test_rms_norm_rule_is_derived_and_proven():
    rule = rules.derive_rule("rms_norm")
    assert rule.shape == (1, 3)
    assert rules.EPS in rule.vjp.free_symbols and rules.EPS in rule.formula.free_symbols
    assert rule.vjp == sympy.ImmutableMatrix([list(rule.upstream)]) * rule.jacobian
    assert [g.name for g in rule.parameter_grads] == ["gamma"]
    for k in range(3):
        assert rules.identically_zero(rule.vjp[k] - rule.formula[k])
    assert "eps symbolic" in rule.proof
    assert rules.derive_rule("rms_norm", n=5).shape == (1, 5)  # a bigger instance holds too


def test_a_wrong_rms_norm_rule_is_refused():
    """The rule without its mean(h xhat) term (gamma treated as if it scaled x alone)."""
    rule = rules.derive_rule("rms_norm")
    x, g = rule.inputs, rule.upstream
    n = len(x)
    gamma = [layers.gamma(rules.INDEX, i + 1) for i in range(n)]
    rstd = 1 / sympy.sqrt(sympy.Add(*(v**2 for v in x)) / n + rules.EPS)
    wrong = sympy.Matrix([[g[i] * gamma[i] * rstd for i in range(n)]])
    with pytest.raises(RuntimeError, match="differ"):
        rules.check_equal(rule.vjp, wrong, "rms norm without its mean term")


def _rms_backward(X, G, gamma):
    rstd = 1 / np.sqrt((X**2).mean(axis=1, keepdims=True) + EPS)
    xhat = X * rstd
    h = G * gamma
    dX = rstd * (h - xhat * (h * xhat).mean(axis=1, keepdims=True))
    return dX, (G * xhat).sum(axis=0)


def test_rms_norm_formula_matches_finite_differences_and_the_proven_one():
    rng = np.random.default_rng(4)
    X, G, gamma = rng.normal(size=(6, 5)), rng.normal(size=(6, 5)), rng.normal(size=5)

    def loss(X_, gamma_):
        return float((G * gamma_ * X_ / np.sqrt((X_**2).mean(axis=1, keepdims=True) + EPS)).sum())

    dX, dgamma = _rms_backward(X, G, gamma)
    step = 1e-6
    for array, grad in ((X, dX), (gamma, dgamma)):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + step
            up = loss(X, gamma)
            array[index] = saved - step
            down = loss(X, gamma)
            array[index] = saved
            numeric[index] = (up - down) / (2 * step)
        np.testing.assert_allclose(grad, numeric, rtol=0, atol=1e-8)
    # the NumPy formula above is the rule's formula, on the instance's shape
    rule = rules.derive_rule("rms_norm")
    gammas = [layers.gamma(rules.INDEX, i + 1) for i in range(3)]
    evaluate = sympy.lambdify([*rule.inputs, *rule.upstream, *gammas, rules.EPS], rule.formula)
    x, g, gm = X[:1, :3], G[:1, :3], gamma[:3]
    got = np.asarray(evaluate(*x.ravel(), *g.ravel(), *gm, EPS), dtype=float).reshape(1, 3)
    np.testing.assert_allclose(got, _rms_backward(x, g, gm)[0], rtol=1e-12, atol=1e-12)


# --- the document -------------------------------------------------------------------------------


def test_the_document_derives_the_rule_and_has_no_beta():
    from symbackprop import render

    d = derive(spec_for(BETWEEN))
    md = render.render_markdown(d)
    titles = [line.split(". ", 1)[1] for line in md.splitlines() if line.startswith("## ")]
    assert "The backward rule of root-mean-square normalization" in titles
    body = md.split(". The backward rule of root-mean-square normalization\n", 1)[1].split("\n## ")[
        0
    ]
    assert rf"\tag{{{d.number('rms_norm.backward')}}}" in body
    assert rf"\tag{{{d.number('rms_norm.grad')}}}" in body
    assert r"\nu = \frac{1}{3}\left(x_{1}^2 + x_{2}^2 + x_{3}^2\right)" in body
    assert "reduced to 0 exactly" in body
    assert r"\beta" not in md  # an RMS norm has a gain and no shift
    assert "the mean square of all the features of its sample" in md


def test_the_document_refuses_a_wrong_jacobian(monkeypatch):
    """It prints the closed form only after SymPy's Jacobian agrees with it."""
    import dataclasses

    from symbackprop import render

    real = rules.derive_rule("rms_norm")
    wrong = dataclasses.replace(real, jacobian=real.jacobian.T)  # the transpose: not J
    monkeypatch.setattr(render, "_rule", lambda kind: wrong if kind == "rms_norm" else real)
    with pytest.raises(RuntimeError, match="RMS normalization, n = 3: the Jacobian"):
        render.render_markdown(derive(spec_for(BETWEEN)))


# --- the generated module against torch.nn.RMSNorm ------------------------------------------------

torch = pytest.importorskip("torch")
nn = torch.nn


class Residual(nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return x + self.block(x)


class Masked(nn.Module):
    def __init__(self, index, rate, masks):
        super().__init__()
        self.index, self.rate, self.masks = index, rate, masks

    def forward(self, x):
        if not self.training or self.rate == 0:
            return x
        return x * torch.tensor(self.masks[self.index]) / (1 - self.rate)


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "softmax": nn.Identity}


def torch_net(layer_list, params, masks, width, counter=None):
    """nn.Sequential of the spec's layers with params copied in (DESIGN §2b numbering)."""
    counter = [0] if counter is None else counter
    modules = []
    for layer in layer_list:
        counter[0] += 1
        index, kind = counter[0], layer.get("kind", "dense")
        if kind == "dense":
            linear = nn.Linear(width, layer["units"]).double()
            with torch.no_grad():
                linear.weight.copy_(torch.tensor(params[f"W{index}"]))
                linear.bias.copy_(torch.tensor(params[f"b{index}"]))
            act = layer["activation"]
            fn = nn.LeakyReLU(act["slope"]) if isinstance(act, dict) else ACTIVATIONS[act]()
            modules += [linear, fn]
            width = layer["units"]
        elif kind == "rms_norm":
            norm = nn.RMSNorm(width, eps=layer.get("eps", EPS)).double()
            with torch.no_grad():
                norm.weight.copy_(torch.tensor(params[f"gamma{index}"]))
            modules.append(norm)
        elif kind == "batch_norm":
            norm = nn.BatchNorm1d(width, momentum=layer.get("momentum", 0.1)).double()
            with torch.no_grad():
                norm.weight.copy_(torch.tensor(params[f"gamma{index}"]))
                norm.bias.copy_(torch.tensor(params[f"beta{index}"]))
                norm.running_mean.copy_(torch.tensor(params[f"mean{index}"]))
                norm.running_var.copy_(torch.tensor(params[f"var{index}"]))
            modules.append(norm)
        elif kind == "dropout":
            modules.append(Masked(index, layer["rate"], masks))
        else:
            modules.append(Residual(torch_net(layer["block"], params, masks, width, counter)))
    return nn.Sequential(*modules)


def point(spec, module, batch=7, seed=0):
    rng = np.random.default_rng(seed)
    params = module.init_params(seed=seed)
    for key, value in params.items():
        if key.startswith(("b", "beta", "mean")):
            value[...] = rng.normal(0, 0.5, value.shape)
        elif key.startswith("gamma"):
            value[...] = 1 + rng.normal(0, 0.3, value.shape)
        elif key.startswith("var"):
            value[...] = rng.uniform(0.5, 2.0, value.shape)
    X = rng.normal(size=(batch, spec.inputs))
    if spec.loss.name == "mse":
        return params, X, rng.normal(size=(batch, spec.sizes[-1]))
    return params, X, rng.integers(0, spec.sizes[-1], size=batch)


def reference(spec, layer_list, params, X, Y, seed, train=True):
    masks = draw_masks(spec.flat, spec.order, np.random.default_rng(seed), len(X))
    net = torch_net(layer_list, params, masks, spec.inputs)
    net.train(train)
    out = net(torch.tensor(X))
    if spec.loss.name == "mse":
        value = 0.5 * ((out - torch.tensor(Y)) ** 2).sum() / len(X)
    else:
        value = nn.functional.cross_entropy(out, torch.tensor(Y))
    return net, out, value


@pytest.fixture(scope="module")
def modules():
    return {name: load_module(generate(spec_for(net))) for name, net in NETWORKS.items()}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_gradients_equal_torch_rms_norm(modules, name):
    layer_list, module = NETWORKS[name], modules[name]
    spec = spec_for(layer_list)
    params, X, Y = point(spec, module)
    value, grads = module.gradients(params, X, Y, rng=np.random.default_rng(3))
    net, _, expected = reference(spec, layer_list, params, X, Y, 3)
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-12)
    named = list(net.parameters())
    assert [tuple(p.shape) for p in named] == list(module.PARAMETERS.values())
    assert list(grads) == list(module.PARAMETERS)
    for key, p in zip(module.PARAMETERS, named, strict=True):
        np.testing.assert_allclose(grads[key], p.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_forward_is_torch_in_inference_mode(modules, name):
    layer_list, module = NETWORKS[name], modules[name]
    spec = spec_for(layer_list)
    params, X, Y = point(spec, module, seed=1)
    _, out, _ = reference(spec, layer_list, params, X, Y, 1, train=False)
    got = module.forward(params, X)
    if spec.loss.name != "mse":
        out = torch.softmax(out, dim=1)
    np.testing.assert_allclose(got, out.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_float32_agrees_with_float64(modules):
    spec, module = spec_for(MIXED), modules["mixed"]
    params, X, Y = point(spec, module)
    v64, g64 = module.gradients(params, X, Y, rng=np.random.default_rng(2))
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    v32, g32 = module.gradients(p32, X, Y, rng=np.random.default_rng(2))
    assert v32 == pytest.approx(v64, rel=1e-5)
    for key in g64:
        assert g32[key].dtype == np.float32
        assert np.abs(g32[key] - g64[key]).max() <= 1e-4 * max(1, np.abs(g64[key]).max()), key


def test_generated_module_is_ruff_clean(tmp_path):
    """With the project's ruff settings; a layer norm's module too, whose init_params
    docstring ran past 100 columns as batch norm's did."""
    norm = [{"units": 3}, {"kind": "layer_norm"}, {"units": 2, "activation": "softmax"}]
    networks = {**NETWORKS, "layer_norm": norm}
    for name, layer_list in networks.items():
        (tmp_path / f"{name}.py").write_text(generate(spec_for(layer_list)), encoding="utf-8")
    command = [sys.executable, "-m", "ruff", "check", "--no-cache"]
    command += ["--config", str(ROOT / "pyproject.toml"), *sorted(map(str, tmp_path.glob("*.py")))]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All checks passed" in result.stdout, result.stdout


def test_generated_code_cites_the_rms_norm_equations():
    d = derive(spec_for(RESIDUAL))
    source = generate(d)
    for suffix in ("forward", "backward", "grad"):
        assert f"(eq. {d.number(f'rms_norm.{suffix}')})" in source, suffix
    assert d.number("rms_norm.backward") in d.cited
    assert "Layer 4: root-mean-square normalization of 4 features." in source
    assert "    Normalization layers start with gamma ones.\n" in source  # RMS norm: no beta


def _step_peak(module, spec, batch):
    params, X, Y = point(spec, module, batch=batch)
    rng = np.random.default_rng(0)
    module.train_step(params, X, Y, 0.01, rng=rng)  # the first step makes the buffers
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        module.train_step(params, X, Y, 0.01, rng=rng)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def test_no_allocation_per_step_after_warm_up():
    layer_list = [
        {"units": 128, "activation": "relu"},
        {"kind": "residual", "block": [{"units": 128, "activation": "tanh"}, {"kind": "rms_norm"}]},
        {"kind": "rms_norm"},
        {"units": 10, "activation": "softmax"},
    ]
    spec = spec_for(layer_list, inputs=32)
    module = load_module(generate(spec))
    small, large = _step_peak(module, spec, 512), _step_peak(module, spec, 2048)
    activation = 2048 * 128 * 8
    assert large - small < 4096, f"new memory grows with the batch: {small} -> {large} bytes"
    assert large < activation / 16, f"{large} bytes allocated during a step"


# --- the certificate ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_certify_passes_with_all_three_witnesses(name):
    certificate = certify(spec_for(NETWORKS[name]))
    assert certificate.witnesses == ("finite-diff", "exact", "pytorch")
    assert certificate.passed, certificate.table()
    assert {p.name for p in certificate.parameters} == set(spec_for(NETWORKS[name]).parameters)


def test_certify_fails_a_module_with_a_wrong_rms_norm_rule():
    d = derive(spec_for(BETWEEN))
    source = generate(d)
    right = certify(d, module_source=source, seed=2, batch=6)
    assert right.passed, right.table()
    old = "numpy.subtract(T2, dA2, out=T2)"  # h - xhat mean(h xhat): the mean term dropped
    assert source.count(old) == 1
    wrong = certify(d, module_source=source.replace(old, "pass"), seed=2, batch=6)
    assert not wrong.passed
    failed = {r.witness for p in wrong.parameters if p.name in ("W1", "b1") for r in p.failures()}
    assert failed == {"finite-diff", "exact", "pytorch"}, wrong.table()
    assert all(p.passed for p in wrong.parameters if p.name in ("W3", "b3")), wrong.table()
