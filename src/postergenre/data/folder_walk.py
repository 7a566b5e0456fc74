"""Walking the folders a user names: each real folder and file once, whatever links say.

A link back up the tree (`up -> ..`) or a loop of links would otherwise list the same posters
again and again, or never end. Folders and files are told apart by (device, inode); paths keep
the names the user gave (nothing is resolved), and something reached under two names is listed
under the first in sorted order. Links are followed, so a link to a folder elsewhere is walked.

Memory: one (device, inode) pair per folder and file yielded, and one directory listing per
level being walked.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from postergenre.data.formats import is_image_name
from postergenre.errors import UserError

_GLOB_CHARS = frozenset("*?[")
Identity = tuple[int, int]


def has_glob_chars(text: str) -> bool:
    """Whether `text` is a glob pattern rather than a plain path."""
    return bool(_GLOB_CHARS & set(text))


def _entry_kind(entry: os.DirEntry[str], parent_device: int) -> tuple[str, Identity | None]:
    """("dir" | "file" | "other" | "broken", identity) of one listed entry; "broken" is a link
    that cannot be followed (a loop, a dangling link). Costs a `stat` only for links and
    folders: a plain file's inode comes with the listing."""
    try:
        if entry.is_symlink():
            info = entry.stat()
        elif entry.is_dir(follow_symlinks=False):
            info = entry.stat(follow_symlinks=False)  # a mount point has its own device
        elif entry.is_file(follow_symlinks=False):
            return "file", (parent_device, entry.inode())
        else:
            return "other", None
    except OSError:
        return "broken", None
    if stat.S_ISDIR(info.st_mode):
        return "dir", (info.st_dev, info.st_ino)
    kind = "file" if stat.S_ISREG(info.st_mode) else "other"
    return kind, (info.st_dev, info.st_ino)


class FolderWalk:
    """What one walk has visited: each real folder and file is yielded once per walk."""

    def __init__(self) -> None:
        self._seen: set[Identity] = set()

    def first_visit(self, path: Path) -> bool:
        """Whether the real folder or file behind `path` is new to this walk (it is now seen);
        False for one that cannot be reached."""
        try:
            info = path.stat()
        except (OSError, ValueError):
            return False
        return self.first((info.st_dev, info.st_ino))

    def first(self, identity: Identity | None) -> bool:
        """Whether `identity` is new to this walk (it is now seen); True for None, a link
        that cannot be followed, so that reading it says why."""
        if identity is None:
            return True
        if identity in self._seen:
            return False
        self._seen.add(identity)
        return True

    def files(
        self, folder: Path, max_depth: int | None = None, *, per_name: bool = False
    ) -> Iterator[tuple[Path, str, Identity | None]]:
        """(path, path relative to `folder` with `/`, identity) of the files under `folder`,
        recursively (at most `max_depth` folders down), in sorted path order, and of the links
        that cannot be followed (identity None). Each real folder is entered once, or, with
        `per_name` (for a glob, whose matches depend on the names a folder is reached by),
        once per name but never inside itself: no loop either way."""
        try:
            info = folder.stat()
        except (OSError, ValueError):
            return
        identity = (info.st_dev, info.st_ino)
        if not per_name and not self.first(identity):
            return
        stack = [(_listing(folder), "", identity)]
        while stack:
            listing, prefix, (device, _) = stack[-1]
            entry = next(listing, None)
            if entry is None:
                stack.pop()
                continue
            kind, identity = _entry_kind(entry, device)
            relative = prefix + entry.name
            if kind == "dir" and identity is not None:
                deeper = max_depth is None or len(stack) <= max_depth
                new = identity not in [i for _, _, i in stack] if per_name else self.first(identity)
                if deeper and new:
                    stack.append((_listing(Path(entry.path)), relative + "/", identity))
            elif kind in ("file", "broken"):
                yield Path(entry.path), relative, identity

    def images(self, folder: Path, max_depth: int | None = None) -> Iterator[Path]:
        """Image files under `folder`, each real one once (see `files`)."""
        for path, _, identity in self.files(folder, max_depth):
            if is_image_name(path.name) and self.first(identity):
                yield path


def _listing(folder: Path) -> Iterator[os.DirEntry[str]]:
    """One folder's entries sorted by name (so the walk is in sorted path order)."""
    try:
        with os.scandir(folder) as entries:
            return iter(sorted(entries, key=lambda e: e.name))
    except OSError as exc:
        raise UserError(f"cannot list folder {folder}: {exc.strerror or exc}") from exc


def _segment_regex(segment: str) -> str:
    """One path segment of a glob as a regex: `*`, `?` and `[...]` stay inside the segment,
    and, as in `glob`, a name starting with `.` is matched only by a pattern that does."""
    out = [] if segment.startswith(".") else [r"(?!\.)"]
    i = 0
    while i < len(segment):
        char = segment[i]
        end = segment.find("]", i + 2) if char == "[" else -1
        if char == "*":
            out.append(r"[^/]*")
        elif char == "?":
            out.append(r"[^/]")
        elif end > 0:
            body = segment[i + 1 : end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", r"\\") + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def glob_images(pattern: str) -> list[Path]:
    """Image files matching a glob pattern (`**` is any number of folders), sorted; like
    `glob.glob(pattern, recursive=True)`, but each real folder and file is visited once."""
    segments = pattern.split("/")
    fixed = 0
    while fixed < len(segments) - 1 and not has_glob_chars(segments[fixed]):
        fixed += 1
    root = Path("/".join(segments[:fixed]) or ("/" if pattern.startswith("/") else "."))
    rest = segments[fixed:]
    parts = [r"(?:(?!\.)[^/]*/)*" if s == "**" else _segment_regex(s) + "/" for s in rest]
    if rest[-1] == "**":
        parts[-1] = r"(?:(?!\.)[^/]*/)*(?!\.)[^/]*"
    else:
        parts[-1] = parts[-1][:-1]
    matcher = re.compile("".join(parts), re.DOTALL)
    depth = None if "**" in rest else len(rest) - 1
    walk = FolderWalk()
    return sorted(
        path
        for path, relative, identity in walk.files(root, depth, per_name=True)
        if matcher.fullmatch(relative) and is_image_name(path.name) and walk.first(identity)
    )
