"""The bundled model that reads poster text against the same model without text.

Both bundled models (default `imdb-20-text` against `imdb-20`: the same Lite0+1+2 image
features, the second also reading OCR text) predict the 20-genre val and test posters through
the `Predictor` (ONNX Runtime; the text comes from the OCR text cache, filled by training or by
an earlier run). Reported: mAP, micro and macro F1 at each card's threshold, ECE, and the paired
bootstrap interval (1,000 resamples of the posters) of the mAP gain on val (where the text
channel had to win to be kept) and test, plus test mAP by how many words OCR found.

    python benchmarks/text_model.py [--models imdb-20-text,imdb-20] [--name text_model]
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="imdb-20-text,imdb-20")
    parser.add_argument("--name", default="text_model")
    args = parser.parse_args()
    tune_allocator()
    started = time.perf_counter()
    with_text, without = (Predictor.from_pretrained(m) for m in args.models.split(","))
    sources = task_sources("imdb-20", require_data())
    collection = load_posters(**{k: sources[k] for k in ("labels", "images", "splits")})
    rows, gains, by_words = [], {}, []
    for split in ("val", "test"):
        targets = encode_targets(collection.split(split).records, with_text.genres, "multi")
        paths = [r.path for r in targets.records]
        probs = {}
        for predictor in (with_text, without):
            predictions = predictor.predict(paths, cache=True, progress_bar=False)
            assert len(predictions) == len(paths), "every poster must be predicted"
            probs[predictor.name] = predictions.probabilities
            summary = multi_label_summary(targets.y, probs[predictor.name],
                                          predictor.card.decide(probs[predictor.name]))  # fmt: skip
            rows.append({"split": split, "model": predictor.name, "posters": len(paths),
                         **summary})  # fmt: skip
        low, high = paired_bootstrap(
            "imdb20", targets.y, probs[with_text.name], probs[without.name]
        )
        gains[split] = {"low": round(low, 4), "high": round(high, 4)}
        rows[-2]["gain_95"] = [round(low, 4), round(high, 4)]
        if split == "test":
            texts, _ = PosterText(None, with_text.input_spec).load(paths, progress=False)
            words = np.array([len((t or "").replace("|", " ").split()) for t in texts])
            cut = int(np.median(words))
            for label, mask in ((f"<= {cut} words", words <= cut), (f"> {cut} words", words > cut)):
                by_words.append({"test posters": label, "n": int(mask.sum()), **{
                    name: round(mean_average_precision(targets.y[mask], p[mask]), 4)
                    for name, p in probs.items()}})  # fmt: skip
    columns = ["split", "model", "posters", "map", "gain_95", "micro_f1", "macro_f1", "ece",
               "predicted_per_poster", "true_per_poster", "inverted_share"]  # fmt: skip
    print_table(rows, columns)
    print()
    print_table(by_words, ["test posters", "n", *[p.name for p in (with_text, without)]])
    payload = {"rows": rows, "map_gain_95": gains, "by_words": by_words,
               "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
