"""The command line end to end on tiny generated posters: train, evaluate, predict, errors."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from safetensors.torch import load_file

from postergenre.cli import main
from tests.conftest import folder_state, make_poster


@pytest.fixture(scope="module")
def trained_run(tiny_posters: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One seed-cnn run trained for the whole module; the tests only read it (checked at the
    end, so a test that starts writing into it fails instead of leaking into the others)."""
    run = tmp_path_factory.mktemp("cli") / "run"
    code = main(
        [
            "train",
            "--folder",
            str(tiny_posters),
            "--arch",
            "seed-cnn",
            "--out",
            str(run),
            "--epochs",
            "6",
            "--batch-size",
            "8",
            "--lr",
            "3e-4",
            "--seed",
            "0",
        ]
    )
    assert code == 0
    before = folder_state(run)
    yield run
    assert folder_state(run) == before, "a test changed the shared run folder"


def test_train_writes_a_complete_run_folder(trained_run: Path):
    for name in (
        "config.json",
        "history.csv",
        "plots/training_curves.png",
        "plots/confusion_val.png",
        "checkpoints/last.safetensors",
        "checkpoints/best.safetensors",
        "model/model.safetensors",
        "model/model.json",
    ):
        assert (trained_run / name).is_file(), name
    meta = json.loads((trained_run / "model" / "model.json").read_text())
    assert meta["architecture"] == "seed-cnn"
    assert meta["task"] == "single"
    assert sorted(meta["genres"]) == ["Action", "Comedy", "Drama"]
    assert meta["input"]["width"] == meta["input"]["height"] == 150
    assert meta["input"]["mean"] == [0.0, 0.0, 0.0]
    assert meta["training"]["splits"] == {"train": 24, "val": 12}
    assert 0.0 <= meta["metrics"]["val"]["accuracy"] <= 1.0
    # safetensors + JSON only: the weights load without pickle and match the architecture.
    weights = load_file(str(trained_run / "model" / "model.safetensors"))
    assert weights["dense.weight"].shape == (1024, 64 * 17 * 17)
    with (trained_run / "history.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) >= 1


def test_evaluate_json_contract_and_learning(trained_run, tiny_posters, capsys):
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(trained_run),
                "--folder",
                str(tiny_posters),
                "--split",
                "test",
                "--json",
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    for key in ("n", "accuracy", "balanced_accuracy", "macro_f1", "per_genre"):
        assert key in metrics
    assert metrics["n"] == 12
    # Each genre has its own colour: a model that learnt anything beats chance (1/3) clearly.
    assert metrics["accuracy"] >= 0.75
    assert set(metrics["per_genre"]) == {"Action", "Comedy", "Drama"}


def test_evaluate_on_a_subset_of_genres(trained_run, tiny_posters, tmp_path, capsys):
    subset = tmp_path / "two"
    for genre in ("Comedy", "Drama"):
        shutil.copytree(tiny_posters / "test" / genre, subset / genre)
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(trained_run),
                "--folder",
                str(subset),
                "--json",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 8
    assert metrics["ignored_genres"] == ["Action"]
    assert set(metrics["per_genre"]) == {"Comedy", "Drama"}
    assert (out / "confusion_matrix.png").is_file()
    assert json.loads((out / "metrics.json").read_text())["n"] == 8


def test_predict_json_and_table(trained_run, tiny_posters, capsys):
    poster = tiny_posters / "test" / "Drama" / "drama0.png"
    assert main(["predict", "--model", str(trained_run), str(poster), "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["path"] == str(poster)
    probs = [g["probability"] for g in entry["genres"]]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-4)
    assert entry["predicted"] == [entry["genres"][0]["genre"]]
    assert main(["predict", "--model", str(trained_run), str(poster)]) == 0
    assert "Drama" in capsys.readouterr().out


def test_predict_folder_writes_csv_and_skips_bad_files(trained_run, tiny_folder, tmp_path, capsys):
    folder = tiny_folder / "test" / "Comedy"
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "preds.csv"
    assert main(["predict", "--model", str(trained_run), str(folder), "--csv", str(out)]) == 0
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert set(rows[0]) >= {"path", "predicted", "Action", "Comedy", "Drama"}
    assert "broken.jpg" in capsys.readouterr().err


def test_training_skips_unreadable_posters(tiny_folder, tmp_path, capsys):
    (tiny_folder / "train" / "Action" / "zero.jpg").write_bytes(b"")
    (tiny_folder / "train" / "Drama" / "cut.png").write_bytes(
        (tiny_folder / "train" / "Drama" / "drama0.png").read_bytes()[:200]
    )
    assert (
        main(
            [
                "train",
                "--folder",
                str(tiny_folder),
                "--out",
                str(tmp_path / "r"),
                "--epochs",
                "1",
                "--batch-size",
                "8",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "zero.jpg" in err and "cut.png" in err
    assert "2 unreadable posters skipped" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "--model", "{run}", "{bad}"], "not an image"),
        (["predict", "--model", "{run}", "/no/such/poster.jpg"], "no such file"),
        (["predict", "--model", "/no/such/model", "{good}"], "no model at"),
        (["train", "--labels", "/no/labels.csv", "--out", "{tmp}/x"], "label file not found"),
        (
            ["train", "--folder", "{folder}", "--out", "{tmp}/x", "--arch", "nope"],
            "unknown architecture",
        ),
        (
            ["train", "--folder", "{folder}", "--out", "{tmp}/x", "--genres", "Western"],
            "not in the data",
        ),
        (
            [
                "train",
                "--folder",
                "{folder}",
                "--out",
                "{tmp}/x",
                "--arch",
                "seed-cnn",
                "--mode",
                "linear-probe",
            ],
            "no pretrained backbone",
        ),
        (
            ["evaluate", "--model", "{run}", "--folder", "{folder}", "--split", "holdout"],
            "no posters in split",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv, message, trained_run, tiny_posters, tmp_path, capsys
):
    bad = tmp_path / "fake.png"
    bad.write_text("hello")
    good = make_poster(tmp_path / "good.png", (10, 10, 10))
    values = {"run": trained_run, "bad": bad, "good": good, "tmp": tmp_path, "folder": tiny_posters}
    assert main([a.format(**values) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert "Traceback" not in err[0]


def test_module_entry_point_and_help():
    result = subprocess.run(
        [sys.executable, "-m", "postergenre", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("train", "evaluate", "predict"):
        assert command in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "postergenre", "predict"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "POSTER" in result.stderr


def test_explain_writes_overlay_and_raw_map(trained_run, tiny_posters, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    poster = tiny_posters / "test" / "Action" / "action0.png"
    out = tmp_path / "heat.png"
    assert (
        main(
            [
                "explain",
                "--model",
                str(trained_run),
                str(poster),
                "--genre",
                "Comedy",
                "--out",
                str(out),
                "--npy",
            ]
        )
        == 0
    )
    assert "Comedy" in capsys.readouterr().out
    assert Image.open(out).size == Image.open(poster).size
    heatmap = np.load(tmp_path / "heat.npy")
    assert heatmap.shape == (150, 150) and heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert (
        main(
            [
                "explain",
                "--model",
                str(trained_run),
                str(poster),
                "--genre",
                "Western",
                "--out",
                str(out),
            ]
        )
        == 2
    )


def test_export_onnx_and_predict_with_onnx_runtime(trained_run, tiny_posters, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    poster = tiny_posters / "test" / "Drama" / "drama1.png"
    out = tmp_path / "model.onnx"
    assert (
        main(
            [
                "export",
                "--model",
                str(trained_run),
                "--out",
                str(out),
                "--check",
                str(poster),
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert out.is_file() and report["max_abs_diff"] <= 1e-4
    argv = ["predict", "--model", str(trained_run), str(poster), "--json", "--runtime", "torch"]
    assert main(argv) == 0
    [torch_entry] = json.loads(capsys.readouterr().out)
    assert (
        main(["predict", "--model", str(trained_run), str(poster), "--json", "--runtime", "onnx"])
        == 0
    )
    [onnx_entry] = json.loads(capsys.readouterr().out)
    assert [g["genre"] for g in onnx_entry["genres"]] == [g["genre"] for g in torch_entry["genres"]]
    for a, b in zip(onnx_entry["genres"], torch_entry["genres"], strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)
