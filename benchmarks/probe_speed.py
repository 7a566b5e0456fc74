"""From raw posters to a trained linear probe: wall time with a cold cache, then warm.

Runs the real command twice, each in a fresh process, on the three-genre train + val splits:

    postergenre train --labels three_genre.csv --arch efficientnet-lite0 --out RUN

The first run starts from an empty cache folder (decode, embed, fit); the second reuses the
decoded posters and embeddings (load, fit). Targets: <= 180 s cold, <= 20 s warm.

    python benchmarks/probe_speed.py [--arch efficientnet-lite0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import print_table, require_data, write_result


def timed_train(data: Path, arch: str, cache: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "POSTERGENRE_CACHE": str(cache)}
    command = [
        sys.executable,
        "-m",
        "postergenre",
        "train",
        "--labels",
        str(data / "three_genre.csv"),
        "--images",
        str(data / "images"),
        "--arch",
        arch,
        "--genres",
        "Action,Comedy,Drama",
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    subprocess.run(
        command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="efficientnet-lite0")
    args = parser.parse_args()
    data = require_data()
    work = Path(tempfile.mkdtemp(prefix="probe-speed-"))
    try:
        cold = timed_train(data, args.arch, work / "cache", work / "run")
        warm = timed_train(data, args.arch, work / "cache", work / "run")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        {"arch": args.arch, "run": "cold cache", "seconds": cold, "target": 180.0},
        {"arch": args.arch, "run": "warm cache", "seconds": warm, "target": 20.0},
    ]
    print_table(rows, ["arch", "run", "seconds", "target"])
    print(f"\nwrote {write_result('probe_speed', {'rows': rows})}")


if __name__ == "__main__":
    main()
