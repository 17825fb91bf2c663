"""One generated module used from several threads at once gives the serial results, bit for bit.

Every thread works on its own data (and, for train_step and fit, its own parameters); the
results are compared exactly with the same calls made one after another in the main thread.
A tiny thread switch interval makes the threads interleave inside each call, so a shared
buffer would be caught in a few hundred calls."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from symbackprop.checkpoint import load_module
from symbackprop.codegen import generate
from symbackprop.spec import load_spec

THREADS = 4
CALLS = 40
SAME = (32, 32, 32, 32)
MIXED = (32, 16, 32, 7)


@pytest.fixture(scope="module", params=["seed_mlp", "digits_mlp"])
def module(request: pytest.FixtureRequest) -> object:
    return load_module(generate(load_spec(request.param)), request.param)


@pytest.fixture(autouse=True)
def interleave() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def problem(module: object, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(batch, module.LAYER_SIZES[0]))
    Y = rng.integers(0, module.LAYER_SIZES[-1], size=batch)
    return X, Y


def in_threads(work: Callable[[int], object]) -> list[object]:
    """work(i) in THREADS threads started together; their results, or the first error raised."""
    barrier = threading.Barrier(THREADS)
    results: list[object] = [None] * THREADS
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except BaseException as error:  # re-raised in the main thread below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def count_differences(got: list, expected: list) -> int:
    """How many of the calls' results differ in any bit from the serial ones."""
    wrong = 0
    for ours, theirs in zip(got, expected, strict=True):
        if isinstance(ours, dict):
            wrong += any(not np.array_equal(ours[k], theirs[k]) for k in theirs)
        elif isinstance(ours, tuple):
            wrong += count_differences(list(ours), list(theirs)) > 0
        elif isinstance(ours, np.ndarray):
            wrong += not np.array_equal(ours, theirs)
        else:
            wrong += ours != theirs
    return wrong


@pytest.mark.parametrize("batches", [SAME, MIXED], ids=["same-batch", "mixed-batch"])
@pytest.mark.parametrize("function", ["gradients", "forward", "loss"])
def test_reads_in_threads_match_serial(module: object, function: str, batches: tuple) -> None:
    params = module.init_params(seed=3)
    data = [problem(module, batch, seed) for seed, batch in enumerate(batches)]
    call = {
        "gradients": lambda X, Y: module.gradients(params, X, Y),
        "forward": lambda X, Y: module.forward(params, X),
        "loss": lambda X, Y: module.loss(params, X, Y),
    }[function]
    serial = [[call(*data[i]) for _ in range(CALLS)] for i in range(THREADS)]
    threaded = in_threads(lambda i: [call(*data[i]) for _ in range(CALLS)])
    wrong = sum(count_differences(threaded[i], serial[i]) for i in range(THREADS))
    assert wrong == 0, f"{wrong} of {THREADS * CALLS} {function} calls differ from serial"


@pytest.mark.parametrize("batches", [SAME, MIXED], ids=["same-batch", "mixed-batch"])
def test_train_step_in_threads_matches_serial(module: object, batches: tuple) -> None:
    data = [problem(module, batch, seed) for seed, batch in enumerate(batches)]

    def train(index: int) -> tuple[list[float], dict]:
        params = module.init_params(seed=index)
        X, Y = data[index]
        losses = [module.train_step(params, X, Y, 0.05) for _ in range(CALLS)]
        return losses, params

    serial = [train(i) for i in range(THREADS)]
    threaded = in_threads(train)
    for i in range(THREADS):
        assert threaded[i][0] == serial[i][0], f"thread {i}: the losses differ from serial"
        assert count_differences([threaded[i][1]], [serial[i][1]]) == 0, f"thread {i}: params"


@pytest.mark.parametrize(
    "optimizer,batch_sizes",
    [("sgd", SAME), ("adam", SAME), ("adam", MIXED)],
    ids=["sgd-same-batch", "adam-same-batch", "adam-mixed-batch"],
)
def test_fit_in_threads_matches_serial(module: object, optimizer: str, batch_sizes: tuple) -> None:
    X, Y = problem(module, 96, seed=11)

    def train(index: int) -> tuple[list[float], dict]:
        params = module.init_params(seed=index)
        history = module.fit(
            params, X, Y, epochs=3, batch_size=batch_sizes[index], lr=0.01, optimizer=optimizer
        )
        return history, params

    serial = [train(i) for i in range(THREADS)]
    threaded = in_threads(train)
    for i in range(THREADS):
        assert threaded[i][0] == serial[i][0], f"thread {i}: the history differs from serial"
        assert count_differences([threaded[i][1]], [serial[i][1]]) == 0, f"thread {i}: params"


def test_threads_do_not_share_buffers(module: object) -> None:
    """Each thread's workspace is its own: a forward pass in another thread leaves ours alone."""
    params = module.init_params(seed=0)
    X, _ = problem(module, 8, seed=0)
    mine = module._workspace(8, np.dtype(np.float64))
    theirs = in_threads(lambda i: module._workspace(8, np.dtype(np.float64)))
    assert all(ws is not mine for ws in theirs)
    assert len({id(ws) for ws in theirs}) == THREADS
    assert module._workspace(8, np.dtype(np.float64)) is mine
    module.forward(params, X)
