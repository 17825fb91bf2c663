"""Datasets: the bundled digits, users' npz/csv files, the split, and every input error."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from symbackprop.data import (
    Dataset,
    accuracy,
    check_features,
    load_dataset,
    load_digits,
    one_hot,
    read_table,
    rmse,
    split,
)
from symbackprop.errors import InputError

DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def write_csv(path: Path, text: str, *, compress: bool = False) -> str:
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as stream:
            stream.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def labelled_rows(n: int = 20, classes: int = 3) -> str:
    rows = [f"{i / n},{(i * 7 % n) / n},{i % classes}" for i in range(n)]
    return "\n".join(rows) + "\n"


def error_of(source: str, **kwargs: object) -> InputError:
    options = {"outputs": 3, "classification": True, **kwargs}
    with pytest.raises(InputError) as caught:
        load_dataset(source, **options)
    error = caught.value
    assert "\n" not in str(error)
    return error


# --- the bundled digits ----------------------------------------------------------------------


def test_digits_arrays() -> None:
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float64
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert np.all(X * 16 == np.round(X * 16))  # pixel counts 0..16, scaled
    assert np.bincount(y).tolist() == DIGIT_COUNTS


def test_digits_file_is_compact_uint8() -> None:
    path = Path(__file__).parents[1] / "symbackprop" / "datasets" / "digits.npz"
    assert path.stat().st_size < 1_000_000
    with np.load(path) as archive:
        assert sorted(archive.files) == ["X", "y"]
        assert archive["X"].dtype == np.uint8 and archive["X"].shape == (1797, 64)
        assert archive["y"].dtype == np.uint8 and archive["y"].shape == (1797,)
        assert archive["X"].max() == 16


def test_digits_dataset_split_is_stratified() -> None:
    data = load_dataset("digits", outputs=10, classification=True)
    assert isinstance(data, Dataset)
    assert data.name == "digits" and data.classes == 10 and data.features == 64
    assert data.X_train.shape == (1438, 64) and data.X_test.shape == (359, 64)
    assert data.y_train.dtype == np.int64 and data.X_train.dtype == np.float64
    test_counts = np.bincount(data.y_test, minlength=10)
    for count, total in zip(test_counts, DIGIT_COUNTS, strict=True):
        assert abs(count - 0.2 * total) <= 1
    assert (np.bincount(data.y_train, minlength=10) + test_counts).tolist() == DIGIT_COUNTS


def test_digits_split_partitions_the_samples() -> None:
    X, _ = load_digits()
    data = load_dataset("digits", outputs=10, classification=True)
    together = np.vstack([data.X_train, data.X_test])
    assert len(together) == len(X)
    # Digits has a few duplicate images, so compare multisets of rows, not sets.
    assert sorted(row.tobytes() for row in together) == sorted(row.tobytes() for row in X)


def test_digits_is_deterministic_and_seeded() -> None:
    first = load_dataset("digits", outputs=10, classification=True)
    again = load_dataset("digits", outputs=10, classification=True)
    other = load_dataset("digits", outputs=10, classification=True, seed=1)
    assert np.array_equal(first.X_test, again.X_test)
    assert np.array_equal(first.y_train, again.y_train)
    assert not np.array_equal(first.X_test, other.X_test)


def test_dataset_arrays_are_read_only() -> None:
    data = load_dataset("digits", outputs=10, classification=True)
    with pytest.raises(ValueError):
        data.X_train[0, 0] = 5.0


def test_digits_labels_must_fit_the_outputs() -> None:
    error = error_of("digits", outputs=3)
    assert error.field == "--data"
    assert "digits" in str(error) and "label" in str(error) and "0..2" in str(error)


def test_check_features() -> None:
    data = load_dataset("digits", outputs=10, classification=True)
    check_features(data, 64)
    with pytest.raises(InputError) as caught:
        check_features(data, 4, "--data")
    assert str(caught.value) == (
        "--data: digits: the data has 64 features but the spec expects 4 inputs"
    )


# --- csv -------------------------------------------------------------------------------------


def test_csv_without_header(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", labelled_rows())
    X, y = read_table(path)
    assert X.shape == (20, 2) and y.shape == (20,)
    assert X.dtype == np.float64 and y.dtype == np.float64
    data = load_dataset(path, outputs=3, classification=True)
    assert data.name == path and data.classes == 3
    assert len(data.y_test) == 4 and len(data.y_train) == 16
    assert set(data.y_test.tolist()) == {0, 1, 2}


def test_csv_with_header_and_blank_lines(tmp_path: Path) -> None:
    text = "a,b,label\n\n" + labelled_rows().replace("\n", "\n\n", 3) + "\n   \n"
    X, y = read_table(write_csv(tmp_path / "d.csv", text))
    X_plain, y_plain = read_table(write_csv(tmp_path / "plain.csv", labelled_rows()))
    assert np.array_equal(X, X_plain) and np.array_equal(y, y_plain)


def test_csv_gz(tmp_path: Path) -> None:
    packed = write_csv(tmp_path / "d.csv.gz", "x1,x2,y\n" + labelled_rows(), compress=True)
    X, y = read_table(packed)
    X_plain, y_plain = read_table(write_csv(tmp_path / "d.csv", labelled_rows()))
    assert np.array_equal(X, X_plain) and np.array_equal(y, y_plain)


def test_csv_whole_number_float_labels(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", labelled_rows().replace(",0\n", ",0.0\n"))
    data = load_dataset(path, outputs=3, classification=True)
    assert data.y_train.dtype == np.int64


def test_csv_binary_labels_for_one_output(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", labelled_rows(classes=2))
    data = load_dataset(path, outputs=1, classification=True)
    assert data.classes == 2
    assert set(np.concatenate([data.y_train, data.y_test]).tolist()) == {0, 1}


def test_csv_regression_last_columns_are_targets(tmp_path: Path) -> None:
    rows = [f"{i},{i * 2},{i * 3},{i + 0.5},{-i}" for i in range(10)]
    path = write_csv(tmp_path / "r.csv", "\n".join(rows))
    data = load_dataset(path, outputs=2, classification=False, test_fraction=0.3)
    assert data.classes is None and data.features == 3
    assert data.y_train.shape == (7, 2) and data.y_test.shape == (3, 2)
    assert data.y_train.dtype == np.float64
    for X, y in ((data.X_train, data.y_train), (data.X_test, data.y_test)):
        assert np.array_equal(y[:, 0], X[:, 0] + 0.5) and np.array_equal(y[:, 1], -X[:, 0])
    single = load_dataset(path, outputs=1, classification=False)
    assert single.y_train.shape == (8, 1) and single.features == 4


# --- npz -------------------------------------------------------------------------------------


def test_npz_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(30, 4)), np.arange(30) % 3
    np.savez(tmp_path / "d.npz", X=X, y=y)
    data = load_dataset(str(tmp_path / "d.npz"), outputs=3, classification=True)
    assert data.features == 4 and len(data.y_test) == 6
    assert np.bincount(data.y_test).tolist() == [2, 2, 2]
    everything = np.vstack([data.X_train, data.X_test])
    assert np.array_equal(np.sort(everything, axis=0), np.sort(X, axis=0))


def test_npz_one_hot(tmp_path: Path) -> None:
    labels = np.arange(30) % 3
    X = np.column_stack([labels, np.arange(30)]).astype(np.float32)
    np.savez(tmp_path / "d.npz", X=X, y=one_hot(labels, 3))
    data = load_dataset(str(tmp_path / "d.npz"), outputs=3, classification=True)
    assert data.y_train.shape == (24,) and data.y_train.dtype == np.int64
    assert np.array_equal(data.y_train, data.X_train[:, 0].astype(np.int64))


def test_npz_regression_targets(tmp_path: Path) -> None:
    X = np.arange(20.0).reshape(10, 2)
    np.savez(tmp_path / "r.npz", X=X, y=X @ [[1.0, 2.0, 0.0], [0.5, 0.0, 1.0]])
    data = load_dataset(str(tmp_path / "r.npz"), outputs=3, classification=False)
    assert data.y_train.shape == (8, 3)
    np.savez(tmp_path / "one.npz", X=X, y=X[:, 0])
    data = load_dataset(str(tmp_path / "one.npz"), outputs=1, classification=False)
    assert data.y_test.shape == (2, 1)
    assert np.array_equal(data.y_test[:, 0], data.X_test[:, 0])


def test_npz_and_csv_agree(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "d.csv", labelled_rows())
    X, y = read_table(csv_path)
    np.savez(tmp_path / "d.npz", X=X, y=y.astype(np.int64))
    from_csv = load_dataset(csv_path, outputs=3, classification=True, seed=4)
    from_npz = load_dataset(str(tmp_path / "d.npz"), outputs=3, classification=True, seed=4)
    assert np.array_equal(from_csv.X_test, from_npz.X_test)
    assert np.array_equal(from_csv.y_train, from_npz.y_train)


def test_file_load_is_reproducible_per_seed(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", labelled_rows(n=60))
    first, again, other = (
        load_dataset(path, outputs=3, classification=True, seed=seed) for seed in (3, 3, 4)
    )
    assert np.array_equal(first.X_test, again.X_test)
    assert np.array_equal(first.X_train, again.X_train)
    assert not np.array_equal(first.X_test, other.X_test)


# --- split -----------------------------------------------------------------------------------


def test_split_sizes_and_partition() -> None:
    X, y = np.arange(50.0).reshape(25, 2), np.arange(25) % 2
    X_train, y_train, X_test, y_test = split(X, y, 0.3, seed=2)
    assert len(X_test) == 8 and len(X_train) == 17  # round(7.5) half up
    assert sorted(np.concatenate([X_train[:, 0], X_test[:, 0]]).tolist()) == X[:, 0].tolist()
    assert np.array_equal(y_test, (X_test[:, 0] // 2) % 2)


@pytest.mark.parametrize("n, fraction, expected", [(2, 0.2, 1), (3, 0.01, 1), (3, 0.99, 2)])
def test_split_keeps_both_parts_non_empty(n: int, fraction: float, expected: int) -> None:
    _, _, X_test, _ = split(np.zeros((n, 1)), np.zeros(n), fraction, stratify=False)
    assert len(X_test) == expected


def test_split_puts_every_class_in_both_parts_when_possible() -> None:
    # round(0.2 * 12) = 2 test samples would give the small classes none; each class of two
    # or more gets one in each part when the sizes allow it.
    y = np.array([0] * 8 + [1, 1, 2, 2])
    _, y_train, _, y_test = split(np.zeros((12, 1)), y, 0.25, seed=0)
    assert set(y_test.tolist()) == {0, 1, 2} and set(y_train.tolist()) == {0, 1, 2}
    # Too small a test part for every class: the training part still sees every class.
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    for seed in range(5):
        _, y_train, _, y_test = split(np.zeros((10, 1)), y, 0.2, seed=seed)
        assert set(y_train.tolist()) == {0, 1, 2, 3, 4} and len(y_test) == 2


def test_split_stratified_proportions() -> None:
    y = np.repeat(np.arange(4), [100, 37, 12, 51])
    for seed in range(10):
        _, _, _, y_test = split(np.zeros((200, 1)), y, 0.2, seed=seed)
        assert len(y_test) == 40
        assert np.all(np.abs(np.bincount(y_test) - 0.2 * np.array([100, 37, 12, 51])) <= 1)


def test_split_singletons_are_not_biased_to_low_labels() -> None:
    y = np.arange(10)
    chosen = set()
    for seed in range(10):
        chosen.update(split(np.zeros((10, 1)), y, 0.2, seed=seed)[3].tolist())
    assert len(chosen) > 4


def test_split_rejects_bad_arguments() -> None:
    X, y = np.zeros((5, 1)), np.zeros(5)
    for fraction in (1, -0.5, 1.5, float("nan"), "0.2", True):
        with pytest.raises(InputError) as caught:
            split(X, y, fraction)  # type: ignore[arg-type]
        assert caught.value.field == "--test-fraction"
    for seed in (-1, 1.5, None):
        with pytest.raises(InputError) as caught:
            split(X, y, 0.2, seed)  # type: ignore[arg-type]
        assert caught.value.field == "--seed"
    with pytest.raises(InputError, match="need at least 2"):
        split(X[:1], y[:1])
    with pytest.raises(InputError, match="5 samples but y has 4"):
        split(X, y[:4])


# --- helpers ---------------------------------------------------------------------------------


def test_one_hot_accuracy_rmse() -> None:
    encoded = one_hot(np.array([2, 0, 1]), 3)
    assert encoded.tolist() == [[0, 0, 1], [1, 0, 0], [0, 1, 0]]
    with pytest.raises(ValueError):
        one_hot(np.array([3]), 3)
    assert accuracy(np.array([2, 0, 0]), np.array([2, 0, 1])) == pytest.approx(2 / 3)
    assert accuracy(encoded, np.array([2, 0, 0])) == pytest.approx(2 / 3)
    assert accuracy(np.array([[0.9], [0.2]]), np.array([1, 1])) == 0.5
    assert rmse(np.array([[1.0], [3.0]]), np.array([[0.0], [3.0]])) == pytest.approx(0.5**0.5)


# --- errors ----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    error = error_of(str(tmp_path / "nope.csv"))
    assert error.field == "--data" and "no such file" in str(error) and "nope.csv" in str(error)
    assert "'digits'" in str(error_of("digts"))


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    assert "is not a file" in str(error_of(str(tmp_path)))


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text(labelled_rows())
    error = error_of(str(path), field="data")
    assert error.field == "data"
    assert "unknown file type" in str(error) and ".csv.gz" in str(error)


def test_csv_ragged_rows(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "h1,h2,y\n1,2,0\n\n1,2\n")
    assert str(error_of(path)) == f"--data: {path}: row 4 has 2 columns, expected 3"


def test_csv_non_numeric_cell(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "1,2,0\n1,2,1\n1,abc,0\n")
    assert str(error_of(path)) == f"--data: {path}: row 3, column 2: 'abc' is not a number"


def test_csv_second_header_row_is_an_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "a,b,y\nc,d,z\n1,2,0\n")
    assert "row 2, column 1: 'c' is not a number" in str(error_of(path))


@pytest.mark.parametrize("cell", ["nan", "inf", "-Infinity", "1e999"])
def test_csv_non_finite(tmp_path: Path, cell: str) -> None:
    path = write_csv(tmp_path / "d.csv", f"1,2,0\n1,{cell},1\n")
    message = str(error_of(path))
    assert "row 2, column 2" in message and "not a finite number" in message


def test_csv_too_few_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "1\n0\n1\n")
    assert "need at least 2" in str(error_of(path))
    path = write_csv(tmp_path / "r.csv", "1,2,3\n4,5,6\n")
    message = str(error_of(path, outputs=3, classification=False))
    assert "rows have 3 columns; need at least 4" in message


@pytest.mark.parametrize("text", ["", "\n\n  \n", "a,b,y\n"])
def test_csv_empty(tmp_path: Path, text: str) -> None:
    assert "the data is empty" in str(error_of(write_csv(tmp_path / "d.csv", text)))


def test_csv_not_text(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    assert "cannot read as csv" in str(error_of(str(path)))


def test_csv_gz_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "d.csv.gz"
    path.write_text("1,2,0\n")  # not gzip at all
    assert "cannot read as csv" in str(error_of(str(path)))
    packed = gzip.compress(labelled_rows(n=200).encode())
    path.write_bytes(packed[: len(packed) // 2])  # truncated
    assert "cannot read as csv" in str(error_of(str(path)))


def test_labels_out_of_range(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "a,b,y\n1,2,0\n1,2,3\n")
    assert str(error_of(path)) == (
        f"--data: {path}: row 3: label 3 is out of range for 3 outputs (expected 0..2)"
    )
    path = write_csv(tmp_path / "neg.csv", "1,2,0\n1,2,-1\n")
    assert "row 2: label -1 is out of range" in str(error_of(path))
    path = write_csv(tmp_path / "bin.csv", "1,2,0\n1,2,2\n")
    message = str(error_of(path, outputs=1))
    assert "label 2 is out of range for 1 output (expected 0 or 1)" in message


def test_labels_not_integers(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "1,2,0\n1,2,1.5\n")
    assert "row 2: label 1.5 is not an integer" in str(error_of(path))
    np.savez(tmp_path / "d.npz", X=np.zeros((3, 2)), y=np.array([0.0, 0.25, 1.0]))
    assert "y[1]: label 0.25 is not an integer" in str(error_of(str(tmp_path / "d.npz")))


def test_npz_not_one_hot(tmp_path: Path) -> None:
    y = one_hot(np.array([0, 1, 2, 0]), 3)
    y[2] = [0.0, 1.0, 1.0]
    np.savez(tmp_path / "d.npz", X=np.zeros((4, 2)), y=y)
    message = str(error_of(str(tmp_path / "d.npz")))
    assert "y[2] is not one-hot" in message
    np.savez(tmp_path / "w.npz", X=np.zeros((4, 2)), y=one_hot(np.array([0, 1, 2, 3]), 4))
    assert "y has 4 columns (one-hot) but the spec has 3 outputs" in str(
        error_of(str(tmp_path / "w.npz"))
    )


def test_regression_target_count_mismatch(tmp_path: Path) -> None:
    np.savez(tmp_path / "r.npz", X=np.zeros((4, 2)), y=np.zeros((4, 2)))
    message = str(error_of(str(tmp_path / "r.npz"), outputs=3, classification=False))
    assert "the data has 2 target columns but the spec has 3 outputs" in message


def test_npz_missing_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", data=np.zeros((4, 2)), y=np.zeros(4))
    message = str(error_of(str(tmp_path / "d.npz")))
    assert "missing array X" in message and "data" in message


@pytest.mark.parametrize(
    "content",
    [b"", b"1,2,0\n", b"PK\x03\x04 truncated zip", np.lib.format.MAGIC_PREFIX + b"\x01\x00"],
)
def test_npz_unreadable(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(content)
    message = str(error_of(str(path)))
    assert "not an .npz archive" in message or "cannot read as an .npz archive" in message


def test_npz_corrupt_member(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez_compressed(path, X=np.arange(400.0).reshape(100, 4), y=np.zeros(100))
    raw = bytearray(path.read_bytes())
    raw[60:90] = b"\x00" * 30  # inside the first member's compressed stream
    path.write_bytes(bytes(raw))
    assert "cannot read as an .npz archive" in str(error_of(str(path)))


@pytest.mark.parametrize(
    "X, y, problem",
    [
        (np.zeros(4), np.zeros(4), "X has shape (4,)"),
        (np.zeros((0, 2)), np.zeros(0), "the data is empty"),
        (np.zeros((4, 0)), np.zeros(4), "X has no feature columns"),
        (np.zeros((4, 2)), np.zeros(3), "y has shape (3,)"),
        (np.zeros((4, 2)), np.zeros((4, 2, 1)), "y has shape (4, 2, 1)"),
        (np.array([["a", "b"]] * 4), np.zeros(4), "X has dtype <U1"),
        (np.zeros((4, 2), complex), np.zeros(4), "X has dtype complex128"),
        (np.array([[0.0, np.nan]] * 4), np.zeros(4), "X[0, 1] is nan"),
        (np.zeros((4, 2)), np.array([0.0, 1.0, np.inf, 0.0]), "y[2] is inf"),
    ],
)
def test_npz_bad_arrays(tmp_path: Path, X: np.ndarray, y: np.ndarray, problem: str) -> None:
    np.savez(tmp_path / "d.npz", X=X, y=y)
    message = str(error_of(str(tmp_path / "d.npz")))
    assert message.startswith(f"--data: {tmp_path / 'd.npz'}: ")
    assert problem in message


def test_npz_object_arrays_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", X=np.array([[1, "a"]], dtype=object), y=np.zeros(1))
    # refused from the .npy header, before numpy would unpickle anything
    assert "X has dtype object; expected real numbers" in str(error_of(str(tmp_path / "d.npz")))


def test_too_few_samples_to_split(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "1,2,0\n")
    assert "too few to split" in str(error_of(path))


def test_load_dataset_checks_fraction_and_seed_first(tmp_path: Path) -> None:
    assert error_of("digits", outputs=10, test_fraction=1.0).field == "--test-fraction"
    assert error_of("digits", outputs=10, seed=-3).field == "--seed"
