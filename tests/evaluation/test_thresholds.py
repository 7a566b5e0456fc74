"""Per-genre threshold tuning on constructed cases."""

from __future__ import annotations

import numpy as np

from postergenre.evaluation.thresholds import tune_thresholds


def test_threshold_separates_a_cleanly_separable_genre():
    # Genre 0: positives score 0.3-0.4, negatives 0.05-0.2 -> the best cut lies between 0.2
    # and 0.3 (F1 = 1), far below 0.5. Genre 1 has no positive and keeps the default.
    y = np.array([[1, 0], [1, 0], [1, 0], [0, 0], [0, 0], [0, 0]])
    probs = np.array([[0.4, 0.1], [0.35, 0.2], [0.3, 0.3], [0.2, 0.9], [0.1, 0.4], [0.05, 0.2]])
    thresholds = tune_thresholds(y, probs)
    assert 0.2 < thresholds[0] <= 0.3
    assert thresholds[0] == 0.25  # halfway between the lowest positive and highest negative
    assert thresholds[1] == 0.5
    predicted = probs[:, 0] >= thresholds[0]
    assert (predicted == y[:, 0].astype(bool)).all()


def test_threshold_trades_precision_for_recall_by_f1():
    # Scores: P 0.9, N 0.8, P 0.7, P 0.6, N 0.5, N 0.1. Cutting at 0.6 keeps 3 P + 1 N:
    # precision 3/4, recall 1, F1 6/7 -- better than cutting at 0.9 (F1 0.5) or 0.7 (F1 0.67).
    y = np.array([[1], [0], [1], [1], [0], [0]])
    probs = np.array([[0.9], [0.8], [0.7], [0.6], [0.5], [0.1]])
    [threshold] = tune_thresholds(y, probs)
    assert 0.5 < threshold <= 0.6
