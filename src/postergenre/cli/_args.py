"""Arguments several commands share (data, cache, runtime, engine, model), the bounded number
types, and loading the posters the data arguments name. Light to import: `--help` stays instant."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

Subparsers = Any  # argparse's _SubParsersAction is private; this names what register() gets


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """--labels, --images, --splits, --folder and --max-labels-mb, in their own help group."""
    group = parser.add_argument_group("data (a label CSV, or a folder per genre)")
    group.add_argument(
        "--labels",
        type=Path,
        metavar="CSV",
        help="CSV with an id column (Id/id/imdbId/filename/image/path) and genres "
        "as a list string, 'A|B', a single genre, or one-hot columns",
    )
    group.add_argument(
        "--images",
        type=Path,
        metavar="DIR",
        help="folder of poster files named by id (default: CSV_DIR/images or CSV_DIR)",
    )
    group.add_argument(
        "--splits",
        type=Path,
        metavar="CSV",
        help="id,split file (train/val/test) when the labels have no split column",
    )
    group.add_argument(
        "--folder",
        type=Path,
        metavar="DIR",
        help="ROOT/<Genre>/* or ROOT/{train,val,test}/<Genre>/* (any case)",
    )
    group.add_argument(
        "--max-labels-mb",
        type=non_negative_float,
        metavar="MB",
        help="refuse label files larger than this (default 1024, or $POSTERGENRE_MAX_LABELS_MB)",
    )


def add_cache_arg(parser: argparse.ArgumentParser) -> None:
    """--cache-dir."""
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="cache of decoded posters, embeddings and exported models (default "
        "$POSTERGENRE_CACHE or ~/.cache/postergenre); see 'postergenre cache info'",
    )


def add_runtime_arg(parser: argparse.ArgumentParser) -> None:
    """--runtime."""
    parser.add_argument(
        "--runtime",
        choices=["auto", "onnx", "openvino", "torch"],
        default="auto",
        help="inference engine: ONNX Runtime (the model is exported once, then cached; ~3x "
        "faster on CPU and quick to start), OpenVINO (the same exported model and "
        "probabilities, often faster; pip install 'postergenre[openvino]') or PyTorch; auto "
        "(default): ONNX Runtime where installed",
    )


def add_engine_args(parser: argparse.ArgumentParser, what: str) -> None:
    """--engine and --address; `what` completes "where ..." in the help of --engine."""
    group = parser.add_argument_group("engine (Ray: pip install 'postergenre[ray]')")
    group.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help=f"where {what}: in processes on this machine (local, the default) or on Ray: "
        "actors that each read posters and hold the model, on a Ray started here or on the "
        "cluster at --address; same output either way",
    )
    group.add_argument(
        "--address",
        metavar="ADDR",
        help="with --engine ray: join the Ray cluster at ADDR (host:port of its head, or "
        "'auto') instead of starting Ray here; every node needs postergenre and the posters "
        "at the same paths",
    )


def add_threshold_policy_arg(parser: argparse.ArgumentParser) -> None:
    """--threshold-policy: models.threshold_policy's names, written out so that parsing imports
    no model code (a test keeps them equal)."""
    parser.add_argument(
        "--threshold-policy",
        choices=["card", "shared", "per-genre"],
        default="card",
        help="which thresholds make a multi-label model's predicted genres, all chosen on "
        "validation posters when it was trained, never on test: card (default: the ones it "
        "was built with; for the calibrated bundled models one threshold for every genre, "
        "predicting about as many genres per poster as the labels carry, so a predicted "
        "genre is never less probable than a left-out one), shared (that one threshold) or "
        "per-genre (each genre's F1-best threshold: a higher macro F1, paid for with more "
        "genres per poster)",
    )


def add_model_arg(parser: argparse.ArgumentParser) -> None:
    """--model."""
    parser.add_argument(
        "--model",
        metavar="NAME|PATH",
        default=None,
        help="a bundled model name (any case), a bundle folder, a run folder, or an exported "
        "ONNX file (export --out model.onnx, fp32 or int8: run by ONNX Runtime or OpenVINO; "
        "no Grad-CAM) (default: the bundled imdb-20 model)",
    )


def genre_list(text: str) -> list[str]:
    """An argparse `type`: comma-separated genres, at least one."""
    genres = [g.strip() for g in text.split(",") if g.strip()]
    if not genres:
        raise argparse.ArgumentTypeError(
            "expected comma-separated genres, e.g. Action,Comedy,Drama"
        )
    return genres


def bounded(convert: Callable[[str], Any], what: str, ok: Callable[[Any], bool]) -> Any:
    """An argparse `type`: `convert` the text, refusing it unless `ok(value)`."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


positive_int = bounded(int, "a positive integer", lambda value: value >= 1)
non_negative_int = bounded(int, "0 or a positive integer", lambda value: value >= 0)
# Floats are finite: "inf" and "nan" parse as floats but mean nothing as a size or a rate.
positive_float = bounded(float, "a positive number", lambda value: 0 < value < math.inf)
non_negative_float = bounded(float, "0 or a positive number", lambda value: 0 <= value < math.inf)
port_number = bounded(int, "a port from 0 to 65535", lambda value: 0 <= value <= 65535)


def load_collection(args: argparse.Namespace) -> Any:
    """The posters the data arguments name; the loader's warnings go to stderr."""
    from postergenre.console import warn
    from postergenre.data.csv_files import label_limit_bytes
    from postergenre.data.labels import load_posters

    collection = load_posters(
        labels=args.labels,
        images=args.images,
        splits=args.splits,
        folder=args.folder,
        max_label_bytes=label_limit_bytes(args.max_labels_mb),
    )
    for message in collection.warnings:
        warn(message)
    return collection
