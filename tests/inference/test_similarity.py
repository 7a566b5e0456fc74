"""The similar-poster index: build, save, load, search."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from postergenre.cli import main
from postergenre.data.labels import read_folder
from postergenre.inference.similarity import PosterIndex
from tests.conftest import make_poster, make_tiny_folder


def test_index_round_trip_and_search(tiny_posters, tmp_path):
    records = read_folder(tiny_posters).records
    index = PosterIndex.build(records, progress=False)
    assert len(index) == len(records)
    index.save(tmp_path / "index")
    loaded = PosterIndex.load(tmp_path / "index")
    np.testing.assert_allclose(loaded.vectors, index.vectors, atol=2e-3)  # stored as float16
    [neighbours] = loaded.search(loaded.vectors[:1], k=5)
    assert neighbours[0].id == records[0].id
    assert neighbours[0].similarity > 0.99
    sims = [n.similarity for n in neighbours]
    assert sims == sorted(sims, reverse=True)


def test_similar_cli_finds_same_genre_posters(tiny_posters, tmp_path, capsys):
    assert (
        main(
            [
                "index",
                "--folder",
                str(tiny_posters),
                "--split",
                "train",
                "--out",
                str(tmp_path / "idx"),
            ]
        )
        == 0
    )
    query = tiny_posters / "test" / "Comedy" / "comedy0.png"
    assert (
        main(["similar", str(query), "--index", str(tmp_path / "idx"), "--k", "4", "--json"]) == 0
    )
    neighbours = json.loads(capsys.readouterr().out)
    assert len(neighbours) == 4
    assert all(n["genres"] == ["Comedy"] for n in neighbours)
    assert main(["similar", str(query), "--index", str(tmp_path / "nothing")]) == 2


def test_posters_are_found_from_any_folder_and_when_index_and_posters_move(
    tiny_folder, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tiny_folder.parent)  # index with a relative --folder, as a user would
    assert main(["index", "--folder", tiny_folder.name, "--out", "idx"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    index = PosterIndex.load(tiny_folder.parent / "idx")
    assert all(Path(item["path"]).is_file() for item in index.items)
    query = tiny_folder / "test" / "Drama" / "drama0.png"
    [first, *_] = index.similar(query, k=3)
    assert Path(first.path).is_file()

    # move the index and the posters together: the relative paths still find them
    moved = tmp_path / "moved"
    moved.mkdir()
    (tiny_folder.parent / "idx").rename(moved / "idx")
    tiny_folder.rename(moved / tiny_folder.name)
    index = PosterIndex.load(moved / "idx")
    assert all(Path(item["path"]).is_file() for item in index.items)
    assert all(str(moved) in item["path"] for item in index.items)


def test_rebuilding_an_index_swaps_it_whole(tiny_posters, tmp_path):
    records = read_folder(tiny_posters).records
    target = tmp_path / "index"
    PosterIndex.build(records[:5], progress=False).save(target)
    PosterIndex.build(records, progress=False).save(target)
    assert len(PosterIndex.load(target)) == len(records)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary


def test_an_ensemble_index_finds_same_genre_posters(tiny_posters, tmp_path, capsys):
    argv = ["index", "--folder", str(tiny_posters), "--split", "train", "--out",
            str(tmp_path / "idx"), "--arch", "efficientnet-lite012"]  # fmt: skip
    assert main(argv) == 0
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["arch"] == "efficientnet-lite012"
    query = tiny_posters / "test" / "Drama" / "drama1.png"
    capsys.readouterr()
    found = ["similar", str(query), "--index", str(tmp_path / "idx"), "--k", "3", "--json"]
    assert main(found) == 0
    neighbours = json.loads(capsys.readouterr().out)
    assert [n["genres"] for n in neighbours] == [["Drama"]] * 3


# -- any folder is a collection ---------------------------------------------------------------
FAST = ["--model", "imdb-20-fast", "--runtime", "torch"]  # Lite0 alone: quick to load here


def _similar_json(capsys, *argv: str) -> list[dict]:
    capsys.readouterr()
    assert main(["similar", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_an_unlabelled_folder_shows_predicted_genres_and_the_names_given(tmp_path, capsys):
    store = tmp_path / "store"
    for i, colour in enumerate([(200, 40, 30), (230, 210, 40), (40, 60, 190)] * 2):
        make_poster(store / f"{i:03d}.png", colour, seed=i)
    shelf = tmp_path / "shelf"  # what the user names: links with readable names
    shelf.mkdir()
    for i in range(6):
        (shelf / f"movie-{i}.png").symlink_to(store / f"{i:03d}.png")
    assert main(["index", str(shelf), "--out", str(tmp_path / "idx"), *FAST]) == 0
    assert "6 new, 0 removed, 0 kept" in capsys.readouterr().err
    index = PosterIndex.load(tmp_path / "idx")
    assert index.model == "imdb-20-fast" and index.probabilities.shape == (6, 20)
    assert not any(item["labelled"] for item in index.items)
    hits = _similar_json(capsys, str(store / "003.png"), "--index", str(tmp_path / "idx"))
    assert len(hits) == 5  # the query's own file is left out, whatever name it is given by
    for hit in hits:
        assert hit["name"].startswith("movie-") and hit["title"] is None
        assert hit["shown"].startswith(str(shelf)) and hit["path"].startswith(str(store))
        assert hit["genres_are"] == "predicted"
        assert hit["genres"] == index.predicted(index.find(hit["id"]))
    assert any(hit["genres"] for hit in hits)
    capsys.readouterr()
    assert main(["similar", "movie-1", "--index", str(tmp_path / "idx"), "--k", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 3 and "(predicted)" in table[1] and "movie-" in table[1]


def test_labelled_posters_keep_their_genres_and_titles(tmp_path, capsys):
    images = tmp_path / "images"
    rows = ["imdbId,Title,Genre"]
    for i, (genre, colour) in enumerate(
        [("Action", (200, 40, 30)), ("Comedy", (230, 210, 40))] * 3
    ):
        make_poster(images / f"tt{i:07d}.jpg", colour, seed=i)
        rows.append(f"{i},Film {i} (199{i}),{genre}|Drama")
    labels = tmp_path / "MovieGenre.csv"
    labels.write_text("\n".join(rows) + "\n")
    argv = ["index", "--labels", str(labels), "--out", str(tmp_path / "idx"), "--no-predict"]
    assert main(argv) == 0
    index = PosterIndex.load(tmp_path / "idx")
    assert index.probabilities is None and all(item["labelled"] for item in index.items)
    hits = _similar_json(capsys, "tt0000002", "--index", str(tmp_path / "idx"), "--k", "2")
    assert "tt0000002" not in [hit["id"] for hit in hits]
    assert [hit["genres"] for hit in hits] == [["Action", "Drama"]] * 2
    assert all(hit["name"] == hit["title"] and hit["title"].startswith("Film ") for hit in hits)
    by_path = _similar_json(capsys, str(images / "tt0000002.jpg"), "--index", str(tmp_path / "idx"))
    assert by_path[: len(hits)] == hits  # the same poster by path: itself left out again


def test_metadata_titles_an_unlabelled_folder(tiny_posters, tmp_path, capsys):
    meta = tmp_path / "meta.csv"
    meta.write_text("filename,title\ndrama0.png,Drama Zero\naction1,Action One\n")
    folder = str(tiny_posters / "train")
    argv = ["index", folder, "--out", str(tmp_path / "idx"), "--metadata", str(meta)]
    assert main([*argv, "--no-predict"]) == 0
    titles = {item["shown"]: item["title"] for item in PosterIndex.load(tmp_path / "idx").items}
    assert titles[f"{folder}/Drama/drama0.png"] == "Drama Zero"
    assert titles[f"{folder}/Action/action1.png"] == "Action One"
    assert titles[f"{folder}/Action/action0.png"] is None
    capsys.readouterr()
    untitled = tmp_path / "untitled.csv"
    untitled.write_text("id,genre\ndrama0,Drama\n")
    assert main([*argv[:-1], str(untitled), "--no-predict"]) == 2
    assert "no title column" in capsys.readouterr().err


def test_an_update_embeds_and_scores_only_new_and_changed_posters(tmp_path, monkeypatch, capsys):
    from postergenre.inference import Predictor
    from postergenre.inference.index_build import build_index
    from postergenre.models import embeddings

    folder = make_tiny_folder(tmp_path / "posters", per_genre=(4, 0, 0))
    predictor = Predictor.from_pretrained("imdb-20-fast", runtime="torch")
    embedded: list[int] = []
    scored: list[int] = []
    real_embed, real_predict = embeddings.compute_embeddings, predictor.predict
    monkeypatch.setattr(
        embeddings,
        "compute_embeddings",
        lambda arch, paths, *a, **k: (
            embedded.append(len(paths)) or real_embed(arch, paths, *a, **k)
        ),
    )
    monkeypatch.setattr(
        predictor,
        "predict",
        lambda files, **k: scored.append(len(files.paths)) or real_predict(files, **k),
    )
    first = build_index(folder, model=predictor, progress=False)
    assert (embedded, scored, len(first)) == ([12], [12], 12)
    make_poster(folder / "train" / "Drama" / "new0.png", (40, 60, 190), seed=90)
    make_poster(folder / "new1.png", (200, 40, 30), seed=91)
    (folder / "train" / "Action" / "action0.png").unlink()
    changed = folder / "train" / "Comedy" / "comedy1.png"
    make_poster(changed, (200, 40, 30), seed=92)  # rewritten: another size or mtime
    second = build_index(folder, model=predictor, previous=first, progress=False)
    assert (embedded[1:], scored[1:]) == ([3], [3])
    assert second.changes.describe() == "2 new, 1 changed, 1 removed, 10 kept"
    assert len(second) == 13
    kept = first.find(str(folder / "train" / "Drama" / "drama2.png"))
    same = second.find(str(folder / "train" / "Drama" / "drama2.png"))
    np.testing.assert_array_equal(second.vectors[same], first.vectors[kept])
    np.testing.assert_array_equal(second.probabilities[same], first.probabilities[kept])
    capsys.readouterr()
    third = build_index(folder, arch="efficientnet-lite1", model=None, previous=second,
                        progress=False)  # fmt: skip
    assert third.changes.describe() == "13 new, 0 removed, 0 kept"
    assert "built whole again: it holds efficientnet-lite0 embeddings" in capsys.readouterr().err


def test_index_cli_updates_an_existing_index_in_place(tiny_folder, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", str(tiny_folder), "--out", str(out), "--no-predict"]) == 0
    (tiny_folder / "test" / "Drama" / "drama0.png").unlink()
    make_poster(tiny_folder / "extra.png", (1, 2, 3))
    capsys.readouterr()
    assert main(["index", str(tiny_folder), "--out", str(out), "--no-predict"]) == 0
    err = capsys.readouterr().err
    assert "indexed 48 posters (efficientnet-lite0) in" in err
    assert err.strip().endswith("1 new, 1 removed, 47 kept")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # swapped whole


def test_index_folder_honours_the_umask_or_is_private(tiny_posters, tmp_path):
    previous = os.umask(0o022)
    try:
        for name, extra in (("shared", []), ("mine", ["--private"])):
            argv = ["index", str(tiny_posters / "val"), "--out", str(tmp_path / name)]
            assert main([*argv, "--no-predict", *extra]) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o755
    for name in ("index.json", "index.safetensors"):
        assert stat.S_IMODE((tmp_path / "shared" / name).stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "mine").stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "case", ["empty folder", "symlink loop", "out is a file", "out is foreign", "both", "none"]
)
def test_index_refusals_are_one_line(case, tiny_posters, tmp_path, capsys):
    source, out = str(tiny_posters / "val"), tmp_path / "idx"
    argv = ["index", source, "--out", str(out), "--no-predict"]
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        argv[1] = str(tmp_path / "empty")
    elif case == "symlink loop":
        (tmp_path / "loop").symlink_to(tmp_path / "loop")
        argv[1] = str(tmp_path / "loop")
    elif case == "out is a file":
        out.write_text("precious")
    elif case == "out is foreign":
        out.mkdir()
        (out / "thesis.tex").write_text("precious")
    elif case == "both":
        argv += ["--folder", source]
    else:
        argv.pop(1)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("postergenre index: error: "), err
    if case in ("out is a file", "out is foreign"):
        assert "precious" in (
            out.read_text() if out.is_file() else (out / "thesis.tex").read_text()
        )


def test_an_unknown_id_is_refused_in_one_line(tiny_posters, tmp_path, capsys):
    assert (
        main(["index", str(tiny_posters / "val"), "--out", str(tmp_path / "i"), "--no-predict"])
        == 0
    )
    capsys.readouterr()
    assert main(["similar", "tt9999999", "--index", str(tmp_path / "i")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["postergenre similar: error: tt9999999: no poster of this id or path in the "
                   "index, and no such file"]  # fmt: skip


def test_neighbours_of_an_item_leave_it_out_even_among_exact_copies():
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    items = [{"id": f"p{i}", "path": f"/p{i}.png", "genres": []} for i in range(4)]
    index = PosterIndex("efficientnet-lite0", items, vectors)
    for i in range(3):
        found = index.neighbours_of(i, k=2)
        assert len(found) == 2 and i not in [n.position for n in found]
        assert all(n.similarity > 0.99 for n in found)  # the two other copies
