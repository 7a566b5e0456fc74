"""Calibrating the 20-genre linear probe: what Platt scaling and the decision rule do.

Frozen EfficientNet-Lite0 embeddings (224x336, cached) of the shared train / val / test splits;
a one-vs-rest logistic regression per setting (class-balanced or not, C); then, fitted on val
only: per-genre Platt scaling of the logits, and either per-genre F1-tuned thresholds or one
global threshold that maximises micro F1 on val. Reported on test: mAP, micro / macro F1,
ECE (15 bins over every poster x genre), predicted genres per poster against the true average,
and how often a poster has a predicted genre less probable than a non-predicted one.

    python benchmarks/calibration.py [--c 0.0003,0.001] [--name calibration]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _common import print_table, require_data, write_result
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.multiclass import OneVsRestClassifier

from postergenre._allocator import tune_allocator
from postergenre.data.benchmark import task_sources
from postergenre.data.labels import load_posters
from postergenre.data.targets import encode_targets
from postergenre.evaluation.metrics import calibration, mean_average_precision
from postergenre.evaluation.thresholds import tune_thresholds
from postergenre.models.card import ModelCard
from postergenre.models.catalog import BUNDLED_DIR
from postergenre.models.embeddings import compute_embeddings


def embeddings(genres: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    data = require_data()
    sources = task_sources("imdb-20", data)
    collection = load_posters(
        labels=sources["labels"], images=sources["images"], splits=sources["splits"]
    )
    out = {}
    for split in ("train", "val", "test"):
        targets = encode_targets(collection.split(split).records, genres, "multi")
        paths = [r.path for r in targets.records]
        vectors = compute_embeddings("efficientnet-lite0", paths, None, progress=True)
        out[split] = (np.asarray(vectors[vectors.ok]), targets.y[vectors.ok])
    return out


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def platt(z_val: np.ndarray, y_val: np.ndarray) -> np.ndarray:
    """(a, b) per genre so that sigmoid(a z + b) is calibrated on val."""
    fitted = []
    for j in range(z_val.shape[1]):
        lr = LogisticRegression(C=1e4, max_iter=1000).fit(z_val[:, j : j + 1], y_val[:, j])
        fitted.append((lr.coef_[0, 0], lr.intercept_[0]))
    return np.array(fitted)


def row(name: str, y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | float) -> dict:
    predicted = probs >= thresholds
    inverted = pairs = 0
    for p, chosen in zip(probs, predicted, strict=True):
        if chosen.any() and (~chosen).any():
            pairs += 1
            inverted += int(p[chosen].min() < p[~chosen].max())
    return {
        "setting": name,
        "map": mean_average_precision(y, probs),
        "micro_f1": float(f1_score(y, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y, predicted, average="macro", zero_division=0)),
        "ece": calibration(probs, y)["ece"],
        "predicted_per_poster": float(predicted.sum(1).mean()),
        "true_per_poster": float(y.sum(1).mean()),
        "inverted_share": inverted / max(pairs, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c", default="0.0003,0.001", help="C values (comma-separated)")
    parser.add_argument("--name", default="calibration")
    args = parser.parse_args()
    tune_allocator()
    warnings.simplefilter("ignore", ConvergenceWarning)
    genres = list(ModelCard.read(BUNDLED_DIR / "imdb-20").genres)
    started = time.perf_counter()
    splits = embeddings(genres)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        splits[s] for s in ("train", "val", "test")
    )
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_val, x_test = ((x - mean) / std for x in (x_train, x_val, x_test))
    rows = []
    for weights in ("balanced", None):
        for c in (float(v) for v in args.c.split(",")):
            base = LogisticRegression(C=c, class_weight=weights, max_iter=2000)
            clf = OneVsRestClassifier(base, n_jobs=2).fit(x_train, y_train)
            z_val, z_test = (
                np.stack([e.decision_function(x) for e in clf.estimators_], 1)
                for x in (x_val, x_test)
            )
            label = f"{weights or 'unweighted'}, C={c:g}"
            raw_val, raw_test = _sigmoid(z_val), _sigmoid(z_test)
            rows.append(row(f"{label}: raw, F1 thresholds", y_test, raw_test,
                            tune_thresholds(y_val, raw_val)))  # fmt: skip
            ab = platt(z_val, y_val)
            cal_val, cal_test = (_sigmoid(z * ab[:, 0] + ab[:, 1]) for z in (z_val, z_test))
            rows.append(row(f"{label}: Platt, F1 thresholds", y_test, cal_test,
                            tune_thresholds(y_val, cal_val)))  # fmt: skip
            grid = np.arange(0.10, 0.60, 0.01)
            best = max(grid, key=lambda t: f1_score(y_val, cal_val >= t, average="micro"))
            rows.append(row(f"{label}: Platt, one threshold {best:.2f}", y_test, cal_test, best))
    columns = ["setting", "map", "micro_f1", "macro_f1", "ece", "predicted_per_poster",
               "true_per_poster", "inverted_share"]  # fmt: skip
    print_table(rows, columns)
    seconds = round(time.perf_counter() - started, 1)
    print(f"wrote {write_result(args.name, {'rows': rows, 'seconds': seconds})}")


if __name__ == "__main__":
    main()
