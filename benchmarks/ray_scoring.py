"""Scoring a collection with the local engine against the Ray engine (`predict --engine ray`)
with 1 and 2 workers (actors) on this machine, end to end from the files into a CSV.

For each model (default the bundled `imdb-20-fast`, Lite0, and `imdb-20`, Lite0+1+2):

- local: `Predictor.predict_to` with its default decoding processes (ONNX Runtime, every core);
- Ray, N workers: the same call with `engine="ray", workers=N` on a Ray started once here
  (its start-up is timed separately). Each run starts its actors (they load the model) before
  the first poster, so a second, tiny run (2 posters per worker) measures that start-up, and
  the steady rate is (posters - tiny) / (seconds - tiny seconds);
- the largest difference between the Ray and local probabilities (they must agree);
- the driver's own ceiling, whatever the cluster: rows per second it appends to the journal
  (`PredictionJournal.append`, one process, as `predict_to` does for every result block) and
  writes into the final file (`finish`), on `--driver-rows` synthetic rows of the model's genres.

The ONNX graph is exported before any clock starts. Run with the CPU lock when the machine is
shared:

    flock /tmp/pg-cpu.lock python benchmarks/ray_scoring.py [--limit 1000] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import print_table, require_data, write_result

from postergenre._allocator import tune_allocator
from postergenre._cpu import available_cores, default_workers
from postergenre.engines.ray_cluster import plan_workers, ray_session
from postergenre.inference import Predictor
from postergenre.inference.journal import PredictionJournal
from postergenre.inference.predictions import Predictions
from postergenre.inference.predictor import PREDICT_BATCH


def _probabilities(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    return {r[0]: np.array([float(v) for v in r[1:-1]]) for r in rows[1:]}


def _timed(predictor: Predictor, listing: Path, out: Path, **engine: Any) -> tuple[float, int]:
    started = time.perf_counter()
    summary = predictor.predict_to(listing, out, progress_bar=False, **engine)
    return time.perf_counter() - started, summary.rows


def _listing(path: Path, posters: list[Path]) -> Path:
    path.write_text("".join(f"{p}\n" for p in posters))
    return path


def bench_model(
    name: str, posters: list[Path], workers: list[int], tmp: Path, batch_size: int
) -> list[dict[str, Any]]:
    """Local and Ray runs of one model over `posters` (Ray already started)."""
    predictor = Predictor.from_pretrained(name, runtime="onnx")
    predictor.onnx_runner  # noqa: B018 (exported and loaded before the clock starts)
    listing = _listing(tmp / f"{name}.txt", posters)
    seconds, rows = _timed(predictor, listing, tmp / f"{name}-local.csv", batch_size=batch_size)
    local = _probabilities(tmp / f"{name}-local.csv")
    table = [
        {
            "model": name,
            "engine": "local",
            "workers": f"{default_workers()} decoders",
            "posters": rows,
            "seconds": seconds,
            "posters_per_s": rows / seconds,
        }
    ]
    for n in workers:
        plan = plan_workers(n)
        out = tmp / f"{name}-ray{n}.csv"
        ray = {"engine": "ray", "workers": n, "batch_size": batch_size}
        seconds, rows = _timed(predictor, listing, out, **ray)
        tiny = _listing(tmp / f"{name}-tiny{n}.txt", posters[: 2 * n])
        tiny_seconds, tiny_rows = _timed(predictor, tiny, tmp / f"{name}-tiny{n}.csv", **ray)
        scored = _probabilities(out)
        steady = (rows - tiny_rows) / max(seconds - tiny_seconds, 1e-9)
        table.append(
            {
                "model": name,
                "engine": "ray",
                "workers": f"{n} x {plan.threads} threads",
                "posters": rows,
                "seconds": seconds,
                "posters_per_s": rows / seconds,
                "actor_start_s": tiny_seconds,
                "steady_posters_per_s": steady,
                "per_worker_posters_per_s": steady / n,
                "max_abs_diff": max(float(np.abs(scored[p] - local[p]).max()) for p in local),
            }
        )
    return table


def bench_driver(name: str, rows: int, tmp: Path) -> list[dict[str, Any]]:
    """Rows per second of the driver's journal and final write (no model, no Ray)."""
    card = Predictor.from_pretrained(name).card
    probs = np.random.default_rng(0).random((rows, len(card.genres)), dtype=np.float32)
    paths = [f"/shared/posters/{i:09d}.jpg" for i in range(rows)]
    table = []
    for suffix in (".csv", ".parquet"):
        out = tmp / f"driver{suffix}"
        with PredictionJournal(out, card.genres, name) as journal:
            started = time.perf_counter()
            for start in range(0, rows, 4 * PREDICT_BATCH):  # one Ray block at a time
                end = start + 4 * PREDICT_BATCH
                journal.append(Predictions(card, paths[start:end], probs[start:end]))
            appended = time.perf_counter() - started
            started = time.perf_counter()
            journal.finish()
            finished = time.perf_counter() - started
        table.append(
            {
                "output": suffix,
                "rows": rows,
                "append_rows_per_s": rows / appended,
                "finish_rows_per_s": rows / finished,
                "both_rows_per_s": rows / (appended + finished),
            }
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["imdb-20-fast", "imdb-20"])
    parser.add_argument("--limit", type=int, default=1000, help="posters per run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray actors")
    parser.add_argument("--batch-size", type=int, default=PREDICT_BATCH)
    parser.add_argument("--driver-rows", type=int, default=100_000, help="0: skip")
    parser.add_argument("--name", default="ray_scoring", help="results/NAME.json")
    args = parser.parse_args()
    tune_allocator()
    posters = sorted((require_data() / "images").glob("*.jpg"))[: args.limit]
    table: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ray-scoring-") as tmp_name:
        started = time.perf_counter()
        with ray_session():
            ray_start = time.perf_counter() - started
            for model in args.models:
                table += bench_model(model, posters, args.workers, Path(tmp_name), args.batch_size)
        driver = []
        if args.driver_rows:
            model = args.models[0] if args.models else "imdb-20-fast"
            driver = bench_driver(model, args.driver_rows, Path(tmp_name))
    print(
        f"{len(posters)} shared posters, {available_cores()} cores, batch {args.batch_size}; "
        f"Ray start-up (ray.init, local) {ray_start:.1f} s, not in the runs below"
    )
    columns = ["model", "engine", "workers", "posters", "seconds", "posters_per_s"]
    columns += ["actor_start_s", "steady_posters_per_s", "per_worker_posters_per_s"]
    print_table(table, [*columns, "max_abs_diff"])
    if driver:
        print("\nthe driver alone (one process): journal appends and the final write")
        print_table(driver, list(driver[0]))
    payload = {
        "posters": len(posters),
        "cores": available_cores(),
        "batch_size": args.batch_size,
        "ray_start_seconds": ray_start,
        "runs": table,
        "driver": driver,
    }
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
