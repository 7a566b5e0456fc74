"""End to end on a slice of the real posters in ../shared (skipped when it is absent)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from postergenre.cli import main
from postergenre.data.labels import load_posters

pytestmark = pytest.mark.integration


def _slice_three_genre(data: Path, out: Path, per_split: dict[str, int]) -> Path:
    """The first N posters per split and genre of three_genre.csv (about 200 in all)."""
    taken: dict[tuple[str, str], int] = {}
    rows = []
    with (data / "three_genre.csv").open() as handle:
        for row in csv.DictReader(handle):
            key = (row["split"], row["genre"])
            if taken.get(key, 0) < per_split[row["split"]]:
                taken[key] = taken.get(key, 0) + 1
                rows.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "genre", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_shared_label_files_load_as_they_are(shared_data):
    full = load_posters(labels=shared_data / "train.csv", splits=shared_data / "splits.csv")
    assert len(full) == 7242  # 7,254 rows less the 12 exact duplicates
    assert {r.split for r in full.records} == {"train", "val", "test"}
    assert not any("N/A" in r.genres for r in full.records)
    assert any("duplicate" in w for w in full.warnings)
    three = load_posters(labels=shared_data / "three_genre.csv", images=shared_data / "images")
    assert len(three) == 4307
    test = three.split("test")
    assert sorted(test.genre_counts().items()) == [("Action", 150), ("Comedy", 150), ("Drama", 150)]


def test_train_evaluate_predict_on_200_real_posters(shared_data, tmp_path, capsys):
    labels = _slice_three_genre(
        shared_data, tmp_path / "slice.csv", {"train": 40, "val": 10, "test": 17}
    )
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--labels",
                str(labels),
                "--images",
                str(shared_data / "images"),
                "--arch",
                "seed-cnn",
                "--out",
                str(run),
                "--epochs",
                "2",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run),
                "--labels",
                str(labels),
                "--images",
                str(shared_data / "images"),
                "--split",
                "test",
                "--json",
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 51
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert sum(row["support"] for row in metrics["per_genre"].values()) == 51
    poster = next((shared_data / "images").glob("*.jpg"))
    assert main(["predict", "--model", str(run), str(poster), "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert len(entry["genres"]) == 3
