"""A predictions journal started with one threshold policy is not resumed with another: its
rows hold predicted genres."""

from __future__ import annotations

import pytest

from postergenre.data.sources import open_sources
from postergenre.inference import Predictor
from postergenre.inference.journal import NotThisRun, PredictionJournal
from postergenre.inference.streaming import journal_start
from tests.conftest import make_poster, make_seed_bundle


def test_the_journal_binds_a_non_default_policy(tmp_path):
    bundle = make_seed_bundle(tmp_path / "model", task="multi",
                              threshold_policies={"shared": (0.3,) * 3,
                                                  "per-genre": (0.2, 0.4, 0.6)})  # fmt: skip
    make_poster(tmp_path / "posters" / "a.png", (200, 0, 0))
    sources = open_sources([str(tmp_path / "posters")])
    starts = {
        policy: journal_start(
            Predictor.from_pretrained(bundle, "torch", threshold_policy=policy), sources
        )
        for policy in ("card", "shared", "per-genre")
    }
    assert "threshold_policy" not in starts["card"]  # journals of earlier versions still resume
    assert starts["per-genre"]["threshold_policy"] == "per-genre"
    out = tmp_path / "preds.csv"
    genres = ["Action", "Comedy", "Drama"]
    PredictionJournal(out, genres, "seed", started_on=starts["per-genre"]).close()
    for other in ("card", "shared"):
        with pytest.raises(NotThisRun, match="another threshold policy"):
            PredictionJournal(out, genres, "seed", resume=True, started_on=starts[other])
    PredictionJournal(out, genres, "seed", resume=True, started_on=starts["per-genre"]).close()
