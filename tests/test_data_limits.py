"""Data-file limits (issue 8 items 9 and 15): sizes are checked before anything is inflated.

The limits are module constants; the tests lower them so that small files stand for bombs.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from symbackprop import data
from symbackprop.data import load_dataset, read_table
from symbackprop.errors import InputError


def error_of(source: str, **kwargs: object) -> str:
    options = {"outputs": 3, "classification": True, **kwargs}
    with pytest.raises(InputError) as caught:
        load_dataset(source, **options)
    message = str(caught.value)
    assert "\n" not in message
    assert len(message) < 300, message
    return message


def npy_bytes(header: dict, payload: bytes = b"") -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, header)
    return stream.getvalue() + payload


def write_zip(path: Path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return str(path)


def small_y(n: int = 10) -> bytes:
    stream = io.BytesIO()
    np.save(stream, np.zeros(n))
    return stream.getvalue()


def no_array_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an array was read before its header was checked")

    monkeypatch.setattr(np.lib.format, "read_array", refuse)


def test_limits_are_named_constants() -> None:
    assert data.MAX_DATA_ELEMENTS == 100_000_000
    assert data.MAX_NPZ_MEMBERS == 1000
    assert data.MAX_CSV_BYTES == 1 << 30
    assert data.MAX_CSV_LINE == 1 << 20
    assert data.MAX_COMPRESSION_RATIO == 100
    assert data.RATIO_FREE_BYTES == 1 << 20


# --- .npz ------------------------------------------------------------------------------------


def test_npz_header_claiming_a_huge_array_is_refused_unread(tmp_path, monkeypatch) -> None:
    header = {"descr": "<f8", "fortran_order": False, "shape": (2**24, 16)}  # 2 GiB
    path = write_zip(tmp_path / "bomb.npz", {"X.npy": npy_bytes(header), "y.npy": small_y()})
    no_array_reads(monkeypatch)
    message = error_of(path)
    assert "X has shape (16777216, 16)" in message
    assert "268,435,466 numbers" in message
    assert "at most 100,000,000" in message


def test_npz_limit_counts_x_and_y(tmp_path, monkeypatch) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((60, 10)), y=np.zeros(60))
    assert read_table(str(path))[0].shape == (60, 10)
    monkeypatch.setattr(data, "MAX_DATA_ELEMENTS", 659)
    no_array_reads(monkeypatch)
    assert "660 numbers" in error_of(str(path))


def test_npz_compressed_zeros_within_the_limit_load(tmp_path) -> None:
    path = tmp_path / "d.npz"
    np.savez_compressed(path, X=np.zeros((500, 4)), y=np.arange(500) % 3)
    dataset = load_dataset(str(path), outputs=3, classification=True)
    assert dataset.X_train.shape[0] + dataset.X_test.shape[0] == 500


def test_npz_too_many_members(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(data, "MAX_NPZ_MEMBERS", 10)
    members = {f"a{i}.npy": small_y(1) for i in range(11)}
    path = write_zip(tmp_path / "many.npz", members)
    message = error_of(path)
    assert "11 members" in message and "at most 10" in message


def test_npz_member_list_is_cut(tmp_path) -> None:
    path = write_zip(tmp_path / "many.npz", {f"array{i}.npy": small_y(1) for i in range(50)})
    message = error_of(path)
    assert "missing array X and y" in message
    assert "array0, array1, array2, array3, array4 … and 45 more" in message


@pytest.mark.slow
def test_npz_with_20000_members_gives_a_short_line(tmp_path) -> None:
    # the outside test's file (U2); the default member limit refuses it
    path = write_zip(tmp_path / "many.npz", {f"a{i}.npy": b"" for i in range(20_000)})
    assert "20,000 members" in error_of(path)


def test_npz_member_that_is_not_npy(tmp_path) -> None:
    path = write_zip(tmp_path / "d.npz", {"X": b"just some bytes", "y.npy": small_y(4)})
    assert "X is not a .npy array" in error_of(path)


def test_npz_object_header_refused_unread(tmp_path, monkeypatch) -> None:
    header = {"descr": "|O", "fortran_order": False, "shape": (4, 2)}
    path = write_zip(
        tmp_path / "d.npz", {"X.npy": npy_bytes(header, b"x" * 64), "y.npy": small_y(4)}
    )
    no_array_reads(monkeypatch)
    assert "X has dtype object; expected real numbers" in error_of(path)


def test_npz_long_dtype_is_cut(tmp_path) -> None:
    descr = [(f"field_number_{i}", "<f8") for i in range(200)]
    header = {"descr": descr, "fortran_order": False, "shape": (4,)}
    path = write_zip(tmp_path / "d.npz", {"X.npy": npy_bytes(header), "y.npy": small_y(4)})
    assert "X has dtype" in error_of(path)


# --- .csv and .csv.gz ------------------------------------------------------------------------


def test_csv_gz_long_line_refused_while_streaming(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(data, "MAX_CSV_LINE", 1000)
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(b"0" * 5000))
    message = error_of(str(path))
    assert "row 1 is longer than 1,000 characters" in message


def test_csv_gz_decompressed_size_bounded(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(data, "MAX_CSV_BYTES", 10_000)
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(b"0,0,1\n" * 2000))  # 12,000 characters
    assert "more than 10,000 characters once decompressed" in error_of(str(path))
    path.write_bytes(gzip.compress(b"0,0,1\n0,1,2\n" * 100))
    assert read_table(str(path))[0].shape == (200, 2)


def test_plain_csv_size_bounded_before_reading(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(data, "MAX_CSV_BYTES", 10_000)
    path = tmp_path / "big.csv"
    path.write_text("0,0,1\n" * 2000)
    monkeypatch.setattr(data.csv, "reader", None)  # never reached
    assert "is larger than 10,000 bytes" in error_of(str(path))


def test_csv_number_count_bounded(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(data, "MAX_DATA_ELEMENTS", 100)
    path = tmp_path / "d.csv"
    path.write_text("0.5,0.25,1\n" * 40)
    assert "more than 100 numbers" in error_of(str(path))


def test_csv_too_few_columns_refused_at_the_first_row(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(data, "MAX_CSV_BYTES", 10_000)
    path = tmp_path / "d.csv.gz"
    path.write_bytes(gzip.compress(b"0\n" * 20_000))  # past the size limit, but refused first
    assert "need at least 2" in error_of(str(path))


def test_csv_read_in_chunks_keeps_rows_and_line_numbers(tmp_path) -> None:
    n = 70_000 // 3  # more numbers than one chunk holds
    rows = [f"{i},{i * 0.5},{i % 2}" for i in range(n)]
    path = tmp_path / "d.csv"
    path.write_text("a,b,y\n" + "\n\n".join(rows) + "\n")
    X, y = read_table(str(path))
    assert X.shape == (n, 2)
    assert np.array_equal(X[:, 0], np.arange(n)) and np.array_equal(X[:, 1], np.arange(n) * 0.5)
    assert np.array_equal(y, np.arange(n) % 2)
    rows[-1] = f"{n - 1},0,5"
    path.write_text("a,b,y\n" + "\n\n".join(rows) + "\n")
    assert f"row {2 + 2 * (n - 1)}: label 5 is out of range" in error_of(str(path), outputs=2)


@pytest.mark.parametrize("compress", [False, True])
def test_csv_byte_order_mark_is_not_a_header(tmp_path, compress) -> None:
    text = "\ufeff0.5,0.25,1\n0.1,0.2,0\n0.3,0.4,1\n"
    path = tmp_path / ("d.csv.gz" if compress else "d.csv")
    raw = text.encode("utf-8")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    X, y = read_table(str(path))
    assert X.shape == (3, 2)
    assert X[0].tolist() == [0.5, 0.25]


@pytest.mark.parametrize("where", ["first", "later"])
def test_csv_nul_is_bad_input(tmp_path, where) -> None:
    path = tmp_path / "d.csv"
    rows = ["0.5,0.25,1", "0.1,0.2,0", "0.3,0.4,1"]
    row = 1 if where == "first" else 3
    rows[row - 1] = "\x00" + rows[row - 1]
    path.write_text("\n".join(rows) + "\n")
    assert f"row {row} holds a NUL character" in error_of(str(path))


def test_path_too_long_for_the_file_system(tmp_path) -> None:
    message = error_of(str(tmp_path / ("x" * 10_000 + ".csv")))
    assert message.startswith("--data: ") and "cannot read" in message


def test_csv_gz_compression_ratio_bounded(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(data, "RATIO_FREE_BYTES", 10_000)
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(b"0,0,1\n" * 100_000))  # 600 kB in about 1.2 kB
    message = error_of(str(path))
    assert "decompresses to more than 100 times its size" in message
    assert "decompress it and pass the .csv" in message
    # the same text, uncompressed, is only large; ordinary data compresses far less
    rng = np.random.default_rng(0)
    rows = "".join(f"{a:.6f},{b:.6f},{i % 3}\n" for i, (a, b) in enumerate(rng.random((5000, 2))))
    path.write_bytes(gzip.compress(rows.encode()))
    assert read_table(str(path))[0].shape == (5000, 2)


def test_npz_compression_ratio_bounded(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(data, "RATIO_FREE_BYTES", 10_000)
    path = tmp_path / "d.npz"
    np.savez_compressed(path, X=np.zeros((10_000, 4)), y=np.zeros(10_000))
    no_array_reads(monkeypatch)
    message = error_of(str(path))
    assert "X.npy decompresses to more than 100 times its size" in message
