"""train: certify, train with progress, final: line; the generated script with NumPy alone."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from symbackprop.checkpoint import load_module
from symbackprop.cli import main
from symbackprop.codegen import generate
from symbackprop.errors import InputError
from symbackprop.spec import load_spec

FINAL_CLASSIFICATION = re.compile(
    r"^final: train_loss=(\S+) test_loss=(\S+) train_accuracy=(\S+) test_accuracy=(\S+)$"
)
FINAL_REGRESSION = re.compile(
    r"^final: train_loss=(\S+) test_loss=(\S+) train_rmse=(\S+) test_rmse=(\S+)$"
)


def last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_train_digits_reaches_97_percent(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["train", "digits_mlp", "--data", "digits", "--out", "w.npz"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS" in out and "epoch 30/30" in out
    final = last_line(out)  # the contract: the last line, also with --out
    match = FINAL_CLASSIFICATION.match(final)
    assert match, final
    train_loss, test_loss, train_acc, test_acc = map(float, match.groups())
    assert test_acc >= 0.97 and 0 <= train_acc <= 1 and train_loss < test_loss
    module = load_module(generate(load_spec("digits_mlp")))
    params = module.load("w.npz")
    assert params["W1"].shape == (64, 64)


def test_train_is_reproducible_and_overridable(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["train", "seed_mlp", "--data", "data.csv", "--epochs", "3", "--lr", "0.05"]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    np.savetxt("data.csv", np.c_[X, y], delimiter=",", header="x1,x2,label", comments="")
    assert main([*args, "--optimizer", "adam", "--seed", "4"]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--optimizer", "adam", "--seed", "4"]) == 0
    second = capsys.readouterr().out
    assert last_line(first) == last_line(second)
    assert "adam, lr 0.05, 3 epochs" in first
    assert main([*args, "--optimizer", "sgd", "--seed", "5"]) == 0
    assert last_line(capsys.readouterr().out) != last_line(first)


def test_train_regression_prints_rmse(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    np.savez("reg.npz", X=X, y=np.sin(X[:, 0]) + 0.3 * X[:, 1])
    assert main(["train", "tanh_regression", "--data", "reg.npz", "--epochs", "40"]) == 0
    match = FINAL_REGRESSION.match(last_line(capsys.readouterr().out))
    assert match
    assert float(match.group(4)) < 0.5


BAD_DATA = {
    "missing.csv": None,
    "ragged.csv": "1,2,0\n3,4\n",
    "text.csv": "1,2,0\n3,abc,1\n",
    "nan.csv": "1,2,0\nnan,4,1\n",
    "narrow.csv": "1\n2\n",
    "labels.csv": "1,2,0\n3,4,7\n",
    "features.csv": "1,2,3,0\n4,5,6,1\n",
    "fraction.csv": "1,2,0\n3,4,1\n5,6,0\n7,8,1\n",
}


@pytest.mark.parametrize("name", sorted(BAD_DATA))
def test_bad_data_exits_2_with_one_line(
    name: str, in_tmp: Path, capsys: pytest.CaptureFixture
) -> None:
    if BAD_DATA[name] is not None:
        Path(name).write_text(BAD_DATA[name])
    extra = ["--test-fraction", "1.5"] if name == "fraction.csv" else []
    code = main(["train", "seed_mlp", "--data", name, "--out", "w.npz", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("symbackprop: error:")
    assert "Traceback" not in err
    assert not Path("w.npz").exists()


@pytest.mark.parametrize(
    "flag,value", [("--epochs", "0"), ("--lr", "-1"), ("--batch-size", "0"), ("--seed", "-2")]
)
def test_bad_training_flags(
    flag: str, value: str, in_tmp: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["train", "seed_mlp", "--data", "digits", flag, value]) == 2
    assert flag in capsys.readouterr().err


def test_generated_script_trains_with_numpy_alone(tmp_path: Path) -> None:
    """python model.py DATA ... in a subprocess where symbackprop, SymPy and Jinja2 cannot load."""
    (tmp_path / "model.py").write_text(generate(load_spec("seed_mlp")))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 2))
    y = (X[:, 0] > X[:, 1]).astype(int)
    np.savez(tmp_path / "data.npz", X=X, y=y)
    np.savetxt(tmp_path / "data.csv", np.c_[X, y], delimiter=",", header="a,b,y", comments="")
    runner = textwrap.dedent(
        """
        import runpy, sys
        for name in ("symbackprop", "sympy", "jinja2", "mpmath", "torch"):
            sys.modules[name] = None  # any import of these now raises ImportError
        sys.argv = ["model.py", *sys.argv[1:]]
        try:
            runpy.run_path("model.py", run_name="__main__")
        except SystemExit as stop:
            code = stop.code
        else:
            code = 0
        leaked = [m for m in ("symbackprop", "sympy", "jinja2") if sys.modules.get(m) is not None]
        assert not leaked, leaked
        sys.exit(code)
        """
    )
    for data in ("data.npz", "data.csv"):
        result = subprocess.run(
            [sys.executable, "-c", runner, data, "--epochs", "30", "--lr", "0.5", "--out", "w.npz"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        assert "epoch 30/30" in result.stdout
        final = next(line for line in result.stdout.splitlines() if line.startswith("final:"))
        assert float(final.split("train_accuracy=")[1]) > 0.9
        params = load_module(generate(load_spec("seed_mlp"))).load(str(tmp_path / "w.npz"))
        assert params["W3"].shape == (2, 3)
    help_run = subprocess.run(
        [sys.executable, "model.py", "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert help_run.returncode == 0 and "--epochs" in help_run.stdout
    bad = subprocess.run(
        [sys.executable, "model.py", "nothing.npz"], cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "error:" in bad.stderr


def test_train_refuses_a_failed_certificate(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import symbackprop.training as training
    from symbackprop.verify import Certificate, ParameterCheck, WitnessResult

    def failing(*args: object, **kwargs: object) -> Certificate:
        bad = WitnessResult("finite-diff", 1.0, 1.0, 6, False)
        return Certificate(
            "seed_mlp", (ParameterCheck("W1", (3, 2), (bad,)),), ("finite-diff",), (), 4, 0.7
        )

    monkeypatch.setattr(training, "certify", failing)
    code = main(["train", "digits_mlp", "--data", "digits", "--out", "w.npz"])
    captured = capsys.readouterr()
    assert code == 1
    assert "FAIL" in captured.out and "not training" in captured.err
    assert "epoch 1/" not in captured.out and not Path("w.npz").exists()


def test_train_reports_divergence(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["train", "digits_mlp", "--data", "digits", "--epochs", "2", "--optimizer", "sgd"]
    code = main([*args, "--lr", "1e30", "--out", "w.npz"])
    captured = capsys.readouterr()
    assert code == 1
    assert "diverged" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert last_line(captured.out).startswith("final: train_loss=nan")
    assert not Path("w.npz").exists()


def test_generated_script_scores_one_hot_targets_and_refuses_nan(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(generate(load_spec("swish_mlp")))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 4))
    Y = np.eye(3)[rng.integers(0, 3, size=90)]
    np.savez(tmp_path / "onehot.npz", X=X, y=Y)
    X[5, 2] = np.nan
    np.savez(tmp_path / "nan.npz", X=X, y=Y)
    run = [sys.executable, "model.py", "onehot.npz", "--epochs", "5", "--out", "w.npz"]
    result = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert re.match(r"^final: train_loss=\S+ train_accuracy=\S+$", last_line(result.stdout))
    run = [sys.executable, "model.py", "nan.npz", "--out", "bad.npz"]
    result = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and "NaN" in result.stderr
    assert not (tmp_path / "bad.npz").exists()


def test_training_options_from_python() -> None:
    from symbackprop.training import options

    chosen = options(load_spec("seed_mlp"), lr=1, epochs=3, optimizer="adam")
    assert chosen.lr == 1.0 and chosen.epochs == 3 and chosen.optimizer == "adam"
    for bad in (
        {"epochs": True},
        {"lr": True},
        {"batch_size": 0},
        {"seed": -1},
        {"lr": float("nan")},
    ):
        with pytest.raises(InputError):
            options(load_spec("seed_mlp"), **bad)


def regression_csv(path: Path, rows: int = 120) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 3)) * 3
    y = rng.normal(size=rows) * 5
    np.savetxt(path, np.c_[X, y], delimiter=",")
    return path


@pytest.mark.parametrize("lr", ["5", "1e300"])
def test_train_with_an_exploding_lr_exits_1_without_weights(
    in_tmp: Path, capsys: pytest.CaptureFixture, lr: str
) -> None:
    """The loss reaches 1e27 (finite) with lr 5, NaN with 1e300: both are a diverged run."""
    data = regression_csv(in_tmp / "small.csv")
    args = ["train", "tanh_regression", "--data", str(data), "--epochs", "3", "--lr", lr]
    code = main([*args, "--optimizer", "sgd", "--batch-size", "8", "--out", "w.npz"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "diverged" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert last_line(captured.out).startswith("final: train_loss=nan")
    assert not Path("w.npz").exists()


def test_train_result_of_a_diverged_run(in_tmp: Path) -> None:
    from symbackprop.training import options, train

    spec = load_spec("tanh_regression")
    chosen = options(spec, lr=5.0, epochs=3, optimizer="sgd", batch_size=8)
    result = train(spec, str(regression_csv(in_tmp / "small.csv")), chosen)
    assert result.diverged
    assert "fit: the loss exploded" in result.stop_reason
    assert np.isnan(result.train_metric) and np.isnan(result.test_loss)


def test_generated_script_stops_on_divergence(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(generate(load_spec("tanh_regression")))
    regression_csv(tmp_path / "data.csv")
    for lr, code, words in (
        ("1e300", 1, "fit: the loss"),  # NaN
        ("5", 1, "fit: the loss exploded"),
        ("inf", 2, "lr is inf"),
        ("-1", 2, "lr is -1.0"),
    ):
        run = [sys.executable, "model.py", "data.csv", "--lr", lr, "--optimizer", "sgd"]
        result = subprocess.run(
            [*run, "--batch-size", "8", "--out", "w.npz"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert result.returncode == code, (lr, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("error: ") and words in result.stderr
        assert "saved" not in result.stdout and not (tmp_path / "w.npz").exists()


# --- the certificate before training costs no more than the training -------------------------


def _network(name: str):  # noqa: ANN202 - SymbolicNetwork
    from symbackprop.graph import build

    return build(load_spec(name))


def test_training_work_counts_every_step() -> None:
    from symbackprop import training, verify

    net = _network("digits_mlp")
    opts = load_spec("digits_mlp").train
    steps = opts.epochs * -(-1438 // opts.batch_size)
    assert training.training_work(net, 1438, opts) == (
        steps * training.STEP_PASSES * verify.pass_cost(net, opts.batch_size)
    )
    # fewer rows than a batch: one step of that many rows per epoch
    assert training.training_work(net, 5, opts) == (
        opts.epochs * training.STEP_PASSES * verify.pass_cost(net, 5)
    )


def test_digits_training_pays_for_no_exact_witness_and_seed_mlp_for_one() -> None:
    from symbackprop import training, verify

    digits, seed = _network("digits_mlp"), _network("seed_mlp")
    budget = training.exact_budget(digits, 1438, load_spec("digits_mlp").train)
    assert budget < verify.exact_cost(digits)  # not even one sample: finite differences check
    small = training.exact_budget(seed, 100, load_spec("seed_mlp").train)
    assert small == training.EXACT_FLOOR >= training.CHECK_BATCH * verify.exact_cost(seed)


def test_train_gives_certify_the_budget_and_no_torch(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from symbackprop import training

    asked: list[dict] = []
    real = training.certify

    def certify(source, *, exact_budget=None, **kwargs):  # noqa: ANN001, ANN202
        asked.append({"exact_budget": exact_budget, **kwargs})
        return real(source, **kwargs)

    monkeypatch.setattr(training, "certify", certify)
    X = np.random.default_rng(0).normal(size=(40, 2))
    np.savez("d.npz", X=X, y=(X[:, 0] > 0).astype(np.int64))
    spec = load_spec("seed_mlp")
    result = training.train(spec, "d.npz", training.options(spec, epochs=1))
    rows = len(result.dataset.X_train)
    assert asked[0]["use_torch"] is False
    assert asked[0]["exact_budget"] == training.exact_budget(
        _network("seed_mlp"), rows, result.options
    )
    assert result.certificate.witnesses == ("finite-diff", "exact")
