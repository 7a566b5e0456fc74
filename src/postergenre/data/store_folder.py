"""One row store's folder on disk: the names of its files, its spec, its locks, and what can be
done to the folder without opening it as a store (read its entries, remove it, measure it).

`ArrayStore` (`postergenre.data.store`) writes the folder; `cache info|prune|clear` read it here
first, so a damaged folder is reported (`StoreDamaged`) rather than started again, and a folder
the filesystem refuses is `CacheUnavailable`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import numpy as np

from postergenre.errors import UserError

DATA_FILE = "rows.bin"
INDEX_FILE = "index.sqlite"
SPEC_FILE = "store.json"
LOCK_FILE = "lock"
# Held while rows are computed, so a second writer waits and then finds them done.
WORK_LOCK_FILE = "work.lock"
# A compaction writes the live rows here, then renames it over rows.bin (see `ArrayStore._compact`).
COMPACT_FILE = "rows.bin.compact"
# Everything an ArrayStore folder may hold: SQLite's side files and our temporary files too.
STORE_FILES = frozenset(
    {
        DATA_FILE,
        INDEX_FILE,
        SPEC_FILE,
        LOCK_FILE,
        WORK_LOCK_FILE,
        COMPACT_FILE,
        "store.tmp",
        f"{INDEX_FILE}-journal",
        f"{INDEX_FILE}-wal",
        f"{INDEX_FILE}-shm",
    }
)


class CacheUnavailable(UserError):
    """A store folder the filesystem will not let us use: read-only, full, not a folder, or a
    folder where one of the store's files belongs."""

    def __init__(self, directory: Path, error: OSError | sqlite3.Error):
        reason = _os_reason(error) if isinstance(error, OSError) else str(error)
        super().__init__(f"cache folder {directory} is not usable ({reason})")


class StoreDamaged(UserError):
    """A store folder whose files do not read as a store (`cache info|prune` report it)."""


def read_entries(directory: Path) -> list[tuple[str, int]]:
    """(key, row) of every entry of the store in `directory`, its index opened read-only:
    nothing is created, repaired or recovered (row is -1 for a recorded failure).
    Raises `StoreDamaged` when a file of the store is not a file or does not read as one."""
    directory = Path(directory)
    checked_spec(directory)
    path = directory / INDEX_FILE
    if not path.is_file():
        return []
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return db.execute("SELECT key, row FROM rows").fetchall()
    except sqlite3.Error as exc:
        raise StoreDamaged(f"cannot read cache index {path}: {exc}") from exc


def remove_store(directory: Path) -> None:
    """Delete the store folder `directory` and its files, under the store's lock so no writer
    is halfway through an append or a compaction (the store is not opened, so not repaired)."""
    directory = Path(directory)
    try:
        with flocked(directory / LOCK_FILE, fcntl.LOCK_EX):
            for name in os.listdir(directory):
                if name != LOCK_FILE:
                    (directory / name).unlink()
            (directory / LOCK_FILE).unlink()
        directory.rmdir()
    except OSError as exc:
        raise CacheUnavailable(directory, exc) from exc


def checked_spec(directory: Path) -> dict[str, Any] | None:
    """`read_spec` after `check_files`, read-only; `StoreDamaged` says which file is wrong."""
    try:
        check_files(directory)
        return read_spec(directory)
    except OSError as exc:
        raise StoreDamaged(_os_reason(exc)) from exc
    except ValueError as exc:
        raise StoreDamaged(str(exc)) from exc


def check_files(directory: Path) -> None:
    """Raise IsADirectoryError naming the first of the store's files that is there but not a
    file (a folder, a dangling link, a link loop): nothing could ever write it."""
    for name in sorted(STORE_FILES):
        path = directory / name
        if (path.is_symlink() or path.exists()) and not path.is_file():
            raise IsADirectoryError(errno.EISDIR, "not a file", str(path))


def read_spec(directory: Path) -> dict[str, Any] | None:
    """The store description in `directory`, None when there is none; ValueError if garbage."""
    path = directory / SPEC_FILE
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # not JSON, not UTF-8
        spec = None
    shape = spec.get("row_shape") if isinstance(spec, dict) else None
    if (
        not isinstance(spec, dict)
        or set(spec) != {"row_shape", "dtype"}
        or not isinstance(shape, list)
        or not all(type(n) is int and n > 0 for n in shape)
        or not _is_dtype(spec["dtype"])
    ):
        raise ValueError(f"{SPEC_FILE} is not a store description")
    return spec


def _os_reason(error: OSError) -> str:
    """An OSError in a few words: the file's name (not its folder, said elsewhere) and why."""
    reason = error.strerror or str(error)
    if error.filename is None:
        return reason
    return f"{Path(os.fsdecode(error.filename)).name}: {reason}"


def _is_dtype(name: object) -> bool:
    try:
        return isinstance(name, str) and np.dtype(name).str == name
    except TypeError:
        return False


@contextmanager
def flocked(
    path: Path, mode: int, on_wait: Callable[[int | None], None] | None = None
) -> Iterator[IO[str]]:
    """Hold an advisory `flock` (`mode`) on the lock file `path`, created if need be.

    With `on_wait`, the holder writes its process id into the file, and a process that finds
    the lock taken calls `on_wait(holder's pid, or None)` once before it waits: a long wait on
    another process is said, not silent."""
    with open(path, "a+") as lock:
        if on_wait is None:
            fcntl.flock(lock, mode)
        else:
            try:
                fcntl.flock(lock, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                on_wait(_holder(lock))
                fcntl.flock(lock, mode)
            with suppress(OSError):  # a read-only lock file: the pid is only a courtesy
                os.ftruncate(lock.fileno(), 0)
                lock.write(str(os.getpid()))
                lock.flush()
        try:
            yield lock
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _holder(lock: IO[str]) -> int | None:
    """The process id the lock file's holder wrote, if any."""
    with suppress(OSError, ValueError):
        lock.seek(0)
        return int(lock.read().strip() or "x")
    return None


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


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
