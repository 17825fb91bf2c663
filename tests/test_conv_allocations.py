"""After the first step, a conv net's train_step allocates no arrays (as tests/test_allocations.py
measures it for dense stacks): im2col, col2im and the pooling windows work in buffers and
strided views made once per workspace.  Counted with tracemalloc, not timed.

The one memory a step may take is NumPy's ufunc iteration buffers (numpy.getbufsize()
elements per operand at most, whatever the batch), which NumPy uses for some strided
operands; so the peak must not grow with the batch and must stay within a few of them."""

from __future__ import annotations

import numpy as np
import pytest
from test_allocations import peak_new_bytes

from symbackprop.checkpoint import load_module
from symbackprop.codegen import generate
from symbackprop.spec import from_dict

NETS = {
    "lenet_like": {
        "inputs": [1, 12, 12],
        "loss": "cross_entropy",
        "layers": [
            {"kind": "conv2d", "filters": 6, "kernel": 5, "activation": "relu"},
            {"kind": "max_pool2d", "kernel": 2},
            {"kind": "conv2d", "filters": 8, "kernel": 3, "padding": 1, "activation": "tanh"},
            {"kind": "avg_pool2d", "kernel": 2},
            {"kind": "flatten"},
            {"units": 10, "activation": "softmax"},
        ],
    },
    "overlapping": {
        "inputs": [2, 12, 12],
        "loss": "mse",
        "l2": 0.01,
        "layers": [
            {"kind": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "padding": 1},
            {"kind": "max_pool2d", "kernel": 3, "stride": 1},
            {"kind": "avg_pool2d", "kernel": 2, "stride": 1},
            {"kind": "flatten"},
            {"units": 3, "activation": "identity"},
        ],
    },
}


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv_train_step_reuses_its_buffers(name, dtype):
    data = NETS[name]
    module = load_module(generate(from_dict({"name": name, **data})))
    rng = np.random.default_rng(0)
    peaks = {}
    for batch in (512, 1024):
        params = module.init_params(seed=0, dtype=dtype)
        X = rng.normal(size=(batch, *data["inputs"])).astype(dtype)
        if data["loss"] == "mse":
            Y = rng.normal(size=(batch, module.LAYER_SIZES[-1])).astype(dtype)
        else:
            Y = rng.integers(0, module.LAYER_SIZES[-1], size=batch)
        module.train_step(params, X, Y, 0.01)  # the first step makes the buffers and views
        peaks[batch] = peak_new_bytes(lambda: module.train_step(params, X, Y, 0.01))  # noqa: B023
        flat = X.reshape(batch, -1)  # a flat X is a view, not a copy
        peaks[batch] = max(peaks[batch], peak_new_bytes(lambda: module.loss(params, flat, Y)))  # noqa: B023
    ufunc_buffers = 4 * np.getbufsize() * np.dtype(dtype).itemsize
    image = 1024 * int(np.prod(data["inputs"])) * np.dtype(dtype).itemsize  # X alone
    assert peaks[1024] - peaks[512] < 4096, f"new memory grows with the batch: {peaks}"
    assert peaks[1024] < min(ufunc_buffers, image / 4), f"{peaks[1024]} bytes in a step"
