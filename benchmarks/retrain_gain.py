"""What retraining from corrections gains: a Lite0 probe fitted on half of the training
split's labels, then retrained from "corrections" (`postergenre train --labels
corrections.csv [--init-from half]`), everything scored on the test split over the 20 genres
of imdb-20, with paired bootstrap intervals of each gain over the half model.

Arms: the half model (train half A, val split for C, calibration and threshold); the full
training split as corrections, with and without `--init-from half` (a seeded 10% of the
corrections held out, as a corrections file has no split); 1,000 corrections drawn from the
other half B, with and without `--init-from half`, each timed as a whole command.

Test probabilities come from the cached embeddings and each bundle's head (a linear-head
bundle is exactly the frozen backbone and that head), so the 1,085 test posters are not
re-embedded per arm.

    python benchmarks/retrain_gain.py [--boot 1000] [--name retrain_gain]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import REPO, multi_label_summary, print_table, require_data, write_result
from safetensors.torch import load_file

from postergenre._allocator import tune_allocator
from postergenre.data.labels import load_posters
from postergenre.data.targets import encode_targets
from postergenre.evaluation.metrics import mean_average_precision
from postergenre.models import ModelCard
from postergenre.models.catalog import resolve_model
from postergenre.models.embeddings import compute_embeddings

ARCH = "efficientnet-lite0"
HEADLINE = ("map", "micro_f1", "macro_f1", "ece")


def write_labels(path: Path, records, split: str | None = None, reviewed: bool = False) -> Path:
    """A label file of `records` with absolute paths: `id,path,genres[,split]`, or the
    corrections layout (`id,path,title,genres,reviewed,reviewed_at`, every row reviewed)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        if reviewed:
            writer.writerow(["id", "path", "title", "genres", "reviewed", "reviewed_at"])
            for r in records:
                writer.writerow([r.id, r.path, "", "|".join(r.genres), 1, "2026-12-03T10:00:00Z"])
        else:
            writer.writerow(["id", "path", "genres", "split"])
            for r in records:
                writer.writerow(
                    [r.id, r.path, "|".join(r.genres), r.split if split is None else split]
                )
    return path


def train_command(labels: Path, out: Path, genres: list[str], init: Path | None) -> float:
    """Run `postergenre train` as a user would; returns its wall-clock seconds."""
    argv = [sys.executable, "-m", "postergenre", "train", "--labels", str(labels), "--arch",
            ARCH, "--task", "multi", "--out", str(out)]  # fmt: skip
    argv += ["--init-from", str(init)] if init is not None else ["--genres", ",".join(genres)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def test_probabilities(bundle: Path, x: np.ndarray, genres: list[str]) -> tuple[np.ndarray, float]:
    """Probabilities of the 20 genres from a linear-head bundle on embeddings, and its
    threshold (one shared threshold: calibrated models)."""
    card = ModelCard.read(resolve_model(bundle))
    head = load_file(str(resolve_model(bundle) / "model.safetensors"))
    logits = x @ head["classifier.weight"].numpy().T + head["classifier.bias"].numpy()
    order = [card.genres.index(g) for g in genres]
    thresholds = np.asarray(card.thresholds)[order]
    return 1 / (1 + np.exp(-logits[:, order])), thresholds


def scores(y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    from sklearn.metrics import f1_score

    predicted = probs >= thresholds
    return np.array([
        mean_average_precision(y, probs),
        f1_score(y, predicted, average="micro", zero_division=0),
        f1_score(y, predicted, average="macro", zero_division=0),
    ])  # fmt: skip


def paired_gain(y, new, base, boot: int) -> list[list[float]]:
    """95% intervals of (mAP, micro F1, macro F1) of `new` minus `base`, posters resampled."""
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(boot):
        idx = rng.integers(0, len(y), len(y))
        if (y[idx].sum(0) == 0).any():
            continue
        diffs.append(scores(y[idx], new[0][idx], new[1]) - scores(y[idx], base[0][idx], base[1]))
    low, high = np.percentile(np.array(diffs), [2.5, 97.5], axis=0)
    return [[round(float(a), 4), round(float(b), 4)] for a, b in zip(low, high, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--name", default="retrain_gain")
    parser.add_argument("--limit", type=int, help="a quick check: the first N posters per split")
    args = parser.parse_args()
    tune_allocator()
    data = require_data()
    genres = list(ModelCard.read(resolve_model("imdb-20-fast")).genres)
    posters = load_posters(labels=data / "train.csv", splits=data / "splits.csv")
    train, val, test = (posters.split(s).records[: args.limit] for s in ("train", "val", "test"))
    # Every poster's embedding once, through the cache every command below reads.
    compute_embeddings(ARCH, [r.path for r in train + val + test], progress=True)
    order = np.random.default_rng(0).permutation(len(train))
    half_a = [train[i] for i in sorted(order[: len(train) // 2])]
    half_b = [train[i] for i in sorted(order[len(train) // 2 :])]
    draw = np.random.default_rng(1).choice(len(half_b), min(1000, len(half_b)), replace=False)
    thousand = [half_b[i] for i in sorted(draw)]
    targets = encode_targets(test, genres, "multi")
    x_test = compute_embeddings(ARCH, [r.path for r in targets.records], progress=False)
    assert len(x_test.ok) == len(targets.records)
    x_test, y_test = x_test[x_test.ok], targets.y

    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="retrain-gain-") as tmp:
        work = Path(tmp)
        half_csv = write_labels(work / "half.csv", half_a + val)
        full = write_labels(work / "full.csv", train, reviewed=True)
        some = write_labels(work / "k.csv", thousand, reviewed=True)
        arms = [
            ("half A (train) + val", half_csv, None),
            ("full train as corrections", full, None),
            ("full train as corrections, --init-from half", full, "half"),
            ("1,000 corrections from half B", some, None),
            ("1,000 corrections, --init-from half", some, "half"),
        ]
        for i, (label, labels, init) in enumerate(arms):
            out = work / f"arm{i}"
            seconds = train_command(labels, out, genres, work / "arm0" if init else None)
            card = ModelCard.read(out / "model")
            results[label] = test_probabilities(out, x_test, genres)
            summary = multi_label_summary(
                y_test, results[label][0], results[label][0] >= results[label][1]
            )
            row = {"arm": label, "fitted on": card.training["splits"]["train"],
                   "held out": card.training["splits"]["val"], "C": card.training.get("C"),
                   "seconds": round(seconds, 1),
                   **{k: round(summary[k], 4) for k in HEADLINE}}  # fmt: skip
            if i:
                gain = paired_gain(y_test, results[label], results[arms[0][0]], args.boot)
                row.update({"map gain 95%": gain[0], "micro gain 95%": gain[1],
                            "macro gain 95%": gain[2]})  # fmt: skip
            if init:
                row["kept from init"] = card.training["init_from"]["kept_genres"]
            rows.append(row)
            print(f"{label}: {seconds:.1f} s", file=sys.stderr)
    columns = ["arm", "fitted on", "held out", "C", "seconds", "map", "map gain 95%", "micro_f1",
               "micro gain 95%", "macro_f1", "macro gain 95%", "ece"]  # fmt: skip
    print_table(rows, columns)
    path = write_result(args.name, {"test_posters": len(y_test), "genres": genres, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
