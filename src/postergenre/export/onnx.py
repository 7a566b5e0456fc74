"""Export a model bundle to a self-describing ONNX file that outputs genre probabilities.

The graph's single input `pixels` is float32 NCHW, already preprocessed exactly like
`Predictor` does it (and as the file's `input` metadata says):

1. decode the poster to RGB and resize it to the input `width` x `height` with the bundle's
   `resize` mode (squash, crop or pad; bilinear);
2. scale to [0, 1]: `x / 255`;
3. normalise per channel: `(x - mean) / std`, then lay out as (batch, 3, height, width).

The single output `probabilities` is (batch, n_genres): softmax for single-label models,
sigmoid for multi-label ones, in the order of the `genres` metadata. The batch axis is dynamic;
height and width are fixed. Everything else a consumer needs travels in the model's
`metadata_props`: `genres`, `thresholds` and `input` (JSON), `task`, `architecture`,
`postergenre_version`.

The legacy TorchScript exporter is used on purpose (`dynamo=False`): it needs no `onnxscript`
and traces these models exactly. Every file is checked against PyTorch with ONNX Runtime
before it is written (atomically).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from postergenre import __version__
from postergenre.data.transforms import to_model_input
from postergenre.errors import UserError
from postergenre.models.bundle import ModelBundle, load_bundle, resolve_model

DEFAULT_OPSET = 17
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
TOLERANCE = 1e-4
PREPROCESSING = (
    "RGB, resize to input width x height by input.resize (bilinear), x / 255, "
    "(x - mean) / std, NCHW float32"
)


class OnnxMismatchError(UserError):
    """The exported graph does not reproduce PyTorch's probabilities within the tolerance."""


class ProbabilityModel(nn.Module):
    """A bundle's model with its output activation: softmax (single) or sigmoid (multi)."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return logits.softmax(1) if self.task == "single" else logits.sigmoid()


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
    meta = bundle.meta
    return {
        "architecture": str(meta["architecture"]),
        "task": bundle.task,
        "genres": json.dumps(bundle.genres),
        "thresholds": json.dumps(meta.get("thresholds") or {}),
        "input": json.dumps(meta["input"]),
        "preprocessing": PREPROCESSING,
        "output": f"{OUTPUT_NAME}: " + ("softmax" if bundle.task == "single" else "sigmoid"),
        "name": str(meta.get("name", "")),
        "postergenre_version": __version__,
    }


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


RUN_CHUNK = 4


class OnnxRunner:
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
        try:
            self.session = ort.InferenceSession(
                source, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            where = "the given model" if isinstance(path, bytes) else str(path)
            raise UserError(f"ONNX Runtime cannot load {where}: {exc}") from exc
        self.path = None if isinstance(path, bytes) else Path(path)
        self.threads = options.intra_op_num_threads
        [model_input] = self.session.get_inputs()
        self.input_name = model_input.name
        self.input_shape = tuple(model_input.shape)  # ("batch", 3, height, width)
        self.output_name = self.session.get_outputs()[0].name
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def genres(self) -> list[str]:
        return list(json.loads(self.metadata["genres"]))

    @property
    def input_json(self) -> dict[str, Any]:
        """The bundle's `input` section: width, height, resize, mean, std."""
        return dict(json.loads(self.metadata["input"]))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed float32 (B, 3, H, W) -> probabilities (B, n_genres)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        expected = self.input_shape[1:]
        if x.ndim != 4 or any(
            isinstance(e, int) and e != s for e, s in zip(expected, x.shape[1:], strict=True)
        ):
            raise ValueError(
                f"expected input (batch, {', '.join(map(str, expected))}), got {x.shape}"
            )
        # ONNX Runtime's CPU kernels run these networks fastest on a few posters at a time
        # (their activations stay in cache): measured 122 posters/s at 4 vs 96 at 32 for Lite0.
        return (
            np.concatenate(
                [
                    self.session.run([self.output_name], {self.input_name: x[i : i + RUN_CHUNK]})[0]
                    for i in range(0, len(x), RUN_CHUNK)
                ]
            )
            if len(x)
            else self.session.run([self.output_name], {self.input_name: x})[0]
        )


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
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

    spec = bundle.input_spec
    wrapper = ProbabilityModel(bundle.model, bundle.task).eval()
    # Trace with batch 2, so nothing can specialise on a batch of one.
    dummy = torch.zeros(2, 3, spec.height, spec.width)
    buffer = io.BytesIO()
    try:
        with _quiet_export(), torch.no_grad():
            torch.onnx.export(
                wrapper,
                (dummy,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises many types for unsupported graphs
        arch = bundle.meta["architecture"]
        raise UserError(f"cannot export {arch} to ONNX (opset {opset}): {exc}") from exc
    proto = onnx.load_from_string(buffer.getvalue())
    proto.producer_name = "postergenre"
    proto.producer_version = __version__
    proto.doc_string = (
        f"PosterGenre {bundle.meta['architecture']} ({bundle.task}-label): "
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
) -> Iterator[torch.Tensor]:
    """Model inputs to compare on: random posters (a batch of n_random, then of 1), then the
    given image files, preprocessed as `Predictor` does."""
    from postergenre.data.decode import load_poster_array

    spec = bundle.input_spec
    rng = np.random.default_rng(seed)
    for n in (n_random, 1):
        pixels = rng.integers(0, 256, (n, spec.height, spec.width, 3), dtype=np.uint8)
        yield to_model_input(pixels, spec.normalisation)
    paths = list(images or [])
    for start in range(0, len(paths), 16):
        chunk = paths[start : start + 16]
        pixels = np.stack(
            [load_poster_array(p, spec.width, spec.height, spec.resize) for p in chunk]
        )
        yield to_model_input(pixels, spec.normalisation)


def validate_onnx(
    model_bytes_or_path: bytes | str | Path,
    bundle: ModelBundle,
    images: Sequence[str | Path] | None = None,
    n_random: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare ONNX Runtime's probabilities with PyTorch's: {max_abs_diff, n_checked}."""
    runner = OnnxRunner(model_bytes_or_path)
    wrapper = ProbabilityModel(bundle.model, bundle.task).eval()
    worst, n = 0.0, 0
    for x in _check_batches(bundle, images, n_random, seed):
        with torch.no_grad():
            expected = wrapper(x).numpy()
        got = runner(x.numpy())
        if got.shape != expected.shape:
            raise OnnxMismatchError(f"ONNX output shape {got.shape} != PyTorch's {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
        n += len(x)
    return {"max_abs_diff": worst, "n_checked": n}


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder and rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _load(bundle_path_or_name: str | Path | ModelBundle) -> ModelBundle:
    if isinstance(bundle_path_or_name, ModelBundle):
        return bundle_path_or_name

    return load_bundle(resolve_model(bundle_path_or_name))


def export_onnx(
    bundle_path_or_name: str | Path | ModelBundle,
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
    bundle = _load(bundle_path_or_name)
    arch = str(bundle.meta["architecture"])
    data = _to_onnx_bytes(bundle, opset)
    check = validate_onnx(data, bundle, images)
    if not check["max_abs_diff"] <= tolerance:  # also catches NaN
        what = (
            "k-NN models cannot be exported exactly (top-k neighbour selection differs)"
            if arch.startswith("knn")
            else f"the ONNX graph of {arch} does not match PyTorch"
        )
        raise OnnxMismatchError(
            f"{what}: probabilities differ by up to {check['max_abs_diff']:.3g} "
            f"(tolerance {tolerance:g}) on {check['n_checked']} posters; nothing written"
        )
    out = Path(out).expanduser()
    _write_atomic(out, data)
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
