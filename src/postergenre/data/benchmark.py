"""The two tasks of the shared IMDb poster set, defined once for benchmarks and model builds.

- `three-genre`: the article's Action / Comedy / Drama task (`three_genre.csv`, its own split);
- `imdb-20`: multi-label over the 20 genres with at least 90 posters in `train.csv`
  (`splits.csv` gives the split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from postergenre.errors import UserError

IMDB20_GENRES = [
    "Drama", "Comedy", "Action", "Romance", "Crime", "Thriller", "Adventure", "Documentary",
    "Horror", "Fantasy", "Mystery", "Biography", "Family", "Sci-Fi", "Music", "Animation",
    "History", "Sport", "War", "Musical",
]  # fmt: skip

TASKS: dict[str, dict[str, Any]] = {
    "three-genre": {"labels": "three_genre.csv", "splits": None,
                    "genres": ["Action", "Comedy", "Drama"], "task": "single"},
    "imdb-20": {"labels": "train.csv", "splits": "splits.csv", "genres": IMDB20_GENRES,
                "task": "multi"},
}  # fmt: skip


def task_sources(name: str, data_dir: Path) -> dict[str, Any]:
    """Training arguments (labels, images, splits, genres, task) of a task in `data_dir`."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    spec = TASKS[name]
    data_dir = Path(data_dir)
    return {
        "labels": data_dir / spec["labels"],
        "images": data_dir / "images",
        "splits": data_dir / spec["splits"] if spec["splits"] else None,
        "genres": list(spec["genres"]),
        "task": spec["task"],
    }
