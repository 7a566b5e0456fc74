"""How fast is the collection page's API at 10,000 and 100,000 posters?

Builds a synthetic scored collection (random 64-d embeddings, since no query reads them, and
random probabilities of 20 genres, titles and labels), serves it with the real app under
uvicorn in a child process, and times `GET /api/collection` from an httpx client (one
keep-alive connection) for the first page and for each filter, sort and search; then one
correction (`PUT /api/collection/{i}/genres`, which rewrites corrections.csv, one row per
poster), and thumbnails against full posters (`GET /api/poster/{i}[?size=256]`) on shared
posters and on a 12-megapixel one.

    python benchmarks/collection_page.py [--sizes 10000 100000] [--repeat 30]
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import statistics
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from _common import DATA, print_table, write_result

GENRES = [f"Genre{j:02d}" for j in range(20)]
QUERIES = {
    "first page (confidence)": {},
    "genre + min_p 0.5": {"genre": "Genre03", "min_p": 0.5},
    "probability 40-60%": {"min_p": 0.4, "max_p": 0.6},
    "uncertain first": {"sort": "uncertain"},
    "mislabelled first": {"sort": "mislabelled"},
    "name": {"sort": "name"},
    "search 'star'": {"q": "star"},
    "reviewed only": {"reviewed": "true"},
    "page 100 (offset 4800)": {"offset": 4800},
    "all filters + uncertain": {"genre": "Genre07", "min_p": 0.2, "q": "the", "sort": "uncertain"},
}
WORDS = [
    "the",
    "star",
    "night",
    "love",
    "war",
    "city",
    "dark",
    "last",
    "blue",
    "red",
    "man",
    "woman",
    "king",
    "story",
    "girl",
    "road",
]


def synthetic_collection(folder: Path, n: int, seed: int = 0):
    """A scored collection of N posters (their files need not exist for the list queries)."""
    from postergenre.curation.collection import Collection
    from postergenre.curation.corrections import Corrections
    from postergenre.curation.scores import Scores
    from postergenre.inference.similarity import PosterIndex

    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    items = [
        {
            "id": f"tt{i:07d}",
            "path": str(folder / "posters" / f"tt{i:07d}.jpg"),
            "shown": f"posters/tt{i:07d}.jpg",
            "title": " ".join(words[rng.integers(0, len(words), 3)]).title(),
            "genres": [GENRES[j] for j in rng.choice(20, 2, replace=False)],
            "labelled": True,
        }
        for i in range(n)
    ]
    probabilities = rng.beta(0.6, 2.0, size=(n, len(GENRES))).astype(np.float32)
    index = PosterIndex(
        "efficientnet-lite0",
        items,
        rng.normal(size=(n, 64)).astype(np.float32),
        probabilities=probabilities,
        genre_names=GENRES,
        thresholds=[0.3] * len(GENRES),
        model="synthetic",
    )
    started = time.perf_counter()
    scores = Scores.of_index(index)
    collection = Collection(index, folder, scores, Corrections(folder, index.items))
    opened = time.perf_counter() - started
    issues = SimpleNamespace(quality=rng.uniform(size=n), suggested=lambda i: [])
    collection.set_label_issues(issues)
    return collection, opened


def _serve(build: Any, args: tuple, ready: Any) -> None:
    """In the child: build the app's collection or index, serve it, say where."""
    import uvicorn

    from postergenre.inference import Predictor
    from postergenre.serving.app import create_app
    from postergenre.serving.server import bind_socket

    predictor = Predictor.from_pretrained("imdb-20-fast")  # its card only: nothing loads
    app = create_app(predictor, warmup=False, **build(*args))
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=lambda: ready.put(sock.getsockname()[1]), daemon=True).start()
    server.run(sockets=[sock])


class Served:
    """The real app under uvicorn in a child process (forked: the client's timing loop and
    the server do not share a GIL); `build(*args)` gives create_app's collection or index."""

    def __init__(self, build: Any, *args: Any):
        context = multiprocessing.get_context("fork")
        ready = context.Queue()
        self.process = context.Process(target=_serve, args=(build, args, ready), daemon=True)
        self.process.start()
        while True:
            try:
                self.url = f"http://127.0.0.1:{ready.get(timeout=1)}"
                break
            except queue.Empty:
                if not self.process.is_alive():
                    raise RuntimeError("the server process died (see above)") from None
        import httpx

        for _ in range(600):
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(30)


def _collection_app(folder: Path, n: int) -> dict[str, Any]:
    collection, _ = synthetic_collection(folder, n)
    return {"collection": collection}


def _ms(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    return statistics.median(ordered) * 1000, ordered[int(0.9 * (len(ordered) - 1))] * 1000


def time_queries(client: Any, n: int, repeat: int) -> list[dict[str, Any]]:
    rows = []
    for name, params in QUERIES.items():
        params = {"limit": 48, **params}
        started = time.perf_counter()
        first = client.get("/api/collection", params=params)
        cold = time.perf_counter() - started
        first.raise_for_status()
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            client.get("/api/collection", params=params).raise_for_status()
            times.append(time.perf_counter() - started)
        median, p90 = _ms(times)
        body = first.json()
        rows.append(
            {
                "posters": n,
                "query": name,
                "matches": body["total"],
                "first_ms": round(cold * 1000, 1),
                "median_ms": round(median, 1),
                "p90_ms": round(p90, 1),
                "bytes": len(first.content),
            }
        )
    return rows


def time_correction(client: Any, n: int, repeat: int) -> dict[str, Any]:
    times = []
    for i in range(repeat):
        started = time.perf_counter()
        response = client.put(f"/api/collection/{i}/genres", json={"genres": ["Genre01"]})
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    median, p90 = _ms(times)
    return {"posters": n, "median_ms": round(median, 1), "p90_ms": round(p90, 1)}


def _thumbnail_app(paths: list[Path]) -> dict[str, Any]:
    from postergenre.inference.similarity import PosterIndex

    items = [
        {"id": p.stem, "path": str(p), "shown": str(p), "genres": [], "labelled": False}
        for p in paths
    ]
    vectors = np.eye(len(items), 8, dtype=np.float32)
    return {"index": PosterIndex("efficientnet-lite0", items, vectors)}


def time_thumbnails(repeat: int) -> list[dict[str, Any]]:
    """Full posters against 384-px thumbnails (the page's), for shared posters and a 12 MP one."""
    import httpx
    from PIL import Image

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.jpg"
        rng = np.random.default_rng(0)
        ramp = np.linspace(0, 255, 4242, dtype=np.float32)[:, None, None]
        pixels = ramp + rng.normal(0, 8, (4242, 2828, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(big, quality=90)
        images = DATA / "images"
        shared = sorted(images.glob("*.jpg"))[:48] if images.is_dir() else []
        served = Served(_thumbnail_app, [big, *shared])
        groups = {"one 12 MP poster": [0], f"{len(shared)} shared posters": list(range(1, 49))}
        try:
            with httpx.Client(base_url=served.url, timeout=60) as client:
                for group, positions in groups.items():
                    if group.startswith("0 "):
                        continue
                    for size in (None, 384):
                        params = {"size": size} if size else {}
                        times, total = [], 0
                        for _ in range(repeat if len(positions) == 1 else 3):
                            started = time.perf_counter()
                            total = sum(
                                len(client.get(f"/api/poster/{i}", params=params).content)
                                for i in positions
                            )
                            times.append(time.perf_counter() - started)
                        rows.append(
                            {
                                "posters": group,
                                "request": "full file" if size is None else f"?size={size}",
                                "bytes": total,
                                "median_ms": round(_ms(times)[0], 1),
                            }
                        )
        finally:
            served.stop()
    return rows


def main() -> None:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    query_rows, correction_rows, opened = [], [], {}
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            _, seconds = synthetic_collection(Path(tmp) / "timing", n)
            opened[n] = round(seconds, 3)
            served = Served(_collection_app, Path(tmp), n)
            try:
                with httpx.Client(base_url=served.url, timeout=60) as client:
                    query_rows += time_queries(client, n, args.repeat)
                    correction_rows.append(time_correction(client, n, min(args.repeat, 10)))
            finally:
                served.stop()
    columns = ["posters", "query", "matches", "first_ms", "median_ms", "p90_ms", "bytes"]
    print_table(query_rows, columns)
    print()
    print("open the collection (arrays built once):", opened, "seconds")
    print("one correction (PUT; rewrites corrections.csv):")
    print_table(correction_rows, ["posters", "median_ms", "p90_ms"])
    thumbs = time_thumbnails(args.repeat)
    print()
    print_table(thumbs, ["posters", "request", "bytes", "median_ms"])
    path = write_result(
        "collection_page",
        {
            "client": "httpx, one keep-alive connection, against uvicorn in a child process",
            "limit": 48,
            "open_seconds": opened,
            "queries": query_rows,
            "corrections": correction_rows,
            "thumbnails": thumbs,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
