"""Pictures that beat tables: training curves, confusion matrices, reliability, and per-genre
average precision (bars with bootstrap intervals, precision-recall curves as small multiples)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
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


def plot_ap_bars(rows: Sequence[dict[str, Any]], path: Path, title: str = "AP per genre") -> Path:
    """Per-genre average precision as horizontal bars, highest at the top, with each bar's
    bootstrap interval and the genre's prevalence (what a random ranking scores) as a tick:
    `rows` as `average_precision_intervals` gives them."""
    rows = sorted(rows, key=lambda row: -row["ap"])
    height = max(2.5, 0.32 * len(rows) + 1.2)
    fig, axis = _subplots(figsize=(7, height))
    ys = np.arange(len(rows))[::-1]
    aps = np.array([row["ap"] for row in rows])
    errors = np.array([[row["ap"] - row["lower"], row["upper"] - row["ap"]] for row in rows]).T
    axis.barh(ys, aps, color="tab:blue", alpha=0.8, label="AP")
    if len(rows):
        axis.errorbar(aps, ys, xerr=errors.clip(0), fmt="none", ecolor="black", capsize=2,
                      lw=0.9, label="95% bootstrap interval")  # fmt: skip
        axis.scatter([row["prevalence"] for row in rows], ys, marker="|", s=120, color="tab:red",
                     zorder=3, label="prevalence (random ranking)")  # fmt: skip
        axis.axvline(float(aps.mean()), color="grey", ls="--", lw=1, label=f"mAP {aps.mean():.3f}")
    axis.set_yticks(ys, [f"{row['genre']} (n={row['support']})" for row in rows])
    axis.set_xlim(0, 1)
    axis.set_xlabel("average precision")
    axis.set_title(title)
    axis.grid(axis="x", alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_pr_curves(
    y_true: np.ndarray,
    probs: np.ndarray,
    genres: list[str],
    path: Path,
    title: str = "Precision-recall",
    rows: Sequence[dict[str, Any]] | None = None,
) -> Path:
    """One small precision-recall panel per genre (genres with a positive, highest AP first),
    each with its AP and interval and the prevalence baseline (a random ranking's precision)
    as a dashed line; `rows` from `average_precision_intervals` (computed if not given)."""
    from sklearn.metrics import precision_recall_curve

    from postergenre.evaluation.metrics import average_precision_intervals

    rows = rows if rows is not None else average_precision_intervals(y_true, probs, genres)
    ncols = min(5, max(1, len(rows)))
    nrows = max(1, -(-len(rows) // ncols))
    fig = Figure(figsize=(2.3 * ncols, 2.1 * nrows + 0.6))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True)).ravel()
    for axis, row in zip(axes, rows, strict=False):
        j = genres.index(row["genre"])
        precision, recall, _ = precision_recall_curve(y_true[:, j], probs[:, j])
        axis.plot(recall, precision, lw=1.2, color="tab:blue")
        axis.axhline(row["prevalence"], color="tab:red", ls="--", lw=0.9)
        axis.set_title(
            f"{row['genre']}: AP {row['ap']:.2f} [{row['lower']:.2f}, {row['upper']:.2f}]",
            fontsize=7.5,
        )
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.tick_params(labelsize=7)
    for axis in axes[len(rows) :]:
        axis.set_visible(False)
    fig.supxlabel("recall", fontsize=9)
    fig.supylabel("precision", fontsize=9)
    fig.suptitle(f"{title} (dashed: prevalence, a random ranking)", fontsize=10)
    return _save(fig, path)


def plot_precision_figures(
    y_true: np.ndarray,
    probs: np.ndarray,
    genres: list[str],
    pr_path: Path,
    ap_path: Path,
    title: str,
    n_resamples: int = 200,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Both pictures of ranking quality: the AP bar chart with bootstrap intervals over posters
    (`n_resamples`, seeded) at `ap_path` and the per-genre precision-recall panels at
    `pr_path`. Returns the rows of `average_precision_intervals`."""
    from postergenre.evaluation.metrics import average_precision_intervals

    rows = average_precision_intervals(y_true, probs, genres, n_resamples, seed)
    plot_ap_bars(rows, ap_path, f"AP per genre ({title})")
    plot_pr_curves(y_true, probs, genres, pr_path, f"Precision-recall ({title})", rows)
    return rows


def plot_threshold_policy(
    sweep: Sequence[dict[str, float]],
    true_count: float,
    points: dict[str, dict[str, float]],
    path: Path,
    title: str = "Threshold policy",
) -> Path:
    """The operating points of a multi-label model: macro and micro F1 (left) and predicted
    genres per poster (right) against one shared threshold, the labels' genres per poster as
    a line, and each threshold policy's point marked (per-genre thresholds have no single
    threshold, so the left panel plots F1 against genres per poster instead)."""
    count = [row["genres_per_poster"] for row in sweep]
    fig, (left, right) = _subplots(2, figsize=(11, 4.2))
    for key, style in (("macro_f1", "o-"), ("micro_f1", "s-")):
        left.plot(count, [row[key] for row in sweep], style, ms=3, label=key.replace("_", " "))
    left.axvline(true_count, color="grey", ls="--", label=f"labels: {true_count:.2f}")
    # One colour per policy (the first drawn largest: two policies may share a point).
    for i, (name, point) in enumerate(points.items()):
        colour = f"C{i + 2}"
        for key, marker in (("macro_f1", "*"), ("micro_f1", "D")):
            left.plot(point["genres_per_poster"], point[key], marker, ms=18 - 4 * i, mec="black",
                      color=colour, label=name if key == "macro_f1" else None)  # fmt: skip
    left.set_title("policies: star = macro F1, diamond = micro F1", fontsize=9)
    left.set_xlabel("predicted genres per poster (shared threshold swept)")
    left.set_ylabel("F1")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    right.plot([row["threshold"] for row in sweep], count, "o-", ms=3, label="predicted")
    right.axhline(true_count, color="grey", ls="--", label="labels")
    right.set_xlabel("shared threshold")
    right.set_ylabel("genres per poster")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)
