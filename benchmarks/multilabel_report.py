"""Honest multi-label reporting of the bundled models on the shared test split.

Each multi-label bundled model predicts the test posters of `splits.csv` (ONNX Runtime, decoded
posters from the cache); every threshold policy its card records (chosen on validation, never
on test) is scored: mAP, micro / macro F1, Hamming loss, subset accuracy and predicted genres
per poster, each with a 95% percentile interval from bootstrap resamples of the test posters.
Beside them the answers that look at no poster: no genre at all, the two most frequent
training genres for every poster, and the test posters' own most common genre set (which
flatters that baseline); the model's Hamming loss minus the no-genre answer's is bootstrapped
paired. The shared threshold is also swept (point values) for the curve.

    python benchmarks/multilabel_report.py [--models imdb-20,imdb-20-fast] [--boot 1000]
        [--probabilities DIR]   # reuse DIR/<model>_test.npz, or save it there
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import print_table, require_data, write_result

from postergenre._allocator import tune_allocator
from postergenre.data.benchmark import task_sources
from postergenre.data.labels import load_posters
from postergenre.data.targets import encode_targets
from postergenre.evaluation.metrics import (
    exact_and_labelwise,
    mean_average_precision,
    no_skill_baselines,
    operating_point,
    threshold_sweep,
)
from postergenre.inference import Predictor
from postergenre.models.threshold_policy import THRESHOLD_POLICIES, policy_thresholds

KEYS = ("micro_f1", "macro_f1", "hamming_loss", "subset_accuracy", "genres_per_poster")


def test_probabilities(
    name: str, predictor: Predictor, paths: list[Path], store: Path | None
) -> tuple[np.ndarray, float | None]:
    """The model's probabilities for `paths` (and posters/s), or those saved in `store`."""
    saved = store / f"{name}_test.npz" if store else None
    if saved is not None and saved.is_file():
        data = np.load(saved)
        if list(data["paths"]) == [str(p) for p in paths]:
            return data["probs"], None
    started = time.perf_counter()
    _, probs, errors = predictor.local_engine.values(paths, True, 32, show=False)
    if errors:
        raise SystemExit(f"{name}: {len(errors)} test posters could not be read")
    seconds = time.perf_counter() - started
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        np.savez(saved, paths=np.array([str(p) for p in paths]), probs=probs)
    return probs, len(paths) / seconds


def with_intervals(
    score: Callable[[np.ndarray], dict[str, float]], n: int, boot: int, seed: int = 0
) -> dict[str, object]:
    """`score(rows)` on every test poster, and its 95% percentile bootstrap interval."""
    point = score(np.arange(n))
    rng = np.random.default_rng(seed)
    samples = [score(rng.integers(0, n, n)) for _ in range(boot)]
    result: dict[str, object] = {}
    for key, value in point.items():
        low, high = np.nanpercentile([s[key] for s in samples], [2.5, 97.5])
        result[key] = value
        result[f"{key}_95"] = [round(float(low), 4), round(float(high), 4)]
    return result


def model_rows(name: str, y: np.ndarray, probs: np.ndarray, predictor: Predictor, boot: int):
    """One row per threshold policy the card records."""
    card = predictor.card
    rows = []
    for policy in THRESHOLD_POLICIES:
        if policy != "card" and policy not in card.threshold_policies:
            continue
        thresholds = np.asarray(policy_thresholds(card, policy))

        def score(rows: np.ndarray, thresholds: np.ndarray = thresholds) -> dict[str, float]:
            point = operating_point(y[rows], probs[rows], thresholds)
            # paired with the no-genre answer on the same resample: is the model better?
            paired = point["hamming_loss"] - float(y[rows].mean())
            return {"map": mean_average_precision(y[rows], probs[rows]),
                    **{k: point[k] for k in KEYS}, "hamming_minus_no_genre": paired}  # fmt: skip

        rule = "one" if len(set(thresholds)) == 1 else "per genre"
        label = f"{policy} ({rule}: {thresholds.min():.2f}-{thresholds.max():.2f})"
        rows.append({"model": name, "policy": label, **with_intervals(score, len(y), boot)})
        print(rows[-1], flush=True)
    return rows


def baseline_rows(y: np.ndarray, genres: list[str], prevalence: np.ndarray, boot: int):
    """The answers that look at no poster, with the same intervals."""
    top2 = np.zeros_like(y)
    top2[:, np.argsort(-prevalence, kind="stable")[:2]] = 1
    common = no_skill_baselines(y, genres)["most_common_set"]["genres"]
    constant = np.array([[g in common for g in genres]] * len(y), dtype=np.int64)
    answers = {
        "no genre": np.zeros_like(y),
        "always " + " + ".join(genres[j] for j in np.argsort(-prevalence, kind="stable")[:2]): top2,
        f"always {' + '.join(common)} (test's most common set)": constant,
    }
    rows = []
    for label, answer in answers.items():

        def score(rows: np.ndarray, answer: np.ndarray = answer) -> dict[str, float]:
            point = operating_point(y[rows], answer[rows].astype(np.float64), 0.5)
            return {k: point[k] for k in KEYS}

        rows.append({"model": "baseline", "policy": label, **with_intervals(score, len(y), boot)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="imdb-20,imdb-20-fast")
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--probabilities", type=Path, help="reuse / save test probabilities")
    parser.add_argument("--name", default="multilabel_report")
    args = parser.parse_args()
    tune_allocator()
    data = require_data()
    sources = task_sources("imdb-20", data)
    collection = load_posters(
        labels=sources["labels"], images=sources["images"], splits=sources["splits"]
    )
    rows, sweeps, speed, y = [], {}, {}, None
    for name in args.models.split(","):
        predictor = Predictor.from_pretrained(name)
        targets = encode_targets(collection.split("test").records, list(predictor.genres), "multi")
        paths = [r.path for r in targets.records]
        probs, rate = test_probabilities(name, predictor, paths, args.probabilities)
        speed[name] = rate
        y = targets.y.astype(np.int64)
        rows += model_rows(name, y, probs, predictor, args.boot)
        sweeps[name] = threshold_sweep(y, probs)
        genres = list(predictor.genres)
        prevalence = np.array([predictor.card.training["train_prevalence"][g] for g in genres])
    assert y is not None
    rows += baseline_rows(y, genres, prevalence, args.boot)
    columns = ["model", "policy", "map", "micro_f1", "macro_f1", "hamming_loss",
               "hamming_loss_95", "hamming_minus_no_genre_95", "subset_accuracy",
               "subset_accuracy_95", "genres_per_poster"]  # fmt: skip
    print_table(rows, columns)
    print(f"\ntest posters: {len(y)}; true genres per poster {y.sum(1).mean():.3f}; "
          f"label density (no-genre Hamming loss) {y.mean():.4f}")  # fmt: skip
    for name, sweep in sweeps.items():
        print(f"\n{name}: one shared threshold swept")
        print_table(sweep, ["threshold", "micro_f1", "macro_f1", "genres_per_poster",
                            "hamming_loss"])  # fmt: skip
    payload = {"rows": rows, "sweeps": sweeps, "bootstrap": args.boot, "test": len(y),
               "true_genres_per_poster": float(y.sum(1).mean()),
               "label_density": float(y.mean()), "posters_per_s": speed,
               "no_genre": exact_and_labelwise(y, np.zeros_like(y))}  # fmt: skip
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
