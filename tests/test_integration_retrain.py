"""Retraining from corrections and finding label issues on a slice of the real posters in
../shared (skipped when it is absent)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from postergenre.curation.label_issues import label_issues_of
from postergenre.data.labels import load_posters
from postergenre.inference import Predictor
from postergenre.models import ModelCard
from postergenre.models.catalog import resolve_model
from postergenre.training.retrain import retrain_from_corrections

pytestmark = pytest.mark.integration
SLICE = 150


@pytest.fixture(scope="module")
def reviewed(shared_data):
    """The first SLICE posters of the training split."""
    posters = load_posters(labels=shared_data / "train.csv", splits=shared_data / "splits.csv")
    return posters.split("train").records[:SLICE]


def test_retrain_150_real_corrections_from_imdb_20_fast(reviewed, tmp_path):
    labels = tmp_path / "collection" / "corrections.csv"
    labels.parent.mkdir()
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "path", "title", "genres", "reviewed", "reviewed_at"])
        for r in reviewed:
            writer.writerow([r.id, r.path, "", "|".join(r.genres), 1, "2026-12-03T10:11:12Z"])

    bundle = retrain_from_corrections(labels, tmp_path / "run", init_from="imdb-20-fast")

    card = json.loads((bundle / "model.json").read_text())
    init_genres = ModelCard.read(resolve_model("imdb-20-fast")).genres
    assert card["genres"] == list(init_genres)
    assert card["training"]["splits"] == {"train": SLICE - 15, "val": 15}
    shown = {g for r in reviewed for g in r.genres}
    assert set(card["training"]["init_from"]["kept_genres"]) >= set(init_genres) - shown
    (prediction,) = Predictor.from_pretrained(bundle, runtime="torch").predict([reviewed[0].path])
    assert len(prediction.genres) == 20
    assert all(0 <= p <= 1 for _, p in prediction.genres)


def test_label_issues_on_150_real_posters(reviewed):
    records, issues = label_issues_of(reviewed, progress=False)

    assert len(records) == SLICE
    assert issues.oof_probabilities.shape == (SLICE, len(issues.genre_names))
    assert "Drama" in issues.genre_names and "Reality-TV" not in issues.genre_names
    assert np.isfinite(issues.quality).all()
    # On IMDb's labels cleanlab flags most posters (BENCHMARKS.md): assert its ordering only.
    flagged = issues.flagged
    assert 0 < flagged.sum() < SLICE
    assert issues.quality[flagged].mean() < issues.quality[~flagged].mean()
    assert flagged[issues.ranked()[: flagged.sum()]].all()
    assert [r.id for r in records] == [r.id for r in reviewed]
