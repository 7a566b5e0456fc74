"""Poster titles from a label or metadata file: what a person reads instead of a file name.

A CSV with an id column (see `csv_files.ID_COLUMN_NAMES`) and a `Title` column (any case; the
Kaggle list's titles end with the year, "Toy Story (1995)"). A poster is matched by its id
(the file stem, IMDb ids with or without `tt` and leading zeros) or, when the id column holds
paths, by its path (relative ones from the CSV's folder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from postergenre.data.csv_files import find_column, id_column, open_csv
from postergenre.data.image_finder import match_key, strip_id
from postergenre.errors import UserError
from postergenre.paths import user_path

TITLE_COLUMNS = ("title",)


@dataclass
class PosterTitles:
    """Titles by poster id (match key) and by resolved path; `notes` say how files were read."""

    by_id: dict[str, str] = field(default_factory=dict)
    by_path: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.by_id)

    def title(self, poster_id: str, path: str | Path) -> str | None:
        """The title of the poster at `path` (resolved) with id `poster_id`, or None."""
        return self.by_path.get(str(path)) or self.by_id.get(match_key(strip_id(poster_id)))

    def update(self, other: PosterTitles) -> PosterTitles:
        """Add `other`'s titles (theirs win where both name a poster)."""
        self.by_id.update(other.by_id)
        self.by_path.update(other.by_path)
        self.notes += other.notes
        return self


def read_titles(
    path: str | Path, *, required: bool = True, max_bytes: int | None = None
) -> PosterTitles:
    """The titles of a CSV (see the module docstring). A file without a title column is a
    `UserError` when `required` (a `--metadata` file), else it gives no titles (a label file)."""
    path = user_path(path)
    csv_file = open_csv(path, max_bytes)
    title_col = find_column(csv_file.fieldnames, TITLE_COLUMNS)
    titles = PosterTitles(notes=[csv_file.note] if csv_file.note else [])
    if title_col is None:
        if required:
            raise UserError(
                f"{path}: no title column (expected 'title'; found "
                f"{', '.join(csv_file.fieldnames)})"
            )
        return titles
    id_col = id_column(csv_file)
    base = path.parent
    for row in csv_file.rows():
        raw_id = (row.get(id_col) or "").strip()
        title = (row.get(title_col) or "").strip()
        if not raw_id or not title:
            continue
        named = Path(raw_id)
        titles.by_id.setdefault(match_key(strip_id(named.name)), title)
        if len(named.parts) > 1 or named.suffix:  # a file name or a path: matched by path too
            where = named if named.is_absolute() else base / named
            titles.by_path.setdefault(str(where.resolve()), title)
    return titles
