"""Reproduce the article: the faithful seed CNN on the three-genre task (Action/Comedy/Drama).

Trains on the train split of three_genre.csv with early stopping on val, then reports accuracy
on the balanced 450-poster test split, per-genre recall, seconds per epoch and total time.
Two variants: `faithful` (no class balancing, no augmentation: the article's recipe) and
`balanced` (class-weighted loss and light augmentation: our default).

    python benchmarks/reproduce_article.py [--epochs 40] [--variants faithful,balanced]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from pathlib import Path

from _common import print_table, require_data, write_result

from postergenre._allocator import tune_allocator
from postergenre.data.labels import load_posters
from postergenre.inference import Predictor
from postergenre.training.run import TrainConfig, train

VARIANTS = {
    "faithful": {"balance": "none", "augment": False},
    "balanced": {"balance": "weights", "augment": True},
}


def run_variant(name: str, data: Path, epochs: int, patience: int, seed: int, work: Path) -> dict:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    cfg = TrainConfig(
        out=out,
        arch="seed-cnn",
        labels=data / "three_genre.csv",
        images=data / "images",
        genres=["Action", "Comedy", "Drama"],
        epochs=epochs,
        patience=patience,
        seed=seed,
        **VARIANTS[name],
    )
    bundle = train(cfg)
    total = time.perf_counter() - started
    with (out / "history.csv").open() as handle:
        history = list(csv.DictReader(handle))
    test = load_posters(labels=data / "three_genre.csv", images=data / "images").split("test")
    metrics = Predictor.from_pretrained(bundle, runtime="torch").evaluate(
        test.records, progress_bar=False
    )
    return {
        "variant": name,
        "epochs_run": len(history),
        "best_epoch": max(history, key=lambda r: float(r["val_balanced_accuracy"]))["epoch"],
        "train_accuracy_best": None,
        "test_accuracy": metrics["accuracy"],
        "test_balanced_accuracy": metrics["balanced_accuracy"],
        "test_macro_f1": metrics["macro_f1"],
        **{f"recall_{g}": metrics["per_genre"][g]["recall"] for g in ("Action", "Comedy", "Drama")},
        "seconds_total": total,
        "history": history,
        "n_test": metrics["n"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="faithful,balanced")
    parser.add_argument("--keep", type=Path, help="keep run folders here (default: temporary)")
    args = parser.parse_args()
    tune_allocator()
    data = require_data()
    work = args.keep or Path(tempfile.mkdtemp(prefix="reproduce-article-"))
    rows = []
    for name in args.variants.split(","):
        row = run_variant(name, data, args.epochs, args.patience, args.seed, work)
        seconds = [float(r["seconds"]) for r in row["history"]]
        row["seconds_per_epoch"] = sum(seconds) / len(seconds)
        best = next(r for r in row["history"] if r["epoch"] == row["best_epoch"])
        row["train_accuracy_best"] = float(best["train_accuracy"])
        rows.append(row)
    columns = [
        "variant",
        "epochs_run",
        "best_epoch",
        "train_accuracy_best",
        "test_accuracy",
        "test_balanced_accuracy",
        "test_macro_f1",
        "recall_Action",
        "recall_Comedy",
        "recall_Drama",
        "seconds_per_epoch",
        "seconds_total",
    ]
    print_table(rows, columns)
    path = write_result(
        "reproduce_article",
        {"seed": args.seed, "epochs": args.epochs, "patience": args.patience, "rows": rows},
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
