"""The on-disk row store: fixed-shape rows appended to one file, found by key through SQLite.

An `ArrayStore` is an append-only file of fixed-shape rows plus a SQLite index from a string key
to a row. Keys (`file_key`) include a file's size and modification time, so a changed poster
simply gets a new key (and a new row); deleting the store's folder only costs time.

Every row carries a CRC32 of its bytes, so damage on disk is found and the row computed again.
Writers take a store's lock exclusively; `snapshot` takes it shared while it maps the rows, so a
compaction (`ArrayStore.prune`) never swaps the file between its index lookup and its map.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import zlib
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import numpy as np

from postergenre import console
from postergenre.atomic import write_json
from postergenre.errors import UserError

# SQLite's limit on bound parameters: key lookups go in chunks of this many.
_KEY_CHUNK = 900
_DATA_FILE = "rows.bin"
_INDEX_FILE = "index.sqlite"
_SPEC_FILE = "store.json"
_LOCK_FILE = "lock"
# Held while rows are computed, so a second writer waits and then finds them done.
_WORK_LOCK_FILE = "work.lock"
# A compaction writes the live rows here, then renames it over rows.bin (see `_compact`).
_COMPACT_FILE = "rows.bin.compact"
# Everything an ArrayStore folder may hold: SQLite's side files and our temporary files too.
STORE_FILES = frozenset(
    {
        _DATA_FILE,
        _INDEX_FILE,
        _SPEC_FILE,
        _LOCK_FILE,
        _WORK_LOCK_FILE,
        _COMPACT_FILE,
        "store.tmp",
        f"{_INDEX_FILE}-journal",
        f"{_INDEX_FILE}-wal",
        f"{_INDEX_FILE}-shm",
    }
)


def file_key(path: Path) -> str:
    """Identify a file's current content cheaply: resolved path, size and mtime."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def is_stale_key(key: str) -> bool:
    """Whether a `file_key` no longer describes its file (gone, or another size or mtime).
    A key of any other form can never be looked up again, so it is stale too."""
    parts = key.rsplit("|", 2)
    if len(parts) != 3:
        return True
    path, size, mtime_ns = parts
    try:
        stat = os.stat(path)
    except OSError:
        return True
    return f"{stat.st_size}|{stat.st_mtime_ns}" != f"{size}|{mtime_ns}"


class ArrayStore:
    """Rows of one shape and dtype, appended once and read back memory-mapped by key."""

    def __init__(self, directory: Path, row_shape: tuple[int, ...], dtype: str):
        self.directory = Path(directory)
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create cache folder {self.directory}: {exc}") from exc
        self._data_path = self.directory / _DATA_FILE
        self._compact_path = self.directory / _COMPACT_FILE
        self._spec = {"row_shape": list(self.row_shape), "dtype": self.dtype.str}
        try:
            self._open()
        except (sqlite3.DatabaseError, ValueError) as exc:  # ValueError: the spec is garbage
            self._start_again(str(exc))
        self._drop_rows_past_end()

    @classmethod
    def reopen(cls, directory: Path) -> ArrayStore | None:
        """The store in `directory`, with the row shape and dtype its spec records; None when
        the folder has no spec (nothing was ever stored there)."""
        spec = _read_spec(Path(directory))
        if spec is None:
            return None
        return cls(directory, tuple(spec["row_shape"]), spec["dtype"])

    def _open(self) -> None:
        """Check the spec and the index, creating them when new; raise if either is damaged."""
        spec = _read_spec(self.directory)  # garbage: ValueError, started again
        if spec is None:
            write_json(self.directory / _SPEC_FILE, self._spec, indent=None)
        elif spec != self._spec:  # a well-formed other shape is a mistake, not damage
            raise UserError(f"cache folder {self.directory} holds rows of another shape; delete it")
        self._db = sqlite3.connect(self.directory / _INDEX_FILE, timeout=60)
        if self._db.execute("PRAGMA quick_check").fetchone() != ("ok",):
            raise sqlite3.DatabaseError("the index failed its integrity check")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, row INTEGER, error TEXT)"
        )
        columns = {name for _, name, *_ in self._db.execute("PRAGMA table_info(rows)")}
        if "crc" not in columns:  # stores written before rows carried checksums
            self._db.execute("ALTER TABLE rows ADD COLUMN crc INTEGER")
        # `compacting` is set, in the same transaction as the renumbered rows, while
        # rows.bin.compact waits to replace rows.bin (see `_compact`).
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        self._db.commit()

    def _start_again(self, reason: str) -> None:
        """A store whose spec or index is unreadable: empty it (one warning) and reopen."""
        console.warn(f"cache folder {self.directory} was damaged ({reason}); starting it again")
        with suppress(AttributeError, sqlite3.Error):
            self._db.close()
        with self._locked(recover=False):
            for name in (_DATA_FILE, _INDEX_FILE, _SPEC_FILE, _COMPACT_FILE):
                with suppress(FileNotFoundError):
                    (self.directory / name).unlink()
            for side in self.directory.glob(f"{_INDEX_FILE}-*"):
                side.unlink(missing_ok=True)
        self._open()

    def _drop_rows_past_end(self) -> None:
        """Entries whose row is beyond the end of rows.bin (a truncated file) are dropped, so
        the rows appended next can never be read back under an old entry's number."""
        with self._locked():
            n_rows = self._row_count()
            with self._db:
                dropped = self._db.execute("DELETE FROM rows WHERE row >= ?", (n_rows,)).rowcount
        if dropped:
            console.warn(
                f"cache folder {self.directory}: {dropped} entries pointed past the end of its "
                "rows (a truncated file); they will be computed again"
            )

    def drop(self, keys: Sequence[str]) -> None:
        """Forget `keys` (their rows stay in the file until a prune)."""
        with self._locked(), self._db:
            self._db.executemany("DELETE FROM rows WHERE key = ?", [(k,) for k in keys])

    def damaged(self, keys: Sequence[str], data: np.ndarray) -> list[str]:
        """The keys among `keys` whose row in `data` no longer has the checksum it was
        written with (rows stored before checksums existed are not checked)."""
        return [
            key
            for key, row, crc in self._select("key, row, crc", keys, "AND row >= 0")
            if crc is not None and (row >= len(data) or _checksum(data[row]) != crc)
        ]

    def lookup(self, keys: Sequence[str]) -> dict[str, tuple[int, str | None]]:
        """{key: (row, error)} for the keys already stored (row is -1 for a recorded failure)."""
        return {key: (row, error) for key, row, error in self._select("key, row, error", keys)}

    def _select(self, columns: str, keys: Sequence[str], also: str = "") -> Iterator[Any]:
        """`columns` of the index entries of `keys` (each key once) that also match `also`."""
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _KEY_CHUNK):
            chunk = unique[start : start + _KEY_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT {columns} FROM rows WHERE key IN ({marks}) {also}"
            yield from self._db.execute(query, chunk)

    @contextmanager
    def computing(self) -> Iterator[None]:
        """Held while rows are computed: a second writer of the same store waits here, then
        looks its keys up again and finds the first writer's rows."""
        with _flocked(self.directory / _WORK_LOCK_FILE, fcntl.LOCK_EX):
            yield

    @contextmanager
    def _locked(self, shared: bool = False, recover: bool = True) -> Iterator[None]:
        """Hold the store's lock: exclusive for writers, shared for readers that must see the
        index and rows.bin agree. Not re-entrant: never nest two `_locked` in one process."""
        with _flocked(
            self.directory / _LOCK_FILE, fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        ) as lock:
            if recover and self._compact_path.exists():  # a compaction died: settle it
                if shared:  # converting drops the lock first, so two readers cannot deadlock
                    fcntl.flock(lock, fcntl.LOCK_EX)
                self._recover()
                if shared:
                    fcntl.flock(lock, fcntl.LOCK_SH)
            yield

    def _recover(self) -> None:
        """Under the exclusive lock: settle a compaction that was interrupted. The committed
        `compacting` flag says whether the index already holds the new row numbers."""
        flagged = self._db.execute("SELECT 1 FROM meta WHERE name = 'compacting'").fetchone()
        if flagged:
            if self._compact_path.exists():
                os.replace(self._compact_path, self._data_path)
                _fsync_dir(self.directory)
            self._db.execute("DELETE FROM meta WHERE name = 'compacting'")
            self._db.commit()
        elif self._compact_path.exists():  # the index still numbers the old file's rows
            self._compact_path.unlink()

    def append(self, items: Sequence[tuple[str, np.ndarray | None, str | None]]) -> None:
        """Store (key, row or None, error or None) items; rows are on disk before the index."""
        if not items:
            return
        with self._locked():
            with open(self._data_path, "ab") as data:
                size = data.seek(0, os.SEEK_END)
                if size % self.row_bytes:  # a crash mid-write left a partial row: drop it
                    data.truncate(size - size % self.row_bytes)
                    size -= size % self.row_bytes
                next_row = size // self.row_bytes
                index_rows = []
                for key, array, error in items:
                    if array is None:
                        index_rows.append((key, -1, error, None))
                        continue
                    raw = np.ascontiguousarray(array, dtype=self.dtype).tobytes()
                    data.write(raw)
                    index_rows.append((key, next_row, None, zlib.crc32(raw)))
                    next_row += 1
                data.flush()
                os.fsync(data.fileno())
            self._db.executemany(
                "INSERT OR REPLACE INTO rows (key, row, error, crc) VALUES (?, ?, ?, ?)",
                index_rows,
            )
            self._db.commit()

    def snapshot(
        self, keys: Sequence[str]
    ) -> tuple[dict[str, tuple[int, str | None]], np.ndarray, list[str]]:
        """`lookup(keys)`, every row memory-mapped, and the keys whose row is `damaged`, all
        under the shared lock: a compaction (exclusive) cannot renumber the index or swap
        rows.bin in between, and once mapped the rows stay those of the file it described."""
        with self._locked(shared=True):
            known = self.lookup(keys)
            data = self.rows()
            return known, data, self.damaged(keys, data)

    def rows(self) -> np.ndarray:
        """All stored rows, memory-mapped read-only. Use `snapshot` to read them together with
        the index: a map keeps its file alive, so rows mapped there stay valid after a
        compaction replaces rows.bin."""
        if not self._data_path.exists() or self._data_path.stat().st_size < self.row_bytes:
            return np.zeros((0, *self.row_shape), dtype=self.dtype)
        n = self._data_path.stat().st_size // self.row_bytes
        return np.memmap(self._data_path, self.dtype, "r", shape=(n, *self.row_shape))

    def prune(self) -> tuple[int, int]:
        """Drop the entries of files that are gone or changed, and compact rows.bin so only rows
        an entry refers to remain; returns (entries removed, bytes freed)."""
        with self._locked():
            before = tree_bytes(self.directory)
            n_rows = self._row_count()
            dead: list[str] = []
            live: set[int] = set()
            for key, row in self._db.execute("SELECT key, row FROM rows").fetchall():
                # A row past the end of rows.bin cannot be read back: its entry goes too.
                if row >= n_rows or is_stale_key(key):
                    dead.append(key)
                elif row >= 0:
                    live.add(row)
            live_rows = sorted(live)
            # Rows nothing refers to (a key stored twice by racing writers) or a partial row
            # left by a crash also justify rewriting the file; otherwise only the index changes.
            tidy = live_rows == list(range(n_rows)) and self._data_size() == n_rows * self.row_bytes
            if tidy and not dead:
                return 0, 0
            if tidy:
                with self._db:
                    self._db.executemany("DELETE FROM rows WHERE key = ?", [(k,) for k in dead])
            else:
                self._compact(dead, live_rows)
            if dead:
                self._db.execute("VACUUM")  # give the deleted index pages back to the disk too
            return len(dead), max(before - tree_bytes(self.directory), 0)

    def close(self) -> None:
        """Close the index connection."""
        self._db.close()

    def _data_size(self) -> int:
        try:
            return self._data_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _row_count(self) -> int:
        return self._data_size() // self.row_bytes

    def _compact(self, dead: list[str], live_rows: list[int]) -> None:
        """Under the exclusive lock: copy `live_rows` (sorted old row numbers) into a new file,
        renumber the index, and swap the file in.

        The commit that renumbers the index also sets the `compacting` flag, so a crash at any
        point leaves a state `_recover` settles: before the commit, the old file still matches
        the index and the new one is deleted; after it, the new file is renamed into place."""
        mapping = {old: new for new, old in enumerate(live_rows)}
        chunk = max(1, (64 << 20) // self.row_bytes)  # copy ~64 MB at a time
        old_rows = self.rows() if live_rows else None
        with open(self._compact_path, "wb") as out:
            for start in range(0, len(live_rows), chunk):
                assert old_rows is not None
                picked = np.asarray(old_rows[live_rows[start : start + chunk]])
                out.write(np.ascontiguousarray(picked).tobytes())
            out.flush()
            os.fsync(out.fileno())
        del old_rows
        _fsync_dir(self.directory)
        keep = self._db.execute("SELECT key, row FROM rows WHERE row >= 0").fetchall()
        with self._db:  # one transaction: stale entries out, rows renumbered, flag set
            self._db.executemany("DELETE FROM rows WHERE key = ?", [(k,) for k in dead])
            self._db.executemany(
                "UPDATE rows SET row = ? WHERE key = ?",
                [(mapping[row], k) for k, row in keep if row in mapping],
            )
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('compacting', '1')")
        self._recover()


def read_entries(directory: Path) -> list[tuple[str, int]]:
    """(key, row) of every entry of the store in `directory`, its index opened read-only:
    nothing is created, repaired or recovered (row is -1 for a recorded failure)."""
    path = Path(directory) / _INDEX_FILE
    if not path.is_file():
        return []
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return db.execute("SELECT key, row FROM rows").fetchall()
    except sqlite3.Error as exc:
        raise UserError(f"cannot read cache index {path}: {exc}") from exc


def remove_store(directory: Path) -> None:
    """Delete the store folder `directory` and its files, under the store's lock so no writer
    is halfway through an append or a compaction (the store is not opened, so not repaired)."""
    directory = Path(directory)
    with _flocked(directory / _LOCK_FILE, fcntl.LOCK_EX):
        for name in os.listdir(directory):
            if name != _LOCK_FILE:
                (directory / name).unlink()
        (directory / _LOCK_FILE).unlink()
    directory.rmdir()


def _read_spec(directory: Path) -> dict[str, Any] | None:
    """The store description in `directory`, None when there is none; ValueError if garbage."""
    path = directory / _SPEC_FILE
    if not path.is_file():
        return None
    spec = json.loads(path.read_text())
    if not isinstance(spec, dict) or set(spec) != {"row_shape", "dtype"}:
        raise ValueError(f"{_SPEC_FILE} is not a store description")
    return spec


@contextmanager
def _flocked(path: Path, mode: int) -> Iterator[IO[str]]:
    """Hold an advisory `flock` (`mode`) on the lock file `path`, created if need be."""
    with open(path, "a") as lock:
        fcntl.flock(lock, mode)
        try:
            yield lock
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _checksum(row: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(row).data)


def tree_bytes(path: Path) -> int:
    """Total size of the files under `path` (links not followed)."""
    if path.is_symlink() or not path.is_dir():
        try:
            return path.lstat().st_size
        except OSError:
            return 0
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
