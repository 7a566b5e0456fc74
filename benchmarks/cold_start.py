"""Cold start: wall seconds of whole `postergenre` commands as a user runs them.

Each command runs as a fresh process of the venv's `postergenre` console script, once untimed
(to warm the OS file cache, and to export the ONNX graph into the cache for the predicts), then
`--runs` times; the table shows min / median / max and the targets next to the medians:

- `postergenre --help`, a bad argument (`predict --top x`) and a missing poster: <= 0.3 s
  (exit 0, 2 and 2);
- `postergenre predict ONE.jpg` with the default runtime: <= 1.0 s;
- `postergenre predict ONE.jpg --runtime torch` and `postergenre models`: no target.

ONE.jpg is the first test poster of the shared data (`splits.csv`), or a generated 224x336 JPEG
without it. The heavy modules the default-runtime predict imports are found once with
`python -X importtime -m postergenre predict ONE.jpg`. A fresh `$POSTERGENRE_CACHE` is used
unless `--cache-dir` is given.

    python benchmarks/cold_start.py [--runs 7] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import DATA, print_table, write_result

HEAVY_MODULES = ("torch", "sklearn", "matplotlib")
IMPORTS_COLUMN = "imports torch/sklearn/matplotlib"
DEFAULT_PREDICT = "predict ONE.jpg (default runtime)"
COMMAND_TIMEOUT_S = 600


@dataclass(frozen=True)
class Case:
    """One command to time: its arguments after the program, exit status and target."""

    name: str
    args: list[str]
    expected_exit: int = 0
    target_s: float | None = None
    python: bool = False  # run `python ARGS` rather than `postergenre ARGS`


def first_test_poster() -> Path | None:
    """The shared data's first test-split poster that exists, if the data is here."""
    splits = DATA / "splits.csv"
    if not splits.is_file():
        return None
    with splits.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if (row.get("split") or "").strip() == "test":
                path = DATA / "images" / f"{row['id'].strip()}.jpg"
                if path.is_file():
                    return path
    return None


def generated_poster(folder: Path) -> Path:
    """A 224x336 JPEG (the shared posters' shape): smooth colours plus noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:336, 0:224]
    base = np.stack([x / 224 * 200, y / 336 * 180, (x + y) / 560 * 220], axis=-1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    path = folder / "poster.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    return path


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of one process, start to exit, and its result."""
    started = time.perf_counter()
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    return time.perf_counter() - started, done


def heavy_imports(poster: Path, env: dict[str, str]) -> dict[str, float]:
    """Heavy top-level modules `predict POSTER` imports -> their cumulative import seconds."""
    argv = [sys.executable, "-X", "importtime", "-m", "postergenre", "predict", str(poster)]
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        print(f"warning: {' '.join(argv[1:])} exited {done.returncode}", file=sys.stderr)
    found: dict[str, float] = {}
    # "import time: self [us] | cumulative | imported package", nested names indented
    for line in done.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        top = parts[2].strip().split(".")[0]
        if top in HEAVY_MODULES:
            found[top] = max(found.get(top, 0.0), int(parts[1]) / 1e6)
    return found


def _fail_note(case: Case, done: subprocess.CompletedProcess) -> str:
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return f"{case.name}: exit {done.returncode}, expected {case.expected_exit}: " + " / ".join(
        tail
    )


def measure(case: Case, program: Path, runs: int, env: dict[str, str]) -> dict[str, Any]:
    """One warm-up run, then RUNS timed ones."""
    argv = [sys.executable if case.python else str(program), *case.args]
    problems: list[str] = []
    _, done = run_once(argv, env)  # untimed: warms the OS cache, exports the ONNX graph
    if done.returncode != case.expected_exit:
        problems.append(_fail_note(case, done))
    times = []
    for _ in range(runs):
        seconds, done = run_once(argv, env)
        times.append(seconds)
        if done.returncode != case.expected_exit and not problems:
            problems.append(_fail_note(case, done))
    median = statistics.median(times)
    row: dict[str, Any] = {
        "command": case.name,
        "min_s": min(times),
        "median_s": median,
        "max_s": max(times),
        "target_s": case.target_s,
        "meets_target": None if case.target_s is None else median <= case.target_s,
        "exit": done.returncode,
        "expected_exit": case.expected_exit,
        "argv": argv,
        "times_s": times,
    }
    if problems:
        row["problem"] = problems[0]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per command (default 7)")
    parser.add_argument(
        "--cache-dir", type=Path, help="POSTERGENRE_CACHE for the commands (default: a fresh one)"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    program = Path(sys.executable).parent / "postergenre"
    if not program.is_file():
        sys.exit(f"{program} not found: run this with the venv's python (pip install -e .)")

    with tempfile.TemporaryDirectory(prefix="cold-start-") as scratch:
        cache = args.cache_dir or Path(scratch) / "cache"
        env = {**os.environ, "POSTERGENRE_CACHE": str(cache)}
        poster = first_test_poster()
        source = "shared data, first test poster"
        if poster is None:
            poster, source = generated_poster(Path(scratch)), "generated 224x336 JPEG"
        print(f"poster: {poster} ({source}); cache: {cache}; {args.runs} runs each\n")
        cases = [
            Case("python -c pass (interpreter only)", ["-c", "pass"], python=True),
            Case("--help", ["--help"], 0, 0.3),
            Case("predict --top x (bad argument)", ["predict", "--top", "x", "poster.jpg"], 2, 0.3),
            Case("predict /nonexistent/poster.jpg", ["predict", "/nonexistent/poster.jpg"], 2, 0.3),
            Case(DEFAULT_PREDICT, ["predict", str(poster)], 0, 1.0),
            Case("predict ONE.jpg --runtime torch", ["predict", str(poster), "--runtime", "torch"]),
            Case("models", ["models"]),
        ]
        rows = [measure(case, program, args.runs, env) for case in cases]
        # after the timed runs, so the graph is cached as in the timed default-runtime predict
        imports = heavy_imports(poster, env)

    [default_predict] = [r for r in rows if r["command"] == DEFAULT_PREDICT]
    default_predict[IMPORTS_COLUMN] = ", ".join(sorted(imports)) or "none"
    table = [
        {
            "command": r["command"],
            "min_s": r["min_s"],
            "median_s": r["median_s"],
            "max_s": r["max_s"],
            "target": "" if r["target_s"] is None else f"<= {r['target_s']:g} s",
            "ok": "" if r["meets_target"] is None else ("yes" if r["meets_target"] else "NO"),
            "exit": r["exit"] if r["exit"] == r["expected_exit"] else f"{r['exit']} (!)",
            IMPORTS_COLUMN: r.get(IMPORTS_COLUMN, ""),
        }
        for r in rows
    ]
    print_table(table, list(table[0]))
    problems = [r["problem"] for r in rows if "problem" in r]
    for problem in problems:
        print(f"\nunexpected exit status: {problem}", file=sys.stderr)
    payload = {
        "runs": args.runs,
        "poster": str(poster),
        "poster_source": source,
        "cache": "given" if args.cache_dir else "fresh",
        "heavy_imports_default_predict_s": imports,
        "rows": rows,
    }
    print(f"\nwrote {write_result('cold_start', payload)}")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
