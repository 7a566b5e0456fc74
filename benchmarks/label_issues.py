"""Likely mislabelled posters in the shared training split: how many cleanlab flags, which,
how long it takes, and how the probe's C was chosen (out-of-fold mAP).

    python benchmarks/label_issues.py [--c-grid 0.0001,0.0003,0.001] [--name label_issues]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import print_table, require_data, write_result

from postergenre._allocator import tune_allocator
from postergenre.curation.label_issues import find_label_issues, out_of_fold_probabilities
from postergenre.data.labels import load_posters
from postergenre.data.targets import encode_targets
from postergenre.evaluation.metrics import mean_average_precision
from postergenre.models import ModelCard
from postergenre.models.catalog import resolve_model
from postergenre.models.embeddings import compute_embeddings

KEPT = 200  # the least credible flagged posters written to the JSON (all of them: ~400 KB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c-grid", default="0.0001,0.0003,0.001,0.003")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--name", default="label_issues")
    args = parser.parse_args()
    tune_allocator()
    data = require_data()
    genres = list(ModelCard.read(resolve_model("imdb-20")).genres)
    records = load_posters(labels=data / "train.csv", splits=data / "splits.csv").split("train")
    arrays = compute_embeddings("efficientnet-lite0", [r.path for r in records.records])
    kept = [records.records[i] for i in arrays.ok]
    x = arrays[arrays.ok]
    y = encode_targets(kept, genres, "multi").y
    grid = []
    for c in (float(v) for v in args.c_grid.split(",")):
        started = time.perf_counter()
        probs = out_of_fold_probabilities(x, y, 5, 0, c=c)
        grid.append({"C": c, "oof_map": round(mean_average_precision(y, probs), 4),
                     "seconds": round(time.perf_counter() - started, 1)})  # fmt: skip
    print_table(grid, ["C", "oof_map", "seconds"])
    started = time.perf_counter()
    issues = find_label_issues(x, [r.genres for r in kept], np.ones(len(kept), bool), genres)
    seconds = time.perf_counter() - started
    flagged = [i for i in issues.ranked() if issues.flagged[i]]
    rows = [{"id": kept[i].id, "quality": round(float(issues.quality[i]), 3),
             "given": "|".join(g for g in kept[i].genres if g in genres),
             "suggested": "|".join(issues.suggested(i))} for i in flagged]  # fmt: skip
    share = len(flagged) / len(kept)
    print(f"\n{len(flagged)} of {len(kept)} flagged ({share:.1%}) in {seconds:.1f} s "
          f"(cleanlab import included); threshold {issues.threshold}\n")  # fmt: skip
    print_table(rows[: args.top], ["id", "quality", "given", "suggested"])
    payload = {"posters": len(kept), "genres": genres, "c_grid": grid, "flagged": len(flagged),
               "seconds": round(seconds, 1), "threshold": issues.threshold,
               "issues": rows[:KEPT], "issues_kept": KEPT}  # fmt: skip
    print(f"\nwrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
