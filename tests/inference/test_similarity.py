"""The similar-poster index: build, save, load, search."""

from __future__ import annotations

import json

import numpy as np

from postergenre.cli import main
from postergenre.data.labels import read_folder
from postergenre.inference.similarity import PosterIndex


def test_index_round_trip_and_search(tiny_folder, tmp_path):
    records = read_folder(tiny_folder).records
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


def test_similar_cli_finds_same_genre_posters(tiny_folder, tmp_path, capsys):
    assert (
        main(
            [
                "index",
                "--folder",
                str(tiny_folder),
                "--split",
                "train",
                "--out",
                str(tmp_path / "idx"),
            ]
        )
        == 0
    )
    query = tiny_folder / "test" / "Comedy" / "comedy0.png"
    assert (
        main(["similar", str(query), "--index", str(tmp_path / "idx"), "--k", "4", "--json"]) == 0
    )
    neighbours = json.loads(capsys.readouterr().out)
    assert len(neighbours) == 4
    assert all(n["genres"] == ["Comedy"] for n in neighbours)
    assert main(["similar", str(query), "--index", str(tmp_path / "nothing")]) == 2
