"""Predictions of a collection, and writing them to a file whose suffix names the format:
CSV, JSON, JSON Lines or Parquet, always atomically (a reader sees the old file or the whole new
one).

A long run (`Predictor.predict_to`) appends its predictions to a journal beside the output
(`postergenre.inference.journal`) and writes the output from it with `write_stream`.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from postergenre.atomic import atomic_path
from postergenre.errors import UserError
from postergenre.models.card import ModelCard
from postergenre.paths import user_path


@dataclass
class Prediction:
    """Genres for one poster: every genre ranked, and the predicted ones, most probable first."""

    path: str
    genres: list[tuple[str, float]]
    predicted: list[str]

    def to_json(self, top: int | None = None) -> dict[str, Any]:
        """A JSON-ready dict; `top` keeps only the `top` most probable genres, in `genres` and
        in `predicted` alike (see `top_predicted`)."""
        ranked = self.genres if top is None else self.genres[:top]
        return {
            "path": self.path,
            "genres": [{"genre": g, "probability": round(p, 6)} for g, p in ranked],
            "predicted": self.top_predicted(top),
        }

    def top_predicted(self, top: int | None = None) -> list[str]:
        """The predicted genres among the `top` most probable (all of them when `top` is
        None): what `--top N` leaves of the model's answer in every output format, so a poster
        never shows more than N genres."""
        if top is None:
            return list(self.predicted)
        shown = {genre for genre, _ in self.genres[:top]}
        return [genre for genre in self.predicted if genre in shown]

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Prediction:
        """The inverse of `to_json()` (with every genre)."""
        ranked = [(g["genre"], float(g["probability"])) for g in item["genres"]]
        return cls(str(item["path"]), ranked, list(item["predicted"]))


def flat_row(
    prediction: Prediction, genres: Sequence[str], top: int | None = None
) -> dict[str, Any]:
    """Path, the probability of each of `genres` (6 decimals: every genre, whatever `top`, so
    the columns are fixed), then the predicted genres (`top_predicted(top)`) joined by '|': a
    row of the CSV and Parquet files."""
    probs = dict(prediction.genres)
    row: dict[str, Any] = {"path": prediction.path}
    row.update((g, round(float(probs[g]), 6)) for g in genres)
    row["predicted"] = "|".join(prediction.top_predicted(top))
    return row


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
        return (flat_row(p, self.genres) for p in self)

    def write(self, path: str | Path, top: int | None = None) -> Path:
        """Write every prediction to `path` atomically; the format follows the suffix:
        .csv and .parquet (flat rows), .json (a list), .jsonl (one object per line)."""
        return write_predictions(self, Path(path), top)


FORMATS = (".csv", ".json", ".jsonl", ".parquet")
# Parquet files are written this many rows to a row group (a few MB of memory).
PARQUET_ROW_GROUP = 10_000


def check_output(path: Path) -> None:
    """Refuse, before any work, an output whose suffix names no format (see `FORMATS`) or a
    Parquet file without pyarrow."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UserError(f"cannot tell the format of {path}: use one of {', '.join(FORMATS)}")
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise UserError("writing Parquet needs pyarrow: pip install 'postergenre[parquet]'")


# Where a folder's predictions go when no output is named: a folder is too big to print.
FOLDER_OUTPUT = Path("predictions.csv")


def prediction_output(
    sources: Sequence[str | Path], out: Path | None, resume: bool = False, engine: str = "local"
) -> Path | None:
    """The file the predictions of `sources` stream into (checked, before any work): `out`,
    else `FOLDER_OUTPUT` when a folder is among them; None: print them. Resuming and the Ray
    engine both need a file."""
    # os.path.isdir answers False for a name too long or holding a NUL byte: reading the
    # sources then says what is wrong with it, in one line
    if out is None and any(os.path.isdir(user_path(source)) for source in sources):
        out = FOLDER_OUTPUT
    if out is not None:
        check_output(out)
    elif resume:
        raise UserError("--resume goes on with an unfinished --out FILE: name the FILE")
    elif engine == "ray":
        raise UserError("--engine ray streams a collection into a file: name it with --out FILE")
    return out


def write_predictions(predictions: Predictions, path: Path, top: int | None = None) -> Path:
    """Write `predictions` to `path` in the format its suffix names (see `write_stream`)."""
    return write_stream(Path(path), predictions.genres, predictions, top)


def write_stream(
    path: Path, genres: Sequence[str], predictions: Iterable[Prediction], top: int | None = None
) -> Path:
    """Write `predictions` to `path` atomically, one at a time (memory stays flat), in the
    format its suffix names (see `FORMATS`).

    CSV and Parquet hold flat rows (`flat_row`: path, a probability per genre, predicted genres
    joined by '|'); JSON holds a list and JSON Lines one object a line, each {path, genres
    (ranked, `top` of them), predicted}. `top` caps the predicted genres in every format
    (`Prediction.top_predicted`)."""
    check_output(path)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            _write_parquet(tmp, genres, predictions, top)
            return path
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            if suffix == ".csv":
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(["path", *genres, "predicted"])
                for prediction in predictions:
                    values = list(flat_row(prediction, genres, top).values())
                    writer.writerow([values[0], *(f"{p:.6f}" for p in values[1:-1]), values[-1]])
            elif suffix == ".json":
                handle.write("[")
                for i, prediction in enumerate(predictions):
                    handle.write((", " if i else "") + json_text(prediction.to_json(top)))
                handle.write("]\n")
            else:
                for prediction in predictions:
                    handle.write(json_text(prediction.to_json(top)) + "\n")
    return path


def read_predictions(path: Path) -> Iterator[Prediction]:
    """The predictions of a file `write_stream` wrote, one at a time (a .json file is one list,
    read whole). Rows of CSV and Parquet files are ranked again from their probabilities."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        yield from (Prediction.from_json(item) for item in json.loads(path.read_text()))
    elif suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            yield from (Prediction.from_json(json.loads(line)) for line in handle)
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            yield from map(_from_flat_row, csv.DictReader(handle))
    else:
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches():
            yield from map(_from_flat_row, batch.to_pylist())


def _from_flat_row(row: dict[str, Any]) -> Prediction:
    probs = {k: float(v) for k, v in row.items() if k not in ("path", "predicted")}
    ranked = sorted(probs.items(), key=lambda item: -item[1])
    return Prediction(str(row["path"]), ranked, [g for g in row["predicted"].split("|") if g])


def json_text(item: dict[str, Any]) -> str:
    """`item` as one line of strict JSON (a NaN or infinity is an error, never written)."""
    return json.dumps(item, allow_nan=False)


def _write_parquet(
    path: Path, genres: Sequence[str], predictions: Iterable[Prediction], top: int | None
) -> None:
    """Flat rows in row groups of `PARQUET_ROW_GROUP`, so memory stays flat."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = ["path", *genres, "predicted"]
    schema = pa.schema(
        [("path", pa.string()), *((g, pa.float64()) for g in genres), ("predicted", pa.string())]
    )

    def flush(rows: list[dict[str, Any]]) -> None:
        writer.write_table(pa.table({c: [r[c] for r in rows] for c in columns}, schema=schema))

    with pq.ParquetWriter(str(path), schema) as writer:
        rows: list[dict[str, Any]] = []
        for prediction in predictions:
            rows.append(flat_row(prediction, genres, top))
            if len(rows) >= PARQUET_ROW_GROUP:
                flush(rows)
                rows = []
        if rows:
            flush(rows)
