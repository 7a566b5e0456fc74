"""Fixtures for the web app: a linear probe and an index trained once on tiny posters."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from postergenre.data.labels import read_folder
from postergenre.inference import Predictor
from postergenre.inference.similarity import PosterIndex
from postergenre.serving.app import create_app
from postergenre.training.run import TrainConfig, train
from tests.conftest import make_tiny_folder


@pytest.fixture(scope="session")
def serving_posters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny_folder layout, built once for all the serving tests."""
    return make_tiny_folder(tmp_path_factory.mktemp("serving") / "posters")


@pytest.fixture(scope="session")
def serving_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving-cache")


def _train(posters: Path, cache: Path, out: Path, task: str) -> Predictor:
    cfg = TrainConfig(
        out=out,
        folder=posters,
        arch="efficientnet-lite0",
        task=task,
        progress=False,
        cache_dir=cache,
    )
    return Predictor.from_pretrained(train(cfg))


@pytest.fixture(scope="session")
def predictor(serving_posters, serving_cache, tmp_path_factory) -> Predictor:
    """Single-label Action / Comedy / Drama linear probe on EfficientNet-Lite0."""
    return _train(serving_posters, serving_cache, tmp_path_factory.mktemp("run") / "r", "single")


@pytest.fixture(scope="session")
def multi_predictor(serving_posters, serving_cache, tmp_path_factory) -> Predictor:
    """The same data as a multi-label model (sigmoids and per-genre thresholds)."""
    return _train(serving_posters, serving_cache, tmp_path_factory.mktemp("run") / "m", "multi")


@pytest.fixture(scope="session")
def poster_index(serving_posters, serving_cache) -> PosterIndex:
    records = read_folder(serving_posters).records
    return PosterIndex.build(records, cache_dir=serving_cache, progress=False)


@pytest.fixture(scope="session")
def collection_folder(tmp_path_factory, poster_index, multi_predictor, serving_cache) -> Path:
    """The tiny posters as an index folder, scored by the multi-label probe, every other one
    titled (`Film 01`, `Film 03`, ...): a collection to review. Tests change copies of it."""
    from postergenre.curation.scores import head_scores

    scores, why = head_scores(multi_predictor, poster_index, serving_cache)
    assert scores is not None, why
    items = [
        {**item, "title": f"Film {i:02d}" if i % 2 else None, "labelled": True}
        for i, item in enumerate(poster_index.items)
    ]
    index = PosterIndex(
        poster_index.arch,
        items,
        poster_index.vectors,
        probabilities=scores.probabilities,
        genre_names=scores.genre_names,
        thresholds=[float(t) for t in scores.thresholds],
        model=multi_predictor.name,
    )
    return index.save(tmp_path_factory.mktemp("collection") / "index")


@pytest.fixture(scope="module")
def client(predictor, poster_index):
    """The app with an index and a 64 kB upload limit (SI, like the server's), lifespan running.

    One per test module: its tests only send requests (the batcher's counters are the only
    state they change, and none of them reads those); a test that changes the app or needs
    fresh counters builds its own with `create_app`.
    """
    app = create_app(predictor, poster_index, max_upload_bytes=64_000, warmup=False)
    with TestClient(app) as test_client:
        yield test_client


def png_bytes(colour: tuple[int, int, int] = (230, 210, 40), size=(40, 60), seed: int = 0) -> bytes:
    """A small noisy poster of one dominant colour, as PNG bytes."""
    rng = np.random.default_rng(seed)
    pixels = np.array(colour, dtype=np.float64) + rng.normal(0, 25, size=(size[1], size[0], 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def jpeg_bytes(size=(200, 300), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()
