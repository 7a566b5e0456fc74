"""Linear probes and k-NN on frozen EfficientNet-Lite0 embeddings, on tiny generated posters."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from postergenre.cli import main
from postergenre.inference import Predictor
from postergenre.models.embeddings import compute_embeddings
from postergenre.training.run import TrainConfig, train
from tests.conftest import folder_state, make_poster


def test_linear_probe_bundle_stores_only_the_head(tiny_posters, tmp_path):
    bundle = train(
        TrainConfig(
            out=tmp_path / "run", folder=tiny_posters, arch="efficientnet-lite0", progress=False
        )
    )
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["mode"] == "linear-probe" and meta["kind"] == "linear-head"
    assert meta["input"]["height"] == 336 and meta["input"]["width"] == 224
    assert meta["input"]["mean"] == pytest.approx([127 / 255] * 3)
    assert set(load_file(str(bundle / "model.safetensors"))) == {
        "classifier.weight",
        "classifier.bias",
    }
    assert meta["training"]["C"] in (0.0001, 0.0003, 0.001, 0.003, 0.01)
    predictor = Predictor.from_pretrained(bundle)
    records = [p for p in (tiny_posters / "test").rglob("*.png")]
    predictions = predictor.predict(records)
    correct = sum(
        p.predicted[0] == path.parent.name for p, path in zip(predictions, records, strict=True)
    )
    assert correct / len(records) >= 0.9  # colour-coded genres are easy for ImageNet features


def test_embeddings_are_cached_and_match_the_network(tiny_folder):
    paths = sorted((tiny_folder / "val").rglob("*.png"))
    first = compute_embeddings("efficientnet-lite0", paths, progress=False)
    second = compute_embeddings("efficientnet-lite0", paths, progress=False)
    np.testing.assert_array_equal(first[first.ok], second[second.ok])
    assert first[first.ok].shape == (len(paths), 1280)


@pytest.fixture(scope="module")
def multi_label_csv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The label CSV of `_multi_label_csv`, made once: the tests only read it."""
    labels = _multi_label_csv(tmp_path_factory.mktemp("multi-label"))
    before = folder_state(labels.parent)
    yield labels
    assert folder_state(labels.parent) == before, "a test changed the multi-label posters"


@pytest.fixture(scope="module")
def multi_label_runs(multi_label_csv: Path, tmp_path_factory: pytest.TempPathFactory):
    """`runs(arch)`: the run folder of `train --labels ... --task multi` with `arch`, trained
    the first time a test asks for it (a Lite0 probe is the same run for every test)."""
    root = tmp_path_factory.mktemp("multi-label-runs")
    states: dict[Path, dict] = {}

    def run_for(arch: str) -> Path:
        run = root / arch
        if run not in states:
            mode = ["--mode", "linear-probe"] if arch.startswith("efficientnet") else []
            argv = ["train", "--labels", str(multi_label_csv), "--arch", arch, "--task", "multi"]
            assert main([*argv, "--out", str(run), *mode]) == 0
            states[run] = folder_state(run)
        return run

    yield run_for
    for run, before in states.items():
        assert folder_state(run) == before, f"a test changed the shared run {run.name}"


def _multi_label_csv(tmp_path: Path) -> Path:
    """Posters whose red half means Action and blue half means Drama (either, both, none)."""
    rows = []
    combos = [("Action",), ("Drama",), ("Action", "Drama"), ()]
    for i in range(64):
        genres = combos[i % 4]
        top = (220, 30, 30) if "Action" in genres else (120, 120, 120)
        bottom = (30, 30, 220) if "Drama" in genres else (120, 120, 120)
        path = make_poster(tmp_path / "images" / f"p{i}.png", top, seed=i)
        half = make_poster(tmp_path / "bottom.png", bottom, seed=1000 + i)
        from PIL import Image

        image = Image.open(path).convert("RGB")
        image.paste(Image.open(half).crop((0, 30, 40, 60)), (0, 30))
        image.save(path)
        split = "train" if i < 40 else "val" if i < 52 else "test"
        rows.append({"id": f"p{i}", "genres": "|".join(genres), "split": split})
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "genres", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return labels


@pytest.mark.parametrize("arch", ["efficientnet-lite0", "knn"])
def test_multi_label_training_tunes_thresholds_and_predicts_sets(
    arch, multi_label_csv, multi_label_runs, capsys
):
    labels = multi_label_csv
    run = multi_label_runs(arch)
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["task"] == "multi"
    assert set(meta["thresholds"]) == {"Action", "Drama"}
    assert (run / "plots" / "pr_val.png").is_file()
    capsys.readouterr()
    assert (
        main(
            ["evaluate", "--model", str(run), "--labels", str(labels), "--split", "test", "--json"]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    for key in (
        "map",
        "micro_f1",
        "macro_f1",
        "samples_f1",
        "per_genre",
        "baselines",
        "ignored_genres",
    ):
        assert key in metrics
    assert metrics["map"] >= 0.8
    assert set(metrics["per_genre"]["Action"]) >= {"ap", "f1", "threshold"}
    poster = labels.parent / "images" / "p62.png"  # Action + Drama
    assert main(["predict", "--model", str(run), str(poster), "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert set(entry["predicted"]) <= {"Action", "Drama"}
    assert "predicted" in entry and len(entry["genres"]) == 2


def test_multi_label_model_on_single_label_folder_reports_accuracy(
    multi_label_runs, tiny_posters, capsys
):
    run = multi_label_runs("efficientnet-lite0")  # `train --task multi` on the labels above
    capsys.readouterr()
    # A folder per genre (Action, Comedy, Drama): Comedy is unknown to the model.
    assert (
        main(["evaluate", "--model", str(run), "--folder", str(tiny_posters / "test"), "--json"])
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["task"] == "single"
    assert metrics["unknown_genres"] == ["Comedy"]
    assert metrics["n"] == 8


def test_finetune_starts_from_the_probe_and_saves_the_whole_network(tiny_posters, tmp_path):
    bundle = train(
        TrainConfig(
            out=tmp_path / "run",
            folder=tiny_posters,
            arch="efficientnet-lite0",
            mode="finetune",
            epochs=1,
            batch_size=12,
            progress=False,
        )
    )
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["mode"] == "finetune" and meta["kind"] == "network"
    stored = load_file(str(bundle / "model.safetensors"))
    assert "stem.conv.weight" in stored and "classifier.weight" in stored
    assert (tmp_path / "run" / "checkpoints" / "last.safetensors").is_file()
    assert meta["metrics"]["val"]["accuracy"] >= 0.9  # the probe-initialised head already fits


def test_a_truncated_embedding_cache_gives_the_same_model(tiny_folder, tmp_path, capsys):
    cache = tmp_path / "cache"

    def fit(out: str) -> dict:
        config = TrainConfig(
            out=tmp_path / out,
            folder=tiny_folder,
            arch="efficientnet-lite0",
            progress=False,
            cache_dir=cache,
        )
        return json.loads((train(config) / "model.json").read_text())

    before = fit("before")
    [rows] = cache.glob("embeddings-efficientnet-lite0-*/rows.bin")
    with rows.open("r+b") as handle:  # keep 5 of the embeddings, and part of a sixth
        handle.truncate(5 * 1280 * 4 + 100)
    capsys.readouterr()
    after = fit("after")
    assert "past the end of its rows" in capsys.readouterr().err
    assert after["metrics"]["val"] == before["metrics"]["val"]
    again = load_file(str(tmp_path / "after" / "model" / "model.safetensors"))
    first = load_file(str(tmp_path / "before" / "model" / "model.safetensors"))
    for name, tensor in first.items():
        np.testing.assert_allclose(again[name].numpy(), tensor.numpy(), atol=1e-6)
