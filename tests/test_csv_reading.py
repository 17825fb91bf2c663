"""Reading csv text fast and refusing bombs early, with the same numbers and errors as before.

Whole blocks of plain rows are read by NumPy; rows one by one (the csv module) wherever a
block is not plain.  The row by row path is the reference: every test here compares the two
or counts how many rows took the slow path.  Nothing is timed.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import pytest

from symbackprop import data
from symbackprop.data import load_dataset, read_table
from symbackprop.errors import InputError


def outcome(path: str, targets: int = 1) -> tuple:
    try:
        X, y = read_table(path, targets=targets)
    except InputError as error:
        message = str(error)
        assert "\n" not in message
        return ("refused", message)
    return ("read", X.shape, X.tobytes(), y.shape, y.tobytes())


def count_rows_one_by_one(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    numbers = data._numbers

    def counted(cells: list[str]) -> list[float] | None:
        calls[0] += 1
        return numbers(cells)

    monkeypatch.setattr(data, "_numbers", counted)
    return calls


def count_inflated_bytes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    inflated = [0]
    decompressobj = zlib.decompressobj

    class Counted:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self._inner = decompressobj(*args, **kwargs)

        def decompress(self, *args: object) -> bytes:
            out = self._inner.decompress(*args)
            inflated[0] += len(out)
            return out

        def __getattr__(self, name: str) -> object:
            return getattr(self._inner, name)

    monkeypatch.setattr(zlib, "decompressobj", Counted)
    return inflated


def write(path: Path, text: str | bytes, compress: bool = False) -> str:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return str(path)


# --- both paths give the same numbers and the same errors ----------------------------------

LONG_NUMBER = "1" + "0" * 200_000  # a float() can read it; the csv module's field limit cannot

TEXTS = {
    "plain": "1,2,0\n3,4,1\n5,6,2\n",
    "header": "a,b,y\n1,2,0\n3,4,1\n",
    "crlf": "a,b,y\r\n1,2,0\r\n3,4,1\r\n",
    "lone cr": "1,2,0\r3,4,1\r5,6,2\r",
    "mixed endings": "1,2,0\n3,4,1\r\n5,6,2\r7,8,0",
    "blank lines": "\n1,2,0\n\n\n3,4,1\n  \n,,\n5,6,2\n\n",
    "no final newline": "1,2,0\n3,4,1",
    "bom": "\ufeff1,2,0\n3,4,1\n",
    "spaces and tabs": " 1 ,\t2, 0\n3 , 4 ,1 \n",
    "quoted cells": '"1","2","0"\n3,"4",1\n',
    "quoted header with a newline": '"a\nb",c,y\n1,2,0\n3,4,1\n',
    "quoted number with a newline": '1,"2\n",0\n3,4,1\n',
    "underscores": "1_000,2,0\n3,4,1\n",
    "unicode digits and spaces": "\uff11,\u00a02,0\n3,\u20034,1\n",
    "exponents and signs": "1e3,-2.5E-2,0\n+.5,-0,1\n",
    "not a number": "1,2,0\n3,x,1\n",
    "second header": "a,b,y\nc,d,z\n1,2,0\n",
    "ragged": "1,2,0\n3,4\n",
    "too few columns": "1\n2\n",
    "empty": "",
    "only a header": "a,b,y\n",
    "non-finite": "1,2,0\n3,inf,1\nnan,4,1\n",
    "hex": "0x10,2,0\n",
    "nul": "1,2,0\n3,\x004,1\n",
    "long field": f"1,{LONG_NUMBER},0\n3,4,1\n",
    "hash": "1,2,0 # note\n",
}


@pytest.mark.parametrize("block", [7, 64, 1 << 20])
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_block_path_reads_as_the_row_path(tmp_path, monkeypatch, name, compress, block) -> None:
    path = write(tmp_path / ("d.csv.gz" if compress else "d.csv"), TEXTS[name], compress)
    monkeypatch.setattr(data, "_TEXT_BLOCK", block)
    monkeypatch.setattr(data, "_COMPRESSED_READ", 5)
    fast = outcome(path)
    monkeypatch.setattr(data, "_parse_block", lambda lines, width: None)
    assert fast == outcome(path)


def test_random_rows_read_alike(tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(1)
    cells = ["0", "1", "-2.5", " 3", "1e-7", "nan", "", "a", '"4"', "5 "]
    for trial in range(30):
        rows = []
        for _ in range(int(rng.integers(1, 200))):
            width = 3 if rng.random() < 0.97 else 2
            rows.append(
                ",".join(
                    rng.choice(cells, width)
                    if rng.random() < 0.05
                    else [f"{v:.3g}" for v in rng.standard_normal(width)]
                )
            )
        end = ["\n", "\r\n", "\n\n"][trial % 3]
        path = write(tmp_path / "d.csv", end.join(rows) + end)
        monkeypatch.setattr(data, "_TEXT_BLOCK", int(rng.choice([16, 200, 1 << 20])))
        fast = outcome(path)
        with monkeypatch.context() as slow:
            slow.setattr(data, "_parse_block", lambda lines, width: None)
            assert fast == outcome(path), rows


# --- the block path is taken --------------------------------------------------------------


@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_plain_rows_are_read_as_blocks(tmp_path, monkeypatch, end) -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((50_000, 3)).round(6)
    body = end.join(",".join(repr(float(v)) for v in row) for row in values)
    path = write(tmp_path / "d.csv", "a,b,y" + end + body + end)
    rows_one_by_one = count_rows_one_by_one(monkeypatch)
    X, y = read_table(path)
    assert np.array_equal(X, values[:, :2]) and np.array_equal(y, values[:, 2])
    assert rows_one_by_one[0] <= 2  # the header and the row that fixes the width


def test_block_path_keeps_file_lines_for_messages(tmp_path) -> None:
    rows = [f"{i % 7},{i % 5},{i % 3}" for i in range(30_000)]
    rows[-1] = "1,2,7"
    path = write(tmp_path / "d.csv", "a,b,y\n" + "\n".join(rows) + "\n")
    with pytest.raises(InputError) as caught:
        load_dataset(path, outputs=3, classification=True)
    assert "row 30001: label 7 is out of range" in str(caught.value)


# --- refusals come from counts, early -------------------------------------------------------


def test_csv_gz_bomb_refused_without_parsing_it_row_by_row(tmp_path, monkeypatch) -> None:
    path = write(tmp_path / "bomb.csv.gz", b"0,0,1\n" * 1_000_000, compress=True)  # 6 MB in 6 kB
    rows_one_by_one = count_rows_one_by_one(monkeypatch)
    message = outcome(path)[1]
    assert "decompresses to more than 100 times its size" in message
    assert rows_one_by_one[0] <= 2


def test_compression_ratio_is_checked_as_the_file_is_read(tmp_path, monkeypatch) -> None:
    """A bomb followed by incompressible rows: over the whole file the ratio is under 100,
    but at its start it is over 1000, and the rest is never decompressed."""
    monkeypatch.setattr(data, "RATIO_FREE_BYTES", 10_000)
    rng = np.random.default_rng(0)
    tail = "".join(f"{a!r},{b!r},1\n" for a, b in rng.standard_normal((4000, 2)))
    packed = gzip.compress(b"0,0,1\n" * 100_000) + gzip.compress(tail.encode())
    assert 600_000 + len(tail) < 100 * len(packed)
    path = write(tmp_path / "d.csv.gz", packed)
    inflated = count_inflated_bytes(monkeypatch)
    assert "decompresses to more than 100 times its size" in outcome(path)[1]
    assert inflated[0] <= data._TEXT_BLOCK


def test_number_limit_is_exact_on_the_block_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(data, "MAX_DATA_ELEMENTS", 30_000)
    rows_one_by_one = count_rows_one_by_one(monkeypatch)
    path = write(tmp_path / "d.csv", "0.5,0.25,1\n" * 10_000)
    assert read_table(path)[0].shape == (10_000, 2)
    path = write(tmp_path / "d.csv", "0.5,0.25,1\n" * 10_001)
    assert "more than 30,000 numbers" in outcome(path)[1]
    assert rows_one_by_one[0] <= 4


def test_long_line_in_csv_gz_refused_after_one_block(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(data, "MAX_CSV_LINE", 1000)
    monkeypatch.setattr(data, "_TEXT_BLOCK", 4096)
    path = write(tmp_path / "d.csv.gz", b"1,2,0\n" + b"0" * 1_000_000, compress=True)
    inflated = count_inflated_bytes(monkeypatch)
    assert "row 2 is longer than 1,000 characters" in outcome(path)[1]
    assert inflated[0] <= 3 * 4096
