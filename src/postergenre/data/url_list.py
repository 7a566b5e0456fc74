"""The URL list a download reads: one row per poster id (repeated ids merged), with its URL,
genres, title and year, and the problem, if any, that keeps the id from naming a file."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from postergenre.data.csv_files import find_column, open_csv
from postergenre.data.formats import is_image_name
from postergenre.data.image_finder import match_key
from postergenre.data.labels import LABEL_COLUMNS, parse_genres
from postergenre.errors import UserError

# Column names looked for, in order of preference (matched case-insensitively).
ID_COLUMNS = ("id", "imdbid", "imdb_id", "tconst", "movie_id", "movieid", "filename")
URL_COLUMNS = (
    "url",
    "poster_url",
    "posterurl",
    "poster",
    "poster_link",
    "image_url",
    "imageurl",
    "img_url",
    "image",
)
TITLE_COLUMNS = ("title", "movie_title", "name")
YEAR_COLUMNS = ("year", "release_year")
# A file name holds 255 bytes: an id leaves room for its extension and the temporary name
# an atomic write goes through.
MAX_ID_BYTES = 200
_TITLE_YEAR = re.compile(r"(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-–]\s*\d{0,4})?\s*\)\s*")


class UrlColumnMissing(UserError):
    """The URL list has no column of poster URLs."""

    hint = "name it with --url-column"


class IdColumnMissing(UserError):
    """The URL list has no id column."""

    hint = "name it with --id-column"


@dataclass
class UrlRow:
    """One poster of the URL list (`problem`: why it fails without a request, "" if none)."""

    index: int
    id: str
    url: str
    genres: tuple[str, ...]
    title: str
    year: str
    problem: str = ""  # a reason to fail without a request ("no id", "bad id")


def _poster_id(raw: str) -> tuple[str, str]:
    """The id a poster is stored under (numeric IMDb ids become `tt` + 7 digits), and a
    problem that makes it unusable as a file name ("" when none)."""
    text = raw.strip()
    if is_image_name(text):
        text = text[: -len(Path(text).suffix)]
    poster_id = match_key(text)
    if not poster_id:
        return "", "no id"
    return poster_id, _id_problem(poster_id)


def _id_problem(poster_id: str) -> str:
    """Why `poster_id` cannot name a file in images/ ("" when it can)."""
    if any(c in poster_id for c in "/\\"):
        return "bad id: a path separator"
    if poster_id.startswith("."):
        return "bad id: starts with a dot"
    if not poster_id.isprintable():
        return "bad id: an unprintable character"
    try:
        size = len(os.fsencode(poster_id))
    except UnicodeEncodeError:
        return "bad id: characters no file name here can hold"
    if size > MAX_ID_BYTES:
        return "bad id: too long for a file name"
    return ""


def split_title_year(title: str) -> tuple[str, str]:
    """`"Toy Story (1995)"` -> `("Toy Story", "1995")`; a title without a year is kept whole."""
    found = _TITLE_YEAR.fullmatch(title.strip())
    if found and found.group("title"):
        return found.group("title"), found.group("year")
    return title.strip(), ""


def _column(fieldnames: list[str], name: str | None, candidates: tuple[str, ...]) -> str | None:
    if name is None:
        return find_column(fieldnames, candidates)
    found = find_column(fieldnames, (name.strip().lower(),))
    if found is None:
        raise UserError(f"no column {name!r} (columns: {', '.join(fieldnames)})")
    return found


def read_url_list(
    labels: Path,
    url_column: str | None,
    id_column: str | None,
    max_label_bytes: int | None,
) -> tuple[list[UrlRow], int]:
    """The rows of the URL list, one per poster id in file order (repeated ids merged, their
    genres united), and how many rows were merged."""
    csv_file = open_csv(labels, max_label_bytes)
    names = csv_file.fieldnames
    id_col = _column(names, id_column, ID_COLUMNS)
    if id_col is None:
        raise IdColumnMissing(
            f"{labels}: no id column; expected one of {', '.join(ID_COLUMNS)} "
            f"(found {', '.join(names)})"
        )
    url_col = _column(names, url_column, URL_COLUMNS)
    if url_col is None:
        raise UrlColumnMissing(
            f"{labels}: no URL column; expected one of {', '.join(URL_COLUMNS)} "
            f"(found {', '.join(names)})"
        )
    genre_col = find_column(names, LABEL_COLUMNS)
    title_col = find_column(names, TITLE_COLUMNS)
    year_col = find_column(names, YEAR_COLUMNS)

    rows: list[UrlRow] = []
    by_id: dict[str, UrlRow] = {}
    duplicates = 0
    for line in csv_file.rows():
        poster_id, problem = _poster_id(line.get(id_col) or "")
        url = (line.get(url_col) or "").strip()
        try:
            genres = parse_genres(line.get(genre_col) or "") if genre_col else ()
        except ValueError:
            genres = ()
        title, year = split_title_year(line.get(title_col) or "") if title_col else ("", "")
        if year_col and (line.get(year_col) or "").strip():
            year = (line.get(year_col) or "").strip()
        row = UrlRow(len(rows), poster_id, url, genres, title, year, problem)
        previous = by_id.get(poster_id) if not problem else None
        if previous is None:
            rows.append(row)
            if not problem:
                by_id[poster_id] = row
            continue
        duplicates += 1
        previous.genres += tuple(g for g in genres if g not in previous.genres)
        previous.url = previous.url or url
        previous.title = previous.title or title
        previous.year = previous.year or year
    if not rows:
        raise UserError(f"{labels} has no rows")
    return rows, duplicates
