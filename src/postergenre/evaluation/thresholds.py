"""Per-genre decision thresholds for multi-label models, tuned on validation data."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray, default: float = 0.5) -> np.ndarray:
    """For each genre, the probability threshold that maximises F1 on (y_true, probs).

    A genre without positives keeps `default`. The threshold is placed halfway between the
    chosen score and the next lower one, so it does not sit exactly on a validation poster.
    """
    thresholds = np.full(y_true.shape[1], default, dtype=np.float64)
    for j in range(y_true.shape[1]):
        if not y_true[:, j].any():
            continue
        precision, recall, cuts = precision_recall_curve(y_true[:, j], probs[:, j])
        f1 = np.where(
            precision + recall > 0, 2 * precision * recall / (precision + recall + 1e-12), 0
        )
        best = int(np.argmax(f1[:-1]))  # the last point (recall 0) has no threshold
        lower = probs[:, j][probs[:, j] < cuts[best]]
        thresholds[j] = (cuts[best] + lower.max()) / 2 if lower.size else cuts[best]
    return thresholds


# A calibrated model's predicted genres per poster should match the labels' average; the
# one-threshold rule may stray from it by at most this share on validation.
COUNT_TOLERANCE = 0.2


def count_matched_threshold(
    y_true: np.ndarray, probs: np.ndarray, tolerance: float = COUNT_TOLERANCE
) -> float:
    """One threshold for every genre: the best micro F1 on (y_true, probs) among thresholds
    whose predicted genres per poster are within `tolerance` of the true average.

    With calibrated probabilities one shared threshold never marks a genre while a more
    probable one is left out; per-genre F1 thresholds do (and over-predict rare genres)."""
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    true_count = float(y_true.sum(axis=1).mean())
    best: tuple[float, float] | None = None
    nearest: tuple[float, float] | None = None
    for t in grid:
        predicted = probs >= t
        count = float(predicted.sum(axis=1).mean())
        gap = abs(count - true_count)
        if nearest is None or gap < nearest[0]:
            nearest = (gap, float(t))
        if gap > tolerance * true_count:
            continue
        tp = float((predicted & (y_true > 0)).sum())
        micro = 2 * tp / max(float(predicted.sum() + (y_true > 0).sum()), 1.0)
        if best is None or micro > best[0]:
            best = (micro, float(t))
    assert nearest is not None
    return best[1] if best is not None else nearest[1]


def threshold_policies(y_true: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    """The thresholds of every recorded policy (`models.threshold_policy`), chosen on the
    validation labels and probabilities given: `shared` (one count-matched threshold) and
    `per-genre` (each genre's F1-best threshold)."""
    shared = count_matched_threshold(y_true, probs)
    return {
        "shared": np.full(y_true.shape[1], shared),
        "per-genre": tune_thresholds(y_true, probs),
    }
