"""A synthetic scored collection: random embeddings and probabilities, no model needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from postergenre.inference.similarity import PosterIndex

GENRES = ("Action", "Comedy", "Drama", "Horror")


def synthetic_index(
    folder: Path, n: int = 40, labelled: bool = True, seed: int = 0, titles: bool = True
) -> PosterIndex:
    """N items whose posters are `folder/posters/pNNN.jpg` (not written), with probabilities
    of a model `synthetic` (thresholds 0.5) and, when `labelled`, one or two given genres."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        path = folder / "posters" / f"p{i:03d}.jpg"
        genres = [GENRES[i % 4]] + ([GENRES[(i + 1) % 4]] if i % 3 == 0 else [])
        items.append(
            {
                "id": f"id{i:03d}",
                "path": str(path),
                "shown": f"posters/p{i:03d}.jpg",
                "title": f"Movie {i:03d}" if titles and i % 5 else None,
                "genres": genres if labelled else [],
                "labelled": labelled,
            }
        )
    return PosterIndex(
        "efficientnet-lite0",
        items,
        rng.normal(size=(n, 16)).astype(np.float32),
        probabilities=rng.uniform(size=(n, len(GENRES))).astype(np.float32),
        genre_names=GENRES,
        thresholds=[0.5] * len(GENRES),
        model="synthetic",
    )
