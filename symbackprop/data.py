"""Datasets: the bundled handwritten digits and users' own ``.npz`` / ``.csv`` files.

Contract
--------
``load_dataset(source, outputs=..., classification=...)`` returns a frozen ``Dataset`` with a
deterministic train/test split.  ``source`` is ``"digits"`` (always the bundled dataset, even
if a file of that name exists) or a path:

- ``.npz``: arrays ``X`` (n, features) and ``y``, either (n,) or (n, k); ``X`` may also be
  images (n, C, H, W), read as rows of C·H·W features in C order.
- ``.csv`` / ``.csv.gz``: comma-separated numbers, one sample per row.  The last column is the
  target; for regression with ``outputs > 1`` the last ``outputs`` columns are the targets.
  One header row is allowed (recognised by a non-numeric cell in the first row); blank lines
  are ignored.  Rows are numbered as lines of the file, from 1, header included.

Targets:

- classification: integer labels 0..outputs-1 (whole-number floats are accepted), or, in an
  ``.npz``, one-hot rows of ``outputs`` columns.  With ``outputs == 1`` (one sigmoid output,
  binary cross-entropy) the labels must be 0 or 1 and ``Dataset.classes`` is 2.  Labels come
  back as int64 of shape (n,);
- regression: float64 of shape (n, outputs).

Features come back as float64 (n, features); the digits' pixels are scaled to [0, 1].  With
``shape=(C, H, W)`` (a spec whose ``inputs`` is an image, DESIGN §2c) they come back as
(n, C, H, W): every row of C·H·W numbers is one image in C order (channel, then row, then
column), as ``numpy.reshape`` reads it; the bundled digits are 1×8×8 images.  A row of any
other length is bad input.  The split is made on the rows before they are reshaped, so a
flat and an image spec hold out the same samples for the same seed.

Limits (module constants, checked before anything is inflated or allocated): X and y hold
at most ``MAX_DATA_ELEMENTS`` numbers together, read from the ``.npy`` headers of an
``.npz``, whose members number at most ``MAX_NPZ_MEMBERS``; a csv has at most
``MAX_CSV_BYTES`` of text (a ``.csv.gz`` once decompressed, counted while streaming) and
lines of at most ``MAX_CSV_LINE`` characters; a compressed ``.npz`` member inflates to at
most ``MAX_COMPRESSION_RATIO`` times its size, and a ``.csv.gz`` at every point of reading:
the text decompressed so far is at most that many times the compressed bytes it came from
(both past ``RATIO_FREE_BYTES``), so a bomb is refused within its first megabytes.  A UTF-8
byte-order mark at the start of a csv is ignored; a NUL character is bad input.

A csv is read in blocks of about a megabyte: plain rows of numbers at NumPy's speed
(``numpy.loadtxt``, which reads a number exactly as ``float()`` does), and row by row with
the ``csv`` module wherever a block is not plain (a header, quotes, blank lines, a bad row, a
limit reached), which gives the same numbers and the same errors at the same rows.

Every problem with the input raises ``InputError(field, problem)`` whose problem is one line
naming the file and, where it helps, the row and column (csv) or the array element (npz):
``--data: train.csv: row 7 has 5 columns, expected 65``.  No NumPy, csv, gzip or zipfile
exception escapes for a malformed file.  Reading is allowed here; writing is not.
"""

from __future__ import annotations

import codecs
import csv
import math
import re
import warnings
import zipfile
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from dataclasses import field as _field
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import ArrayLike

from symbackprop.errors import InputError, cut_list, shorten

__all__ = [
    "DIGITS",
    "Dataset",
    "accuracy",
    "check_features",
    "load_dataset",
    "load_digits",
    "one_hot",
    "predicted_labels",
    "read_table",
    "rmse",
    "split",
    "split_indices",
    "standardizer",
]

DIGITS = "digits"
_SUFFIXES = (".npz", ".csv", ".csv.gz")
_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: everything float64 holds as a real

# Limits against files that are small on disk and huge once read (a zip or gzip bomb).
MAX_DATA_ELEMENTS = 100_000_000  # numbers in X and y together: 800 MB as float64
MAX_NPZ_MEMBERS = 1000  # arrays in an .npz (only X and y are read)
MAX_CSV_BYTES = 1 << 30  # 1 GiB of csv text, on disk or once decompressed
MAX_CSV_LINE = 1 << 20  # 1 MiB: characters in one line of a csv
# A compressed .csv.gz or .npz member may inflate to at most this many times its size once
# past RATIO_FREE_BYTES: real data compresses 2-50 times, a bomb of zeros about 1000 times
# (so the ratio bounds the time to read a file by its size on disk too).  A .csv.gz is held
# to it as it is read, so that a bomb is refused before much of it is parsed.
MAX_COMPRESSION_RATIO = 100
RATIO_FREE_BYTES = 1 << 20
_CHUNK_ELEMENTS = 1 << 16  # csv numbers read row by row are gathered in float64 blocks
_TEXT_BLOCK = 1 << 20  # bytes of csv text read (and parsed by NumPy) at a time
_COMPRESSED_READ = 1 << 16  # bytes of a .csv.gz read at a time
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")  # a line as readline(newline="") ends it


@dataclass(frozen=True)
class Dataset:
    """A train/test split, ready for the generated module.  The arrays are read-only."""

    X_train: np.ndarray  # float64 (n_train, features), or (n_train, C, H, W) for images
    y_train: np.ndarray  # int64 (n_train,) labels, or float64 (n_train, outputs) for regression
    X_test: np.ndarray
    y_test: np.ndarray
    name: str  # "digits" or the path as given
    classes: int | None  # classification: number of classes (2 for one sigmoid output)
    X_val: np.ndarray | None = None  # the validation part (``val_fraction``), else None
    y_val: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None  # a csv's class names, label i = names[i]
    # the sample numbers (0-based, in the file's order) of each part: train, validation, test
    indices: dict[str, np.ndarray] = _field(default_factory=dict)

    @property
    def features(self) -> int:
        """Numbers per sample: C * H * W for images."""
        return math.prod(int(size) for size in self.X_train.shape[1:])

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample's shape: (features,) or (C, H, W)."""
        return tuple(int(size) for size in self.X_train.shape[1:])


@dataclass(frozen=True)
class _Table:
    """Arrays as read, and where each sample came from, for messages."""

    X: np.ndarray  # float64 (n, features)
    y: np.ndarray  # float64 (n,) or (n, k)
    name: str
    rows: np.ndarray | None  # csv: the file line of each sample; npz: None
    image: tuple[int, ...] = ()  # an .npz's X of shape (n, C, H, W): its (C, H, W)
    names: tuple[str, ...] | None = None  # a csv's class names; y then holds their indices

    def where(self, i: int) -> str:
        return f"row {int(self.rows[i])}" if self.rows is not None else f"y[{i}]"


# --- the bundled dataset ---------------------------------------------------------------------


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8×8 UCI digits: X float64 (1797, 64) in [0, 1] (pixel counts / 16), y int64."""
    resource = resources.files("symbackprop").joinpath("datasets/digits.npz")
    # Through a file object rather than a path so that a zipped install works too.
    with resource.open("rb") as stream, np.load(stream, allow_pickle=False) as archive:
        X = archive["X"].astype(np.float64) / 16.0
        y = archive["y"].astype(np.int64)
    return X, y


# --- reading files ---------------------------------------------------------------------------


def read_table(
    path: str, *, targets: int = 1, field: str = "--data"
) -> tuple[np.ndarray, np.ndarray]:
    """Raw features and targets of an ``.npz``, ``.csv`` or ``.csv.gz`` file.

    Returns X float64 (n, features) and y float64: an ``.npz``'s ``y`` keeps its shape; a
    csv's last ``targets`` columns become y, of shape (n,) when ``targets == 1`` and
    (n, targets) otherwise.  Values are checked to be finite numbers; nothing is checked
    about what they mean (see ``load_dataset``).
    """
    table = _read(path, targets, field)
    return table.X, table.y


def _read(path: str, targets: int, field: str, names: bool = False) -> _Table:
    file = Path(path)
    try:
        exists = file.exists()
    except (OSError, ValueError) as error:  # e.g. a name too long for the file system
        reason = getattr(error, "strerror", None) or _one_line(error)
        raise InputError(field, f"cannot read {shorten(path, 80)}: {reason}") from None
    if not exists:
        named = not path.lower().endswith(_SUFFIXES) and "/" not in path and "\\" not in path
        hint = f" (the bundled dataset is called {DIGITS!r})" if named else ""
        raise InputError(field, f"no such file: {path}{hint}")
    if not file.is_file():
        raise InputError(field, f"{path} is not a file")
    lower = path.lower()
    if lower.endswith(".npz"):
        return _read_npz(file, path, field)
    if lower.endswith((".csv", ".csv.gz")):
        return _read_csv(file, path, targets, field, names)
    raise InputError(field, f"{path}: unknown file type; expected one of {', '.join(_SUFFIXES)}")


def _read_npz(file: Path, name: str, field: str) -> _Table:
    try:
        with open(file, "rb") as stream:
            magic = stream.read(4)
    except OSError as error:
        raise InputError(field, f"{name}: cannot read: {_one_line(error)}") from None
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip archive (or an empty one)
        raise InputError(field, f"{name}: not an .npz archive (not a zip file)")
    try:
        with zipfile.ZipFile(file) as archive:
            members = _npz_members(archive, name, field)
            headers = {key: _npy_header(archive, members[key], name, key, field) for key in "Xy"}
            elements = sum(math.prod(shape) for shape, _ in headers.values())
            if elements > MAX_DATA_ELEMENTS:
                (x_shape, _), (y_shape, _) = headers["X"], headers["y"]
                raise InputError(
                    field,
                    f"{name}: X has shape {shorten(x_shape)} and y {shorten(y_shape)}, "
                    f"{elements:,} numbers; at most {MAX_DATA_ELEMENTS:,} are read",
                )
            arrays = {}
            for key in "Xy":
                with archive.open(members[key]) as stream:
                    # allow_pickle=False: a data file must never run code.
                    arrays[key] = np.lib.format.read_array(stream, allow_pickle=False)
    except InputError:
        raise
    except Exception as error:
        # An untrusted file can fail anywhere in zipfile, zlib or numpy's format parser.
        raise InputError(
            field, f"{name}: cannot read as an .npz archive: {_one_line(error)}"
        ) from None
    X, y = arrays["X"], arrays["y"]
    image: tuple[int, ...] = ()
    if X.ndim == 4 and min(X.shape[1:]) > 0:  # images (samples, C, H, W): rows in C order
        image, X = tuple(int(d) for d in X.shape[1:]), X.reshape(X.shape[0], -1)
    if X.ndim != 2:
        raise InputError(
            field,
            f"{name}: X has shape {shorten(X.shape)}; expected (samples, features) or "
            "(samples, C, H, W)",
        )
    if X.shape[0] == 0:
        raise InputError(field, f"{name}: the data is empty (X has no samples)")
    if X.shape[1] == 0:
        raise InputError(field, f"{name}: X has no feature columns")
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0] or (y.ndim == 2 and y.shape[1] == 0):
        raise InputError(
            field,
            f"{name}: y has shape {shorten(y.shape)}; "
            f"expected ({X.shape[0]},) or ({X.shape[0]}, k)",
        )
    X, y = X.astype(np.float64, copy=False), y.astype(np.float64, copy=False)
    for key, values in (("X", X), ("y", y)):
        bad = np.argwhere(~np.isfinite(values))
        if bad.size:
            index = ", ".join(str(int(i)) for i in bad[0])
            value = values[tuple(bad[0])]
            raise InputError(field, f"{name}: {key}[{index}] is {value}; expected a finite number")
    return _Table(X, y, name, None, image)


def _npz_members(archive: zipfile.ZipFile, name: str, field: str) -> dict[str, zipfile.ZipInfo]:
    """The members holding X and y (``X.npy`` or ``X``, as ``numpy.load`` finds them)."""
    infos = archive.infolist()  # the central directory only: nothing is decompressed
    if len(infos) > MAX_NPZ_MEMBERS:
        raise InputError(
            field, f"{name}: holds {len(infos):,} members; at most {MAX_NPZ_MEMBERS:,} are read"
        )
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        key = info.filename.removesuffix(".npy")
        if key not in members or info.filename.endswith(".npy"):
            members[key] = info
    missing = [key for key in "Xy" if key not in members]
    if missing:
        found = cut_list(members) or "none"
        raise InputError(
            field, f"{name}: missing array {' and '.join(missing)} (arrays found: {found})"
        )
    for key in "Xy":
        info = members[key]  # zipfile stops reading a member at its recorded file_size
        if _inflated(info.file_size, info.compress_size):
            raise InputError(
                field,
                f"{name}: {shorten(info.filename)} decompresses to more than "
                f"{MAX_COMPRESSION_RATIO} times its size; if that is genuine, save it "
                "uncompressed (numpy.savez)",
            )
    return members


def _inflated(size: int, compressed_size: int) -> bool:
    return size > RATIO_FREE_BYTES and size > MAX_COMPRESSION_RATIO * compressed_size


def _npy_header(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, key: str, field: str
) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a member's ``.npy`` header: its first bytes, nothing more."""
    with archive.open(info) as stream:
        try:
            version = np.lib.format.read_magic(stream)
        except ValueError:
            raise InputError(field, f"{name}: {key} is not a .npy array") from None
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:  # 3.0 exists only for structured dtypes with non-Latin-1 names
            raise InputError(
                field, f"{name}: {key} is a .npy file of version {version[0]}.{version[1]}"
            )
    if dtype.kind not in _NUMERIC_KINDS:
        shown = "object" if dtype.hasobject and dtype.kind == "O" else shorten(str(dtype))
        raise InputError(field, f"{name}: {key} has dtype {shown}; expected real numbers")
    if any(size < 0 for size in shape):
        raise InputError(field, f"{name}: {key} has shape {shorten(shape)}")
    return shape, dtype


def _read_csv(file: Path, name: str, targets: int, field: str, names: bool = False) -> _Table:
    compressed = name.lower().endswith(".gz")
    try:
        size = file.stat().st_size
    except OSError as error:
        raise InputError(field, f"{name}: cannot read: {_one_line(error)}") from None
    if not compressed and size > MAX_CSV_BYTES:
        raise InputError(field, f"{name}: is larger than {MAX_CSV_BYTES:,} bytes, the limit")
    parser = _CsvParser(name, targets, field, compressed, names)
    try:
        with open(file, "rb") as raw:
            parser.run(_blocks(_text(raw, compressed)))
    except (OSError, EOFError, zlib.error, csv.Error, UnicodeDecodeError) as error:
        raise InputError(field, f"{name}: cannot read as csv: {_one_line(error)}") from None
    return parser.table()


def _text(raw: BinaryIO, compressed: bool) -> Iterator[tuple[str, int | None]]:
    """The file's text in pieces, each with the compressed bytes read so far (None for a
    plain csv).  UTF-8; a byte-order mark is not part of the first cell.  Line endings are
    kept as they are (\\n, \\r or \\r\\n), as the csv module wants them.
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    consumed = None
    pieces = _inflate(raw) if compressed else ((data, None) for data in _chunks(raw))
    for data, consumed in pieces:
        if text := decoder.decode(data):
            yield text, consumed
    if text := decoder.decode(b"", final=True):
        yield text, consumed


def _chunks(raw: BinaryIO) -> Iterator[bytes]:
    while data := raw.read(_TEXT_BLOCK):
        yield data


def _inflate(raw: BinaryIO) -> Iterator[tuple[bytes, int]]:
    """The decompressed bytes of a gzip file, at most ``_TEXT_BLOCK`` at a time, each with
    the compressed bytes the decompressor has taken so far.

    Driven here rather than by ``gzip.GzipFile`` so that the count is exact, whatever read-
    ahead a Python version does: the ratio check must give the same answer everywhere.
    Members follow each other, zero bytes may pad between them (as ``gzip`` allows); zlib
    checks each member's CRC and length.
    """
    consumed = members = 0
    pending = b""  # compressed bytes read, not yet taken
    inflater = None  # the current member's decompressor
    while True:
        if not pending and not (pending := raw.read(_COMPRESSED_READ)):
            break
        if inflater is None:
            if members:  # zero bytes may pad a member, not start the file
                padding = len(pending) - len(pending := pending.lstrip(b"\0"))
                consumed += padding
                if not pending:
                    continue
            while len(pending) < 2 and (more := raw.read(_COMPRESSED_READ)):
                pending += more
            if pending[:2] != b"\x1f\x8b":
                raise OSError(f"Not a gzipped file ({pending[:2]!r})")
            inflater = zlib.decompressobj(wbits=31)  # a gzip header and trailer
            members += 1
        given = len(pending)
        data = inflater.decompress(pending, _TEXT_BLOCK)
        if inflater.eof:
            pending, inflater = inflater.unused_data, None
        else:
            pending = inflater.unconsumed_tail
        consumed += given - len(pending)
        if data:
            yield data, consumed
    if inflater is not None:
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")


def _blocks(pieces: Iterable[tuple[str, int | None]]) -> Iterator[tuple[str, int | None]]:
    """The text in blocks of whole lines (the last one may lack its ending), each with the
    compressed bytes read so far.

    A line that grows past ``MAX_CSV_LINE`` without an ending is handed on as it is, at most
    one piece past the limit, so that the reader refuses it without reading the rest.
    """
    carry, consumed = "", None
    for piece, consumed in pieces:
        text = carry + piece
        cut = max(text.rfind("\n"), text.rfind("\r", 0, len(text) - 1)) + 1
        if cut == 0 and len(text) <= MAX_CSV_LINE:
            carry = text  # no line ends here yet: read on
            continue
        if cut == 0:
            cut = len(text)  # an over-long line: refused by the reader
        carry = text[cut:]
        yield text[:cut], consumed
    if carry:
        yield carry, consumed


class _CsvParser:
    """Numbers of a csv, block by block: whole blocks at NumPy's speed, rows one by one
    with the csv module wherever a block is not plain (a header, quotes, blank lines, a
    bad row, a limit reached inside it).  Both give the same numbers and the same errors,
    in file order: the row by row path is the reference, the block path only ever takes a
    block that it would pass unchanged.
    """

    def __init__(
        self, name: str, targets: int, field: str, compressed: bool, names: bool = False
    ) -> None:
        self.name, self.targets, self.field, self.compressed = name, targets, field, compressed
        # class labels may be names: sample number -> its label's text (the array holds NaN)
        self.names: dict[int, str] | None = {} if names else None
        self.first_label = 0  # the line of the first number label, for a mixed column's message
        self.width = 0  # columns, fixed by the header or the first row of numbers
        self.elements = 0  # numbers read
        self.total = 0  # characters read
        self.line_number = 0  # lines read (a file line, from 1)
        self.samples = 0
        self.blocks: list[np.ndarray] = []  # float64 (rows, width) in file order
        self.lines: list[np.ndarray] = []  # the file line of each sample, int64
        self.pending_rows: list[list[float]] = []  # rows read one by one, not yet a block
        self.pending_lines = array("q")
        self.source: Iterator[tuple[str, int | None]] = iter(())
        self.block = ""
        self.offset = 0  # characters of ``block`` read
        self.consumed: int | None = None  # compressed bytes read with ``block``
        self.tried = False  # the block path was tried on the rest of ``block``

    # -- driving ------------------------------------------------------------------------

    def run(self, source: Iterator[tuple[str, int | None]]) -> None:
        self.source = source
        more = self._next_block()
        while more:
            if self.width > self.targets and not self.tried:
                self.tried = True
                self.offset += self._whole_lines(self.block[self.offset :])
                if self.offset == len(self.block):
                    more = self._next_block()
                    continue
            more = self._rows_one_by_one()

    def _next_block(self) -> bool:
        block = next(self.source, None)
        if block is None:
            self.block, self.offset = "", 0
            return False
        self.block, self.consumed = block
        self.offset, self.tried = 0, False
        return True

    def _rows_one_by_one(self) -> bool:
        """Rows through the csv module until one ends where a block ends (True: read on),
        or where the block path can take over the rest of a block, or the text ends."""
        reader = csv.reader(self._checked_lines())
        for cells in reader:
            self._row(cells)
            if self.offset == len(self.block):
                return self._next_block()
            if self.width > self.targets and not self.tried:
                return True
        return False

    def _checked_lines(self) -> Iterator[str]:
        """The lines from ``offset`` on, into the following blocks, each checked as read."""
        while True:
            for match in _LINE.finditer(self.block, self.offset):
                self.offset = match.end()
                line = match.group()
                self._check_line(line)
                yield line
            if not self._next_block():
                return

    # -- one line, one row (the reference) ----------------------------------------------

    def _check_line(self, line: str) -> None:
        self.line_number += 1
        number, name, field = self.line_number, self.name, self.field
        if len(line) > MAX_CSV_LINE:
            raise InputError(
                field, f"{name}: row {number} is longer than {MAX_CSV_LINE:,} characters"
            )
        self.total += len(line)
        if self.total > MAX_CSV_BYTES:
            once = " once decompressed" if self.compressed else ""
            raise InputError(
                field, f"{name}: more than {MAX_CSV_BYTES:,} characters{once}; the limit"
            )
        if self.consumed is not None and _inflated(self.total, self.consumed):
            raise InputError(
                field,
                f"{name}: decompresses to more than {MAX_COMPRESSION_RATIO} times its size; "
                "if that is genuine, decompress it and pass the .csv",
            )
        if "\x00" in line:
            raise InputError(field, f"{name}: row {number} holds a NUL character; not a text file")

    def _row(self, cells: list[str]) -> None:
        name, field, line = self.name, self.field, self.line_number
        if not "".join(cells).strip():
            return  # a blank line
        values = _numbers(cells)
        label = None
        if values is None and self.names is not None and len(cells) > 1:
            features = _numbers(cells[:-1])
            if features is not None:  # numbers, then a class name
                label, values = cells[-1].strip(), [*features, math.nan]
        if values is None and not self.samples and not self.width:
            self.width = len(cells)  # the header: it fixes the width, it is not data
            return
        if self.width and len(cells) != self.width:
            raise InputError(
                field,
                f"{name}: row {line} has {len(cells):,} column{'s' * (len(cells) != 1)}, "
                f"expected {self.width:,}",
            )
        self.width = len(cells)
        if values is None:
            column, cell = _first_non_number(cells)
            raise InputError(field, f"{name}: row {line}, column {column}: {cell} is not a number")
        if self.width < self.targets + 1:  # known from the first row: refuse before reading on
            _too_few_columns(name, self.width, self.targets, field)
        self._count(self.width)
        if self.names is not None:
            self._label(label, line)
        self.pending_rows.append(values)
        self.pending_lines.append(line)
        self.samples += 1
        if len(self.pending_rows) * self.width >= _CHUNK_ELEMENTS:
            self._flush()

    def _label(self, label: str | None, line: int) -> None:
        """Class labels are all numbers or all names: a column of both is a mistake."""
        if label is None:
            if self.names:
                self._mixed(line, "a number")
            self.first_label = self.first_label or line
            return
        if not label:
            raise InputError(self.field, f"{self.name}: row {line}: the class label is empty")
        if self.first_label:
            self._mixed(line, repr(shorten(label, 40)))
        self.names[self.samples] = label

    def _mixed(self, line: int, what: str) -> None:
        raise InputError(
            self.field,
            f"{self.name}: row {line}: the class label is {what}, but earlier rows' labels "
            "are not; class labels must be all numbers or all names",
        )

    def _count(self, numbers: int) -> None:
        self.elements += numbers
        if self.elements > MAX_DATA_ELEMENTS:
            raise InputError(
                self.field, f"{self.name}: more than {MAX_DATA_ELEMENTS:,} numbers; the limit"
            )

    def _flush(self) -> None:
        if self.pending_rows:
            self.blocks.append(np.array(self.pending_rows, dtype=np.float64))
            self.lines.append(np.frombuffer(self.pending_lines, dtype=np.int64).copy())
            self.pending_rows, self.pending_lines = [], array("q")

    # -- a whole block --------------------------------------------------------------------

    def _whole_lines(self, text: str) -> int:
        """Read the leading lines of ``text`` as rows of numbers at NumPy's speed, as many as
        the row by row path would take unchanged; the number of characters read (0: none).

        They end before the first quote or NUL (the csv module's to read), before the line
        where a size limit is reached and before the row that passes the number limit (the
        row by row path refuses those at the exact line).
        """
        limit = MAX_CSV_BYTES
        if self.consumed is not None:
            limit = min(limit, max(RATIO_FREE_BYTES, MAX_COMPRESSION_RATIO * self.consumed))
        stop = min(len(text), max(limit - self.total, 0))
        for special in ('"', "\x00"):
            if (found := text.find(special, 0, stop)) >= 0:
                stop = found
        if stop < len(text):
            text = text[: text.rfind("\n", 0, stop) + 1]
        if not text or self.names:  # after a class name, rows go one by one (mixed labels)
            return 0
        crlf = "\r" in text
        plain = text.replace("\r\n", "\n") if crlf else text
        if crlf and "\r" in plain:
            return 0  # lines ended by a lone \r
        lines = plain.split("\n")
        if not lines[-1]:
            lines.pop()  # the last line's ending
        # a line past the limit, or past the csv module's field limit, is the rows' to refuse
        longest = min(MAX_CSV_LINE, csv.field_size_limit())
        if len(text) > longest and max(map(len, lines)) + 1 + crlf > longest:
            return 0
        rows = _parse_block(lines, self.width)
        if rows is None:
            return 0
        if self.elements + rows.size > MAX_DATA_ELEMENTS:
            keep = (MAX_DATA_ELEMENTS - self.elements) // self.width
            rows, lines = rows[:keep], lines[:keep]
            end = 0
            for _ in range(keep):
                end = text.index("\n", end) + 1
            text = text[:end]
            if not keep:
                return 0
        self._flush()
        self.blocks.append(rows)
        first = self.line_number + 1
        if self.names is not None and not self.first_label:
            self.first_label = first
        self.lines.append(np.arange(first, first + len(lines), dtype=np.int64))
        self.line_number += len(lines)
        self.total += len(text)
        self.elements += rows.size
        self.samples += len(lines)
        return len(text)

    # -- the result -------------------------------------------------------------------------

    def table(self) -> _Table:
        self._flush()
        name, field, targets = self.name, self.field, self.targets
        if not self.blocks:
            raise InputError(field, f"{name}: the data is empty (no rows of numbers)")
        table = self.blocks[0] if len(self.blocks) == 1 else np.concatenate(self.blocks)
        rows = self.lines[0] if len(self.lines) == 1 else np.concatenate(self.lines)
        self.blocks, self.lines = [], []
        names = None
        if self.names:  # every label is a name (a number among them was refused)
            names, indices = np.unique(np.array(list(self.names.values())), return_inverse=True)
            table[:, -1] = indices
        bad = np.argwhere(~np.isfinite(table))
        if bad.size:
            row, column = (int(i) for i in bad[0])
            raise InputError(
                field,
                f"{name}: row {rows[row]}, column {column + 1}: "
                f"{table[row, column]} is not a finite number",
            )
        y = table[:, -targets:] if targets > 1 else table[:, -1]
        classes = None if names is None else tuple(str(n) for n in names)
        return _Table(table[:, :-targets], y, name, rows, names=classes)


def _parse_block(lines: list[str], width: int) -> np.ndarray | None:
    """float64 (len(lines), width) from lines of ``width`` comma-separated numbers, or None.

    ``numpy.loadtxt`` reads a number as ``float()`` does (Python's own string-to-double) or
    fails; it skips empty lines, which the row count catches.  Where it fails, None: the
    row by row path then reads the block and says what is wrong.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rows = np.loadtxt(lines, dtype=np.float64, delimiter=",", comments=None, ndmin=2)
    except Exception:  # noqa: BLE001 - any failure: the careful path decides
        return None
    if rows.shape != (len(lines), width):
        return None
    return rows


def _too_few_columns(name: str, width: int, targets: int, field: str) -> None:
    need = "features, then the target" if targets == 1 else f"features, then {targets} targets"
    raise InputError(
        field,
        f"{name}: rows have {width} column{'s' * (width != 1)}; "
        f"need at least {targets + 1} ({need})",
    )


def _numbers(cells: Iterable[str]) -> list[float] | None:
    try:
        return [float(cell) for cell in cells]
    except ValueError:
        return None


def _first_non_number(cells: list[str]) -> tuple[int, str]:
    for column, cell in enumerate(cells, start=1):
        try:
            float(cell)
        except ValueError:
            shown = repr(cell) if len(cell) <= 40 else repr(cell[:37] + "...")
            return column, shown
    raise AssertionError("every cell is a number")  # only called after float() failed


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# --- targets ---------------------------------------------------------------------------------


def _classification_labels(table: _Table, outputs: int, field: str) -> np.ndarray:
    bound = max(outputs, 2)  # one sigmoid output still has two classes, 0 and 1
    if table.names is not None:
        if len(table.names) > bound:
            shown = cut_list(table.names)
            raise InputError(
                field,
                f"{table.name}: the class labels name {len(table.names)} classes ({shown}) but "
                f"the spec has {outputs} output{'s' * (outputs != 1)} "
                f"({bound} classes)",
            )
        return table.y.astype(np.int64)
    y = table.y
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        y = _one_hot_to_labels(table, y, outputs, field)
    whole = y == np.round(y)
    if not whole.all():
        i = int(np.argmin(whole))
        raise InputError(
            field,
            f"{table.name}: {table.where(i)}: label {_show(y[i])} is not an integer "
            f"(classification needs class labels {_label_range(outputs)})",
        )
    inside = (y >= 0) & (y < bound)
    if not inside.all():
        i = int(np.argmin(inside))
        raise InputError(
            field,
            f"{table.name}: {table.where(i)}: label {_show(y[i])} is out of range for "
            f"{outputs} output{'s' * (outputs != 1)} (expected {_label_range(outputs)})",
        )
    return y.astype(np.int64)


def _one_hot_to_labels(table: _Table, y: np.ndarray, outputs: int, field: str) -> np.ndarray:
    if y.shape[1] != outputs:
        raise InputError(
            field,
            f"{table.name}: y has {y.shape[1]} columns (one-hot) but the spec has "
            f"{outputs} output{'s' * (outputs != 1)}",
        )
    valid = np.all((y == 0) | (y == 1), axis=1) & (y.sum(axis=1) == 1)
    if not valid.all():
        i = int(np.argmin(valid))
        raise InputError(
            field,
            f"{table.name}: {table.where(i)} is not one-hot "
            f"(expected a single 1 and zeros in {outputs} columns)",
        )
    return np.argmax(y, axis=1).astype(np.float64)


def _regression_targets(table: _Table, outputs: int, field: str) -> np.ndarray:
    y = table.y.reshape(-1, 1) if table.y.ndim == 1 else table.y
    if y.shape[1] != outputs:
        raise InputError(
            field,
            f"{table.name}: the data has {y.shape[1]} target column{'s' * (y.shape[1] != 1)} "
            f"but the spec has {outputs} output{'s' * (outputs != 1)}",
        )
    return y


def _label_range(outputs: int) -> str:
    return "0 or 1" if outputs <= 2 else f"0..{outputs - 1}"


def _show(value: float) -> str:
    whole = value == np.round(value) and abs(value) < 1e15  # no 300-digit integers in messages
    return str(int(value)) if whole else repr(float(value))


# --- splitting -------------------------------------------------------------------------------


def split(
    X: ArrayLike,
    y: ArrayLike,
    test_fraction: float = 0.2,
    seed: int = 0,
    stratify: bool = True,
    *,
    field: str = "--data",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic shuffled split: ``(X_train, y_train, X_test, y_test)``.

    The test part has round(n * test_fraction) samples (half up), kept between 1 and n - 1,
    or none with ``test_fraction == 0``.  Stratified, samples are grouped by their value of
    y (rows of a 2-D y) and every group of two or more samples lands in both parts whenever
    the sizes allow (the training part first); within that, each group's test count is its
    proportional share rounded up or down.  Unstratified, the test part is a plain random
    draw.  ``split_indices`` gives the same split as sample numbers.
    """
    X, y = np.asarray(X), np.asarray(y)
    if len(y) != len(X):
        raise InputError(field, f"X has {len(X)} samples but y has {len(y)}")
    train, test = split_indices(y, test_fraction, seed, stratify, field=field)
    return X[train], y[train], X[test], y[test]


def split_indices(
    y: ArrayLike,
    test_fraction: float = 0.2,
    seed: int = 0,
    stratify: bool = True,
    *,
    field: str = "--data",
    fraction_field: str = "--test-fraction",
) -> tuple[np.ndarray, np.ndarray]:
    """``split``'s choice as sample numbers: (train, test), each in shuffled order."""
    y = np.asarray(y)
    _check_fraction(test_fraction, fraction_field)
    _check_seed(seed)
    n = len(y)
    if n < 2 and test_fraction > 0:
        raise InputError(field, f"{n} sample{'s' * (n != 1)} cannot be split; need at least 2")
    rng = np.random.default_rng(seed)
    if test_fraction == 0:  # everything trains; still shuffled, as a split's parts are
        return rng.permutation(n), np.zeros(0, dtype=np.int64)
    n_test = min(max(math.floor(n * test_fraction + 0.5), 1), n - 1)
    if stratify:
        _, groups = np.unique(y.reshape(n, -1), axis=0, return_inverse=True)
        test = _stratified_test(groups.reshape(-1), n_test, rng)
    else:
        test = rng.permutation(n)[:n_test]
    is_test = np.zeros(n, dtype=bool)
    is_test[test] = True
    # Shuffled, so that neither part comes out sorted by class.
    train = rng.permutation(np.flatnonzero(~is_test))
    test = rng.permutation(np.flatnonzero(is_test))
    return train, test


def _stratified_test(groups: np.ndarray, n_test: int, rng: np.random.Generator) -> np.ndarray:
    counts = np.bincount(groups)
    quota = _allocate(counts, n_test, rng)
    # Shuffle, then sort stably by group: each group's members in random order, so taking
    # the first quota of each group is a random draw within the group.
    shuffled = rng.permutation(len(groups))
    order = shuffled[np.argsort(groups[shuffled], kind="stable")]
    rank = np.arange(len(groups)) - np.repeat(np.cumsum(counts) - counts, counts)
    return order[rank < np.repeat(quota, counts)]


def _allocate(counts: np.ndarray, n_test: int, rng: np.random.Generator) -> np.ndarray:
    """Test samples per group: closest to proportional within bounds, summing to n_test."""
    ideal = counts * (n_test / counts.sum())
    low = np.where(counts >= 2, 1, 0)  # a test example of every group that can spare one
    high = np.where(counts >= 2, counts - 1, counts)  # and a training example of every group
    # When the sizes cannot honour both, keep the training part complete: a class the model
    # never saw is worse than one the test never asks about.
    if n_test < low.sum():
        low = np.zeros_like(counts)
    if n_test > high.sum():
        high = counts.copy()
    quota = np.clip(np.floor(ideal).astype(np.int64), low, high)
    # Ties (equal shortfalls) are broken at random, not by label order, so no class is favoured.
    tiebreak = rng.permutation(len(counts))
    while (missing := n_test - int(quota.sum())) != 0:
        step = 1 if missing > 0 else -1
        room = np.flatnonzero(quota < high if step > 0 else quota > low)
        need = (ideal - quota)[room] * step  # how far below (or above) its share each group is
        order = room[np.lexsort((tiebreak[room], -need))]
        quota[order[: abs(missing)]] += step
    return quota


def _check_fraction(test_fraction: float, field: str = "--test-fraction") -> None:
    number = isinstance(test_fraction, (int, float, np.integer, np.floating))
    if isinstance(test_fraction, bool) or not number or not 0 <= test_fraction < 1:
        raise InputError(
            field,
            f"expected a number from 0 up to (not including) 1, got {_plain(test_fraction)!r}",
        )


def _plain(value: object) -> object:
    # repr(numpy.float64(2.0)) is "np.float64(2.0)"; messages show the number a user typed.
    return value.item() if isinstance(value, np.generic) else value


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError("--seed", f"expected a non-negative integer, got {_plain(seed)!r}")


# --- the whole job ---------------------------------------------------------------------------


def load_dataset(
    source: str,
    *,
    outputs: int,
    classification: bool,
    test_fraction: float = 0.2,
    seed: int = 0,
    field: str = "--data",
    shape: tuple[int, ...] | None = None,
    val_fraction: float = 0.0,
) -> Dataset:
    """Read ``source`` ("digits" or a path), check its targets against the spec, and split it.

    ``seed`` chooses the split (the CLI's ``--split-seed``).  The test part is
    ``test_fraction`` of the samples (none with 0); with ``val_fraction`` > 0 a validation
    part of that share of all the samples is then drawn from the rest, by a generator of its
    own, so the test part is the same with or without one.  Classification splits are
    stratified.  A csv's class labels may be names (every label of the column): the sorted
    names are the classes, label i is ``class_names[i]``.  Checking the number of features of
    flat data against the spec is left to the caller (``check_features``), which knows the
    spec; with an image ``shape`` (C, H, W) the rows must have C * H * W features, and X
    comes back as (n, C, H, W).
    """
    if isinstance(outputs, bool) or not isinstance(outputs, int) or outputs < 1:
        raise ValueError(f"outputs must be a positive integer, got {outputs!r}")
    image = _image_shape(shape)
    _check_fraction(test_fraction)
    _check_fraction(val_fraction, "--val-fraction")
    if test_fraction + val_fraction >= 1:
        raise InputError(
            "--val-fraction",
            f"--test-fraction {_plain(test_fraction)} and --val-fraction "
            f"{_plain(val_fraction)} leave no samples to train on; their sum must be below 1",
        )
    _check_seed(seed)
    if source == DIGITS:
        X, labels = load_digits()
        table = _Table(X, labels.astype(np.float64), DIGITS, None)
    else:
        targets = 1 if classification else outputs
        table = _read(source, targets, field, names=classification)
    if image is not None:
        _check_image_rows(table, image, field)
    if classification:
        y = _classification_labels(table, outputs, field)
    else:
        y = _regression_targets(table, outputs, field)
    n = len(y)
    if n < 2 and test_fraction + val_fraction > 0:
        raise InputError(
            field, f"{table.name}: {n} sample is too few to split into training and test parts"
        )
    train, test = split_indices(y, test_fraction, seed, stratify=classification, field=field)
    val = np.zeros(0, dtype=np.int64)
    if val_fraction > 0:
        share = min(val_fraction / (1 - test_fraction), 1.0)
        if len(train) < 2:
            raise InputError("--val-fraction", f"{len(train)} training sample cannot be split")
        rest, chosen = split_indices(
            y[train], share, _val_seed(seed), stratify=classification, field=field
        )
        train, val = train[rest], train[chosen]
    parts = {"train": train, "validation": val, "test": test}
    arrays = {}
    for part, rows in parts.items():
        X = table.X[rows]
        if image is not None:  # C order: a row is channel by channel, each row by row
            X = X.reshape(len(X), *image)
        arrays[part] = (X, y[rows])
        for values in (X, arrays[part][1], rows):
            values.flags.writeable = False
    classes = max(outputs, 2) if classification else None
    X_val, y_val = arrays["validation"] if val_fraction > 0 else (None, None)
    return Dataset(
        *arrays["train"],
        *arrays["test"],
        table.name,
        classes,
        X_val=X_val,
        y_val=y_val,
        class_names=table.names,
        indices=parts,
    )


def _val_seed(seed: int) -> int:
    """The validation part's own seed, derived from the split's (a draw that never
    changes the test part)."""
    return int(np.random.default_rng([seed, 1]).integers(2**63))


def _image_shape(shape: tuple[int, ...] | None) -> tuple[int, int, int] | None:
    """An image's (C, H, W), or None for flat data ((n,) or None)."""
    if shape is None:
        return None
    dims = tuple(shape)
    valid = all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims)
    if not valid or len(dims) not in (1, 3) or min(dims, default=0) < 1:
        raise ValueError(f"shape must be (features,) or (C, H, W) of positive ints, got {shape!r}")
    return None if len(dims) == 1 else (int(dims[0]), int(dims[1]), int(dims[2]))


def _check_image_rows(table: _Table, image: tuple[int, int, int], field: str) -> None:
    """Every row must hold one whole image: C * H * W feature columns."""
    width, need = table.X.shape[1], math.prod(image)
    if table.image and table.image != image:
        raise InputError(
            field,
            f"{table.name}: X holds images of shape {table.image} but the spec's inputs "
            f"are {list(image)}",
        )
    if width != need:
        dims = "x".join(map(str, image))
        raise InputError(
            field,
            f"{table.name}: the data has {width} feature column{'s' * (width != 1)} but the "
            f"spec's inputs {list(image)} need {need} ({dims} values per row, in C order)",
        )


def check_features(dataset: Dataset, inputs: int, field: str = "--data") -> None:
    """Raise ``InputError`` unless the data has exactly the spec's number of inputs."""
    if dataset.features != inputs:
        raise InputError(
            field,
            f"{dataset.name}: the data has {dataset.features} feature"
            f"{'s' * (dataset.features != 1)} but the spec expects {inputs} "
            f"input{'s' * (inputs != 1)}",
        )


# --- standardization -------------------------------------------------------------------------

# Features whose spread or mean is past this (or whose spread is below its inverse) are
# "not standardized" in the hint of a refused or diverged training run.
UNSCALED = 10.0


def standardizer(X: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of every feature over the samples (axis 0), as scikit-learn's
    StandardScaler: scale is the population standard deviation, or 1 for a feature that is
    constant in X (so that it stays 0 rather than dividing by 0)."""
    X = np.asarray(X, dtype=np.float64)
    if len(X) == 0:
        raise ValueError("cannot standardize no samples")
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    constant = (X.max(axis=0) == X.min(axis=0)) | (scale == 0)
    scale[constant] = 1.0
    return mean, scale


def unscaled_feature(X: ArrayLike) -> str | None:
    """The feature furthest from standardized, described for a hint ("feature 13 has mean
    747 and spread 315"), or None when every feature's mean and spread are moderate."""
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    if len(X) < 2:
        return None
    mean, spread = X.mean(axis=0), X.std(axis=0)
    varying = spread > 0
    badness = np.maximum(np.abs(mean), spread)
    badness = np.maximum(badness, np.where(varying, 1.0 / np.where(varying, spread, 1.0), 0.0))
    worst = int(np.argmax(badness))
    if badness[worst] <= UNSCALED:
        return None
    return f"feature {worst + 1} has mean {mean[worst]:.3g} and spread {spread[worst]:.3g}"


# --- targets and scores ----------------------------------------------------------------------


def one_hot(labels: ArrayLike, classes: int) -> np.ndarray:
    """float64 (n, classes) with a 1 in each row's label column."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels must lie in 0..{classes - 1}")
    encoded = np.zeros((labels.size, classes), dtype=np.float64)
    encoded[np.arange(labels.size), labels] = 1.0
    return encoded


def predicted_labels(outputs: ArrayLike) -> np.ndarray:
    """Class indices from network outputs: argmax of several, threshold 0.5 of one sigmoid."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 1:
        return outputs.astype(np.int64)  # already labels
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0.5).astype(np.int64)
    return np.argmax(outputs, axis=1).astype(np.int64)


def accuracy(predicted: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of samples whose prediction matches the label.

    ``predicted`` is labels (n,) or network outputs (n, k), turned into labels by
    ``predicted_labels``.
    """
    guesses, labels = predicted_labels(predicted), np.asarray(labels)
    if guesses.shape != labels.shape:
        raise ValueError(f"predicted has {guesses.shape} labels, labels {labels.shape}")
    return float(np.mean(guesses == labels)) if labels.size else float("nan")


def rmse(predicted: ArrayLike, targets: ArrayLike) -> float:
    """Root mean squared error over every sample and output."""
    predicted, targets = np.asarray(predicted, dtype=np.float64), np.asarray(targets, np.float64)
    if predicted.shape != targets.shape:
        raise ValueError(f"predicted has shape {predicted.shape}, targets {targets.shape}")
    return float(np.sqrt(np.mean((predicted - targets) ** 2)))
