"""Run exported bundles with ONNX Runtime, and keep one exported file per bundle in the cache.

`OnnxRunner(path)(x)` maps preprocessed float32 NCHW posters to genre probabilities (see
`postergenre.export.onnx` for the preprocessing). `onnx_for_bundle(bundle)` exports a bundle
once into `<cache>/onnx/` and returns the same file afterwards: the file name is a hash of the
bundle's contents, so a retrained bundle gets a new file and a stale one is never used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from postergenre import __version__
from postergenre.data.cache import default_cache_dir
from postergenre.errors import UserError
from postergenre.export.onnx import OnnxRunner, available_cores, export_onnx
from postergenre.models.bundle import (
    META_FILE,
    WEIGHTS_FILE,
    ModelBundle,
    read_meta,
    resolve_model,
)

__all__ = ["OnnxRunner", "available_cores", "onnx_for_bundle"]

# Bump when the exported graph changes for the same bundle, so caches re-export.
EXPORT_FORMAT = 1


def _bundle_key(bundle: str | Path | ModelBundle) -> tuple[str, str]:
    """(architecture, hex digest) identifying a bundle's content and the export settings."""
    digest = hashlib.sha256(f"postergenre-onnx/{EXPORT_FORMAT}/{__version__}\n".encode())
    if isinstance(bundle, ModelBundle):  # in memory: hash the tensors and the metadata
        meta = bundle.meta
        digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
        for name, tensor in sorted(bundle.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    else:
        folder = Path(bundle)
        meta = read_meta(folder)  # a clear UserError for a broken bundle
        digest.update((folder / META_FILE).read_bytes())
        if not (folder / WEIGHTS_FILE).is_file():
            raise UserError(f"{folder} has no {WEIGHTS_FILE}")
        with open(folder / WEIGHTS_FILE, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return str(meta.get("architecture", "model")), digest.hexdigest()


def onnx_for_bundle(bundle_dir: str | Path | ModelBundle, cache_dir: Path | None = None) -> Path:
    """The ONNX file of a bundle (a bundle folder, a bundled name or run folder, or a loaded
    `ModelBundle`), exported and validated on first use into `cache_dir` (default
    `default_cache_dir() / "onnx"`) and reused afterwards."""

    if not isinstance(bundle_dir, ModelBundle):
        bundle_dir = resolve_model(bundle_dir)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "onnx"
    arch, digest = _bundle_key(bundle_dir)
    path = folder / f"{arch}-{digest[:24]}.onnx"
    if not path.is_file():
        export_onnx(bundle_dir, path)
    return path
