"""Load test of the web server: concurrent poster uploads against `postergenre`'s own server.

Starts the server (micro-batching on) in a separate process on a free 127.0.0.1 port, waits
for /healthz, then sends `--requests` single-poster uploads to /api/predict with
`--concurrency` in flight, and reports errors, p50/p99 latency and requests/s. For scale it
also measures in-process batch throughput (`Predictor.predict_pixels` on pre-decoded batches of
32, same runtime, no server running) and the served/in-process ratio: what HTTP, multipart,
decoding and batching cost. The load client shares the machine's cores with the server.

    python benchmarks/serve_load.py --model runs/lite0/model [--runtime onnx] [--synthetic]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import io
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
from _common import DATA, REPO, print_table, write_result

from postergenre._allocator import tune_allocator
from postergenre.inference import Predictor

SERVER_CODE = """
import sys
from postergenre._allocator import tune_allocator
tune_allocator()
from postergenre.inference import Predictor
from postergenre.serving.server import serve
model, runtime, max_batch, max_wait_ms = sys.argv[1:5]
kwargs = {"runtime": runtime} if runtime else {}
predictor = Predictor.from_pretrained(model, **kwargs)
serve(predictor, port=0, max_batch=int(max_batch), max_wait_ms=float(max_wait_ms))
"""
URL_PATTERN = re.compile(r"http://127\.0\.0\.1:(\d+)/")


# -- posters ----------------------------------------------------------------------------------
def real_posters(n: int) -> list[tuple[str, bytes]]:
    """Up to `n` posters of the shared set, as (name, file bytes)."""
    images = DATA / "images"
    if not images.is_dir():
        sys.exit(f"poster images not found at {images}; set POSTERGENRE_DATA or use --synthetic")
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return [(p.name, p.read_bytes()) for p in paths[:n]]


def synthetic_posters(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """JPEG posters shaped like the shared set's (224 wide, ~2:3): colour gradients + noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        height = int(rng.integers(300, 340))
        base = rng.integers(0, 256, size=3)
        ramp = np.linspace(0, 1, height)[:, None, None]
        pixels = base * (1 - ramp) + rng.integers(0, 256, size=3) * ramp
        pixels = pixels + rng.normal(0, 20, size=(height, 224, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        out.append((f"synthetic{i}.jpg", buffer.getvalue()))
    return out


# -- in-process baseline ----------------------------------------------------------------------
def in_process_throughput(
    model: str,
    runtime: str | None,
    posters: list[tuple[str, bytes]],
    batch: int = 32,
    repeats: int = 3,
) -> dict[str, Any]:
    """Posters/s of `predict_pixels` on pre-decoded batches (model only, no HTTP); the best of
    `repeats` passes, since other work on the machine only ever slows a pass down."""
    from postergenre.serving.uploads import decode_poster_bytes

    kwargs = {"runtime": runtime} if runtime else {}
    predictor = Predictor.from_pretrained(model, **kwargs)
    pixels = np.stack([predictor.preprocess(decode_poster_bytes(d, n)) for n, d in posters])
    predictor.predict_pixels(pixels[:batch])  # warm-up
    passes = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(pixels), batch):
            predictor.predict_pixels(pixels[start : start + batch], batch_size=batch)
        passes.append(len(pixels) / (time.perf_counter() - started))
    return {
        "posters": len(pixels),
        "batch": batch,
        "posters_per_s": max(passes),
        "passes_posters_per_s": passes,
    }


# -- server process ---------------------------------------------------------------------------
class ServerProcess:
    """`serve(...)` in a child process (`code`, given the settings and `extra_args` as
    arguments); `stop()` always ends it."""

    def __init__(
        self,
        model: str,
        runtime: str | None,
        max_batch: int,
        max_wait_ms: float,
        code: str = SERVER_CODE,
        extra_args: tuple[str, ...] = (),
    ):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                model,
                runtime or "",
                str(max_batch),
                str(max_wait_ms),
                *extra_args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def rss_mb(self) -> float:
        """The server process's resident memory now, in MB (0 when it has gone)."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.log.append(line)
            if match := URL_PATTERN.search(line):
                return f"http://127.0.0.1:{match.group(1)}"
        tail = "".join(self.log[-20:])
        raise RuntimeError(f"the server did not start within {timeout:.0f}s:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn shuts down gracefully
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_healthy(base: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{base}/healthz did not answer within {timeout:.0f}s")


# -- load -------------------------------------------------------------------------------------
async def run_load(
    base: str, posters: list[tuple[str, bytes]], requests: int, concurrency: int, timeout: float
) -> dict[str, Any]:
    """`requests` uploads with at most `concurrency` in flight, bounded by `timeout` seconds."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:

        async def one(i: int) -> None:
            name, data = posters[i % len(posters)]
            async with gate:
                started = time.perf_counter()
                try:
                    response = await client.post(
                        "/api/predict", files={"files": (name, data, "image/jpeg")}
                    )
                except httpx.HTTPError as exc:
                    errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    return
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors.append(f"{name}: HTTP {response.status_code} {response.text[:200]}")

        for i in range(min(8, len(posters))):  # warm-up, not counted
            await client.post("/api/predict", files={"files": posters[i]})
        before = (await client.get("/api/stats")).json()
        started = time.perf_counter()
        tasks = [asyncio.create_task(one(i)) for i in range(requests)]
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        wall = time.perf_counter() - started
        if pending:
            errors.append(f"{len(pending)} requests unfinished after {timeout:.0f}s")
        failed = len(errors) - (1 if pending else 0) + len(pending)
        after = (await client.get("/api/stats")).json()
    batches = after["batches"] - before["batches"]
    items = after["items"] - before["items"]
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "requests": requests,
        "completed": len(latencies),
        "errors": failed,
        "error_samples": errors[:5],
        "wall_seconds": wall,
        "requests_per_s": len(latencies) / wall if wall else 0.0,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "batches": batches,
        "mean_batch": items / batches if batches else 0.0,
        "largest_batch": after["largest_batch"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="imdb-20", help="bundled name, bundle or run folder")
    parser.add_argument("--runtime", help="torch or onnx (when Predictor supports runtimes)")
    parser.add_argument("--concurrency", type=int, default=64, help="uploads in flight")
    parser.add_argument("--requests", type=int, default=256, help="uploads in total")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=300, help="seconds for the load")
    parser.add_argument("--synthetic", action="store_true", help="generated posters, no data")
    parser.add_argument("--name", default="serve_load", help="results/NAME.json")
    args = parser.parse_args()
    tune_allocator()
    if args.runtime and "runtime" not in inspect.signature(Predictor.from_pretrained).parameters:
        sys.exit("this Predictor has no runtimes; leave out --runtime")
    n_posters = min(args.requests, 256)
    posters = synthetic_posters(n_posters) if args.synthetic else real_posters(n_posters)
    if not posters:
        sys.exit("no posters to send")

    print(f"in-process baseline: {args.model} ({args.runtime or 'default runtime'})", flush=True)
    baseline = in_process_throughput(args.model, args.runtime, posters)
    server = ServerProcess(args.model, args.runtime, args.max_batch, args.max_wait_ms)
    try:
        base = server.wait_for_url(timeout=180)
        wait_healthy(base, timeout=60)
        print(
            f"server at {base}: {args.requests} uploads, {args.concurrency} in flight", flush=True
        )
        memory = {"rss_mb_start": server.rss_mb()}
        peak = [memory["rss_mb_start"]]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.1):
                peak.append(server.rss_mb())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        load = asyncio.run(run_load(base, posters, args.requests, args.concurrency, args.timeout))
        sampling.set()
        sampler.join()
        time.sleep(1.0)  # the batcher hands freed memory back once its queue drains
        memory.update(rss_mb_peak=max(peak), rss_mb_after=server.rss_mb())
    finally:
        server.stop()

    ratio = load["requests_per_s"] / baseline["posters_per_s"]
    rows = [
        {
            "measure": "served /api/predict",
            "posters_per_s": load["requests_per_s"],
            "p50_ms": load["p50_ms"],
            "p99_ms": load["p99_ms"],
            "mean_batch": load["mean_batch"],
            "errors": load["errors"],
        },
        {
            "measure": "in-process predict_pixels",
            "posters_per_s": baseline["posters_per_s"],
            "mean_batch": float(baseline["batch"]),
        },
    ]
    print()
    print_table(rows, ["measure", "posters_per_s", "p50_ms", "p99_ms", "mean_batch", "errors"])
    print(f"\nserved / in-process throughput: {ratio:.2f}")
    print(
        "server memory (RSS): {rss_mb_start:.0f} MB at start, {rss_mb_peak:.0f} MB at the peak of "
        "the load, {rss_mb_after:.0f} MB a second after it".format(**memory)
    )
    verdict = "OK" if load["errors"] == 0 else "FAILED"
    print(f"zero-error check: {verdict} ({load['errors']} errors of {args.requests})")
    for sample in load["error_samples"]:
        print(f"  {sample}")
    settings = {
        k: getattr(args, k)
        for k in (
            "model",
            "runtime",
            "concurrency",
            "requests",
            "max_batch",
            "max_wait_ms",
            "synthetic",
        )
    }
    payload = {
        "settings": settings,
        "served": load,
        "in_process": baseline,
        "ratio": ratio,
        "memory": memory,
    }
    print(f"wrote {write_result(args.name, payload)}")
    return 0 if load["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
