"""`postergenre evaluate`: a model's metrics on labelled posters."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from postergenre.cli._args import (
    Subparsers,
    add_cache_arg,
    add_data_args,
    add_model_arg,
    add_runtime_arg,
    add_threshold_policy_arg,
    load_collection,
)


def register(commands: Subparsers) -> None:
    """Add `evaluate` to `commands`."""
    p = commands.add_parser(
        "evaluate",
        help="metrics of a model on labelled posters",
        description="Score a model on labelled posters. Single-label data (one genre per "
        "poster, e.g. the article's three genres): accuracy, balanced accuracy, macro F1, "
        "per-genre precision/recall/F1 and the confusion matrix. Multi-label data (several "
        "genres per poster) with a multi-label model: mAP, micro/macro/samples F1 at the "
        "model's thresholds and at 0.5, Hamming loss and subset accuracy, per-genre "
        "AP/F1/threshold, next to trivial baselines (predicting no genre at all already "
        "scores a small Hamming loss on sparse labels), every threshold policy side by side "
        "and one shared threshold swept (macro / micro F1 against genres per poster), and "
        "precision-recall curves. Genres the model or the data lack are listed, not "
        "guessed.",
    )
    add_model_arg(p)
    add_runtime_arg(p)
    add_threshold_policy_arg(p)
    add_data_args(p)
    p.add_argument("--split", help="evaluate one split (train/val/test); default: all posters")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="also write metrics.json and the pictures here (reliability.png; "
        "confusion_matrix.png, or pr_curves.png, ap_by_genre.png and threshold_policy.png)",
    )
    add_cache_arg(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from postergenre.evaluation.report import format_multi_label, format_single_label
    from postergenre.inference import Predictor

    collection = load_collection(args)
    predictor = Predictor.from_pretrained(
        args.model, args.runtime, args.cache_dir, threshold_policy=args.threshold_policy
    )
    metrics = predictor.evaluate(collection, split=args.split, out=args.out)
    if args.json:
        print(json.dumps(metrics))
        return 0
    multi = metrics["task"] == "multi"
    print(format_multi_label(metrics) if multi else format_single_label(metrics))
    if args.out is not None:
        pictures = [metrics[k] for k in ("plot", "ap_plot", "threshold_plot") if k in metrics]
        print(
            f"\nwrote metrics.json, {', '.join(pictures)} and {metrics['reliability_plot']} "
            f"in {args.out}"
        )
    return 0
