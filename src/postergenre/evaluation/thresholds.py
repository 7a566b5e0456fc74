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
