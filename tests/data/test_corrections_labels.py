"""Corrections files read as labels: a `path` column locates each poster, a `reviewed` column
keeps the rows a person accepted or changed."""

from __future__ import annotations

import pytest

from postergenre.data.labels import NothingReviewed, load_posters

HEADER = "id,path,title,genres,reviewed,reviewed_at\n"


def test_the_path_column_locates_posters_even_beside_an_id_column(tmp_path, save_image, write_text):
    poster = save_image(tmp_path / "far" / "away" / "tt1.jpg")
    # An image folder beside the CSV holding a different tt1: the path column wins.
    save_image(tmp_path / "collection" / "images" / "tt1.png")
    labels = write_text(
        tmp_path / "collection" / "corrections.csv",
        HEADER + f"tt1,{poster},Some Title,Action|Drama,1,2026-12-03T10:11:12Z\n",
    )

    (record,) = load_posters(labels=labels).records

    assert record.id == "tt1"
    assert record.path == poster
    assert record.genres == ("Action", "Drama")


def test_a_relative_path_is_read_from_the_label_files_folder(tmp_path, save_image, write_text):
    save_image(tmp_path / "collection" / "posters" / "a.png")
    save_image(tmp_path / "collection" / "images" / "a.png")  # not where a relative path points
    labels = write_text(
        tmp_path / "collection" / "corrections.csv", HEADER + "poster-a,posters/a.png,,Comedy,1,\n"
    )

    (record,) = load_posters(labels=labels).records

    assert record.path == tmp_path / "collection" / "posters" / "a.png"


def test_a_path_that_holds_no_file_falls_back_to_the_id(tmp_path, save_image, write_text):
    save_image(tmp_path / "images" / "tt2.jpg")
    labels = write_text(
        tmp_path / "corrections.csv", HEADER + f"tt2,{tmp_path}/moved/tt2.jpg,,Horror,1,\n"
    )

    (record,) = load_posters(labels=labels).records

    assert record.path == tmp_path / "images" / "tt2.jpg"


def test_only_reviewed_rows_are_kept_and_the_others_counted(tmp_path, save_image, write_text):
    paths = [save_image(tmp_path / "p" / f"{i}.png") for i in range(4)]
    labels = write_text(
        tmp_path / "corrections.csv",
        HEADER
        + f"p0,{paths[0]},,Action,1,2026-12-03T10:11:12Z\n"
        + f"p1,{paths[1]},,Comedy,0,\n"
        + f"p2,{paths[2]},,,1,2026-12-03T10:11:13Z\n"  # reviewed: no genre at all
        + f"p3,{paths[3]},,Drama,,\n",
    )

    collection = load_posters(labels=labels)

    assert {r.id: r.genres for r in collection.records} == {"p0": ("Action",), "p2": ()}
    notes = [w for w in collection.warnings if "not reviewed" in w]
    assert notes == [f"{labels}: 2 rows not reviewed (reviewed is not 1) left out"]


def test_a_file_with_nothing_reviewed_is_refused_in_one_line(tmp_path, save_image, write_text):
    poster = save_image(tmp_path / "p.png")
    labels = write_text(tmp_path / "corrections.csv", HEADER + f"p,{poster},,Action,0,\n")

    with pytest.raises(NothingReviewed) as error:
        load_posters(labels=labels)

    assert "none of its 1 rows is reviewed" in error.value.one_line()
    assert "\n" not in error.value.one_line()


def test_a_label_file_without_those_columns_reads_as_before(dataset, write_text):
    labels = write_text(dataset / "labels.csv", "id,genre\ntt1,Action\ntt2,Comedy\n")

    collection = load_posters(labels=labels)

    assert [r.path.name for r in collection.records] == ["tt1.jpg", "tt2.png"]
    assert not any("reviewed" in w for w in collection.warnings)
