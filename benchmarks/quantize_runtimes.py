"""fp32 ONNX Runtime vs int8 ONNX Runtime vs OpenVINO for the bundled models: speed and metrics.

For each model the fp32 graph is the `Predictor`'s cached export; the int8 graph is
`quantize_onnx` of it, calibrated on `--calibration` posters drawn (seed 0) from the task's
train split. Runtimes, all on `--threads` threads:
- `onnx-fp32`, `onnx-int8`: `OnnxRunner` (what `--runtime onnx` runs);
- `openvino-f32`: OpenVINO compiling the same fp32 .onnx for the CPU, LATENCY hint, f32
  inference precision; `openvino-bf16`: the same with OpenVINO's default precision on CPUs
  with AVX-512 BF16; `openvino-int8`: OpenVINO compiling the int8 QDQ graph.

Speed is model only, on posters decoded and normalised beforehand: posters/s calling the runner
with a batch of `--batch-size`, and the p50 latency of one poster; runtimes take turns within
each of `--repeats` rounds (so load from other processes falls on all of them), and the table
gives the medians over rounds. Metrics are on the task's whole test split: mAP over the 20
genres (multi-label) or accuracy (three genres), the change against `onnx-fp32` with a 95%
paired-bootstrap interval, the largest probability difference from `onnx-fp32`, and the share
of posters whose top genre agrees with it.

    python benchmarks/quantize_runtimes.py [--models imdb-20-fast,imdb-20,three-genre]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import print_table, require_data, write_result

from postergenre._allocator import tune_allocator
from postergenre.data.benchmark import task_sources
from postergenre.data.decode import decode_poster
from postergenre.data.labels import load_posters
from postergenre.data.targets import encode_targets
from postergenre.evaluation.metrics import mean_average_precision
from postergenre.export.quantize import quantize_onnx
from postergenre.inference import Predictor
from postergenre.inference.onnx_runtime import OnnxRunner

Runner = Callable[[np.ndarray], np.ndarray]


def make_runners(fp32: Path, int8: Path, threads: int) -> dict[str, Runner]:
    """Every runtime under test, loaded (OpenVINO ones only where it is installed)."""
    runners: dict[str, Runner] = {
        "onnx-fp32": OnnxRunner(fp32, threads=threads),
        "onnx-int8": OnnxRunner(int8, threads=threads),
    }
    from postergenre.inference.openvino_runtime import OpenVinoRunner

    try:
        runners["openvino-f32"] = OpenVinoRunner(fp32, threads=threads)
        runners["openvino-bf16"] = OpenVinoRunner(fp32, threads=threads, precision="bf16")
        runners["openvino-int8"] = OpenVinoRunner(int8, threads=threads)
    except Exception as exc:  # no openvino, or it cannot compile a graph: report, go on
        print(f"OpenVINO: {exc}")
    return runners


def speed(runners: dict[str, Runner], x: np.ndarray, repeats: int, n_single: int) -> dict:
    """{runtime: {posters_per_s, p50_ms}}: medians over rounds in which runtimes take turns."""
    for run in runners.values():  # warm-up: first calls allocate and pick kernels
        run(x)
        run(x[:1])
    rates: dict[str, list[float]] = {name: [] for name in runners}
    single: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for round_ in range(repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            run = runners[name]
            started = time.perf_counter()
            run(x)
            rates[name].append(len(x) / (time.perf_counter() - started))
            for i in range(n_single):
                started = time.perf_counter()
                run(x[i % len(x) : i % len(x) + 1])
                single[name].append((time.perf_counter() - started) * 1000)
    return {
        name: {"posters_per_s": statistics.median(rates[name]),
               "p50_ms": statistics.median(single[name])}
        for name in runners
    }  # fmt: skip


def metric(task: str, y: np.ndarray, probs: np.ndarray) -> float:
    """Accuracy (single-label) or mAP (multi-label)."""
    if task == "single":
        return float((probs.argmax(1) == y).mean())
    return mean_average_precision(y, probs)


def paired_interval(
    task: str, y: np.ndarray, base: np.ndarray, other: np.ndarray, boot: int
) -> list[float]:
    """95% bootstrap interval of metric(other) - metric(base) on the same resampled posters."""
    rng = np.random.default_rng(0)
    deltas = []
    for _ in range(boot):
        idx = rng.integers(0, len(y), len(y))
        deltas.append(metric(task, y[idx], other[idx]) - metric(task, y[idx], base[idx]))
    low, high = np.percentile(deltas, [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]


def predict_all(run: Runner, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([run(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def benchmark_model(name: str, args: argparse.Namespace, data: Path, tmp: Path) -> list[dict]:
    predictor = Predictor.from_pretrained(name, runtime="onnx")
    runner = predictor.onnx_runner  # exports into the cache on first use
    assert runner is not None and runner.path is not None
    fp32 = runner.path
    sources = task_sources("three-genre" if predictor.task == "single" else "imdb-20", data)
    collection = load_posters(
        labels=sources["labels"], images=sources["images"], splits=sources["splits"]
    )
    train = [r.path for r in collection.split("train").records]
    int8 = tmp / f"{name}.int8.onnx"
    if int8.is_file():  # from an earlier run with the same --work folder
        print(f"{name}: reusing {int8}", flush=True)
    else:
        report = quantize_onnx(fp32, int8, train, n_calibration=args.calibration)
        print(f"{name}: quantized in {report['seconds']:.0f} s on {report['calibration_posters']} "
              f"train posters; {fp32.stat().st_size / 1e6:.1f} MB -> "
              f"{report['size_bytes'] / 1e6:.1f} MB", flush=True)  # fmt: skip

    targets = encode_targets(collection.split("test").records, list(predictor.genres),
                             predictor.task)  # fmt: skip
    spec = predictor.input_spec
    pixels = np.stack([spec.resize_image(decode_poster(r.path)) for r in targets.records])
    x = spec.normalise(pixels)
    runners = make_runners(fp32, int8, args.threads)
    load = os.getloadavg()[0]
    timings = speed(runners, x[: args.batch_size], args.repeats, args.single)
    load = max(load, os.getloadavg()[0])
    y = targets.y[: args.batch_size] if args.speed_only else targets.y
    x = x[: len(y)]
    probs = {runtime: predict_all(run, x, args.batch_size) for runtime, run in runners.items()}
    base = probs["onnx-fp32"]
    base_metric = metric(predictor.task, y, base)
    rows = []
    for runtime, p in probs.items():
        value = metric(predictor.task, y, p)
        rows.append(
            {
                "model": name,
                "architecture": predictor.card.architecture,
                "runtime": runtime,
                f"posters_per_s_b{args.batch_size}": timings[runtime]["posters_per_s"],
                "p50_ms": timings[runtime]["p50_ms"],
                "metric": "accuracy" if predictor.task == "single" else "mAP",
                "value": value,
                "change": value - base_metric,
                "change_95": None
                if runtime == "onnx-fp32" or args.speed_only
                else paired_interval(predictor.task, y, base, p, args.boot),
                "max_abs_diff": float(np.abs(p - base).max()),
                "top_agree": float((p.argmax(1) == base.argmax(1)).mean()),
                "test_posters": len(x),
                "load_avg_1min": load,
                "size_mb": (int8 if runtime.endswith("int8") else fp32).stat().st_size / 1e6,
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="imdb-20-fast,imdb-20,three-genre")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="timing rounds (medians)")
    parser.add_argument("--single", type=int, default=20, help="one-poster calls per round")
    parser.add_argument("--calibration", type=int, default=256, help="train posters")
    parser.add_argument("--boot", type=int, default=500, help="bootstrap resamples")
    parser.add_argument("--work", type=Path, help="keep the int8 graphs here and reuse them")
    parser.add_argument(
        "--speed-only", action="store_true", help="time only (metrics on one batch, not the test)"
    )
    parser.add_argument("--name", default="quantize_runtimes", help="results/NAME.json")
    args = parser.parse_args()
    tune_allocator()
    data = require_data()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="quantize-runtimes-") as tmp:
        work = Path(tmp) if args.work is None else args.work
        work.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            rows += benchmark_model(name, args, data, work)
    rate = f"posters_per_s_b{args.batch_size}"
    base_rates = {r["model"]: r[rate] for r in rows if r["runtime"] == "onnx-fp32"}
    shown = [{**r, "speedup": r[rate] / base_rates[r["model"]], "value": f"{r['value']:.4f}",
              "change": f"{r['change']:+.4f}", "max_abs_diff": f"{r['max_abs_diff']:.2g}"}
             for r in rows]  # fmt: skip
    loads = ", ".join(f"{r['load_avg_1min']:.1f}" for r in rows if r["runtime"] == "onnx-fp32")
    print(f"\n{args.threads} threads; pre-decoded, normalised inputs (model only); medians of "
          f"{args.repeats} rounds (1-minute load average {loads}); metrics on the "
          + ("first batch only" if args.speed_only else "whole test split"))  # fmt: skip
    print_table(shown, ["model", "runtime", rate, "speedup", "p50_ms", "metric", "value",
                        "change", "change_95", "max_abs_diff", "top_agree", "size_mb"])  # fmt: skip
    try:
        import openvino

        ov_version = openvino.__version__
    except ImportError:
        ov_version = None
    import onnxruntime

    payload = {"threads": args.threads, "batch_size": args.batch_size, "repeats": args.repeats,
               "calibration_posters": args.calibration, "onnxruntime": onnxruntime.__version__,
               "openvino": ov_version, "rows": rows}  # fmt: skip
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
