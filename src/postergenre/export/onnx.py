"""Export a model bundle to a self-describing ONNX file that outputs genre probabilities.

The graph's single input `pixels` is float32 NCHW, already preprocessed exactly like the
`Predictor` does it (`InputSpec.prepare`, as the file's `input` metadata says):

1. decode the poster to RGB and resize it to the input `width` x `height` with the card's
   `resize` mode and `interpolation`;
2. scale to [0, 1]: `x / 255`;
3. normalise per channel: `(x - mean) / std`, then lay out as (batch, 3, height, width).

A model that reads the poster's text (the card's `text` section) has a second input `text`:
float32 (batch, buckets [+ 384]), the sublinear term frequencies of the hashed character
n-grams of the text OCR reads from the same resized poster (with the card's `text.ocr` setting),
followed, where the card's `text.sentence` says so, by the text's all-MiniLM-L6-v2 embedding
(`postergenre.data.text.TextSpec.features`).

The single output `probabilities` is (batch, n_genres), by the card's activation rule, in the
order of the `genres` metadata. The batch axis is dynamic; height and width are fixed. The
whole card travels in the model's `metadata_props` (`card`), with `genres`, `thresholds`,
`input`, `task` and `architecture` also as separate entries.

The legacy TorchScript exporter is used on purpose (`dynamo=False`): it needs no `onnxscript`
and traces these models exactly. Every file is checked against PyTorch with ONNX Runtime
before it is written (atomically). The `Predictor` keeps one exported file per bundle content
in the cache, so predicting with ONNX Runtime exports once.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from postergenre import __version__
from postergenre.atomic import write_bytes
from postergenre.data.decode import decode_poster
from postergenre.data.text import read_poster_texts
from postergenre.errors import UserError
from postergenre.models.bundle import ModelBundle, load_bundle
from postergenre.models.card import to_probabilities
from postergenre.models.catalog import resolve_model
from postergenre.paths import user_path

DEFAULT_OPSET = 17
INPUT_NAME = "pixels"
TEXT_INPUT_NAME = "text"
OUTPUT_NAME = "probabilities"
TOLERANCE = 1e-4
PREPROCESSING = (
    "RGB, resize to input width x height by input.resize and input.interpolation, x / 255, "
    "(x - mean) / std, NCHW float32"
)


class OnnxMismatchError(UserError):
    """The exported graph does not reproduce PyTorch's probabilities within the tolerance."""


class ProbabilityModel(nn.Module):
    """A bundle's model with its output activation (the card's rule)."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return to_probabilities(self.model(*inputs), self.task)


def require_onnx() -> None:
    """Fail with an install hint when the optional ONNX packages are missing."""
    missing = []
    for module in ("onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise UserError(
            f"ONNX support needs {' and '.join(missing)}: pip install {' '.join(missing)}"
        )


def onnx_metadata(bundle: ModelBundle) -> dict[str, str]:
    """The `metadata_props` of an exported bundle: all strings, JSON where structured."""
    card = bundle.card
    data = card.to_json()
    return {
        "card": json.dumps(data),
        "architecture": card.architecture,
        "task": card.task,
        "genres": json.dumps(list(card.genres)),
        "thresholds": json.dumps(data["thresholds"] or {}),
        "input": json.dumps(data["input"]),
        "preprocessing": PREPROCESSING,
        "text": json.dumps(data["text"]),
        "output": f"{OUTPUT_NAME}: " + ("softmax" if card.task == "single" else "sigmoid"),
        "name": card.name,
        "postergenre_version": __version__,
    }


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence the warnings the legacy exporter always gives for these models, on purpose:
    - its DeprecationWarning (we choose `dynamo=False`: no onnxscript needed, exact traces);
    - TracerWarnings where a model turns a shape into a Python number (EfficientNet's SAME
      padding from height/width, k-NN's k and task flag): the graph fixes height and width
      and only the batch axis is dynamic, so these constants are correct for every input."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        yield


def _to_onnx_bytes(bundle: ModelBundle, opset: int) -> bytes:
    """Trace the probability model and return the serialized ONNX model with its metadata."""
    import onnx

    spec = bundle.card.input
    wrapper = ProbabilityModel(bundle.model, bundle.task).eval()
    # Trace with batch 2, so nothing can specialise on a batch of one.
    dummy: tuple[torch.Tensor, ...] = (torch.zeros(2, 3, spec.height, spec.width),)
    names = [INPUT_NAME]
    if bundle.card.text is not None:
        dummy += (torch.zeros(2, bundle.card.text.width),)
        names.append(TEXT_INPUT_NAME)
    buffer = io.BytesIO()
    try:
        with quiet_export(), torch.no_grad():
            torch.onnx.export(
                wrapper,
                dummy,
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_axes={**{name: {0: "batch"} for name in names}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises many types for unsupported graphs
        arch = bundle.card.architecture
        raise UserError(f"cannot export {arch} to ONNX (opset {opset}): {exc}") from exc
    proto = onnx.load_from_string(buffer.getvalue())
    proto.producer_name = "postergenre"
    proto.producer_version = __version__
    proto.doc_string = (
        f"PosterGenre {bundle.card.architecture} ({bundle.task}-label): "
        f"{OUTPUT_NAME} over {len(bundle.genres)} genres from {INPUT_NAME} = {PREPROCESSING}"
    )
    del proto.metadata_props[:]
    for key, value in onnx_metadata(bundle).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _check_batches(
    bundle: ModelBundle, images: Sequence[str | Path] | None, n_random: int, seed: int
) -> Iterator[tuple[np.ndarray, ...]]:
    """Model inputs to compare on: random posters (a batch of n_random, then of 1), then the
    given image files, preprocessed as the `Predictor` does; for a model that reads text,
    with random text features (random posters) or the text OCR reads (image files)."""
    spec, text = bundle.card.input, bundle.card.text
    rng = np.random.default_rng(seed)
    for n in (n_random, 1):
        x = spec.normalise(rng.integers(0, 256, (n, spec.height, spec.width, 3), dtype=np.uint8))
        if text is None:
            yield (x,)
        else:
            present = rng.random((n, text.buckets)) < 0.002
            counts = (present * (1 + rng.random((n, text.buckets)))).astype(np.float32)
            sentence = rng.normal(size=(n, text.width - text.buckets)).astype(np.float32)
            sentence /= np.maximum(np.linalg.norm(sentence, axis=1, keepdims=True), 1e-12)
            yield x, np.hstack([counts, sentence])
    paths = list(images or [])
    for start in range(0, len(paths), 16):
        fit = (spec.width, spec.height)
        batch = paths[start : start + 16]
        pixels = np.stack([spec.resize_image(decode_poster(p, fit=fit)) for p in batch])
        if text is None:
            yield (spec.normalise(pixels),)
        else:
            yield spec.normalise(pixels), text.features(read_poster_texts(pixels, text.ocr))


def validate_onnx(
    model_bytes_or_path: bytes | str | Path,
    bundle: ModelBundle,
    images: Sequence[str | Path] | None = None,
    n_random: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare ONNX Runtime's probabilities with PyTorch's: {max_abs_diff, n_checked}."""
    # A plain session: export sits below inference, which runs exported graphs for real.
    import onnxruntime as ort

    source = model_bytes_or_path
    try:
        session = ort.InferenceSession(
            source if isinstance(source, bytes) else str(source),
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise OnnxMismatchError(f"ONNX Runtime cannot load the exported graph: {exc}") from exc
    wrapper = ProbabilityModel(bundle.model, bundle.task).eval()
    worst, n = 0.0, 0
    names = [i.name for i in session.get_inputs()]
    for inputs in _check_batches(bundle, images, n_random, seed):
        with torch.no_grad():
            expected = wrapper(*map(torch.from_numpy, inputs)).numpy()
        got = session.run([OUTPUT_NAME], dict(zip(names, inputs, strict=True)))[0]
        if got.shape != expected.shape:
            raise OnnxMismatchError(f"ONNX output shape {got.shape} != PyTorch's {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
        n += len(inputs[0])
    return {"max_abs_diff": worst, "n_checked": n}


def export_onnx(
    bundle: str | Path | ModelBundle,
    out: Path,
    opset: int = DEFAULT_OPSET,
    images: Sequence[str | Path] | None = None,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Export a bundle (a bundled name, a bundle or run folder, or a loaded `ModelBundle`) to
    `out` and check it against PyTorch on random posters and, if given, real `images`.

    Returns {path, size_bytes, max_abs_diff, n_checked, opset, architecture, task, genres,
    seconds}. Raises `UserError` for a missing model or missing ONNX packages, and
    `OnnxMismatchError` (nothing written) when probabilities differ by more than `tolerance`.
    """
    require_onnx()
    started = time.perf_counter()
    if not isinstance(bundle, ModelBundle):
        bundle = load_bundle(resolve_model(bundle))
    arch = bundle.card.architecture
    data = _to_onnx_bytes(bundle, opset)
    check = validate_onnx(data, bundle, images)
    if not check["max_abs_diff"] <= tolerance:  # also catches NaN
        what = (
            "k-NN models cannot always be exported exactly (top-k neighbour selection differs)"
            if bundle.card.kind == "knn"
            else f"the ONNX graph of {arch} does not match PyTorch"
        )
        raise OnnxMismatchError(
            f"{what}: probabilities differ by up to {check['max_abs_diff']:.3g} "
            f"(tolerance {tolerance:g}) on {check['n_checked']} posters; nothing written"
        )
    out = write_bytes(user_path(out), data)
    return {
        "path": str(out),
        "size_bytes": out.stat().st_size,
        **check,
        "opset": opset,
        "architecture": arch,
        "task": bundle.task,
        "genres": bundle.genres,
        "seconds": round(time.perf_counter() - started, 3),
    }
