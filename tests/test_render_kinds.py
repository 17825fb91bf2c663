"""The derivation document for networks with layer kinds (DESIGN §2b): every kind's sections
appear with their equations, the numbering holds, the .tex compiles, and rendering never
generates or executes the module."""

from __future__ import annotations

import builtins
import dataclasses
import re
import subprocess
import sys
import types

import pytest

from symbackprop import checkpoint, codegen, render, rules
from symbackprop.codegen import generate
from symbackprop.derive import derive
from symbackprop.layers import LAYERS
from symbackprop.spec import bundled_examples, from_dict, load_spec

# the brief's network: dense -> residual[dense, layer_norm] -> dropout -> batch_norm -> softmax
MIXED = {
    "name": "mixed",
    "inputs": 4,
    "loss": "cross_entropy",
    "layers": [
        {"units": 3, "activation": "relu"},
        {
            "kind": "residual",
            "block": [{"units": 3, "activation": "tanh"}, {"kind": "layer_norm"}],
        },
        {"kind": "dropout", "rate": 0.25},
        {"kind": "batch_norm"},
        {"units": 2, "activation": "softmax"},
    ],
}


def _spec(name: str, layers: list, **extra: object) -> dict:
    return {"name": name, "inputs": 3, "loss": "mse", "layers": layers, **extra}


OTHERS = {
    "layer_norm_only": _spec("ln", [{"units": 4, "activation": "tanh"}, {"kind": "layer_norm"}]),
    "batch_norm_only": _spec("bn", [{"kind": "batch_norm"}, {"units": 2, "activation": "sigmoid"}]),
    "dropout_only": _spec(
        "dr", [{"units": 3, "activation": "relu"}, {"kind": "dropout", "rate": 0.5}, {"units": 1}]
    ),
    # RMS norm (no mean, no beta) inside a residual, after batch norm, and as the output layer
    "rms_norm": _spec(
        "rms",
        [
            {"units": 3, "activation": "tanh"},
            {
                "kind": "residual",
                "block": [{"units": 3, "activation": "relu"}, {"kind": "rms_norm"}],
            },
            {"kind": "batch_norm"},
            {"kind": "rms_norm"},
        ],
    ),
    # a residual as the output layer, nested residuals, a dense layer without a bias, l2 and
    # an activation with a parameter
    "nested": _spec(
        "nested",
        [
            {"units": 3, "activation": {"name": "leaky_relu", "slope": 0.2}},
            {
                "kind": "residual",
                "block": [
                    {"kind": "residual", "block": [{"units": 3, "activation": "tanh"}]},
                    {"units": 3, "activation": "relu", "bias": False},
                ],
            },
        ],
        l2=0.01,
    ),
    # a wide one: past the neuron-level limit
    "wide": {
        "name": "wide",
        "inputs": 20,
        "loss": "cross_entropy",
        "layers": [
            {"units": 16, "activation": "gelu"},
            {"kind": "layer_norm"},
            {"kind": "residual", "block": [{"units": 16, "activation": "silu"}]},
            {"kind": "dropout", "rate": 0.1},
            {"units": 10, "activation": "softmax"},
        ],
    },
}
CASES = {"mixed": MIXED, **OTHERS}


def _derivation(name: str):  # noqa: ANN202
    return derive(from_dict(CASES[name]))


@pytest.fixture(scope="module", params=list(CASES))
def rendered(request: pytest.FixtureRequest) -> tuple:
    d = _derivation(request.param)
    return d, render.render_tex(d), render.render_markdown(d)


@pytest.fixture(scope="module")
def mixed() -> tuple:
    d = _derivation("mixed")
    return d, render.render_tex(d), render.render_markdown(d)


def _tags(text: str) -> list[str]:
    return re.findall(r"\\tag\{([0-9.]+)\}", text)


def _sections(md: str) -> dict[str, str]:
    """Section title -> its Markdown text, aligned rows joined back (``left &right``)."""
    parts = re.split(r"^## \d+\. (.*)$", md.replace(" &", ""), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _kinds(d) -> list[str]:  # noqa: ANN001
    used = {layer.kind for layer in d.network.flat}
    return [k for k in LAYERS if k != "dense" and k in used]


def test_numbering_holds_for_every_kind(rendered: tuple) -> None:
    d, tex, md = rendered
    core = {str(e.number) for e in d.equations}
    for text in (tex, md):
        tags = _tags(text)
        assert len(tags) == len(set(tags)), "equation numbers must be unique"
        assert core <= set(tags), core - set(tags)
        assert all(t in core or re.fullmatch(r"\d+\.\d+", t) for t in tags)
        assert all(t.split(".")[0] in core for t in tags)
    assert _tags(tex) == _tags(md)


def test_each_kind_has_its_sections_and_equations(rendered: tuple) -> None:
    d, _, md = rendered
    sections = _sections(md)
    for kind in _kinds(d):
        title = LAYERS[kind].title
        name = f"The backward rule of {'the ' if kind == 'residual' else ''}{title}"
        assert name in sections, (name, list(sections))
        body = sections[name]
        # its backward rule (core) and the instance's derivation (sub-equations) live here
        backward = d.number(f"{kind}.backward")
        assert rf"\tag{{{backward}}}" in body
        assert re.search(rf"\\tag\{{{backward}\.\d+\}}", body)
        assert "SymPy differentiated" in body and "reduced to 0 exactly" in body
        # its forward pass is in the forward section, and every layer of the kind is there
        forward = sections["The forward pass"]
        assert rf"\tag{{{d.number(f'{kind}.forward')}}}" in forward
        for layer in d.network.flat:
            if layer.kind == kind:
                assert re.search(rf"a\^\{{\({layer.index}\)\}}(_s)? = ", forward), layer
        # and its step in the backward pass (a layer reading x passes no error on)
        recursion = sections["The backward recursion and the gradients"]
        steps = re.search(rf"\\tag\{{{backward}\.\d+\}}", recursion)
        passes = [x for x in d.network.flat if x.kind == kind and x.sources[0] != 0]
        assert bool(steps) == bool(passes or kind == "residual")
    assert "A worked example" not in sections  # plain networks only, and the document says so
    assert "neuron by neuron" in sections["The forward pass"]


def test_the_network_table_lists_every_layer(rendered: tuple) -> None:
    d, _, md = rendered
    table = _sections(md)["The network and the notation"]
    rows = [line for line in table.splitlines() if re.match(r"\| \$\d+\$ \|", line)]
    assert len(rows) == d.network.depth
    for row, layer in zip(rows, d.network.flat, strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == f"${layer.index}$"
        assert cells[1] == LAYERS[layer.kind].title
        assert cells[2] == ", ".join("$x$" if s == 0 else f"$a^{{({s})}}$" for s in layer.sources)
        assert cells[3] == f"${layer.units}$"


def test_residual_gradient_splits_and_adds(mixed: tuple) -> None:
    d, _, md = mixed
    sections = _sections(md)
    rule = sections["The backward rule of the residual connection"]
    assert "multivariable chain rule" in rule
    assert r"\underbrace{g_{1}}_{\text{skip}}" in rule
    assert r"_{\text{through the block}}" in rule
    # a^(1) feeds the block's first layer (3) and the skip of residual 2: the two add
    chain = sections["The chain rule"]
    assert "$a^{(1)}$, read by layer 2" in chain and "and by layer 3" in chain
    recursion = sections["The backward recursion and the gradients"]
    total = (
        r"\frac{\partial \ell}{\partial a^{(1)}} = \frac{\partial \ell}{\partial a^{(1)}}"
        r"\Big|_{2} + \frac{\partial \ell}{\partial a^{(1)}}\Big|_{3} = "
        r"\frac{\partial \ell}{\partial a^{(2)}} + W^{(3)\top} \delta^{(3)}"
    )
    assert total in recursion
    # the block's last layer (4) receives the residual's error unchanged
    assert r"\frac{\partial \ell}{\partial a^{(4)}} = \frac{\partial \ell}{\partial a^{(2)}}" in (
        recursion
    )


def test_dropout_masks_and_batch_norm_couples(mixed: tuple) -> None:
    _, _, md = mixed
    sections = _sections(md)
    dropout = sections["The backward rule of dropout"]
    assert r"= g \odot m" in dropout and r"\operatorname{diag}(m)" in dropout
    recursion = sections["The backward recursion and the gradients"]
    assert (
        r"\frac{\partial \ell}{\partial a^{(2)}} = \frac{\partial \ell}{\partial a^{(5)}} "
        r"\odot m^{(5)}" in recursion
    )
    batch = sections["The backward rule of batch normalization"]
    assert "derived over the batch" in batch
    # an entry across samples is shown, and it is not zero; entries across features are
    assert r"\frac{\partial y_{1,1}}{\partial x_{2,1}} = - \frac{" in batch
    assert r"\frac{\partial y_{1,1}}{\partial x_{1,2}} = 0" in batch
    assert r"B\, \frac{\partial L}{\partial a^{(l-1)}_s}" in batch


def test_document_names_the_equations_the_module_cites(mixed: tuple) -> None:
    d, _, md = mixed
    cited = {int(n) for g in re.findall(r"\(eq\. ([0-9, ]+)\)", generate(d)) for n in g.split(",")}
    sentence = re.search(r"cites equations ([^.]*) in its comments", md)
    assert sentence is not None
    assert {int(n) for n in re.findall(r"\((\d+)\)", sentence.group(1))} == cited


def test_a_wrong_jacobian_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The document prints a closed-form Jacobian only after SymPy's agrees with it."""
    real = rules.derive_rule("layer_norm")
    wrong = dataclasses.replace(real, jacobian=real.jacobian.T)  # the transpose: not J
    monkeypatch.setattr(render, "_rule", lambda kind: wrong if kind == "layer_norm" else real)
    with pytest.raises(RuntimeError, match="layer normalization"):
        render.render_markdown(_derivation("layer_norm_only"))


def test_identity_runs_follow_the_wiring() -> None:
    identity = {"units": 2, "activation": "identity"}
    stacked = _spec("s", [identity, identity, {"kind": "layer_norm"}, identity, identity])
    assert render.identity_runs(derive(from_dict(stacked))) == [(1, 2), (4, 5)]
    # layer 3 (the block's first) reads layer 1, not layer 2 (the residual)
    apart = _spec("a", [identity, {"kind": "residual", "block": [identity]}])
    assert render.identity_runs(derive(from_dict(apart))) == []
    md = render.render_markdown(derive(from_dict(stacked)))
    assert "Layers 4 and 5 are both identity layers" in md
    assert r"W^{(5)}\left(W^{(4)} a^{(3)} + b^{(4)}\right)" in md


def _module_code(source: object) -> bool:
    """Does ``exec`` get a generated module (source text or its compiled code)?"""
    if isinstance(source, str):
        return "def init_params" in source or "generated by symbackprop" in source
    if isinstance(source, types.CodeType):
        return {"init_params", "gradients"} <= set(source.co_names)
    return False


def test_render_never_generates_or_executes_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    derivations = [derive(load_spec(name)) for name in bundled_examples()]
    derivations.append(_derivation("mixed"))
    real_exec = builtins.exec

    def guarded_exec(source: object, *args: object, **kwargs: object) -> object:
        if _module_code(source):
            raise AssertionError("a generated module was executed")
        return real_exec(source, *args, **kwargs)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("render called codegen.generate / checkpoint.load_module")

    # the guard itself catches a module being executed
    source = generate(derivations[0])
    monkeypatch.setattr(builtins, "exec", guarded_exec)
    with pytest.raises(AssertionError, match="was executed"):
        checkpoint.load_module(source)
    monkeypatch.setattr(codegen, "generate", refuse)
    monkeypatch.setattr(checkpoint, "load_module", refuse)
    for d in derivations:
        assert render.render_tex(d).rstrip().endswith(r"\end{document}")
        assert "## 1. The network and the notation" in render.render_markdown(d)
    assert sum(1 for d in derivations if render._small(d.network)) >= 3  # worked examples ran


def test_render_does_not_import_codegen() -> None:
    code = "import sys, symbackprop.render; print('symbackprop.codegen' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_markdown_math_is_simple(mixed: tuple) -> None:
    _, _, md = mixed
    assert r"\begin{align}" not in md
    assert md.count("$$") % 2 == 0
    for block in re.findall(r"\$\$\n(.*?)\n\$\$", md, flags=re.S):
        assert block.count(r"\tag{") + block.count(r"\tag*{") == 1  # the summary's: tag*


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mixed", "nested", "wide"])
def test_pdflatex_compiles_without_overfull_boxes(name: str, tmp_path) -> None:  # noqa: ANN001
    import shutil

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed")
    tex = render.render_tex(_derivation(name))
    path = tmp_path / "doc.tex"
    path.write_text(tex, encoding="utf-8")
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", path.name],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    log = path.with_suffix(".log").read_text(encoding="utf-8", errors="replace")
    assert proc.returncode == 0, next(
        (x for x in log.splitlines() if x.startswith("!")), log[-2000:]
    )
    overfull = [float(v) for v in re.findall(r"Overfull \\hbox \(([0-9.]+)pt too wide\)", log)]
    assert all(v <= 5.0 for v in overfull), overfull


def test_the_composite_brackets_what_a_matrix_multiplies() -> None:
    chain = _sections(render.render_markdown(_derivation("wide")))["The chain rule"]
    # W^(6) multiplies the dropout's output, an elementwise product of a sum
    assert r"W^{(6)} \left(m^{(5)} \odot \left(a^{(2)} + f_{4}" in chain
    assert r"a^{(2)} = \operatorname{LN}_{2}\left(f_{1}\left(W^{(1)} x + b^{(1)}\right)\right)" in (
        chain
    )
