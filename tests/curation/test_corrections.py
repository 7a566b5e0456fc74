"""corrections.csv: one row per poster, saved atomically on every change, read back on open."""

from __future__ import annotations

import csv
import re

import pytest

from postergenre.curation.corrections import (
    HEADER,
    Corrections,
    CorrectionsNotSaved,
    utc_now,
)
from postergenre.errors import UserError
from tests.curation.conftest import synthetic_index


def _rows(path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_correction_writes_one_row_per_poster_with_the_contract_header(tmp_path):
    index = synthetic_index(tmp_path, n=6)
    corrections = Corrections(tmp_path, index.items)
    assert not corrections.path.exists()  # nothing is written before a change
    corrections.set(2, ["Drama", "Comedy"], when="2026-12-03T10:11:12Z")
    text = corrections.path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == ",".join(HEADER) == "id,path,title,genres,reviewed,reviewed_at"
    rows = _rows(corrections.path)
    assert [r["id"] for r in rows] == [item["id"] for item in index.items]
    assert rows[2] == {
        "id": "id002",
        "path": index.items[2]["path"],
        "title": "Movie 002",
        "genres": "Drama|Comedy",
        "reviewed": "1",
        "reviewed_at": "2026-12-03T10:11:12Z",
    }
    # Rows nobody reviewed carry the given labels, unreviewed, with no time.
    assert rows[0]["genres"] == "Action|Comedy" and rows[0]["reviewed"] == "0"
    assert rows[0]["reviewed_at"] == "" and rows[0]["title"] == ""  # item 0 has no title
    assert corrections.text() == text


def test_unlabelled_rows_have_no_genres_and_an_empty_correction_means_no_genre(tmp_path):
    index = synthetic_index(tmp_path, n=3, labelled=False)
    corrections = Corrections(tmp_path, index.items)
    corrections.set(1, [])
    rows = _rows(corrections.path)
    assert [(r["genres"], r["reviewed"]) for r in rows] == [("", "0"), ("", "1"), ("", "0")]
    assert Corrections(tmp_path, index.items).get(1).genres == ()


def test_corrections_are_read_back_and_rows_of_posters_gone_are_kept(tmp_path):
    index = synthetic_index(tmp_path, n=5)
    first = Corrections(tmp_path, index.items)
    first.set(1, ["Horror"], when="2026-12-01T00:00:00Z")
    first.set(4, ["Action"], when="2026-12-02T00:00:00Z")
    first.set(1, ["Comedy"], when="2026-12-03T00:00:00Z")  # a second change replaces the first
    assert len(_rows(first.path)) == 5

    again = Corrections(tmp_path, index.items)
    assert again.reviewed_positions() == [1, 4]
    assert again.get(1).genres == ("Comedy",) and again.get(1).reviewed_at.startswith("2026-12-03")

    # The collection shrank: poster 4's reviewed row stays in the file, after the others.
    smaller = Corrections(tmp_path, index.items[:3])
    assert smaller.reviewed_positions() == [1]
    smaller.set(0, ["Drama"])
    rows = _rows(smaller.path)
    assert [r["id"] for r in rows] == ["id000", "id001", "id002", "id004"]
    assert rows[-1]["genres"] == "Action" and rows[-1]["reviewed"] == "1"


def test_a_moved_poster_keeps_its_correction_by_id(tmp_path):
    index = synthetic_index(tmp_path, n=3)
    Corrections(tmp_path, index.items).set(2, ["Drama"])
    moved = [{**item, "path": f"/elsewhere/{item['id']}.jpg"} for item in index.items]
    assert Corrections(tmp_path, moved).get(2).genres == ("Drama",)


def test_a_read_only_collection_refuses_changes_and_writes_nothing(tmp_path):
    index = synthetic_index(tmp_path, n=3)
    corrections = Corrections(tmp_path, index.items, writable=False)
    with pytest.raises(CorrectionsNotSaved, match="read-only"):
        corrections.set(0, ["Drama"])
    assert not corrections.path.exists() and corrections.get(0) is None


def test_a_failed_save_changes_nothing(tmp_path, monkeypatch):
    index = synthetic_index(tmp_path, n=3)
    corrections = Corrections(tmp_path, index.items)
    corrections.set(0, ["Drama"], when="2026-12-01T00:00:00Z")
    before = corrections.path.read_bytes()

    def full_disk(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("postergenre.curation.corrections.write_text", full_disk)
    with pytest.raises(CorrectionsNotSaved, match="No space left"):
        corrections.set(0, ["Horror"])
    with pytest.raises(CorrectionsNotSaved):
        corrections.set(1, ["Horror"])
    assert corrections.get(0).genres == ("Drama",) and corrections.get(1) is None
    assert corrections.path.read_bytes() == before
    assert corrections.text().encode() == before


def test_a_file_that_is_not_a_corrections_file_is_refused(tmp_path):
    index = synthetic_index(tmp_path, n=2)
    (tmp_path / "corrections.csv").write_text("id,label\nid000,Drama\n")
    with pytest.raises(UserError, match="not a corrections file: no genres, reviewed column"):
        Corrections(tmp_path, index.items)


def test_titles_with_commas_and_quotes_survive_the_round_trip(tmp_path):
    index = synthetic_index(tmp_path, n=2)
    index.items[1]["title"] = 'Crouching Tiger, "Hidden" Dragon'
    Corrections(tmp_path, index.items).set(1, ["Action"])
    assert _rows(tmp_path / "corrections.csv")[1]["title"] == 'Crouching Tiger, "Hidden" Dragon'


def test_times_are_iso_8601_utc_to_the_second():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", utc_now())
