"""Finding duplicate posters: pairwise precision and recall on planted copies, film series as
hard negatives, and the time to group ~10,000 posters.

The collection is the 7,242 shared posters plus `--per-kind` planted copies of each kind
(exact, resize, recompress, crop, border, mirror, text; see _planted.py), written to a temporary
folder. Posters are split in two halves by their source poster: thresholds are tuned on the
validation half (highest recall with precision >= 0.99, no series pair grouped, and at most one
false pair per 1,000 of the shared posters among themselves: a false pair costs a person a
look, and real collections hold fewer copies than this one; thresholds: embedding similarity,
hash distance, and the similarity that confirms a hash match), and
precision and recall are reported on the held-out test half with 95% bootstrap intervals
(1,000 resamples of source posters). Timing: the first run (whatever the cache lacks is
embedded), a warm run (everything cached), and a cold run on a sample with an empty cache.

    python benchmarks/duplicates.py [--per-kind 400] [--cold-sample 500] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import zlib
from itertools import combinations
from pathlib import Path

import numpy as np
from _common import print_table, require_data, write_result
from _planted import EXPECTED_KIND, PLANTED_KINDS, SERIES, build_or_reuse

from postergenre.curation.duplicates import (
    DuplicateGroup,
    Thresholds,
    find_duplicates,
    fingerprint_collection,
    group_duplicates,
)

SIMILARITIES = (0.86, 0.88, 0.90, 0.92)
HASH_DISTANCES = (8, 10, 12)
HASH_CONFIRMS = (0.6, 0.7, 0.8)
# False pairs among the shared posters themselves, per 1,000 of them: what a person would see
# in a real collection, where copies are rarer than in the planted one.
MAX_FALSE_PER_1000 = 1.0
MIN_PRECISION = 0.99
BOOT = 1000


class Truth:
    """Ground truth over the collection's items: source poster, planted kind, half."""

    def __init__(self, sources: list[str], kinds: list[str]):
        self.sources = sources
        self.kinds = kinds
        names = sorted(set(sources))
        self.source_index = {s: i for i, s in enumerate(names)}
        self.src = np.array([self.source_index[s] for s in sources])
        self.half = np.array([zlib.crc32(s.encode()) % 2 for s in sources])  # 0 val, 1 test
        self.series = {}
        for name, ids in SERIES.items():
            for poster in ids.split():
                self.series[poster] = name
        by_source: dict[int, list[int]] = {}
        for i, s in enumerate(self.src):
            by_source.setdefault(int(s), []).append(i)
        self.true_pairs = {
            (a, b) for members in by_source.values() for a, b in combinations(sorted(members), 2)
        }

    def pair_kind(self, a: int, b: int) -> str:
        pair = {self.kinds[a], self.kinds[b]}
        if pair == {"original"}:
            return "shared set"  # KNOWN_SAME
        return (pair - {"original"}).pop() if "original" in pair else "copy-copy"

    def is_series_pair(self, a: int, b: int) -> bool:
        sa, sb = self.sources[a], self.sources[b]
        return sa != sb and sa in self.series and self.series.get(sb) == self.series[sa]


def predicted_pairs(groups: list[DuplicateGroup], position: dict[str, int]) -> set[tuple[int, int]]:
    pairs = set()
    for group in groups:
        members = sorted(position[m.path] for m in group.members)
        pairs.update(combinations(members, 2))
    return pairs


def _interval(
    num: np.ndarray, den: np.ndarray, rng: np.random.Generator
) -> tuple[float, float, float]:
    """Ratio of sums and its 95% cluster-bootstrap interval (clusters: source posters)."""
    n = len(num)
    point = float(num.sum() / den.sum()) if den.sum() else float("nan")
    stats = []
    for _ in range(BOOT):
        w = np.bincount(rng.integers(0, n, n), minlength=n)
        d = (w * den).sum()
        stats.append((w * num).sum() / d if d else np.nan)
    low, high = np.nanpercentile(stats, [2.5, 97.5])
    return point, float(low), float(high)


def evaluate(truth: Truth, pairs: set[tuple[int, int]], half: int, boot: bool) -> dict:
    """Pairwise precision and recall on one half (a pair belongs to a half when either
    poster's source does, so a false pair across halves counts against both)."""
    rng = np.random.default_rng(0)
    n_src = len(truth.source_index)
    in_half = lambda a, b: truth.half[a] == half or truth.half[b] == half  # noqa: E731
    tp, fp, fn = np.zeros(n_src), np.zeros(n_src), np.zeros(n_src)
    per_kind = {
        k: (np.zeros(n_src), np.zeros(n_src)) for k in (*PLANTED_KINDS, "copy-copy", "shared set")
    }
    for a, b in truth.true_pairs:
        if not in_half(a, b):
            continue
        found = (a, b) in pairs
        s = truth.src[a]
        (tp if found else fn)[s] += 1
        hit, total = per_kind[truth.pair_kind(a, b)]
        hit[s] += found
        total[s] += 1
    series_pairs = original_false = 0
    for a, b in pairs:
        if in_half(a, b) and (a, b) not in truth.true_pairs:
            fp[truth.src[a]] += 1
            series_pairs += truth.is_series_pair(a, b)
            original_false += truth.kinds[a] == truth.kinds[b] == "original"
    originals = sum(
        1 for i, k in enumerate(truth.kinds) if k == "original" and truth.half[i] == half
    )
    result = {
        "precision": float(tp.sum() / max(tp.sum() + fp.sum(), 1)),
        "recall": float(tp.sum() / max(tp.sum() + fn.sum(), 1)),
        "true_pairs": int(tp.sum() + fn.sum()),
        "false_pairs": int(fp.sum()),
        "series_pairs_grouped": series_pairs,
        "false_per_1000_originals": 1000 * original_false / originals,
    }
    if boot:
        result["precision_ci"] = _interval(tp, tp + fp, rng)[1:]
        result["recall_ci"] = _interval(tp, tp + fn, rng)[1:]
        result["per_kind"] = {
            k: dict(
                zip(("recall", "low", "high"), _interval(hit, total, rng), strict=True),
                pairs=int(total.sum()),
            )
            for k, (hit, total) in per_kind.items()
        }
    return result


def kind_agreement(truth: Truth, groups: list[DuplicateGroup], position: dict[str, int]) -> dict:
    """For each planted kind: how often its group reports the kind it should (exact / same
    image / variant), among copies grouped with their source and nothing else."""
    counts: dict[str, list[int]] = {k: [0, 0] for k in PLANTED_KINDS}
    for group in groups:
        members = [position[m.path] for m in group.members]
        if len(members) != 2 or truth.src[members[0]] != truth.src[members[1]]:
            continue
        kind = truth.pair_kind(*sorted(members))
        if kind in counts:
            counts[kind][0] += group.kind == EXPECTED_KIND[kind]
            counts[kind][1] += 1
    return {k: (hit / total if total else None) for k, (hit, total) in counts.items()}


def tune(truth: Truth, collection, position: dict[str, int]) -> list[dict]:
    rows = []
    for sim in SIMILARITIES:
        for dist in HASH_DISTANCES:
            for confirm in HASH_CONFIRMS:
                picked = Thresholds(similarity=sim, hash_distance=dist, hash_confirm=confirm)
                groups = group_duplicates(collection, picked)
                scores = evaluate(truth, predicted_pairs(groups, position), half=0, boot=False)
                rows.append(
                    {"similarity": sim, "hash_distance": dist, "hash_confirm": confirm, **scores}
                )
    return rows


def choose(rows: list[dict]) -> dict:
    ok = [
        r
        for r in rows
        if r["precision"] >= MIN_PRECISION
        and r["series_pairs_grouped"] == 0
        and r["false_per_1000_originals"] <= MAX_FALSE_PER_1000
    ]
    return max(
        ok or rows,
        key=lambda r: (r["recall"], r["similarity"], r["hash_confirm"], -r["hash_distance"]),
    )


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=400)
    parser.add_argument("--cold-sample", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir",
        type=Path,
        help="plant the copies here and reuse them next time (default: a temporary folder)",
    )
    args = parser.parse_args()
    data = require_data()
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="planted-") as tmp:
        home = args.workdir or Path(tmp)
        planted = build_or_reuse(data / "images", home / "posters", args.per_kind, args.seed)
        listing = Path(tmp) / "collection.txt"
        listing.write_text("\n".join(str(p) for p in planted.paths) + "\n")
        position = {str(p.resolve()): i for i, p in enumerate(planted.paths)}
        truth = Truth(planted.sources, planted.kinds)

        started = time.perf_counter()
        find_duplicates(listing, progress=True)
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        collection = fingerprint_collection(listing)
        fingerprint_s = time.perf_counter() - started
        started = time.perf_counter()
        groups = group_duplicates(collection, Thresholds())
        group_s = time.perf_counter() - started
        assert len(collection) == len(planted.paths), "every planted poster is readable"

        grid = tune(truth, collection, position)
        chosen = choose(grid)
        picked = Thresholds(
            chosen["similarity"], chosen["hash_distance"], hash_confirm=chosen["hash_confirm"]
        )
        test_groups = group_duplicates(collection, picked)
        test = evaluate(truth, predicted_pairs(test_groups, position), half=1, boot=True)
        default_test = evaluate(truth, predicted_pairs(groups, position), half=1, boot=True)
        originals = [
            g
            for g in groups
            if all(planted.kinds[position[m.path]] == "original" for m in g.members)
        ]

        cold_s = None
        if args.cold_sample:
            rng = np.random.default_rng(args.seed)
            sample = rng.choice(
                len(planted.paths), min(args.cold_sample, len(planted.paths)), replace=False
            )
            sample_list = Path(tmp) / "sample.txt"
            sample_list.write_text("\n".join(str(planted.paths[i]) for i in sample) + "\n")
            with tempfile.TemporaryDirectory(prefix="cold-cache-") as cache:
                started = time.perf_counter()
                find_duplicates(sample_list, cache_dir=Path(cache), progress=True)
                cold_s = time.perf_counter() - started

    timing = {
        "posters": len(planted.paths),
        "first_run_s": first_s,
        "warm_fingerprints_s": fingerprint_s,
        "warm_grouping_s": group_s,
        "warm_total_s": fingerprint_s + group_s,
        "cold_sample": args.cold_sample,
        "cold_sample_s": cold_s,
        "cold_per_10k_s": cold_s / args.cold_sample * 10_000 if cold_s else None,
        "load_start": load_start,
        "load_end": load_average(),
    }
    print(
        "\nTuning on the validation half (precision >= 0.99, no series pair, "
        "<= 1 false pair per 1,000 shared posters):"
    )
    print_table(
        grid,
        [
            "similarity",
            "hash_distance",
            "hash_confirm",
            "precision",
            "recall",
            "false_pairs",
            "series_pairs_grouped",
            "false_per_1000_originals",
        ],
    )
    print(f"\nchosen: {picked}")
    print("\nHeld-out test half, per planted kind (recall, 95% interval):")
    agreement = kind_agreement(truth, test_groups, position)
    kind_rows = [
        {
            "kind": k,
            "pairs": v["pairs"],
            "recall": v["recall"],
            "low": v["low"],
            "high": v["high"],
            "reported as": EXPECTED_KIND.get(k, ""),
            "agreement": agreement.get(k),
        }
        for k, v in test["per_kind"].items()
    ]
    print_table(kind_rows, ["kind", "pairs", "recall", "low", "high", "reported as", "agreement"])
    overall = {
        "precision": test["precision"],
        "p_low": test["precision_ci"][0],
        "p_high": test["precision_ci"][1],
        "recall": test["recall"],
        "r_low": test["recall_ci"][0],
        "r_high": test["recall_ci"][1],
        "false_pairs": test["false_pairs"],
        "series_pairs_grouped": test["series_pairs_grouped"],
    }
    print("\nHeld-out test half, overall:")
    print_table([overall], list(overall))
    print("\nTiming:")
    print_table([timing], list(timing))
    print(f"\ngroups among the shared posters alone (defaults): {len(originals)}")
    for g in originals[:20]:
        print(
            f"  {g.kind:<10} {g.similarity:.3f}  " + "  ".join(Path(m.path).stem for m in g.members)
        )
    payload = {
        "per_kind": args.per_kind,
        "grid_val": grid,
        "chosen": {
            "similarity": picked.similarity,
            "hash_distance": picked.hash_distance,
            "hash_confirm": picked.hash_confirm,
        },
        "test": test,
        "test_at_defaults": default_test,
        "kind_agreement": agreement,
        "timing": timing,
        "groups_among_originals": [g.to_json() for g in originals],
    }
    print(f"\nwrote {write_result('duplicates', payload)}")


if __name__ == "__main__":
    main()
