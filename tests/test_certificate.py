"""The certificate: sound at any batch size, deterministic, bounded, and honest at large inputs.

Issue 8, items 3, 4, 9 (check's part), 11 (check --seed), 14 (check's part) and 16.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from symbackprop import training
from symbackprop.checkpoint import load_module, point
from symbackprop.cli import main
from symbackprop.codegen import generate
from symbackprop.derive import derive
from symbackprop.functions import ACTIVATIONS
from symbackprop.render import render_markdown
from symbackprop.spec import bundled_examples, from_dict, load_spec
from symbackprop.verify import (
    FD_BUDGET,
    MAX_BATCH,
    WORK_LIMIT,
    Certificate,
    ParameterCheck,
    WitnessResult,
    certify,
    exact_cost,
    large_inputs,
)

BATCHES = [1, 7, 64, 1000, MAX_BATCH]


def dense(inputs: int, hidden: list, output: str, loss: object, units: int = 3, outputs: int = 2):
    layers = [{"units": units, "activation": act} for act in hidden]
    layers.append({"units": outputs, "activation": output})
    return from_dict({"name": "net", "inputs": inputs, "loss": loss, "layers": layers})


KINKED = dense(
    3,
    ["relu", "leaky_relu", {"name": "absish", "expr": "abs(x) + Max(x, 0.5*x)"}],
    "softmax",
    "cross_entropy",
    units=4,
)
NETWORKS = {"seed_mlp": load_spec("seed_mlp"), "relu_leaky_abs": KINKED}


def wrong(source: str, edit: str) -> str:
    """The generated module with its gradients deliberately wrong (``edit`` changes g)."""
    return (
        source
        + "\n\n_right_gradients = gradients\n\n\n"
        + "def gradients(params, X, Y, **kwargs):\n"
        + "    value, grads = _right_gradients(params, X, Y, **kwargs)\n"
        + "    grads = {k: v.copy() for k, v in grads.items()}\n"
        + "".join(f"    {line}\n" for line in edit.splitlines())
        + "    return value, grads\n"
    )


# the sign of one entry (the largest, or one of median size), or a missing factor 1/2
def sign_of_largest(key: str) -> str:
    return f"g = grads['{key}'].reshape(-1)\ni = abs(g).argmax()\ng[i] = -g[i]"


def sign_of_median(key: str) -> str:
    """The entry of median size among those that matter to the array's norm.

    A zero's sign is no bug, and neither is the sign of an entry float64 cannot resolve
    against the array's largest (an accurate saturated tanh' gives entries of 1e-17).
    """
    return (
        f"g = grads['{key}'].reshape(-1)\nnz = (abs(g) > 1e-6 * abs(g).max()).nonzero()[0]\n"
        "if nz.size:\n    i = nz[abs(g[nz]).argsort()[nz.size // 2]]\n    g[i] = -g[i]"
    )


def half_factor(key: str) -> str:
    return f"grads['{key}'] = grads['{key}'] * 0.5"


EDITS = [sign_of_largest, sign_of_median, half_factor]


@pytest.fixture(scope="module")
def derivations() -> dict:
    return {name: derive(spec) for name, spec in NETWORKS.items()}


# --- item 3: finite differences are sound at any batch size ----------------------------------


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", list(NETWORKS))
def test_correct_gradients_pass_at_every_batch_size(derivations, name: str, batch: int) -> None:
    certificate = certify(derivations[name], batch=batch, use_torch=False)
    assert certificate.passed, certificate.table()
    fd = [r for p in certificate.parameters for r in p.results if r.witness == "finite-diff"]
    assert len(fd) == len(certificate.parameters)
    for check, result in zip(certificate.parameters, fd, strict=True):  # no entry left out
        assert result.checked == min(int(np.prod(check.shape)), 64), certificate.table()


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", list(NETWORKS))
def test_finite_differences_still_fail_a_wrong_gradient(derivations, name: str, batch: int) -> None:
    d = derivations[name]
    # the output layer, whose gradient (p - y) a is never all zero, even for one sample
    key = f"{'W' if batch % 2 else 'b'}{d.network.depth}"
    edit = EDITS[(BATCHES.index(batch) + list(NETWORKS).index(name)) % len(EDITS)](key)
    certificate = certify(d, batch=batch, use_torch=False, module_source=wrong(generate(d), edit))
    assert not certificate.passed
    check = next(p for p in certificate.parameters if p.name == key)
    verdicts = {r.witness: r.passed for r in check.results}
    assert verdicts == {"finite-diff": False, "exact": False}, certificate.table()
    others = [p for p in certificate.parameters if p.name != key]
    assert all(p.passed for p in others), certificate.table()


# --- item 4: the exact witness does not depend on the clock -----------------------------------


def test_certificate_is_the_same_however_slow_the_machine(
    derivations, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = derivations["seed_mlp"]
    calm = certify(d, use_torch=False)
    clock = iter(range(0, 10**9, 1000))  # every reading 1000 s after the last
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(clock)))
    monkeypatch.setattr(time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(time, "time", lambda: float(next(clock)))
    loaded = certify(d, use_torch=False)
    assert loaded.table() == calm.table() and loaded == calm
    sentence = f"The exact witness used {loaded.exact_view}."
    assert (
        sentence == "The exact witness used the neuron-level graph (reverse accumulation, "
        "40 digits)."
    )
    assert sentence in render_markdown(d, loaded)


def test_the_sentence_stays_grammatical_on_a_sub_batch(derivations) -> None:
    certificate = certify(derivations["seed_mlp"], batch=1000, use_torch=False)
    view = certificate.exact_view
    assert view.startswith("the neuron-level graph (reverse accumulation, 40 digits) on the ")
    assert view.endswith(" of the 1000 samples") and "took" not in view


# --- item 9 / 11: check's batch and seed are bounded, the witnesses' cost too -----------------


def one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("batch", [MAX_BATCH + 1, 100_000, 10**9])
def test_check_refuses_a_batch_over_the_limit(batch: int, capsys) -> None:
    err = one_line_exit_2(["check", "seed_mlp", "--no-torch", "--batch", str(batch)], capsys)
    assert "--batch" in err and f"at most {MAX_BATCH}" in err


def test_check_refuses_a_negative_seed(capsys) -> None:
    err = one_line_exit_2(["check", "seed_mlp", "--no-torch", "--seed", "-1"], capsys)
    assert "--seed" in err and "non-negative" in err


def test_check_takes_a_huge_seed(capsys) -> None:
    code = main(["check", "seed_mlp", "--no-torch", "--seed", str(2**70)])
    out = capsys.readouterr().out
    assert code == 0 and out.strip().splitlines()[-1].startswith("PASS: 6/6")


@pytest.mark.parametrize(
    "network",
    [
        dense(2, ["relu"], "softmax", "cross_entropy", units=100_000),
        from_dict(
            {
                "name": "deep",
                "inputs": 1,
                "loss": "mse",
                "layers": [{"units": 1, "activation": "tanh"}] * 99
                + [{"units": 1, "activation": "identity"}],
            }
        ),
    ],
    ids=["2-100000-2", "100x1"],
)
def test_wide_and_deep_networks_stay_within_the_operation_budget(network) -> None:
    certificate = certify(network, use_torch=False)
    assert certificate.passed, certificate.table()
    assert "finite-diff" in certificate.witnesses
    # the module's own passes (bounded by WORK_LIMIT) and finite differences' budget
    assert certificate.work <= FD_BUDGET + 20 * WORK_LIMIT


def test_a_batch_times_parameters_over_the_hard_limit_is_refused() -> None:
    from symbackprop.errors import InputError

    wide = dense(2, ["relu"], "softmax", "cross_entropy", units=100_000)
    with pytest.raises(InputError, match="--batch: a check batch of 4096 x 500002"):
        certify(wide, batch=MAX_BATCH, use_torch=False)


# --- item 14: large inputs ---------------------------------------------------------------------


def large(spec) -> object:
    d = derive(spec)
    module = load_module(generate(d))
    params, X, Y = point(d.network, 4, 0)
    return large_inputs(module, d.network, params, X, Y)


BUILT_INS = [
    dense(3, [a], "softmax", "cross_entropy") for a, e in ACTIVATIONS.items() if not e.softmax
]
BUILT_INS += [
    dense(3, ["tanh"], out, loss, outputs=k)
    for out, loss, k in [
        ("softmax", "cross_entropy", 2),
        ("sigmoid", "cross_entropy", 2),
        ("sigmoid", "binary_cross_entropy", 1),
        ("identity", "mse", 2),
        ("tanh", "mse", 2),
        ("sigmoid", "mse", 2),
        ("softmax", "mse", 2),
    ]
]
BUILT_INS += [load_spec(path) for path in bundled_examples().values()]


@pytest.mark.parametrize("spec", BUILT_INS, ids=lambda s: f"{s.name}-{s.layers[0].activation}")
def test_built_ins_are_finite_at_large_inputs(spec) -> None:
    result = large(spec)
    assert result.passed and not result.notes, result


@pytest.mark.parametrize(
    "activation,loss",
    [
        ({"name": "naive_tanh", "expr": "(exp(x) - exp(-x))/(exp(x) + exp(-x))"}, None),
        ({"name": "naive_swish", "expr": "x*exp(x)/(exp(x) + exp(-x))"}, None),
        ("tanh", {"name": "naive_logcosh", "expr": "log(exp(yhat - y) + exp(y - yhat))"}),
    ],
    ids=["activation-tanh", "activation-swish", "loss-logcosh"],
)
def test_an_expression_that_overflows_where_its_math_is_finite_fails(activation, loss) -> None:
    if loss is None:
        spec = dense(3, [activation], "softmax", "cross_entropy")
    else:
        spec = dense(3, [activation], "identity", loss)
    certificate = certify(spec, use_torch=False)
    assert all(p.passed for p in certificate.parameters), certificate.table()
    assert not certificate.large_inputs.passed and not certificate.passed
    table = certificate.table()
    assert "large inputs: FAIL" in table and "where the exact value is finite" in table
    assert table.splitlines()[-1].startswith("FAIL: ")


def test_math_that_itself_overflows_is_a_note_not_a_failure() -> None:
    result = large(dense(3, [{"name": "e", "expr": "exp(x)"}], "softmax", "cross_entropy"))
    assert result.passed and any("mathematics itself overflows" in n for n in result.notes)


# --- item 16: no crying wolf on saturated units; a real bug still fails ----------------------


def saturated_data(seed: int, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Raw, unstandardized features like the wine data's (one column in the thousands)."""
    rng = np.random.default_rng(seed)
    scales = np.array([13, 2, 2.4, 20, 100, 2.3, 2, 0.4, 1.6, 5, 1, 2.6, 750.0])
    X = scales * (1 + 0.3 * rng.normal(size=(n, 13)))
    X[:, -1] *= 1 + rng.random(n)
    return X, rng.integers(0, 3, size=n)


WINE_LIKE = dense(13, ["tanh"], "softmax", "cross_entropy", units=16, outputs=3)


@pytest.fixture(scope="module")
def wine_like() -> tuple:
    d = derive(WINE_LIKE)
    return d, generate(d)


@pytest.mark.parametrize("seed", range(6))
def test_saturated_tanh_units_on_raw_features_pass(wine_like, seed: int) -> None:
    d, source = wine_like
    certificate = certify(
        d, batch=4, seed=seed, module_source=source, data=saturated_data(seed), use_torch=False
    )
    assert certificate.passed, certificate.table()


@pytest.mark.parametrize("key", ["W1", "b1", "W2", "b2"])
@pytest.mark.parametrize("edit", EDITS, ids=lambda e: e.__name__)
def test_a_real_bug_still_fails_on_raw_features(wine_like, edit, key: str) -> None:
    d, source = wine_like
    certificate = certify(
        d,
        batch=4,
        seed=3,
        module_source=wrong(source, edit(key)),
        data=saturated_data(3),
        use_torch=False,
    )
    failed = [p.name for p in certificate.parameters if not p.passed]
    assert failed == [key], certificate.table()


def test_a_refusal_says_why_and_what_to_do() -> None:
    bad = WitnessResult("exact", 1.6e-15, 1.6e-5, 208, False)
    good = WitnessResult("finite-diff", 1e-13, 1e-9, 64, True)
    certificate = Certificate(
        "w",
        (ParameterCheck("W1", (16, 13), (good, bad)), ParameterCheck("b1", (16,), (good,))),
        ("finite-diff", "exact"),
        (),
        4,
        1.1,
    )
    message = str(training.CheckFailed(certificate))
    assert len(message.splitlines()) == 1
    assert "W1 (exact: max abs err 1.60e-15, rel 1.60e-05)" in message
    assert "b1" not in message and "standardize the features" in message


def test_a_network_too_large_for_every_witness_is_refused_before_any_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from symbackprop import verify
    from symbackprop.errors import InputError

    deep = from_dict(
        {
            "name": "deep_wide",
            "inputs": 300,
            "loss": "mse",
            "layers": [{"units": 300, "activation": "tanh"}] * 99
            + [{"units": 1, "activation": "identity"}],
        }
    )

    def no_module(*args: object, **kwargs: object) -> None:
        raise AssertionError("the refusal must come before the module is loaded")

    monkeypatch.setattr(verify, "load_module", no_module)
    with pytest.raises(InputError, match="too large for the certificate without torch"):
        certify(deep, use_torch=False)


def test_torch_is_imported_only_when_its_witness_runs() -> None:
    """``torch_available`` asks the import system, it does not import torch (seconds); a
    certificate without the PyTorch witness never imports it."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from symbackprop.verify import certify, torch_available\n"
        "from symbackprop.spec import load_spec\n"
        "available = torch_available()\n"
        "certify(load_spec('seed_mlp'), use_torch=False)\n"
        "print(available, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    available, imported = out.stdout.split()
    assert imported == "False"
    try:
        import importlib.util

        installed = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        installed = False
    assert available == str(installed)


def test_a_smaller_exact_budget_checks_fewer_samples_exactly() -> None:
    spec = load_spec("seed_mlp")
    full = certify(spec, use_torch=False)
    assert "exact" in full.witnesses and "on the first" not in full.exact_view
    per_sample = exact_cost(derive(spec).network)
    one = certify(spec, use_torch=False, exact_budget=per_sample)
    assert one.exact_view.endswith("on the first of the 4 samples")
    none = certify(spec, use_torch=False, exact_budget=per_sample - 1)
    assert "exact" not in none.witnesses
    assert any(w == "exact" and f"budget of {per_sample - 1:,}" in why for w, why in none.skipped)
    with pytest.raises(ValueError, match="exact_budget"):
        certify(spec, exact_budget=-1)
