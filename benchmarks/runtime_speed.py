"""PyTorch eager vs ONNX Runtime for one model bundle: latency and throughput on the CPU.

- latency: one poster end to end (decode + resize + normalise + predict, batch 1), p50 and p99
  over `--n` posters, after a few warm-up posters;
- throughput: posters/s at batch `--batch-size` on pixels decoded beforehand (model only).

Both runtimes use every core (`torch.set_num_threads`, ONNX Runtime intra-op threads). The ONNX
file is exported on first use into the cache (`$POSTERGENRE_CACHE/onnx`) and reused afterwards.

    python benchmarks/runtime_speed.py --model runs/lite0/model [--synthetic] [--n 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import print_table, require_data, write_result

from postergenre._allocator import tune_allocator
from postergenre._cpu import available_cores
from postergenre.data.decode import decode_poster
from postergenre.errors import UserError
from postergenre.inference import Predictor


def synthetic_posters(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """JPEG posters shaped like the shared set's (224 wide, ~2:3), smooth colour + noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        height = int(rng.integers(300, 340))
        ramp = np.linspace(0, 1, height)[:, None, None]
        base = rng.integers(0, 256, 3) * (1 - ramp) + rng.integers(0, 256, 3) * ramp
        pixels = base + rng.normal(0, 20, (height, 224, 3))
        path = folder / f"synthetic{i:04d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def latency_ms(predictor: Predictor, paths: list[Path], warmup: int = 3) -> list[float]:
    """Milliseconds per poster, decode to probabilities, one poster at a time."""
    times = []
    for i, path in enumerate([*paths[:warmup], *paths]):
        started = time.perf_counter()
        predictor.predict([path], batch_size=1)
        if i >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    return times


def throughput(predictor: Predictor, pixels: np.ndarray, batch_size: int) -> tuple[float, Any]:
    """Posters/s over pre-decoded pixels (after one warm-up batch), and the probabilities."""
    predictor.predict_pixels(pixels[:batch_size], batch_size=batch_size)
    started = time.perf_counter()
    probs = predictor.predict_pixels(pixels, batch_size=batch_size)
    return len(pixels) / (time.perf_counter() - started), probs


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="bundle or run folder, or a bundled model name")
    parser.add_argument("--synthetic", action="store_true", help="generated posters, no data")
    parser.add_argument("--n", type=int, default=100, help="posters timed for latency")
    parser.add_argument("--batches", type=int, default=6, help="batches timed for throughput")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="default: every core")
    parser.add_argument("--name", default="runtime_speed", help="results/NAME.json")
    args = parser.parse_args()
    tune_allocator()
    import torch

    threads = args.threads or available_cores()
    torch.set_num_threads(threads)

    n_pixels = args.batches * args.batch_size
    needed = max(args.n + 3, n_pixels)
    with tempfile.TemporaryDirectory(prefix="runtime-speed-") as tmp:
        if args.synthetic:
            paths = synthetic_posters(Path(tmp), needed)
            source = "synthetic"
        else:
            data = require_data()
            paths = sorted((data / "images").glob("*.jpg"))[:needed]
            source = str(data / "images")

        try:
            started = time.perf_counter()
            predictors = {"torch": Predictor.from_pretrained(args.model, runtime="torch")}
            load_torch = time.perf_counter() - started
            started = time.perf_counter()
            predictors["onnx"] = Predictor.from_pretrained(args.model, runtime="onnx")
            load_onnx = time.perf_counter() - started  # includes the export on first use
        except UserError as exc:
            sys.exit(f"error: {exc}")
        onnx_runner = predictors["onnx"].onnx_runner
        assert onnx_runner is not None and onnx_runner.path is not None
        onnx_runner_threads = onnx_runner.threads
        if args.threads:  # the Predictor's runner uses every core; honour --threads
            from postergenre.inference.onnx_runtime import OnnxRunner

            predictors["onnx"].onnx_runner = OnnxRunner(onnx_runner.path, threads=threads)
            onnx_runner_threads = threads

        torch_predictor = predictors["torch"]
        pixels = np.stack(
            [torch_predictor.preprocess(decode_poster(p)) for p in (paths * 2)[:n_pixels]]
        )
        rows: list[dict[str, Any]] = []
        probs = {}
        for runtime, predictor in predictors.items():
            times = latency_ms(predictor, paths[: args.n])
            rate, probs[runtime] = throughput(predictor, pixels, args.batch_size)
            rows.append(
                {
                    "runtime": runtime,
                    "latency_p50_ms": statistics.median(times),
                    "latency_p99_ms": percentile(times, 99),
                    "latency_mean_ms": statistics.fmean(times),
                    f"posters_per_s_b{args.batch_size}": rate,
                    "threads": threads if runtime == "torch" else onnx_runner_threads,
                    "load_seconds": load_torch if runtime == "torch" else load_onnx,
                }
            )

    torch_row, onnx_row = rows
    rate_key = f"posters_per_s_b{args.batch_size}"
    ratio = {
        "runtime": "onnx/torch",
        "latency_p50_ms": onnx_row["latency_p50_ms"] / torch_row["latency_p50_ms"],
        "latency_p99_ms": onnx_row["latency_p99_ms"] / torch_row["latency_p99_ms"],
        "latency_mean_ms": onnx_row["latency_mean_ms"] / torch_row["latency_mean_ms"],
        rate_key: onnx_row[rate_key] / torch_row[rate_key],
    }
    max_diff = float(np.abs(probs["onnx"] - probs["torch"]).max())
    card = torch_predictor.card
    print(
        f"model {args.model or 'default'} ({card.architecture}, {card.task}-label, "
        f"{card.input.width}x{card.input.height}), posters: {source}"
    )
    print_table(
        [*rows, ratio],
        ["runtime", "latency_p50_ms", "latency_p99_ms", "latency_mean_ms", rate_key, "threads",
         "load_seconds"],
    )  # fmt: skip
    onnx_path = onnx_runner.path
    print(
        f"\nonnx file {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB); "
        f"max |p_onnx - p_torch| = {max_diff:.2g} over {len(pixels)} posters"
    )
    payload = {
        "model": str(args.model),
        "architecture": card.architecture,
        "posters": source,
        "n_latency": args.n,
        "n_throughput": len(pixels),
        "batch_size": args.batch_size,
        "onnx_file": str(onnx_path),
        "onnx_bytes": onnx_path.stat().st_size,
        "max_abs_diff": max_diff,
        "rows": rows,
        "ratio_onnx_over_torch": ratio,
    }
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
