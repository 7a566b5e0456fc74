"""Training data: records of each split -> targets -> cached pixels, ready for batching."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from postergenre.console import report_skipped
from postergenre.data.cache import CachedArrays
from postergenre.data.records import PosterCollection, PosterRecord
from postergenre.data.targets import encode_targets
from postergenre.errors import UserError
from postergenre.training import distributed
from postergenre.training.distributed import echo, warn

VAL_FRACTION = 0.1


@dataclass
class SplitData:
    """One split's kept records, targets and cached rows: pixels or embeddings (all aligned)."""

    name: str
    records: list[PosterRecord]
    y: np.ndarray
    arrays: CachedArrays

    def __len__(self) -> int:
        return len(self.records)

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows (e.g. uint8 B x H x W x 3 pixels) and targets for `indices`."""
        return self.arrays[indices], self.y[indices]


def assign_splits(collection: PosterCollection, seed: int) -> dict[str, list[PosterRecord]]:
    """train / val (/ test) records; without a val split, a seeded 10% of train becomes val."""
    by_split: dict[str, list[PosterRecord]] = {}
    for record in collection.records:
        by_split.setdefault(record.split or "train", []).append(record)
    if "train" not in by_split:
        raise UserError(f"{collection.source} has no training posters (no 'train' split)")
    if "val" not in by_split:
        train = by_split["train"]
        order = np.random.default_rng(seed).permutation(len(train))
        n_val = max(1, round(len(train) * VAL_FRACTION))
        by_split["val"] = [train[i] for i in sorted(order[:n_val])]
        by_split["train"] = [train[i] for i in sorted(order[n_val:])]
        echo(f"no validation split: holding out {n_val} training posters (seed {seed})")
    return by_split


def prepare_split(
    name: str,
    records: list[PosterRecord],
    genres: list[str],
    task: str,
    load: Callable[[list[Path]], CachedArrays],
) -> SplitData:
    """Encode targets, load the cached rows (pixels or embeddings) of the posters through
    `load`, and drop the posters that cannot be read."""
    targets = encode_targets(records, genres, task)
    if targets.dropped:
        warn(f"{name}: {targets.dropped} posters carry none or several of the genres; left out")
    arrays = load([r.path for r in targets.records])
    if distributed.is_main():
        report_skipped(arrays.errors)
    keep = arrays.ok
    if not len(keep):
        raise UserError(f"no usable posters in the {name} split")
    kept = CachedArrays(arrays.data, arrays.rows[keep], {})
    return SplitData(name, [targets.records[i] for i in keep], targets.y[keep], kept)
