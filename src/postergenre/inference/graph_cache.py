"""The exported-graph cache: each bundle's ONNX graph, exported once and bound to that bundle.

A cached graph is a file that can be replaced, edited or damaged after it was written, so it is
used only when it proves to be the very graph exported from this bundle: the export appends one
metadata entry (`BINDING_KEY`) that records the bundle's digest (`bundle_digest`: the card's and
the weights' bytes) and the digest of the graph's bytes before it. Another bundle's graph, an
edited, truncated or foreign file fails the check and is exported again.

Cost: the bundle is hashed once per load (its digest also names the cached file) and the graph
once (about 0.1 s for 60 MB of each); predicting a poster costs nothing more.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from postergenre import __version__
from postergenre.atomic import write_bytes
from postergenre.data.cache import default_cache_dir
from postergenre.models.bundle_files import MAX_WEIGHTS_BYTES, bundle_digest, read_regular_file
from postergenre.models.card import CardError

if TYPE_CHECKING:
    from postergenre.models.bundle import ModelBundle

# Bump when the exported graph changes for the same bundle, so caches re-export.
EXPORT_FORMAT = 3
BINDING_KEY = "postergenre_binding"
# A graph holds the weights once, plus its structure: twice the largest weights is beyond any.
MAX_GRAPH_BYTES = 2 * MAX_WEIGHTS_BYTES


def model_digest(folder: Path | None, bundle: ModelBundle | None) -> str:
    """The SHA-256 (hex) of a bundle: of its files (`bundle_digest`) when it has a `folder`,
    else of the loaded `bundle`'s card and tensors."""
    if folder is not None:
        return bundle_digest(folder)
    assert bundle is not None, "give a bundle's folder or the loaded bundle"
    digest = hashlib.sha256(json.dumps(bundle.card.to_json(), sort_keys=True).encode())
    for name, tensor in sorted(bundle.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def graph_cache_path(
    architecture: str,
    folder: Path | None,
    bundle: ModelBundle | None,
    cache_dir: Path | None,
    digest: str | None = None,
) -> Path:
    """Where the exported graph of a bundle lives under the cache root (it may not exist yet):
    named by the bundle's digest (`model_digest`, or `digest` when already known) and the
    export settings, so a retrained bundle gets a new graph."""
    digest = digest or model_digest(folder, bundle)
    key = hashlib.sha256(f"postergenre-onnx/{EXPORT_FORMAT}/{__version__}\n{digest}".encode())
    root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "onnx"
    return root / f"{architecture}-{key.hexdigest()[:24]}.onnx"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _binding(bundle: str, graph: str) -> bytes:
    """The serialized `metadata_props` entry (ModelProto field 14) binding a graph to a bundle.
    Protocol buffers merge fields appended to a message, so appending it adds the entry."""
    key, value = BINDING_KEY.encode(), f"bundle:{bundle} graph:{graph}".encode()
    entry = b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(value)) + value
    return b"\x72" + _varint(len(entry)) + entry


_BINDING_BYTES = len(_binding("0" * 64, "0" * 64))
# The binding's bytes before the bundle's digest (the same for every binding).
_BINDING_HEAD = _binding("0" * 64, "0" * 64)[: -len("0" * 64 + " graph:" + "0" * 64)]


@dataclass(frozen=True)
class GraphCache:
    """The cached graph of the bundle whose digest is `digest`, at `path`."""

    path: Path
    digest: str

    @classmethod
    def of(cls, architecture: str, digest: str, cache_dir: Path | None) -> GraphCache:
        return cls(graph_cache_path(architecture, None, None, cache_dir, digest), digest)

    def problem(self) -> str | None:
        """Why the cached graph cannot be used ("" when there is none yet), or None: it is the
        graph exported from this bundle, byte for byte."""
        if not self.path.exists() and not self.path.is_symlink():
            return ""
        try:
            data = read_regular_file(self.path, MAX_GRAPH_BYTES)
        except CardError as exc:
            return str(exc)
        # a view: hashing the graph copies none of its bytes
        graph, binding = memoryview(data)[:-_BINDING_BYTES], data[-_BINDING_BYTES:]
        if binding == _binding(self.digest, hashlib.sha256(graph).hexdigest()):
            return None
        recorded = binding[len(_BINDING_HEAD) :][:64]
        if binding.startswith(_BINDING_HEAD) and recorded != self.digest.encode():
            return f"{self.path} was exported from another bundle"
        return f"{self.path} is damaged or was edited after its export"

    def store(self, export: Callable[[Path], object]) -> Path:
        """Export the bundle's graph into the cache with `export(path)`, then bind it (the
        file is replaced in one rename: a reader sees the old graph or the bound new one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        export(self.path)
        graph = self.path.read_bytes()
        binding = _binding(self.digest, hashlib.sha256(graph).hexdigest())
        return write_bytes(self.path, graph + binding)
