"""What the checks of "right or refused" cost: single-poster latency and bulk throughput of
`Predictor.predict` with the code of two source trees, alternated in fresh processes.

Each round runs this script once per tree as a child (`--child`, with PYTHONPATH set to that
tree's `src/`): the child times `--single` posters one at a time (decode included, after a
warm-up; p50) and then `--bulk` posters in one `predict` call (posters/s, decoding in the
default worker processes). The rounds alternate A B A B so drift of a shared machine hits both;
the table gives each tree's median over rounds and the per-round ratio B/A.

    python benchmarks/check_cost.py --a /path/to/old/checkout --b . --model imdb-20-fast
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import print_table, require_data, write_result


def child(model: str, single: int, bulk: int) -> dict[str, float]:
    """Timings with whatever `postergenre` this process imports."""
    from postergenre.inference import Predictor

    data = require_data()
    posters = sorted((data / "images").glob("*.jpg"))
    predictor = Predictor.from_pretrained(model)
    predictor.predict(posters[:3])  # warm-up: runner, threads, first allocations
    latencies = []
    for path in posters[3 : 3 + single]:
        started = time.perf_counter()
        predictor.predict([path])
        latencies.append(time.perf_counter() - started)
    batch = posters[1000 : 1000 + bulk]
    started = time.perf_counter()
    predictions = predictor.predict(batch)
    seconds = time.perf_counter() - started
    assert len(predictions) == len(batch), "every shared poster is readable"
    return {"p50_ms": 1000 * statistics.median(latencies), "posters_per_s": len(batch) / seconds}


def run_tree(tree: Path, args: argparse.Namespace, cache: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "POSTERGENRE_CACHE": str(cache)}
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--model", args.model,
         "--single", str(args.single), "--bulk", str(args.bulk)],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, help="reference source tree (before the checks)")
    parser.add_argument("--b", type=Path, default=Path("."), help="tree under test (default .)")
    parser.add_argument("--model", default="imdb-20-fast")
    parser.add_argument("--single", type=int, default=40, help="posters timed one at a time")
    parser.add_argument("--bulk", type=int, default=512, help="posters of the bulk call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--name", default="check_cost", help="results/NAME.json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.single, args.bulk)))
        return
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory() as tmp:
        caches = {k: Path(tmp) / k for k in trees}  # each tree exports its own graph once
        for _ in range(args.rounds):
            for key, tree in trees.items():
                runs[key].append(run_tree(tree, args, caches[key]))
    rows: list[dict[str, Any]] = []
    for metric in ("p50_ms", "posters_per_s"):
        a = [r[metric] for r in runs["A"]]
        b = [r[metric] for r in runs["B"]]
        ratios = [y / x for x, y in zip(a, b, strict=True)]
        rows.append({"metric": metric, "A median": round(statistics.median(a), 2),
                     "B median": round(statistics.median(b), 2),
                     "B/A per round": " ".join(f"{r:.3f}" for r in ratios),
                     "B/A median": round(statistics.median(ratios), 3)})  # fmt: skip
    print(f"{args.model}: A = {trees['A']}, B = {trees['B']}, {args.rounds} rounds")
    print_table(rows, ["metric", "A median", "B median", "B/A per round", "B/A median"])
    path = write_result(
        args.name, {"model": args.model, "trees": {k: str(v) for k, v in trees.items()},
                    "single": args.single, "bulk": args.bulk, "runs": runs, "rows": rows},
    )  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
