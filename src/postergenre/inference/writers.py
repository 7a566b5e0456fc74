"""Write predictions to a file whose suffix names the format: CSV, JSON, JSON Lines, Parquet.

Every file is written atomically: a reader sees the old file or the whole new one.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from postergenre.atomic import atomic_path, write_text
from postergenre.errors import UserError

if TYPE_CHECKING:
    from postergenre.inference.predictor import Predictions

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
