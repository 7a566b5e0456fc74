"""Read label files: CSVs in the formats users bring, and the article's folder-per-genre layout.

Every reader returns a `PosterCollection`; nothing here opens an image.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from postergenre.data.csv_files import ID_COLUMNS, CsvFile, find_column, id_column, open_csv
from postergenre.data.folder_walk import FolderWalk
from postergenre.data.formats import IMAGE_EXTENSIONS
from postergenre.data.image_finder import (
    ImageFinder,
    MissingIds,
    default_image_folder,
    match_key,
    strip_id,
)
from postergenre.data.records import PosterCollection, PosterRecord, normalise_split
from postergenre.errors import UserError
from postergenre.paths import user_path

LABEL_COLUMNS = ("genre", "genres", "label", "labels")
SPLIT_COLUMN = "split"
# A corrections file (written by the review page) names each poster's file in `path` and says
# in `reviewed` whether a person accepted or changed its genres.
PATH_COLUMN = "path"
REVIEWED_COLUMN = "reviewed"
# Label values that mean "no genre" rather than a genre called "N/A".
MISSING_LABELS = {"", "n/a", "na", "none", "nan", "null"}
_ONE_HOT_VALUES = {"0", "1", "0.0", "1.0", "true", "false"}


class NothingReviewed(UserError):
    """A corrections file in which no row is marked reviewed."""

    hint = "accept or correct some posters first (their rows get reviewed = 1)"


class PosterSourceMissing(UserError):
    """Neither or both of a label file and a folder layout were given."""

    hint = "use --labels CSV or --folder DIR"


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


def _one_hot_columns(csv_file: CsvFile, skip: set[str]) -> list[str]:
    """Columns whose every value is 0/1 (or empty, or true/false), found in one pass."""
    candidates = {
        name
        for name in csv_file.fieldnames
        if name not in skip and name.strip().lower() not in MISSING_LABELS
    }
    seen: set[str] = set()
    for row in csv_file.rows():
        for name in list(candidates):
            value = (row.get(name) or "").strip().lower()
            if not value:
                continue
            if value not in _ONE_HOT_VALUES:
                candidates.discard(name)
            else:
                seen.add(name)
        if not candidates:
            break
    return [name for name in csv_file.fieldnames if name in candidates and name in seen]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "1.0", "true"}


class PosterLocator:
    """Where a label row's poster is. By default its id is looked up in the image folder
    (listed once, on first use). When the file also has a `path` column beside its id column,
    that path (absolute, or relative to the label file's folder) locates the poster, and the
    id is looked up in the image folder only when the path holds no file (posters moved)."""

    def __init__(self, labels: Path, images: Path, path_column: str | None):
        self.labels_folder = labels.parent
        self.images = images
        self.path_column = path_column
        # Without paths every row needs the folder: listed (or refused as missing) up front.
        self._finder = ImageFinder(images) if path_column is None else None

    def find(self, raw_id: str, row: dict[str, str]) -> Path | None:
        """The poster file of one row, or None when there is none."""
        if self.path_column is not None:
            given = (row.get(self.path_column) or "").strip()
            if given:
                found = self._by_path(given)
                if found is not None:
                    return found
        if self._finder is None:
            self._finder = ImageFinder(self.images)
        return self._finder.find(raw_id)

    def _by_path(self, given: str) -> Path | None:
        try:
            path = user_path(given)
            path = path if path.is_absolute() else self.labels_folder / path
            return path if path.is_file() else None
        except (OSError, ValueError, UserError):  # a NUL byte, a name too long, ~nosuchuser
            return None


def read_splits_csv(
    path: str | Path, max_bytes: int | None = None, warnings: list[str] | None = None
) -> dict[str, str]:
    """Read an `id,split` file into {match key of the id: split} (see `match_key`); what the
    user should know about how it was read is appended to `warnings`."""
    csv_file = open_csv(path, max_bytes)
    if csv_file.note and warnings is not None:
        warnings.append(csv_file.note)
    id_col = find_column(csv_file.fieldnames, ID_COLUMNS)
    split_col = find_column(csv_file.fieldnames, (SPLIT_COLUMN,))
    if id_col is None or split_col is None:
        raise UserError(f"{path}: a splits file needs an id column and a 'split' column")
    splits: dict[str, str] = {}
    for row in csv_file.rows():
        split = normalise_split(row.get(split_col))
        if split is not None:
            splits[match_key(strip_id(row.get(id_col) or ""))] = split
    return splits


def read_label_csv(
    labels: str | Path,
    images: str | Path | None = None,
    splits: str | Path | None = None,
    max_bytes: int | None = None,
) -> PosterCollection:
    """Read a CSV of poster ids and genres (streamed; see `open_csv` for what is accepted).

    Images are looked up in `images`, else beside the CSV in `images/`, else beside the CSV.
    Splits come from a `split` column or from a separate `splits` CSV (`id,split`). IMDb ids
    match with or without `tt` and leading zeros.
    """
    labels = user_path(labels)
    csv_file = open_csv(labels, max_bytes)
    fieldnames = csv_file.fieldnames
    id_col = id_column(csv_file)
    label_col = find_column(fieldnames, LABEL_COLUMNS)
    split_col = find_column(fieldnames, (SPLIT_COLUMN,))
    one_hot: list[str] = []
    if label_col is None:
        one_hot = _one_hot_columns(csv_file, {id_col, split_col or ""})
        if not one_hot:
            raise UserError(
                f"{labels}: no label column (Genre, genres, label, labels) "
                "and no one-hot genre columns"
            )
    images = default_image_folder(labels) if images is None else user_path(images)
    path_col = find_column(fieldnames, (PATH_COLUMN,))
    reviewed_col = find_column(fieldnames, (REVIEWED_COLUMN,))
    locator = PosterLocator(labels, images, path_col if path_col != id_col else None)
    warnings = [csv_file.note] if csv_file.note else []
    split_map = None if splits is None else read_splits_csv(splits, max_bytes, warnings)

    merged: dict[str, PosterRecord] = {}
    duplicates = conflicts = unparsable = not_reviewed = 0
    missing = MissingIds()
    for line_no, row in enumerate(csv_file.rows(), start=2):
        raw_id = (row.get(id_col) or "").strip()
        if not raw_id:
            continue
        if reviewed_col is not None and not _truthy(row.get(reviewed_col)):
            not_reviewed += 1
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
        poster_id = strip_id(raw_id)
        key = match_key(poster_id)
        if split_map is not None:
            split = split_map.get(key)
        else:
            split = normalise_split(row.get(split_col)) if split_col else None
        if key in merged:
            previous = merged[key]
            duplicates += 1
            if set(previous.genres) != set(genres):
                conflicts += 1
                union = previous.genres + tuple(g for g in genres if g not in previous.genres)
                merged[key] = PosterRecord(previous.id, previous.path, union, previous.split)
            continue
        path = locator.find(raw_id, row)
        if path is None:
            missing.add(key)
            continue
        merged[key] = PosterRecord(poster_id, path, genres, split)

    if not_reviewed:
        warnings.append(
            f"{labels}: {not_reviewed:,} {'row' if not_reviewed == 1 else 'rows'} not reviewed "
            f"({reviewed_col} is not 1) left out"
        )
    if duplicates:
        warnings.append(
            f"{duplicates} duplicate id rows merged ({conflicts} with differing genres, united)"
        )
    missing_note = missing.message(images)
    warnings += [missing_note] if missing_note else []
    if unparsable:
        warnings.append(f"{unparsable} rows with unreadable labels skipped")
    no_split = sum(r.split is None for r in merged.values()) if split_map is not None else 0
    if no_split:
        warnings.append(f"{no_split} posters are not in {splits}; they belong to no split")
    if not merged and not_reviewed and not missing.count():
        raise NothingReviewed(
            f"{labels}: none of its {not_reviewed:,} rows is reviewed ({reviewed_col} = 1)"
        )
    if not merged:
        raise UserError(f"{labels}: no poster found (images looked up in {images})")
    records, note = unify_genre_spelling(list(merged.values()))
    warnings += [note] if note else []
    return PosterCollection(records, str(labels), warnings)


def _fold(genre: str) -> str:
    return " ".join(genre.split()).casefold()


def unify_genre_spelling(records: list[PosterRecord]) -> tuple[list[PosterRecord], str | None]:
    """Genre names that differ only in case or spaces ("comedy", "Comedy ", "COMEDY") become
    one genre, spelled as most posters spell it; returns the records and a note saying so."""
    counts = Counter(g for r in records for g in r.genres)
    spellings: dict[str, list[str]] = {}
    for genre, _ in counts.most_common():
        spellings.setdefault(_fold(genre), []).append(genre)
    merged = {k: names for k, names in spellings.items() if len(names) > 1}
    if not merged:
        return records, None
    canonical = {name: names[0] for names in merged.values() for name in names}
    out = []
    for r in records:
        genres = tuple(dict.fromkeys(canonical.get(g, g) for g in r.genres))
        out.append(PosterRecord(r.id, r.path, genres, r.split) if genres != r.genres else r)
    listed = "; ".join(
        f"{', '.join(map(repr, names[1:]))} -> {names[0]!r}" for names in merged.values()
    )
    return out, f"genre names differing only in case or spaces were merged: {listed}"


def _subfolders(parent: Path) -> list[Path]:
    """The folders in `parent` (links to folders too), sorted, hidden ones left out."""
    return sorted(p for p in parent.iterdir() if not p.name.startswith(".") and p.is_dir())


def read_folder(root: str | Path) -> PosterCollection:
    """Read the article's layout: `ROOT/<Genre>/*` or `ROOT/<split>/<Genre>/*`.

    Split folders may be named train/val/test or Training/Validation/Test, in any case. A
    folder reached twice (through a link) is read once, and a link back up is no genre.
    """
    root = user_path(root)
    if not root.is_dir():
        raise UserError(f"folder not found: {root}")
    subdirs = _subfolders(root)
    if not subdirs:
        raise UserError(
            f"{root} has no sub-folders; expected ROOT/<Genre>/ or ROOT/<split>/<Genre>/"
        )
    split_names = {normalise_split(p.name) for p in subdirs}
    if split_names <= {"train", "val", "test"}:
        groups = [(normalise_split(d.name), g) for d in subdirs for g in _subfolders(d)]
    else:
        groups = [(None, d) for d in subdirs]
    walk = FolderWalk()
    walk.first_visit(root)
    records: list[PosterRecord] = []
    for split, genre_dir in groups:
        prefix = f"{split}/" if split else ""
        for path in walk.images(genre_dir, max_depth=0):
            record_id = f"{prefix}{genre_dir.name}/{path.stem}"
            records.append(PosterRecord(record_id, path, (genre_dir.name,), split))
    if not records:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    records, note = unify_genre_spelling(records)
    return PosterCollection(records, str(root), [note] if note else [])


def load_posters(
    *,
    labels: str | Path | None = None,
    images: str | Path | None = None,
    splits: str | Path | None = None,
    folder: str | Path | None = None,
    max_label_bytes: int | None = None,
) -> PosterCollection:
    """Read posters from a label CSV (`labels`, `images`, `splits`) or a genre folder layout.
    Label and split files over `max_label_bytes` (default 1 GiB, or
    `$POSTERGENRE_MAX_LABELS_MB`) are refused."""
    if (labels is None) == (folder is None):
        raise PosterSourceMissing("give exactly one source of posters: a label CSV or a folder")
    if folder is not None:
        collection = read_folder(folder)
        if splits is not None:
            split_map = read_splits_csv(splits, max_label_bytes, collection.warnings)
            collection.records = [
                PosterRecord(r.id, r.path, r.genres, split_map.get(match_key(r.path.stem), r.split))
                for r in collection.records
            ]
        return collection
    assert labels is not None
    return read_label_csv(labels, images, splits, max_label_bytes)
