"""Similar posters: an index of frozen-backbone embeddings searched by cosine similarity.

Exact inner-product search with FAISS on L2-normalised vectors: a query over 100k posters
takes milliseconds on two cores, so no approximate index (and no recall loss) is needed.
An index is a folder: `index.safetensors` (float16 vectors, and float32 probabilities of the
model that predicted the collection's genres) + `index.json` (backbone, model, items).
Each item keeps its poster's absolute path and its path relative to the index folder, so the
posters are found from any working directory, and still when the index moves with them.

An item is a dict: `id`, `path` (absolute), `relpath` (on disk only), `shown` (the path as the
user gave it), `title` (from a label or metadata file, else None), `genres` (the given labels,
[] when none) and `labelled` (whether labels were given at all); items built by `build_index`
also keep their file's `size` and `mtime_ns`, so an update embeds only new or changed posters.
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
from postergenre.data.decode import decode_poster
from postergenre.data.formats import is_image_name
from postergenre.data.image_finder import match_key
from postergenre.errors import UserError
from postergenre.models import get_arch
from postergenre.models.embeddings import embed_pixels

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
    labelled: bool = True

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
            "genres_are": "given" if self.labelled else "predicted",
            "similarity": round(self.similarity, 6),
        }


def _upgrade(item: dict[str, Any]) -> dict[str, Any]:
    """An item of an older index with today's keys (format 2 items were always labelled)."""
    return {
        "shown": item["path"],
        "title": None,
        "labelled": True,
        "size": None,
        "mtime_ns": None,
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
        model_digest: str | None = None,
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
        self.model_digest = model_digest  # which bundle scored it: an update reuses only its
        self.changes: Any = None  # what `build_index` did (`IndexChanges`), when it built this
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
        """The position of the poster with this id (IMDb ids with or without `tt` and leading
        zeros), or at this path (as given or resolved)."""
        if self._positions is None:
            positions: dict[str, int] = {}
            for i, item in enumerate(self.items):
                for name in (item["shown"], item["path"], item["id"]):
                    positions.setdefault(str(name), i)
            for i, item in enumerate(self.items):  # IMDb ids with or without tt and zeros
                positions.setdefault(match_key(str(item["id"])), i)
            self._positions = positions
        found = self._positions.get(str(key))
        if found is None:
            found = self._positions.get(match_key(str(key)))
        if found is None and Path(key).exists():
            found = self._positions.get(str(Path(key).resolve()))
        return found

    @classmethod
    def build(
        cls,
        posters: Any,
        arch: str = "efficientnet-lite0",
        cache_dir: Path | None = None,
        progress: bool = True,
        *,
        engine: str = "local",
        address: str | None = None,
        workers: int | None = None,
        model: Any = None,
        runtime: str = "auto",
        previous: PosterIndex | None = None,
        titles: Any = None,
        on_progress: Any = None,
    ) -> PosterIndex:
        """Embed every poster (records, or any posters `predict` takes; through the embedding
        cache) and index it; `model` (a name, bundle path or `Predictor`; default none here,
        `imdb-20` in `build_index`) also scores each one. `previous`: an index to update (only
        new or changed posters are embedded). `engine="ray"` embeds the posters not cached yet
        on Ray (the cluster at `address`, or a Ray started here, with `workers` actors). See
        `postergenre.inference.index_build.build_index`."""
        from postergenre.inference.index_build import build_index

        return build_index(
            posters,
            arch=arch,
            model=model,
            runtime=runtime,
            previous=previous,
            titles=titles,
            cache_dir=cache_dir,
            progress=progress,
            engine=engine,
            address=address,
            workers=workers,
            on_progress=on_progress,
        )

    def save(self, directory: Path, *, private: bool = False) -> Path:
        """Write the index folder atomically: built beside it, then swapped in whole (a reader
        sees the old index or the new one, never none). It honours the umask like `mkdir`, or
        is readable by its owner only when `private`."""
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
            "model_digest": self.model_digest,
            "genre_names": self.genre_names,
            "thresholds": self.thresholds,
            "items": items,
        }
        tensors = {"vectors": torch.from_numpy(self.vectors).half()}
        if self.probabilities is not None:
            tensors["probabilities"] = torch.from_numpy(self.probabilities)
        try:
            with atomic_folder(directory, private=private) as tmp:
                save_file(tensors, str(tmp / VECTORS_FILE))
                write_json(tmp / META_FILE, meta, indent=None)
        except OSError as exc:
            raise UserError(f"cannot write the index {directory}: {exc.strerror or exc}") from None
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
            model_digest=meta.get("model_digest"),
        )

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embeddings of decoded posters with this index's backbone."""
        spec = get_arch(self.arch).input
        return embed_pixels(self.arch, np.stack([spec.resize_image(im) for im in images]), spec)

    def similar(self, poster: str | Path | Image.Image, k: int = 8) -> list[Neighbour]:
        """The `k` indexed posters most similar to one poster: one of the index (by id or
        path; itself left out of the answer), a file, or a decoded image."""
        if not isinstance(poster, Image.Image):
            i = self.find(poster)
            if i is not None:
                return self.neighbours_of(i, k)
            if not Path(poster).exists() and not is_image_name(str(poster)):
                raise UserError(
                    f"{poster}: no poster of this id or path in the index, and no such file"
                )
        spec = get_arch(self.arch).input
        fit = (spec.width, spec.height)
        image = poster if isinstance(poster, Image.Image) else decode_poster(poster, fit=fit)
        return self.search(self.embed_images([image]), k)[0]

    def neighbours_of(self, i: int, k: int = 8) -> list[Neighbour]:
        """The `k` indexed posters most similar to item `i`, itself left out (one more is
        searched for; with exact copies tied at 1.0, `i` need not be among them)."""
        [found] = self.search(self.vectors[i : i + 1], k + 1)
        return [n for n in found if n.position != i][:k]

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
            labelled=item["labelled"],
        )
