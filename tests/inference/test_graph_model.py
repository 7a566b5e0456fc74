"""A model file is a model: an exported .onnx (fp32 or int8) predicts wherever a bundle does,
with the bundle's probabilities, and every damaged file, or what needs PyTorch weights, is
refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from postergenre.cli import main
from postergenre.errors import UserError
from postergenre.inference import OnnxRunner, Predictor, open_graph
from postergenre.inference.graph_model import GraphOnlyError
from tests.conftest import make_poster, make_seed_bundle

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

# int8 moved seed-cnn probabilities by about 0.01 here; the bound of test_quantize (0.1) holds.
INT8_TOLERANCE = 0.1


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_posters) -> dict[str, Path]:
    """A seeded seed-cnn bundle, its fp32 graph (`export`) and its int8 graph (`export
    --quantize int8`, calibrated on the tiny training posters)."""
    from postergenre.export.onnx import export_onnx
    from postergenre.export.quantize import quantize_onnx

    root = tmp_path_factory.mktemp("graph-model")
    bundle = make_seed_bundle(root / "bundle")
    fp32 = root / "seed.onnx"
    export_onnx(bundle, fp32)
    int8 = root / "seed.int8.onnx"
    quantize_onnx(fp32, int8, sorted((tiny_posters / "train").rglob("*.png")))
    return {"bundle": bundle, "fp32": fp32, "int8": int8, "root": root}


@pytest.fixture(scope="module")
def posters(tiny_posters) -> list[Path]:
    return sorted((tiny_posters / "test").rglob("*.png"))


def _probs(model: Path, posters: list[Path], runtime: str = "auto") -> np.ndarray:
    predictions = Predictor.from_pretrained(model, runtime).predict(posters, progress_bar=False)
    assert predictions.paths == [str(p) for p in posters]
    return predictions.probabilities


def test_an_exported_file_predicts_what_its_bundle_predicts(models, posters):
    expected = _probs(models["bundle"], posters, "torch")
    np.testing.assert_allclose(_probs(models["fp32"], posters), expected, atol=1e-5)
    int8 = _probs(models["int8"], posters)
    assert np.abs(int8 - expected).max() <= INT8_TOLERANCE
    assert not np.array_equal(int8, expected)  # it is the int8 graph that ran


def test_openvino_runs_the_file_too(models, posters):
    pytest.importorskip("openvino")
    expected = _probs(models["bundle"], posters, "torch")
    np.testing.assert_allclose(_probs(models["fp32"], posters, "openvino"), expected, atol=1e-4)


def test_the_predictor_of_a_file_carries_its_card_and_runner(models):
    predictor = Predictor.from_pretrained(models["fp32"])
    assert predictor.genres == ["Action", "Comedy", "Drama"]
    assert predictor.runtime == "onnx" and not predictor.has_weights
    assert isinstance(predictor.onnx_runner, OnnxRunner)
    assert predictor.onnx_runner.path == models["fp32"]
    assert predictor.name == "seed.onnx"
    # what a predictions journal is bound to: the file's own bytes
    assert len(predictor.digest) == 64
    assert predictor.digest != Predictor.from_pretrained(models["int8"]).digest


def test_open_graph_is_the_public_runner(models):
    runner = open_graph(models["int8"])
    spec = runner.card.input
    pixels = np.full((5, spec.height, spec.width, 3), 90, np.uint8)
    probs = runner(spec.normalise(pixels))
    assert probs.shape == (5, 3)
    # an int8 softmax comes out in steps of 1/255: its sum is within a few steps of 1
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=0.02)


def test_cli_predict_and_evaluate_with_a_file(models, posters, tiny_posters, capsys, tmp_path):
    expected = _probs(models["bundle"], posters[:1], "torch")[0]
    assert main(["predict", "--model", str(models["fp32"]), str(posters[0]), "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)
    got = {g["genre"]: g["probability"] for g in item["genres"]}
    np.testing.assert_allclose([got[g] for g in ("Action", "Comedy", "Drama")], expected, atol=1e-5)
    argv = ["evaluate", "--model", str(models["int8"]), "--folder", str(tiny_posters)]
    assert main([*argv, "--split", "test", "--json", "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == len(posters)
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_cli_quantizes_a_file(models, tiny_posters, capsys, tmp_path):
    out = tmp_path / "again.int8.onnx"
    argv = ["export", "--model", str(models["fp32"]), "--out", str(out), "--quantize", "int8"]
    assert main([*argv, "--folder", str(tiny_posters), "--calibration-size", "8"]) == 0
    assert "int8" in capsys.readouterr().out
    assert Predictor.from_pretrained(out).genres == ["Action", "Comedy", "Drama"]


def _refusal(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def _with_metadata(graph: Path, out: Path, edit) -> Path:
    proto = onnx.load(graph)
    metadata = edit({entry.key: entry.value for entry in proto.metadata_props})
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, out)
    return out


def _fewer_genres(metadata: dict[str, str]) -> dict[str, str]:
    """A self-consistent card for two genres on a graph that gives three values."""
    card = json.loads(metadata["card"])
    card["genres"] = card["genres"][:2]
    return {**metadata, "card": json.dumps(card), "genres": json.dumps(card["genres"])}


def _damaged(models: dict[str, Path], kind: str) -> Path:
    root, fp32 = models["root"], models["fp32"]
    path = root / f"{kind}.onnx"
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif kind == "truncated":
        path.write_bytes(fp32.read_bytes()[: fp32.stat().st_size // 2])
    elif kind == "renamed":
        make_poster(root / "poster.png", (10, 200, 10), 0)
        path.write_bytes((root / "poster.png").read_bytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no-card":
        _with_metadata(fp32, path, lambda m: {})
    elif kind == "card-vs-output":
        _with_metadata(fp32, path, _fewer_genres)
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("garbage", "ONNX Runtime cannot load"),
        ("truncated", "ONNX Runtime cannot load"),
        ("renamed", "ONNX Runtime cannot load"),
        ("empty", "is empty"),
        ("no-card", "is not a PosterGenre export: its metadata has no card"),
        ("card-vs-output", "gives 3 values per poster for 2 genres"),
    ],
)
def test_a_damaged_file_is_refused_in_one_line(models, posters, capsys, kind, message):
    path = _damaged(models, kind)
    line = _refusal(["predict", "--model", str(path), str(posters[0])], capsys)
    assert line.startswith("postergenre predict: error: ") and message in line
    assert str(path) in line
    with pytest.raises(UserError, match=message):
        Predictor.from_pretrained(path)


def test_a_graph_whose_probabilities_cannot_be_right_is_refused(models, posters, capsys):
    """A graph that always answers 1.0 for every genre: the grey-poster probe of bundles."""
    from onnx import TensorProto, helper

    proto = onnx.load(models["fp32"])
    graph = proto.graph
    out = graph.output[0].name
    for node in graph.node:  # rename the real output, then give 1.0 in its place
        node.output[:] = [f"{o}_real" if o == out else o for o in node.output]
    one = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    ones = helper.make_node("ConstantOfShape", ["shape"], [out], value=one)
    shape = helper.make_node("Shape", [f"{out}_real"], ["shape"])
    graph.node.extend([shape, ones])
    path = models["root"] / "certain.onnx"
    onnx.save(proto, path)
    line = _refusal(["predict", "--model", str(path), str(posters[0])], capsys)
    assert "probabilities for a grey test poster are summing to 3, not 1" in line


def test_explain_refuses_a_file_saying_why_and_what_to_use(models, posters, capsys, tmp_path):
    argv = ["explain", "--model", str(models["fp32"]), str(posters[0])]
    line = _refusal([*argv, "--out", str(tmp_path / "h.png")], capsys)
    assert "Grad-CAM (explain) needs the model's PyTorch weights" in line
    assert "bundle folder or run folder it was exported from" in line
    assert not (tmp_path / "h.png").exists()
    with pytest.raises(GraphOnlyError):
        Predictor.from_pretrained(models["fp32"]).explain(posters[0])


def test_torch_runtime_and_plain_export_of_a_file_are_refused(models, posters, capsys, tmp_path):
    line = _refusal(
        ["predict", "--model", str(models["fp32"]), "--runtime", "torch", str(posters[0])], capsys
    )
    assert "runs with ONNX Runtime or OpenVINO" in line
    out = tmp_path / "copy.onnx"
    line = _refusal(["export", "--model", str(models["fp32"]), "--out", str(out)], capsys)
    assert "already an exported ONNX graph" in line and not out.exists()


def test_the_server_predicts_with_a_file_and_refuses_explain_as_json(models, posters):
    from fastapi.testclient import TestClient

    from postergenre.serving.app import create_app

    predictor = Predictor.from_pretrained(models["fp32"])
    with TestClient(create_app(predictor)) as client:
        assert client.get("/api/model").json()["explain"] is False
        data = posters[0].read_bytes()
        answer = client.post("/api/predict", files={"files": ("p.png", data, "image/png")})
        assert answer.status_code == 200
        refused = client.post("/api/explain", files={"file": ("p.png", data, "image/png")})
        assert refused.status_code == 422
        assert "Grad-CAM" in refused.json()["error"]
