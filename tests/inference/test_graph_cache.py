"""The exported-graph cache: a cached graph is used only when it is the very graph exported
from this bundle; one swapped in, edited or damaged is exported again (one warning line), and
the bundle's files are read only when they are regular files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from postergenre.cli import main
from postergenre.inference import Predictor
from postergenre.models import create_model
from postergenre.models.bundle import save_bundle
from postergenre.models.card import CardError
from tests.conftest import make_card, make_poster, make_seed_bundle
from tests.models.test_bundle_files import deadline

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> tuple[Path, Path]:
    """Two seed-cnn bundles with the same card and different weights."""
    root = tmp_path_factory.mktemp("bundles")
    first = make_seed_bundle(root / "first")
    torch.manual_seed(1)
    other = save_bundle(root / "other", create_model("seed-cnn", 3), make_card(name="seed"))
    return first, other


@pytest.fixture(scope="module")
def poster(tmp_path_factory) -> Path:
    return make_poster(tmp_path_factory.mktemp("poster") / "p.png", (200, 40, 40))


def _cached(folder: Path, cache: Path) -> Path:
    """The graph of the bundle at `folder` in the cache `cache` (exported there if need be)."""
    predictor = Predictor.from_pretrained(folder, runtime="onnx", cache_dir=cache)
    return predictor.onnx_runner.path


def _torch_probs(folder: Path, poster: Path) -> np.ndarray:
    return Predictor.from_pretrained(folder, runtime="torch").predict(poster).probabilities


def _onnx_probs(folder: Path, poster: Path, cache: Path) -> np.ndarray:
    predictor = Predictor.from_pretrained(folder, runtime="onnx", cache_dir=cache)
    return predictor.predict(poster).probabilities


def _edit_weights(graph: Path) -> None:
    """Scale the first float initializer of `graph`, keeping its metadata: still loadable."""
    proto = onnx.load(graph)
    for tensor in proto.graph.initializer:
        array = onnx.numpy_helper.to_array(tensor)
        if array.dtype == np.float32 and array.size > 8:
            tensor.CopyFrom(onnx.numpy_helper.from_array(array * 3 + 1, tensor.name))
            break
    onnx.save(proto, graph)


def _swap_in_other(other_graph: Path) -> callable:
    return lambda graph: graph.write_bytes(other_graph.read_bytes())


DAMAGE = {
    "swapped for another bundle's graph": None,  # filled in by the test (needs the other graph)
    "weights edited": _edit_weights,
    "truncated": lambda graph: graph.write_bytes(graph.read_bytes()[:5000]),
    "garbage": lambda graph: graph.write_bytes(os.urandom(4096)),
    "empty": lambda graph: graph.write_bytes(b""),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_cached_graph_not_exported_from_this_bundle_is_exported_again(
    bundles, poster, tmp_path, damage, capsys
):
    first, other = bundles
    cache = tmp_path / "cache"
    graph = _cached(first, cache)
    change = DAMAGE[damage] or _swap_in_other(_cached(other, tmp_path / "other-cache"))
    change(graph)
    capsys.readouterr()
    probs = _onnx_probs(first, poster, cache)
    np.testing.assert_allclose(probs, _torch_probs(first, poster), atol=1e-5)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "exported it again" in warnings[0], warnings
    # the graph exported again is used from then on, silently
    again = _onnx_probs(first, poster, cache)
    np.testing.assert_array_equal(again, probs)
    assert "warning" not in capsys.readouterr().err


def test_the_cli_predicts_with_the_bundle_not_a_swapped_graph(bundles, poster, capsys):
    first, other = bundles
    graph = _cached(first, None)  # the session's cache, as the CLI uses it
    graph.write_bytes(_cached(other, None).read_bytes())
    capsys.readouterr()
    argv = ["predict", str(poster), "--model", str(first), "--runtime", "onnx", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert len([line for line in captured.err.splitlines() if "warning" in line]) == 1
    assert main([*argv[:-3], "--runtime", "torch", "--json"]) == 0
    assert captured.out == capsys.readouterr().out


def test_the_cache_key_reads_only_regular_bundle_files(bundles, tmp_path):
    from postergenre.inference.graph_cache import graph_cache_path

    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "model.json").write_bytes((bundles[0] / "model.json").read_bytes())
    os.mkfifo(folder / "model.safetensors")  # open() on it would wait for a writer forever
    with deadline(10), pytest.raises(CardError, match="not a regular file"):
        graph_cache_path("seed-cnn", folder, None, tmp_path)


def test_the_bundle_digest_covers_the_card_and_the_weights(bundles, tmp_path):
    from postergenre.models.bundle_files import bundle_digest

    first, other = bundles
    assert bundle_digest(first) == bundle_digest(first)
    assert bundle_digest(first) != bundle_digest(other)  # weights differ
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes((first / "model.safetensors").read_bytes())
    (copy / "model.json").write_bytes((first / "model.json").read_bytes() + b"\n")
    assert bundle_digest(copy) != bundle_digest(first)  # the card's bytes count too
