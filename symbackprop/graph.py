"""The symbolic network, and the one place where math names are made.

Notation (the document and the generated code share it): layer l = 1..L has weights
``W_l`` (units_l × units_{l-1}, entries w^{(l)}_{ij}), biases ``b_l``, pre-activations
``z_l = W_l a_{l-1} + b_l`` and activations ``a_l = f_l(z_l)``; a_0 = x.  Indices in scalar
names are 1-based, as in a textbook.

Two scalar views of one sample, for the document and the certificate:
* ``neuron_graph``: one SymPy symbol per neuron-level intermediate and one small expression
  per node (scales to thousands of parameters);
* ``expanded_loss``: the loss as one composite expression of the parameters (capped: SymPy's
  cost explodes with size, see the design notes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import sympy

from symbackprop import layers
from symbackprop.errors import InputError
from symbackprop.functions import IDENTITY, YHAT, Activation, Loss, X, Y, resolve
from symbackprop.spec import FlatLayer, NetworkSpec

EXPANDED_LIMIT = 50  # parameters; beyond this SymPy takes minutes to differentiate
GRAPH_LIMIT = 10_000  # parameters; the exact witness takes ~1 s per 2,000 at batch 4


class SizeLimitError(InputError):
    """A scalar view was asked for a network larger than its limit."""


# --- names ---------------------------------------------------------------------------------


def matrix_name(kind: str, layer: int) -> str:
    """Code names: W1, b1, Z1, A1, dZ1, dW1, db1 (A0 is the input batch X)."""
    return f"{kind}{layer}"


def weight(layer: int, i: int, j: int) -> sympy.Symbol:
    return sympy.Symbol(f"w{layer}_{i}_{j}", real=True)


def bias(layer: int, i: int) -> sympy.Symbol:
    return sympy.Symbol(f"b{layer}_{i}", real=True)


def pre_activation(layer: int, i: int) -> sympy.Symbol:
    return sympy.Symbol(f"z{layer}_{i}", real=True)


def activation(layer: int, i: int) -> sympy.Symbol:
    if layer == 0:
        return sympy.Symbol(f"x{i}", real=True)
    return sympy.Symbol(f"a{layer}_{i}", real=True)


def target(k: int) -> sympy.Symbol:
    return sympy.Symbol(f"y{k}", real=True)


def delta(layer: int, i: int) -> sympy.Symbol:
    return sympy.Symbol(f"delta{layer}_{i}", real=True)


LOSS = sympy.Symbol("L", real=True)


def parameter_symbols(layer: FlatLayer) -> dict[str, list[sympy.Symbol]]:
    """Scalar symbols of each trainable parameter array of a layer, row-major (``.ravel()``)."""
    out: dict[str, list[sympy.Symbol]] = {}
    index = layer.index
    for key, shape in layers.parameters(layer).items():
        if key.startswith("W"):
            rows, cols = shape
            out[key] = [weight(index, i + 1, j + 1) for i in range(rows) for j in range(cols)]
        elif key.startswith("b"):
            out[key] = [bias(index, i + 1) for i in range(shape[0])]
        elif key.startswith("gamma"):
            out[key] = [layers.gamma(index, i + 1) for i in range(shape[0])]
        else:
            out[key] = [layers.beta(index, i + 1) for i in range(shape[0])]
    return out


def latex_name(symbol: sympy.Symbol) -> str:
    """w1_2_3 -> w^{(1)}_{23}; a0 is x; used for every scalar symbol in documents."""
    name = symbol.name
    head = name.rstrip("0123456789_")
    parts = name[len(head) :].split("_")
    if name == "L":
        return "L"
    if head in ("x", "y") and len(parts) == 1:
        return f"{head}_{{{parts[0]}}}"
    sep = "," if any(len(p) > 1 for p in parts[1:]) else ""
    sub = sep.join(parts[1:])
    base = {"delta": r"\delta"}.get(head, head)
    return f"{base}^{{({parts[0]})}}_{{{sub}}}"


# --- the network ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One neuron-level assignment ``symbol = expr`` of the scalar graph."""

    symbol: sympy.Symbol
    expr: sympy.Expr
    kind: str  # "z", "a" or "loss"
    layer: int


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
    def output_layer(self) -> FlatLayer:
        return self.spec.output_layer

    @property
    def output(self) -> Activation:
        """The output layer's activation (identity when the output layer is not dense)."""
        return self.activations[self.output_layer.index - 1] or IDENTITY

    def activation_of(self, layer: int) -> Activation | None:
        return self.activations[layer - 1]

    def weights(self, layer: int) -> sympy.Matrix:
        rows, cols = self.sizes[layer], self.sizes[layer - 1]
        return sympy.Matrix(rows, cols, lambda i, j: weight(layer, i + 1, j + 1))

    def biases(self, layer: int) -> sympy.Matrix:
        return sympy.Matrix(self.sizes[layer], 1, lambda i, _: bias(layer, i + 1))

    def parameters(self) -> dict[str, list[sympy.Symbol]]:
        """Scalar parameter symbols by code name, row-major (like ``W.ravel()``), in
        network order."""
        params: dict[str, list[sympy.Symbol]] = {}
        for layer in self.flat:
            params.update(parameter_symbols(layer))
        return params

    def inputs(self) -> list[sympy.Symbol]:
        return [activation(0, j + 1) for j in range(self.sizes[0])]

    def targets(self) -> list[sympy.Symbol]:
        return [target(k + 1) for k in range(self.sizes[-1])]

    def sample_loss(self, outputs: list[sympy.Expr]) -> sympy.Expr:
        """The per-sample loss: the loss expression summed over the outputs."""
        return sympy.Add(
            *(
                self.loss.expr.xreplace({YHAT: out, Y: tgt})
                for out, tgt in zip(outputs, self.targets(), strict=True)
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
        """One node per z and a of every neuron, then the loss; raises beyond GRAPH_LIMIT."""
        _check_limit(self.parameter_count, GRAPH_LIMIT, "the neuron-level graph")
        nodes: list[Node] = []
        previous = self.inputs()
        for layer in range(1, self.depth + 1):
            w, b = self.weights(layer), self.biases(layer)
            zs = []
            for i in range(self.sizes[layer]):
                expr = sympy.Add(*(w[i, j] * previous[j] for j in range(len(previous))), b[i])
                zs.append(pre_activation(layer, i + 1))
                nodes.append(Node(zs[-1], expr, "z", layer))
            outs = self.apply(layer, zs)
            previous = [activation(layer, i + 1) for i in range(self.sizes[layer])]
            nodes.extend(Node(s, e, "a", layer) for s, e in zip(previous, outs, strict=True))
        nodes.append(Node(LOSS, self.sample_loss(previous), "loss", self.depth + 1))
        return tuple(nodes)

    def expanded_outputs(self) -> list[sympy.Expr]:
        """The network's outputs as composite expressions of inputs and parameters."""
        values: list[sympy.Expr] = self.inputs()
        for layer in range(1, self.depth + 1):
            z = self.weights(layer) * sympy.Matrix(values) + self.biases(layer)
            values = self.apply(layer, list(z))
        return values

    def expanded_loss(self) -> sympy.Expr:
        """L(f_L(...f_1(x))) as one expression; raises beyond EXPANDED_LIMIT parameters."""
        _check_limit(self.parameter_count, EXPANDED_LIMIT, "the fully expanded composite")
        return self.sample_loss(self.expanded_outputs())


def _check_limit(count: int, limit: int, what: str) -> None:
    if count > limit:
        raise SizeLimitError(
            "spec",
            f"{what} is limited to {limit} parameters and this network has {count}",
        )


def build(spec: NetworkSpec) -> SymbolicNetwork:
    """Resolve the spec's functions (raising field-path errors) into the symbolic network."""
    activations, loss = resolve(spec)
    return SymbolicNetwork(spec=spec, activations=activations, loss=loss)
