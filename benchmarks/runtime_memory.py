"""Peak memory of ONNX Runtime against OpenVINO, and the OpenVINO knobs that might change it.

Each configuration runs in a fresh process that loads a bundled model the way `postergenre
predict` does (allocator tuned, `Predictor.from_pretrained`) and predicts `--n` shared posters
(decoded in that process: `workers=0`, so every byte counted is the runtime's or the poster's).
The process reports its resident memory from /proc/self/status: after loading (VmRSS, and
VmHWM, the peak so far) and at the end (the peak of the whole run), with load time and
posters/s. The exported graph is made once beforehand, so no run pays for an export.

    python benchmarks/runtime_memory.py [--model imdb-20-fast imdb-20] [--n 192]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import print_table, require_data, write_result

W = {"@chunk": "0"}  # whole batches
# name -> (runtime, OpenVINO compile properties over the runner's, extra environment (and
# @chunk: posters per OpenVINO call, 0 for whole batches), static batch)
CONFIGS: dict[str, tuple[str, dict[str, Any], dict[str, str], int | None]] = {
    "onnx": ("onnx", {}, {}, None),
    "openvino, chunks of 4 (shipped)": ("openvino", {}, {}, None),
    "openvino, whole batches of 32 (before)": ("openvino", {}, {"@chunk": "0"}, None),
    "openvino, chunks of 8": ("openvino", {}, {"@chunk": "8"}, None),
    "openvino, chunks of 4, static batch 4": ("openvino", {}, {"@chunk": "4"}, 4),
    # the compile and allocator knobs, each on whole batches (the runner before the fix)
    "whole batches, THROUGHPUT": ("openvino", {"PERFORMANCE_HINT": "THROUGHPUT"}, W, None),
    "whole batches, NUM_STREAMS=1": ("openvino", {"NUM_STREAMS": 1}, W, None),
    "whole batches, 1 thread": ("openvino", {"INFERENCE_NUM_THREADS": 1}, W, None),
    "whole batches, CACHE_DIR": ("openvino", {"CACHE_DIR": "@cache"}, W, None),
    "whole batches, static batch 32": ("openvino", {}, W, 32),
    "whole batches, bf16": ("openvino", {"INFERENCE_PRECISION_HINT": "bf16"}, W, None),
    "whole batches, glibc defaults": ("openvino", {}, {**W, "@untuned": "1"}, None),
    "whole batches, MALLOC_ARENA_MAX=2": ("openvino", {}, {**W, "MALLOC_ARENA_MAX": "2"}, None),
    "onnx, glibc defaults": ("onnx", {}, {"@untuned": "1"}, None),
}
# glibc's own defaults, set in the environment so `tune_allocator` leaves them alone.
GLIBC_DEFAULTS = {
    "MALLOC_MMAP_THRESHOLD_": "131072",
    "MALLOC_TRIM_THRESHOLD_": "131072",
    "MALLOC_TOP_PAD_": "131072",
}


def _status() -> dict[str, float]:
    """VmRSS and VmHWM of this process, in MB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in this (fresh) process."""
    from postergenre._allocator import tune_allocator

    tune_allocator()
    from postergenre.inference import Predictor
    from postergenre.inference.graph_cache import GraphCache

    started = time.perf_counter()
    predictor = Predictor.from_pretrained(spec["model"], spec["runtime"], None)
    config = dict(spec["config"])
    chunk = spec.get("chunk")  # None: the runner's default; 0: whole batches
    if spec["runtime"] == "openvino" and (config or spec["batch"] or chunk is not None):
        import openvino as ov

        from postergenre.inference.openvino_runtime import OpenVinoRunner

        if config.get("CACHE_DIR") == "@cache":
            config["CACHE_DIR"] = spec["ov_cache"]
        if spec["batch"]:
            compile_model = ov.Core.compile_model
            spec_in = predictor.input_spec
            shape = [spec["batch"], 3, spec_in.height, spec_in.width]

            def static(self: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
                model.reshape({model.inputs[0]: shape})
                return compile_model(self, model, *args, **kwargs)

            ov.Core.compile_model = static
        path = GraphCache.of(predictor.card.architecture, predictor.digest, None).path
        chunking = {} if chunk is None else {"chunk": chunk or None}
        predictor.onnx_runner = OpenVinoRunner(path, config=config, **chunking)
    predictor.ready()
    loaded = time.perf_counter()
    after_load = _status()
    predictions = predictor.predict(spec["paths"], workers=0, progress_bar=False)
    done = time.perf_counter()
    final = _status()
    return {
        "posters": len(predictions),
        "load_s": round(loaded - started, 2),
        "posters_per_s": round(len(predictions) / (done - loaded), 1),
        "rss_after_load_mb": round(after_load["VmRSS"]),
        "peak_during_load_mb": round(after_load["VmHWM"]),
        "peak_mb": round(final["VmHWM"]),
        "rss_end_mb": round(final["VmRSS"]),
    }


def run_config(name: str, model: str, paths: list[str], ov_cache: str) -> dict[str, Any]:
    runtime, config, env_extra, batch = CONFIGS[name]
    env, chunk = dict(os.environ), None
    for key, value in env_extra.items():
        if key == "@untuned":
            env.update(GLIBC_DEFAULTS)
        elif key == "@chunk":
            chunk = int(value)
        else:
            env[key] = value
    spec = {"model": model, "runtime": runtime, "config": config, "batch": batch, "chunk": chunk,
            "paths": paths, "ov_cache": ov_cache}  # fmt: skip
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return {"model": model, "config": name, "error": out.stderr.strip().splitlines()[-1]}
    return {"model": model, "config": name, **json.loads(out.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", nargs="+", default=["imdb-20-fast", "imdb-20"])
    parser.add_argument("--n", type=int, default=192, help="posters (a multiple of 32)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS)[:5])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--name", default="runtime_memory")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    data = require_data()
    paths = sorted(str(p) for p in (data / "images").glob("*.jpg"))[: args.n]
    import tempfile

    from postergenre.inference import Predictor

    rows = []
    with tempfile.TemporaryDirectory(prefix="pg-ov-cache-") as ov_cache:
        for model in args.model:
            Predictor.from_pretrained(model, "onnx").ready()  # the graph, exported once
            for _ in range(args.repeats):
                for name in args.configs:
                    rows.append(run_config(name, model, paths, ov_cache))
                    print(json.dumps(rows[-1]), file=sys.stderr)
    columns = ["model", "config", "load_s", "posters_per_s", "rss_after_load_mb",
               "peak_during_load_mb", "peak_mb", "rss_end_mb", "error"]  # fmt: skip
    print_table(rows, columns)
    print(f"wrote {write_result(args.name, {'n': args.n, 'load': os.getloadavg(), 'rows': rows})}")


if __name__ == "__main__":
    main()
