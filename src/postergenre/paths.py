"""How a path the user typed becomes a `Path`, and why the file system refused one, in words:
one rule for every layer (no imports above it)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from postergenre.errors import UserError


def user_path(text: str | Path) -> Path:
    """A path as the user named it, with `~` and `~user` expanded to their home folder; a
    `UserError` names the user when there is no such user (or no home folder)."""
    path = Path(text)
    try:
        return path.expanduser()
    except RuntimeError:  # pathlib's way of saying "no such user", with no name in it
        user = path.parts[0][1:]
        who = f"user {user!r}" if user else "home folder"
        raise UserError(f"no {who} for {text}") from None


def shown(path: str | Path) -> str:
    """A path as one printable line: a NUL byte would cut a message short."""
    return str(path).replace("\0", "\\0")


def unreadable_reason(path: Path, exc: OSError | ValueError) -> str:
    """Why the file system refused `path`, in a few words: the `OSError` of a `stat` or `open`,
    or the `ValueError` of a path that holds a NUL byte."""
    if not isinstance(exc, OSError):
        return "the path holds a NUL byte"
    if exc.errno == errno.ENOENT and os.path.islink(path):
        return f"file not found (a symlink to {shown(os.readlink(path))}, which does not exist)"
    reasons = {
        errno.ENOENT: "file not found",
        errno.ENOTDIR: "file not found (a folder in its path is a file)",
        errno.ELOOP: "is a symlink loop",
        errno.ENAMETOOLONG: "file name too long for the file system",
        errno.EACCES: "permission denied",
    }
    return reasons.get(exc.errno or 0, exc.strerror or str(exc))
