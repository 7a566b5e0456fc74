"""Predictions of a collection, and writing them to a file whose suffix names the format:
CSV, JSON, JSON Lines or Parquet, always atomically (a reader sees the old file or the whole new
one)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from postergenre.atomic import atomic_path, write_text
from postergenre.errors import UserError
from postergenre.models.card import ModelCard


@dataclass
class Prediction:
    """Genres for one poster: every genre ranked, and the predicted ones, most probable first."""

    path: str
    genres: list[tuple[str, float]]
    predicted: list[str]

    def to_json(self, top: int | None = None) -> dict[str, Any]:
        """A JSON-ready dict; `top` keeps only the most probable genres."""
        ranked = self.genres if top is None else self.genres[:top]
        return {
            "path": self.path,
            "genres": [{"genre": g, "probability": round(p, 6)} for g, p in ranked],
            "predicted": self.predicted,
        }


@dataclass
class Predictions:
    """Predictions for a collection: one probability row per readable poster, and the files
    that were skipped with their reasons."""

    card: ModelCard
    paths: list[str]
    probabilities: np.ndarray  # (n, genres), in the card's genre order
    skipped: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Prediction:
        probs = self.probabilities[i]
        order = np.argsort(-probs, kind="stable")
        ranked = [(self.card.genres[j], float(probs[j])) for j in order]
        return Prediction(self.paths[i], ranked, self.card.predicted_genres(probs))

    def __iter__(self) -> Iterator[Prediction]:
        return (self[i] for i in range(len(self)))

    @property
    def genres(self) -> list[str]:
        return list(self.card.genres)

    def to_json(self, top: int | None = None) -> list[dict[str, Any]]:
        """One dict per poster (see `Prediction.to_json`)."""
        return [p.to_json(top) for p in self]

    def rows(self) -> Iterator[dict[str, Any]]:
        """Flat rows: path, one probability per genre, then the predicted genres ('|')."""
        for path, probs in zip(self.paths, self.probabilities, strict=True):
            row: dict[str, Any] = {"path": path}
            row.update(
                (g, round(float(p), 6)) for g, p in zip(self.card.genres, probs, strict=True)
            )
            row["predicted"] = "|".join(self.card.predicted_genres(probs))
            yield row

    def write(self, path: str | Path, top: int | None = None) -> Path:
        """Write every prediction to `path` atomically; the format follows the suffix:
        .csv and .parquet (flat rows), .json (a list), .jsonl (one object per line)."""
        return write_predictions(self, Path(path), top)


FORMATS = (".csv", ".json", ".jsonl", ".parquet")


def write_predictions(predictions: Predictions, path: Path, top: int | None = None) -> Path:
    """Write `predictions` to `path` in the format its suffix names (see `FORMATS`).

    CSV and Parquet hold flat rows (path, a probability per genre, predicted genres joined by
    '|'); JSON holds a list of {path, genres (ranked, `top` of them), predicted}."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", *predictions.genres, "predicted"])
        for row in predictions.rows():
            values = list(row.values())
            writer.writerow([values[0], *(f"{p:.6f}" for p in values[1:-1]), values[-1]])
        return write_text(path, buffer.getvalue())
    if suffix == ".json":
        return write_text(path, json.dumps(predictions.to_json(top), allow_nan=False) + "\n")
    if suffix == ".jsonl":
        lines = (json.dumps(item, allow_nan=False) for item in predictions.to_json(top))
        return write_text(path, "".join(line + "\n" for line in lines))
    if suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(
                "writing Parquet needs pyarrow: pip install 'postergenre[parquet]'"
            ) from None
        rows = list(predictions.rows())
        columns = ["path", *predictions.genres, "predicted"]
        table = pa.table({c: [row[c] for row in rows] for c in columns})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return path
    raise UserError(f"cannot tell the format of {path}: use one of {', '.join(FORMATS)}")
