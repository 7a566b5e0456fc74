"""A bundled model that reads poster text against other models, on the same posters.

The first of `--models` (default: the bundled `imdb-20-text`) against each of the others (a
bundled name or a bundle folder: e.g. the previous `imdb-20-text`, and `imdb-20`, the same
image features without text) on the shared val and test posters, through the `Predictor`
(ONNX Runtime; the text from the OCR text cache at each model's own OCR setting, read where
missing). Reported: mAP, micro and macro F1 at each card's threshold, ECE, the paired bootstrap
interval (1,000 resamples of the posters) of the first model's mAP gain over each other model,
test mAP by how many words OCR found, and the time of one poster end to end (decode, OCR, the
model: `Predictor.predict` of one file, no cache) over `--latency` test posters.

    python benchmarks/text_model.py [--models imdb-20-text,OLD_BUNDLE,imdb-20] [--splits val,test]
        [--latency 60] [--limit N] [--name text_model]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from _common import multi_label_summary, print_table, require_data, write_result
from ensemble_probe import paired_bootstrap

from postergenre._allocator import tune_allocator
from postergenre.data.benchmark import task_sources
from postergenre.data.labels import load_posters
from postergenre.data.targets import encode_targets
from postergenre.data.text import PosterText
from postergenre.evaluation.metrics import mean_average_precision
from postergenre.inference import Predictor


def latency(predictor: Predictor, paths: list, warm: int = 3) -> dict[str, float]:
    """p50 / p90 ms of one poster end to end (decode, OCR, model), one call per poster."""
    for path in paths[:warm]:
        predictor.predict([path], cache=False, progress_bar=False)
    times = []
    for path in paths:
        started = time.perf_counter()
        predictor.predict([path], cache=False, progress_bar=False)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(statistics.median(times), 1),
            "p90_ms": round(float(np.percentile(times, 90)), 1), "posters": len(times)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="imdb-20-text,imdb-20")
    parser.add_argument("--splits", default="val,test")
    parser.add_argument("--latency", type=int, default=60, help="test posters timed (0: none)")
    parser.add_argument("--limit", type=int, default=0, help="first N posters of each split only "
                        "(a quick check of the script; 0: all)")  # fmt: skip
    parser.add_argument("--name", default="text_model")
    args = parser.parse_args()
    tune_allocator()
    started = time.perf_counter()
    predictors = [Predictor.from_pretrained(m, runtime="onnx") for m in args.models.split(",")]
    names = [f"{p.name} ({m})" if m != p.name else p.name
             for p, m in zip(predictors, args.models.split(","), strict=True)]  # fmt: skip
    first = predictors[0]
    sources = task_sources("imdb-20", require_data())
    collection = load_posters(**{k: sources[k] for k in ("labels", "images", "splits")})
    rows, gains, by_words, timing = [], {}, [], {}
    for split in args.splits.split(","):
        records = collection.split(split).records
        targets = encode_targets(records[: args.limit or len(records)], first.genres, "multi")
        paths = [r.path for r in targets.records]
        probs = {}
        for name, predictor in zip(names, predictors, strict=True):
            predictions = predictor.predict(paths, cache=True, progress_bar=False)
            assert len(predictions) == len(paths), "every poster must be predicted"
            probs[name] = predictions.probabilities
            summary = multi_label_summary(targets.y, probs[name],
                                          predictor.card.decide(probs[name]))  # fmt: skip
            rows.append({"split": split, "model": name, "posters": len(paths), **summary})
        for name in names[1:]:
            low, high = paired_bootstrap("imdb20", targets.y, probs[names[0]], probs[name])
            gains[f"{split}: {names[0]} - {name}"] = [round(low, 4), round(high, 4)]
        if split == "test":
            texts, _ = PosterText(None, first.input_spec, first.card.text.ocr).load(
                paths, progress=False
            )
            words = np.array([len((t or "").replace("|", " ").split()) for t in texts])
            cut = int(np.median(words))
            for label, mask in ((f"<= {cut} words", words <= cut), (f"> {cut} words", words > cut)):
                by_words.append({"test posters": label, "n": int(mask.sum()), **{
                    name: round(mean_average_precision(targets.y[mask], p[mask]), 4)
                    for name, p in probs.items()}})  # fmt: skip
            if args.latency:
                timed = paths[: args.latency]
                timing = {n: latency(p, timed) for n, p in zip(names, predictors, strict=True)}
    columns = ["split", "model", "posters", "map", "micro_f1", "macro_f1", "ece",
               "predicted_per_poster", "true_per_poster", "inverted_share"]  # fmt: skip
    print_table(rows, columns)
    print()
    print_table([{"comparison": k, "map_gain_95": v} for k, v in gains.items()],
                ["comparison", "map_gain_95"])  # fmt: skip
    print()
    print_table(by_words, ["test posters", "n", *names])
    if timing:
        print()
        print_table([{"model": n, **t} for n, t in timing.items()],
                    ["model", "p50_ms", "p90_ms", "posters"])  # fmt: skip
    payload = {"rows": rows, "map_gain_95": gains, "by_words": by_words, "latency": timing,
               "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
