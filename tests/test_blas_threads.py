"""The generated module's choice of BLAS threads: blas_threads(n), fit(threads=n), --threads.

threadpoolctl is optional, so a stand-in module records what the generated code asks of it
(the limit, the restore); the real package, where installed, is checked too.  Without
threadpoolctl the module warns and leaves the threads as they are."""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Iterator

import numpy as np
import pytest

from symbackprop.checkpoint import load_module
from symbackprop.codegen import generate
from symbackprop.spec import load_spec


@pytest.fixture(scope="module")
def module() -> object:
    return load_module(generate(load_spec("seed_mlp")), "seed_mlp")


class Limiter:
    def __init__(self, log: list, limits: int, user_api: str) -> None:
        self.log = log
        log.append(("limit", limits, user_api))

    def restore_original_limits(self) -> None:
        self.log.append(("restore",))


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[list]:
    log: list = []
    fake = types.ModuleType("threadpoolctl")
    fake.threadpool_limits = lambda limits, user_api: Limiter(log, limits, user_api)
    monkeypatch.setitem(sys.modules, "threadpoolctl", fake)
    yield log


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    return X, (X[:, 0] > 0).astype(int)


def test_blas_threads_limits_and_restores(module: object, stand_in: list) -> None:
    with module.blas_threads(1):
        assert stand_in == [("limit", 1, "blas")]
    assert stand_in == [("limit", 1, "blas"), ("restore",)]


def test_fit_threads_limits_while_it_trains(module: object, stand_in: list) -> None:
    X, y = data()
    seen = []
    params = module.init_params(seed=0)
    history = module.fit(
        params,
        X,
        y,
        epochs=2,
        batch_size=8,
        lr=0.1,
        threads=2,
        callback=lambda epoch, loss: seen.append(list(stand_in)),
    )
    assert seen == [[("limit", 2, "blas")]] * 2
    assert stand_in == [("limit", 2, "blas"), ("restore",)]
    again = module.init_params(seed=0)
    assert module.fit(again, X, y, epochs=2, batch_size=8, lr=0.1) == history
    assert len(stand_in) == 2  # threads=None asks nothing


def test_overlapping_blocks_share_one_limit(module: object, stand_in: list) -> None:
    """Threads that limit at the same time: one limit, restored when the last one ends."""
    inside = threading.Barrier(3)
    leave = threading.Event()

    def work() -> None:
        with module.blas_threads(1):
            inside.wait()
            leave.wait()

    workers = [threading.Thread(target=work) for _ in range(2)]
    for worker in workers:
        worker.start()
    inside.wait()
    assert stand_in == [("limit", 1, "blas")]
    leave.set()
    for worker in workers:
        worker.join()
    assert stand_in == [("limit", 1, "blas"), ("restore",)]
    assert module._THREADS == {"users": 0, "limiter": None}


def test_an_error_inside_still_restores(module: object, stand_in: list) -> None:
    with pytest.raises(KeyError), module.blas_threads(3):
        raise KeyError("inside")
    assert stand_in == [("limit", 3, "blas"), ("restore",)]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_a_bad_count_is_a_value_error_before_anything_changes(
    module: object, stand_in: list, bad: object
) -> None:
    with pytest.raises(ValueError, match="threads is .*expected a positive integer"):
        with module.blas_threads(bad):
            pass
    if bad is not None:  # None is fit's default: no limit
        X, y = data()
        params = module.init_params(seed=0)
        with pytest.raises(ValueError, match="threads is"):
            module.fit(params, X, y, epochs=1, batch_size=8, lr=0.1, threads=bad)
        for key, value in module.init_params(seed=0).items():
            np.testing.assert_array_equal(params[key], value)
    assert stand_in == []


def test_without_threadpoolctl_a_warning_names_the_variable(
    module: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import raises ImportError
    with pytest.warns(RuntimeWarning, match="OPENBLAS_NUM_THREADS=1"):
        with module.blas_threads(1):
            pass
    X, y = data()
    with pytest.warns(RuntimeWarning, match="threadpoolctl is not installed"):
        history = module.fit(module.init_params(), X, y, epochs=1, batch_size=8, lr=0.1, threads=1)
    assert len(history) == 1
    assert module._THREADS == {"users": 0, "limiter": None}


def test_the_script_takes_threads(module: object, stand_in: list, tmp_path: object) -> None:
    X, y = data()
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y)
    out = tmp_path / "w.npz"
    assert module.main([str(path), "--epochs", "1", "--threads", "1", "--out", str(out)]) == 0
    assert stand_in == [("limit", 1, "blas"), ("restore",)]


def test_with_the_real_threadpoolctl(module: object) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = [info for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]
    if not blas:
        pytest.skip("threadpoolctl finds no BLAS library in this process")
    before = [info["num_threads"] for info in blas]
    with module.blas_threads(1):
        inside = [
            info["num_threads"]
            for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas"
        ]
        assert inside == [1] * len(blas)
    after = [
        info["num_threads"]
        for info in threadpoolctl.threadpool_info()
        if info["user_api"] == "blas"
    ]
    assert after == before
