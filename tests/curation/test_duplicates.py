"""Finding duplicate posters: planted copies grouped, distinct posters not, chains split,
index folders reused, unreadable files skipped, the CSV and the contact sheet."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from postergenre.curation import fingerprints as fp
from postergenre.curation.contact_sheet import (
    LABEL_H,
    PAD,
    THUMB_H,
    write_sheet,
)
from postergenre.curation.duplicates import (
    CSV_COLUMNS,
    DuplicateGroup,
    Fingerprints,
    Thresholds,
    find_duplicates,
    fingerprint_collection,
    group_duplicates,
    write_csv,
)
from postergenre.curation.grouping import hamming
from postergenre.errors import UserError
from tests.curation.planted import PLANTED, make_planted_folder

EXPECTED = {
    frozenset({"poster0.jpg", "copy-exact.jpg"}): "exact",
    frozenset({"poster1.jpg", "copy-resized.jpg"}): "same image",
    frozenset({"poster2.jpg", "copy-recompressed.jpg"}): "same image",
    frozenset({"poster3.jpg", "copy-border.jpg"}): "same image",
    frozenset({"poster4.jpg", "copy-mirror.jpg"}): "variant",
}


def _names(group: DuplicateGroup) -> frozenset[str]:
    return frozenset(Path(m.path).name for m in group.members)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_planted_folder(tmp_path_factory.mktemp("planted") / "posters")


@pytest.fixture(scope="module")
def groups(planted: Path) -> list[DuplicateGroup]:
    return find_duplicates(planted)


def test_planted_copies_are_grouped_with_their_kind_and_distinct_posters_are_not(groups):
    assert {_names(g): g.kind for g in groups} == EXPECTED
    assert [g.kind for g in groups] == sorted(
        (g.kind for g in groups), key=["exact", "same image", "variant"].index
    )
    for group in groups:  # hash matches may sit below the embedding threshold (a border)
        assert 0.8 <= group.similarity <= 1.0 + 1e-6
        assert group.kind != "variant" or group.similarity >= 0.9
    exact = groups[0]
    assert exact.kind == "exact" and exact.similarity == pytest.approx(1.0, abs=1e-5)


def test_the_largest_poster_of_a_group_comes_first(groups):
    [resized] = [g for g in groups if "copy-resized.jpg" in _names(g)]
    first, second = resized.members
    assert Path(first.path).name == "copy-resized.jpg"
    assert (first.width, first.height) == (320, 480) and (second.width, second.height) == (160, 240)


def test_a_stricter_threshold_keeps_only_hash_matches(planted):
    collection = fingerprint_collection(planted)
    strict = group_duplicates(collection, Thresholds(similarity=0.999, hash_distance=8))
    kinds = {_names(g): g.kind for g in strict}
    assert frozenset({"poster0.jpg", "copy-exact.jpg"}) in kinds
    assert all(kind != "variant" or "copy-mirror.jpg" in names for names, kind in kinds.items())
    none = group_duplicates(collection, Thresholds(similarity=1.0, hash_distance=0))
    assert {_names(g) for g in none} <= set(EXPECTED)


def test_a_chain_of_look_alikes_is_split_complete_link():
    # a ~ b and b ~ c above the threshold, but a and c are not: never one group of three.
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([np.cos(0.4), np.sin(0.4), 0.0])
    c = np.array([np.cos(0.8), np.sin(0.8), 0.0])
    vectors = np.stack([a, b, c]).astype(np.float32)  # cos(a,b)=cos(b,c)=0.92, cos(a,c)=0.70
    rows = np.zeros((3, fp.ROW_BYTES), np.uint8)
    rows[:, :16] = np.random.default_rng(0).integers(0, 256, (3, 16))  # far-apart hashes
    rows[:, 16:24] = np.arange(3)[:, None]  # different bytes
    items = [{"id": n, "path": f"/x/{n}.jpg", "shown": f"{n}.jpg", "title": None} for n in "abc"]
    collection = Fingerprints("efficientnet-lite0", items, vectors, rows, np.ones(3, bool))
    groups = group_duplicates(collection, Thresholds(similarity=0.9, hash_distance=2))
    assert len(groups) == 1 and len(groups[0].members) == 2
    assert groups[0].kind == "variant"
    assert groups[0].similarity == pytest.approx(np.cos(0.4), abs=1e-5)
    everything = group_duplicates(collection, Thresholds(similarity=0.6, hash_distance=2))
    assert [len(g.members) for g in everything] == [3]
    assert everything[0].similarity == pytest.approx(np.cos(0.8), abs=1e-5)


def test_far_too_low_a_threshold_is_refused_not_clustered_for_minutes(monkeypatch, planted):
    from postergenre.curation import duplicates

    collection = fingerprint_collection(planted)
    monkeypatch.setattr(duplicates, "MAX_COMPONENT", 5)
    with pytest.raises(UserError, match="far too low"):
        group_duplicates(collection, Thresholds(similarity=-1.0))


def test_hamming_and_border_trimming():
    a = np.array([[0] * 8, [255] * 8], np.uint8)
    assert hamming(a, a).tolist() == [[0, 64], [64, 0]]
    pixels = np.full((100, 60, 3), 255, np.uint8)
    pixels[10:90, 5:55] = 40
    assert fp.trim_border(pixels).shape == (80, 50, 3)
    mostly_flat = np.full((100, 60, 3), 255, np.uint8)
    mostly_flat[45:55, 25:35] = 0
    assert fp.trim_border(mostly_flat).shape == (100, 60, 3)  # a frame, not a border


def test_an_index_folder_reuses_its_vectors_and_still_matches_a_missing_file(planted, tmp_path):
    from postergenre.inference.similarity import PosterIndex

    collection = fingerprint_collection(planted)
    copy = tmp_path / "gone.jpg"
    copy.write_bytes((planted / "poster5.jpg").read_bytes())
    items = [dict(item, genres=[], labelled=False) for item in collection.items]
    items.append(
        {
            "id": "gone",
            "path": str(copy),
            "shown": "gone.jpg",
            "title": "Gone Poster",
            "genres": [],
            "labelled": False,
        }
    )
    five = next(i for i, it in enumerate(collection.items) if it["id"] == "poster5")
    vectors = np.concatenate([collection.vectors, collection.vectors[[five]]])
    PosterIndex(collection.arch, items, vectors).save(tmp_path / "index")
    copy.unlink()  # its embedding stays in the index; its file cannot be hashed any more
    groups = find_duplicates(tmp_path / "index")
    names = {_names(g): g.kind for g in groups}
    assert set(EXPECTED) <= set(names)
    assert names[frozenset({"poster5.jpg", "gone.jpg"})] == "variant"
    [gone] = [m for g in groups for m in g.members if m.id == "gone"]
    assert gone.title == "Gone Poster" and gone.name == "Gone Poster"


def test_unreadable_files_are_skipped_and_reported(planted, tmp_path, capsys):
    folder = tmp_path / "posters"
    folder.mkdir()
    for name in ("poster0.jpg", "copy-exact.jpg", "poster6.jpg"):
        (folder / name).write_bytes((planted / name).read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    (folder / "empty.png").write_bytes(b"")
    groups = find_duplicates(folder)
    assert [_names(g) for g in groups] == [frozenset({"poster0.jpg", "copy-exact.jpg"})]
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "empty.png" in err and "2 unreadable posters skipped" in err


def test_a_poster_named_twice_is_not_its_own_duplicate(planted):
    assert (
        find_duplicates([planted / "poster6.jpg", planted / "poster6.jpg", planted / "poster7.jpg"])
        == []
    )


def test_csv_has_one_row_per_poster_of_each_group(groups, tmp_path):
    path = write_csv(groups, tmp_path / "dups.csv")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == sum(len(g.members) for g in groups)
    assert [int(r["group"]) for r in rows] == [
        n for n, g in enumerate(groups, 1) for _ in g.members
    ]
    assert rows[0]["kind"] == "exact" and int(rows[0]["size"]) == 2


def test_contact_sheet_has_one_row_per_group_and_is_written_whole(groups, tmp_path, monkeypatch):
    path = write_sheet(groups, tmp_path / "sheet.png")
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.height == PAD + len(groups) * (THUMB_H + LABEL_H + PAD)
    capped = write_sheet(groups, tmp_path / "capped.jpg", max_rows=2)
    with Image.open(capped) as image:
        assert image.format == "JPEG"
        assert image.height == PAD + 2 * (THUMB_H + LABEL_H + PAD) + 30  # the "more" note

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        write_sheet(groups, tmp_path / "never.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["capped.jpg", "sheet.png"]


def test_planted_kinds_cover_every_expected_group():
    assert {frozenset({source, name}) for name, (source, _) in PLANTED.items()} == set(EXPECTED)


def test_the_shared_sets_identical_pair_is_found_among_real_posters(shared_data):
    images = shared_data / "images"
    posters = [images / f"{i}.jpg" for i in ("tt0402577", "tt0420286", "tt0133093", "tt0241527")]
    groups = find_duplicates(posters)
    assert [(g.kind, _names(g)) for g in groups] == [
        ("exact", frozenset({"tt0402577.jpg", "tt0420286.jpg"}))
    ]
