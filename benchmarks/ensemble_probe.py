"""Which frozen features make the best linear probe: backbones, ensembles and pooling.

Reads runs/ensemble-features.npz (written by `benchmarks/ensemble_features.py`), fits a
class-balanced logistic regression per feature set on the shared train split, chooses C on
val, and reports val and test: balanced accuracy for the three-genre task (three_genre.csv),
mAP for the 20-genre task (train.csv + splits.csv). Each set is compared with the Lite0 +
Lite1 + Lite2 average-pooled ensemble by a paired bootstrap over the val posters (1,000
resamples; 95% interval of the difference). Only val decides; test is reported.

    python benchmarks/ensemble_probe.py [--sets "NAME;..."] [--name ensemble_probe]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _common import REPO, print_table, require_data, write_result
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.multiclass import OneVsRestClassifier

from postergenre.data.benchmark import task_sources
from postergenre.data.labels import load_posters
from postergenre.data.targets import encode_targets
from postergenre.evaluation.metrics import mean_average_precision

FEATURES = REPO / "runs" / "ensemble-features.npz"
ALL = ("lite0", "lite1", "lite2")
SETS: dict[str, list[str]] = {
    "lite0 avg": ["lite0/head_avg"],
    "lite1 avg": ["lite1/head_avg"],
    "lite2 avg": ["lite2/head_avg"],
    "lite0+1+2 avg": [f"{v}/head_avg" for v in ALL],
    "lite0+1+2 avg+max": [f"{v}/head_{p}" for v in ALL for p in ("avg", "max")],
    "lite0+1+2 avg +s6": [f"{v}/{m}_avg" for v in ALL for m in ("s6", "head")],
    "lite0+1+2 avg +s5 s6": [f"{v}/{m}_avg" for v in ALL for m in ("s5", "s6", "head")],
    "lite0+1+2 avg+max +s5 s6": [
        f"{v}/{m}_{p}" for v in ALL for m in ("s5", "s6", "head") for p in ("avg", "max")
    ],
}
REFERENCE = "lite0+1+2 avg"
C_GRID = (0.0001, 0.0003, 0.001, 0.003)
BOOT = 1000


def feature_set(features: np.lib.npyio.NpzFile, name: str) -> np.ndarray:
    """The columns of feature set `name` (see SETS), side by side."""
    return np.concatenate([features[key] for key in SETS[name]], axis=1)


def split_data(task: str, ids: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(row indices into the feature file, targets) per split."""
    name = "three-genre" if task == "three" else "imdb-20"
    sources = task_sources(name, require_data())
    collection = load_posters(
        labels=sources["labels"], images=sources["images"], splits=sources["splits"]
    )
    where = {str(i): n for n, i in enumerate(ids)}
    out = {}
    for split in ("train", "val", "test"):
        targets = encode_targets(
            collection.split(split).records, sources["genres"], sources["task"]
        )
        rows = np.array([where[r.path.stem] for r in targets.records])
        out[split] = (rows, targets.y)
    return out


def score(task: str, y: np.ndarray, probs: np.ndarray) -> float:
    if task == "three":
        return float(balanced_accuracy_score(y, probs.argmax(1)))
    return mean_average_precision(y, probs)


def fit(task: str, x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> tuple[float, dict]:
    mean, std = x["train"].mean(0), x["train"].std(0) + 1e-6
    xs = {k: (v - mean) / std for k, v in x.items()}
    best = None
    for c in C_GRID:
        base = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
        clf = base if task == "three" else OneVsRestClassifier(base, n_jobs=2)
        clf.fit(xs["train"], y["train"])
        probs = {k: clf.predict_proba(xs[k]) for k in ("val", "test")}
        val = score(task, y["val"], probs["val"])
        if best is None or val > best[0]:
            best = (val, c, probs)
    assert best is not None
    return best[1], best[2]


def paired_bootstrap(task: str, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """95% interval of score(a) - score(b) over posters resampled with replacement."""
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(BOOT):
        idx = rng.integers(0, len(y), len(y))
        if task != "three" and (y[idx].sum(0) == 0).any():
            continue
        diffs.append(score(task, y[idx], a[idx]) - score(task, y[idx], b[idx]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=";".join(SETS), help="feature sets, ;-separated")
    parser.add_argument("--tasks", default="imdb20,three")
    parser.add_argument("--name", default="ensemble_probe")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    started = time.perf_counter()
    features = np.load(FEATURES)
    ids = features["ids"]
    chosen = args.sets.split(";")
    if REFERENCE not in chosen:
        chosen.insert(0, REFERENCE)
    rows = []
    for task in args.tasks.split(","):
        data = split_data(task, ids)
        y = {k: v[1] for k, v in data.items()}
        results = {}
        for name in chosen:
            columns = feature_set(features, name)
            x = {k: columns[v[0]] for k, v in data.items()}
            t = time.perf_counter()
            c, probs = fit(task, x, y)
            results[name] = probs
            rows.append({
                "task": task, "features": name, "dim": columns.shape[1], "C": c,
                "val": score(task, y["val"], probs["val"]),
                "test": score(task, y["test"], probs["test"]),
                "fit_s": round(time.perf_counter() - t, 1),
            })  # fmt: skip
            print(rows[-1], flush=True)
        for row in rows:
            if row["task"] == task and row["features"] != REFERENCE:
                low, high = paired_bootstrap(
                    task, y["val"], results[row["features"]]["val"], results[REFERENCE]["val"]
                )
                row["val_vs_ref_low"], row["val_vs_ref_high"] = low, high
    columns = ["task", "features", "dim", "C", "val", "test", "val_vs_ref_low", "val_vs_ref_high",
               "fit_s"]  # fmt: skip
    print_table(rows, columns)
    seconds = round(time.perf_counter() - started, 1)
    payload = {"rows": rows, "reference": REFERENCE, "seconds": seconds}
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
