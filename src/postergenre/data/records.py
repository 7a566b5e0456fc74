"""The unit every layer after file reading works with: one poster and its genres."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


def normalise_split(name: str | None) -> str | None:
    """Map `Training`, `validation`, `TEST` … onto train / val / test; unknown names stay as is."""
    if name is None:
        return None
    text = name.strip()
    if not text:
        return None
    return SPLIT_ALIASES.get(text.lower(), text.lower())


@dataclass(frozen=True)
class PosterRecord:
    """One poster file with its genres and (optionally) the split it belongs to."""

    id: str
    path: Path
    genres: tuple[str, ...]
    split: str | None = None


@dataclass
class PosterCollection:
    """Records read from one source, plus what was skipped while reading it."""

    records: list[PosterRecord]
    source: str
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def splits(self) -> list[str]:
        """Split names present, in a stable order."""
        order = {"train": 0, "val": 1, "test": 2}
        names = {r.split for r in self.records if r.split is not None}
        return sorted(names, key=lambda s: (order.get(s, 3), s))

    def split(self, name: str | None) -> PosterCollection:
        """The records of one split (all records when `name` is None)."""
        if name is None:
            return self
        wanted = normalise_split(name)
        return PosterCollection(
            [r for r in self.records if r.split == wanted], f"{self.source} [{wanted}]"
        )

    def genre_counts(self) -> Counter[str]:
        """How many posters carry each genre."""
        return Counter(g for r in self.records for g in r.genres)
