"""Read label files: CSVs in the formats users bring, and the article's folder-per-genre layout.

Every reader returns a `PosterCollection`; nothing here opens an image.
"""

from __future__ import annotations

import ast
import codecs
import csv
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from postergenre.data.formats import IMAGE_EXTENSIONS, is_image_name
from postergenre.data.records import PosterCollection, PosterRecord, normalise_split
from postergenre.errors import UserError

# Accepted id columns, in order of preference, spelled as messages name them; they are matched
# case-insensitively, by ID_COLUMNS.
ID_COLUMN_NAMES = ("Id", "id", "imdbId", "filename", "image", "path")
ID_COLUMNS = tuple(dict.fromkeys(name.lower() for name in ID_COLUMN_NAMES))
LABEL_COLUMNS = ("genre", "genres", "label", "labels")
SPLIT_COLUMN = "split"
# Label values that mean "no genre" rather than a genre called "N/A".
MISSING_LABELS = {"", "n/a", "na", "none", "nan", "null"}
_ONE_HOT_VALUES = {"0", "1", "0.0", "1.0", "true", "false"}


class PosterSourceMissing(UserError):
    """Neither or both of a label file and a folder layout were given."""

    hint = "use --labels CSV or --folder DIR"


class LabelFileTooLarge(UserError):
    """A label file over the size limit."""

    hint = "or pass --max-labels-mb"


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


# A label file is text with one row per poster: even 10 million posters fit in well under this.
MAX_LABEL_BYTES = 1024 * 1024 * 1024
LABELS_LIMIT_ENV = "POSTERGENRE_MAX_LABELS_MB"
# The header must end within this many bytes (a binary or one-line file is refused early).
HEADER_BYTES = 64 * 1024
DELIMITERS = (",", ";", "\t")


def label_limit_bytes(megabytes: float | None) -> int | None:
    """A label-file limit given in megabytes (`--max-labels-mb`, `$POSTERGENRE_MAX_LABELS_MB`;
    MiB) in bytes; None stays None (the default limit)."""
    return None if megabytes is None else int(megabytes * 1024 * 1024)


def _label_limit(max_bytes: int | None) -> int:
    if max_bytes is not None:
        return max_bytes
    env = os.environ.get(LABELS_LIMIT_ENV)
    try:
        limit = label_limit_bytes(float(env)) if env else None
    except ValueError:
        raise UserError(f"{LABELS_LIMIT_ENV}={env!r} is not a number of megabytes") from None
    return MAX_LABEL_BYTES if limit is None else limit


def _encoding(path: Path) -> str:
    """UTF-8 (with or without a byte-order mark) when every byte decodes, else Latin-1 (the
    Kaggle list's encoding). Decoded incrementally: memory stays flat for any file size."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as handle:
        try:
            for block in iter(lambda: handle.read(1 << 20), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "latin-1"
    return "utf-8-sig"


@dataclass
class CsvFile:
    """A label CSV checked up front (size, header, encoding, delimiter); `rows()` streams it."""

    path: Path
    fieldnames: list[str]
    encoding: str
    delimiter: str

    def rows(self) -> Iterator[dict[str, str]]:
        """Each data row as {column: value}, read lazily."""
        try:
            with self.path.open(newline="", encoding=self.encoding) as handle:
                reader = csv.DictReader(handle, delimiter=self.delimiter)
                yield from reader
        except csv.Error as exc:
            raise UserError(f"{self.path} is not a readable CSV file: {exc}") from exc


def _read_csv(path: Path, max_bytes: int | None = None) -> CsvFile:
    """Open a label CSV: refuse it early if it is too large or has no header line, detect its
    encoding (UTF-8, UTF-8 with BOM, Latin-1) and delimiter (comma, semicolon, tab)."""
    if not path.is_file():
        raise UserError(f"label file not found: {path}")
    size, limit = path.stat().st_size, _label_limit(max_bytes)
    if size > limit:
        raise LabelFileTooLarge(
            f"{path} is {size / 1e6:,.0f} MB, over the {limit / 1e6:,.0f} MB limit for label "
            f"files (raise it with {LABELS_LIMIT_ENV})"
        )
    with path.open("rb") as handle:
        head = handle.read(HEADER_BYTES)
    if not head.strip():
        raise UserError(f"{path} is empty: expected a header row")
    if b"\0" in head:
        raise UserError(f"{path} is not a CSV file (it holds binary data)")
    if b"\n" not in head and size > len(head):
        raise UserError(f"{path} is not a CSV file (no header line in its first 64 KB)")
    encoding = _encoding(path)
    first_line = head.split(b"\n", 1)[0].decode(encoding, errors="replace")
    delimiter = max(DELIMITERS, key=first_line.count)
    fieldnames = next(csv.reader([first_line.strip("\r")], delimiter=delimiter), [])
    if not [f for f in fieldnames if f.strip()]:
        raise UserError(f"{path} is empty: expected a header row")
    fieldnames = [f.lstrip("\ufeff") for f in fieldnames]
    return CsvFile(path, fieldnames, encoding, delimiter)


def open_csv(path: Path, max_bytes: int | None = None) -> CsvFile:
    """Open any user CSV the way label files are opened (size limit, header, encoding and
    delimiter detection; see `_read_csv`); stream its rows with `CsvFile.rows()`."""
    return _read_csv(Path(path), max_bytes)


def find_column(fieldnames: Iterable[str], candidates: Iterable[str]) -> str | None:
    """The column named by the first of `candidates` (lower case) that `fieldnames` holds,
    matched case-insensitively and ignoring surrounding spaces."""
    by_lower = {name.strip().lower(): name for name in fieldnames}
    for candidate in candidates:
        if candidate in by_lower:
            return by_lower[candidate]
    return None


def id_column(csv_file: CsvFile) -> str:
    """The column of poster ids (see `ID_COLUMN_NAMES`); a `UserError` when there is none."""
    found = find_column(csv_file.fieldnames, ID_COLUMNS)
    if found is None:
        raise UserError(
            f"{csv_file.path}: no id column; expected one of {', '.join(ID_COLUMN_NAMES)} "
            f"(found {', '.join(csv_file.fieldnames)})"
        )
    return found


def default_image_folder(labels: Path) -> Path:
    """Where a label CSV's posters are when no folder is named: `images/` beside it, if it
    exists, else the CSV's own folder."""
    images = labels.parent / "images"
    return images if images.is_dir() else labels.parent


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


class ImageFinder:
    """Find a poster file by id, with or without its extension, in one folder (scanned once)."""

    def __init__(self, folder: Path):
        if not folder.is_dir():
            raise UserError(f"image folder not found: {folder}")
        self.folder = folder
        self._by_name: dict[str, Path] = {}
        self._by_stem: dict[str, Path] = {}
        self._by_key: dict[str, Path] = {}  # ids that lost their `tt` or leading zeros
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file() and is_image_name(entry.name):
                    path = Path(entry.path)
                    self._by_name[entry.name] = path
                    self._by_stem.setdefault(path.stem, path)
                    self._by_key.setdefault(match_key(path.stem), path)

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
        return self._by_key.get(match_key(_strip_id(key)))


def read_splits_csv(path: Path, max_bytes: int | None = None) -> dict[str, str]:
    """Read an `id,split` file into {match key of the id: split} (see `match_key`)."""
    csv_file = _read_csv(path, max_bytes)
    id_col = find_column(csv_file.fieldnames, ID_COLUMNS)
    split_col = find_column(csv_file.fieldnames, (SPLIT_COLUMN,))
    if id_col is None or split_col is None:
        raise UserError(f"{path}: a splits file needs an id column and a 'split' column")
    splits: dict[str, str] = {}
    for row in csv_file.rows():
        split = normalise_split(row.get(split_col))
        if split is not None:
            splits[match_key(_strip_id(row.get(id_col) or ""))] = split
    return splits


def _strip_id(value: str) -> str:
    """Ids match with or without an image extension (`tt01.jpg` and `tt01` are one poster)."""
    text = value.strip()
    return text[: -len(Path(text).suffix)] if is_image_name(text) else text


_IMDB_ID = re.compile(r"(?:tt)?0*(\d+)", re.IGNORECASE)


def match_key(poster_id: str) -> str:
    """The key ids are matched by: an IMDb id with or without `tt` and leading zeros is one
    poster (`114709`, `0114709`, `tt0114709`); any other id is itself."""
    found = _IMDB_ID.fullmatch(poster_id.strip())
    return f"tt{int(found.group(1)):07d}" if found else poster_id.strip()


def read_label_csv(
    labels: Path,
    images: Path | None = None,
    splits: Path | None = None,
    max_bytes: int | None = None,
) -> PosterCollection:
    """Read a CSV of poster ids and genres (streamed; see `_read_csv` for what is accepted).

    Images are looked up in `images`, else beside the CSV in `images/`, else beside the CSV.
    Splits come from a `split` column or from a separate `splits` CSV (`id,split`). IMDb ids
    match with or without `tt` and leading zeros.
    """
    labels = Path(labels)
    csv_file = _read_csv(labels, max_bytes)
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
    if images is None:
        images = default_image_folder(labels)
    finder = ImageFinder(Path(images))
    split_map = read_splits_csv(Path(splits), max_bytes) if splits is not None else None

    merged: dict[str, PosterRecord] = {}
    duplicates = conflicts = unparsable = 0
    missing_images: set[str] = set()
    warnings: list[str] = []
    for line_no, row in enumerate(csv_file.rows(), start=2):
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
        path = finder.find(raw_id)
        if path is None:
            missing_images.add(key)
            continue
        merged[key] = PosterRecord(poster_id, path, genres, split)

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
    records, note = unify_genre_spelling(records)
    return PosterCollection(records, str(root), [note] if note else [])


def load_posters(
    *,
    labels: Path | None = None,
    images: Path | None = None,
    splits: Path | None = None,
    folder: Path | None = None,
    max_label_bytes: int | None = None,
) -> PosterCollection:
    """Read posters from a label CSV (`labels`, `images`, `splits`) or a genre folder layout.
    Label and split files over `max_label_bytes` (default 1 GiB, or
    `$POSTERGENRE_MAX_LABELS_MB`) are refused."""
    if (labels is None) == (folder is None):
        raise PosterSourceMissing("give exactly one source of posters: a label CSV or a folder")
    if folder is not None:
        collection = read_folder(Path(folder))
        if splits is not None:
            split_map = read_splits_csv(Path(splits), max_label_bytes)
            collection.records = [
                PosterRecord(r.id, r.path, r.genres, split_map.get(match_key(r.path.stem), r.split))
                for r in collection.records
            ]
        return collection
    assert labels is not None
    return read_label_csv(Path(labels), images, splits, max_label_bytes)
