"""Decode-once feature caches: posters (uint8 pixels), embeddings and text, memory-mapped on disk.

Each kind of feature lives in its own `ArrayStore` folder of the cache root (`default_cache_dir`);
`fill_store` computes only the rows of files not cached yet and maps every file to its row; a
store the filesystem refuses is skipped with one warning and the rows computed in memory.
`PosterCache` is the pixel cache; `run_jobs` runs decode or OCR jobs serially or in a pool.
Maintenance (`cache info|prune|clear`) lives in `postergenre.data.cache_admin`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from postergenre import console
from postergenre._cpu import default_workers
from postergenre.data.preprocess import InputSpec, load_poster_array
from postergenre.data.store import ArrayStore, file_key
from postergenre.data.store_folder import CacheUnavailable
from postergenre.errors import PosterDecodeError, UserError
from postergenre.paths import user_path

CACHE_ENV = "POSTERGENRE_CACHE"
_APPEND_BATCH = 256
# Rows computed without a usable store are held in memory: at most this many bytes per call.
UNCACHED_MAX_BYTES = 2 << 30
# Cache roots already warned about: one warning line per root and process, however many stores.
_WARNED: set[Path] = set()
# What a job computing one row gives back: (input index, row or None, error or None).
Row = tuple[int, np.ndarray | None, str | None]


def default_cache_dir() -> Path:
    """`$POSTERGENRE_CACHE`, else `~/.cache/postergenre`."""
    env = os.environ.get(CACHE_ENV)
    return user_path(env) if env else Path.home() / ".cache" / "postergenre"


def cache_root(cache_dir: Path | None) -> Path:
    """The cache root a `cache_dir` option names: `default_cache_dir()` when it is None."""
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


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
    store: ArrayStore, paths: Sequence[Path], compute: Callable[[list[int]], Iterator[Row]]
) -> CachedArrays:
    """Compute the rows missing from `store` for `paths` (in batches, appended as they come),
    then map every path to its row. `compute(indices)` yields (index, row or None, error or
    None); a file that cannot even be stat'ed is an error without a key. When the filesystem
    refuses the store (read-only, full, not a folder), the rows are computed without it."""
    keys, key_errors = _file_keys(paths)
    if store.unusable is None:
        try:
            return _fill_cached(store, paths, keys, key_errors, compute)
        except CacheUnavailable:
            pass  # the store marked itself unusable: what it held is computed again below
    assert store.unusable is not None
    if store.directory.parent not in _WARNED:
        _WARNED.add(store.directory.parent)
        console.warn(f"{store.unusable}; continuing without it")
    return _fill_uncached(store, keys, key_errors, compute)


def _fill_cached(
    store: ArrayStore,
    paths: Sequence[Path],
    keys: list[str | None],
    key_errors: dict[int, str],
    compute: Callable[[list[int]], Iterator[Row]],
) -> CachedArrays:
    """`fill_store` through the store (CacheUnavailable as soon as the filesystem refuses)."""
    valid = [k for k in keys if k is not None]
    for attempt in range(2):
        missing = _missing(store, keys)
        if missing:
            with store.computing():  # another writer may have done them while we waited
                _compute_into(store, keys, _missing(store, keys), compute)
        known, data, damaged = store.snapshot(valid)
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
    return _arrays(data, paths, keys, known, key_errors)


def _fill_uncached(
    store: ArrayStore,
    keys: list[str | None],
    key_errors: dict[int, str],
    compute: Callable[[list[int]], Iterator[Row]],
) -> CachedArrays:
    """`fill_store` without the store: every row computed into memory, within
    `UNCACHED_MAX_BYTES`."""
    wanted = [i for i, key in enumerate(keys) if key is not None]
    needed = len(wanted) * store.row_bytes
    if needed > UNCACHED_MAX_BYTES:
        raise UserError(
            f"{store.unusable}, and without it {len(wanted):,} rows would need "
            f"{console.format_bytes(needed)} of memory; use a writable cache folder"
        )
    data = np.empty((len(wanted), *store.row_shape), dtype=store.dtype)
    slots = {index: slot for slot, index in enumerate(wanted)}
    rows = np.full(len(keys), -1, dtype=np.int64)
    errors = dict(key_errors)
    for index, array, error in compute(wanted):
        if array is None:
            errors[index] = error or "unreadable"
        else:
            data[slots[index]] = array
            rows[index] = slots[index]
    return CachedArrays(data, rows, errors)


def _file_keys(paths: Sequence[Path]) -> tuple[list[str | None], dict[int, str]]:
    """Each path's `file_key` (None where the file cannot be stat'ed) and those errors."""
    keys: list[str | None] = []
    errors: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            keys.append(file_key(Path(path)))
        except OSError as exc:
            keys.append(None)
            errors[i] = f"{path}: cannot read file ({exc.strerror or exc})"
    return keys, errors


def _arrays(
    data: np.ndarray,
    paths: Sequence[Path],
    keys: list[str | None],
    known: dict[str, tuple[int, str | None]],
    key_errors: dict[int, str],
) -> CachedArrays:
    """Map every input to its row in `data` (or -1) and gather each failure's message."""
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
    compute: Callable[[list[int]], Iterator[Row]],
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


def _decode_job(args: tuple[int, str, InputSpec]) -> Row:
    index, path, spec = args
    try:
        return index, load_poster_array(path, spec), None
    except PosterDecodeError as exc:
        return index, None, str(exc)


class PosterCache:
    """Posters decoded and resized once to a model's input (`spec`; its normalisation plays no
    part), reused by every epoch and run."""

    def __init__(self, cache_dir: Path | None, spec: InputSpec):
        self.cache_dir = cache_root(cache_dir)
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

    def load_some(
        self, paths: Sequence[Path], indices: list[int], progress: bool = True
    ) -> tuple[CachedArrays, list[Row]]:
        """Pixels for the posters `indices` of `paths`, and a failed row (`Row`, by index into
        `paths`) for each that cannot be decoded: what a store computed from pixels (embeddings,
        fingerprints) yields first in its `fill_store` compute."""
        pixels = self.load([paths[i] for i in indices], progress=progress)
        return pixels, [(indices[j], None, error) for j, error in pixels.errors.items()]
