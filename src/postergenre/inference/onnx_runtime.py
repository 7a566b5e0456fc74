"""Run an exported model with ONNX Runtime: preprocessed posters in, probabilities out.

No torch here: this is the fast path `postergenre predict` takes by default. Exported graphs
live in the cache, bound to their bundle (`postergenre.inference.graph_cache`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from postergenre._cpu import available_cores
from postergenre.errors import UserError
from postergenre.models.card import ModelCard
from postergenre.models.graph_card import read_graph_card

# ONNX Runtime's CPU kernels run these networks fastest on a few posters at a time (their
# activations stay in cache): measured 122 posters/s at 4 vs 96 at 32 for Lite0.
RUN_CHUNK = 4


class ExportedGraph:
    """What every runtime reads from an exported graph's metadata: its card, validated against
    the graph when the runner is made (`read_graph_card`)."""

    metadata: dict[str, str]
    card: ModelCard
    runtime = "onnx"  # the `Predictor` runtime that runs it

    @property
    def genres(self) -> list[str]:
        return list(self.card.genres)

    @property
    def input_json(self) -> dict[str, Any]:
        """The bundle's `input` section: width, height, resize, interpolation, mean, std."""
        return self.card.input.to_json()


class OnnxRunner(ExportedGraph):
    """An ONNX Runtime session (CPU, all graph optimisations, `threads` intra-op threads, at
    most and by default every available core) over an exported PosterGenre graph: a file, or
    its bytes (`source`: the file they were read from, for messages and `path`).

        runner = OnnxRunner("model.onnx")   # its card: runner.card, runner.genres
        probs = runner(runner.card.input.normalise(pixels))   # uint8 (B, H, W, 3) posters

    `postergenre.inference.open_graph` also checks the file first and the graph on a grey
    poster, as `Predictor.from_pretrained("model.onnx")` does."""

    def __init__(
        self,
        path: str | Path | bytes,
        threads: int | None = None,
        source: str | Path | None = None,
    ):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise UserError("the ONNX runtime needs onnxruntime: pip install onnxruntime") from exc
        options = ort.SessionOptions()
        # more threads than cores only take turns on them (a Ray node may claim more CPUs)
        options.intra_op_num_threads = min(threads or available_cores(), available_cores())
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model = path if isinstance(path, bytes) else str(path)
        if not isinstance(path, bytes):
            source = path
        where = "the given model" if source is None else str(source)
        try:
            self.session = ort.InferenceSession(
                model, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(f"ONNX Runtime cannot load {where}: {_first_line(exc)}") from exc
        self.path = None if source is None else Path(source)
        self.threads = options.intra_op_num_threads
        model_input, *text_input = self.session.get_inputs()
        self.input_name = model_input.name
        self.input_shape = tuple(model_input.shape)  # ("batch", 3, height, width)
        # a model that reads the poster's text: (batch, text width) text features
        self.text_name = text_input[0].name if text_input else None
        output = self.session.get_outputs()[0]
        self.output_name = output.name
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.card = read_graph_card(self.metadata, where, self.input_shape, output.shape)

    def __call__(self, x: np.ndarray, text: np.ndarray | None = None) -> np.ndarray:
        """Preprocessed float32 (B, 3, H, W) (and, for a model that reads text, its text
        features (B, text width)) -> probabilities (B, n_genres)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if (text is None) != (self.text_name is None):
            raise ValueError("text features are needed exactly when the model reads text")
        expected = self.input_shape[1:]
        if x.ndim != 4 or any(
            isinstance(e, int) and e != s for e, s in zip(expected, x.shape[1:], strict=True)
        ):
            raise ValueError(
                f"expected input (batch, {', '.join(map(str, expected))}), got {x.shape}"
            )

        def feed(rows: slice) -> dict[str, np.ndarray]:
            inputs = {self.input_name: x[rows]}
            if self.text_name is not None and text is not None:
                inputs[self.text_name] = np.ascontiguousarray(text[rows], dtype=np.float32)
            return inputs

        if not len(x):
            return self.session.run([self.output_name], feed(slice(None)))[0]
        return np.concatenate(
            [
                self.session.run([self.output_name], feed(slice(i, i + RUN_CHUNK)))[0]
                for i in range(0, len(x), RUN_CHUNK)
            ]
        )


def _first_line(exc: Exception) -> str:
    """ONNX Runtime's reason without its error-code prefix, on one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.split(" : ")[-1] if text.startswith("[ONNXRuntimeError]") else text
