"""Atomic writes: every file and folder the project writes appears whole or not at all.

A file is written to a temporary name in the same folder, flushed to disk, then renamed over the
target, so a reader (or a crash) never sees half of it. A folder is built beside its target and
swapped in with one `renameat2(RENAME_EXCHANGE)` where Linux offers it, so there is never a
moment without the old or the new folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_folder",
    "atomic_path",
    "new_folder_beside",
    "remove_stale_temporaries",
    "replace_folder",
    "write_bytes",
    "write_json",
    "write_text",
]


def _new_temp_file(path: Path) -> Path:
    """Create an empty, uniquely named file beside `path` with the usual permissions
    (mkstemp would make it private to the owner)."""
    while True:
        tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends, it is fsynced and renamed
    over `path`. On an error the temporary file is removed and `path` is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_file(path)
    usual = stat.S_IMODE(tmp.stat().st_mode)
    try:
        yield tmp
        _widen(tmp, usual)  # a writer that replaced the file (safetensors: 0600) narrowed it
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _widen(path: Path, mode: int) -> None:
    """Give `path` at least the permission bits `mode` (never fewer than it has)."""
    current = stat.S_IMODE(path.lstat().st_mode)
    if current | mode != current:
        os.chmod(path, current | mode)


def _widen_tree(folder: Path) -> None:
    """Files and folders under `folder` get at least the permissions its own mode grants
    (0755 -> files 0644, folders 0755): libraries that write private files (safetensors
    writes 0600) would otherwise leave a shared folder's contents readable by one user."""
    folder_mode = stat.S_IMODE(folder.stat().st_mode)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            _widen(Path(root) / name, folder_mode)
        for name in files:
            if not os.path.islink(Path(root) / name):
                _widen(Path(root) / name, folder_mode & 0o666)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """Write `data` as JSON to `path` atomically (NaN and infinities are refused)."""
    return write_text(path, json.dumps(data, indent=indent, allow_nan=False) + "\n")


def new_folder_beside(target: str | Path, *, private: bool = False) -> Path:
    """An empty temporary folder next to `target`, to fill and then `replace_folder` in.

    It gets the permissions `mkdir` gives (0777 less the umask), since it becomes `target`
    (mkdtemp would make every bundle and index private to its owner, silently); `private`
    makes it 0700: only its owner may list or read it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = target.with_name(f".{target.name}.{os.urandom(4).hex()}.tmp")
        try:
            os.mkdir(tmp, 0o700 if private else 0o777)
            return tmp
        except FileExistsError:
            continue


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:  # glibc < 2.28, musl
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), ctypes.c_uint(_RENAME_EXCHANGE)
    )
    return result == 0


@contextlib.contextmanager
def atomic_folder(target: str | Path, *, private: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside `target` to fill; when the block ends it replaces `target`
    whole (`replace_folder`). On an error it is removed and `target` is left untouched. The
    folder honours the umask like `mkdir`, or is the owner's alone (0700) when `private`."""
    tmp = new_folder_beside(target, private=private)
    try:
        yield tmp
        _widen_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_folder(tmp, target)


def replace_folder(tmp: str | Path, target: str | Path) -> Path:
    """Move the finished folder `tmp` to `target`, replacing any folder there.

    With an existing target the two are exchanged in one step, then the old one is deleted;
    where the system has no exchange, the old folder is moved aside just before the new one
    is moved in.
    """
    tmp, target = Path(tmp), Path(target)
    try:
        if not target.exists():
            os.replace(tmp, target)
        elif _exchange(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        else:
            old = new_folder_beside(target)
            os.replace(target, old / "old")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete the temporary files and folders (`.NAME.*.tmp`) that a process killed mid-write
    left in `folder`; returns how many. Only names this module makes are touched."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for entry in folder.iterdir():
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
    return removed
