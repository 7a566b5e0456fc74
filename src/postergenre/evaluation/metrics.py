"""Metrics from probabilities and true labels; pure functions over arrays, no I/O."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    log_loss,
    precision_recall_fscore_support,
)

from postergenre.models.card import decide

ECE_BINS = 15


def calibration(
    confidence: np.ndarray, outcome: np.ndarray, bins: int = ECE_BINS
) -> dict[str, Any]:
    """Expected calibration error over `bins` equal-width bins of the stated probability, and
    the bins themselves (mean probability, observed frequency, count) for a reliability
    diagram. `confidence` and `outcome` (0/1) are flat and aligned: for a single-label model
    the top probability and whether that genre was right; for a multi-label model every
    poster x genre probability and whether the poster has the genre."""
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    outcome = np.asarray(outcome, dtype=np.float64).ravel()
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        member = which == b
        count = int(member.sum())
        if not count:
            continue
        stated, observed = float(confidence[member].mean()), float(outcome[member].mean())
        ece += count / len(confidence) * abs(stated - observed)
        table.append({"bin": b, "probability": stated, "frequency": observed, "count": count})
    return {"ece": ece if len(confidence) else None, "bins": table}


def inverted_share(probs: np.ndarray, predicted: np.ndarray) -> float:
    """The share of posters (with both predicted and non-predicted genres) where a predicted
    genre is less probable than a non-predicted one: 0 for any one shared threshold."""
    mixed = predicted.any(axis=1) & ~predicted.all(axis=1)
    if not mixed.any():
        return 0.0
    lowest_in = np.where(predicted, probs, np.inf).min(axis=1)
    highest_out = np.where(predicted, -np.inf, probs).max(axis=1)
    return float((lowest_in < highest_out)[mixed].mean())


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The mean over the genres present in `y_true` of the share of their posters predicted
    right (recall); 0 for no posters. scikit-learn's value, without its warning when a genre
    is predicted that no poster has."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if not len(y_true):
        return 0.0
    return float(np.mean([(y_pred[y_true == c] == c).mean() for c in np.unique(y_true)]))


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
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
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
        **_calibrated(probs.max(axis=1) if len(probs) else probs, y_pred == y_true),
        "genres": list(genres),
    }


def _calibrated(confidence: np.ndarray, outcome: np.ndarray) -> dict[str, Any]:
    result = calibration(confidence, outcome)
    return {"ece": result["ece"], "calibration_bins": result["bins"]}


def mean_average_precision(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro average precision over the genres that have at least one positive."""
    from sklearn.metrics import average_precision_score

    columns = [j for j in range(y_true.shape[1]) if y_true[:, j].any()]
    if not columns:
        return float("nan")
    return float(np.mean([average_precision_score(y_true[:, j], probs[:, j]) for j in columns]))


def _f1s(y_true: np.ndarray, y_pred: np.ndarray, columns: list[int]) -> dict[str, float]:
    kwargs = {"zero_division": 0}
    return {
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", **kwargs)),
        "macro_f1": float(
            f1_score(y_true[:, columns], y_pred[:, columns], average="macro", **kwargs)
        ),
        "samples_f1": float(f1_score(y_true, y_pred, average="samples", **kwargs)),
    }


def multi_label_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    genres: list[str],
    thresholds: np.ndarray,
    train_prevalence: np.ndarray | None = None,
) -> dict[str, Any]:
    """mAP, micro/macro/samples F1 at the tuned thresholds and at 0.5, a per-genre table, and
    trivial baselines (the two most frequent training genres for every poster; training
    frequency as the score) so nobody mistakes label-wise accuracy for skill.

    Macro averages run over the genres with at least one positive in `y_true`.
    """
    from sklearn.metrics import average_precision_score

    y_true = y_true.astype(np.int64)
    columns = [j for j in range(len(genres)) if y_true[:, j].any()]
    ap = {j: float(average_precision_score(y_true[:, j], probs[:, j])) for j in columns}
    tuned = decide(probs, "multi", thresholds).astype(np.int64)
    half = decide(probs, "multi", 0.5).astype(np.int64)
    per_genre_f1 = f1_score(y_true, tuned, average=None, zero_division=0)
    result: dict[str, Any] = {
        "task": "multi",
        "n": len(y_true),
        "map": float(np.mean(list(ap.values()))) if ap else float("nan"),
        **_f1s(y_true, tuned, columns),
        "at_0.5": {**_f1s(y_true, half, columns), **exact_and_labelwise(y_true, half)},
        "per_genre": {
            genre: {
                "ap": ap.get(j),
                "f1": float(per_genre_f1[j]),
                "threshold": float(thresholds[j]),
                "support": int(y_true[:, j].sum()),
            }
            for j, genre in enumerate(genres)
        },
        **exact_and_labelwise(y_true, tuned),
        **_calibrated(probs, y_true),  # every poster x genre pair
        "genres_per_poster": {
            "predicted": float(tuned.sum(axis=1).mean()) if len(tuned) else float("nan"),
            "true": float(y_true.sum(axis=1).mean()) if len(y_true) else float("nan"),
        },
        "inverted_share": inverted_share(probs, tuned.astype(bool)),
        "genres": list(genres),
    }
    prevalence = train_prevalence if train_prevalence is not None else y_true.mean(axis=0)
    top2 = np.zeros_like(y_true)
    top2[:, np.argsort(-prevalence, kind="stable")[:2]] = 1
    constant = np.broadcast_to(prevalence, probs.shape)
    result["baselines"] = {
        "top2_genres": {
            "genres": [genres[j] for j in np.argsort(-prevalence, kind="stable")[:2]],
            **_f1s(y_true, top2, columns),
            **exact_and_labelwise(y_true, top2),
        },
        **no_skill_baselines(y_true, genres),
        # A constant score per genre ranks nothing: its AP is the genre's prevalence.
        "frequency_score": {
            "map": mean_average_precision(y_true[:, columns], constant[:, columns])
        },
    }
    return result


def exact_and_labelwise(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Hamming loss (the share of poster x genre decisions that are wrong; 1 - label-wise
    accuracy) and subset accuracy (the share of posters whose genres are all exactly right)."""
    if not len(y_true):
        return {"hamming_loss": float("nan"), "subset_accuracy": float("nan")}
    return {
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
    }


def no_skill_baselines(y_true: np.ndarray, genres: list[str]) -> dict[str, Any]:
    """Answers that look at no poster, for Hamming loss and subset accuracy: no genre at all
    (its Hamming loss is the labels' density, which sparse labels make small), and the most
    common genre set of these very posters for every poster (the best any constant answer
    can do on them, so it flatters the baseline, never the model)."""
    empty = np.zeros_like(y_true)
    common, chosen = empty.copy(), []
    if len(y_true):
        rows, counts = np.unique(y_true, axis=0, return_counts=True)
        common[:] = rows[int(np.argmax(counts))]
        chosen = [g for g, on in zip(genres, common[0], strict=True) if on]
    return {
        "no_genre": exact_and_labelwise(y_true, empty),
        "most_common_set": {"genres": chosen, **exact_and_labelwise(y_true, common)},
    }


def operating_point(y_true: np.ndarray, probs: np.ndarray, thresholds: Any) -> dict[str, float]:
    """A decision rule's headline: micro / macro / samples F1 (macro over the genres with a
    positive), Hamming loss, subset accuracy and the mean predicted genres per poster."""
    y_true = np.asarray(y_true).astype(np.int64)
    columns = [j for j in range(y_true.shape[1]) if y_true[:, j].any()]
    predicted = decide(probs, "multi", thresholds).astype(np.int64)
    return {
        **_f1s(y_true, predicted, columns),
        **exact_and_labelwise(y_true, predicted),
        "genres_per_poster": float(predicted.sum(axis=1).mean()) if len(y_true) else float("nan"),
    }


SWEEP_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.951, 0.05))


def threshold_sweep(
    y_true: np.ndarray, probs: np.ndarray, thresholds: tuple[float, ...] = SWEEP_THRESHOLDS
) -> list[dict[str, float]]:
    """The macro-F1 / genre-count trade-off as a curve: for each shared threshold, micro and
    macro F1 (macro over the genres with a positive), the mean predicted genres per poster
    (compare with the labels' mean: `genres_per_poster.true`) and the Hamming loss."""
    y_true = np.asarray(y_true).astype(np.int64)
    columns = [j for j in range(y_true.shape[1]) if y_true[:, j].any()]
    nan = float("nan")
    rows = []
    for t in thresholds:
        predicted = (probs >= t).astype(np.int64)
        f1s = _f1s(y_true, predicted, columns) if len(y_true) else {}
        count = float(predicted.sum(axis=1).mean()) if len(y_true) else nan
        hamming = exact_and_labelwise(y_true, predicted)["hamming_loss"]
        rows.append({"threshold": float(t), "micro_f1": f1s.get("micro_f1", nan),
                     "macro_f1": f1s.get("macro_f1", nan), "genres_per_poster": count,
                     "hamming_loss": hamming})  # fmt: skip
    return rows


def weighted_average_precision(
    y: np.ndarray, scores: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Average precision of one genre under each row of `weights` (R, n): how many times each
    poster counts (bootstrap resamples are counts). Ties are one threshold, as in
    scikit-learn's `average_precision_score` (which a row of ones reproduces). NaN where a row
    holds no positive."""
    order = np.argsort(-scores, kind="stable")
    y, scores, weights = y[order].astype(np.float64), scores[order], weights[:, order]
    tp = np.cumsum(weights * y, axis=1)
    fp = np.cumsum(weights * (1 - y), axis=1)
    # the last poster of each run of equal scores closes a threshold
    last = np.r_[scores[1:] != scores[:-1], True]
    tp, fp = tp[:, last], fp[:, last]
    total = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        recall = tp / total
    gained = np.diff(recall, axis=1, prepend=0.0)
    ap = (gained * precision).sum(axis=1)
    return np.where(total[:, 0] > 0, ap, np.nan)


def average_precision_intervals(
    y_true: np.ndarray,
    probs: np.ndarray,
    genres: list[str],
    n_resamples: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> list[dict[str, Any]]:
    """Per genre with a positive: {genre, ap, lower, upper, prevalence, support}, sorted by AP
    (highest first). The interval is the percentile bootstrap over posters (`n_resamples`
    resamples with replacement, seeded); the prevalence is the AP of a random ranking."""
    y_true = np.asarray(y_true).astype(np.int64)
    n = len(y_true)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1 / n), size=n_resamples).astype(np.float64)
    ones = np.ones((1, n))
    tail = (1 - level) / 2 * 100
    rows = []
    for j, genre in enumerate(genres):
        if not y_true[:, j].any():
            continue
        ap = float(weighted_average_precision(y_true[:, j], probs[:, j], ones)[0])
        boot = weighted_average_precision(y_true[:, j], probs[:, j], counts)
        lower, upper = np.nanpercentile(boot, [tail, 100 - tail])
        rows.append({
            "genre": genre,
            "ap": ap,
            "lower": float(lower),
            "upper": float(upper),
            "prevalence": float(y_true[:, j].mean()),
            "support": int(y_true[:, j].sum()),
        })  # fmt: skip
    return sorted(rows, key=lambda row: -row["ap"])
