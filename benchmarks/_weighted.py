"""Metrics with 95% bootstrap intervals for the out-of-source benchmark: each resample is a
row of counts (how often each poster is drawn), so every metric of 1,000 resamples is a few
matrix products instead of 1,000 calls to scikit-learn. A row of ones must reproduce the
library's own numbers (`postergenre.evaluation.metrics`), or the benchmark stops."""

from __future__ import annotations

import numpy as np

from postergenre.evaluation.metrics import (
    ECE_BINS,
    average_precision_intervals,
    balanced_accuracy,
    calibration,
    mean_average_precision,
    single_label_metrics,
    weighted_average_precision,
)

BOOT = 1000


def headline(task: str, y: np.ndarray, probs: np.ndarray, predicted: np.ndarray) -> dict:
    """The metrics of the shared test split's table, from the library's metric functions."""
    if task == "single":
        top = probs.argmax(1)
        return {"accuracy": float((top == y).mean()),
                "balanced_accuracy": balanced_accuracy(y, top),
                "ece": calibration(probs.max(1), top == y)["ece"]}  # fmt: skip
    from sklearn.metrics import f1_score

    return {"map": mean_average_precision(y, probs),
            "micro_f1": float(f1_score(y, predicted, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(y, predicted, average="macro", zero_division=0)),
            "ece": calibration(probs, y)["ece"]}  # fmt: skip


def weighted_metrics(
    task: str, y: np.ndarray, probs: np.ndarray, predicted: np.ndarray, w: np.ndarray
) -> dict[str, np.ndarray]:
    """`headline`'s metrics under each row of `w` (R, n): how often each poster counts."""
    total = w.sum(1)
    if task == "single":
        correct = (probs.argmax(1) == y).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):  # a class left out of a draw
            recalls = [(w @ (correct * (y == c))) / (w @ (y == c).astype(float))
                       for c in np.unique(y)]  # fmt: skip
        return {"accuracy": w @ correct / total,
                "balanced_accuracy": np.nanmean(recalls, axis=0),
                "ece": _weighted_ece(probs.max(1)[:, None], correct[:, None], w)}  # fmt: skip
    y, hit = y.astype(float), predicted.astype(float)
    tp, fp, fn = w @ (y * hit), w @ ((1 - y) * hit), w @ (y * (1 - hit))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_genre = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        micro = 2 * tp.sum(1) / (2 * tp.sum(1) + fp.sum(1) + fn.sum(1))
    aps = [weighted_average_precision(y[:, j], probs[:, j], w) for j in range(y.shape[1])]
    return {"map": np.nanmean(np.vstack(aps), axis=0), "micro_f1": np.nan_to_num(micro),
            "macro_f1": per_genre.mean(1), "ece": _weighted_ece(probs, y, w)}  # fmt: skip


def _weighted_ece(confidence: np.ndarray, outcome: np.ndarray, w: np.ndarray) -> np.ndarray:
    """`calibration`'s ECE (the same bins) with posters counted `w` times; confidence and
    outcome are (n, cells per poster)."""
    which = np.minimum((confidence * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    gap = np.zeros((len(confidence), ECE_BINS))
    for b in range(ECE_BINS):
        gap[:, b] = np.where(which == b, confidence - outcome, 0.0).sum(1)
    return np.abs(w @ gap).sum(1) / (w.sum(1) * confidence.shape[1])


class Scored:
    """One model's probabilities on one set of posters, with bootstrap draws of its metrics."""

    def __init__(
        self,
        task: str,
        y: np.ndarray,
        probs: np.ndarray,
        predicted: np.ndarray,
        boot: int,
        seed: int,
    ) -> None:
        self.task, self.n, self.y, self.probs = task, len(y), y, probs
        self.point = headline(task, y, probs, predicted)
        rng = np.random.default_rng(seed)
        # Resamples as counts, so every metric of every resample is a few matrix products; a
        # row of ones must give the library's own numbers, or the script refuses to go on.
        counts = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=boot).astype(float)
        check = weighted_metrics(task, y, probs, predicted, np.ones((1, len(y))))
        for key, value in self.point.items():
            if not np.isclose(check[key][0], value, atol=1e-9, equal_nan=True):
                raise SystemExit(f"weighted {key} {check[key][0]} != library's {value}")
        self.draws = weighted_metrics(task, y, probs, predicted, counts)

    def row(self, label: str, base: Scored | None = None) -> dict:
        row = {"set": label, "posters": self.n}
        for key, value in self.point.items():
            row[key] = value
            row[f"{key}_95"] = _interval(self.draws[key])
            if base is not None:  # independent draws of two sets of posters
                size = min(len(self.draws[key]), len(base.draws[key]))
                diff = self.draws[key][:size] - base.draws[key][:size]
                row[f"{key}_drop"] = value - base.point[key]
                row[f"{key}_drop_95"] = _interval(diff)
        return row

    def per_genre(self, genres: list[str]) -> list[dict]:
        """Multi-label: each genre's AP with a 95% interval, prevalence and positives (genres
        with one). Single-label: each genre's recall, precision and posters."""
        if self.task == "single":
            found = single_label_metrics(self.y, self.probs, genres)["per_genre"]
            return [{"genre": g, **found[g]} for g in genres]
        return average_precision_intervals(self.y, self.probs, genres)


def _interval(values: np.ndarray) -> list[float]:
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]
