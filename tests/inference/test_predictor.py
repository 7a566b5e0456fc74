"""Bundles and the Predictor API on a freshly built (untrained) model."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from postergenre.errors import PosterDecodeError, UserError
from postergenre.inference import Predictor, resolve_model
from postergenre.models import create_model
from postergenre.models.bundle import load_bundle, save_bundle
from tests.conftest import make_card, make_poster, make_seed_bundle

GENRES = ["Action", "Comedy", "Drama"]


@pytest.fixture
def bundle_dir(tmp_path):
    return make_seed_bundle(tmp_path / "bundle")


def test_bundle_round_trip_is_exact_and_pickle_free(bundle_dir):
    files = sorted(p.name for p in bundle_dir.iterdir())
    assert files == ["model.json", "model.safetensors"]
    card = json.loads((bundle_dir / "model.json").read_text())
    assert card["format"] == "postergenre-bundle" and card["kind"] == "network"
    assert card["format_version"] == 2
    loaded = load_bundle(bundle_dir)
    torch.manual_seed(0)
    reference = create_model("seed-cnn", 3)
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    assert not loaded.model.training


def test_save_bundle_replaces_an_existing_bundle_atomically(bundle_dir):
    model = create_model("seed-cnn", 2)
    save_bundle(bundle_dir, model, make_card("seed-cnn", ["A", "B"]))
    assert load_bundle(bundle_dir).genres == ["A", "B"]
    leftovers = [p.name for p in bundle_dir.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_predictor_ranks_genres_and_a_single_bad_file_is_an_error(bundle_dir, tmp_path):
    predictor = Predictor.from_pretrained(bundle_dir, runtime="torch")
    poster = make_poster(tmp_path / "p.png", (100, 20, 20))
    [prediction] = predictor.predict(poster)
    probs = [p for _, p in prediction.genres]
    assert sorted(g for g, _ in prediction.genres) == GENRES
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert prediction.predicted == [prediction.genres[0][0]]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(PosterDecodeError):
        predictor.predict(bad)


def test_in_a_collection_bad_files_are_skipped_with_their_reason(bundle_dir, tmp_path):
    folder = tmp_path / "posters"
    good = [make_poster(folder / f"{i}.png", (20 * i, 90, 40), seed=i) for i in range(3)]
    (folder / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / "notes.txt").write_text("not a poster name: ignored")
    predictor = Predictor.from_pretrained(bundle_dir, runtime="torch")
    for source in (folder, str(folder / "*.*g"), [*good, folder / "bad.jpg"]):
        predictions = predictor.predict(source)
        assert sorted(predictions.paths) == sorted(map(str, good)), source
        [(path, reason)] = predictions.skipped.items()
        assert path.endswith("bad.jpg") and "not an image" in reason
        assert predictions.probabilities.shape == (3, 3)
    # the cached road (large collections) and the streaming road give the same numbers
    cached = predictor.predict(folder, cache=True)
    streamed = predictor.predict(folder, cache=False)
    np.testing.assert_allclose(cached.probabilities, streamed.probabilities, atol=1e-6)


def test_missing_sources_are_user_errors(bundle_dir, tmp_path):
    predictor = Predictor.from_pretrained(bundle_dir, runtime="torch")
    with pytest.raises(UserError, match="no such file"):
        predictor.predict(tmp_path / "missing.jpg")
    with pytest.raises(UserError, match="no images match"):
        predictor.predict(str(tmp_path / "*.jpg"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images found"):
        predictor.predict(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"nope")
    with pytest.raises(UserError, match="none of the 2 posters"):
        predictor.predict([tmp_path / "junk" / "a.png", tmp_path / "junk" / "a.png"])


def test_predictions_write_csv_json_jsonl_and_parquet(bundle_dir, tmp_path):
    folder = tmp_path / "posters"
    for i in range(4):
        make_poster(folder / f"{i}.png", (60 * i, 30, 200 - 40 * i), seed=i)
    predictions = Predictor.from_pretrained(bundle_dir, runtime="torch").predict(folder)

    with (predictions.write(tmp_path / "p.csv")).open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["path", *GENRES, "predicted"]
    assert len(rows) == 5
    for row, probs in zip(rows[1:], predictions.probabilities, strict=True):
        np.testing.assert_allclose([float(v) for v in row[1:4]], probs, atol=1e-6)
        assert row[4] == GENRES[int(np.argmax(probs))]

    listed = json.loads(predictions.write(tmp_path / "p.json", top=2).read_text())
    assert len(listed) == 4 and all(len(item["genres"]) == 2 for item in listed)
    lines = predictions.write(tmp_path / "p.jsonl").read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines] == predictions.paths

    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(predictions.write(tmp_path / "p.parquet"))
    assert table.column_names == ["path", *GENRES, "predicted"] and table.num_rows == 4
    with pytest.raises(UserError, match="cannot tell the format"):
        predictions.write(tmp_path / "p.xlsx")
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_multi_label_predicted_genres_follow_thresholds_most_probable_first(tmp_path):
    torch.manual_seed(1)
    card = make_card("seed-cnn", GENRES, "multi", thresholds=(0.0, 1.0, 0.0))
    folder = save_bundle(tmp_path / "multi", create_model("seed-cnn", 3), card)
    predictor = Predictor.from_pretrained(folder, runtime="torch")
    [prediction] = predictor.predict(make_poster(tmp_path / "p.png", (10, 200, 10)))
    probs = dict(prediction.genres)
    assert set(prediction.predicted) == {"Action", "Drama"}  # Comedy's threshold is 1.0
    assert prediction.predicted == sorted(prediction.predicted, key=lambda g: -probs[g])


def test_predict_pixels_is_batch_invariant(bundle_dir):
    predictor = Predictor.from_pretrained(bundle_dir, runtime="torch")
    pixels = np.random.default_rng(0).integers(0, 256, (5, 150, 150, 3), dtype=np.uint8)
    together = predictor.predict_pixels(pixels)
    one_by_one = np.concatenate([predictor.predict_pixels(pixels[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_the_torch_model_loads_only_when_needed(bundle_dir):
    predictor = Predictor.from_pretrained(bundle_dir, runtime="torch")
    assert predictor._bundle is None  # from_pretrained reads the card only
    assert predictor.model is predictor.model  # loaded once


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


def test_the_onnx_road_imports_no_torch_sklearn_or_matplotlib(bundle_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    poster = make_poster(tmp_path / "p.png", (200, 30, 30))
    Predictor.from_pretrained(bundle_dir, runtime="onnx").predict(poster)  # exports once
    code = (
        "import sys\n"
        "from postergenre.inference import Predictor\n"
        f"p = Predictor.from_pretrained({str(bundle_dir)!r})\n"
        f"print(p.runtime, p.predict({str(poster)!r})[0].predicted[0])\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    first, second = result.stdout.splitlines()
    runtime, genre = first.split()
    assert runtime == "onnx" and genre in GENRES
    assert second == "[]", second
    expected = Predictor.from_pretrained(bundle_dir, runtime="torch").predict(poster)[0]
    assert genre == expected.predicted[0]
