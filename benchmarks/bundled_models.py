"""The bundled models on their test splits, with 95% bootstrap intervals.

Each bundled model predicts its task's test posters through the default runtime (ONNX
Runtime; a model that reads text takes it from the OCR text cache); the script reports the
headline metrics at the card's stored thresholds, ECE (15 bins), predicted against true genres
per poster and the share of posters with a predicted genre less probable than a non-predicted
one, each with a 95% interval from 1,000 bootstrap resamples of the test posters. The card's
single-poster latency (measured when the model was built) is listed beside them.

    python benchmarks/bundled_models.py [--models imdb-20,three-genre] [--name bundled_models]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import multi_label_summary, print_table, require_data, write_result

from postergenre._allocator import tune_allocator
from postergenre.data.benchmark import task_sources
from postergenre.data.labels import load_posters
from postergenre.data.targets import encode_targets
from postergenre.evaluation.metrics import calibration
from postergenre.inference import Predictor, bundled_models

BOOT = 1000


def task_of(predictor: Predictor) -> str:
    return "three-genre" if predictor.task == "single" else "imdb-20"


def headline(task: str, y: np.ndarray, probs: np.ndarray, predictor: Predictor) -> dict:
    if task == "single":
        top = probs.argmax(1)
        return {
            "accuracy": float((top == y).mean()),
            "ece": calibration(probs.max(1), top == y)["ece"],
        }
    return multi_label_summary(y, probs, predictor.card.decide(probs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(bundled_models()))
    parser.add_argument("--name", default="bundled_models")
    args = parser.parse_args()
    tune_allocator()
    data = require_data()
    rows = []
    for name in args.models.split(","):
        predictor = Predictor.from_pretrained(name)
        sources = task_sources(task_of(predictor), data)
        collection = load_posters(
            labels=sources["labels"], images=sources["images"], splits=sources["splits"]
        )
        targets = encode_targets(collection.split("test").records, list(predictor.genres),
                                 predictor.task)  # fmt: skip
        started = time.perf_counter()
        # A model that reads text takes it from the OCR text cache (filled when it was built):
        # its posters/s then leave OCR out (about 1 s per poster per core; BENCHMARKS.md).
        predictions = predictor.predict([r.path for r in targets.records], progress_bar=False,
                                        cache=predictor.card.reads_text)  # fmt: skip
        seconds = time.perf_counter() - started
        probs, y = predictions.probabilities, targets.y
        point = headline(predictor.task, y, probs, predictor)
        rng = np.random.default_rng(0)
        samples: dict[str, list[float]] = {k: [] for k in point}
        for _ in range(BOOT):
            idx = rng.integers(0, len(y), len(y))
            for key, value in headline(predictor.task, y[idx], probs[idx], predictor).items():
                samples[key].append(value)
        row = {"model": name, "architecture": predictor.card.architecture, "test": len(y),
               "text": "OCR, cached" if predictor.card.reads_text else "",
               "posters_per_s": round(len(y) / seconds, 1),
               "p50_ms": (predictor.card.metrics.get("latency") or {}).get("p50_ms")}  # fmt: skip
        for key, value in point.items():
            low, high = np.nanpercentile(samples[key], [2.5, 97.5])
            row[key] = value
            row[f"{key}_95"] = [round(float(low), 4), round(float(high), 4)]
        rows.append(row)
        print(row, flush=True)
    single = ["model", "architecture", "test", "accuracy", "accuracy_95", "ece", "ece_95",
              "p50_ms"]  # fmt: skip
    multi = ["model", "architecture", "test", "map", "map_95", "micro_f1", "micro_f1_95",
             "macro_f1", "macro_f1_95", "ece", "ece_95", "predicted_per_poster",
             "true_per_poster", "inverted_share", "p50_ms"]  # fmt: skip
    for columns in (single, multi):
        chosen = [r for r in rows if columns[3] in r]
        if chosen:
            print_table(chosen, columns)
            print()
    print(f"wrote {write_result(args.name, {'rows': rows, 'bootstrap': BOOT})}")


if __name__ == "__main__":
    main()
