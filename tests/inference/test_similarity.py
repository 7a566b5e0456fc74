"""The similar-poster index: build, save, load, search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from postergenre.cli import main
from postergenre.data.labels import read_folder
from postergenre.inference.similarity import PosterIndex


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
