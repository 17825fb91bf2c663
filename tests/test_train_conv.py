"""Training image specs: the digits as 1x8x8 images, image rows from files, the work of a
convolution counted and a training too large for it refused before any work, and
``symbackprop train digits_cnn --data digits`` reaching 98.5 %."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from symbackprop import training
from symbackprop.cli import main
from symbackprop.data import load_dataset
from symbackprop.errors import InputError
from symbackprop.graph import build
from symbackprop.spec import load_spec

FINAL = re.compile(r"^final: .* test_accuracy=(\S+)$")


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _digits(shape: tuple[int, ...] | None = None):  # noqa: ANN202 - Dataset
    return load_dataset("digits", outputs=10, classification=True, seed=0, shape=shape)


def test_digits_as_images_hold_out_the_rows_of_digits_mlp() -> None:
    flat, images = _digits(), _digits((1, 8, 8))
    assert flat.X_train.shape == (1438, 64) and images.X_train.shape == (1438, 1, 8, 8)
    assert images.features == 64 and images.shape == (1, 8, 8) and flat.shape == (64,)
    for a, b in ((flat.X_train, images.X_train), (flat.X_test, images.X_test)):
        np.testing.assert_array_equal(a.reshape(-1, 1, 8, 8), b)  # C order: rows of pixels
    np.testing.assert_array_equal(flat.y_test, images.y_test)
    assert not images.X_train.flags.writeable
    # a digit is upright: row 0 of an image is the first 8 pixels of its flat row
    np.testing.assert_array_equal(images.X_test[0, 0, 0], flat.X_test[0, :8])


def test_csv_rows_become_images_in_c_order(in_tmp: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2 * 3 * 4))
    y = np.arange(30) % 2
    np.savetxt("d.csv", np.c_[X, y], delimiter=",")
    data = load_dataset("d.csv", outputs=2, classification=True, shape=(2, 3, 4))
    assert data.X_train.shape == (24, 2, 3, 4) and data.features == 24
    flat = load_dataset("d.csv", outputs=2, classification=True)
    np.testing.assert_array_equal(flat.X_test.reshape(-1, 2, 3, 4), data.X_test)
    np.testing.assert_array_equal(data.X_test[:, 1, 2, 3], flat.X_test[:, 23])


def _bad_input(code: int, capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_image_rows_of_the_wrong_length_are_bad_input(
    in_tmp: Path, capsys: pytest.CaptureFixture
) -> None:
    X = np.zeros((20, 63))
    np.savetxt("d.csv", np.c_[X, np.arange(20) % 10], delimiter=",")
    np.savez("d.npz", X=X, y=np.arange(20) % 10)
    for name in ("d.csv", "d.npz"):
        err = _bad_input(main(["train", "digits_cnn", "--data", name]), capsys)
        assert "--data" in err and "63 feature columns" in err and "[1, 8, 8] need 64" in err


def test_work_counts_a_convolution_per_output_element() -> None:
    from symbackprop import verify

    spec = load_spec("digits_cnn")
    net, opts = build(spec), spec.train
    # conv 16x8x8 x (1*3*3 + bias), pool 16x4x4 x 2*2, conv 32x4x4 x (16*3*3 + bias),
    # pool 32x2x2 x 2*2, flatten 128, dense 128x10 + bias
    assert net.operations == 10240 + 1024 + 74240 + 512 + 128 + 1290 > 10 * net.parameter_count
    assert training.pass_elements(spec) == 4 * 4 * 144  # the second conv's im2col matrix
    steps = opts.epochs * -(-1438 // opts.batch_size)
    assert training.training_work(net, 1438, opts) == steps * training.STEP_PASSES * (
        verify.pass_cost(net, opts.batch_size)
    )
    assert verify.pass_cost(net, 64) == 64 * net.operations + verify.LAYER_COST * 6


def _no_derivation(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("a refused training must not be derived")

    monkeypatch.setattr(training, "derive", refuse)
    monkeypatch.setattr(training, "generate", refuse)


def test_a_huge_convolution_is_refused_before_any_work(
    in_tmp: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_derivation(monkeypatch)
    Path("big.toml").write_text(
        'name = "big"\ninputs = [1, 100, 100]\nloss = "cross_entropy"\n'
        '[[layers]]\nkind = "conv2d"\nfilters = 4\nkernel = 40\nactivation = "relu"\n'
        '[[layers]]\nkind = "flatten"\n[[layers]]\nunits = 2\nactivation = "softmax"\n',
        encoding="utf-8",
    )
    np.savez("d.npz", X=np.zeros((40, 10_000)), y=np.arange(40) % 2)
    err = _bad_input(main(["train", "big.toml", "--data", "d.npz"]), capsys)
    # 61x61 positions x 1600 inputs each, 32 samples in a batch: 190,515,200 numbers
    assert "--batch-size" in err and "190,515,200 numbers" in err
    assert "1x100x100-4x61x61-14884-2" in err
    # one sample a batch fits, but 100,000 epochs of 20 samples are too many multiply-adds
    argv = ["train", "big.toml", "--data", "d.npz", "--test-fraction", "0.5"]
    err = _bad_input(main([*argv, "--epochs", "100000", "--batch-size", "1"]), capsys)
    assert err.startswith("symbackprop: error: SPEC: training big (") and "multiply-adds" in err


def test_many_epochs_of_digits_cnn_are_refused(
    in_tmp: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_derivation(monkeypatch)
    code = main(["train", "digits_cnn", "--data", "digits", "--epochs", "10000000"])
    err = _bad_input(code, capsys)
    assert "SPEC" in err and "87,434 multiply-adds per sample" in err and "1e+13" in err


@pytest.mark.slow
def test_train_digits_cnn_reaches_98_5_percent(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["train", "digits_cnn", "--data", "digits"])
    out = capsys.readouterr().out
    assert code == 0, out
    spec = load_spec("digits_cnn")
    assert f"epoch {spec.train.epochs}/{spec.train.epochs}" in out and "PASS" in out
    match = FINAL.match(out.rstrip("\n").splitlines()[-1])
    assert match, out
    assert float(match.group(1)) >= 0.985


def test_an_npz_of_images_is_read_for_an_image_spec(in_tmp: Path) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 2, 3, 4))
    np.savez("d.npz", X=X, y=np.arange(30) % 2)
    data = load_dataset("d.npz", outputs=2, classification=True, shape=(2, 3, 4))
    flat = load_dataset("d.npz", outputs=2, classification=True)  # a flat spec: rows
    assert data.X_train.shape == (24, 2, 3, 4) and flat.X_train.shape == (24, 24)
    np.testing.assert_array_equal(flat.X_test.reshape(-1, 2, 3, 4), data.X_test)
    first = data.X_test[0]  # a sample kept whole: one of the file's images
    assert any(np.array_equal(first, image) for image in X)
    with pytest.raises(InputError, match=r"--data: d.npz: X holds images of shape \(2, 3, 4\)"):
        load_dataset("d.npz", outputs=2, classification=True, shape=(2, 4, 3))


@pytest.mark.slow
def test_the_pytorch_twin_of_digits_cnn_trains_to_the_same_weights() -> None:
    pytest.importorskip("torch")
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "digits_cnn_reference.py"
    loader = importlib.util.spec_from_file_location("digits_cnn_reference", path)
    reference = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(reference)
    report = reference.benchmark(1, 1, lambda message: None)
    (row,) = report["rows"]
    assert row["generated"] == row["torch"] >= 0.985
    assert row["max_param_difference"] < 1e-10
    assert f"| 0 | {100 * row['generated']:.2f} % (" in reference.markdown(report)
