"""Streaming prediction (`Predictor.predict_to`, `postergenre predict SOURCE --out FILE`)
against the same model's in-process batch throughput, and its memory for two collection sizes.

In one run, with one model (default the bundled `imdb-20-fast`, ONNX Runtime):

- (a) batch: posters/s of `Predictor.predict_pixels` on posters decoded beforehand (the model
  alone, batches of `--batch-size`);
- (b) stream: posters/s of `predict_to` from the files (a text file listing them) into a CSV,
  end to end: listing, worker start-up, decoding in `--workers` processes, the model, writing;
- the ratio b / a (the target is >= 0.9), and the largest difference of probabilities;
- peak RSS of (b) in a fresh process (the main process, and the largest decoding process) for
  `--rss-limit` posters and for `--scale` times as many (symlinks under other names), to show
  that memory does not grow with the collection.

Posters: the shared set (`../shared/data/imdb-posters-7k/images`) when present, else generated.

    python benchmarks/stream_predict.py [--model imdb-20-fast] [--limit 2048] [--workers 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import DATA, print_table, write_result

from postergenre._allocator import tune_allocator
from postergenre._cpu import default_workers
from postergenre.data.decode import decode_poster
from postergenre.inference import Predictor
from postergenre.inference.predictor import PREDICT_BATCH

TARGET = 0.9


def _peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kilobytes on Linux


def stream(
    predictor: Predictor, args: argparse.Namespace, listing: Path, out: Path
) -> dict[str, Any]:
    """Run (b) once in this process and time it (the model is loaded beforehand); the peak
    RSS means something only in a fresh process (`_child`)."""
    started = time.perf_counter()
    summary = predictor.predict_to(
        listing, out, workers=args.workers, batch_size=args.batch_size, progress_bar=False
    )
    seconds = time.perf_counter() - started
    return {
        "posters": summary.rows,
        "skipped": summary.skipped_count,
        "seconds": seconds,
        "posters_per_s": summary.rows / seconds,
        "peak_rss_mb": _peak_mb(resource.RUSAGE_SELF),
        "worker_peak_rss_mb": _peak_mb(resource.RUSAGE_CHILDREN),
    }


def _child(args: argparse.Namespace, listing: Path, out: Path) -> dict[str, Any]:
    """(b) in a fresh process, so its peak RSS is its own."""
    command = [sys.executable, __file__, "--child", str(listing), str(out)]
    command += ["--model", args.model, "--runtime", args.runtime]
    command += ["--batch-size", str(args.batch_size), "--workers", str(args.workers)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        sys.exit(f"the streaming child failed:\n{result.stderr}")
    return dict(json.loads(result.stdout.splitlines()[-1]))


def _posters(folder: Path, limit: int) -> tuple[list[Path], str]:
    images = DATA / "images"
    if images.is_dir():
        return sorted(images.glob("*.jpg"))[:limit], str(images)
    from runtime_speed import synthetic_posters

    return synthetic_posters(folder, limit), "synthetic"


def _listing(path: Path, posters: list[Path]) -> Path:
    path.write_text("".join(f"{p.absolute()}\n" for p in posters))  # symlinks stay themselves
    return path


def _aliases(folder: Path, posters: list[Path], copies: int) -> list[Path]:
    """`copies` x the posters under other names (symlinks): a larger collection of the same
    files, so decoding costs the same per poster."""
    folder.mkdir()
    aliases = []
    for copy in range(copies):
        for poster in posters:
            alias = folder / f"{copy}-{poster.name}"
            alias.symlink_to(poster.resolve())
            aliases.append(alias)
    return aliases


def _probabilities(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    return {r[0]: np.array([float(v) for v in r[1:-1]]) for r in rows[1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="imdb-20-fast", help="bundled name or bundle folder")
    parser.add_argument("--runtime", default="onnx", choices=["onnx", "torch"])
    parser.add_argument("--limit", type=int, default=2048, help="posters in (a) and (b)")
    parser.add_argument("--rss-limit", type=int, default=512, help="posters of the RSS runs")
    parser.add_argument("--scale", type=int, default=4, help="the larger RSS run: this x more")
    parser.add_argument("--batch-size", type=int, default=PREDICT_BATCH)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--name", default="stream_predict", help="results/NAME.json")
    parser.add_argument("--child", nargs=2, metavar=("LIST", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    tune_allocator()
    if args.child:
        predictor = Predictor.from_pretrained(args.model, runtime=args.runtime)
        predictor.onnx_runner  # noqa: B018 (the ONNX session, made before the clock starts)
        print(json.dumps(stream(predictor, args, Path(args.child[0]), Path(args.child[1]))))
        return

    with tempfile.TemporaryDirectory(prefix="stream-predict-") as tmp_name:
        tmp = Path(tmp_name)
        posters, source = _posters(tmp, args.limit)
        predictor = Predictor.from_pretrained(args.model, runtime=args.runtime)
        card = predictor.card
        started = time.perf_counter()
        pixels = np.stack([predictor.preprocess(decode_poster(p)) for p in posters])
        decode_rate = len(posters) / (time.perf_counter() - started)
        predictor.predict_pixels(pixels[: args.batch_size], args.batch_size)  # warm-up
        started = time.perf_counter()
        batch_probs = predictor.predict_pixels(pixels, args.batch_size)
        batch_rate = len(pixels) / (time.perf_counter() - started)
        del pixels

        listing = _listing(tmp / "posters.txt", posters)
        streamed = stream(predictor, args, listing, tmp / "in-process.csv")
        del streamed["peak_rss_mb"], streamed["worker_peak_rss_mb"]  # (a)'s pixels, not (b)'s
        rows = _probabilities(tmp / "in-process.csv")
        max_diff = max(
            float(np.abs(rows[str(p.absolute())] - probs).max())
            for p, probs in zip(posters, batch_probs, strict=True)
        )
        few = posters[: args.rss_limit]
        small = _child(args, _listing(tmp / "few.txt", few), tmp / "small.csv")
        many = _aliases(tmp / "aliases", few, args.scale)
        large = _child(args, _listing(tmp / "many.txt", many), tmp / "large.csv")

    ratio = streamed["posters_per_s"] / batch_rate
    print(
        f"model {args.model} ({card.architecture}, runtime {predictor.runtime}, "
        f"{card.input.width}x{card.input.height}), {len(posters)} posters from {source}, "
        f"batch {args.batch_size}, {args.workers} decoding processes"
    )
    table = [
        {"run": "(a) batch, pre-decoded", "posters": len(posters), "posters_per_s": batch_rate},
        {"run": "(b) stream from files", **streamed},
        {"run": "(b) fresh process", **small},
        {"run": f"(b) fresh process, {args.scale}x", **large},
    ]
    print_table(table, ["run", "posters", "posters_per_s", "peak_rss_mb", "worker_peak_rss_mb"])
    verdict = "met" if ratio >= TARGET else "missed"
    print(
        f"\nstream / batch = {ratio:.3f} (target >= {TARGET}: {verdict}); decoding alone "
        f"{decode_rate:.0f} posters/s in one process; max |p_stream - p_batch| = {max_diff:.2g}; "
        f"peak RSS {small['peak_rss_mb']:.0f} MB for {small['posters']} posters, "
        f"{large['peak_rss_mb']:.0f} MB for {large['posters']}"
    )
    payload = {
        "model": args.model,
        "architecture": card.architecture,
        "runtime": predictor.runtime,
        "posters": source,
        "n": len(posters),
        "batch_size": args.batch_size,
        "workers": args.workers,
        "decode_posters_per_s_one_process": decode_rate,
        "batch_posters_per_s": batch_rate,
        "stream": streamed,
        "ratio_stream_over_batch": ratio,
        "target": TARGET,
        "max_abs_diff": max_diff,
        "rss": {"small": small, "large": large, "scale": args.scale},
    }
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
