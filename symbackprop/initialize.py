"""Initial parameters: one routine, run here and embedded verbatim in every generated module.

``init_table(spec)`` says how each entry of ``params`` starts (``he``: normal with variance
2/fan_in, ``xavier``: uniform in ±sqrt(6/(fan_in + fan_out)), ``zeros``, ``ones``), in network
order; ``_initialize`` draws them.  The certificate and the document call ``init_params``
here, so nothing needs to execute a generated module to learn its starting point; the
module's own ``init_params`` runs the same source on the same table and gives the same
numbers.
"""

from __future__ import annotations

from functools import lru_cache

from symbackprop.functions import resolve
from symbackprop.lazy import lazy
from symbackprop.spec import NetworkSpec, layer_parameters, layer_state

# ``_initialize`` names the module ``numpy``, as the generated module does; codegen, which
# only copies its source, needs no NumPy
numpy = lazy("numpy")


@lru_cache(maxsize=256)
def init_table(spec: NetworkSpec) -> dict[str, tuple[str, tuple[int, ...]]]:
    """params' entries in network order: name -> (how it starts, shape).

    Cached per spec: the worked example's seed search and each check point ask again, and
    resolving a spec parses its custom expressions.  Callers only read the table.
    """
    activations, _ = resolve(spec)
    table: dict[str, tuple[str, tuple[int, ...]]] = {}
    for layer, act in zip(spec.flat, activations, strict=True):
        for key, shape in layer_parameters(layer).items():
            if key.startswith("W"):
                how = "he" if act is not None and act.init == "he" else "xavier"
            elif key.startswith("gamma"):
                how = "ones"
            else:
                how = "zeros"
            table[key] = (how, shape)
        for key, shape in layer_state(layer).items():
            table[key] = ("zeros" if key.startswith("mean") else "ones", shape)
    return table


def _initialize(table, seed, dtype):
    """params drawn from numpy.random.default_rng(seed): one draw per weight, in order."""
    dtype = numpy.dtype(dtype)
    if dtype not in (numpy.float32, numpy.float64):
        raise ValueError(f"dtype is {dtype}, expected float32 or float64")
    rng = numpy.random.default_rng(seed)
    params = {}
    for key, (how, shape) in table.items():
        if how in ("he", "xavier"):  # fans as PyTorch's: a conv kernel's fan_in is C*kh*kw
            fan_in, fan_out = shape[1], shape[0]
            for size in shape[2:]:
                fan_in, fan_out = fan_in * size, fan_out * size
        if how == "he":
            value = rng.normal(0.0, numpy.sqrt(2.0 / fan_in), size=shape)
        elif how == "xavier":
            limit = numpy.sqrt(6.0 / (fan_in + fan_out))
            value = rng.uniform(-limit, limit, size=shape)
        elif how == "ones":
            value = numpy.ones(shape)
        else:
            value = numpy.zeros(shape)
        params[key] = value.astype(dtype)
    return params


def init_params(
    spec: NetworkSpec, seed: int = 0, dtype: object = "float64"
) -> dict[str, numpy.ndarray]:
    """The generated module's ``init_params(seed, dtype)``, without generating it."""
    return _initialize(init_table(spec), seed, dtype)
