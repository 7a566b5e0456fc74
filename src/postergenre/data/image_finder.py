"""Finding a label file's poster images by id: one listing of the image folder answers every
plain id (millions of ids without an image cost no `stat` each), and ids that find nothing are
counted in a few bytes each and named by a small sample."""

from __future__ import annotations

import os
import re
from array import array
from pathlib import Path

import numpy as np

from postergenre.data.formats import IMAGE_EXTENSIONS, is_image_name
from postergenre.errors import UserError

_IMDB_ID = re.compile(r"(?:tt)?0*(\d+)", re.IGNORECASE)
_SUFFIXES = tuple(s for ext in IMAGE_EXTENSIONS for s in (ext, ext.upper()))


def strip_id(value: str) -> str:
    """Ids match with or without an image extension (`tt01.jpg` and `tt01` are one poster)."""
    text = value.strip()
    return text[: -len(Path(text).suffix)] if is_image_name(text) else text


def match_key(poster_id: str) -> str:
    """The key ids are matched by: an IMDb id with or without `tt` and leading zeros is one
    poster (`114709`, `0114709`, `tt0114709`); any other id is itself."""
    found = _IMDB_ID.fullmatch(poster_id.strip())
    return f"tt{int(found.group(1)):07d}" if found else poster_id.strip()


def default_image_folder(labels: Path) -> Path:
    """Where a label CSV's posters are when no folder is named: `images/` beside it, if it
    exists, else the CSV's own folder."""
    images = labels.parent / "images"
    return images if images.is_dir() else labels.parent


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:  # a link loop: not a file this folder holds
        return False


class ImageFinder:
    """Find a poster file by id, with or without its extension, in one folder (listed once)."""

    def __init__(self, folder: Path):
        if not folder.is_dir():
            raise UserError(f"image folder not found: {folder}")
        self.folder = folder
        self._by_name: dict[str, Path] = {}
        self._by_stem: dict[str, Path] = {}
        self._by_key: dict[str, Path] = {}  # ids that lost their `tt` or leading zeros
        self._other_files: set[str] = set()  # named by an id, they are found (and refused)
        with os.scandir(folder) as entries:
            for entry in entries:
                if not _is_file(entry):
                    continue
                if not is_image_name(entry.name):
                    self._other_files.add(entry.name)
                    continue
                path = Path(entry.path)
                self._by_name[entry.name] = path
                self._by_stem.setdefault(path.stem, path)
                self._by_key.setdefault(match_key(path.stem), path)

    def find(self, image_id: str) -> Path | None:
        """The file for `image_id` (a bare id, a file name, or a path relative to the folder)."""
        key = image_id.strip()
        found = self._by_name.get(key) or self._by_stem.get(key)
        if found is None:
            is_name = "/" not in key and os.sep not in key and key not in (".", "..")
            found = self._find_name(key) if is_name else self._find_path(key)
        return found or self._by_key.get(match_key(strip_id(key)))

    def _find_name(self, name: str) -> Path | None:
        """A file name, with or without its extension, from the folder's listing alone."""
        if name in self._other_files:
            return self.folder / name
        return next(
            (self._by_name[s] for s in (name + x for x in _SUFFIXES) if s in self._by_name), None
        )

    def _find_path(self, key: str) -> Path | None:
        """A path (absolute, or relative to the folder), with or without its extension; one
        the file system cannot hold (too long, a NUL byte) is no file."""
        candidate = Path(key) if Path(key).is_absolute() else self.folder / key
        try:
            for path in [candidate] + [candidate.with_name(candidate.name + s) for s in _SUFFIXES]:
                if path.is_file():
                    return path
        except (OSError, ValueError):
            return None
        return None


class MissingIds:
    """Ids without an image: each counted once, in 8 bytes (its hash), and the first few kept
    to name them; memory stays bounded for millions of ids."""

    SAMPLE = 3
    _SHOWN_CHARS = 40

    def __init__(self) -> None:
        self._hashes = array("q")
        self.sample: list[str] = []

    def add(self, key: str) -> None:
        """Count one id (again, when it was counted before: `count` tells them apart)."""
        self._hashes.append(hash(key))
        if len(self.sample) < self.SAMPLE and key not in self.sample:
            self.sample.append(key)

    def count(self) -> int:
        """How many different ids were added."""
        return len(np.unique(np.frombuffer(self._hashes, dtype=np.int64))) if self._hashes else 0

    def message(self, folder: Path) -> str | None:
        """One line naming the count and the first few ids; None when there are none."""
        count = self.count()
        if not count:
            return None
        shown = [
            s if len(s) <= self._SHOWN_CHARS else s[: self._SHOWN_CHARS] + "..."
            for s in self.sample
        ]
        more = ", ..." if count > len(shown) else ""
        return f"{count} ids have no image in {folder} (e.g. {', '.join(shown)}{more}); skipped"
