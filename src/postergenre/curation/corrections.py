"""corrections.csv: the genres a person accepted or set for the posters of a collection.

The file lives in the collection (index) folder and holds one row per indexed poster, in index
order, UTF-8, with the header `id,path,title,genres,reviewed,reviewed_at`:

- `genres`: the genres a person accepted or set, joined with `|` (empty: no genre); on a row
  nobody reviewed, the poster's given labels (empty when the collection has none);
- `reviewed`: `1` when a person accepted or changed the row, else `0`;
- `reviewed_at`: when, in ISO 8601 UTC (`2026-12-03T10:11:12Z`); empty when not reviewed.

It is rewritten atomically after every change, so a reader (`train --labels corrections.csv`)
or a crash never sees half of it, and it is read back when the collection opens again. Reviewed
rows of posters no longer in the index are kept as they are, after the indexed ones.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from postergenre.atomic import write_text
from postergenre.data.csv_files import find_column, open_csv
from postergenre.errors import UserError

CORRECTIONS_FILE = "corrections.csv"
HEADER = ("id", "path", "title", "genres", "reviewed", "reviewed_at")
GENRE_SEPARATOR = "|"


class CorrectionsNotSaved(UserError):
    """A correction that could not be written (a read-only folder, a full disk)."""


def utc_now() -> str:
    """This second in ISO 8601 UTC, as `reviewed_at` holds it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def can_write(folder: Path) -> bool:
    """Whether a file can be created in `folder` (tried, since root passes any access test)."""
    probe = folder / f".postergenre-write-test.{os.getpid()}.{threading.get_ident()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Correction:
    """What a person decided about one poster, and when."""

    genres: tuple[str, ...]
    reviewed_at: str

    def to_json(self) -> dict[str, Any]:
        return {"genres": list(self.genres), "reviewed_at": self.reviewed_at}


def _csv_line(values: Sequence[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


def _values(row: dict[str, str], columns: dict[str, str | None]) -> dict[str, str]:
    """A row's value of each `HEADER` column (empty where the file lacks the column)."""
    return {name: (row.get(col) or "").strip() if col else "" for name, col in columns.items()}


class Corrections:
    """The reviewed genres of a collection's posters (`items`: the index's items), kept in
    `folder/corrections.csv`. `writable=False` refuses every change (a read-only collection);
    None tries the folder. Safe to call from several threads."""

    def __init__(
        self, folder: Path, items: Sequence[dict[str, Any]], *, writable: bool | None = None
    ):
        self.folder = Path(folder)
        self.path = self.folder / CORRECTIONS_FILE
        self.items = items
        self.writable = can_write(self.folder) if writable is None else writable
        self._by_position: dict[int, Correction] = {}
        self._kept_rows: list[str] = []  # reviewed rows of posters no longer indexed
        self._lines = [self._line(i) for i in range(len(items))]
        self._lock = threading.Lock()
        if self.path.is_file():
            self._read()

    # -- reading -----------------------------------------------------------------------------
    def _read(self) -> None:
        """Load the reviewed rows of an existing file; each matched to its poster by id and
        path, or by id alone when the poster moved."""
        table = open_csv(self.path)
        columns = {name: find_column(table.fieldnames, [name]) for name in HEADER}
        missing = [name for name in ("id", "genres", "reviewed") if columns[name] is None]
        if missing:
            raise UserError(
                f"{self.path} is not a corrections file: no {', '.join(missing)} column "
                f"(expected the header {','.join(HEADER)})"
            )
        by_key = {(item["id"], item["path"]): i for i, item in enumerate(self.items)}
        by_id: dict[str, int] = {}
        for i, item in enumerate(self.items):
            by_id.setdefault(item["id"], i)
        for row in table.rows():
            value = _values(row, columns)
            if value["reviewed"] != "1":
                continue
            i = by_key.get((value["id"], value["path"]), by_id.get(value["id"]))
            genres = tuple(g for g in value["genres"].split(GENRE_SEPARATOR) if g)
            if i is None:
                self._kept_rows.append(_csv_line([value[name] for name in HEADER]))
            else:
                self._by_position[i] = Correction(genres, value["reviewed_at"])
                self._lines[i] = self._line(i)

    # -- what it holds -----------------------------------------------------------------------
    def __len__(self) -> int:
        """How many indexed posters a person reviewed."""
        return len(self._by_position)

    def get(self, i: int) -> Correction | None:
        """Poster `i`'s correction, or None when nobody reviewed it."""
        return self._by_position.get(i)

    def reviewed_positions(self) -> list[int]:
        """The positions of the reviewed posters."""
        return sorted(self._by_position)

    def _line(self, i: int) -> str:
        item, correction = self.items[i], self._by_position.get(i)
        genres = correction.genres if correction else (item["genres"] if item["labelled"] else [])
        return _csv_line(
            [
                item["id"],
                item["path"],
                item.get("title") or "",
                GENRE_SEPARATOR.join(genres),
                "1" if correction else "0",
                correction.reviewed_at if correction else "",
            ]
        )

    def text(self) -> str:
        """The whole file's content."""
        with self._lock:
            return self._text()

    def _text(self) -> str:
        return "".join([_csv_line(HEADER), *self._lines, *self._kept_rows])

    # -- changing it -------------------------------------------------------------------------
    def set(self, i: int, genres: Sequence[str], when: str | None = None) -> Correction:
        """Record that a person set poster `i`'s genres to `genres` (at `when`, default now)
        and save the file at once; on a failed save nothing changes and
        `CorrectionsNotSaved` says why."""
        if not self.writable:
            raise CorrectionsNotSaved(
                f"the collection folder {self.folder} is read-only: corrections cannot be saved"
            )
        correction = Correction(tuple(dict.fromkeys(genres)), when or utc_now())
        with self._lock:
            before = self._by_position.get(i)
            self._by_position[i] = correction
            self._lines[i] = self._line(i)
            try:
                write_text(self.path, self._text())
            except OSError as exc:
                if before is None:
                    del self._by_position[i]
                else:
                    self._by_position[i] = before
                self._lines[i] = self._line(i)
                raise CorrectionsNotSaved(
                    f"could not save {self.path}: {exc.strerror or exc}"
                ) from None
        return correction
