"""The card an exported graph carries in its metadata, checked as a bundle's card is.

An ONNX file may come from anywhere (a cache, a colleague, an old release), so every reader
(ONNX Runtime, OpenVINO, int8 quantization) takes its genres and preprocessing from here
only: the `card` entry read by `ModelCard.from_json`, the `genres` and `input` entries equal
to the card's, and the card consistent with the graph itself. NumPy-free and torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from postergenre.models.card import CardError, ModelCard

# Entries every PosterGenre export has (`postergenre.export.onnx.onnx_metadata` writes them).
REQUIRED_ENTRIES = ("card", "genres", "input")


def read_graph_card(
    metadata: Mapping[str, str],
    source: str,
    input_shape: Sequence[Any] = (),
    output_shape: Sequence[Any] = (),
) -> ModelCard:
    """The validated card of the graph `source` from its `metadata`, checked against the shapes
    of its pixel input (batch, 3, height, width) and its output (batch, genres) where given
    (a dimension that is not a number is one the graph leaves open). Anything missing,
    damaged or inconsistent is refused with one `CardError` line."""
    missing = [key for key in REQUIRED_ENTRIES if key not in metadata]
    if missing:
        raise CardError(
            f"{source} is not a PosterGenre export: its metadata has no {', '.join(missing)}"
        )
    entries = {key: _json_entry(metadata, key, source) for key in REQUIRED_ENTRIES}
    card = ModelCard.from_json(entries["card"], source=f"{source} (card metadata)")
    if entries["genres"] != list(card.genres):
        _fail(source, "its genres metadata differs from its card's genres")
    if entries["input"] != card.input.to_json():
        _fail(source, "its input metadata differs from its card's input")
    outputs = output_shape[-1] if output_shape else None
    if _differs(outputs, len(card.genres)):
        _fail(source, f"the graph gives {outputs} values per poster for {len(card.genres)} genres")
    spec = card.input
    height, width = input_shape[2:4] if len(input_shape) == 4 else (None, None)
    if _differs(height, spec.height) or _differs(width, spec.width):
        card_size = f"{spec.height}x{spec.width}"
        _fail(source, f"the graph reads {height}x{width} pixels, its card {card_size}")
    return card


def _differs(dimension: Any, expected: int) -> bool:
    """Whether a graph's fixed dimension differs from the card's (an open one never does)."""
    return isinstance(dimension, int) and dimension != expected


def _json_entry(metadata: Mapping[str, str], key: str, source: str) -> Any:
    try:
        return json.loads(metadata[key])
    except (TypeError, ValueError) as exc:
        _fail(source, f"its {key} metadata is not valid JSON ({exc})")


def _fail(source: str, problem: str) -> NoReturn:
    raise CardError(f"{source} is a damaged PosterGenre export: {problem}")
