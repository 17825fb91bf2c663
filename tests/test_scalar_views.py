"""The two scalar views of a network: the expanded composite and the neuron-level graph.

Both must give the same exact gradient, each has a size limit with a clear message, and
the certificate says why it skips the exact witness above the graph's limit (its exact
witness is the graph, whatever the machine's load: tests/test_certificate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from symbackprop.checkpoint import point
from symbackprop.graph import EXPANDED_LIMIT, GRAPH_LIMIT, SizeLimitError, build
from symbackprop.spec import from_dict
from symbackprop.verify import certify, exact_expanded, exact_graph, local_partials


def network(
    sizes: tuple[int, ...],
    hidden: str = "tanh",
    output: str = "softmax",
    loss: str = "cross_entropy",
    l2: float = 0.0,
) -> object:
    layers = [{"units": n, "activation": hidden} for n in sizes[1:-1]]
    layers.append({"units": sizes[-1], "activation": output})
    return from_dict(
        {"name": "views", "inputs": sizes[0], "loss": loss, "l2": l2, "layers": layers}
    )


@pytest.mark.parametrize(
    "sizes,hidden,output,loss",
    [
        ((2, 3, 2), "tanh", "softmax", "cross_entropy"),
        ((3, 2, 2, 1), "sigmoid", "sigmoid", "binary_cross_entropy"),
        ((2, 3, 2), "softplus", "identity", "mse"),
        ((2, 2, 2, 2), "gelu", "softmax", "mse"),
    ],
)
def test_expanded_and_graph_views_agree(
    sizes: tuple[int, ...], hidden: str, output: str, loss: str
) -> None:
    spec = network(sizes, hidden, output, loss, l2=0.02)
    net = build(spec)
    params, X, Y = point(net, batch=3, seed=4)
    expanded = exact_expanded(net, params, X, Y)
    graph = exact_graph(net, params, X, Y)
    for key in params:
        np.testing.assert_allclose(graph[key], expanded[key], rtol=1e-13, atol=1e-16)


def test_local_partials_of_a_linear_node_are_its_coefficients() -> None:
    import sympy

    w, a, b = sympy.symbols("w a b")
    v = sympy.Symbol("v")
    expr = w * a + 3 * v * b + b
    for symbol, partial in local_partials(expr):
        assert sympy.expand(partial - sympy.diff(expr, symbol)) == 0


def test_each_view_has_a_limit_with_a_clear_message() -> None:
    over_expanded = build(network((4, 8, 3)))
    assert over_expanded.parameter_count > EXPANDED_LIMIT
    with pytest.raises(SizeLimitError, match=f"limited to {EXPANDED_LIMIT} parameters"):
        over_expanded.expanded_loss()
    over_graph = build(network((100, 100, 10)))
    assert over_graph.parameter_count > GRAPH_LIMIT
    with pytest.raises(SizeLimitError, match=f"limited to {GRAPH_LIMIT} parameters"):
        over_graph.neuron_graph  # noqa: B018 - the property raises


def test_certificate_says_why_it_skips_the_exact_witness() -> None:
    certificate = certify(network((100, 100, 10), hidden="relu"), use_torch=False)
    assert certificate.passed, certificate.table()
    assert "exact" not in certificate.witnesses
    reasons = dict(certificate.skipped)
    assert "neuron-level limit" in reasons["exact"]
    assert "skipped exact:" in certificate.table()
