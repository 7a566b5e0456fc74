"""Every model file is checked before it predicts: a tampered bundle is refused with one line
(exit 2), never a traceback and never a prediction."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from postergenre.cli import main
from postergenre.models import create_model
from postergenre.models.bundle import save_bundle
from postergenre.models.catalog import BUNDLED_DIR
from tests.conftest import make_card, make_poster, make_seed_bundle, make_tiny_folder
from tests.models.test_bundle_files import deadline


def _copy(name: str, tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    shutil.copytree(BUNDLED_DIR / name, folder)
    return folder


def _card(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / "model.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return apply


def _tensors(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / "model.safetensors"
        tensors = load_file(str(path))
        change(tensors)
        save_file(tensors, str(path))

    return apply


def _nan_weight(tensors: dict) -> None:
    tensors["classifier.weight"][0, 0] = float("nan")


CASES = {
    "a Lite0 head declared as Lite2": (
        "three-genre",
        _card(lambda d: d.update(architecture="efficientnet-lite2")),
        "does not match efficientnet-lite2",
    ),
    "classifier.bias missing": (
        "three-genre",
        _tensors(lambda t: t.pop("classifier.bias")),
        "missing classifier.bias",
    ),
    "an extra tensor": (
        "three-genre",
        _tensors(lambda t: t.update(extra=torch.zeros(2))),
        "unexpected extra",
    ),
    "task regression": ("three-genre", _card(lambda d: d.update(task="regression")), "task"),
    "multi without thresholds": ("imdb-20", _card(lambda d: d.pop("thresholds")), "thresholds"),
    "std of zeros": ("three-genre", _card(lambda d: d["input"].update(std=[0, 0, 0])), "std"),
    "NaN weights": ("three-genre", _tensors(_nan_weight), "NaN or infinite"),
    "more genres than weight rows": (
        "three-genre",
        _card(lambda d: d.update(genres=["Action", "Comedy", "Drama", "Horror"])),
        "has shape (3,",
    ),
    "no genres": ("three-genre", _card(lambda d: d.pop("genres")), "'genres' is missing"),
    "no input": ("three-genre", _card(lambda d: d.pop("input")), "'input' is missing"),
    "no task": ("three-genre", _card(lambda d: d.pop("task")), "'task' is missing"),
    "genres as a string": ("three-genre", _card(lambda d: d.update(genres="Drama")), "genres"),
    "a bad format_version": (
        "three-genre",
        _card(lambda d: d.update(format_version="1.0")),
        "format_version",
    ),
    "a negative width": ("three-genre", _card(lambda d: d["input"].update(width=-224)), "width"),
    "an unknown resize": (
        "three-genre",
        _card(lambda d: d["input"].update(resize="zoom")),
        "resize",
    ),
    "an unknown architecture": (
        "three-genre",
        _card(lambda d: d.update(architecture="resnet-9000")),
        "unknown architecture",
    ),
    # Issue 17: each of these once gave other probabilities (exit 0) or a traceback.
    "int64 head weights": (
        "imdb-20-fast",
        _tensors(lambda t: t.update({"classifier.weight": (t["classifier.weight"] * 9).long()})),
        "classifier.weight is int64",
    ),
    "head weights of 1e38": (
        "imdb-20-fast",
        _tensors(lambda t: t["classifier.weight"].fill_(1e38)),
        "classifier.weight holds values beyond",
    ),
    "a genre that repaints the terminal": (
        "three-genre",
        _card(lambda d: d["genres"].__setitem__(0, "Action\x1b[2J\x1b[31m")),
        "'genres[0]' holds a control character",
    ),
    "a name that is a list": ("three-genre", _card(lambda d: d.update(name=["x"])), "'name'"),
    "a calibration that is a string": (
        "three-genre",
        _card(lambda d: d["training"].update(calibration="platt")),
        "'training.calibration'",
    ),
    "a k-NN architecture over a linear head": (
        "imdb-20",
        _card(lambda d: d.update(architecture="knn")),
        "knn stores a knn bundle, not a linear-head",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_tampered_bundles_are_refused_in_one_line(case, runtime, tmp_path, capsys):
    name, tamper, expected = CASES[case]
    folder = _copy(name, tmp_path)
    tamper(folder)
    poster = make_poster(tmp_path / "p.png", (200, 40, 40))
    code = main(["predict", str(poster), "--model", str(folder), "--runtime", runtime, "--json"])
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.out == ""  # no prediction at all
    [line] = captured.err.strip().splitlines()
    assert expected in line and "Traceback" not in line


@pytest.mark.parametrize(
    "text, expected",
    [("[1, 2, 3]", "must be a JSON object"), ("[" * 50_000 + "]" * 50_000, "not valid JSON")],
)
def test_model_json_that_is_not_a_card(text, expected, tmp_path, capsys):
    folder = _copy("three-genre", tmp_path)
    (folder / "model.json").write_text(text)
    poster = make_poster(tmp_path / "p.png", (200, 40, 40))
    assert main(["predict", str(poster), "--model", str(folder)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert expected in line


def test_a_knn_bundle_without_its_bank_is_refused(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("knn", 3)
    labels = torch.nn.functional.one_hot(torch.arange(12) % 3, 3).float()
    model.set_memory(torch.randn(12, 1280), labels, k=3, multi=False)
    folder = save_bundle(tmp_path / "knn", model, make_card("knn", kind="knn"))
    _tensors(lambda t: t.pop("bank"))(folder)
    poster = make_poster(tmp_path / "p.png", (40, 200, 40))
    assert main(["predict", str(poster), "--model", str(folder), "--runtime", "torch"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "missing bank" in line


def _seed_bundle_with(tmp_path: Path, problem: str) -> Path:
    folder = make_seed_bundle(tmp_path / "seed")
    if problem == "calibration":
        _card(lambda d: d["training"].update(calibration=["platt"]))(folder)
    elif problem == "int64 weights":
        _tensors(lambda t: t.update({"classifier.weight": t["classifier.weight"].long()}))(folder)
    elif problem == "a head on a network trained from scratch":
        _card(lambda d: d.update(kind="linear-head"))(folder)
        _tensors(lambda t: [t.pop(k) for k in list(t) if not k.startswith("classifier.")])(folder)
    return folder


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("calibration", "'training.calibration'"),
        ("int64 weights", "classifier.weight is int64"),
        ("a head on a network trained from scratch", "seed-cnn stores a network bundle"),
    ],
)
@pytest.mark.parametrize("command", ["predict", "evaluate", "explain", "export", "serve"])
def test_every_command_refuses_a_bad_bundle_in_one_line(command, problem, expected, tmp_path,
                                                        capsys):  # fmt: skip
    folder = _seed_bundle_with(tmp_path, problem)
    poster = make_poster(tmp_path / "p.png", (200, 40, 40))
    args = {
        "predict": ["predict", str(poster), "--runtime", "torch"],
        "evaluate": ["evaluate", "--folder", str(make_tiny_folder(tmp_path / "posters")),
                     "--runtime", "torch"],
        "explain": ["explain", str(poster), "--out", str(tmp_path / "o.png")],
        "export": ["export", "--out", str(tmp_path / "m.onnx")],
        "serve": ["serve", "--port", "0", "--runtime", "onnx"],
    }[command]  # fmt: skip
    with deadline(60):  # a server that starts instead of refusing fails here, never hangs
        code = main([*args, "--model", str(folder)])
    captured = capsys.readouterr()
    assert code == 2, captured
    [line] = captured.err.strip().splitlines()
    assert line.startswith(f"postergenre {command}: error: ") and expected in line
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "m.onnx").exists()
