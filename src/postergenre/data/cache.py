"""Decode-once caches: posters (uint8 pixels) and, later, embeddings, memory-mapped on disk.

An `ArrayStore` is an append-only file of fixed-shape rows plus a SQLite index from a string key
to a row. Keys include a file's size and modification time, so a changed poster simply gets a
new key (and a new row); deleting the cache folder only costs time.

Maintenance: `cache_info` reports what the cache holds (and how much is stale), `prune_cache`
drops the entries of changed or deleted files and compacts the row files, `clear_cache` empties
the cache. Writers take a store's `lock` exclusively; `fill_store` takes it shared while it maps
the rows, so a compaction never swaps the file between its index lookup and its memory map.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from postergenre import console
from postergenre._cpu import default_workers
from postergenre.atomic import write_json
from postergenre.data.decode import load_poster_array
from postergenre.data.preprocess import InputSpec
from postergenre.errors import PosterDecodeError, UserError

CACHE_ENV = "POSTERGENRE_CACHE"
_APPEND_BATCH = 256
_DATA_FILE = "rows.bin"
_INDEX_FILE = "index.sqlite"
_SPEC_FILE = "store.json"
_LOCK_FILE = "lock"
# Held while rows are computed, so a second writer waits and then finds them done.
_WORK_LOCK_FILE = "work.lock"
# A compaction writes the live rows here, then renames it over rows.bin (see `_compact`).
_COMPACT_FILE = "rows.bin.compact"
# Everything an ArrayStore folder may hold: SQLite's side files and our temporary files too.
_STORE_FILES = frozenset(
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
_STORE_PREFIXES = {"posters-": "posters", "embeddings-": "embeddings", "text-": "text"}
_STORE_KINDS = frozenset(_STORE_PREFIXES.values())
_ONNX_DIR = "onnx"
# What a job computing one row gives back: (input index, row or None, error or None).
Row = tuple[int, np.ndarray | None, str | None]


def default_cache_dir() -> Path:
    """`$POSTERGENRE_CACHE`, else `~/.cache/postergenre`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "postergenre"


def file_key(path: Path) -> str:
    """Identify a file's current content cheaply: resolved path, size and mtime."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


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

    def _open(self) -> None:
        """Check the spec and the index, creating them when new; raise if either is damaged."""
        spec_path = self.directory / _SPEC_FILE
        if spec_path.exists():
            spec = json.loads(spec_path.read_text())  # garbage: ValueError, started again
            if not isinstance(spec, dict) or set(spec) != set(self._spec):
                raise ValueError(f"{_SPEC_FILE} is not a store description")
            if spec != self._spec:  # a well-formed other shape is a mistake, not damage
                raise UserError(
                    f"cache folder {self.directory} holds rows of another shape; delete it"
                )
        else:
            write_json(spec_path, self._spec, indent=None)
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
        bad: list[str] = []
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 900):
            chunk = unique[start : start + 900]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, row, crc FROM rows WHERE key IN ({marks}) AND row >= 0"
            for key, row, crc in self._db.execute(query, chunk):
                if crc is not None and (row >= len(data) or _checksum(data[row]) != crc):
                    bad.append(key)
        return bad

    @contextmanager
    def computing(self) -> Iterator[None]:
        """Held while rows are computed: a second writer of the same store waits here, then
        looks its keys up again and finds the first writer's rows."""
        with open(self.directory / _WORK_LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def _locked(self, shared: bool = False, recover: bool = True) -> Iterator[None]:
        """Hold the store's lock: exclusive for writers, shared for readers that must see the
        index and rows.bin agree. Not re-entrant: never nest two `_locked` in one process."""
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        with open(self.directory / _LOCK_FILE, "a") as lock:
            fcntl.flock(lock, mode)
            try:
                if recover and self._compact_path.exists():  # a compaction died: settle it
                    if shared:  # converting drops the lock first, so two readers cannot deadlock
                        fcntl.flock(lock, fcntl.LOCK_EX)
                    self._recover()
                    if shared:
                        fcntl.flock(lock, fcntl.LOCK_SH)
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

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

    def lookup(self, keys: Sequence[str]) -> dict[str, tuple[int, str | None]]:
        """{key: (row, error)} for the keys already stored (row is -1 for a recorded failure)."""
        found: dict[str, tuple[int, str | None]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 900):  # SQLite's bound-parameter limit
            chunk = unique[start : start + 900]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, row, error FROM rows WHERE key IN ({marks})"
            for key, row, error in self._db.execute(query, chunk):
                found[key] = (row, error)
        return found

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

    def rows(self) -> np.ndarray:
        """All stored rows, memory-mapped read-only. Call it under `_locked(shared=True)` together
        with `lookup`: a map keeps its file alive, so rows mapped there stay valid after a
        compaction replaces rows.bin."""
        if not self._data_path.exists() or self._data_path.stat().st_size < self.row_bytes:
            return np.zeros((0, *self.row_shape), dtype=self.dtype)
        n = self._data_path.stat().st_size // self.row_bytes
        return np.memmap(self._data_path, self.dtype, "r", shape=(n, *self.row_shape))

    def prune(self) -> tuple[int, int]:
        """Drop the entries of files that are gone or changed, and compact rows.bin so only rows
        an entry refers to remain; returns (entries removed, bytes freed)."""
        with self._locked():
            before = _tree_bytes(self.directory)
            n_rows = self._row_count()
            dead: list[str] = []
            live: set[int] = set()
            for key, row in self._db.execute("SELECT key, row FROM rows").fetchall():
                # A row past the end of rows.bin cannot be read back: its entry goes too.
                if row >= n_rows or _is_stale(key):
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
            return len(dead), max(before - _tree_bytes(self.directory), 0)

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


@dataclass
class CachedArrays:
    """Rows for a list of inputs: `rows[i]` indexes `data`, or is -1 when input i failed."""

    data: np.ndarray
    rows: np.ndarray
    errors: dict[int, str]

    @property
    def ok(self) -> np.ndarray:
        """Indices of the inputs that have a row."""
        return np.flatnonzero(self.rows >= 0)

    def __getitem__(self, index: int | np.ndarray) -> np.ndarray:
        return np.asarray(self.data[self.rows[index]])


def fill_store(
    store: ArrayStore,
    paths: Sequence[Path],
    compute: Callable[[list[int]], Iterator[tuple[int, np.ndarray | None, str | None]]],
) -> CachedArrays:
    """Compute the rows missing from `store` for `paths` (in batches, appended as they come),
    then map every path to its row. `compute(indices)` yields (index, row or None, error or
    None); a file that cannot even be stat'ed is an error without a key."""
    keys: list[str | None] = []
    key_errors: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            keys.append(file_key(Path(path)))
        except OSError as exc:
            keys.append(None)
            key_errors[i] = f"{path}: cannot read file ({exc.strerror or exc})"
    valid = [k for k in keys if k is not None]
    for attempt in range(2):
        missing = _missing(store, keys)
        if missing:
            with store.computing():  # another writer may have done them while we waited
                _compute_into(store, keys, _missing(store, keys), compute)
        # Shared: a compaction (exclusive) cannot renumber the index or swap rows.bin between
        # the lookup and the map; once mapped, the rows stay those of the file it described.
        with store._locked(shared=True):
            known = store.lookup(valid)
            data = store.rows()
            damaged = store.damaged(valid, data)
        if not damaged:
            break
        if attempt == 0:
            console.warn(
                f"cache folder {store.directory}: {len(damaged)} rows failed their checksum "
                "(damaged on disk); computing them again"
            )
        store.drop(damaged)
    else:
        raise UserError(f"cache folder {store.directory} keeps damaging rows; delete it")
    rows = np.full(len(keys), -1, dtype=np.int64)
    errors = dict(key_errors)
    for i, key in enumerate(keys):
        if key is None:
            continue
        if key not in known:  # pruned as stale: the file changed after we read its key
            errors[i] = f"{paths[i]}: changed while it was being cached; run again"
            continue
        row, error = known[key]
        rows[i] = row
        if row < 0:
            errors[i] = error or "unreadable"
    return CachedArrays(data, rows, errors)


def _missing(store: ArrayStore, keys: list[str | None]) -> list[int]:
    known = store.lookup([k for k in keys if k is not None])
    return [i for i, k in enumerate(keys) if k is not None and k not in known]


def _compute_into(
    store: ArrayStore,
    keys: list[str | None],
    missing: list[int],
    compute: Callable[[list[int]], Iterator[tuple[int, np.ndarray | None, str | None]]],
) -> None:
    """Compute the `missing` inputs' rows and append them in batches as they come."""
    pending: list[tuple[str, np.ndarray | None, str | None]] = []
    for index, array, error in compute(missing):
        key = keys[index]
        assert key is not None
        pending.append((key, array, error))
        if len(pending) >= _APPEND_BATCH:
            store.append(pending)
            pending = []
    store.append(pending)


def run_jobs(
    job: Callable[[Any], Row],
    jobs: Sequence[Any],
    workers: int,
    desc: str,
    progress: bool,
    serial_below: int,
    chunksize: int,
) -> Iterator[Row]:
    """`job` over `jobs` in order, with a progress bar (periodic lines in logs): in this
    process when there are fewer than `serial_below` jobs or one worker, else in `workers`
    spawned processes (not forked: the parent may hold torch's thread pools)."""
    with console.progress(len(jobs), desc, "img", enabled=progress) as bar:
        if len(jobs) < serial_below or workers <= 1:
            for item in jobs:
                yield job(item)
                bar.update()
            return
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for result in pool.map(job, jobs, chunksize=chunksize):
                yield result
                bar.update()


def _checksum(row: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(row).data)


def _decode_job(args: tuple[int, str, InputSpec]) -> tuple[int, np.ndarray | None, str | None]:
    index, path, spec = args
    try:
        return index, load_poster_array(path, spec), None
    except PosterDecodeError as exc:
        return index, None, str(exc)


class PosterCache:
    """Posters decoded and resized once to a model's input (`spec`; its normalisation plays no
    part), reused by every epoch and run."""

    def __init__(self, cache_dir: Path | None, spec: InputSpec):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.spec = spec
        # bilinear, the default, keeps the folder name caches had before interpolation was read
        method = "" if spec.interpolation == "bilinear" else f"-{spec.interpolation}"
        folder = self.cache_dir / f"posters-{spec.width}x{spec.height}-{spec.resize}{method}"
        self.store = ArrayStore(folder, (spec.height, spec.width, 3), "uint8")

    def load(
        self, paths: Sequence[Path], workers: int | None = None, progress: bool = True
    ) -> CachedArrays:
        """Pixels for `paths` (decoding only files not cached yet); failures land in `errors`."""
        workers = workers or default_workers()

        def compute(indices: list[int]) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
            jobs = [(i, str(paths[i]), self.spec) for i in indices]
            yield from run_jobs(_decode_job, jobs, workers, "decoding posters", progress, 64, 32)

        return fill_store(self.store, paths, compute)


# --- maintenance: info, prune, clear -------------------------------------------------------


@dataclass
class FolderInfo:
    """One folder of the cache root: `kind` is posters, embeddings, text, onnx or other."""

    name: str
    kind: str
    entries: int = 0
    failed: int = 0
    stale: int = 0
    bytes: int = 0


@dataclass
class CacheInfo:
    """What a cache root holds, folder by folder (see `cache_info`)."""

    root: Path
    folders: list[FolderInfo] = field(default_factory=list)

    @property
    def entries(self) -> int:
        return sum(f.entries for f in self.folders)

    @property
    def failed(self) -> int:
        return sum(f.failed for f in self.folders)

    @property
    def stale(self) -> int:
        return sum(f.stale for f in self.folders)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.folders)

    def format(self) -> str:
        """A small table: one line per folder, then the totals."""
        if not self.folders:
            return f"cache {self.root}: empty"
        header = ("folder", "kind", "entries", "failed", "stale", "size")
        lines = [
            (
                f.name,
                f.kind,
                f"{f.entries:,}",
                f"{f.failed:,}",
                f"{f.stale:,}",
                console.format_bytes(f.bytes),
            )
            for f in self.folders
        ]
        total = (
            "total",
            "",
            f"{self.entries:,}",
            f"{self.failed:,}",
            f"{self.stale:,}",
            console.format_bytes(self.bytes),
        )
        table = [header, *lines, total]
        widths = [max(len(row[c]) for row in table) for c in range(len(header))]

        def render(row: tuple[str, ...]) -> str:
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
            cells += [cell.rjust(width) for cell, width in zip(row[2:], widths[2:], strict=True)]
            return "  ".join(cells).rstrip()

        return "\n".join([f"cache {self.root}", *(render(row) for row in table)])


@dataclass
class PruneReport:
    """What `prune_cache` removed."""

    entries_removed: int = 0
    bytes_freed: int = 0

    def format(self) -> str:
        freed = console.format_bytes(self.bytes_freed)
        return f"removed {self.entries_removed:,} stale entries, freed {freed}"


def cache_info(cache_dir: Path | None = None) -> CacheInfo:
    """Entries, failures, stale entries and bytes of each folder of the cache root (default
    `default_cache_dir()`). Only reads: a missing root is reported empty, not created."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    info = CacheInfo(root)
    if not root.is_dir():
        return info
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        kind = _folder_kind(entry)
        folder = FolderInfo(entry.name, kind, bytes=_tree_bytes(Path(entry.path)))
        if kind in _STORE_KINDS:
            for key, row in _read_index(Path(entry.path) / _INDEX_FILE):
                folder.entries += 1
                folder.failed += row < 0
                folder.stale += _is_stale(key)
        elif kind == "onnx":
            folder.entries = sum(1 for p in Path(entry.path).glob("*.onnx") if p.is_file())
        info.folders.append(folder)
    return info


def prune_cache(cache_dir: Path | None = None) -> PruneReport:
    """Drop the entries of posters that changed or are gone from every store of the cache root,
    compacting their row files (ONNX exports are left alone: only `clear_cache` removes them)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    report = PruneReport()
    if not root.is_dir():
        return report
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        spec_path = Path(entry.path) / _SPEC_FILE
        if _folder_kind(entry) not in _STORE_KINDS or not spec_path.is_file():
            continue
        spec = json.loads(spec_path.read_text())
        store = ArrayStore(Path(entry.path), tuple(spec["row_shape"]), spec["dtype"])
        with closing(store):
            removed, freed = store.prune()
        report.entries_removed += removed
        report.bytes_freed += freed
    return report


def clear_cache(cache_dir: Path | None = None) -> int:
    """Remove every store and ONNX export of the cache root (the root folder itself stays);
    returns the bytes freed. Refuses, deleting nothing, when the root holds anything else:
    a mistyped `--cache-dir` must not empty someone's home folder."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if not root.exists():
        return 0
    if not root.is_dir():
        raise UserError(f"cache folder {root} is not a folder")
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    foreign = [e.name for e in entries if not _is_ours(e)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise UserError(
            f"{root} does not look like a postergenre cache (it holds {shown}); "
            "not clearing it — delete the folder by hand if it really is the cache"
        )
    freed = 0
    for entry in entries:
        folder = Path(entry.path)
        freed += _tree_bytes(folder)
        if _folder_kind(entry) == "onnx":
            shutil.rmtree(folder)
            continue
        # Under the store's lock, so no writer is halfway through an append or a compaction.
        with open(folder / _LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for name in os.listdir(folder):
                if name != _LOCK_FILE:
                    (folder / name).unlink()
            (folder / _LOCK_FILE).unlink()
        folder.rmdir()
    return freed


def _folder_kind(entry: os.DirEntry[str]) -> str:
    if not entry.is_dir(follow_symlinks=False):
        return "other"
    if entry.name == _ONNX_DIR:
        return "onnx"
    for prefix, kind in _STORE_PREFIXES.items():
        if entry.name.startswith(prefix):
            return kind
    return "other"


def _is_ours(entry: os.DirEntry[str]) -> bool:
    """A folder `clear_cache` may delete: one of our kinds, holding only files we write."""
    kind = _folder_kind(entry)
    if kind == "other":
        return False
    for child in os.scandir(entry.path):
        if not child.is_file(follow_symlinks=False):
            return False
        if kind == "onnx":
            # Exports are `ARCH-HASH.onnx`, written via a `.NAME.XXXX.tmp` file first.
            if not (child.name.endswith(".onnx") or child.name.endswith(".tmp")):
                return False
        elif child.name not in _STORE_FILES:
            return False
    return True


def _read_index(path: Path) -> list[tuple[str, int]]:
    """(key, row) of every entry of a store's index, opened read-only (nothing is created)."""
    if not path.is_file():
        return []
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return db.execute("SELECT key, row FROM rows").fetchall()
    except sqlite3.Error as exc:
        raise UserError(f"cannot read cache index {path}: {exc}") from exc


def _is_stale(key: str) -> bool:
    """Whether a `file_key` no longer describes its file (gone, or another size or mtime).
    A key of any other form can never be looked up by `fill_store`, so it is stale too."""
    parts = key.rsplit("|", 2)
    if len(parts) != 3:
        return True
    path, size, mtime_ns = parts
    try:
        stat = os.stat(path)
    except OSError:
        return True
    return f"{stat.st_size}|{stat.st_mtime_ns}" != f"{size}|{mtime_ns}"


def _tree_bytes(path: Path) -> int:
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
