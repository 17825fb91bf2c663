"""After the first step, train_step allocates no arrays: every buffer is reused.

Counted with tracemalloc (NumPy reports its array data to it), not timed.  The only memory a
step may take is NumPy's fixed-size ufunc iteration buffer for broadcasting (the bias add,
the softmax row sums: ``numpy.getbufsize()`` elements at most, whatever the batch), so the
peak of new memory during a step must not grow with the batch and must stay far below the
size of one activation array."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

from symbackprop.checkpoint import load_module
from symbackprop.codegen import generate
from symbackprop.spec import from_dict

HIDDEN = 256


def module_for(hidden: str, output: str, loss: str, outputs: int, l2: float = 0.0) -> object:
    layers = [{"units": HIDDEN, "activation": hidden}, {"units": HIDDEN, "activation": hidden}]
    layers.append({"units": outputs, "activation": output})
    spec = {"name": "alloc", "inputs": 32, "loss": loss, "l2": l2, "layers": layers}
    return load_module(generate(from_dict(spec)))


def peak_new_bytes(step: object) -> int:
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def problem(output: str, loss: str, outputs: int, dtype: type, batch: int) -> tuple:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(batch, 32)).astype(dtype)
    if loss == "mse":
        Y = rng.normal(size=(batch, outputs)).astype(dtype)
    elif output == "softmax":
        Y = rng.integers(0, outputs, size=batch)
    else:
        Y = rng.integers(0, 2, size=(batch, outputs)).astype(dtype)
    return X, Y


def step_peak(module: object, loss: str, output: str, outputs: int, dtype: type, batch: int) -> int:
    params = module.init_params(seed=0, dtype=dtype)
    X, Y = problem(output, loss, outputs, dtype, batch)
    module.train_step(params, X, Y, 0.01)  # the first step makes the buffers
    return peak_new_bytes(lambda: module.train_step(params, X, Y, 0.01))


@pytest.mark.parametrize(
    "hidden,output,loss,outputs,l2",
    [
        ("relu", "softmax", "cross_entropy", 10, 0.0),
        ("tanh", "softmax", "cross_entropy", 10, 0.01),
        ("sigmoid", "sigmoid", "binary_cross_entropy", 3, 0.0),
        ("elu", "identity", "mse", 4, 0.0),
        ("leaky_relu", "softmax", "mse", 10, 0.0),
        ("silu", "softmax", "cross_entropy", 10, 0.0),
    ],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_train_step_reuses_its_buffers(
    hidden: str, output: str, loss: str, outputs: int, l2: float, dtype: type
) -> None:
    module = module_for(hidden, output, loss, outputs, l2)
    small = step_peak(module, loss, output, outputs, dtype, batch=512)
    large = step_peak(module, loss, output, outputs, dtype, batch=2048)
    activation = 2048 * HIDDEN * np.dtype(dtype).itemsize
    assert large - small < 4096, f"new memory grows with the batch: {small} -> {large} bytes"
    assert large < activation / 16, f"{large} bytes allocated during a step"


def test_the_counter_sees_numpy_arrays() -> None:
    """The measurement would catch an allocation of one activation-sized array."""
    X = np.ones((2048, HIDDEN))
    assert peak_new_bytes(lambda: X * 2.0) >= X.nbytes


def test_each_thread_reuses_its_own_buffers() -> None:
    """Threads that each warmed up their workspace (same batch size) then allocate nothing:
    they neither share one buffer nor evict each other's."""
    module = module_for("relu", "softmax", "cross_entropy", 10)
    threads = 3
    batch = 1024
    X, Y = problem("softmax", "cross_entropy", 10, np.float64, batch)
    barrier = threading.Barrier(threads)
    peaks: list[int] = [0] * threads
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            params = module.init_params(seed=index)
            module.train_step(params, X, Y, 0.01)  # this thread's first step makes its buffers
            module.gradients(params, X, Y)
            barrier.wait()  # every thread has its workspace now
            for turn in range(threads):  # measured one at a time: tracemalloc is global
                if turn == index:
                    peaks[index] = max(
                        peak_new_bytes(lambda: module.train_step(params, X, Y, 0.01)),
                        peak_new_bytes(lambda: module.loss(params, X, Y)),
                    )
                barrier.wait()
        except BaseException as error:  # re-raised below
            errors.append(error)
            barrier.abort()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    activation = batch * HIDDEN * 8
    assert max(peaks) < activation / 16, f"bytes allocated during a step, per thread: {peaks}"


def test_the_gradients_are_views_of_one_array_made_when_first_needed() -> None:
    """A forward pass (say, over a whole dataset, whose workspace is not kept) makes no
    gradient buffers; a backward pass makes them together, as views of ws["grads"]."""
    module = module_for("relu", "softmax", "cross_entropy", 10)
    params = module.init_params(seed=0)
    X, Y = problem("softmax", "cross_entropy", 10, np.float64, 8)
    ws = module._workspace(8, np.dtype(np.float64))
    module.forward(params, X)
    assert "grads" not in ws and not any(key.startswith("dW") for key in ws)
    _, grads = module.gradients(params, X, Y)
    flat = ws["grads"]
    assert flat.size == sum(value.size for value in params.values())
    start = 0
    for key, value in params.items():
        view = ws["d" + key]
        assert view.shape == value.shape and view.base is flat
        np.testing.assert_array_equal(view.ravel(), flat[start : start + value.size])
        np.testing.assert_array_equal(view, grads[key])
        start += value.size


def test_the_one_sample_step_allocates_no_arrays() -> None:
    """The scalar step of a small network works in Python floats: after the first step only
    a few small lists and floats come and go (labels or one-hot rows alike)."""
    from symbackprop.spec import load_spec

    module = load_module(generate(load_spec("seed_mlp")))
    assert hasattr(module, "_scalar_core")
    params = module.init_params(seed=0)
    X = np.array([[0.5, -1.0]])
    for Y in (np.array([1]), np.array([[0.0, 1.0]])):
        module.train_step(params, X, Y, 0.1)
        peak = peak_new_bytes(lambda Y=Y: module.train_step(params, X, Y, 0.1))
        assert peak < 4096, f"{peak} bytes allocated during a one-sample step"
