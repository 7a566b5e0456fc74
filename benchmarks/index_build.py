"""What `postergenre index` costs on the 5,071 shared training posters, as whole commands.

Steps, each a fresh `python -m postergenre` process (what a user runs), into one index folder:
  1. embeddings only (`--no-predict`), a new folder;
  2. embeddings + the imdb-20 probabilities of every poster (the default), a new folder: the
     difference to step 1 is the cost of the prediction pass;
  3. the same command again: nothing new, every poster kept (what a second `make demo` does);
  4. 10 posters added (new files, cached nowhere) to the same posters named by a list: only
     those 10 are embedded and scored;
  5. `similar` by id, as a whole command, and `PosterIndex.similar` in process (by id, and for
     a poster file outside the index).
Steps 1-2 read embeddings and decoded posters from the cache when it holds them (it says so).

    python benchmarks/index_build.py [--model imdb-20] [--work /tmp/index-bench]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, print_table, require_data, write_result
from PIL import Image, ImageOps


def _run(argv: list[str]) -> tuple[float, str]:
    """Seconds one CLI command took, and its last stderr line."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "postergenre", *argv], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{done.stderr}")
    return seconds, (done.stderr.strip().splitlines() or [""])[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="imdb-20")
    parser.add_argument("--work", type=Path, default=Path("/tmp/index-bench"))
    args = parser.parse_args()
    data = require_data()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    labels = ["--labels", str(data / "train.csv"), "--splits", str(data / "splits.csv")]
    labels += ["--images", str(data / "images"), "--split", "train"]
    out = args.work / "idx"
    rows = []

    seconds, said = _run(["index", *labels, "--out", str(args.work / "plain"), "--no-predict"])
    rows.append({"step": "embeddings only (--no-predict)", "seconds": seconds, "said": said})
    seconds, said = _run(["index", *labels, "--out", str(out), "--model", args.model])
    rows.append({"step": f"embeddings + {args.model} probabilities", "seconds": seconds,
                 "said": said})  # fmt: skip
    seconds, said = _run(["index", *labels, "--out", str(out), "--model", args.model])
    rows.append({"step": "again: nothing new", "seconds": seconds, "said": said})

    train = [line.split(",")[0] for line in (data / "splits.csv").read_text().splitlines()[1:]
             if line.rstrip().endswith(",train")]  # fmt: skip
    val = [line.split(",")[0] for line in (data / "splits.csv").read_text().splitlines()[1:]
           if line.rstrip().endswith(",val")][:10]  # fmt: skip
    extra = args.work / "extra"
    extra.mkdir()
    for poster_id in val:  # mirrored copies: files no cache has seen
        ImageOps.mirror(Image.open(data / "images" / f"{poster_id}.jpg")).save(
            extra / f"{poster_id}-mirrored.jpg", quality=90
        )
    listing = args.work / "posters.txt"
    paths = [str(data / "images" / f"{i}.jpg") for i in train]
    paths += [str(p) for p in sorted(extra.iterdir())]
    listing.write_text("\n".join(paths) + "\n")
    seconds, said = _run(["index", str(listing), "--out", str(out), "--model", args.model])
    rows.append({"step": "10 posters added", "seconds": seconds, "said": said})

    seconds, said = _run(["similar", train[0], "--index", str(out)])
    rows.append({"step": "similar ID (whole command)", "seconds": seconds, "said": ""})
    rows.append(_in_process(out, train[0], data / "images" / f"{val[-1]}.jpg"))
    print_table(rows, ["step", "seconds", "said"])
    print(f"\nwrote {write_result('index_build', {'model': args.model, 'rows': rows})}")


def _in_process(out: Path, poster_id: str, outside: Path) -> dict[str, object]:
    """Median milliseconds of `PosterIndex.similar` by id and for a file outside the index."""
    sys.path.insert(0, str(REPO / "src"))
    from postergenre.inference.similarity import PosterIndex

    started = time.perf_counter()
    index = PosterIndex.load(out)
    load_s = time.perf_counter() - started
    index.similar(outside, 8)  # loads the backbone once
    by_id, by_file = [], []
    for _ in range(20):
        started = time.perf_counter()
        index.similar(poster_id, 8)
        by_id.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        index.similar(outside, 8)
        by_file.append((time.perf_counter() - started) * 1000)
    said = (f"load {load_s:.2f} s; by id {statistics.median(by_id):.1f} ms, a file outside "
            f"{statistics.median(by_file):.1f} ms (median of 20)")  # fmt: skip
    return {"step": "similar in process", "seconds": None, "said": said}


if __name__ == "__main__":
    main()
