"""`postergenre export`: a model as ONNX, checked against PyTorch, optionally int8."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from postergenre.cli._args import (
    Subparsers,
    add_data_args,
    add_model_arg,
    load_collection,
    positive_int,
)
from postergenre.errors import UserError


def register(commands: Subparsers) -> None:
    """Add `export` to `commands`."""
    p = commands.add_parser(
        "export",
        help="export a model to ONNX (validated against PyTorch)",
        description="Export a model to ONNX with a dynamic batch axis and the preprocessing in "
        "its metadata; the exported probabilities are checked against PyTorch (max abs diff "
        "<= 1e-4) before anything is written.",
    )
    add_model_arg(p)
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (onnx)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="e.g. model.onnx")
    p.add_argument(
        "--check",
        nargs="*",
        type=Path,
        default=[],
        metavar="POSTER",
        help="real posters to compare on, besides random inputs",
    )
    p.add_argument(
        "--quantize",
        choices=["int8"],
        help="also quantize: int8 static quantization with ONNX Runtime, calibrated on "
        "training posters (the train split of --labels/--splits or --folder); smaller and "
        "faster on CPU, slightly different probabilities (BENCHMARKS.md)",
    )
    p.add_argument(
        "--calibration-size",
        type=positive_int,
        default=256,
        metavar="N",
        help="with --quantize: training posters drawn (seeded) to calibrate on (default 256)",
    )
    add_data_args(p)
    p.add_argument("--json", action="store_true", help="print the export report as JSON")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from postergenre.inference import Predictor

    # "auto": a bundle's PyTorch model loads to be exported; a graph file opens to be quantized
    predictor = Predictor.from_pretrained(args.model, runtime="auto")
    if args.quantize is None:
        if args.labels is not None or args.folder is not None:
            raise UserError("--labels and --folder give calibration posters for --quantize int8")
        report = predictor.export(args.out, args.check)
    else:
        report = _export_quantized(args, predictor)
    if args.json:
        print(json.dumps(report))
    else:
        print(_describe(report, args.quantize))
    return 0


def _export_quantized(args: argparse.Namespace, predictor: Any) -> dict[str, Any]:
    """Export, then quantize calibrating on the train split of the data arguments."""
    if args.labels is None and args.folder is None:
        raise UserError(
            f"--quantize {args.quantize} calibrates on training posters: give them with "
            "--labels CSV [--splits CSV] or --folder DIR"
        )
    collection = load_collection(args)
    train = collection.split("train") if "train" in collection.splits else collection
    report: dict[str, Any] = predictor.export(
        args.out,
        args.check,
        quantize=args.quantize,
        calibration=[r.path for r in train.records],
        calibration_size=args.calibration_size,
    )
    if report["note"]:
        from postergenre.console import warn

        warn(report["note"])
    return report


def _describe(report: dict[str, Any], quantize: str | None) -> str:
    """The line that says what was written and how close it is to the model it came from."""
    from postergenre.console import format_bytes

    size = format_bytes(report["size_bytes"])
    if quantize is not None:
        return (
            f"wrote {report['path']} ({size}, {quantize}, "
            f"from {format_bytes(report['fp32_size_bytes'])} fp32, {report['architecture']}, "
            f"{report['task']}-label); calibrated on {report['calibration_posters']} posters; "
            f"max abs difference from fp32 {report['max_abs_diff_vs_fp32']:.2g}, same top "
            f"genre on {report['top_genre_agreement']:.0%} of {report['n_compared']} posters"
        )
    return (
        f"wrote {report['path']} ({size}, opset "
        f"{report['opset']}, {report['architecture']}, {report['task']}-label); max abs "
        f"difference from PyTorch {report['max_abs_diff']:.2e} over "
        f"{report['n_checked']} posters"
    )
