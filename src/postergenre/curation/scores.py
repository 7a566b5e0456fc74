"""Which model's probabilities a collection shows: those its index stores, or a linear head's
over the posters' cached embeddings (a retrained probe scores 100,000 posters in seconds, with
no poster decoded again)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from postergenre.errors import UserError
from postergenre.inference.similarity import PosterIndex
from postergenre.models import get_arch


@dataclass(frozen=True)
class Scores:
    """One model's probabilities for every poster of a collection, and how it decides."""

    probabilities: np.ndarray  # (n, G) float32
    genre_names: list[str]
    thresholds: np.ndarray  # (G,)
    model: str | None
    task: str = "multi"  # "single": the most probable genre; "multi": each one over its threshold

    @classmethod
    def of_index(cls, index: PosterIndex, task: str = "multi") -> Scores:
        """The probabilities the index stores (a `UserError` when it has none)."""
        if index.probabilities is None:
            raise UserError("the index holds no genre probabilities")
        thresholds = index.thresholds or [0.5] * len(index.genre_names)
        return cls(
            index.probabilities,
            list(index.genre_names),
            np.asarray(thresholds, dtype=np.float32),
            index.model,
            task,
        )


def head_scores(
    predictor: Any, index: PosterIndex, cache_dir: Path | None = None, progress: bool = False
) -> tuple[Scores | None, str | None]:
    """(`predictor`'s scores of every indexed poster, None) when it is a linear head over the
    index's embeddings or an adapted network of the index's backbone, else (None, why not).
    The features come from the embedding cache (the index stores them normalised, which a
    probe was not trained on); an adapted network's own, computed once and cached, are read
    instead of the frozen ones."""
    card = predictor.card
    if card.kind not in ("linear-head", "adapted") or card.reads_text:
        return None, f"model {predictor.name} is not a linear head over poster embeddings"
    spec = get_arch(card.architecture)
    if (spec.embedding_arch or spec.name) != index.arch:
        return None, (
            f"model {predictor.name} reads {spec.embedding_arch or spec.name} embeddings; "
            f"the index holds {index.arch} ones"
        )
    model = predictor.model
    if not hasattr(model, "classifier"):
        return None, f"model {predictor.name} has no linear classifier"
    import torch

    from postergenre.models.card import to_probabilities
    from postergenre.models.embeddings import compute_embeddings

    paths = [Path(item["path"]) for item in index.items]
    network = model if card.kind == "adapted" else None
    vectors = compute_embeddings(index.arch, paths, cache_dir, progress, network)
    if vectors.errors:
        return None, f"{len(vectors.errors)} indexed posters can no longer be read"
    with torch.no_grad():
        logits = model.classifier(torch.from_numpy(vectors[np.arange(len(paths))]))
    probabilities = to_probabilities(logits, card.task).numpy().astype(np.float32)
    thresholds = np.asarray(predictor.thresholds, dtype=np.float32)
    scores = Scores(probabilities, list(predictor.genres), thresholds, predictor.name, card.task)
    return scores, None
