"""Run an exported model with OpenVINO: preprocessed posters in, probabilities out.

The same exported ONNX graph as `OnnxRunner` (`GraphCache`), compiled for the CPU with
the LATENCY hint (its THROUGHPUT hint was slower on 2 cores) and f32 inference precision: on
CPUs with AVX-512 BF16 OpenVINO otherwise computes in bfloat16, which moved probabilities by
up to ~0.04 (BENCHMARKS.md). No torch here. Needs the `openvino` extra.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from postergenre._cpu import available_cores
from postergenre.errors import UserError
from postergenre.inference.onnx_runtime import RUN_CHUNK, ExportedGraph
from postergenre.models.graph_card import read_graph_card

INSTALL_HINT = "pip install 'postergenre[openvino]'"


def require_openvino() -> None:
    """Fail with the install hint when OpenVINO is missing (checked without importing it)."""
    if importlib.util.find_spec("openvino") is None:
        raise UserError(f"the OpenVINO runtime needs openvino: {INSTALL_HINT}")


class OpenVinoRunner(ExportedGraph):
    """An exported graph compiled by OpenVINO for the CPU, on `threads` inference threads
    (default: every available core); the same interface as `OnnxRunner`.

    `precision` is OpenVINO's inference precision: "f32" (default) matches ONNX Runtime within
    1e-4; "bf16" is faster where the CPU has AVX-512 BF16, and less exact. `config` adds or
    overrides OpenVINO compile properties (e.g. {"NUM_STREAMS": 1}).

    A batch runs `chunk` posters at a time (None: whole), as ONNX Runtime's does: OpenVINO
    sizes its activation memory to the largest batch it has run and keeps it, so batches of
    32 took `imdb-20` to a 1.97 GB peak against 525 MB in chunks of 4, at the same speed
    (BENCHMARKS.md, section 17)."""

    runtime = "openvino"

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        precision: str = "f32",
        config: Mapping[str, Any] | None = None,
        chunk: int | None = RUN_CHUNK,
    ):
        require_openvino()
        import openvino as ov

        core = ov.Core()
        self.threads = threads or available_cores()
        try:
            model = core.read_model(str(path))
            # OpenVINO keeps the ONNX file's metadata_props under rt_info "framework".
            # (checked first: reading a missing rt_info key inserts an empty one)
            has_metadata = model.has_rt_info(["framework"])
            framework = dict(model.get_rt_info()["framework"]) if has_metadata else {}
            self.metadata: dict[str, str] = {k: v.astype(str) for k, v in framework.items()}
            shapes = _dims(model.inputs[0]), _dims(model.outputs[0])
            properties = {
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": self.threads,
                "INFERENCE_PRECISION_HINT": precision,
                **(config or {}),
            }
            self.compiled = core.compile_model(model, "CPU", properties)
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise UserError(f"OpenVINO cannot load {path}: {reason}") from exc
        self.card = read_graph_card(self.metadata, str(path), *shapes)
        self.path = Path(path)
        self.precision = precision
        self.chunk = chunk
        self.request = self.compiled.create_infer_request()
        # a model that reads the poster's text has a second input: (batch, text width) features
        self.reads_text = len(self.compiled.inputs) > 1
        self.output = self.compiled.output(0)

    def __call__(self, x: np.ndarray, text: np.ndarray | None = None) -> np.ndarray:
        """Preprocessed float32 (B, 3, H, W) (and, for a model that reads text, its text
        features (B, text width)) -> probabilities (B, n_genres)."""
        if (text is None) == self.reads_text:
            raise ValueError("text features are needed exactly when the model reads text")
        x = np.ascontiguousarray(x, dtype=np.float32)
        expected = (3, self.card.input.height, self.card.input.width)
        if x.ndim != 4 or x.shape[1:] != expected:
            raise ValueError(
                f"expected input (batch, {', '.join(map(str, expected))}), got {x.shape}"
            )
        if not len(x):
            return np.zeros((0, len(self.genres)), np.float32)
        step = self.chunk or len(x)
        return np.concatenate(
            [
                self._infer(x[i : i + step], None if text is None else text[i : i + step])
                for i in range(0, len(x), step)
            ]
        )

    def _infer(self, x: np.ndarray, text: np.ndarray | None) -> np.ndarray:
        inputs = {0: x}
        if text is not None:
            inputs[1] = np.ascontiguousarray(text, dtype=np.float32)
        result = self.request.infer(inputs)
        # the request reuses its output buffer on the next call
        return np.array(result[self.output], dtype=np.float32, copy=True)


def _dims(port: Any) -> tuple[int | None, ...]:
    """The dimensions of an OpenVINO input or output, None where the graph leaves one open."""
    return tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
