"""What a user names as posters: files, folders and glob patterns, turned into a file list.

One rule for every command and the Python API: a file named alone is "one poster" (an error if
it cannot be read); anything else is a collection, in which unreadable files are skipped and
reported with their reason.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from postergenre.data.formats import is_image_name
from postergenre.errors import UserError

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class PosterFiles:
    """The files to read, and whether the user named exactly one poster."""

    paths: list[Path]
    single: bool


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_name(p.name))


def find_posters(sources: str | Path | Sequence[str | Path]) -> PosterFiles:
    """Expand files, folders (searched recursively for image files) and glob patterns.

    A missing file, an empty folder or a pattern that matches nothing is a `UserError`.
    """
    if isinstance(sources, str | Path):
        sources = [sources]
    paths: list[Path] = []
    named_files = 0
    for source in sources:
        path = Path(source).expanduser()
        text = str(source)
        if path.is_dir():
            found = _images_in(path)
            if not found:
                raise UserError(f"no images found in folder {path}")
            paths += found
        elif path.exists():
            paths.append(path)
            named_files += 1
        elif _GLOB_CHARS & set(text):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            found = [m for m in matches if m.is_file() and is_image_name(m.name)]
            if not found:
                raise UserError(f"no images match {text!r}")
            paths += found
        else:
            raise UserError(f"no such file: {text}")
    if not paths:
        raise UserError("no posters given")
    return PosterFiles(paths, single=len(paths) == 1 and named_files == 1)
