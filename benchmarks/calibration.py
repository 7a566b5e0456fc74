"""Calibrating the 20-genre linear probe, and choosing its decision rule.

Frozen features from runs/ensemble-features.npz (`benchmarks/ensemble_features.py`) of the
shared train / val / test splits; a class-balanced one-vs-rest logistic regression; then,
fitted on val only: per-genre Platt scaling of the logits, and a decision rule:
- `F1 thresholds`: per genre, the threshold that maximises that genre's F1 on val;
- `one threshold`: one threshold for every genre, maximising micro F1 on val;
- `one threshold, count-matched`: the best micro F1 on val among the thresholds whose
  predicted genres per poster on val lie within 20% of the true average (the library's rule).
Reported on test: mAP, micro / macro F1, ECE (15 bins over every poster x genre), predicted
genres per poster against the true average, and the share of posters where a predicted genre
is less probable than a non-predicted one.

    python benchmarks/calibration.py [--sets "lite0 avg;lite0+1+2 avg +s5 s6"] [--name calibration]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _common import multi_label_summary, print_table, write_result
from ensemble_probe import FEATURES, feature_set, split_data
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.multiclass import OneVsRestClassifier

from postergenre.evaluation.thresholds import count_matched_threshold, tune_thresholds
from postergenre.training.calibration import fit_platt


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def row(name: str, y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | float) -> dict:
    return {"setting": name, **multi_label_summary(y, probs, probs >= thresholds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sets", default="lite0 avg;lite0+1+2 avg +s5 s6", help="feature sets, ;-separated"
    )
    parser.add_argument("--c", type=float, default=0.0003, help="the probe's C")
    parser.add_argument("--name", default="calibration")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    started = time.perf_counter()
    features = np.load(FEATURES)
    data = split_data("imdb20", features["ids"])
    y_train, y_val, y_test = (data[s][1] for s in ("train", "val", "test"))
    rows = []
    for name in args.sets.split(";"):
        columns = feature_set(features, name)
        x_train, x_val, x_test = (columns[data[s][0]] for s in ("train", "val", "test"))
        mean, std = x_train.mean(0), x_train.std(0) + 1e-6
        x_train, x_val, x_test = ((x - mean) / std for x in (x_train, x_val, x_test))
        base = LogisticRegression(C=args.c, class_weight="balanced", max_iter=2000)
        clf = OneVsRestClassifier(base, n_jobs=2).fit(x_train, y_train)
        z_val, z_test = (
            np.stack([e.decision_function(x) for e in clf.estimators_], 1) for x in (x_val, x_test)
        )
        raw_val, raw_test = _sigmoid(z_val), _sigmoid(z_test)
        rows.append(row(f"{name}: raw, F1 thresholds", y_test, raw_test,
                        tune_thresholds(y_val, raw_val)))  # fmt: skip
        platt = fit_platt(z_val, y_val)
        cal_val, cal_test = (_sigmoid(platt.apply(z)) for z in (z_val, z_test))
        rows.append(row(f"{name}: Platt, F1 thresholds", y_test, cal_test,
                        tune_thresholds(y_val, cal_val)))  # fmt: skip
        grid = np.arange(0.10, 0.60, 0.01)
        best = max(grid, key=lambda t: f1_score(y_val, cal_val >= t, average="micro"))
        rows.append(row(f"{name}: Platt, one threshold {best:.2f}", y_test, cal_test, best))
        matched = count_matched_threshold(y_val, cal_val)
        rows.append(row(f"{name}: Platt, one threshold, count-matched {matched:.2f}", y_test,
                        cal_test, matched))  # fmt: skip
    columns = ["setting", "map", "micro_f1", "macro_f1", "ece", "predicted_per_poster",
               "true_per_poster", "inverted_share"]  # fmt: skip
    print_table(rows, columns)
    seconds = round(time.perf_counter() - started, 1)
    print(f"wrote {write_result(args.name, {'rows': rows, 'c': args.c, 'seconds': seconds})}")


if __name__ == "__main__":
    main()
