"""Similar-poster search at scale: query latency of `PosterIndex` over N posters (default 100k).

Uses random unit vectors of the real embedding size (1280) in place of real posters, since the
search cost depends only on N and the dimension; the embedding of the query poster itself
(one backbone forward) is measured separately by runtime_speed.py.

    python benchmarks/similar_search.py [--n 100000] [--queries 200] [--k 8]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import print_table, write_result

from postergenre.inference.similarity import PosterIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    items = [{"id": f"p{i}", "path": f"p{i}.jpg", "genres": []} for i in range(args.n)]
    started = time.perf_counter()
    index = PosterIndex("efficientnet-lite0", items, vectors)
    build_seconds = time.perf_counter() - started
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    index.search(queries[:5], args.k)  # warm-up
    latencies = []
    for query in queries:
        started = time.perf_counter()
        index.search(query[None, :], args.k)
        latencies.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    index.search(queries, args.k)
    batch_ms = (time.perf_counter() - started) * 1000 / len(queries)
    # Exactness: the index returns the true top-k by cosine similarity.
    [found] = index.search(queries[:1], args.k)
    truth = np.argsort(-(index.vectors @ (queries[0] / np.linalg.norm(queries[0]))))[: args.k]
    exact = [n.id for n in found] == [f"p{i}" for i in truth]
    row = {
        "posters": args.n,
        "dim": args.dim,
        "k": args.k,
        "build_s": build_seconds,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "batched_ms_per_query": batch_ms,
        "exact": exact,
    }
    print_table([row], list(row))
    print(f"\nwrote {write_result('similar_search', {'rows': [row]})}")


if __name__ == "__main__":
    main()
