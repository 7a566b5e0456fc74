"""Run an exported model with ONNX Runtime: preprocessed posters in, probabilities out.

No torch here: this is the fast path `postergenre predict` takes by default. Exported graphs
live in the cache under a name derived from the bundle's content (`graph_cache_path`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from postergenre import __version__
from postergenre._cpu import available_cores
from postergenre.data.cache import default_cache_dir
from postergenre.errors import UserError
from postergenre.models.card import CARD_FILE, WEIGHTS_FILE, ModelCard
from postergenre.models.graph_card import read_graph_card

if TYPE_CHECKING:
    from postergenre.models.bundle import ModelBundle

# Bump when the exported graph changes for the same bundle, so caches re-export.
EXPORT_FORMAT = 2

# ONNX Runtime's CPU kernels run these networks fastest on a few posters at a time (their
# activations stay in cache): measured 122 posters/s at 4 vs 96 at 32 for Lite0.
RUN_CHUNK = 4


class ExportedGraph:
    """What every runtime reads from an exported graph's metadata: its card, validated against
    the graph when the runner is made (`read_graph_card`)."""

    metadata: dict[str, str]
    card: ModelCard

    @property
    def genres(self) -> list[str]:
        return list(self.card.genres)

    @property
    def input_json(self) -> dict[str, Any]:
        """The bundle's `input` section: width, height, resize, interpolation, mean, std."""
        return self.card.input.to_json()


class OnnxRunner(ExportedGraph):
    """An ONNX Runtime session (CPU, all graph optimisations, `threads` intra-op threads,
    default: every available core) over an exported bundle."""

    def __init__(self, path: str | Path | bytes, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise UserError("the ONNX runtime needs onnxruntime: pip install onnxruntime") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_cores()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        source = path if isinstance(path, bytes) else str(path)
        where = "the given model" if isinstance(path, bytes) else str(path)
        try:
            self.session = ort.InferenceSession(
                source, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(f"ONNX Runtime cannot load {where}: {exc}") from exc
        self.path = None if isinstance(path, bytes) else Path(path)
        self.threads = options.intra_op_num_threads
        model_input, *text_input = self.session.get_inputs()
        self.input_name = model_input.name
        self.input_shape = tuple(model_input.shape)  # ("batch", 3, height, width)
        # a model that reads the poster's text: (batch, buckets) text features
        self.text_name = text_input[0].name if text_input else None
        output = self.session.get_outputs()[0]
        self.output_name = output.name
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.card = read_graph_card(self.metadata, where, self.input_shape, output.shape)

    def __call__(self, x: np.ndarray, text: np.ndarray | None = None) -> np.ndarray:
        """Preprocessed float32 (B, 3, H, W) (and, for a model that reads text, its text
        features (B, buckets)) -> probabilities (B, n_genres)."""
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


def _content_key(folder: Path | None, bundle: ModelBundle | None) -> str:
    """A digest of a bundle's content and the export settings."""
    digest = hashlib.sha256(f"postergenre-onnx/{EXPORT_FORMAT}/{__version__}\n".encode())
    if folder is not None:
        for name in (CARD_FILE, WEIGHTS_FILE):
            try:
                with open(folder / name, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
            except OSError as exc:
                raise UserError(f"cannot read {folder / name}: {exc.strerror or exc}") from exc
    else:
        assert bundle is not None
        digest.update(json.dumps(bundle.card.to_json(), sort_keys=True).encode())
        for name, tensor in sorted(bundle.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def graph_cache_path(
    architecture: str, folder: Path | None, bundle: ModelBundle | None, cache_dir: Path | None
) -> Path:
    """Where the exported graph of a bundle lives under the cache root (it may not exist yet).

    The name is a digest of the bundle's files (or, in memory, its card and tensors), so a
    retrained bundle gets a new graph and a stale one is never used."""
    root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "onnx"
    return root / f"{architecture}-{_content_key(folder, bundle)[:24]}.onnx"
