"""A model file is a model: an exported graph (`postergenre export --out model.onnx`, fp32 or
int8) opened by ONNX Runtime or OpenVINO and held to the rules a bundle is held to.

`open_graph` refuses, in one line each, a file that is not a regular file of credible size,
bytes the runtime cannot load (garbage, truncated, another format renamed .onnx), a graph
without a PosterGenre card in its metadata, a card that does not match the graph (genres
against output size, input size against the pixel input: `read_graph_card`, the one reader of
graph cards, itself `ModelCard.from_json`, the one reader of cards), and a graph whose
probabilities for a grey poster cannot be right (`probe_problem`, the bundles' rule).

A graph holds no PyTorch weights: predicting and evaluating work, Grad-CAM (`explain`) and a
PyTorch runtime do not, and are refused with `GraphOnlyError`, saying what to use instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from postergenre.errors import UserError
from postergenre.inference.graph_cache import MAX_GRAPH_BYTES
from postergenre.inference.onnx_runtime import ExportedGraph
from postergenre.models.bundle_files import read_regular_file
from postergenre.models.card import CardError, probe_problem

GRAPH_RUNTIMES = ("auto", "onnx", "openvino")
# How far an int8 graph's single-label probabilities may sum from 1 (measured: 0.996).
INT8_SUM_TOLERANCE = 0.02


class GraphOnlyError(UserError):
    """What needs PyTorch weights was asked of an exported graph, which has none."""


def open_graph(path: str | Path, runtime: str = "auto", threads: int | None = None) -> Any:
    """The runner of the exported graph at `path` (`OnnxRunner` for runtime "auto" or "onnx",
    `OpenVinoRunner` for "openvino"), its card validated against the graph, and checked on a
    grey poster. Every refusal is one `UserError` line."""
    path = Path(path)
    if runtime not in GRAPH_RUNTIMES:
        raise GraphOnlyError(
            f"{path} is an exported graph: it runs with ONNX Runtime or OpenVINO "
            f"(--runtime onnx or openvino), not {runtime}, which needs the bundle's weights"
        )
    data = read_regular_file(path, MAX_GRAPH_BYTES)  # refuses FIFOs, devices, folders, giants
    if not data:
        raise CardError(f"{path} is empty, not an exported model")
    if runtime == "openvino":
        from postergenre.inference.openvino_runtime import OpenVinoRunner

        runner: ExportedGraph = OpenVinoRunner(path, threads)
    else:
        from postergenre.inference.onnx_runtime import OnnxRunner

        runner = OnnxRunner(data, threads, source=path)
    _check_probe(runner, path)
    runner.digest = hashlib.sha256(data).hexdigest()  # type: ignore[attr-defined]
    return runner


def _check_probe(runner: Any, path: Path) -> None:
    """Refuse a graph whose probabilities for a mid-grey poster cannot be right."""
    card = runner.card
    spec = card.input
    x = spec.normalise(np.full((1, spec.height, spec.width, 3), 128, np.uint8))
    text = [np.zeros((1, card.text.width), np.float32)] if card.text is not None else []
    try:
        probs = runner(x, *text)
    except Exception as exc:  # the runtimes raise their own types for a graph that cannot run
        raise CardError(f"{path} cannot run on a test poster: {exc}") from exc
    # an int8 graph's softmax output is quantized too, in steps of 1/255
    tolerance = INT8_SUM_TOLERANCE if "quantization" in runner.metadata else 1e-3
    problem = (
        probe_problem(probs, card.task, tolerance)
        if probs.shape == (1, len(card.genres))
        else f"of shape {probs.shape}, not (1, {len(card.genres)})"
    )
    if problem:
        raise CardError(
            f"{path}: the graph's probabilities for a grey test poster are {problem}; "
            "the graph is damaged"
        )


def graph_only_error(path: Path | None, card_name: str, what: str) -> GraphOnlyError:
    """The refusal of `what` (e.g. "Grad-CAM") for the graph-only model at `path`."""
    from postergenre.models.catalog import bundled_models

    source = (
        f"--model {card_name} (the bundled model it carries the card of)"
        if card_name in bundled_models()
        else "--model with the bundle folder or run folder it was exported from"
    )
    return GraphOnlyError(
        f"{what} needs the model's PyTorch weights, and {path or 'this model'} is an exported "
        f"graph without them (gradients cannot be taken through an ONNX file); use {source}"
    )


def quantize_graph(
    graph: Any,
    out: str | Path,
    quantize: str | None,
    calibration: Sequence[str | Path] | None,
    calibration_size: int,
) -> dict[str, Any]:
    """`Predictor.export` for a graph: it is exported already, so only quantizing it is left
    (`export.quantize.quantize_onnx`); the report has the keys of a bundle's int8 export."""
    if quantize is None:
        raise UserError(
            f"{graph.path} is already an exported ONNX graph: copy it, or quantize it with "
            "--quantize int8"
        )
    if not calibration:
        raise UserError(f"{quantize} quantization needs calibration posters (training posters)")
    from postergenre.export.quantize import quantize_onnx

    report = quantize_onnx(graph.path, out, calibration, quantize, calibration_size)
    card = graph.card
    made = {"architecture": card.architecture, "task": card.task, "genres": list(card.genres)}
    return {**report, **made, "fp32_size_bytes": graph.path.stat().st_size}
