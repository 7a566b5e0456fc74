"""Label files and folder layouts: every format `load_posters` accepts, and how it fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from postergenre.data.csv_files import open_csv
from postergenre.data.labels import load_posters, parse_genres, read_folder, read_label_csv
from postergenre.errors import UserError


def by_id(collection):
    return {record.id: record for record in collection.records}


# --- parse_genres: one label cell ---------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "genres"),
    [
        ("['Action', 'Comedy']", ("Action", "Comedy")),
        ('["Action", "Comedy"]', ("Action", "Comedy")),
        ("Action|Comedy", ("Action", "Comedy")),
        ("Action, Comedy", ("Action", "Comedy")),
        ("Drama", ("Drama",)),
        ("  Drama  ", ("Drama",)),
        ("['Drama', 'N/A']", ("Drama",)),
        ("Action|N/A", ("Action",)),
        ("N/A", ()),
        ("", ()),
        ("['Drama', 'Drama']", ("Drama",)),
    ],
)
def test_parse_genres(cell, genres):
    assert parse_genres(cell) == genres


@pytest.mark.parametrize("cell", ["['Action', 'Comedy'", "[1, 2]"])
def test_parse_genres_rejects_malformed_lists(cell):
    with pytest.raises(ValueError, match="label list"):
        parse_genres(cell)


# --- id columns and image lookup ----------------------------------------------------------


@pytest.mark.parametrize(
    "id_column", ["Id", "id", "ID", "imdbId", "IMDBID", "filename", "FileName", "image", "path"]
)
def test_id_column_names_are_case_insensitive(dataset, write_text, id_column):
    labels = write_text(dataset / "labels.csv", f"{id_column},Genre\ntt1,Action\ntt2,Comedy\n")

    collection = load_posters(labels=labels)

    assert [r.id for r in collection.records] == ["tt1", "tt2"]
    assert [r.path for r in collection.records] == [
        dataset / "images" / "tt1.jpg",
        dataset / "images" / "tt2.png",
    ]


def test_a_csv_without_an_id_column_is_refused_alike_as_labels_and_as_posters(tmp_path):
    from postergenre.data.sources import poster_source

    labels = tmp_path / "labels.csv"
    labels.write_text("title,genre\nx,Drama\n")
    expected = (
        f"{labels}: no id column; expected one of Id, id, imdbId, filename, image, path "
        "(found title, genre)"
    )
    for read in (read_label_csv, poster_source):
        with pytest.raises(UserError) as error:
            read(labels)
        assert str(error.value) == expected, read


def test_posters_are_looked_up_in_images_beside_the_csv_else_beside_it(tmp_path):
    from postergenre.data.labels import default_image_folder

    labels = tmp_path / "labels.csv"
    assert default_image_folder(labels) == tmp_path
    (tmp_path / "images").mkdir()
    assert default_image_folder(labels) == tmp_path / "images"


@pytest.mark.parametrize("poster_id", ["tt1", "tt1.jpg"])
def test_ids_match_with_or_without_extension(dataset, write_text, poster_id):
    labels = write_text(dataset / "labels.csv", f"id,genre\n{poster_id},Action\n")

    (record,) = load_posters(labels=labels).records

    assert record.id == "tt1"
    assert record.path == dataset / "images" / "tt1.jpg"


def test_images_folder_given_explicitly(tmp_path, save_image, write_text):
    elsewhere = tmp_path / "somewhere" / "else"
    save_image(elsewhere / "tt9.png")
    labels = write_text(tmp_path / "csvs" / "labels.csv", "id,genre\ntt9,Horror\n")

    (record,) = load_posters(labels=labels, images=elsewhere).records

    assert record.path == elsewhere / "tt9.png"


def test_images_default_to_the_images_folder_beside_the_csv(dataset, write_text):
    labels = write_text(dataset / "labels.csv", "id,genre\ntt3,Drama\n")

    (record,) = load_posters(labels=labels).records

    assert record.path == dataset / "images" / "tt3.jpg"


def test_images_default_to_the_csv_folder_without_an_images_folder(
    tmp_path, save_image, write_text
):
    save_image(tmp_path / "tt5.bmp")
    labels = write_text(tmp_path / "labels.csv", "id,genre\ntt5,Drama\n")

    (record,) = load_posters(labels=labels).records

    assert record.path == tmp_path / "tt5.bmp"


def test_path_column_may_hold_a_relative_path(tmp_path, save_image, write_text):
    save_image(tmp_path / "posters" / "2019" / "tt7.jpg")
    labels = write_text(tmp_path / "labels.csv", "path,label\nposters/2019/tt7.jpg,Western\n")

    (record,) = load_posters(labels=labels).records

    assert record.id == "posters/2019/tt7"
    assert record.path == tmp_path / "posters" / "2019" / "tt7.jpg"
    assert record.genres == ("Western",)


# --- label formats ------------------------------------------------------------------------


@pytest.mark.parametrize("label_column", ["Genre", "genres", "label", "Labels"])
def test_label_column_names(dataset, write_text, label_column):
    labels = write_text(dataset / "labels.csv", f"id,{label_column}\ntt1,Action\n")

    assert load_posters(labels=labels).records[0].genres == ("Action",)


def test_label_cells_in_every_format(dataset, write_text):
    labels = write_text(
        dataset / "labels.csv",
        """
        Id,Genre
        tt1,"['Action', 'Comedy']"
        tt2,Comedy|Romance|N/A
        tt3,Drama
        """,
    )

    genres = {r.id: r.genres for r in load_posters(labels=labels).records}

    assert genres == {"tt1": ("Action", "Comedy"), "tt2": ("Comedy", "Romance"), "tt3": ("Drama",)}


def test_one_hot_columns_without_a_label_column(dataset, write_text):
    labels = write_text(
        dataset / "labels.csv",
        """
        id,Action,Comedy,Drama,N/A
        tt1,1,0,1,0
        tt2,0,1,0,0
        tt3,0,0,0,1
        """,
    )

    genres = {r.id: r.genres for r in load_posters(labels=labels).records}

    # N/A marks "no genre", so it never becomes a genre of its own.
    assert genres == {"tt1": ("Action", "Drama"), "tt2": ("Comedy",), "tt3": ()}


def test_one_hot_columns_accept_floats_and_booleans_and_skip_the_split_column(dataset, write_text):
    labels = write_text(
        dataset / "labels.csv",
        """
        id,Action,Comedy,split
        tt1,1.0,0.0,train
        tt2,false,true,test
        """,
    )

    records = by_id(load_posters(labels=labels))

    assert records["tt1"].genres == ("Action",)
    assert records["tt2"].genres == ("Comedy",)
    assert (records["tt1"].split, records["tt2"].split) == ("train", "test")


def test_real_train_csv_layout_reads_the_genre_column(dataset, write_text):
    # Like the real train.csv: a Genre list-string AND one-hot columns, including one for N/A.
    # The one-hot columns below deliberately disagree, to show the Genre column wins.
    labels = write_text(
        dataset / "train.csv",
        """
        Id,Genre,Action,Comedy,Drama,N/A
        tt1,"['Comedy', 'Drama']",1,0,0,0
        tt2,['Action'],0,0,0,1
        tt3,"['Drama', 'N/A']",0,0,1,1
        """,
    )

    collection = load_posters(labels=labels)

    assert {r.id: r.genres for r in collection.records} == {
        "tt1": ("Comedy", "Drama"),
        "tt2": ("Action",),
        "tt3": ("Drama",),
    }
    assert "N/A" not in collection.genre_counts()


# --- splits -------------------------------------------------------------------------------


def test_split_column_values_are_normalised(dataset, write_text):
    labels = write_text(
        dataset / "labels.csv",
        """
        id,genre,split
        tt1,Action,Training
        tt2,Comedy,validation
        tt3,Drama,TEST
        """,
    )

    collection = load_posters(labels=labels)

    assert {r.id: r.split for r in collection.records} == {
        "tt1": "train",
        "tt2": "val",
        "tt3": "test",
    }
    assert collection.splits == ["train", "val", "test"]
    assert [r.id for r in collection.split("Validation").records] == ["tt2"]


def test_splits_from_a_separate_csv(dataset, write_text):
    labels = write_text(dataset / "labels.csv", "id,genre\ntt1,Action\ntt2,Comedy\ntt3,Drama\n")
    splits = write_text(dataset / "splits.csv", "id,split\ntt1.jpg,Training\ntt2,test\n")

    collection = load_posters(labels=labels, splits=splits)

    assert {r.id: r.split for r in collection.records} == {
        "tt1": "train",
        "tt2": "test",
        "tt3": None,
    }
    (warning,) = collection.warnings
    assert warning.startswith("1 ") and "not in" in warning and str(splits) in warning


def test_missing_split_warning_counts_each_poster_once(dataset, write_text):
    labels = write_text(dataset / "labels.csv", "id,genre\ntt1,Action\ntt3,Drama\ntt3,Drama\n")
    splits = write_text(dataset / "splits.csv", "id,split\ntt1,train\n")

    collection = load_posters(labels=labels, splits=splits)

    assert [r.split for r in collection.records] == ["train", None]
    assert any(w.startswith("1 posters are not in") for w in collection.warnings)


def test_a_splits_file_needs_id_and_split_columns(dataset, write_text):
    labels = write_text(dataset / "labels.csv", "id,genre\ntt1,Action\n")
    splits = write_text(dataset / "splits.csv", "id,fold\ntt1,1\n")

    with pytest.raises(UserError, match="'split' column"):
        load_posters(labels=labels, splits=splits)


# --- duplicates, missing images, unreadable rows ------------------------------------------


def test_duplicate_rows_are_merged_with_a_warning(dataset, write_text):
    labels = write_text(dataset / "labels.csv", "id,genre\ntt1,Action\ntt1.jpg,Action\n")

    collection = load_posters(labels=labels)

    assert [(r.id, r.genres) for r in collection.records] == [("tt1", ("Action",))]
    assert collection.warnings == ["1 duplicate id rows merged (0 with differing genres, united)"]


def test_conflicting_duplicates_get_the_union_of_their_genres(dataset, write_text):
    labels = write_text(
        dataset / "labels.csv",
        """
        id,genre
        tt1,Action
        tt1,"['Comedy', 'Action']"
        """,
    )

    collection = load_posters(labels=labels)

    assert collection.records[0].genres == ("Action", "Comedy")
    assert "1 with differing genres" in collection.warnings[0]


def test_ids_without_an_image_are_skipped_and_counted(dataset, write_text):
    labels = write_text(
        dataset / "labels.csv", "id,genre\ntt1,Action\ntt404,Drama\ntt405.jpg,Comedy\n"
    )

    collection = load_posters(labels=labels)

    assert [r.id for r in collection.records] == ["tt1"]
    (warning,) = collection.warnings
    assert warning.startswith("2 ids have no image") and str(dataset / "images") in warning


def test_missing_image_warning_counts_each_id_once(dataset, write_text):
    labels = write_text(dataset / "labels.csv", "id,genre\ntt1,Action\ntt404,Drama\ntt404,Drama\n")

    collection = load_posters(labels=labels)

    assert any(w.startswith("1 ids have no image") for w in collection.warnings)


def test_rows_with_unreadable_labels_are_skipped_with_their_line_number(dataset, write_text):
    labels = write_text(
        dataset / "labels.csv",
        """
        id,genre
        tt1,Action
        tt2,"['Comedy'"
        """,
    )

    collection = load_posters(labels=labels)

    assert [r.id for r in collection.records] == ["tt1"]
    assert any(f"{labels}:3:" in w for w in collection.warnings)
    assert "1 rows with unreadable labels skipped" in collection.warnings


# --- errors a user can act on -------------------------------------------------------------


def test_missing_id_column(dataset, write_text):
    labels = write_text(dataset / "labels.csv", "title,genre\nHeat,Action\n")

    with pytest.raises(UserError, match="no id column") as error:
        load_posters(labels=labels)
    # The message says what would have worked and what the file has.
    assert "imdbId" in str(error.value) and "title" in str(error.value)


def test_missing_label_file(tmp_path):
    with pytest.raises(UserError, match="label file not found"):
        load_posters(labels=tmp_path / "nope.csv")


def test_empty_label_file(tmp_path):
    (tmp_path / "labels.csv").write_bytes(b"")

    with pytest.raises(UserError, match="empty"):
        load_posters(labels=tmp_path / "labels.csv")


def test_no_label_column_and_no_one_hot_columns(dataset, write_text):
    labels = write_text(dataset / "labels.csv", "id,title\ntt1,Heat\n")

    with pytest.raises(UserError, match="no label column"):
        load_posters(labels=labels)


def test_no_poster_found_at_all(dataset, write_text):
    labels = write_text(dataset / "labels.csv", "id,genre\ntt404,Action\n")

    with pytest.raises(UserError, match="no poster found"):
        load_posters(labels=labels)


def test_missing_images_folder(dataset, write_text):
    labels = write_text(dataset / "labels.csv", "id,genre\ntt1,Action\n")

    with pytest.raises(UserError, match="image folder not found"):
        load_posters(labels=labels, images=dataset / "no-such-folder")


@pytest.mark.parametrize("sources", [{}, {"labels": "a.csv", "folder": "posters"}])
def test_load_posters_needs_exactly_one_source(tmp_path, sources):
    with pytest.raises(UserError, match="exactly one"):
        load_posters(**{k: tmp_path / v for k, v in sources.items()})


def test_read_label_csv_is_what_load_posters_calls(dataset, write_text):
    labels = write_text(dataset / "labels.csv", "id,genre\ntt2,Comedy\n")

    assert read_label_csv(labels).records == load_posters(labels=labels).records


# --- folder layouts -----------------------------------------------------------------------


def test_folder_per_genre(tmp_path, save_image):
    save_image(tmp_path / "posters" / "Action" / "a1.jpg")
    save_image(tmp_path / "posters" / "Action" / "a2.png")
    save_image(tmp_path / "posters" / "Comedy" / "c1.jpg")

    collection = load_posters(folder=tmp_path / "posters")

    assert [(r.id, r.genres, r.split) for r in collection.records] == [
        ("Action/a1", ("Action",), None),
        ("Action/a2", ("Action",), None),
        ("Comedy/c1", ("Comedy",), None),
    ]
    assert collection.records[0].path == tmp_path / "posters" / "Action" / "a1.jpg"


@pytest.mark.parametrize(
    "split_folders",
    [
        ("train", "val", "test"),
        ("Training", "Validation", "Test"),
        ("TRAINING", "validation", "tEsT"),
    ],
)
def test_folder_per_split_and_genre(tmp_path, save_image, split_folders):
    root = tmp_path / "posters"
    for folder in split_folders:
        save_image(root / folder / "Drama" / "d.jpg")
        save_image(root / folder / "Horror" / "h.jpg")

    collection = read_folder(root)

    assert collection.splits == ["train", "val", "test"]
    assert len(collection.split("train")) == len(collection.split("test")) == 2
    assert {r.id for r in collection.split("val").records} == {"val/Drama/d", "val/Horror/h"}
    assert collection.genre_counts() == {"Drama": 3, "Horror": 3}


def test_folder_accepts_every_image_extension_and_ignores_other_files(tmp_path, save_image):
    genre = tmp_path / "posters" / "Comedy"
    names = ["a.jpg", "b.jpeg", "c.png", "d.webp", "e.gif", "f.bmp", "g.JPG", "h.PNG", "i.JpEg"]
    for name in names:
        save_image(genre / name)
    (genre / "notes.txt").write_text("not a poster")
    (genre / "poster.jpg.part").write_bytes(b"half a download")
    (genre / "sub").mkdir()

    collection = load_posters(folder=tmp_path / "posters")

    assert sorted(r.path.name for r in collection.records) == names


def test_folder_with_a_splits_csv(tmp_path, save_image, write_text):
    save_image(tmp_path / "posters" / "Action" / "tt1.jpg")
    save_image(tmp_path / "posters" / "Drama" / "tt2.jpg")
    splits = write_text(tmp_path / "splits.csv", "id,split\ntt1,train\ntt2,Test\n")

    collection = load_posters(folder=tmp_path / "posters", splits=splits)

    assert {r.id: r.split for r in collection.records} == {
        "Action/tt1": "train",
        "Drama/tt2": "test",
    }


def test_empty_folder_root(tmp_path):
    (tmp_path / "posters").mkdir()

    with pytest.raises(UserError, match="no sub-folders"):
        load_posters(folder=tmp_path / "posters")


def test_genre_folders_without_images(tmp_path):
    (tmp_path / "posters" / "Action").mkdir(parents=True)
    (tmp_path / "posters" / "Action" / "readme.txt").write_text("nothing here")

    with pytest.raises(UserError, match="no images"):
        load_posters(folder=tmp_path / "posters")


def test_missing_folder_root(tmp_path):
    with pytest.raises(UserError, match="folder not found"):
        read_folder(Path(tmp_path / "nope"))


# --- bounded, forgiving reading: size, encoding, delimiter, ids, genre spelling ------------


def test_a_huge_nonsense_file_is_refused_from_its_head_in_little_memory(dataset):
    import tracemalloc

    nonsense = dataset / "nonsense.csv"
    with nonsense.open("wb") as handle:  # 24 MB of text with no line break at all
        for _ in range(24):
            handle.write(b"x" * (1024 * 1024))
    tracemalloc.start()
    with pytest.raises(UserError, match="no header line"):
        load_posters(labels=nonsense)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak  # read its head, not the file


def test_label_files_over_the_limit_are_refused_with_how_to_raise_it(dataset, write_text):
    labels = write_text(dataset / "labels.csv", "Id,Genre\n" + "tt1,Action\n" * 200)
    with pytest.raises(UserError, match=r"over the .* limit for label files.*POSTERGENRE_MAX"):
        read_label_csv(labels, max_bytes=1000)
    assert len(read_label_csv(labels, max_bytes=10_000).records) == 1


def test_binary_files_are_not_csv(dataset):
    (dataset / "x.csv").write_bytes(b"Id,Genre\n\x00\x01\x02")
    with pytest.raises(UserError, match="binary"):
        load_posters(labels=dataset / "x.csv")


def test_genre_names_differing_in_case_or_spaces_become_one(dataset, write_text):
    labels = write_text(
        dataset / "labels.csv",
        """
        Id,Genre
        tt1,Comedy
        tt2,comedy
        tt3,"COMEDY |  Sci-Fi"
        """,
    )
    (dataset / "images" / "tt4.jpg").write_bytes((dataset / "images" / "tt1.jpg").read_bytes())
    with (dataset / "labels.csv").open("a") as handle:
        handle.write("tt4,Comedy\n")
    collection = load_posters(labels=labels)
    assert {g for r in collection.records for g in r.genres} == {"Comedy", "Sci-Fi"}
    [note] = [w for w in collection.warnings if "case or spaces" in w]
    assert "'comedy'" in note and "'COMEDY'" in note and "-> 'Comedy'" in note


def test_case_variants_of_genre_folders_become_one(tmp_path, save_image):
    save_image(tmp_path / "root" / "Comedy" / "a.png")
    save_image(tmp_path / "root" / "Comedy" / "b.png")
    save_image(tmp_path / "root" / "comedy" / "c.png")
    save_image(tmp_path / "root" / "Drama" / "d.png")
    collection = read_folder(tmp_path / "root")
    assert sorted({r.genres[0] for r in collection.records}) == ["Comedy", "Drama"]
    assert any("case or spaces" in w for w in collection.warnings)


@pytest.mark.parametrize("encoding", ["latin-1", "utf-8", "utf-8-sig"])
def test_encodings_are_detected(dataset, encoding):
    text = "imdbId,Title,Genre\ntt1,Amélie (2001),Comedy|Romance\ntt2,Léon (1994),Action\n"
    (dataset / "kaggle.csv").write_bytes(text.encode(encoding))
    collection = load_posters(labels=dataset / "kaggle.csv")
    assert by_id(collection)["tt1"].genres == ("Comedy", "Romance")
    assert len(collection.records) == 2


def test_a_non_ascii_byte_far_into_the_file_still_picks_latin_1(dataset):
    rows = "".join(f"x{i},Drama\n" for i in range(20_000))  # ids without images: skipped
    text = "Id,Genre\n" + rows + "tt1,Comédie\n"
    (dataset / "late.csv").write_bytes(text.encode("latin-1"))
    collection = load_posters(labels=dataset / "late.csv")
    assert by_id(collection)["tt1"].genres == ("Comédie",)


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_delimiters_are_detected(dataset, write_text, delimiter):
    text = f"Id{delimiter}Genre{delimiter}split\ntt1{delimiter}Action|Drama{delimiter}train\n"
    labels = write_text(dataset / "labels.csv", text)
    [record] = load_posters(labels=labels).records
    assert record.genres == ("Action", "Drama") and record.split == "train"


def test_numeric_ids_match_files_and_splits_with_tt_and_zeros(tmp_path, save_image, write_text):
    for stem in ("tt0114709", "tt0113497", "tt1234567"):
        save_image(tmp_path / "images" / f"{stem}.jpg")
    labels = write_text(
        tmp_path / "MovieGenre.csv",
        """
        imdbId,Genre
        114709,Animation|Comedy
        0113497,Adventure
        tt1234567,Drama
        """,
    )
    splits = write_text(tmp_path / "splits.csv", "id,split\ntt0114709,train\n113497,test\n")
    collection = load_posters(labels=labels, splits=splits)
    assert len(collection.records) == 3 and not [w for w in collection.warnings if "no image" in w]
    paths = {r.path.name: r.split for r in collection.records}
    assert paths == {"tt0114709.jpg": "train", "tt0113497.jpg": "test", "tt1234567.jpg": None}


def test_a_utf_8_file_with_one_stray_latin_1_byte_keeps_its_utf_8_and_names_the_line(dataset):
    text = "Id,Genre,Title\ntt1,Comédie,Amélie\ntt2,Drama,Léon\ntt3,Action,Zoë\n"
    data = text.encode("utf-8").replace("Léon".encode(), "Léon".encode("latin-1"))
    (dataset / "mixed.csv").write_bytes(data)
    collection = load_posters(labels=dataset / "mixed.csv")
    assert by_id(collection)["tt1"].genres == ("Comédie",)
    [note] = [w for w in collection.warnings if "UTF-8" in w]
    assert "1 line is not UTF-8" in note and "line 3" in note and "Latin-1" in note
    rows = list(open_csv(dataset / "mixed.csv").rows())
    assert [r["Title"] for r in rows] == ["Amélie", "Léon", "Zoë"]


def test_a_label_id_too_long_for_a_file_name_is_a_poster_without_an_image(dataset, write_text):
    long_id = "x" * 300
    text = f"id,genre\ntt1,Drama\n{long_id},Comedy\nsub/{long_id},Drama\n{'d/' * 2500},Drama\n"
    collection = load_posters(labels=write_text(dataset / "labels.csv", text))
    assert [r.id for r in collection.records] == ["tt1"]
    [warning] = [w for w in collection.warnings if "have no image" in w]
    assert warning.startswith("3 ids have no image") and "\n" not in warning
    assert f"{long_id[:40]}..." in warning


def test_200_000_ids_without_images_are_counted_fast_in_one_line(dataset, monkeypatch):
    rows = "".join(f"nm{i},Drama\n" for i in range(200_000))
    (dataset / "big.csv").write_text("Id,Genre\ntt1,Action\n" + rows + "nm7,Drama\n")
    # Fast means no file-system call per id: the image folder is listed once. (Counting calls,
    # not seconds: a loaded machine slows both ways alike.)
    stats = 0
    real_stat = os.stat

    def counted_stat(*args, **kwargs):
        nonlocal stats
        stats += 1
        return real_stat(*args, **kwargs)

    monkeypatch.setattr(os, "stat", counted_stat)
    collection = load_posters(labels=dataset / "big.csv")
    assert [r.id for r in collection.records] == ["tt1"]
    [warning] = collection.warnings
    assert warning.startswith("200000 ids have no image") and "(e.g. nm0, nm1, nm2, ...)" in warning
    assert stats < 100, stats


def test_ids_without_images_take_a_few_bytes_each():
    import tracemalloc

    from postergenre.data.image_finder import MissingIds

    missing = MissingIds()
    tracemalloc.start()
    for i in range(100_000):
        missing.add(f"nm{i:09d}")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert missing.count() == 100_000 and len(missing.sample) == MissingIds.SAMPLE
    assert peak < 2_000_000, peak  # a set of the ids would take about 10 MB


def test_a_genre_folder_reached_twice_through_links_is_read_once(tmp_path, save_image):
    import os

    save_image(tmp_path / "root" / "Action" / "a.jpg")
    save_image(tmp_path / "root" / "Comedy" / "c.jpg")
    os.symlink("Action", tmp_path / "root" / "Drama")
    os.symlink("..", tmp_path / "root" / "Comedy" / "up")
    os.symlink(".", tmp_path / "root" / "Loop")
    collection = read_folder(tmp_path / "root")
    assert sorted((r.id, r.genres) for r in collection.records) == [
        ("Action/a", ("Action",)),
        ("Comedy/c", ("Comedy",)),
    ]
