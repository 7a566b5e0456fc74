"""An exported graph's metadata is checked like a card by every reader (ONNX Runtime, OpenVINO,
int8 quantization): a tampered graph is refused in one line, an untouched one is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from postergenre.models.card import CardError
from tests.conftest import make_seed_bundle

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> Path:
    """A seeded seed-cnn bundle exported to ONNX (3 genres)."""
    from postergenre.export.onnx import export_onnx

    folder = tmp_path_factory.mktemp("graph")
    path = folder / "seed.onnx"
    export_onnx(make_seed_bundle(folder / "bundle"), path)
    return path


def _metadata(path: Path) -> dict[str, str]:
    return {entry.key: entry.value for entry in onnx.load(path).metadata_props}


def _tampered(graph: Path, out: Path, edit) -> Path:
    """A copy of `graph` whose metadata is `edit(metadata)` (a dict: key -> value)."""
    proto = onnx.load(graph)
    metadata = edit(_metadata(graph))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, out)
    return out


def _card_edit(change):
    """An edit that changes the card (and, to stay self-consistent, `genres` and `input`)."""

    def edit(metadata: dict[str, str]) -> dict[str, str]:
        card = json.loads(metadata["card"])
        change(card)
        return {
            **metadata,
            "card": json.dumps(card),
            "genres": json.dumps(card["genres"]),
            "input": json.dumps(card["input"]),
        }

    return edit


def _without(key):
    return lambda metadata: {k: v for k, v in metadata.items() if k != key}


def _with(key, value):
    return lambda metadata: {**metadata, key: value}


def _four_genres(card):
    card["genres"] = [*card["genres"], "Horror"]


def _taller_input(card):
    card["input"]["height"] += 8


def _newer_format(card):
    card["format_version"] = 999


TAMPERED = {
    "no card": (_without("card"), "is not a PosterGenre export: its metadata has no card"),
    "no genres": (_without("genres"), "its metadata has no genres"),
    "card not JSON": (_with("card", "{not json"), "its card metadata is not valid JSON"),
    "genres not the card's": (
        _with("genres", json.dumps(["Action", "Comedy", "Horror"])),
        "its genres metadata differs from its card's genres",
    ),
    "input not the card's": (
        _with("input", json.dumps({"width": 1, "height": 1})),
        "its input metadata differs from its card's input",
    ),
    "card too new": (_card_edit(_newer_format), r"card metadata\): field 'format_version'"),
    "more genres than outputs": (
        _card_edit(_four_genres),
        "the graph gives 3 values per poster for 4 genres",
    ),
    "input size not the graph's": (_card_edit(_taller_input), r"the graph reads \d+x\d+ pixels"),
}


def _readers():
    from postergenre.export.quantize import quantize_onnx
    from postergenre.inference.onnx_runtime import OnnxRunner

    readers = {
        "onnxruntime": OnnxRunner,
        # refused before any calibration poster is needed
        "quantize": lambda path: quantize_onnx(path, path.with_suffix(".int8.onnx"), []),
    }
    try:
        import openvino  # noqa: F401
    except ImportError:
        return readers
    from postergenre.inference.openvino_runtime import OpenVinoRunner

    return {**readers, "openvino": OpenVinoRunner}


@pytest.mark.parametrize("reader", ["onnxruntime", "openvino", "quantize"])
@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_graph_is_refused_in_one_line(graph, tmp_path, case, reader):
    readers = _readers()
    if reader not in readers:
        pytest.skip(f"{reader} is not installed")
    edit, message = TAMPERED[case]
    path = _tampered(graph, tmp_path / "tampered.onnx", edit)
    with pytest.raises(CardError, match=message) as caught:
        readers[reader](path)
    assert "\n" not in caught.value.one_line()
    assert str(path) in str(caught.value)
    assert not path.with_suffix(".int8.onnx").exists()


def test_an_untouched_graph_is_read_by_every_runtime(graph, tmp_path):
    readers = _readers()
    untouched = _tampered(graph, tmp_path / "copy.onnx", dict)
    for name in ("onnxruntime", "openvino"):
        if name in readers:
            runner = readers[name](untouched)
            assert runner.genres == ["Action", "Comedy", "Drama"]
            assert runner.card.input.to_json() == json.loads(_metadata(graph)["input"])
            assert runner.input_json == runner.card.input.to_json()


def test_the_predictor_exports_again_over_a_tampered_cached_graph(graph, tmp_path, capsys):
    """A cached graph is the cache's own: one whose metadata was edited is not refused forever
    (nor used) but exported again from the bundle, with one warning line."""
    from postergenre.inference import Predictor
    from postergenre.inference.graph_cache import graph_cache_path

    bundle = make_seed_bundle(tmp_path / "bundle")
    predictor = Predictor.from_pretrained(bundle, runtime="onnx", cache_dir=tmp_path)
    cached = graph_cache_path(predictor.card.architecture, predictor.folder, None, tmp_path)
    cached.parent.mkdir(parents=True)
    _tampered(graph, cached, _card_edit(_four_genres))
    with pytest.raises(CardError, match="3 values per poster for 4 genres"):
        readers = _readers()
        readers["onnxruntime"](cached)  # the tampered graph itself is refused by every reader
    capsys.readouterr()
    runner = predictor.onnx_runner
    assert runner.genres == ["Action", "Comedy", "Drama"] and runner.path == cached
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: ") and "exported it again" in line
