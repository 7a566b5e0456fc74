"""Pretrained backbones on the shared splits: linear probe, k-NN and fine-tuning.

For each architecture x mode x task it trains on the train split (val for model selection and
thresholds) and reports test metrics, training time and prediction throughput (posters/s
through the saved bundle, decode cache warm). Tasks:
- `three`: Action / Comedy / Drama single-label (three_genre.csv; balanced 450-poster test);
- `imdb20`: multi-label over the 20 genres with >= 90 posters (train.csv + splits.csv).

    python benchmarks/backbones.py --archs efficientnet-lite0 --modes linear-probe,knn \
        --tasks three,imdb20 [--epochs 2] [--name backbones]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import print_table, require_data, write_result

from postergenre._allocator import tune_allocator
from postergenre.data.benchmark import task_sources
from postergenre.data.labels import load_posters
from postergenre.inference import Predictor
from postergenre.training.run import TrainConfig, train

TASK_NAMES = {"three": "three-genre", "imdb20": "imdb-20"}


def task_data(task: str, data: Path) -> dict[str, Any]:
    """Training arguments of a task (`three` or `imdb20`)."""
    if task not in TASK_NAMES:
        raise SystemExit(f"unknown task {task}; expected one of {', '.join(TASK_NAMES)}")
    return task_sources(TASK_NAMES[task], data)


def run_one(arch: str, mode: str, task: str, data: Path, work: Path, epochs: int) -> dict:
    out = work / f"{arch}-{mode}-{task}"
    shutil.rmtree(out, ignore_errors=True)
    args = task_data(task, data)
    cfg = TrainConfig(
        out=out,
        arch=arch,
        mode=None if arch.startswith("knn") else mode,
        epochs=epochs,
        patience=max(2, epochs),
        progress=False,
        **args,
    )
    started = time.perf_counter()
    bundle = train(cfg)
    train_seconds = time.perf_counter() - started
    test = load_posters(
        labels=args["labels"], images=args["images"], splits=args.get("splits")
    ).split("test")
    predictor = Predictor.from_pretrained(bundle, runtime="torch")
    predictor.predict([r.path for r in test.records[:32]], progress_bar=False)  # warm-up
    started = time.perf_counter()
    metrics = predictor.evaluate(test.records, progress_bar=False)
    throughput = len(test.records) / (time.perf_counter() - started)
    meta = json.loads((bundle / "model.json").read_text())
    row = {
        "arch": arch,
        "mode": mode,
        "task": task,
        "n_test": metrics["n"],
        "train_seconds": train_seconds,
        "posters_per_s": throughput,
        "chosen": {k: meta["training"].get(k) for k in ("C", "k", "best_epoch")},
    }
    if metrics["task"] == "single":
        row.update(
            accuracy=metrics["accuracy"],
            balanced_accuracy=metrics["balanced_accuracy"],
            macro_f1=metrics["macro_f1"],
            val_accuracy=meta["metrics"]["val"]["accuracy"],
        )
    else:
        row.update(
            map=metrics["map"],
            micro_f1=metrics["micro_f1"],
            macro_f1=metrics["macro_f1"],
            samples_f1=metrics["samples_f1"],
            micro_f1_at_05=metrics["at_0.5"]["micro_f1"],
            macro_f1_at_05=metrics["at_0.5"]["macro_f1"],
            val_map=meta["metrics"]["val"]["map"],
            baseline_top2_micro_f1=metrics["baselines"]["top2_genres"]["micro_f1"],
            baseline_frequency_map=metrics["baselines"]["frequency_score"]["map"],
        )
    print(json.dumps({k: v for k, v in row.items()}), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="efficientnet-lite0")
    parser.add_argument("--modes", default="linear-probe,knn")
    parser.add_argument("--tasks", default="three,imdb20")
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs")
    parser.add_argument("--name", default="backbones", help="results/NAME.json")
    parser.add_argument("--keep", type=Path, help="keep run folders here")
    args = parser.parse_args()
    tune_allocator()
    data = require_data()
    work = args.keep or Path(tempfile.mkdtemp(prefix="backbones-"))
    rows = []
    for task in args.tasks.split(","):
        for arch in args.archs.split(","):
            for mode in args.modes.split(","):
                if mode == "knn":
                    arch_name = "knn" if arch.endswith("lite0") else f"knn-{arch.split('-')[-1]}"
                    rows.append(run_one(arch_name, "knn", task, data, work, args.epochs))
                else:
                    rows.append(run_one(arch, mode, task, data, work, args.epochs))
    single = [r for r in rows if r["task"] == "three"]
    multi = [r for r in rows if r["task"] == "imdb20"]
    if single:
        print_table(
            single,
            [
                "arch",
                "mode",
                "accuracy",
                "balanced_accuracy",
                "macro_f1",
                "val_accuracy",
                "train_seconds",
                "posters_per_s",
            ],
        )
    if multi:
        print()
        print_table(
            multi,
            [
                "arch",
                "mode",
                "map",
                "micro_f1",
                "macro_f1",
                "samples_f1",
                "micro_f1_at_05",
                "val_map",
                "train_seconds",
                "posters_per_s",
            ],
        )
    print(f"\nwrote {write_result(args.name, {'rows': rows})}")


if __name__ == "__main__":
    main()
