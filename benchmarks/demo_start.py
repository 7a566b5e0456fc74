"""What a newcomer waits for in `make demo`: from `serve` starting to the page answering, and to
the similar-poster index being ready (built in the background from the 5,071 training posters).

Runs the demo's serve command (scripts/demo.sh) on a free port, polls `/healthz`, then
`/api/info` every second, and reports both times; run it twice for the second `make demo`
(the index is then only checked for changes). `--cold` starts from an empty cache except the
exported imdb-20 graph (which the demo's `predict` step makes before serving), as on a fresh
clone: every poster is decoded, embedded and scored.

    python benchmarks/demo_start.py [--cold] [--work /tmp/demo-start] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from _common import REPO, print_table, require_data, write_result


def _get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("/tmp/demo-start"))
    parser.add_argument("--keep", action="store_true", help="reuse the index of a last run")
    parser.add_argument("--page-only", action="store_true", help="stop once the page is up")
    args = parser.parse_args()
    data = require_data()
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    if args.cold:
        cache = args.work / "cache"
        user_onnx = Path.home() / ".cache" / "postergenre" / "onnx"
        if not (cache / "onnx").exists():
            shutil.copytree(user_onnx, cache / "onnx")  # what `predict` left there
        env["POSTERGENRE_CACHE"] = str(cache)
    argv = [
        sys.executable,
        "-m",
        "postergenre",
        "serve",
        "--port",
        "0",
        "--index",
        str(args.work / "demo-index"),
        "--labels",
        str(data / "train.csv"),
        "--splits",
        str(data / "splits.csv"),
        "--images",
        str(data / "images"),
        "--split",
        "train",
    ]
    started = time.perf_counter()
    server = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = None
    log: list[str] = []
    try:
        assert server.stdout is not None
        for line in server.stdout:  # the URL line comes once the socket listens
            log.append(line)
            found = re.search(r"open (http://\S+) in a browser", line)
            if found:
                url = found.group(1)
                break
        if url is None:
            sys.exit("the server did not start:\n" + "".join(log))
        # Keep reading its output (progress lines), so a full pipe never stops the server.
        threading.Thread(target=log.extend, args=(server.stdout,), daemon=True).start()
        while _get(url + "healthz") is None:
            time.sleep(0.1)
        page_s = time.perf_counter() - started
        info: dict = {}
        while not args.page_only:
            info = (_get(url + "api/info") or {}).get("index", {})
            if info.get("state") in ("ready", "failed"):
                break
            time.sleep(1)
        ready_s = None if args.page_only else time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(30)
    row = {
        "cache": "cold" if args.cold else "warm",
        "page_up_s": page_s,
        "index_ready_s": ready_s,
        "state": info.get("state"),
        "message": info.get("message"),
    }
    print_table([row], list(row))
    name = f"demo_start-{row['cache']}" + ("-again" if args.keep else "")
    name += "-page" if args.page_only else ""
    print(f"\nwrote {write_result(name, {'rows': [row]})}")


if __name__ == "__main__":
    main()
