"""What a user names as posters: files, folders, glob patterns, label CSVs and text files of
paths, turned into poster file paths, lazily.

One rule for every command and the Python API: a file named alone is "one poster" (an error if
it cannot be read); anything else is a collection, in which unreadable files are skipped and
reported with their reason.

A SOURCE is, in this order: a folder (searched recursively for image files, in sorted order,
through links, each real folder and file once: see `folder_walk`); an existing file, which is
a label CSV when it ends in .csv or .tsv (its id column names the posters, found the way
`train --labels` finds them: in CSV_DIR/images, else CSV_DIR), a text file of paths when it
ends in .txt or .lst (one path a line, relative ones resolved against the text file's folder;
blank lines and `#` comments ignored), and otherwise one poster; or a glob pattern. A CSV row,
a line, or a link in a folder whose file cannot be reached is still yielded, so reading it
reports why ("file not found", "is a symlink loop", "file name too long") like any other
unreadable poster.

Memory: a folder is walked one directory listing at a time (remembering each folder's and
file's device and inode), a text file and a CSV one line at a time; a glob's matches are listed
(and sorted) before they are read, and a label CSV keeps an index of its image folder's file
names (see `ImageFinder`).
"""

from __future__ import annotations

import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from postergenre import console
from postergenre.data.csv_files import CsvFile, id_column, open_csv
from postergenre.data.folder_walk import FolderWalk, glob_images, has_glob_chars
from postergenre.data.image_finder import ImageFinder, default_image_folder
from postergenre.errors import UserError
from postergenre.paths import shown, unreadable_reason, user_path

LABEL_SUFFIXES = (".csv", ".tsv")
LIST_SUFFIXES = (".txt", ".lst")
KINDS = ("file", "folder", "glob", "labels", "list")


@dataclass(frozen=True)
class PosterFiles:
    """The files to read, and whether the user named exactly one poster."""

    paths: list[Path]
    single: bool


def _listed_path(text: str) -> Path:
    """One line of a list as a path; a `~user` with no such user stays as written, so that
    reading it reports the file as not found, like any other line naming nothing."""
    try:
        return user_path(text)
    except UserError:
        return Path(text)


@dataclass
class PosterSource:
    """One SOURCE as the user named it, its `kind` (see `KINDS`), and its posters when
    iterated (lazily; see the module docstring)."""

    text: str
    kind: str
    path: Path
    _csv: CsvFile | None = field(default=None, repr=False)
    _finder: ImageFinder | None = field(default=None, repr=False)

    def __iter__(self) -> Iterator[Path]:
        found = False
        for path in self._paths():
            found = True
            yield path
        if not found:
            raise UserError(self._empty_message())

    def _paths(self) -> Iterator[Path]:
        if self.kind == "file":
            yield self.path
        elif self.kind == "folder":
            yield from FolderWalk().images(self.path)
        elif self.kind == "glob":
            yield from glob_images(str(self.path))
        elif self.kind == "list":
            yield from self._listed()
        else:
            yield from self._labelled()

    def _listed(self) -> Iterator[Path]:
        base = self.path.parent
        try:
            with self.path.open(encoding="utf-8-sig") as handle:
                for line in handle:
                    text = line.strip()
                    if text and not text.startswith("#"):
                        path = _listed_path(text)
                        yield path if path.is_absolute() else base / path
        except UnicodeDecodeError as exc:
            raise UserError(f"{self.path} is not a UTF-8 text file of paths") from exc

    def _labelled(self) -> Iterator[Path]:
        assert self._csv is not None
        id_col = id_column(self._csv)
        if self._finder is None:  # scanned once, even when the source is read twice
            self._finder = ImageFinder(default_image_folder(self.path))
        for row in self._csv.rows():
            raw_id = (row.get(id_col) or "").strip()
            if raw_id:
                yield self._finder.find(raw_id) or self._finder.folder / raw_id

    def _empty_message(self) -> str:
        if self.kind == "folder":
            return f"no images found in folder {self.path}"
        if self.kind == "glob":
            return f"no images match {self.text!r}"
        return f"{self.path} names no posters"


def poster_source(source: str | Path) -> PosterSource:
    """Classify one SOURCE (see the module docstring); a missing file, or a label CSV without
    an id column, is a `UserError` now, an empty folder or list when it is read."""
    text = str(source)
    path = user_path(source)
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError) as exc:
        missing = isinstance(exc, FileNotFoundError)
        if missing and has_glob_chars(text):
            return PosterSource(text, "glob", path)
        if missing and not path.is_symlink():
            raise UserError(f"no such file: {text}") from None
        raise UserError(f"{shown(text)}: {unreadable_reason(path, exc)}") from None
    if stat.S_ISDIR(mode):
        return PosterSource(text, "folder", path)
    suffix = path.suffix.lower()
    if suffix in LIST_SUFFIXES:
        return PosterSource(text, "list", path)
    if suffix in LABEL_SUFFIXES:
        csv_file = open_csv(path)
        id_column(csv_file)  # refused now, not when it is read
        if csv_file.note:
            console.warn(csv_file.note)
        return PosterSource(text, "labels", path, csv_file)
    return PosterSource(text, "file", path)


@dataclass
class PosterSources:
    """Several SOURCEs read one after another: iterate for the poster paths (lazily)."""

    sources: list[PosterSource]

    def __iter__(self) -> Iterator[Path]:
        for source in self.sources:
            yield from source

    def count(self) -> int:
        """How many paths iterating yields (one pass over every source: it also finds an
        empty folder or a glob that matches nothing before any work starts)."""
        return sum(1 for _ in self)

    @property
    def single(self) -> bool:
        """Whether the user named exactly one poster file."""
        return len(self.sources) == 1 and self.sources[0].kind == "file"


def open_sources(sources: str | Path | Sequence[str | Path] | PosterSources) -> PosterSources:
    """Classify every SOURCE (see `poster_source`); nothing is listed yet."""
    if isinstance(sources, PosterSources):
        return sources
    if isinstance(sources, str | Path):
        sources = [sources]
    if not sources:
        raise UserError("no posters given")
    return PosterSources([poster_source(s) for s in sources])


def find_posters(sources: str | Path | Sequence[str | Path]) -> PosterFiles:
    """Every poster path of `sources` as a list (see `open_sources`).

    A missing file, an empty folder or a pattern that matches nothing is a `UserError`.
    """
    opened = open_sources(sources)
    return PosterFiles(list(opened), single=opened.single)
