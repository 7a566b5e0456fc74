"""Metrics from probabilities and true labels; pure functions over arrays, no I/O."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)


def single_label_metrics(
    y_true: np.ndarray, probs: np.ndarray, genres: list[str]
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, per-genre precision/recall/F1 and the confusion
    matrix for class indices `y_true` against (n, k) probabilities."""
    labels = list(range(len(genres)))
    y_pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    present = [i for i in labels if support[i] > 0]
    clipped = np.clip(probs, 1e-7, 1.0)
    return {
        "task": "single",
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
        ),
        "log_loss": float(log_loss(y_true, clipped / clipped.sum(1, keepdims=True), labels=labels))
        if len(y_true)
        else float("nan"),
        "per_genre": {
            genre: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, genre in enumerate(genres)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "genres": list(genres),
    }


def mean_average_precision(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro average precision over the genres that have at least one positive."""
    from sklearn.metrics import average_precision_score

    columns = [j for j in range(y_true.shape[1]) if y_true[:, j].any()]
    if not columns:
        return float("nan")
    return float(np.mean([average_precision_score(y_true[:, j], probs[:, j]) for j in columns]))
