"""Static int8 quantization of an exported graph with ONNX Runtime, calibrated on real posters.

The fp32 graph of `export_onnx` goes through ONNX Runtime's `quant_pre_process` (shape
inference and graph optimisation, which quantization needs to place its nodes well), then
`quantize_static` with activation ranges measured on calibration posters: training posters,
decoded and preprocessed exactly as the graph's `input` metadata says (`InputSpec.resize_image`
then `normalise`, the calls prediction makes), so the ranges are those the model sees in use.

The settings were chosen on the imdb-20-fast graph and the validation split on an AVX-512 VNNI
CPU (BENCHMARKS.md, "int8 and OpenVINO"):
- QDQ format (QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into integer
  kernels): faster here than the QOperator format, and OpenVINO runs it too;
- uint8 activations with int8 weights (U8S8), ONNX Runtime's fast x86 path (S8S8 ran at about
  half the speed); `reduce_range` off, as VNNI has no saturation to avoid;
- weights per output channel: per-tensor scales lost 1.2 mAP points on EfficientNet-Lite's
  depthwise convolutions;
- every supported operator quantized: leaving the stem, the head or the depthwise convolutions
  in float, or quantizing convolutions only, moved probabilities further and ran slower;
- min/max activation ranges (`CALIBRATION_METHOD`).

The quantized file keeps every metadata entry of the fp32 graph (genres, input, card, ...)
plus `quantization`, so `OnnxRunner` and the `Predictor` run it like any export.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from postergenre.atomic import write_bytes
from postergenre.data.decode import decode_poster
from postergenre.data.preprocess import InputSpec
from postergenre.errors import PosterDecodeError, UserError
from postergenre.models.graph_card import read_graph_card
from postergenre.paths import user_path

QUANTIZATIONS = ("int8",)
# int8 would be recommended for bulk scoring if it cost <= 0.005 of test mAP and of
# three-genre accuracy; measured (BENCHMARKS.md, section 15) it cost more, so it is offered as
# a smaller file, with this note.
INT8_RECOMMENDED = False
INT8_NOTE = (
    "int8 is not recommended for bulk scoring: against fp32 it lost 0.006 test mAP "
    "(imdb-20-fast) and 0.9 points of three-genre accuracy, more than the 0.005 allowed; "
    "--runtime openvino is faster at fp32 accuracy (BENCHMARKS.md, section 15)"
)
CALIBRATION_POSTERS = 256
# Small batches bound the calibrator's memory: it holds every activation of a batch at once.
CALIBRATION_BATCH = 4
# Activation ranges from the plain min and max: percentile and entropy ranges scored the same
# within 0.002 mAP on the validation split and took 3-7x longer to calibrate.
CALIBRATION_METHOD = "MinMax"
# Posters compared between the fp32 and int8 graphs when the quantized file is written.
CHECK_POSTERS = 32
MIN_CALIBRATION_POSTERS = 8


def calibration_sample(
    paths: Sequence[str | Path], n: int = CALIBRATION_POSTERS, seed: int = 0
) -> list[Path]:
    """`n` of `paths` drawn at random (seeded, so an export is reproducible), in path order."""
    paths = [Path(p) for p in paths]
    if len(paths) <= n:
        return sorted(paths)
    rng = np.random.default_rng(seed)
    return sorted(paths[i] for i in rng.choice(len(paths), n, replace=False))


def graph_metadata(model: Any) -> dict[str, str]:
    """The `metadata_props` of an ONNX `ModelProto` as a dict."""
    return {entry.key: entry.value for entry in model.metadata_props}


def input_spec_of(metadata: dict[str, str], source: str = "the ONNX file") -> InputSpec:
    """The preprocessing a PosterGenre graph expects, from its validated card metadata."""
    return read_graph_card(metadata, source).input


def _dims(value: Any) -> list[Any]:
    """The dimensions of an ONNX graph input or output: a number, or the name of an open one."""
    return [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in value.type.tensor_type.shape.dim]  # fmt: skip


def decode_calibration(paths: Sequence[str | Path], spec: InputSpec) -> np.ndarray:
    """Calibration posters as uint8 (N, H, W, 3) at the input size; unreadable files are
    skipped, and too few readable ones is an error."""
    pixels, skipped = [], 0
    for path in paths:
        try:
            pixels.append(spec.resize_image(decode_poster(path, fit=(spec.width, spec.height))))
        except PosterDecodeError:
            skipped += 1
    if len(pixels) < MIN_CALIBRATION_POSTERS:
        raise UserError(
            f"int8 calibration needs at least {MIN_CALIBRATION_POSTERS} readable posters, got "
            f"{len(pixels)} of {len(paths)}"
        )
    return np.stack(pixels)


class PosterCalibrationReader:
    """ONNX Runtime's `CalibrationDataReader` protocol over decoded posters: batches of
    `CALIBRATION_BATCH` preprocessed float32 inputs, normalised as they are read.

    `__len__` and `set_range` let the calibrator take one batch at a time and fold it into
    its ranges: collecting every activation of every poster first took over 14 GB for the
    three-backbone models."""

    def __init__(self, pixels: np.ndarray, spec: InputSpec, input_name: str):
        self.pixels, self.spec, self.input_name = pixels, spec, input_name
        self._batches: Iterator[int] = iter(range(len(self)))

    def __len__(self) -> int:
        return -(-len(self.pixels) // CALIBRATION_BATCH)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._batches = iter(range(start_index, end_index))

    def get_next(self) -> dict[str, np.ndarray] | None:
        i = next(self._batches, None)
        if i is None:
            return None
        batch = self.pixels[i * CALIBRATION_BATCH : (i + 1) * CALIBRATION_BATCH]
        return {self.input_name: self.spec.normalise(batch)}

    def rewind(self) -> None:
        self.set_range(0, len(self))


def _session(model: bytes) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def compare_graphs(fp32: bytes, int8: bytes, x: np.ndarray) -> dict[str, Any]:
    """Max abs probability difference and top-genre agreement of two graphs on inputs `x`."""
    a, b = _session(fp32), _session(int8)
    name = a.get_inputs()[0].name
    p32 = a.run(None, {name: x})[0]
    p8 = b.run(None, {name: x})[0]
    return {
        "max_abs_diff_vs_fp32": float(np.abs(p8 - p32).max()),
        "top_genre_agreement": float((p8.argmax(1) == p32.argmax(1)).mean()),
        "n_compared": len(x),
    }


def quantize_int8(model: bytes, pixels: np.ndarray, spec: InputSpec) -> bytes:
    """The int8 QDQ graph of an fp32 graph, calibrated on decoded posters (uint8 NHWC)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    proto = onnx.load_from_string(model)
    metadata = graph_metadata(proto)
    input_name = proto.graph.input[0].name
    # Some calibrators print progress on stdout, which `export --json` keeps for its report.
    with (
        tempfile.TemporaryDirectory(prefix="postergenre-int8-") as tmp,
        contextlib.redirect_stdout(io.StringIO()),
    ):
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(proto, prepared)
        quantize_static(
            prepared,
            quantized,
            PosterCalibrationReader(pixels, spec, input_name),  # type: ignore[arg-type]
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHOD),
            # Fold one batch at a time into the ranges.
            extra_options={"CalibStridedMinMax": 1},
        )
        result = onnx.load(quantized)
    metadata["quantization"] = json.dumps(
        {
            "scheme": "int8 static",
            "format": "QDQ",
            "activations": "uint8",
            "weights": "int8 per channel",
            "calibration": CALIBRATION_METHOD.lower(),
            "calibration_posters": len(pixels),
        }
    )
    # Exactly the fp32 graph's entries plus `quantization`, none of the tools' own.
    del result.metadata_props[:]
    for key, value in metadata.items():
        entry = result.metadata_props.add()
        entry.key, entry.value = key, value
    result.doc_string = proto.doc_string + " (int8, static quantization)"
    return result.SerializeToString()


def _check_quantization(quantization: str) -> None:
    """Refuse an unknown quantization before any work starts."""
    if quantization not in QUANTIZATIONS:
        raise UserError(
            f"unknown quantization {quantization!r}: choose one of {', '.join(QUANTIZATIONS)}"
        )


def quantize_onnx(
    model: bytes | str | Path,
    out: str | Path,
    calibration: Sequence[str | Path],
    quantization: str = "int8",
    n_calibration: int = CALIBRATION_POSTERS,
    seed: int = 0,
) -> dict[str, Any]:
    """Quantize an exported PosterGenre graph (bytes or a file) and write it to `out`.

    `calibration` are poster files (training posters, not test ones); `n_calibration` of them
    are drawn at random. Returns {path, size_bytes, quantization, calibration_posters,
    max_abs_diff_vs_fp32, top_genre_agreement, n_compared, recommended, note, seconds}:
    `max_abs_diff_vs_fp32` .. `n_compared` compare the two graphs on the first
    `CHECK_POSTERS` calibration posters; `note` says why int8 is not recommended, if so.
    """
    _check_quantization(quantization)
    import onnx

    started = time.perf_counter()
    source = "the given model" if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes):
        model = Path(model).read_bytes()
    proto = onnx.load_from_string(model)
    if len(proto.graph.input) != 1:
        names = ", ".join(i.name for i in proto.graph.input)
        raise UserError(f"int8 quantization is for graphs with one input (pixels), not {names}")
    shapes = _dims(proto.graph.input[0]), _dims(proto.graph.output[0])
    spec = read_graph_card(graph_metadata(proto), source, *shapes).input
    del proto
    pixels = decode_calibration(calibration_sample(calibration, n_calibration, seed), spec)
    data = quantize_int8(model, pixels, spec)
    check = compare_graphs(model, data, spec.normalise(pixels[:CHECK_POSTERS]))
    out = write_bytes(user_path(out), data)
    return {
        "path": str(out),
        "size_bytes": out.stat().st_size,
        "quantization": quantization,
        "calibration_posters": len(pixels),
        **check,
        "recommended": INT8_RECOMMENDED,
        "note": None if INT8_RECOMMENDED else INT8_NOTE,
        "seconds": round(time.perf_counter() - started, 3),
    }


def export_quantized(
    bundle: Any,
    out: str | Path,
    calibration: Sequence[str | Path],
    quantization: str = "int8",
    images: Sequence[str | Path] | None = None,
    n_calibration: int = CALIBRATION_POSTERS,
    seed: int = 0,
) -> dict[str, Any]:
    """Export a bundle (as `export_onnx` takes it) to fp32 ONNX, checked against PyTorch on
    random posters and `images`, then quantize it with `quantize_onnx` into `out`.

    Returns `quantize_onnx`'s report with the fp32 check's {max_abs_diff, n_checked} and
    the export's {opset, architecture, task, genres}."""
    from postergenre.export.onnx import export_onnx

    _check_quantization(quantization)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="postergenre-fp32-") as tmp:
        fp32 = export_onnx(bundle, Path(tmp) / "fp32.onnx", images=images)
        report = quantize_onnx(fp32["path"], out, calibration, quantization, n_calibration, seed)
    keep = ("max_abs_diff", "n_checked", "opset", "architecture", "task", "genres")
    return {**report, **{k: fp32[k] for k in keep}, "fp32_size_bytes": fp32["size_bytes"],
            "seconds": round(time.perf_counter() - started, 3)}  # fmt: skip
