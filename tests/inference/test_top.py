"""`--top N`: at most N genres per poster in every format: the N most probable are listed, and
the predicted genres are those among them; CSV and Parquet keep every probability column."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from postergenre.cli import main
from postergenre.inference.predictions import Prediction, Predictions
from tests.conftest import make_card, make_poster

GENRES = ("Action", "Comedy", "Drama", "Horror")


def test_top_predicted_keeps_the_predicted_genres_among_the_top():
    ranked = [("Drama", 0.9), ("Comedy", 0.5), ("Action", 0.4), ("Horror", 0.1)]
    prediction = Prediction("p.jpg", ranked, ["Drama", "Comedy", "Action"])
    assert prediction.top_predicted() == ["Drama", "Comedy", "Action"]
    assert prediction.top_predicted(2) == ["Drama", "Comedy"]
    assert prediction.top_predicted(10) == ["Drama", "Comedy", "Action"]
    item = prediction.to_json(top=1)
    assert [g["genre"] for g in item["genres"]] == ["Drama"] and item["predicted"] == ["Drama"]


@pytest.fixture(scope="module")
def every_genre(tmp_path_factory) -> Path:
    """A multi-label bundle whose thresholds (0) predict every genre of every poster."""
    import torch

    from postergenre.models import create_model
    from postergenre.models.bundle import save_bundle

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("top") / "bundle"
    card = make_card("seed-cnn", GENRES, task="multi", thresholds=(0.0,) * 4, name="all")
    return save_bundle(folder, create_model("seed-cnn", len(GENRES)), card)


@pytest.fixture(scope="module")
def posters(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("top-posters")
    return [make_poster(folder / f"p{i}.png", (50 * i, 90, 200), i) for i in range(3)]


def test_json_lists_at_most_top_genres_and_predicted(every_genre, posters, capsys):
    argv = ["predict", "--model", str(every_genre), "--runtime", "torch"]
    assert main([*argv, *map(str, posters), "--json"]) == 0
    assert all(len(item["predicted"]) == 4 for item in json.loads(capsys.readouterr().out))
    assert main([*argv, *map(str, posters), "--json", "--top", "2"]) == 0
    for item in json.loads(capsys.readouterr().out):
        shown = [g["genre"] for g in item["genres"]]
        assert len(shown) == 2 and item["predicted"] == shown


def test_table_marks_and_says_the_cap(every_genre, posters, capsys):
    argv = ["predict", "--model", str(every_genre), "--runtime", "torch", str(posters[0])]
    assert main([*argv, "--top", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("  * ") for line in out) == 3
    assert out[-1].endswith("; at most 3 per poster (--top)")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_files_cap_predicted_and_csv_keeps_every_column(every_genre, posters, tmp_path, suffix):
    out = tmp_path / f"preds{suffix}"
    argv = ["predict", "--model", str(every_genre), "--runtime", "torch"]
    assert main([*argv, *map(str, posters), "--out", str(out), "--top", "1"]) == 0
    if suffix == ".csv":
        with out.open() as handle:
            rows = list(csv.DictReader(handle))
        assert all(list(row)[1:5] == list(GENRES) for row in rows)  # every probability column
        for row in rows:
            best = max(GENRES, key=lambda g: float(row[g]))
            assert row["predicted"] == best
    else:
        text = out.read_text()
        items = json.loads(text) if suffix == ".json" else list(map(json.loads, text.splitlines()))
        assert len(items) == 3
        assert all(len(i["genres"]) == 1 and i["predicted"] == [i["genres"][0]["genre"]]
                   for i in items)  # fmt: skip


def test_predictions_write_caps_parquet_too(every_genre, posters, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from postergenre.models.card import ModelCard

    card = ModelCard.read(every_genre)
    probs = np.array([[0.9, 0.8, 0.7, 0.6]])
    path = Predictions(card, ["p.jpg"], probs).write(tmp_path / "p.parquet", top=2)
    row = pq.read_table(path).to_pylist()[0]
    assert row["predicted"] == "Action|Comedy" and row["Horror"] == pytest.approx(0.6)
