"""Similar posters: an index of frozen-backbone embeddings searched by cosine similarity.

Exact inner-product search with FAISS on L2-normalised vectors: a query over 100k posters
takes milliseconds on two cores, so no approximate index (and no recall loss) is needed.
An index is a folder: `index.safetensors` (float16 vectors) + `index.json` (backbone, items).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from postergenre.console import report_skipped
from postergenre.data.decode import resize_poster
from postergenre.data.records import PosterRecord
from postergenre.errors import UserError
from postergenre.models import get_arch
from postergenre.models.embeddings import compute_embeddings, embed_pixels

INDEX_FORMAT = "postergenre-index"
VECTORS_FILE = "index.safetensors"
META_FILE = "index.json"


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


@dataclass
class Neighbour:
    """One similar poster."""

    id: str
    path: str
    genres: list[str]
    similarity: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "genres": self.genres,
            "similarity": round(self.similarity, 6),
        }


class PosterIndex:
    """Embeddings of a poster collection with their ids, paths and genres."""

    def __init__(self, arch: str, items: list[dict[str, Any]], vectors: np.ndarray):
        import faiss

        self.arch = arch
        self.items = items
        self.vectors = _normalise(vectors)
        self._faiss = faiss.IndexFlatIP(self.vectors.shape[1])
        self._faiss.add(self.vectors)

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def build(
        cls,
        records: Sequence[PosterRecord],
        arch: str = "efficientnet-lite0",
        cache_dir: Path | None = None,
        progress: bool = True,
    ) -> PosterIndex:
        """Embed every poster (through the embedding cache) and index it."""
        spec = get_arch(arch)
        arch = spec.embedding_arch or arch
        vectors = compute_embeddings(arch, [r.path for r in records], cache_dir, progress)
        report_skipped(vectors.errors)
        keep = vectors.ok
        if not len(keep):
            raise UserError("no readable posters to index")
        items = [
            {"id": records[i].id, "path": str(records[i].path), "genres": list(records[i].genres)}
            for i in keep
        ]
        return cls(arch, items, np.asarray(vectors[keep]))

    def save(self, directory: Path) -> Path:
        """Write the index folder atomically."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            save_file({"vectors": torch.from_numpy(self.vectors).half()}, str(tmp / VECTORS_FILE))
            meta = {
                "format": INDEX_FORMAT,
                "arch": self.arch,
                "count": len(self.items),
                "input": get_arch(self.arch).input.to_json(),
                "items": self.items,
            }
            (tmp / META_FILE).write_text(json.dumps(meta))
            if directory.exists():
                shutil.rmtree(directory)
            os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, directory: Path) -> PosterIndex:
        """Read an index folder written by `save`."""
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise UserError(f"{directory} is not a poster index (no {META_FILE})")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{meta_path} is not valid JSON: {exc}") from exc
        if meta.get("format") != INDEX_FORMAT:
            raise UserError(f"{meta_path} is not a {INDEX_FORMAT} file")
        vectors = load_file(str(directory / VECTORS_FILE))["vectors"].float().numpy()
        return cls(meta["arch"], meta["items"], vectors)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embeddings of decoded posters with this index's backbone."""
        spec = get_arch(self.arch).input
        pixels = np.stack(
            [resize_poster(im, spec.width, spec.height, spec.resize) for im in images]
        )
        return embed_pixels(self.arch, pixels, spec)

    def search(self, queries: np.ndarray, k: int = 8) -> list[list[Neighbour]]:
        """The `k` most similar indexed posters for each query embedding."""
        k = max(1, min(k, len(self.items)))
        scores, index = self._faiss.search(_normalise(queries), k)
        return [
            [
                Neighbour(
                    self.items[j]["id"], self.items[j]["path"], self.items[j]["genres"], float(s)
                )
                for s, j in zip(row_s, row_i, strict=True)
                if j >= 0
            ]
            for row_s, row_i in zip(scores, index, strict=True)
        ]
