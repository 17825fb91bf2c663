"""The layer-kind registry: what each kind of layer is, as data (DESIGN §2b).

One ``LayerKind`` entry per kind holds its fields, its trainable parameters and state, its
forward map as SymPy expressions (neuron level: the exact witness and the document read it),
its PyTorch equivalent for the witness, and the name of its template block
(``templates/numpy/layers/<kind>.py.j2``).  Its local backward rule is derived by SymPy in
``symbackprop.rules``.  The spec's ``FlatLayer`` (numbering, sources, widths) says where a
layer sits; this module says what it computes.

Scalar names (one place: here and ``symbackprop.graph``): ``gamma<l>_<i>``, ``beta<l>_<i>``
for normalization layers, ``m<l>_<i>`` for a dropout mask entry (its value is 0 or
1/(1 - rate), drawn by the module), ``mu<l>``/``var<l>`` for a layer norm's statistics of one
sample (``mu<l>_<i>``/``var<l>_<i>`` for batch norm's per-feature batch statistics).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sympy

from symbackprop.spec import KINDS, FlatLayer, layer_parameters

Vector = list[sympy.Expr]


Buffer = tuple[str, str, str | None]  # name, shape (Python source in `batch`), own dtype


def _norm_buffers(layer: FlatLayer) -> list[Buffer]:
    i, n = layer.index, layer.units
    stat = "(batch, 1)" if layer.kind == "layer_norm" else f"({n},)"
    rows = [(f"{k}{i}", f"(batch, {n})", None) for k in ("A", "dA", "H", "T")]
    rows += [(f"{k}{i}", stat, None) for k in ("M", "R", "S", "Q")]
    if layer.kind == "batch_norm":
        rows.append((f"V{i}", stat, None))
    return rows + [(f"dgamma{i}", f"({n},)", None), (f"dbeta{i}", f"({n},)", None)]


def _norm_fields(layer: FlatLayer) -> dict[str, object]:
    spec = layer.layer
    return {
        "eps": repr(float(spec.eps)),
        "inverse": repr(1.0 / layer.units),
        "momentum": spec.momentum,
    }


def _rms_buffers(layer: FlatLayer) -> list[Buffer]:
    i, n = layer.index, layer.units
    rows = [(f"{k}{i}", f"(batch, {n})", None) for k in ("A", "dA", "H", "T")]
    return rows + [
        (f"R{i}", "(batch, 1)", None),
        (f"Q{i}", "(batch, 1)", None),
        (f"dgamma{i}", f"({n},)", None),
    ]


def _dropout_buffers(layer: FlatLayer) -> list[Buffer]:
    i, shape = layer.index, f"(batch, {layer.units})"
    rows: list[Buffer] = [(f"A{i}", shape, None), (f"dA{i}", shape, None)]
    if layer.layer.rate:
        rows += [(f"M{i}", shape, None), (f"D{i}", shape, "numpy.float64")]
        rows.append((f"K{i}", shape, "numpy.bool_"))
    return rows


def _dropout_fields(layer: FlatLayer) -> dict[str, object]:
    rate = layer.layer.rate
    return {"rate": rate, "scale": repr(1.0 / (1.0 - rate)) if rate else ""}


def _output_buffers(layer: FlatLayer) -> list[Buffer]:
    shape = f"(batch, {layer.units})"
    return [(f"A{layer.index}", shape, None), (f"dA{layer.index}", shape, None)]


def _no_fields(layer: FlatLayer) -> dict[str, object]:
    return {}


# --- image kinds (DESIGN §2c) ----------------------------------------------------------------
# Inside the generated module an image is a (channels, rows, columns, batch) array: every
# strided view (im2col, col2im, the pooling windows) then moves runs of whole batches, and a
# convolution is one matrix product of (filters, C kh kw) by (C kh kw, rows columns batch).
# X itself comes as (batch, C, H, W).


def _image_geometry(layer: FlatLayer) -> dict[str, object]:
    """The sizes a conv or pool block needs: input (C, H, W), output (Ho, Wo), window."""
    spec = layer.layer
    channels, height, width = layer.in_shape
    out_shape = layer.shape
    kh, kw = spec.kernel
    sh, sw = spec.stride
    ph, pw = spec.padding
    fields: dict[str, object] = {
        "C": channels,
        "H": height,
        "W": width,
        "Ho": out_shape[1],
        "Wo": out_shape[2],
        "kh": kh,
        "kw": kw,
        "sh": sh,
        "sw": sw,
        "ph": ph,
        "pw": pw,
        "from_input": layer.sources[0] == 0,
    }
    fields["offsets"] = [(i, j) for i in range(kh) for j in range(kw)]
    # every input position in exactly one window: the backward pass may write, not add
    fields["tiles"] = (
        sh == kh and sw == kw and fields["Ho"] * sh == height and fields["Wo"] * sw == width
    )
    return fields


def _conv_fields(layer: FlatLayer) -> dict[str, object]:
    fields = _image_geometry(layer)
    fields["F"] = layer.layer.filters
    fields["CKK"] = fields["C"] * fields["kh"] * fields["kw"]
    fields["padded"] = bool(fields["ph"] or fields["pw"] or fields["from_input"])
    return fields


def _image_shape(channels: object, rows: object, columns: object) -> str:
    return f"({channels}, {rows}, {columns}, batch)"


def _conv_buffers(layer: FlatLayer) -> list[Buffer]:
    """The padded input, the im2col columns and, when it sends an error back, their
    gradients (its Z, A and dZ come from its activation's kernels, in codegen)."""
    f = _conv_fields(layer)
    i = layer.index
    rows, columns = f["H"] + 2 * f["ph"], f["W"] + 2 * f["pw"]  # type: ignore[operator]
    pixels = f["Ho"] * f["Wo"]  # type: ignore[operator]
    out: list[Buffer] = []
    if f["padded"]:
        out.append((f"P{i}", _image_shape(f["C"], rows, columns), None))
    out.append((f"K{i}", f"({f['CKK']}, batch * {pixels})", None))
    if not f["from_input"]:
        out.append((f"dK{i}", f"({f['CKK']}, batch * {pixels})", None))
        if f["ph"] or f["pw"]:
            out.append((f"dP{i}", _image_shape(f["C"], rows, columns), None))
    return out


def _pool_buffers(layer: FlatLayer) -> list[Buffer]:
    f = _image_geometry(layer)
    i = layer.index
    shape = _image_shape(f["C"], f["Ho"], f["Wo"])
    out: list[Buffer] = [(f"A{i}", shape, None), (f"dA{i}", shape, None)]
    if f["from_input"]:  # X as (C, H, W, batch)
        out.append((f"I{i}", _image_shape(f["C"], f["H"], f["W"]), None))
    if layer.kind == "max_pool2d":  # which offset of each window holds its first maximum
        out += [(f"M{i}", shape, "numpy.bool_"), (f"E{i}", shape, "numpy.bool_")]
    elif not f["tiles"]:
        out.append((f"T{i}", shape, None))
    return out


def _flatten_fields(layer: FlatLayer) -> dict[str, object]:
    channels, height, width = layer.in_shape
    return {"C": channels, "H": height, "W": width, "from_input": layer.sources[0] == 0}


@dataclass(frozen=True)
class LayerKind:
    """One kind of layer.  ``buffers`` and ``fields`` feed its template block (the dense
    kind's come from its activation's kernels, in codegen)."""

    name: str
    title: str  # for documents: "layer normalization"
    torch: str  # the PyTorch equivalent, as DESIGN §2b names it
    init: str  # how init_params fills its parameters
    couples_batch: bool = False  # its output for one sample depends on the others (batch norm)
    random: bool = False  # draws from rng in training mode (dropout)
    modes: bool = False  # training and inference differ (batch norm, dropout)
    buffers: Callable[[FlatLayer], list[Buffer]] = _output_buffers  # its workspace arrays
    fields: Callable[[FlatLayer], dict[str, object]] = _no_fields  # its template's values

    @property
    def template(self) -> str:
        return f"numpy/layers/{self.name}.py.j2"


LAYERS: dict[str, LayerKind] = {
    entry.name: entry
    for entry in (
        LayerKind(
            "dense",
            "dense layer",
            "nn.Linear(n_in, units) + the activation",
            "W He-normal (ReLU family) or Xavier-uniform, b zeros",
        ),
        LayerKind(
            "layer_norm",
            "layer normalization",
            "nn.LayerNorm(n, eps)",
            "gamma ones, beta zeros",
            buffers=_norm_buffers,
            fields=_norm_fields,
        ),
        LayerKind(
            "batch_norm",
            "batch normalization",
            "nn.BatchNorm1d(n, eps, momentum)",
            "gamma ones, beta zeros; running mean zeros, running variance ones",
            couples_batch=True,
            modes=True,
            buffers=_norm_buffers,
            fields=_norm_fields,
        ),
        LayerKind(
            "dropout",
            "dropout",
            "nn.Dropout(rate)",
            "no parameters",
            random=True,
            modes=True,
            buffers=_dropout_buffers,
            fields=_dropout_fields,
        ),
        LayerKind("residual", "residual connection", "x + nn.Sequential(block)(x)", "none"),
        LayerKind(
            "rms_norm",
            "root-mean-square normalization",
            "nn.RMSNorm(n, eps)",
            "gamma ones",
            buffers=_rms_buffers,
            fields=_norm_fields,
        ),
        LayerKind(
            "conv2d",
            "convolutional layer",
            "nn.Conv2d(C, filters, kernel, stride, padding) + the activation",
            "W He-normal (ReLU family) or Xavier-uniform over C*kh*kw inputs, b zeros",
            buffers=_conv_buffers,
            fields=_conv_fields,
        ),
        LayerKind(
            "max_pool2d",
            "max pooling",
            "nn.MaxPool2d(kernel, stride)",
            "no parameters",
            buffers=_pool_buffers,
            fields=_image_geometry,
        ),
        LayerKind(
            "avg_pool2d",
            "average pooling",
            "nn.AvgPool2d(kernel, stride)",
            "no parameters",
            buffers=_pool_buffers,
            fields=_image_geometry,
        ),
        LayerKind("flatten", "flattening", "nn.Flatten()", "no parameters", fields=_flatten_fields),
    )
}
if tuple(LAYERS) != KINDS:  # pragma: no cover - the spec's list of kinds must match
    raise RuntimeError(f"symbackprop.spec.KINDS {KINDS} != layer registry {tuple(LAYERS)}")


def kind(layer: FlatLayer) -> LayerKind:
    return LAYERS[layer.kind]


def parameters(layer: FlatLayer) -> dict[str, tuple[int, ...]]:
    """Trainable parameters of a layer by code name (W3, b3, gamma4, ...)."""
    return layer_parameters(layer)


# --- scalar symbols ----------------------------------------------------------------------


def gamma(layer: int, i: int) -> sympy.Symbol:
    return sympy.Symbol(f"gamma{layer}_{i}", real=True)


def beta(layer: int, i: int) -> sympy.Symbol:
    return sympy.Symbol(f"beta{layer}_{i}", real=True)


def mask(layer: int, i: int) -> sympy.Symbol:
    return sympy.Symbol(f"m{layer}_{i}", real=True)


# --- forward maps (SymPy, exact) ---------------------------------------------------------


def mean(values: Sequence[sympy.Expr]) -> sympy.Expr:
    return sympy.Add(*values) / len(values)


def biased_variance(values: Sequence[sympy.Expr], mu: sympy.Expr) -> sympy.Expr:
    return sympy.Add(*((v - mu) ** 2 for v in values)) / len(values)


def normalize(
    x: Sequence[sympy.Expr],
    mu: sympy.Expr,
    var: sympy.Expr,
    eps: float | sympy.Expr,
    g: sympy.Expr,
    b: sympy.Expr,
) -> Callable[[int], sympy.Expr]:
    """i -> g_i (x_i - mu) / sqrt(var + eps) + b_i (g, b: callables of i)."""
    root = sympy.sqrt(var + eps)
    return lambda i: g(i) * (x[i] - mu) / root + b(i)


def layer_norm(
    layer: FlatLayer, x: Vector, eps: sympy.Expr | None = None
) -> tuple[sympy.Expr, sympy.Expr, Vector]:
    """(mean, biased variance, output) of one sample's n features."""
    e = sympy.Float(layer.layer.eps) if eps is None else eps
    mu = mean(x)
    var = biased_variance(x, mu)
    out = normalize(
        x, mu, var, e, lambda i: gamma(layer.index, i + 1), lambda i: beta(layer.index, i + 1)
    )
    return mu, var, [out(i) for i in range(len(x))]


def mean_square(values: Sequence[sympy.Expr]) -> sympy.Expr:
    return sympy.Add(*(v**2 for v in values)) / len(values)


def rms_norm(
    layer: FlatLayer, x: Vector, eps: sympy.Expr | None = None
) -> tuple[sympy.Expr, Vector]:
    """(mean of the squares, output) of one sample's n features: gamma x / sqrt(ms + eps)."""
    e = sympy.Float(layer.layer.eps) if eps is None else eps
    ms = mean_square(x)
    out = normalize(
        x, sympy.S.Zero, ms, e, lambda i: gamma(layer.index, i + 1), lambda i: sympy.S.Zero
    )
    return ms, [out(i) for i in range(len(x))]


def batch_norm(
    layer: FlatLayer, X: list[Vector], eps: sympy.Expr | None = None
) -> tuple[Vector, Vector, list[Vector]]:
    """(per-feature batch means, biased batch variances, outputs of every sample)."""
    e = sympy.Float(layer.layer.eps) if eps is None else eps
    n = len(X[0])
    mus = [mean([row[i] for row in X]) for i in range(n)]
    variances = [biased_variance([row[i] for row in X], mus[i]) for i in range(n)]
    outputs = []
    for row in X:
        outputs.append(
            [
                gamma(layer.index, i + 1) * (row[i] - mus[i]) / sympy.sqrt(variances[i] + e)
                + beta(layer.index, i + 1)
                for i in range(n)
            ]
        )
    return mus, variances, outputs


def dropout(layer: FlatLayer, x: Vector) -> Vector:
    """x_i m_i, with m_i the mask entry (0 or 1/(1 - rate)) the module drew."""
    return [xi * mask(layer.index, i + 1) for i, xi in enumerate(x)]


def residual(x: Vector, block_output: Vector) -> Vector:
    return [xi + yi for xi, yi in zip(x, block_output, strict=True)]


# --- PyTorch equivalents (the witness; torch is imported by the caller) -------------------


def torch_forward(
    layer: FlatLayer,
    torch: Any,
    tensors: dict[str, Any],
    inputs: list[Any],
    *,
    activation: Callable[[Any], Any] | None = None,
    masks: dict[int, Any] | None = None,
    training: bool = True,
) -> Any:
    """The layer's output with torch's own modules' functions (float64 tensors)."""
    F = torch.nn.functional
    index, spec = layer.index, layer.layer
    if layer.kind == "dense":
        z = F.linear(inputs[0], tensors[f"W{index}"], tensors.get(f"b{index}"))
        return z if activation is None else activation(z)
    if layer.kind == "layer_norm":
        return F.layer_norm(
            inputs[0], (layer.units,), tensors[f"gamma{index}"], tensors[f"beta{index}"], spec.eps
        )
    if layer.kind == "rms_norm":
        return F.rms_norm(inputs[0], (layer.units,), tensors[f"gamma{index}"], spec.eps)
    if layer.kind == "batch_norm":
        return F.batch_norm(
            inputs[0],
            tensors[f"mean{index}"],
            tensors[f"var{index}"],
            tensors[f"gamma{index}"],
            tensors[f"beta{index}"],
            training=training,
            momentum=spec.momentum,
            eps=spec.eps,
        )
    if layer.kind == "dropout":
        if not training or spec.rate == 0:
            return inputs[0]
        keep = masks[index] if masks is not None else None
        if keep is None:
            return F.dropout(inputs[0], spec.rate, training=True)
        return inputs[0] * keep / (1 - spec.rate)
    if layer.kind == "conv2d":
        x = inputs[0].reshape(-1, *layer.in_shape)
        z = F.conv2d(
            x,
            tensors[f"W{index}"],
            tensors.get(f"b{index}"),
            stride=tuple(spec.stride),
            padding=tuple(spec.padding),
        )
        return z if activation is None else activation(z)
    if layer.kind == "max_pool2d":
        x = inputs[0].reshape(-1, *layer.in_shape)
        return F.max_pool2d(x, tuple(spec.kernel), tuple(spec.stride))
    if layer.kind == "avg_pool2d":
        x = inputs[0].reshape(-1, *layer.in_shape)
        return F.avg_pool2d(x, tuple(spec.kernel), tuple(spec.stride))
    if layer.kind == "flatten":
        return torch.flatten(inputs[0], start_dim=1)  # C order, as nn.Flatten
    return inputs[0] + inputs[1]


# --- dropout masks -------------------------------------------------------------------------


def draw_masks(flat: Sequence[FlatLayer], order: Sequence[int], rng: Any, batch: int) -> dict:
    """The keep masks (bool, (batch, n)) the generated module draws from ``rng``.

    The module's rule (README "Layer kinds"): in training mode, for every dropout layer of
    rate > 0 in the forward pass's order, u = rng.random((batch, n)) in float64 and
    keep = u >= rate.  Generators in the same state therefore give the same masks.
    """
    masks = {}
    for index in order:
        layer = flat[index - 1]
        if layer.kind == "dropout" and layer.layer.rate > 0:
            masks[index] = rng.random((batch, layer.units)) >= layer.layer.rate
    return masks
