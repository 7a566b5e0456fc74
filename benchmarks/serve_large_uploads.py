"""Do huge uploads slow down normal ones? Small-poster latency with and without 16 MP uploads.

Starts `serve(...)` in a separate process, then measures /api/predict latency of normal posters
(224 wide) alone, while `--large` clients keep uploading normal posters too (the model's share
of the slowdown), and while they keep uploading 16-megapixel JPEGs instead. Runs it
for the server as it is (large posters in their own decode lane, JPEGs decoded reduced) and,
with `--compare`, for one shared lane with full decodes (how the server decoded before).

    python benchmarks/serve_large_uploads.py [--model imdb-20] [--compare]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import time
from typing import Any

import numpy as np
from _common import print_table, write_result
from serve_load import ServerProcess, synthetic_posters, wait_healthy

SERVER_CODE = """
import sys
from postergenre._allocator import tune_allocator
tune_allocator()
from postergenre.inference import Predictor
from postergenre.serving import uploads
from postergenre.serving.server import serve
model, runtime, max_batch, max_wait_ms, lanes = sys.argv[1:6]
if lanes == "one":  # every upload in the normal lane, decoded whole: the server before lanes
    uploads._claimed_pixels = lambda data: 0
    whole = uploads.decode_poster_bytes
    uploads.decode_poster_bytes = lambda data, name, pixels, fit=None: whole(data, name, pixels)
kwargs = {"runtime": runtime} if runtime else {}
predictor = Predictor.from_pretrained(model, **kwargs)
serve(predictor, port=0, max_batch=int(max_batch), max_wait_ms=float(max_wait_ms),
      max_upload_mb=40)
"""


def large_poster(megapixels: float = 16.0, seed: int = 0) -> tuple[str, bytes]:
    """A 2:3 JPEG poster of `megapixels`: gradients and a little noise, as photos compress."""
    from PIL import Image

    width = int((megapixels * 1e6 * 2 / 3) ** 0.5)
    height = int(width * 1.5)
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    top, bottom = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
    pixels = top * (1 - ramp) + bottom * ramp + rng.normal(0, 6, (height, width, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=85)
    return f"large{width}x{height}.jpg", out.getvalue()


async def measure(
    base: str,
    small: list[tuple[str, bytes]],
    large: tuple[str, bytes] | None,
    n_large: int,
    requests: int,
    concurrency: int,
) -> dict[str, Any]:
    """Latency of `requests` small uploads (`concurrency` in flight) while `n_large` clients
    upload `large` back to back (none when `large` is None)."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    background_done = 0
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=concurrency + n_large + 2)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=300) as client:

        async def keep_uploading_large() -> None:
            nonlocal background_done
            assert large is not None
            while not stop.is_set():
                response = await client.post("/api/predict", files={"files": large})
                if response.status_code != 200:
                    errors.append(f"large: HTTP {response.status_code} {response.text[:200]}")
                background_done += 1

        async def small_client(offset: int) -> None:
            for i in range(offset, requests, concurrency):
                started = time.perf_counter()
                response = await client.post("/api/predict", files={"files": small[i % len(small)]})
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors.append(f"small: HTTP {response.status_code} {response.text[:200]}")

        for poster in small[:4]:  # warm-up, not counted
            await client.post("/api/predict", files={"files": poster})
        background = [
            asyncio.create_task(keep_uploading_large()) for _ in range(n_large if large else 0)
        ]
        await asyncio.sleep(1.0 if background else 0)  # the large uploads are under way
        await asyncio.gather(*(small_client(c) for c in range(concurrency)))
        stop.set()
        await asyncio.gather(*background)
    ms = np.array(latencies) * 1000
    return {
        "small_requests": len(latencies),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "max_ms": float(ms.max()),
        "background_done": background_done,
        "errors": len(errors),
        "error_samples": errors[:3],
    }


def run_server(args: argparse.Namespace, lanes: str, large: tuple[str, bytes]) -> list[dict]:
    """Both loads against one server whose decoding is `lanes` ("two" or "one")."""
    server = ServerProcess(
        args.model,
        args.runtime,
        args.max_batch,
        args.max_wait_ms,
        code=SERVER_CODE,
        extra_args=(lanes,),
    )
    rows = []
    try:
        base = server.wait_for_url(timeout=180)
        wait_healthy(base, timeout=60)
        small = synthetic_posters(32)
        loads = (
            ("small alone", None),
            # The model's share: as many extra clients, sending normal posters.
            (f"with {args.large} x normal", small[0]),
            (f"with {args.large} x 16 MP", large),
        )
        for label, poster in loads:
            print(f"{lanes} lane(s): {label} ...", flush=True)
            result = asyncio.run(
                measure(base, small, poster, args.large, args.requests, args.concurrency)
            )
            rows.append({"decoding": lanes, "load": label, **result})
    finally:
        server.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="imdb-20", help="bundled name, bundle or run folder")
    parser.add_argument("--runtime", default="", help="torch or onnx (default: auto)")
    parser.add_argument("--large", type=int, default=8, help="clients uploading 16 MP posters")
    parser.add_argument("--requests", type=int, default=60, help="small uploads per measure")
    parser.add_argument("--concurrency", type=int, default=2, help="small uploads in flight")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--compare", action="store_true", help="also one lane, full decodes")
    parser.add_argument("--name", default="serve_large_uploads", help="results/NAME.json")
    args = parser.parse_args()
    large = large_poster()
    print(f"large poster: {large[0]}, {len(large[1]) / 1e6:.1f} MB", flush=True)
    rows = run_server(args, "two", large)
    if args.compare:
        rows += run_server(args, "one", large)
    print()
    columns = ["decoding", "load", "small_requests", "p50_ms", "p95_ms", "max_ms"]
    print_table(rows, [*columns, "background_done", "errors"])
    settings = {k: getattr(args, k) for k in ("model", "runtime", "large", "requests")}
    payload = {"settings": {**settings, "concurrency": args.concurrency}, "rows": rows}
    print(f"wrote {write_result(args.name, payload)}")
    return 0 if all(row["errors"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
