"""A model against the one it replaces, on the same test posters: paired bootstrap intervals.

Both models predict their task's test split through `Predictor.predict` (the default runtime,
ONNX Runtime; decoding included and timed, so the throughput column is posters per second end
to end, in this process, one after the other). Reported for each: mAP, micro and macro F1 at
the card's thresholds, predicted genres per poster (multi-label), or accuracy (single-label);
then the 95% interval of new minus old for each metric from 1,000 resamples of the posters.

    python benchmarks/paired_gain.py --old /tmp/imdb-20-fast-before --new imdb-20-fast \\
        --task imdb-20 [--name paired_imdb-20-fast]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import print_table, require_data, write_result
from sklearn.metrics import f1_score

from postergenre._allocator import tune_allocator
from postergenre.data.benchmark import task_sources
from postergenre.data.labels import load_posters
from postergenre.data.targets import encode_targets
from postergenre.evaluation.metrics import mean_average_precision
from postergenre.inference import Predictor

BOOT = 1000


def metrics(task: str, y: np.ndarray, probs: np.ndarray, predicted: np.ndarray) -> dict:
    if task == "single":
        return {"accuracy": float((probs.argmax(1) == y).mean())}
    return {
        "map": mean_average_precision(y, probs),
        "micro_f1": float(f1_score(y, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y, predicted, average="macro", zero_division=0)),
        "genres_per_poster": float(predicted.sum(1).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True)
    parser.add_argument("--new", required=True)
    parser.add_argument("--task", default="imdb-20", choices=("imdb-20", "three-genre"))
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    tune_allocator()
    sources = task_sources(args.task, require_data())
    collection = load_posters(**{k: sources[k] for k in ("labels", "images", "splits")})
    rows, outputs = [], {}
    for label, name in (("old", args.old), ("new", args.new)):
        predictor = Predictor.from_pretrained(name)
        test = collection.split("test").records
        targets = encode_targets(test, predictor.genres, predictor.task)
        paths = [r.path for r in targets.records]
        predictor.predict(paths[:8], progress_bar=False)  # warm up (graph, thread pools)
        started = time.perf_counter()
        probs = predictor.predict(paths, progress_bar=False).probabilities
        seconds = time.perf_counter() - started
        predicted = predictor.card.decide(probs)
        outputs[label] = (targets.y, probs, predicted, predictor.task)
        rows.append({"model": f"{label}: {name}", "posters": len(paths),
                     **metrics(predictor.task, targets.y, probs, predicted),
                     "posters_per_s": round(len(paths) / seconds, 1)})  # fmt: skip
    y, old_probs, old_pred, task = outputs["old"]
    _, new_probs, new_pred, _ = outputs["new"]
    rng = np.random.default_rng(0)
    diffs: dict[str, list[float]] = {}
    for _ in range(BOOT):
        idx = rng.integers(0, len(y), len(y))
        if task == "multi" and (y[idx].sum(0) == 0).any():
            continue
        a = metrics(task, y[idx], new_probs[idx], new_pred[idx])
        b = metrics(task, y[idx], old_probs[idx], old_pred[idx])
        for key in a:
            diffs.setdefault(key, []).append(a[key] - b[key])
    gains = {k: [round(float(v), 4) for v in np.percentile(d, [2.5, 97.5])]
             for k, d in diffs.items()}  # fmt: skip
    rows.append({"model": "new - old, 95%", **{k: str(v) for k, v in gains.items()}})
    print_table(rows, list(rows[0]))
    name = args.name or f"paired_{args.task}"
    print(f"wrote {write_result(name, {'args': vars(args), 'rows': rows, 'gains_95': gains})}")


if __name__ == "__main__":
    main()
