"""Record the threshold policies of the bundled multi-label models, chosen on validation.

Models trained with this version record `threshold_policies` (`shared`, `per-genre`) in their
card when they are trained; the bundled ones were built before, so this script adds them: it
predicts the shared set's validation split (never test) with each model, chooses the policies'
thresholds there with the training code's own function, checks that `shared` reproduces the
card's own shared threshold, and rewrites the card (atomically). The weights do not change.

    python scripts/record_threshold_policies.py [--data DIR] [--only imdb-20,imdb-20-fast]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from postergenre._allocator import tune_allocator
from postergenre.data.benchmark import task_sources
from postergenre.data.labels import load_posters
from postergenre.data.targets import encode_targets
from postergenre.evaluation.thresholds import threshold_policies
from postergenre.inference import Predictor
from postergenre.models.card import ModelCard
from postergenre.models.catalog import BUNDLED_DIR

REPO = Path(__file__).resolve().parent.parent
# imdb-20-text is left out: reading the text of 1,086 validation posters by OCR takes about
# 20 minutes on two cores; it keeps its own (shared) thresholds only.
MODELS = ("imdb-20", "imdb-20-fast")


def record(name: str, y_val: np.ndarray, val_probs: np.ndarray) -> dict[str, list[float]]:
    """Choose every policy on (y_val, val_probs) and write them into the bundled card."""
    folder = BUNDLED_DIR / name
    card = ModelCard.read(folder)
    policies = threshold_policies(y_val, val_probs)
    if np.abs(policies["shared"] - np.asarray(card.thresholds)).max() > 1e-6:
        raise SystemExit(
            f"{name}: the shared threshold on val ({policies['shared'][0]:.2f}) is not the "
            f"card's ({card.thresholds[0]:.2f}); were these the model's validation posters?"
        )
    recorded = {p: tuple(round(float(t), 6) for t in v) for p, v in policies.items()}
    card.replace(threshold_policies=recorded).write(folder)
    return {p: list(v) for p, v in recorded.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/imdb-posters-7k")
    parser.add_argument("--only", default=",".join(MODELS))
    args = parser.parse_args()
    tune_allocator()
    sources = task_sources("imdb-20", args.data)
    collection = load_posters(
        labels=sources["labels"], images=sources["images"], splits=sources["splits"]
    )
    records = collection.split("val").records
    for name in args.only.split(","):
        predictor = Predictor.from_pretrained(name)
        ok, probs, errors = predictor.local_engine.values([r.path for r in records], True, 32)
        if errors:
            raise SystemExit(f"{name}: {len(errors)} validation posters could not be read")
        targets = encode_targets([records[i] for i in ok], list(predictor.genres), "multi")
        recorded = record(name, targets.y, probs)
        print(name, {p: sorted(set(v))[:3] for p, v in recorded.items()})


if __name__ == "__main__":
    main()
