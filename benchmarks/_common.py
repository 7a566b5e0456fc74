"""Shared bits of the benchmark scripts: where the data is, machine facts, JSON output."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("POSTERGENRE_DATA", REPO.parent / "shared" / "data" / "imdb-posters-7k"))
RESULTS = REPO / "benchmarks" / "results"


def require_data() -> Path:
    """The shared poster set, or exit with a clear message."""
    if not (DATA / "train.csv").is_file():
        sys.exit(f"benchmark data not found at {DATA}; set POSTERGENRE_DATA")
    return DATA


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """benchmarks/results/NAME.json, with the machine description added."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain aligned table on stdout."""
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return "" if value is None else str(value)


def multi_label_summary(y: Any, probs: Any, predicted: Any) -> dict[str, float]:
    """The headline of a multi-label decision: mAP, micro / macro F1, ECE, predicted and true
    genres per poster, and the share of posters with a predicted genre less probable than a
    non-predicted one."""
    from sklearn.metrics import f1_score

    from postergenre.evaluation.metrics import calibration, inverted_share, mean_average_precision

    return {
        "map": mean_average_precision(y, probs),
        "micro_f1": float(f1_score(y, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y, predicted, average="macro", zero_division=0)),
        "ece": calibration(probs, y)["ece"],
        "predicted_per_poster": float(predicted.sum(1).mean()),
        "true_per_poster": float(y.sum(1).mean()),
        "inverted_share": inverted_share(probs, predicted),
    }
