"""OpenVINO over the exported graph: the probabilities of ONNX Runtime (within 1e-4), the same
metadata, and `--runtime openvino` through the Predictor and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from postergenre.cli import main
from postergenre.data.decode import decode_poster
from postergenre.errors import UserError
from postergenre.inference import Predictor
from tests.conftest import make_poster

pytest.importorskip("onnxruntime")

PARITY = 1e-4


@pytest.fixture(scope="module")
def posters(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("openvino")
    rng = np.random.default_rng(3)
    return [
        make_poster(folder / f"p{i}.png", tuple(rng.integers(0, 256, 3)), i, (112, 168))
        for i in range(5)
    ]


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> Path:
    """imdb-20-fast's exported graph, in the test session's cache (exported once)."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    runner = Predictor.from_pretrained("imdb-20-fast", runtime="onnx", cache_dir=cache).onnx_runner
    return runner.path


def test_openvino_matches_onnx_runtime(graph, posters):
    pytest.importorskip("openvino")
    from postergenre.inference.onnx_runtime import OnnxRunner
    from postergenre.inference.openvino_runtime import OpenVinoRunner

    ort, ov = OnnxRunner(graph), OpenVinoRunner(graph)
    assert ov.genres == ort.genres and ov.input_json == ort.input_json
    spec = Predictor.from_pretrained("imdb-20-fast").input_spec
    x = spec.prepare([decode_poster(p) for p in posters])
    expected = ort(x)
    for batch in (x, x[:1]):  # the batch axis stays dynamic
        got = ov(batch)
        assert got.shape == (len(batch), len(ort.genres))
        assert np.abs(got - expected[: len(batch)]).max() <= PARITY
    assert ov(x[:0]).shape == (0, len(ort.genres))
    with pytest.raises(ValueError, match="text features"):
        ov(x, np.zeros((len(x), 8), np.float32))
    with pytest.raises(ValueError, match="expected input"):
        ov(x[:, :, :10])


def test_predict_with_runtime_openvino(graph, posters, capsys):
    pytest.importorskip("openvino")
    predictor = Predictor.from_pretrained("imdb-20-fast", runtime="openvino")
    assert predictor.runtime == "openvino"
    got = predictor.predict(posters, progress_bar=False).probabilities
    expected = Predictor.from_pretrained("imdb-20-fast", runtime="onnx").predict(
        posters, progress_bar=False
    )
    assert np.abs(got - expected.probabilities).max() <= PARITY

    argv = ["predict", "--model", "imdb-20-fast", str(posters[0]), "--json", "--runtime"]
    assert main([*argv, "openvino"]) == 0
    [ov_entry] = json.loads(capsys.readouterr().out)
    assert main([*argv, "onnx"]) == 0
    [onnx_entry] = json.loads(capsys.readouterr().out)
    assert [g["genre"] for g in ov_entry["genres"]] == [g["genre"] for g in onnx_entry["genres"]]


def test_without_openvino_one_line_says_how_to_install(monkeypatch, posters, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a)
    )
    with pytest.raises(UserError, match=r"pip install 'postergenre\[openvino\]'"):
        Predictor.from_pretrained("imdb-20-fast", runtime="openvino")
    argv = ["predict", "--model", "imdb-20-fast", str(posters[0]), "--runtime", "openvino"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "postergenre[openvino]" in err[0], err


def test_openvino_runs_a_batch_in_chunks_with_the_same_probabilities(graph, posters, monkeypatch):
    """A batch runs RUN_CHUNK posters per OpenVINO call, as ONNX Runtime's does: OpenVINO
    keeps activation memory for the largest batch it has run (whole batches of 32 took imdb-20
    to 1.97 GB at peak against 525 MB; BENCHMARKS.md section 17)."""
    pytest.importorskip("openvino")
    from postergenre.inference.onnx_runtime import RUN_CHUNK
    from postergenre.inference.openvino_runtime import OpenVinoRunner

    chunked, whole = OpenVinoRunner(graph), OpenVinoRunner(graph, chunk=None)
    assert chunked.chunk == RUN_CHUNK == 4
    spec = Predictor.from_pretrained("imdb-20-fast").input_spec
    x = spec.prepare([decode_poster(p) for p in posters * 2])  # 10 posters: chunks 4, 4, 2
    sizes: list[int] = []
    infer = chunked._infer
    monkeypatch.setattr(chunked, "_infer", lambda a, t: sizes.append(len(a)) or infer(a, t))
    np.testing.assert_allclose(chunked(x), whole(x), atol=1e-6)
    assert sizes == [4, 4, 2]
