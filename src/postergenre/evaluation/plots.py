"""Pictures that beat tables: training curves, confusion matrices, precision-recall curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from postergenre.atomic import atomic_path

# Figures are built with matplotlib's object API (a Figure renders itself to a file with the
# Agg canvas), so no pyplot state and no global backend change: importing this is side-free.


def _subplots(ncols: int = 1, figsize: tuple[float, float] = (6.4, 4.8)) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def plot_training_curves(history: Sequence[dict[str, float]], path: Path, metric: str) -> Path:
    """The article's chart: train vs validation `metric` and loss per epoch."""
    epochs = [int(row["epoch"]) for row in history]
    fig, (left, right) = _subplots(2, figsize=(11, 4))
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
    fig, axis = _subplots(figsize=(size + 1, size))
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


def plot_reliability(bins: Sequence[dict], path: Path, title: str = "Reliability") -> Path:
    """Stated probability against how often it came true, per bin (dots sized by count),
    with the diagonal a calibrated model would follow and the ECE in the title."""
    fig, axis = _subplots(figsize=(5.5, 5.5))
    axis.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="calibrated")
    if bins:
        counts = np.array([b["count"] for b in bins], dtype=float)
        sizes = 20 + 280 * counts / counts.max()
        xs = [b["probability"] for b in bins]
        ys = [b["frequency"] for b in bins]
        axis.plot(xs, ys, "-", color="tab:blue", lw=1.5)
        axis.scatter(xs, ys, s=sizes, color="tab:blue", alpha=0.8, label="model (dot: count)")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("stated probability")
    axis.set_ylabel("observed frequency")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left")
    return _save(fig, path)


def plot_pr_curves(
    y_true: np.ndarray,
    probs: np.ndarray,
    genres: list[str],
    path: Path,
    title: str = "Precision-recall",
) -> Path:
    """Micro-averaged precision-recall curve (bold) over per-genre curves (thin), with AP."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, axis = _subplots(figsize=(7.5, 6))
    columns = [j for j in range(len(genres)) if y_true[:, j].any()]
    cmap = colormaps["tab20"]
    for n, j in enumerate(columns):
        precision, recall, _ = precision_recall_curve(y_true[:, j], probs[:, j])
        ap = average_precision_score(y_true[:, j], probs[:, j])
        axis.plot(
            recall,
            precision,
            lw=0.9,
            alpha=0.75,
            color=cmap(n % 20),
            label=f"{genres[j]} (AP {ap:.2f})",
        )
    flat_y, flat_p = y_true[:, columns].ravel(), probs[:, columns].ravel()
    precision, recall, _ = precision_recall_curve(flat_y, flat_p)
    axis.plot(
        recall,
        precision,
        lw=2.5,
        color="black",
        label=f"micro average (AP {average_precision_score(flat_y, flat_p):.2f})",
    )
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)
