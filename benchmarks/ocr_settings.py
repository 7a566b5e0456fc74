"""What each OCR setting costs and what it gives: per-poster OCR time and a text model's mAP.

On `--posters` validation posters (a fixed random sample of the shared val split), each OCR
setting (`det_side/max_boxes`: the detector's input, the poster's short side scaled to
`det_side`; recognise only the `max_boxes` largest boxes, 0 = all) reads every poster once in
this process, one ONNX Runtime thread: p50 of the OCR time per poster (detection and
recognition apart), boxes read, posters with no text. Then `--model` (a model that reads text)
predicts the same posters from each setting's text: mAP on the sample and the paired bootstrap
interval (1,000 resamples of the posters; each resample's mAP over the genres it has positives
for, as `mean_average_precision` does: a small sample lacks some rare genres) of its difference
from the first setting's. The model is fitted on
texts of one setting, so the others show what changing only the reading costs it.

    python benchmarks/ocr_settings.py [--posters 160] [--model imdb-20-text]
        [--settings 736/0,448/0,320/0,224/0,320/4,224/4] [--name ocr_settings]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from _common import print_table, require_data, write_result

from postergenre.data.benchmark import task_sources
from postergenre.data.labels import load_posters
from postergenre.data.preprocess import load_poster_array
from postergenre.data.targets import encode_targets
from postergenre.data.text import OcrSetting, read_text
from postergenre.evaluation.metrics import mean_average_precision
from postergenre.inference import Predictor

SETTINGS = "736/0,448/0,320/0,224/0,320/4,224/4"


def paired_map_gain(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """95% interval of mAP(a) - mAP(b) over posters resampled with replacement."""
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(1000):
        idx = rng.integers(0, len(y), len(y))
        score = mean_average_precision
        diffs.append(score(y[idx], a[idx]) - score(y[idx], b[idx]))
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def _timed_read(pixels: np.ndarray, ocr: OcrSetting) -> tuple[str, float]:
    started = time.perf_counter()
    found = read_text(pixels, ocr)
    return found, (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posters", type=int, default=160)
    parser.add_argument("--model", default="imdb-20-text")
    parser.add_argument("--settings", default=SETTINGS)
    parser.add_argument("--name", default="ocr_settings")
    args = parser.parse_args()
    predictor = Predictor.from_pretrained(args.model)
    sources = task_sources("imdb-20", require_data())
    collection = load_posters(**{k: sources[k] for k in ("labels", "images", "splits")})
    targets = encode_targets(collection.split("val").records, predictor.genres, "multi")
    pick = np.sort(np.random.default_rng(0).choice(len(targets.records), args.posters, False))
    y = targets.y[pick]
    pixels = np.stack([load_poster_array(targets.records[i].path, predictor.input_spec)
                       for i in pick])  # fmt: skip
    rows, probs = [], {}
    for setting in args.settings.split(","):
        side, boxes = (int(v) for v in setting.split("/"))
        ocr = OcrSetting(side, boxes)
        _timed_read(pixels[0], ocr)  # the first call loads the OCR models
        texts, times = zip(*(_timed_read(p, ocr) for p in pixels), strict=True)
        probs[setting] = predictor.predict_pixels(pixels, texts=list(texts))
        words = [len(t.replace("|", " ").split()) for t in texts]
        rows.append({"setting": setting, "ocr_p50_ms": round(statistics.median(times), 1),
                     "ocr_p90_ms": round(float(np.percentile(times, 90)), 1),
                     "median_words": float(np.median(words)),
                     "no_text": sum(not t for t in texts),
                     "map": round(mean_average_precision(y, probs[setting]), 4)})  # fmt: skip
        first = next(iter(probs))
        if setting != first:
            low, high = paired_map_gain(y, probs[setting], probs[first])
            rows[-1]["gain_vs_first_95"] = [round(low, 4), round(high, 4)]
        print(rows[-1], flush=True)
    print_table(rows, ["setting", "ocr_p50_ms", "ocr_p90_ms", "median_words", "no_text", "map",
                       "gain_vs_first_95"])  # fmt: skip
    image_only = predictor.predict_pixels(pixels, texts=[""] * len(pixels))
    payload = {"model": predictor.name, "posters": len(pick), "rows": rows,
               "map_without_text": round(mean_average_precision(y, image_only), 4)}  # fmt: skip
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
