"""Open the CSV files users bring (label files, split files, URL lists): checked up front for
size, header, encoding and delimiter, then streamed one row at a time.

Encoding, decided per file from its bytes: UTF-8 (with or without a byte-order mark) when every
line is UTF-8; Latin-1 (the Kaggle list's encoding) when no line beyond plain ASCII is UTF-8;
and a UTF-8 file with a few stray bytes from elsewhere is read as UTF-8 with those bytes taken
as Latin-1, saying so in `CsvFile.note` (which line, how many), rather than garbling the rest.
"""

from __future__ import annotations

import codecs
import csv
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from postergenre.errors import UserError
from postergenre.paths import shown, unreadable_reason, user_path

# Accepted id columns, in order of preference, spelled as messages name them; they are matched
# case-insensitively, by ID_COLUMNS.
ID_COLUMN_NAMES = ("Id", "id", "imdbId", "filename", "image", "path")
ID_COLUMNS = tuple(dict.fromkeys(name.lower() for name in ID_COLUMN_NAMES))

# A label file is text with one row per poster: even 10 million posters fit in well under this.
MAX_LABEL_BYTES = 1024 * 1024 * 1024
LABELS_LIMIT_ENV = "POSTERGENRE_MAX_LABELS_MB"
# The header must end within this many bytes (a binary or one-line file is refused early).
HEADER_BYTES = 64 * 1024
DELIMITERS = (",", ";", "\t")
# The codec error handler that reads the bytes UTF-8 cannot decode as Latin-1.
LATIN_1_FALLBACK = "postergenre-latin-1-fallback"


def _latin_1_for_undecodable(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return bytes(exc.object[exc.start : exc.end]).decode("latin-1"), exc.end


codecs.register_error(LATIN_1_FALLBACK, _latin_1_for_undecodable)


class LabelFileTooLarge(UserError):
    """A label file over the size limit."""

    hint = "or pass --max-labels-mb"


@dataclass(frozen=True)
class TextEncoding:
    """How a file's bytes become text: an `open()` encoding and errors handler, and a note for
    the user when the file mixes encodings."""

    encoding: str
    errors: str = "strict"
    note: str | None = None


def _is_utf_8(path: Path) -> bool:
    """Whether the whole file decodes as UTF-8 (decoded in blocks: flat memory, C speed)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as handle:
        try:
            for block in iter(lambda: handle.read(1 << 20), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def detect_encoding(path: Path) -> TextEncoding:
    """The encoding of a text file, decided from its lines (see the module docstring)."""
    if _is_utf_8(path):
        return TextEncoding("utf-8-sig")
    first_bad = bad = utf_8 = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.isascii():
                continue
            try:
                line.decode("utf-8")
                utf_8 += 1
            except UnicodeDecodeError:
                bad += 1
                first_bad = first_bad or number
    if not utf_8:
        return TextEncoding("latin-1")
    lines = "1 line is" if bad == 1 else f"{bad} lines are"
    note = (
        f"{path}: {lines} not UTF-8 (the first: line {first_bad}); their undecodable bytes "
        "were read as Latin-1, the rest of the file as UTF-8"
    )
    return TextEncoding("utf-8-sig", LATIN_1_FALLBACK, note)


@dataclass
class CsvFile:
    """A CSV checked up front (size, header, encoding, delimiter); `rows()` streams it."""

    path: Path
    fieldnames: list[str]
    encoding: str
    delimiter: str
    errors: str = "strict"
    # What the user should know about how the file was read (its encoding), or None.
    note: str | None = None

    def rows(self) -> Iterator[dict[str, str]]:
        """Each data row as {column: value}, read lazily."""
        try:
            with self.path.open(newline="", encoding=self.encoding, errors=self.errors) as handle:
                reader = csv.DictReader(handle, delimiter=self.delimiter)
                yield from reader
        except csv.Error as exc:
            raise UserError(f"{self.path} is not a readable CSV file: {exc}") from exc


def label_limit_bytes(megabytes: float | None) -> int | None:
    """A label-file limit given in megabytes (`--max-labels-mb`, `$POSTERGENRE_MAX_LABELS_MB`;
    MiB) in bytes; None stays None (the default limit)."""
    return None if megabytes is None else int(megabytes * 1024 * 1024)


def _label_limit(max_bytes: int | None) -> int:
    if max_bytes is not None:
        return max_bytes
    env = os.environ.get(LABELS_LIMIT_ENV)
    try:
        limit = label_limit_bytes(float(env)) if env else None
    except ValueError:
        raise UserError(f"{LABELS_LIMIT_ENV}={env!r} is not a number of megabytes") from None
    return MAX_LABEL_BYTES if limit is None else limit


def _file_size(path: Path) -> int:
    """The size of a regular file; a `UserError` saying why for anything else."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UserError(f"label file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"label file {shown(path)}: {unreadable_reason(path, exc)}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"label file not found: {path}")
    return info.st_size


def open_csv(path: str | Path, max_bytes: int | None = None) -> CsvFile:
    """Open a user CSV: refuse it early if it is over `max_bytes` (default 1 GiB, or
    `$POSTERGENRE_MAX_LABELS_MB`) or has no header line, and detect its encoding (see the
    module docstring) and delimiter (comma, semicolon, tab); stream it with `rows()`."""
    path = user_path(path)
    size, limit = _file_size(path), _label_limit(max_bytes)
    if size > limit:
        raise LabelFileTooLarge(
            f"{path} is {size / 1e6:,.0f} MB, over the {limit / 1e6:,.0f} MB limit for label "
            f"files (raise it with {LABELS_LIMIT_ENV})"
        )
    with path.open("rb") as handle:
        head = handle.read(HEADER_BYTES)
    if not head.strip():
        raise UserError(f"{path} is empty: expected a header row")
    if b"\0" in head:
        raise UserError(f"{path} is not a CSV file (it holds binary data)")
    if b"\n" not in head and size > len(head):
        raise UserError(f"{path} is not a CSV file (no header line in its first 64 KB)")
    text = detect_encoding(path)
    first_line = head.split(b"\n", 1)[0].decode(text.encoding, errors="replace")
    delimiter = max(DELIMITERS, key=first_line.count)
    fieldnames = next(csv.reader([first_line.strip("\r")], delimiter=delimiter), [])
    if not [f for f in fieldnames if f.strip()]:
        raise UserError(f"{path} is empty: expected a header row")
    fieldnames = [f.lstrip("\ufeff") for f in fieldnames]
    return CsvFile(path, fieldnames, text.encoding, delimiter, text.errors, text.note)


def find_column(fieldnames: Iterable[str], candidates: Iterable[str]) -> str | None:
    """The column named by the first of `candidates` (lower case) that `fieldnames` holds,
    matched case-insensitively and ignoring surrounding spaces."""
    by_lower = {name.strip().lower(): name for name in fieldnames}
    for candidate in candidates:
        if candidate in by_lower:
            return by_lower[candidate]
    return None


def id_column(csv_file: CsvFile) -> str:
    """The column of poster ids (see `ID_COLUMN_NAMES`); a `UserError` when there is none."""
    found = find_column(csv_file.fieldnames, ID_COLUMNS)
    if found is None:
        raise UserError(
            f"{csv_file.path}: no id column; expected one of {', '.join(ID_COLUMN_NAMES)} "
            f"(found {', '.join(csv_file.fieldnames)})"
        )
    return found
