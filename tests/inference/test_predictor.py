"""Bundles and the Predictor API on a freshly built (untrained) model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from postergenre.data.transforms import UNIT_RANGE, InputSpec
from postergenre.errors import PosterDecodeError, UserError
from postergenre.inference import Predictor, resolve_model
from postergenre.models import create_model
from postergenre.models.bundle import load_bundle, save_bundle
from tests.conftest import make_poster, make_seed_bundle

GENRES = ["Action", "Comedy", "Drama"]


@pytest.fixture
def bundle_dir(tmp_path):
    return make_seed_bundle(tmp_path / "bundle")


def test_bundle_round_trip_is_exact_and_pickle_free(bundle_dir):
    files = sorted(p.name for p in bundle_dir.iterdir())
    assert files == ["model.json", "model.safetensors"]
    meta = json.loads((bundle_dir / "model.json").read_text())
    assert meta["format"] == "postergenre-bundle" and meta["weights"] == "full"
    loaded = load_bundle(bundle_dir)
    torch.manual_seed(0)
    reference = create_model("seed-cnn", 3)
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    assert not loaded.model.training


def test_save_bundle_replaces_an_existing_bundle_atomically(bundle_dir):
    model = create_model("seed-cnn", 2)
    meta = {
        "architecture": "seed-cnn",
        "task": "single",
        "genres": ["A", "B"],
        "input": InputSpec(150, 150, "squash", UNIT_RANGE).to_json(),
    }
    save_bundle(bundle_dir, model, meta)
    assert load_bundle(bundle_dir).genres == ["A", "B"]
    leftovers = [p.name for p in bundle_dir.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_predictor_ranks_genres_and_handles_bad_files(bundle_dir, tmp_path):
    predictor = Predictor.from_pretrained(bundle_dir)
    poster = make_poster(tmp_path / "p.png", (100, 20, 20))
    [prediction] = predictor.predict([poster])
    probs = [p for _, p in prediction.genres]
    assert sorted(g for g, _ in prediction.genres) == GENRES
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert prediction.predicted == [prediction.genres[0][0]]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(PosterDecodeError):
        predictor.predict([bad])


def test_predict_pixels_is_batch_invariant(bundle_dir):
    predictor = Predictor.from_pretrained(bundle_dir)
    pixels = np.random.default_rng(0).integers(0, 256, (5, 150, 150, 3), dtype=np.uint8)
    together = predictor.predict_pixels(pixels)
    one_by_one = np.concatenate([predictor.predict_pixels(pixels[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_resolve_model_accepts_run_folders_and_rejects_junk(bundle_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (bundle_dir).rename(run / "model")
    assert resolve_model(run) == run / "model"
    with pytest.raises(UserError, match="no model at"):
        resolve_model(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_bundle(broken)
