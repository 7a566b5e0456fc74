"""Pictures that beat tables: training curves, confusion matrices, precision-recall curves."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_training_curves(history: Sequence[dict[str, float]], path: Path, metric: str) -> Path:
    """The article's chart: train vs validation `metric` and loss per epoch."""
    epochs = [int(row["epoch"]) for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for axis, key, title in ((left, metric, metric.replace("_", " ")), (right, "loss", "loss")):
        axis.plot(epochs, [row[f"train_{key}"] for row in history], "o-", label="training")
        axis.plot(epochs, [row[f"val_{key}"] for row in history], "s-", label="validation")
        axis.set_xlabel("epoch")
        axis.set_title(f"Training and validation {title}")
        axis.grid(alpha=0.3)
        axis.legend()
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], genres: list[str], path: Path, title: str = "Confusion matrix"
) -> Path:
    """Rows are true genres, columns predictions; cells show counts and row percentages."""
    counts = np.asarray(matrix, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = max(4.0, 0.6 * len(genres) + 2)
    fig, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(share, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(genres)), genres, rotation=45, ha="right")
    axis.set_yticks(range(len(genres)), genres)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    if len(genres) <= 12:
        for i in range(len(genres)):
            for j in range(len(genres)):
                colour = "white" if share[i, j] > 0.5 else "black"
                axis.text(
                    j,
                    i,
                    f"{int(counts[i, j])}\n{share[i, j]:.0%}",
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize=8,
                )
    fig.colorbar(image, ax=axis, fraction=0.046, label="share of true genre")
    return _save(fig, path)
