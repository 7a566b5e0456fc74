"""Decode-once caches: posters (uint8 pixels) and, later, embeddings, memory-mapped on disk.

An `ArrayStore` is an append-only file of fixed-shape rows plus a SQLite index from a string key
to a row. Keys include a file's size and modification time, so a changed poster simply gets a
new key (and a new row); deleting the cache folder only costs time.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from postergenre.data.decode import load_poster_array
from postergenre.errors import PosterDecodeError, UserError

CACHE_ENV = "POSTERGENRE_CACHE"
_APPEND_BATCH = 256


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
        self._data_path = self.directory / "rows.bin"
        spec = {"row_shape": list(self.row_shape), "dtype": self.dtype.str}
        spec_path = self.directory / "store.json"
        if spec_path.exists() and json.loads(spec_path.read_text()) != spec:
            raise UserError(f"cache folder {self.directory} holds rows of another shape; delete it")
        if not spec_path.exists():
            tmp = spec_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(spec))
            os.replace(tmp, spec_path)
        self._db = sqlite3.connect(self.directory / "index.sqlite", timeout=60)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, row INTEGER, error TEXT)"
        )
        self._db.commit()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.directory / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

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
                        index_rows.append((key, -1, error))
                        continue
                    data.write(np.ascontiguousarray(array, dtype=self.dtype).tobytes())
                    index_rows.append((key, next_row, None))
                    next_row += 1
                data.flush()
                os.fsync(data.fileno())
            self._db.executemany("INSERT OR REPLACE INTO rows VALUES (?, ?, ?)", index_rows)
            self._db.commit()

    def rows(self) -> np.ndarray:
        """All stored rows, memory-mapped read-only."""
        if not self._data_path.exists() or self._data_path.stat().st_size < self.row_bytes:
            return np.zeros((0, *self.row_shape), dtype=self.dtype)
        n = self._data_path.stat().st_size // self.row_bytes
        return np.memmap(self._data_path, self.dtype, "r", shape=(n, *self.row_shape))


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
    known = store.lookup([k for k in keys if k is not None])
    missing = [i for i, k in enumerate(keys) if k is not None and k not in known]
    pending: list[tuple[str, np.ndarray | None, str | None]] = []
    for index, array, error in compute(missing):
        key = keys[index]
        assert key is not None
        pending.append((key, array, error))
        if len(pending) >= _APPEND_BATCH:
            store.append(pending)
            pending = []
    store.append(pending)
    known = store.lookup([k for k in keys if k is not None])
    rows = np.full(len(keys), -1, dtype=np.int64)
    errors = dict(key_errors)
    for i, key in enumerate(keys):
        if key is None:
            continue
        row, error = known[key]
        rows[i] = row
        if row < 0:
            errors[i] = error or "unreadable"
    return CachedArrays(store.rows(), rows, errors)


def _decode_job(args: tuple[int, str, int, int, str]) -> tuple[int, np.ndarray | None, str | None]:
    index, path, width, height, mode = args
    try:
        return index, load_poster_array(path, width, height, mode), None
    except PosterDecodeError as exc:
        return index, None, str(exc)


class PosterCache:
    """Posters decoded and resized once to `width` x `height`, reused by every epoch and run."""

    def __init__(self, cache_dir: Path | None, width: int, height: int, resize: str = "squash"):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.width, self.height, self.resize = width, height, resize
        folder = self.cache_dir / f"posters-{width}x{height}-{resize}"
        self.store = ArrayStore(folder, (height, width, 3), "uint8")

    def load(
        self, paths: Sequence[Path], workers: int | None = None, progress: bool = True
    ) -> CachedArrays:
        """Pixels for `paths` (decoding only files not cached yet); failures land in `errors`."""
        workers = workers or min(2, os.cpu_count() or 1)

        def compute(indices: list[int]) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
            jobs = [(i, str(paths[i]), self.width, self.height, self.resize) for i in indices]
            # disable=None: a bar on a terminal, silence in logs.
            quiet = True if not progress or not jobs else None
            bar = tqdm(total=len(jobs), desc="decoding posters", unit="img", disable=quiet)
            with bar:
                if len(jobs) < 64 or workers <= 1:
                    for job in jobs:
                        yield _decode_job(job)
                        bar.update()
                    return
                # spawn, not fork: the parent may hold torch's thread pools.
                with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                    for result in pool.map(_decode_job, jobs, chunksize=32):
                        yield result
                        bar.update()

        return fill_store(self.store, paths, compute)
