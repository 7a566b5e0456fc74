"""ONNX export and the ONNX Runtime predictor: same probabilities as PyTorch, dynamic batch,
self-describing metadata, cached exports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from postergenre.data.decode import decode_poster
from postergenre.errors import UserError
from postergenre.inference import Predictor
from postergenre.models import create_model
from postergenre.models.bundle import save_bundle
from tests.conftest import GENRE_COLOURS, make_card, make_seed_bundle

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from postergenre.export import export_onnx  # noqa: E402
from postergenre.inference.graph_cache import graph_cache_path  # noqa: E402
from postergenre.inference.onnx_runtime import OnnxRunner  # noqa: E402

GENRES = list(GENRE_COLOURS)


@pytest.fixture(scope="module")
def probe_bundle(tiny_posters, tmp_path_factory) -> Path:
    """A linear probe on EfficientNet-Lite0 (its bundle stores only the head), trained once."""
    from postergenre.training.run import TrainConfig, train

    config = TrainConfig(
        out=tmp_path_factory.mktemp("run"),
        folder=tiny_posters,
        arch="efficientnet-lite0",
        progress=False,
    )
    return train(config)


@pytest.fixture
def seed_bundle(tmp_path) -> Path:
    return make_seed_bundle(tmp_path / "bundle")


def _torch_vs_onnx(bundle: Path, onnx_path: Path, paths: list[Path]) -> float:
    """Largest probability difference between Predictor(torch) and the raw ONNX file."""
    predictor = Predictor.from_pretrained(bundle, runtime="torch")
    spec = predictor.input_spec
    pixels = np.stack([predictor.preprocess(decode_poster(p)) for p in paths])
    expected = predictor.predict_pixels(pixels)
    got = OnnxRunner(onnx_path)(spec.normalise(pixels))
    return float(np.abs(got - expected).max())


def _check_file(path: Path, genres: list[str], task: str, shape: tuple[int, int]) -> None:
    """Loads in ONNX Runtime, batch axis dynamic (1 and 3), probabilities, metadata."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [inp] = session.get_inputs()
    height, width = shape
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, height, width]
    assert isinstance(session.get_outputs()[0].shape[0], str)
    for batch in (1, 3):
        x = np.random.default_rng(batch).normal(size=(batch, 3, height, width)).astype(np.float32)
        [probs] = session.run(None, {inp.name: x})
        assert probs.shape == (batch, len(genres))
        assert np.all((probs >= 0) & (probs <= 1))
        if task == "single":
            np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["genres"]) == genres
    assert meta["task"] == task
    spec = json.loads(meta["input"])
    assert (spec["width"], spec["height"]) == (width, height)
    assert {"resize", "mean", "std"} <= set(spec)
    assert {"architecture", "thresholds", "postergenre_version"} <= set(meta)
    onnx.checker.check_model(onnx.load(str(path)))


def test_seed_cnn_export_matches_torch(seed_bundle, tiny_posters, tmp_path):
    paths = sorted((tiny_posters / "test").rglob("*.png"))
    out = tmp_path / "out" / "seed.onnx"
    report = export_onnx(seed_bundle, out, images=paths[:4])
    assert report["path"] == str(out) and out.stat().st_size == report["size_bytes"]
    assert report["n_checked"] == 3 + 1 + 4 and report["max_abs_diff"] <= 1e-4
    assert [p.name for p in out.parent.iterdir()] == ["seed.onnx"]  # no temporary left
    _check_file(out, GENRES, "single", (150, 150))
    assert _torch_vs_onnx(seed_bundle, out, paths) <= 1e-4


def test_linear_probe_onnx_predictor_matches_torch(probe_bundle, tiny_posters):
    paths = sorted((tiny_posters / "test").rglob("*.png"))
    onnx_predictor = Predictor.from_pretrained(probe_bundle, runtime="onnx")  # exports to cache
    assert onnx_predictor.runtime == "onnx" and onnx_predictor.model is not None
    exported = onnx_predictor.onnx_runner.path
    _check_file(exported, GENRES, "single", (336, 224))

    torch_predictions = Predictor.from_pretrained(probe_bundle, runtime="torch").predict(paths)
    onnx_predictions = onnx_predictor.predict(paths)
    worst = 0.0
    for a, b in zip(torch_predictions, onnx_predictions, strict=True):
        assert [g for g, _ in a.genres] == [g for g, _ in b.genres]  # same ranking
        assert a.predicted == b.predicted
        worst = max(worst, max(abs(p - dict(b.genres)[g]) for g, p in a.genres))
    assert worst <= 1e-4
    assert (
        sum(p.predicted[0] == q.parent.name for p, q in zip(onnx_predictions, paths, strict=True))
        >= 11
    )

    # exported once into the cache (keyed by the bundle's content), then reused
    mtime = exported.stat().st_mtime_ns
    again = Predictor.from_pretrained(probe_bundle, runtime="onnx").onnx_runner.path
    assert again == exported and exported.stat().st_mtime_ns == mtime
    assert graph_cache_path("efficientnet-lite0", probe_bundle, None, None) == exported
    assert not [p for p in exported.parent.iterdir() if p.suffix != ".onnx"]  # no temporaries
    assert exported.parent == Path(os.environ["POSTERGENRE_CACHE"]) / "onnx"


def test_knn_export_is_exact(tmp_path):
    torch.manual_seed(0)
    model = create_model("knn", 3)
    labels = torch.nn.functional.one_hot(torch.arange(30) % 3, 3).float()
    model.set_memory(torch.randn(30, 1280).abs(), labels, k=5, multi=True)
    card = make_card("knn", GENRES, "multi", "knn", thresholds=(0.4,) * len(GENRES))
    bundle = save_bundle(tmp_path / "knn", model, card)
    report = export_onnx(bundle, tmp_path / "knn.onnx")
    assert report["max_abs_diff"] <= 1e-4
    runner = OnnxRunner(tmp_path / "knn.onnx")
    assert json.loads(runner.metadata["thresholds"]) == {g: 0.4 for g in GENRES}


def test_an_ensemble_is_one_graph_with_one_input(tiny_posters, tmp_path):
    torch.manual_seed(0)
    model = create_model("efficientnet-lite012", 3, pretrained=True)
    card = make_card("efficientnet-lite012", GENRES, "multi", "linear-head")
    bundle = save_bundle(tmp_path / "ensemble", model, card)
    report = export_onnx(bundle, tmp_path / "ensemble.onnx")
    assert report["max_abs_diff"] <= 1e-4
    _check_file(tmp_path / "ensemble.onnx", GENRES, "multi", (336, 224))
    paths = sorted((tiny_posters / "test").rglob("*.png"))[:4]
    assert _torch_vs_onnx(bundle, tmp_path / "ensemble.onnx", paths) <= 1e-4


def test_export_of_a_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no model at"):
        export_onnx(tmp_path / "nothing", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_unknown_runtime_is_a_user_error(seed_bundle):
    with pytest.raises(UserError, match="unknown runtime"):
        Predictor.from_pretrained(seed_bundle, runtime="tensorrt")


def test_mismatch_writes_nothing_and_in_memory_bundles_export(seed_bundle, tmp_path):
    from postergenre.export import OnnxMismatchError
    from postergenre.models.bundle import load_bundle

    (tmp_path / "out").mkdir()
    with pytest.raises(OnnxMismatchError, match="nothing written"):
        export_onnx(seed_bundle, tmp_path / "out" / "x.onnx", tolerance=-1.0)
    assert list((tmp_path / "out").iterdir()) == []
    # A Predictor built from a loaded bundle (no folder) exports it from memory.
    bundle = load_bundle(seed_bundle)
    onnx_predictor = Predictor(bundle, runtime="onnx")
    pixels = np.random.default_rng(0).integers(0, 256, (2, 150, 150, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        onnx_predictor.predict_pixels(pixels), Predictor(bundle).predict_pixels(pixels), atol=1e-4
    )
