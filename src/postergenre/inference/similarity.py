"""Similar posters: an index of frozen-backbone embeddings searched by cosine similarity.

Exact inner-product search with FAISS on L2-normalised vectors: a query over 100k posters
takes milliseconds on two cores, so no approximate index (and no recall loss) is needed.
An index is a folder: `index.safetensors` (float16 vectors, and float32 probabilities of the
model that predicted the collection's genres) + `index.json` (backbone, model, items).
Each item keeps its poster's absolute path and its path relative to the index folder, so the
posters are found from any working directory, and still when the index moves with them.

An item is a dict: `id`, `path` (absolute), `relpath` (on disk only), `shown` (the path as the
user gave it), `title` (from a label or metadata file, else None), `genres` (the given labels,
[] when none) and `labelled` (whether labels were given at all).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from postergenre.atomic import atomic_folder, write_json
from postergenre.console import report_skipped
from postergenre.data.decode import decode_poster
from postergenre.data.records import PosterRecord
from postergenre.errors import UserError
from postergenre.models import get_arch
from postergenre.models.embeddings import compute_embeddings, embed_pixels

INDEX_FORMAT = "postergenre-index"
INDEX_VERSION = 3
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
    title: str | None = None
    shown: str | None = None
    position: int = -1

    @property
    def name(self) -> str:
        """What a person reads: the title, else the file name as the user gave it."""
        return self.title or Path(self.shown or self.path).name

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "shown": self.shown or self.path,
            "title": self.title,
            "name": self.name,
            "genres": self.genres,
            "similarity": round(self.similarity, 6),
        }


def _upgrade(item: dict[str, Any]) -> dict[str, Any]:
    """An item of an older index with today's keys (format 2 items were always labelled)."""
    return {
        "shown": item["path"],
        "title": None,
        "labelled": True,
        **item,
        "genres": list(item.get("genres") or []),
    }


def _locate(item: dict[str, Any], home: Path) -> dict[str, Any]:
    """An item whose `path` exists from here: the stored absolute path, else the path relative
    to the index folder (indexes of format 1 stored paths relative to where `index` ran)."""
    path = Path(item["path"])
    if path.is_absolute() and path.exists():
        return item
    relpath = item.get("relpath")
    if relpath is not None and (home / relpath).exists():
        return {**item, "path": str((home / relpath).resolve())}
    return item


class PosterIndex:
    """Embeddings of a poster collection with their ids, paths, titles and genres, and
    optionally each poster's probabilities under one model (`model`, with its `genre_names`
    and per-genre `thresholds`): what `similar` shows for posters without labels."""

    def __init__(
        self,
        arch: str,
        items: list[dict[str, Any]],
        vectors: np.ndarray,
        *,
        probabilities: np.ndarray | None = None,
        genre_names: Sequence[str] | None = None,
        thresholds: Sequence[float] | None = None,
        model: str | None = None,
    ):
        import faiss

        self.arch = arch
        self.items = [_upgrade(item) for item in items]
        self.vectors = _normalise(vectors)
        self._faiss = faiss.IndexFlatIP(self.vectors.shape[1])
        self._faiss.add(self.vectors)
        self.probabilities = (
            None if probabilities is None else np.asarray(probabilities, dtype=np.float32)
        )
        self.genre_names = list(genre_names or [])
        self.thresholds = list(thresholds) if thresholds is not None else None
        self.model = model
        if self.probabilities is not None:
            if self.probabilities.shape != (len(self.items), len(self.genre_names)):
                raise ValueError("probabilities must be one row per item, one column per genre")
            if self.thresholds is None:
                self.thresholds = [0.5] * len(self.genre_names)
        self._positions: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def predicted(self, i: int) -> list[str]:
        """The genres the index's model predicts for item `i` (most probable first)."""
        if self.probabilities is None or self.thresholds is None:
            return []
        row = self.probabilities[i]
        order = np.argsort(-row, kind="stable")
        return [self.genre_names[j] for j in order if row[j] >= self.thresholds[j]]

    def genres_of(self, i: int) -> list[str]:
        """Item `i`'s given genres when the collection is labelled, else its predicted ones."""
        item = self.items[i]
        return list(item["genres"]) if item["labelled"] else self.predicted(i)

    def find(self, key: str | Path) -> int | None:
        """The position of the poster with this id, or at this path (as given or resolved)."""
        if self._positions is None:
            positions: dict[str, int] = {}
            for i, item in enumerate(self.items):
                for name in (item["shown"], item["path"], item["id"]):
                    positions.setdefault(str(name), i)
            self._positions = positions
        found = self._positions.get(str(key))
        if found is None and Path(key).exists():
            found = self._positions.get(str(Path(key).resolve()))
        return found

    @classmethod
    def build(
        cls,
        records: Sequence[PosterRecord],
        arch: str = "efficientnet-lite0",
        cache_dir: Path | None = None,
        progress: bool = True,
        *,
        engine: str = "local",
        address: str | None = None,
        workers: int | None = None,
    ) -> PosterIndex:
        """Embed every poster (through the embedding cache) and index it. `engine="ray"`
        embeds the posters not cached yet on Ray (`engines.ray.ray_embeddings`: the cluster at
        `address`, or a Ray started here, with `workers` actors)."""
        from postergenre.engines.ray import ray_embeddings
        from postergenre.engines.ray_cluster import check_engine

        check_engine(engine, address)
        spec = get_arch(arch)
        arch = spec.embedding_arch or arch
        paths = [r.path for r in records]
        if engine == "ray":
            vectors = ray_embeddings(
                arch, paths, cache_dir, progress, address=address, workers=workers
            )
        else:
            vectors = compute_embeddings(arch, paths, cache_dir, progress)
        report_skipped(vectors.errors)
        keep = vectors.ok
        if not len(keep):
            raise UserError("no readable posters to index")
        items = [
            {
                "id": records[i].id,
                "path": str(Path(records[i].path).resolve()),
                "shown": str(records[i].path),
                "genres": list(records[i].genres),
            }
            for i in keep
        ]
        return cls(arch, items, np.asarray(vectors[keep]))

    def save(self, directory: Path) -> Path:
        """Write the index folder atomically: built beside it, then swapped in whole (a reader
        sees the old index or the new one, never none)."""
        directory = Path(directory)
        home = directory.resolve()
        items = [
            {**item, "relpath": os.path.relpath(Path(item["path"]).resolve(), home)}
            for item in self.items
        ]
        meta = {
            "format": INDEX_FORMAT,
            "format_version": INDEX_VERSION,
            "arch": self.arch,
            "count": len(self.items),
            "input": get_arch(self.arch).input.to_json(),
            "model": self.model,
            "genre_names": self.genre_names,
            "thresholds": self.thresholds,
            "items": items,
        }
        tensors = {"vectors": torch.from_numpy(self.vectors).half()}
        if self.probabilities is not None:
            tensors["probabilities"] = torch.from_numpy(self.probabilities)
        with atomic_folder(directory) as tmp:
            save_file(tensors, str(tmp / VECTORS_FILE))
            write_json(tmp / META_FILE, meta, indent=None)
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
        tensors = load_file(str(directory / VECTORS_FILE))
        probabilities = tensors.get("probabilities")
        home = directory.resolve()
        items = [_locate(item, home) for item in meta["items"]]
        return cls(
            meta["arch"],
            items,
            tensors["vectors"].float().numpy(),
            probabilities=None if probabilities is None else probabilities.float().numpy(),
            genre_names=meta.get("genre_names"),
            thresholds=meta.get("thresholds"),
            model=meta.get("model"),
        )

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embeddings of decoded posters with this index's backbone."""
        spec = get_arch(self.arch).input
        return embed_pixels(self.arch, np.stack([spec.resize_image(im) for im in images]), spec)

    def similar(self, poster: str | Path | Image.Image, k: int = 8) -> list[Neighbour]:
        """The `k` indexed posters most similar to one poster (a file or a decoded image)."""
        spec = get_arch(self.arch).input
        fit = (spec.width, spec.height)
        image = poster if isinstance(poster, Image.Image) else decode_poster(poster, fit=fit)
        return self.search(self.embed_images([image]), k)[0]

    def search(self, queries: np.ndarray, k: int = 8) -> list[list[Neighbour]]:
        """The `k` most similar indexed posters for each query embedding."""
        k = max(1, min(k, len(self.items)))
        scores, index = self._faiss.search(_normalise(queries), k)
        return [
            [self.neighbour(int(j), float(s)) for s, j in zip(row_s, row_i, strict=True) if j >= 0]
            for row_s, row_i in zip(scores, index, strict=True)
        ]

    def neighbour(self, i: int, similarity: float) -> Neighbour:
        """Item `i` as a search result."""
        item = self.items[i]
        return Neighbour(
            item["id"],
            item["path"],
            self.genres_of(i),
            similarity,
            title=item["title"],
            shown=item["shown"],
            position=i,
        )
