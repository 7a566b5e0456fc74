"""The on-disk row store: fixed-shape rows appended to one file, found by key through SQLite.

An `ArrayStore` is an append-only file of fixed-shape rows plus a SQLite index from a string key
to a row. Keys (`file_key`) include a file's size, modification time, inode and change time, so a
changed or replaced poster simply gets a new key (and a new row); deleting the store's folder only
costs time.

Every row carries a CRC32 of its bytes, so damage on disk is found and the row computed again; a
row without one (written before checksums existed) is never served.
A store the filesystem refuses (read-only, full, a folder where a file belongs) becomes
`unusable`: its methods raise `CacheUnavailable`, so callers can go on without it.
Writers take a store's lock exclusively; `snapshot` takes it shared while it maps the rows, so a
compaction (`ArrayStore.prune`) never swaps the file between its index lookup and its map.
"""

from __future__ import annotations

import fcntl
import functools
import os
import sqlite3
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from postergenre import console
from postergenre.atomic import write_json
from postergenre.data.store_folder import (
    COMPACT_FILE,
    DATA_FILE,
    INDEX_FILE,
    LOCK_FILE,
    SPEC_FILE,
    WORK_LOCK_FILE,
    CacheUnavailable,
    check_files,
    checked_spec,
    flocked,
    fsync_dir,
    read_spec,
    tree_bytes,
)
from postergenre.errors import UserError

# SQLite's limit on bound parameters: key lookups go in chunks of this many.
_KEY_CHUNK = 900
# An index entry is served only with a checksum to check its row against (failures have no row).
_SERVED = "(row < 0 OR crc IS NOT NULL)"
_CHECKED_ROWS = "AND row >= 0 AND crc IS NOT NULL"
_P = ParamSpec("_P")
_R = TypeVar("_R")


def file_key(path: Path) -> str:
    """Identify a file's current content cheaply: its resolved path and `_identity`."""
    return f"{path.resolve()}|{_identity(path.stat())}"


def _identity(stat: os.stat_result) -> str:
    # Size and mtime can be copied over (`cp -p`, rsync); inode and change time cannot.
    return f"{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}|{stat.st_ctime_ns}"


def is_stale_key(key: str) -> bool:
    """Whether a `file_key` no longer describes its file (gone, replaced or changed).
    A key of any other form can never be looked up again, so it is stale too."""
    path, *identity = key.rsplit("|", 4)
    if len(identity) != 4:
        return True
    try:
        return _identity(os.stat(path)) != "|".join(identity)
    except OSError:
        return True


def _guarded(
    method: Callable[Concatenate[ArrayStore, _P], _R],
) -> Callable[Concatenate[ArrayStore, _P], _R]:
    """A store method after which a filesystem refusal leaves the store `unusable`; once it
    is, every guarded method raises the same `CacheUnavailable` without touching the disk."""

    @functools.wraps(method)
    def run(store: ArrayStore, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if store.unusable is not None:
            raise store.unusable
        try:
            return method(store, *args, **kwargs)
        except (OSError, sqlite3.OperationalError) as exc:
            store.unusable = CacheUnavailable(store.directory, exc)
            raise store.unusable from exc

    return run


class ArrayStore:
    """Rows of one shape and dtype, appended once and read back memory-mapped by key."""

    def __init__(self, directory: Path, row_shape: tuple[int, ...], dtype: str):
        self.directory = Path(directory)
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        self._data_path = self.directory / DATA_FILE
        self._compact_path = self.directory / COMPACT_FILE
        self._spec = {"row_shape": list(self.row_shape), "dtype": self.dtype.str}
        # Set by `_guarded` when the filesystem refuses the store (see `CacheUnavailable`).
        self.unusable: CacheUnavailable | None = None
        with suppress(CacheUnavailable):
            self._setup()

    @_guarded
    def _setup(self) -> None:
        """Create or open the folder, starting a damaged store again."""
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._open()
        except sqlite3.OperationalError:  # cannot open or write the index: not damage
            raise
        except (sqlite3.DatabaseError, ValueError) as exc:  # ValueError: the spec is garbage
            self._start_again(str(exc))
        self._drop_rows_past_end()

    @classmethod
    def reopen(cls, directory: Path) -> ArrayStore | None:
        """The store in `directory`, with the row shape and dtype its spec records; None when
        the folder has no spec (nothing was ever stored there). Raises `StoreDamaged` for an
        unreadable spec and `CacheUnavailable` when the store cannot be opened for writing."""
        spec = checked_spec(Path(directory))
        if spec is None:
            return None
        store = cls(directory, tuple(spec["row_shape"]), spec["dtype"])
        if store.unusable is not None:
            raise store.unusable
        return store

    def _open(self) -> None:
        """Check the files, the spec and the index, creating them when new; raise if any is
        damaged (a folder where a file belongs is an OSError: unusable, not started again)."""
        check_files(self.directory)
        spec = read_spec(self.directory)  # garbage: ValueError, started again
        if spec is None:
            write_json(self.directory / SPEC_FILE, self._spec, indent=None)
        elif spec != self._spec:  # a well-formed other shape is a mistake, not damage
            raise UserError(f"cache folder {self.directory} holds rows of another shape; delete it")
        self._db = sqlite3.connect(self.directory / INDEX_FILE, timeout=60)
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
            for name in (DATA_FILE, INDEX_FILE, SPEC_FILE, COMPACT_FILE):
                with suppress(FileNotFoundError):
                    (self.directory / name).unlink()
            for side in self.directory.glob(f"{INDEX_FILE}-*"):
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

    @_guarded
    def drop(self, keys: Sequence[str]) -> None:
        """Forget `keys` (their rows stay in the file until a prune)."""
        with self._locked(), self._db:
            self._db.executemany("DELETE FROM rows WHERE key = ?", [(k,) for k in keys])

    def damaged(self, keys: Sequence[str], data: np.ndarray) -> list[str]:
        """The keys among `keys` whose row in `data` no longer has the checksum it was
        written with (rows without a checksum are never served: see `lookup`)."""
        return [
            key
            for key, row, crc in self._select(
                "key, row, crc", keys, "AND row >= 0 AND crc IS NOT NULL"
            )
            if row >= len(data) or _checksum(data[row]) != crc
        ]

    @_guarded
    def lookup(self, keys: Sequence[str]) -> dict[str, tuple[int, str | None]]:
        """{key: (row, error)} for the keys already stored (row is -1 for a recorded failure);
        a row stored without a checksum counts as missing, so it is computed again."""
        return {
            key: (row, error)
            for key, row, error in self._select("key, row, error", keys, f"AND {_SERVED}")
        }

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
        with ExitStack() as held:
            self._hold(held, WORK_LOCK_FILE, self._say_waiting)
            yield

    def _say_waiting(self, pid: int | None) -> None:
        who = f" (process {pid})" if pid else ""
        console.warn(
            f"waiting for another postergenre process{who} that is filling the cache at "
            f"{self.directory}; this one goes on when it is done"
        )

    @_guarded
    def _hold(
        self, held: ExitStack, name: str, on_wait: Callable[[int | None], None] | None = None
    ) -> None:
        """Take the exclusive lock `name` until `held` closes (only taking it is guarded: the
        work done under it may fail in its own ways)."""
        held.enter_context(flocked(self.directory / name, fcntl.LOCK_EX, on_wait))

    @contextmanager
    def _locked(self, shared: bool = False, recover: bool = True) -> Iterator[None]:
        """Hold the store's lock: exclusive for writers, shared for readers that must see the
        index and rows.bin agree. Not re-entrant: never nest two `_locked` in one process."""
        with flocked(
            self.directory / LOCK_FILE, fcntl.LOCK_SH if shared else fcntl.LOCK_EX
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
                fsync_dir(self.directory)
            self._db.execute("DELETE FROM meta WHERE name = 'compacting'")
            self._db.commit()
        elif self._compact_path.exists():  # the index still numbers the old file's rows
            self._compact_path.unlink()

    @_guarded
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

    @_guarded
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

    @_guarded
    def rows(self) -> np.ndarray:
        """All stored rows, memory-mapped read-only. Use `snapshot` to read them together with
        the index: a map keeps its file alive, so rows mapped there stay valid after a
        compaction replaces rows.bin."""
        if not self._data_path.exists() or self._data_path.stat().st_size < self.row_bytes:
            return np.zeros((0, *self.row_shape), dtype=self.dtype)
        n = self._data_path.stat().st_size // self.row_bytes
        return np.memmap(self._data_path, self.dtype, "r", shape=(n, *self.row_shape))

    @_guarded
    def prune(self) -> tuple[int, int]:
        """Drop the entries of files that are gone or changed, and compact rows.bin so only rows
        an entry refers to remain; returns (entries removed, bytes freed)."""
        with self._locked():
            before = tree_bytes(self.directory)
            n_rows = self._row_count()
            dead: list[str] = []
            live: set[int] = set()
            entries = self._db.execute(f"SELECT key, row, {_SERVED} FROM rows").fetchall()
            for key, row, served in entries:
                # A row past the end of rows.bin, or without a checksum, is never served again.
                if row >= n_rows or not served or is_stale_key(key):
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
        """Close the index connection (if it was ever opened)."""
        with suppress(AttributeError, sqlite3.Error):
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
        fsync_dir(self.directory)
        keep = self._db.execute("SELECT key, row FROM rows WHERE row >= 0").fetchall()
        with self._db:  # one transaction: stale entries out, rows renumbered, flag set
            self._db.executemany("DELETE FROM rows WHERE key = ?", [(k,) for k in dead])
            self._db.executemany(
                "UPDATE rows SET row = ? WHERE key = ?",
                [(mapping[row], k) for k, row in keep if row in mapping],
            )
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('compacting', '1')")
        self._recover()


def _checksum(row: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(row).data)
