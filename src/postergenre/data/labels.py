"""Read label files: CSVs in the formats users bring, and the article's folder-per-genre layout.

Every reader returns a `PosterCollection`; nothing here opens an image.
"""

from __future__ import annotations

import ast
import csv
import os
from collections.abc import Iterable
from pathlib import Path

from postergenre.data.formats import IMAGE_EXTENSIONS, is_image_name
from postergenre.data.records import PosterCollection, PosterRecord, normalise_split
from postergenre.errors import UserError

# Accepted id columns, in order of preference (matched case-insensitively).
ID_COLUMNS = ("id", "imdbid", "filename", "image", "path")
LABEL_COLUMNS = ("genre", "genres", "label", "labels")
SPLIT_COLUMN = "split"
# Label values that mean "no genre" rather than a genre called "N/A".
MISSING_LABELS = {"", "n/a", "na", "none", "nan", "null"}
_ONE_HOT_VALUES = {"0", "1", "0.0", "1.0", "true", "false"}


class PosterSourceMissing(UserError):
    """Neither or both of a label file and a folder layout were given."""


def parse_genres(value: str) -> tuple[str, ...]:
    """Parse one label cell: a Python-list string, `A|B`, `A, B` or a single genre.

    >>> parse_genres("['Comedy', 'Drama']")
    ('Comedy', 'Drama')
    >>> parse_genres("Action|N/A")
    ('Action',)
    """
    text = value.strip()
    if text.startswith("["):
        try:
            items = ast.literal_eval(text)
        except (ValueError, SyntaxError) as exc:
            raise ValueError(f"cannot parse label list {text!r}") from exc
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ValueError(f"label list must hold strings: {text!r}")
    elif "|" in text:
        items = text.split("|")
    elif "," in text:
        items = text.split(",")
    else:
        items = [text]
    genres: list[str] = []
    for item in items:
        name = item.strip()
        if name.lower() not in MISSING_LABELS and name not in genres:
            genres.append(name)
    return tuple(genres)


def _find_column(fieldnames: Iterable[str], candidates: Iterable[str]) -> str | None:
    by_lower = {name.strip().lower(): name for name in fieldnames}
    for candidate in candidates:
        if candidate in by_lower:
            return by_lower[candidate]
    return None


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise UserError(f"label file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            fieldnames = list(reader.fieldnames or [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path} is not a readable CSV file: {exc}") from exc
    if not fieldnames:
        raise UserError(f"{path} is empty: expected a header row")
    return fieldnames, rows


def _one_hot_columns(
    fieldnames: list[str], rows: list[dict[str, str]], skip: set[str]
) -> list[str]:
    columns = []
    for name in fieldnames:
        if name in skip or name.strip().lower() in MISSING_LABELS:
            continue
        values = {(row.get(name) or "").strip().lower() for row in rows}
        values.discard("")
        if values and values <= _ONE_HOT_VALUES:
            columns.append(name)
    return columns


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "1.0", "true"}


class ImageFinder:
    """Find a poster file by id, with or without its extension, in one folder (scanned once)."""

    def __init__(self, folder: Path):
        if not folder.is_dir():
            raise UserError(f"image folder not found: {folder}")
        self.folder = folder
        self._by_name: dict[str, Path] = {}
        self._by_stem: dict[str, Path] = {}
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file() and is_image_name(entry.name):
                    path = Path(entry.path)
                    self._by_name[entry.name] = path
                    self._by_stem.setdefault(path.stem, path)

    def find(self, image_id: str) -> Path | None:
        """The file for `image_id` (a bare id, a file name, or a path relative to the folder)."""
        key = image_id.strip()
        if key in self._by_name:
            return self._by_name[key]
        if key in self._by_stem:
            return self._by_stem[key]
        candidate = Path(key) if Path(key).is_absolute() else self.folder / key
        if candidate.is_file():
            return candidate
        for ext in IMAGE_EXTENSIONS:
            for suffix in (ext, ext.upper()):
                with_ext = candidate.with_name(candidate.name + suffix)
                if with_ext.is_file():
                    return with_ext
        return None


def read_splits_csv(path: Path) -> dict[str, str]:
    """Read an `id,split` file into {id: split}."""
    fieldnames, rows = _read_csv(path)
    id_col = _find_column(fieldnames, ID_COLUMNS)
    split_col = _find_column(fieldnames, (SPLIT_COLUMN,))
    if id_col is None or split_col is None:
        raise UserError(f"{path}: a splits file needs an id column and a 'split' column")
    splits: dict[str, str] = {}
    for row in rows:
        split = normalise_split(row.get(split_col))
        if split is not None:
            splits[_strip_id(row.get(id_col) or "")] = split
    return splits


def _strip_id(value: str) -> str:
    """Ids match with or without an image extension (`tt01.jpg` and `tt01` are one poster)."""
    text = value.strip()
    return text[: -len(Path(text).suffix)] if is_image_name(text) else text


def read_label_csv(
    labels: Path, images: Path | None = None, splits: Path | None = None
) -> PosterCollection:
    """Read a CSV of poster ids and genres.

    Images are looked up in `images`, else beside the CSV in `images/`, else beside the CSV.
    Splits come from a `split` column or from a separate `splits` CSV (`id,split`).
    """
    labels = Path(labels)
    fieldnames, rows = _read_csv(labels)
    id_col = _find_column(fieldnames, ID_COLUMNS)
    if id_col is None:
        raise UserError(
            f"{labels}: no id column; expected one of Id, id, imdbId, filename, image, path "
            f"(found {', '.join(fieldnames)})"
        )
    label_col = _find_column(fieldnames, LABEL_COLUMNS)
    split_col = _find_column(fieldnames, (SPLIT_COLUMN,))
    one_hot: list[str] = []
    if label_col is None:
        one_hot = _one_hot_columns(fieldnames, rows, {id_col, split_col or ""})
        if not one_hot:
            raise UserError(
                f"{labels}: no label column (Genre, genres, label, labels) "
                "and no one-hot genre columns"
            )
    if images is None:
        images = labels.parent / "images" if (labels.parent / "images").is_dir() else labels.parent
    finder = ImageFinder(Path(images))
    split_map = read_splits_csv(Path(splits)) if splits is not None else None

    merged: dict[str, PosterRecord] = {}
    duplicates = conflicts = unparsable = 0
    missing_images: set[str] = set()
    warnings: list[str] = []
    for line_no, row in enumerate(rows, start=2):
        raw_id = (row.get(id_col) or "").strip()
        if not raw_id:
            continue
        if label_col is not None:
            try:
                genres = parse_genres(row.get(label_col) or "")
            except ValueError as exc:
                unparsable += 1
                warnings.append(f"{labels}:{line_no}: {exc}; row skipped")
                continue
        else:
            genres = tuple(col.strip() for col in one_hot if _truthy(row.get(col)))
        poster_id = _strip_id(raw_id)
        if split_map is not None:
            split = split_map.get(poster_id)
        else:
            split = normalise_split(row.get(split_col)) if split_col else None
        if poster_id in merged:
            previous = merged[poster_id]
            duplicates += 1
            if set(previous.genres) != set(genres):
                conflicts += 1
                union = previous.genres + tuple(g for g in genres if g not in previous.genres)
                merged[poster_id] = PosterRecord(poster_id, previous.path, union, previous.split)
            continue
        path = finder.find(raw_id)
        if path is None:
            missing_images.add(poster_id)
            continue
        merged[poster_id] = PosterRecord(poster_id, path, genres, split)

    if duplicates:
        warnings.append(
            f"{duplicates} duplicate id rows merged ({conflicts} with differing genres, united)"
        )
    if missing_images:
        warnings.append(f"{len(missing_images)} ids have no image in {images}; skipped")
    if unparsable:
        warnings.append(f"{unparsable} rows with unreadable labels skipped")
    no_split = sum(r.split is None for r in merged.values()) if split_map is not None else 0
    if no_split:
        warnings.append(f"{no_split} posters are not in {splits}; they belong to no split")
    if not merged:
        raise UserError(f"{labels}: no poster found (images looked up in {images})")
    return PosterCollection(list(merged.values()), str(labels), warnings)


def read_folder(root: Path) -> PosterCollection:
    """Read the article's layout: `ROOT/<Genre>/*` or `ROOT/<split>/<Genre>/*`.

    Split folders may be named train/val/test or Training/Validation/Test, in any case.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"folder not found: {root}")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise UserError(
            f"{root} has no sub-folders; expected ROOT/<Genre>/ or ROOT/<split>/<Genre>/"
        )
    split_names = {normalise_split(p.name) for p in subdirs}
    if split_names <= {"train", "val", "test"}:
        groups = [(normalise_split(d.name), g) for d in subdirs for g in sorted(d.iterdir())]
    else:
        groups = [(None, d) for d in subdirs]
    records: list[PosterRecord] = []
    for split, genre_dir in groups:
        if not genre_dir.is_dir() or genre_dir.name.startswith("."):
            continue
        for path in sorted(genre_dir.iterdir()):
            if path.is_file() and is_image_name(path.name):
                prefix = f"{split}/" if split else ""
                record_id = f"{prefix}{genre_dir.name}/{path.stem}"
                records.append(PosterRecord(record_id, path, (genre_dir.name,), split))
    if not records:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return PosterCollection(records, str(root))


def load_posters(
    *,
    labels: Path | None = None,
    images: Path | None = None,
    splits: Path | None = None,
    folder: Path | None = None,
) -> PosterCollection:
    """Read posters from a label CSV (`labels`, `images`, `splits`) or a genre folder layout."""
    if (labels is None) == (folder is None):
        raise PosterSourceMissing("give exactly one source of posters: a label CSV or a folder")
    if folder is not None:
        collection = read_folder(Path(folder))
        if splits is not None:
            split_map = read_splits_csv(Path(splits))
            collection.records = [
                PosterRecord(r.id, r.path, r.genres, split_map.get(r.path.stem, r.split))
                for r in collection.records
            ]
        return collection
    assert labels is not None
    return read_label_csv(Path(labels), images, splits)
