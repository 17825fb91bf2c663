"""The symbolic network, and the one place where math names are made.

Notation (the document and the generated code share it): layer l = 1..L (numbered as DESIGN
§2b says: depth first, a residual before its block) has outputs ``a_l``; a dense layer has
weights ``W_l`` (units_l × n_in, entries w^{(l)}_{ij}), biases ``b_l``, pre-activations
``z_l = W_l a_{in} + b_l`` and activations ``a_l = f_l(z_l)``; a_0 = x.  A normalization
layer has the statistics ``mu_l``, ``var_l`` (per sample for layer norm, per feature over
the batch for batch norm; ``ms_l``, the mean square, for RMS norm) and ``gamma_l``,
``beta_l``; a dropout layer multiplies by its mask entries ``m_l``.  Indices in scalar
names are 1-based, as in a textbook.

Two scalar views, for the document and the certificate:
* the neuron-level graph: one SymPy symbol per neuron-level intermediate and one small
  expression per node (scales to thousands of parameters).  Without batch norm it is the
  graph of one sample (``neuron_graph``); with batch norm the samples are coupled and the
  graph is the whole batch as one function (``batch_graph(B)``): every per-sample symbol
  carries its sample's number (``at_sample``), the batch-norm nodes read every sample, and
  the last node is the batch's mean loss ``MEAN_LOSS``;
* ``expanded_loss``: the loss as one composite expression of the parameters (capped: SymPy's
  cost explodes with size, see the design notes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import sympy

from symbackprop import layers
from symbackprop.errors import InputError
from symbackprop.functions import IDENTITY, YHAT, Activation, Loss, X, Y, resolve
from symbackprop.spec import FlatLayer, NetworkSpec

EXPANDED_LIMIT = 50  # parameters; beyond this SymPy takes minutes to differentiate
GRAPH_LIMIT = 10_000  # parameters; the compiled exact witness: ~1 s at 10,000 on 2 samples


class SizeLimitError(InputError):
    """A scalar view was asked for a network larger than its limit."""


# --- names ---------------------------------------------------------------------------------


def matrix_name(kind: str, layer: int) -> str:
    """Code names: W1, b1, Z1, A1, dZ1, dW1, db1 (A0 is the input batch X)."""
    return f"{kind}{layer}"


@lru_cache(maxsize=1 << 16)
def weight(layer: int, i: int, j: int) -> sympy.Symbol:
    return sympy.Symbol(f"w{layer}_{i}_{j}", real=True)


@lru_cache(maxsize=1 << 16)
def conv_weight(layer: int, f: int, c: int, u: int, v: int) -> sympy.Symbol:
    """A conv kernel's entry W<l>[f, c, u, v] (1-based): w<l>_<f>_<c>_<u>_<v>."""
    return sympy.Symbol(f"w{layer}_{f}_{c}_{u}_{v}", real=True)


def bias(layer: int, i: int) -> sympy.Symbol:
    return sympy.Symbol(f"b{layer}_{i}", real=True)


def pre_activation(layer: int, i: int) -> sympy.Symbol:
    return sympy.Symbol(f"z{layer}_{i}", real=True)


def activation(layer: int, i: int) -> sympy.Symbol:
    """The output of layer ``layer`` (any kind), entry i; layer 0 is the input x."""
    if layer == 0:
        return sympy.Symbol(f"x{i}", real=True)
    return sympy.Symbol(f"a{layer}_{i}", real=True)


def target(k: int) -> sympy.Symbol:
    return sympy.Symbol(f"y{k}", real=True)


def delta(layer: int, i: int) -> sympy.Symbol:
    return sympy.Symbol(f"delta{layer}_{i}", real=True)


def norm_mean(layer: int, i: int | None = None) -> sympy.Symbol:
    """mu<l>: a layer norm's mean of one sample; mu<l>_<i>: batch norm's of feature i."""
    return sympy.Symbol(f"mu{layer}" if i is None else f"mu{layer}_{i}", real=True)


def norm_mean_square(layer: int) -> sympy.Symbol:
    """ms<l>: an RMS norm's mean of the squares of one sample."""
    return sympy.Symbol(f"ms{layer}", real=True)


def norm_variance(layer: int, i: int | None = None) -> sympy.Symbol:
    """var<l> / var<l>_<i>: the biased variance, as ``norm_mean``."""
    return sympy.Symbol(f"var{layer}" if i is None else f"var{layer}_{i}", real=True)


LOSS = sympy.Symbol("L", real=True)  # the loss of one sample
MEAN_LOSS = sympy.Symbol("Lmean", real=True)  # a batch graph's last node: the batch's mean loss
SAMPLE = "@"  # x1@2 is x1 of sample 2 in a batch graph


def at_sample(symbol: sympy.Symbol, sample: int | None) -> sympy.Symbol:
    """The symbol of one sample (1-based) in a batch graph; ``None``: the symbol itself."""
    if sample is None:
        return symbol
    return sympy.Symbol(f"{symbol.name}{SAMPLE}{sample}", real=True)


def split_sample(symbol: sympy.Symbol) -> tuple[sympy.Symbol, int | None]:
    """(the per-sample symbol, the sample) of a batch graph's symbol; (symbol, None) if shared."""
    name, mark, sample = symbol.name.partition(SAMPLE)
    if not mark:
        return symbol, None
    return sympy.Symbol(name, real=True), int(sample)


def parameter_symbols(layer: FlatLayer, weights: bool = True) -> dict[str, list[sympy.Symbol]]:
    """Scalar symbols of each trainable parameter array of a layer, row-major (``.ravel()``);
    ``weights=False`` leaves out the weight matrix (its entries are ``weight(l, i, j)``)."""
    index = layer.index
    scalar = {
        f"b{index}": lambda i: bias(index, i),
        f"gamma{index}": lambda i: layers.gamma(index, i),
        f"beta{index}": lambda i: layers.beta(index, i),
    }
    out: dict[str, list[sympy.Symbol]] = {}
    for key, shape in layers.parameters(layer).items():
        if key == f"W{index}" and len(shape) == 4:  # a conv kernel (F, C, kh, kw)
            if not weights:
                continue
            out[key] = [conv_weight(index, *(k + 1 for k in at)) for at in _indices(shape)]
        elif key == f"W{index}":
            if not weights:
                continue
            rows, cols = shape
            out[key] = [weight(index, i + 1, j + 1) for i in range(rows) for j in range(cols)]
        else:
            out[key] = [scalar[key](i + 1) for i in range(shape[0])]
    return out


def _indices(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every index of an array of ``shape`` in C (row-major) order, 0-based."""
    out: list[tuple[int, ...]] = [()]
    for size in shape:
        out = [(*at, k) for at in out for k in range(size)]
    return out


_GREEK = {"delta": r"\delta", "mu": r"\mu", "gamma": r"\gamma", "beta": r"\beta", "ms": r"\nu"}


def latex_name(symbol: sympy.Symbol) -> str:
    """w1_2_3 -> w^{(1)}_{23}; a0 is x; used for every scalar symbol in documents.

    A batch graph's sample goes in brackets: x1@2 -> x_{1}^{[2]}, a3_1@2 -> a^{(3)[2]}_{1};
    the per-sample loss L is \\ell there, and the mean loss L.
    """
    plain, sample = split_sample(symbol)
    name = plain.name
    if symbol == MEAN_LOSS:
        return "L"
    if sample is not None:
        if name == "L":
            return rf"\ell^{{[{sample}]}}"
        head, sep, rest = latex_name(plain).partition("_{")
        if "^{(" in head:
            head = head[:-1] + f"[{sample}]}}"
            return head + sep + rest
        return f"{head}{sep}{rest}^{{[{sample}]}}"
    head = name.rstrip("0123456789_")
    parts = name[len(head) :].split("_")
    if name == "L":
        return "L"
    if head in ("x", "y") and len(parts) == 1:
        return f"{head}_{{{parts[0]}}}"
    sep = "," if any(len(p) > 1 for p in parts[1:]) else ""
    sub = sep.join(parts[1:])
    if head == "var":  # the variance sigma^2: its layer joins the square in the superscript
        return rf"\sigma^{{2\,({parts[0]})}}" + (f"_{{{sub}}}" if sub else "")
    base = _GREEK.get(head, head)
    return f"{base}^{{({parts[0]})}}" + (f"_{{{sub}}}" if sub else "")


# --- the network ---------------------------------------------------------------------------


class Node:
    """One neuron-level assignment ``symbol = expr`` of the scalar graph.

    ``kind``: "z" (a dense pre-activation), "a" (a layer's output), "mu", "var" and "ms" (a
    normalization's statistics), "loss" (one sample's loss) or "mean_loss" (a batch
    graph's last node).  ``sample``: the sample (1-based) in a batch graph, None otherwise
    and for nodes the batch shares (batch norm's statistics, the mean loss).

    ``dense``: a dense pre-activation's structure, (layer n, row i, its inputs a_1..a_m,
    whether it has a bias), for z_i = sum_j w^{(n)}_{ij} a_j + b_i; None for every other
    node.  A conv2d output element has a fifth entry (filter f, taps): ``taps[k]`` is the
    kernel index (f, c, u, v), 1-based, that multiplies ``inputs[k]`` (its receptive field
    without the zero padding) and the bias is b_f: z = sum_k w^{(n)}_{taps[k]} a_k + b_f.
    ``kind`` "max" is a max pool's output, max of its window, whose gradient goes to the
    window's first maximum (row-major), as PyTorch's.  ``products`` (the factor symbols
    of each term: ((w_i1, a_1), ..., (b_i,))) and ``expr`` are then made from it on first
    use only: the exact witness reads the structure and never builds the weights' symbols
    or the SymPy sum.  Immutable; equal when symbol, expr, kind, layer and sample are.
    """

    __slots__ = ("symbol", "kind", "layer", "sample", "dense", "_products", "_expr")

    def __init__(
        self,
        symbol: sympy.Symbol,
        expr: sympy.Expr | None,
        kind: str,
        layer: int,
        sample: int | None = None,
        dense: tuple | None = None,
    ) -> None:
        if (expr is None) == (dense is None):
            raise ValueError("a node has its expression or its dense structure")
        for name, value in (
            ("symbol", symbol),
            ("kind", kind),
            ("layer", layer),
            ("sample", sample),
            ("dense", dense),
            ("_products", None),
            ("_expr", expr),
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Node is immutable ({name!r})")

    @property
    def products(self) -> tuple[tuple[sympy.Symbol, ...], ...] | None:
        if self.dense is None:
            return None
        if self._products is None:
            n, i, inputs, has_bias, *conv = self.dense
            if conv:
                f, taps = conv[0]
                products = [(conv_weight(n, *t), x) for t, x in zip(taps, inputs, strict=True)]
                if has_bias:
                    products.append((bias(n, f),))
            else:
                products = [(weight(n, i, j + 1), x) for j, x in enumerate(inputs)]
                if has_bias:
                    products.append((bias(n, i),))
            object.__setattr__(self, "_products", tuple(products))
        return self._products

    @property
    def expr(self) -> sympy.Expr:
        if self._expr is None:
            terms = [p[0] * p[1] if len(p) == 2 else p[0] for p in self.products]
            object.__setattr__(self, "_expr", sympy.Add(*terms))
        return self._expr

    def _key(self) -> tuple:
        return (self.symbol, self.expr, self.kind, self.layer, self.sample)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Node):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Node(symbol={self.symbol!r}, expr={self.expr!r}, kind={self.kind!r}, "
            f"layer={self.layer!r}, sample={self.sample!r})"
        )


Samples = tuple[int | None, ...]  # (None,): the per-sample graph; (1, ..., B): a batch graph
Outputs = list[list[sympy.Expr]]  # one layer's outputs, per sample


@dataclass(frozen=True)
class SymbolicNetwork:
    spec: NetworkSpec
    activations: tuple[Activation | None, ...]  # per layer in numbering order; None: not dense
    loss: Loss

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.spec.sizes

    @property
    def depth(self) -> int:
        """Layers in the flattened list (DESIGN §2b numbering)."""
        return len(self.spec.flat)

    @property
    def flat(self) -> tuple[FlatLayer, ...]:
        return self.spec.flat

    @property
    def plain(self) -> bool:
        return self.spec.plain

    @property
    def parameter_count(self) -> int:
        return self.spec.parameter_count

    @property
    def operations(self) -> int:
        """Multiply-adds of one sample's forward pass: the parameters of a flat network;
        C kh kw (+ 1 for the bias) per conv output element, kh kw per pooled element and
        one per flattened entry (``layer_operations``)."""
        return sum(layer_operations(layer) for layer in self.flat)

    @property
    def output_layer(self) -> FlatLayer:
        return self.spec.output_layer

    @property
    def output(self) -> Activation:
        """The output layer's activation (identity when the output layer is not dense)."""
        return self.activations[self.output_layer.index - 1] or IDENTITY

    @property
    def couples_batch(self) -> bool:
        """A layer's output for one sample depends on the others (batch norm)."""
        return any(layers.kind(layer).couples_batch for layer in self.flat)

    @property
    def dropout_layers(self) -> tuple[FlatLayer, ...]:
        """The layers that draw masks in training mode (dropout with rate > 0)."""
        return tuple(
            layer for layer in self.flat if layer.kind == "dropout" and layer.layer.rate > 0
        )

    @property
    def weight_keys(self) -> tuple[str, ...]:
        """The dense layers' weights and conv kernels (the l2 term's and the weight init's)."""
        kinds = ("dense", "conv2d")
        return tuple(f"W{layer.index}" for layer in self.flat if layer.kind in kinds)

    def activation_of(self, layer: int) -> Activation | None:
        return self.activations[layer - 1]

    def weights(self, layer: int) -> sympy.Matrix:
        rows, cols = self.sizes[layer], self.flat[layer - 1].fan_in
        return sympy.Matrix(rows, cols, lambda i, j: weight(layer, i + 1, j + 1))

    def biases(self, layer: int) -> sympy.Matrix:
        return sympy.Matrix(self.sizes[layer], 1, lambda i, _: bias(layer, i + 1))

    def parameters(self) -> dict[str, list[sympy.Symbol]]:
        """Scalar parameter symbols by code name, row-major (like ``W.ravel()``), in
        network order (a new dict of new lists each call)."""
        return {key: list(symbols) for key, symbols in self._parameters.items()}

    @cached_property
    def _parameters(self) -> dict[str, tuple[sympy.Symbol, ...]]:
        params: dict[str, tuple[sympy.Symbol, ...]] = {}
        for layer in self.flat:
            params.update({k: tuple(v) for k, v in parameter_symbols(layer).items()})
        return params

    def inputs(self, sample: int | None = None) -> list[sympy.Symbol]:
        return [at_sample(activation(0, j + 1), sample) for j in range(self.sizes[0])]

    def targets(self, sample: int | None = None) -> list[sympy.Symbol]:
        return [at_sample(target(k + 1), sample) for k in range(self.output_layer.units)]

    def masks(self, sample: int | None = None) -> dict[int, list[sympy.Symbol]]:
        """Each dropout layer's mask symbols (values 0 or 1/(1 - rate): data, not nodes)."""
        return {
            layer.index: [
                at_sample(layers.mask(layer.index, i + 1), sample) for i in range(layer.units)
            ]
            for layer in self.dropout_layers
        }

    def sample_loss(
        self, outputs: list[sympy.Expr], targets: list[sympy.Symbol] | None = None
    ) -> sympy.Expr:
        """The per-sample loss: the loss expression summed over the outputs."""
        targets = self.targets() if targets is None else targets
        return sympy.Add(
            *(
                self.loss.expr.xreplace({YHAT: out, Y: tgt})
                for out, tgt in zip(outputs, targets, strict=True)
            )
        )

    def apply(self, layer: int, z: list[sympy.Expr]) -> list[sympy.Expr]:
        """Layer ``layer``'s activation applied to its pre-activations."""
        act = self.activations[layer - 1]
        if act.softmax:
            exps = [sympy.exp(zi) for zi in z]
            total = sympy.Add(*exps)
            return [e / total for e in exps]
        return [act.expr.xreplace({X: zi}) for zi in z]

    @cached_property
    def neuron_graph(self) -> tuple[Node, ...]:
        """The graph of one sample, its loss node last; raises beyond GRAPH_LIMIT.

        A network with batch norm has none (its samples are coupled): ``batch_graph``.
        """
        _check_limit(self.parameter_count, GRAPH_LIMIT, "the neuron-level graph", self.operations)
        if self.couples_batch:
            raise ValueError(
                "batch norm couples the samples of a batch: the network's graph is "
                "batch_graph(batch), not the graph of one sample"
            )
        return _build(self, (None,))

    def batch_graph(self, batch: int) -> tuple[Node, ...]:
        """The whole batch as one function: per-sample symbols carry their sample (1..B),
        one loss node per sample, the mean loss ``MEAN_LOSS`` last."""
        _check_limit(self.parameter_count, GRAPH_LIMIT, "the neuron-level graph", self.operations)
        if batch < 1:
            raise ValueError(f"a batch graph needs at least one sample, got {batch}")
        return _batch_graph(self, batch)

    def graph(self, batch: int) -> tuple[Node, ...]:
        """The graph the exact evaluation of a batch walks: the per-sample graph (once per
        sample), or with batch norm the batch graph."""
        return self.batch_graph(batch) if self.couples_batch else self.neuron_graph

    def expanded_outputs(self) -> list[sympy.Expr]:
        """The network's outputs as composite expressions of inputs and parameters."""
        if self.plain:
            values: list[sympy.Expr] = self.inputs()
            for layer in range(1, self.depth + 1):
                z = self.weights(layer) * sympy.Matrix(values) + self.biases(layer)
                values = self.apply(layer, list(z))
            return values
        if self.couples_batch:
            raise ValueError("batch norm couples the samples: there is no per-sample composite")
        composite: dict[sympy.Symbol, sympy.Expr] = {}
        for node in _build(self, (None,)):
            composite[node.symbol] = node.expr.xreplace(composite)
        out = self.output_layer.index
        return [composite[activation(out, i + 1)] for i in range(self.output_layer.units)]

    def expanded_loss(self) -> sympy.Expr:
        """L(f_L(...f_1(x))) as one expression; raises beyond EXPANDED_LIMIT parameters."""
        _check_limit(self.parameter_count, EXPANDED_LIMIT, "the fully expanded composite")
        return self.sample_loss(self.expanded_outputs())


# --- building the graph, layer by layer ----------------------------------------------------


def _dense(net: SymbolicNetwork, layer: FlatLayer, xs: Outputs, samples: Samples) -> tuple:
    n, nodes, outs = layer.index, [], []
    for x, s in zip(xs, samples, strict=True):
        zs = []
        inputs = tuple(x)
        for i in range(1, layer.units + 1):
            zs.append(at_sample(pre_activation(n, i), s))
            nodes.append(Node(zs[-1], None, "z", n, s, (n, i, inputs, layer.layer.bias)))
        out = [at_sample(activation(n, i + 1), s) for i in range(layer.units)]
        applied = net.apply(n, zs)
        nodes.extend(Node(a, e, "a", n, s) for a, e in zip(out, applied, strict=True))
        outs.append(out)
    return nodes, outs


def _affine(n: int) -> tuple:
    return (lambda i: layers.gamma(n, i + 1)), (lambda i: layers.beta(n, i + 1))


def _layer_norm(layer: FlatLayer, xs: Outputs, samples: Samples) -> tuple:
    n, nodes, outs = layer.index, [], []
    eps = sympy.Float(layer.layer.eps)
    g, b = _affine(n)
    for x, s in zip(xs, samples, strict=True):
        mu, var = at_sample(norm_mean(n), s), at_sample(norm_variance(n), s)
        nodes.append(Node(mu, layers.mean(x), "mu", n, s))
        nodes.append(Node(var, layers.biased_variance(x, mu), "var", n, s))
        normalized = layers.normalize(x, mu, var, eps, g, b)
        out = [at_sample(activation(n, i + 1), s) for i in range(layer.units)]
        nodes.extend(Node(a, normalized(i), "a", n, s) for i, a in enumerate(out))
        outs.append(out)
    return nodes, outs


def _rms_norm(layer: FlatLayer, xs: Outputs, samples: Samples) -> tuple:
    n, nodes, outs = layer.index, [], []
    eps = sympy.Float(layer.layer.eps)
    g, _ = _affine(n)
    for x, s in zip(xs, samples, strict=True):
        ms = at_sample(norm_mean_square(n), s)
        nodes.append(Node(ms, layers.mean_square(x), "ms", n, s))
        normalized = layers.normalize(x, sympy.S.Zero, ms, eps, g, lambda i: sympy.S.Zero)
        out = [at_sample(activation(n, i + 1), s) for i in range(layer.units)]
        nodes.extend(Node(a, normalized(i), "a", n, s) for i, a in enumerate(out))
        outs.append(out)
    return nodes, outs


def _batch_norm(layer: FlatLayer, xs: Outputs, samples: Samples) -> tuple:
    n, nodes = layer.index, []
    eps = sympy.Float(layer.layer.eps)
    g, b = _affine(n)
    mus, variances = [], []
    for i in range(1, layer.units + 1):
        column = [x[i - 1] for x in xs]
        mus.append(norm_mean(n, i))
        variances.append(norm_variance(n, i))
        nodes.append(Node(mus[-1], layers.mean(column), "mu", n))
        nodes.append(Node(variances[-1], layers.biased_variance(column, mus[-1]), "var", n))
    outs = []
    for x, s in zip(xs, samples, strict=True):
        out = [at_sample(activation(n, i + 1), s) for i in range(layer.units)]
        for i, a in enumerate(out):
            expr = layers.normalize(x, mus[i], variances[i], eps, g, b)(i)
            nodes.append(Node(a, expr, "a", n, s))
        outs.append(out)
    return nodes, outs


def _dropout(layer: FlatLayer, xs: Outputs, samples: Samples) -> tuple:
    n, nodes, outs = layer.index, [], []
    for x, s in zip(xs, samples, strict=True):
        if layer.layer.rate > 0:
            kept = layers.dropout(layer, x)
            masks = {
                layers.mask(n, i + 1): at_sample(layers.mask(n, i + 1), s) for i in range(len(x))
            }
            kept = [e.xreplace(masks) for e in kept]
        else:
            kept = list(x)  # rate 0: no mask is drawn, the layer is the identity
        out = [at_sample(activation(n, i + 1), s) for i in range(layer.units)]
        nodes.extend(Node(a, e, "a", n, s) for a, e in zip(out, kept, strict=True))
        outs.append(out)
    return nodes, outs


def _residual(layer: FlatLayer, xs: Outputs, ys: Outputs, samples: Samples) -> tuple:
    n, nodes, outs = layer.index, [], []
    for x, y, s in zip(xs, ys, samples, strict=True):
        out = [at_sample(activation(n, i + 1), s) for i in range(layer.units)]
        summed = layers.residual(x, y)
        nodes.extend(Node(a, e, "a", n, s) for a, e in zip(out, summed, strict=True))
        outs.append(out)
    return nodes, outs


def _windows(layer: FlatLayer) -> list[list[tuple[int, tuple[int, int, int], int]]]:
    """Per output element of a conv or pool layer (C order over its output shape, the
    filter/channel first), its receptive field: (flat input index, kernel offset (c, u, v),
    both 0-based) for every tap inside the input (zero padding: no term)."""
    spec = layer.layer
    channels, height, width = layer.in_shape
    out_channels, rows, columns = layer.shape
    (kh, kw), (sh, sw), (ph, pw) = spec.kernel, spec.stride, spec.padding
    pooling = layer.kind != "conv2d"  # a pool reads its own channel only
    out = []
    for f in range(out_channels):
        for r in range(rows):
            for q in range(columns):
                field = []
                for c in (f,) if pooling else range(channels):
                    for u in range(kh):
                        y = r * sh - ph + u
                        if not 0 <= y < height:
                            continue
                        for v in range(kw):
                            x = q * sw - pw + v
                            if 0 <= x < width:
                                field.append(((c * height + y) * width + x, (c, u, v)))
                out.append(field)
    return out


def _conv2d(net: SymbolicNetwork, layer: FlatLayer, xs: Outputs, samples: Samples) -> tuple:
    n, nodes, outs = layer.index, [], []
    per_filter = layer.units // layer.shape[0]
    windows = _windows(layer)
    for x, s in zip(xs, samples, strict=True):
        zs = []
        for i, field in enumerate(windows, start=1):
            f = (i - 1) // per_filter + 1
            inputs = tuple(x[k] for k, _ in field)
            taps = tuple((f, c + 1, u + 1, v + 1) for _, (c, u, v) in field)
            zs.append(at_sample(pre_activation(n, i), s))
            structure = (n, i, inputs, layer.layer.bias, (f, taps))
            nodes.append(Node(zs[-1], None, "z", n, s, structure))
        out = [at_sample(activation(n, i + 1), s) for i in range(layer.units)]
        applied = net.apply(n, zs)
        nodes.extend(Node(a, e, "a", n, s) for a, e in zip(out, applied, strict=True))
        outs.append(out)
    return nodes, outs


def _pool(layer: FlatLayer, xs: Outputs, samples: Samples) -> tuple:
    """max_pool2d: a = Max(window) (kind "max"); avg_pool2d: a = the window's mean."""
    n, nodes, outs = layer.index, [], []
    windows = _windows(layer)
    maximum = layer.kind == "max_pool2d"
    for x, s in zip(xs, samples, strict=True):
        out = [at_sample(activation(n, i + 1), s) for i in range(layer.units)]
        for a, field in zip(out, windows, strict=True):
            window = [x[k] for k, _ in field]
            if maximum:
                nodes.append(Node(a, sympy.Max(*window, evaluate=False), "max", n, s))
            else:  # the mean as a sum of (1/k) x: a linear node
                share = sympy.Rational(1, len(window))
                nodes.append(Node(a, sympy.Add(*(share * w for w in window)), "a", n, s))
        outs.append(out)
    return nodes, outs


def _flatten(layer: FlatLayer, xs: Outputs, samples: Samples) -> tuple:
    """A renumbering: an image's entries are already in C order over (C, H, W)."""
    n, nodes, outs = layer.index, [], []
    for x, s in zip(xs, samples, strict=True):
        out = [at_sample(activation(n, i + 1), s) for i in range(layer.units)]
        nodes.extend(Node(a, e, "a", n, s) for a, e in zip(out, x, strict=True))
        outs.append(out)
    return nodes, outs


def _layer_nodes(
    net: SymbolicNetwork, layer: FlatLayer, inputs: list[Outputs], samples: Samples
) -> tuple[list[Node], Outputs]:
    if layer.kind == "dense":
        return _dense(net, layer, inputs[0], samples)
    if layer.kind == "layer_norm":
        return _layer_norm(layer, inputs[0], samples)
    if layer.kind == "batch_norm":
        return _batch_norm(layer, inputs[0], samples)
    if layer.kind == "dropout":
        return _dropout(layer, inputs[0], samples)
    if layer.kind == "residual":
        return _residual(layer, inputs[0], inputs[1], samples)
    if layer.kind == "rms_norm":
        return _rms_norm(layer, inputs[0], samples)
    if layer.kind == "conv2d":
        return _conv2d(net, layer, inputs[0], samples)
    if layer.kind in ("max_pool2d", "avg_pool2d"):
        return _pool(layer, inputs[0], samples)
    if layer.kind == "flatten":
        return _flatten(layer, inputs[0], samples)
    raise ValueError(f"{layer.path}: no neuron-level graph for kind {layer.kind!r}")


def _build(net: SymbolicNetwork, samples: Samples) -> tuple[Node, ...]:
    """The nodes of ``samples`` in execution order, then each sample's loss (and the mean)."""
    nodes: list[Node] = []
    outputs: dict[int, Outputs] = {0: [net.inputs(s) for s in samples]}
    for index in net.spec.order:
        layer = net.flat[index - 1]
        made, outputs[index] = _layer_nodes(
            net, layer, [outputs[src] for src in layer.sources], samples
        )
        nodes.extend(made)
    last = outputs[net.output_layer.index]
    losses = []
    for out, s in zip(last, samples, strict=True):
        losses.append(at_sample(LOSS, s))
        expr = net.sample_loss(out, net.targets(s))
        nodes.append(Node(losses[-1], expr, "loss", net.depth + 1, s))
    if samples != (None,):
        nodes.append(Node(MEAN_LOSS, sympy.Add(*losses) / len(losses), "mean_loss", net.depth + 1))
    return tuple(nodes)


@lru_cache(maxsize=8)
def _batch_graph(net: SymbolicNetwork, batch: int) -> tuple[Node, ...]:
    return _build(net, tuple(range(1, batch + 1)))


def layer_operations(layer: FlatLayer) -> int:
    """One sample's multiply-adds of a layer (its parameters, for the flat kinds)."""
    if layer.kind == "conv2d":
        channels = layer.in_shape[0]
        kh, kw = layer.layer.kernel
        return layer.units * (channels * kh * kw + int(layer.layer.bias))
    if layer.kind in ("max_pool2d", "avg_pool2d"):
        kh, kw = layer.layer.kernel
        return layer.units * kh * kw
    if layer.kind == "flatten":
        return layer.units
    return sum(math.prod(shape) for shape in layers.parameters(layer).values())


def _check_limit(count: int, limit: int, what: str, operations: int | None = None) -> None:
    if operations is not None and operations > count and operations > limit:
        raise SizeLimitError(
            "spec",
            f"{what} is limited to {limit:,} operations per sample (the parameters of a "
            f"flat network) and this network's image layers take {operations:,}",
        )
    if count > limit:
        raise SizeLimitError(
            "spec",
            f"{what} is limited to {limit} parameters and this network has {count}",
        )


def build(spec: NetworkSpec) -> SymbolicNetwork:
    """Resolve the spec's functions (raising field-path errors) into the symbolic network."""
    activations, loss = resolve(spec)
    return SymbolicNetwork(spec=spec, activations=activations, loss=loss)
