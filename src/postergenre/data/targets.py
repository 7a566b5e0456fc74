"""Genre vocabularies and the target arrays a model trains on."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from postergenre.data.records import PosterCollection, PosterRecord
from postergenre.errors import UserError

TASKS = ("single", "multi")


def resolve_genres(
    collection: PosterCollection,
    genres: list[str] | None = None,
    min_count: int | None = None,
) -> list[str]:
    """The genre vocabulary: explicit, or every genre with at least `min_count` posters in the
    training split (the whole collection when it has no split), most frequent first."""
    if genres:
        known = collection.genre_counts()
        unknown = [g for g in genres if g not in known]
        if unknown:
            raise UserError(
                f"genre(s) not in the data: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        vocabulary = list(dict.fromkeys(genres))
        if len(vocabulary) < 2:
            raise UserError("need at least 2 genres to tell apart")
        return vocabulary
    source = collection.split("train") if "train" in collection.splits else collection
    counts = source.genre_counts()
    threshold = min_count if min_count is not None else 1
    vocabulary = [g for g, n in counts.most_common() if n >= threshold]
    if len(vocabulary) < 2:
        raise UserError(
            f"need at least 2 genres with >= {threshold} posters; found {len(vocabulary)}"
        )
    return vocabulary


def infer_task(records: list[PosterRecord], genres: list[str]) -> str:
    """`single` when every poster carries at most one of the genres, else `multi`."""
    wanted = set(genres)
    return "single" if all(len(wanted & set(r.genres)) <= 1 for r in records) else "multi"


@dataclass
class Targets:
    """Records kept for a task and their targets: class indices (single) or 0/1 rows (multi)."""

    records: list[PosterRecord]
    y: np.ndarray
    dropped: int


def encode_targets(records: list[PosterRecord], genres: list[str], task: str) -> Targets:
    """Encode genres for `task`.

    single keeps posters carrying exactly one genre of the vocabulary (the article's setting);
    multi keeps every poster, one 0/1 column per genre (a poster may have none of them).
    """
    index = {g: i for i, g in enumerate(genres)}
    if task == "single":
        kept, labels = [], []
        for record in records:
            hits = [index[g] for g in record.genres if g in index]
            if len(hits) == 1:
                kept.append(record)
                labels.append(hits[0])
        return Targets(kept, np.asarray(labels, dtype=np.int64), len(records) - len(kept))
    if task == "multi":
        y = np.zeros((len(records), len(genres)), dtype=np.float32)
        for row, record in enumerate(records):
            for genre in record.genres:
                if genre in index:
                    y[row, index[genre]] = 1.0
        return Targets(list(records), y, 0)
    raise UserError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def class_counts(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Positives per genre for single-label indices or multi-label 0/1 rows."""
    if y.ndim == 1:
        return np.bincount(y, minlength=n_classes)
    return y.sum(axis=0).astype(np.int64)


def describe_counts(genres: list[str], counts: np.ndarray) -> dict[str, int]:
    """{genre: count}, most frequent first."""
    return dict(Counter({g: int(c) for g, c in zip(genres, counts, strict=True)}).most_common())
