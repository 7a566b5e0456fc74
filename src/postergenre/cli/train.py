"""`postergenre train`: fit a model into a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from postergenre.cli._args import (
    Subparsers,
    add_cache_arg,
    add_data_args,
    add_engine_args,
    genre_list,
    non_negative_int,
    positive_float,
    positive_int,
)


def register(commands: Subparsers) -> None:
    """Add `train` to `commands`."""
    p = commands.add_parser(
        "train",
        help="train a model and write a run folder with its bundle",
        description="Train a model. The run folder gets config.json, "
        "history.csv, plots/, checkpoints/ and the final bundle "
        "in model/.",
    )
    add_data_args(p)
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run folder")
    p.add_argument(
        "--arch",
        # the default is training.config.DEFAULT_ARCH (not imported here: --help stays fast)
        help="architecture, in any case (see 'postergenre models'). Default efficientnet-lite0: "
        "a linear probe on frozen EfficientNet-Lite0 embeddings (seconds once the embeddings "
        "are cached; the best practical choice), or with --init-from that model's. seed-cnn is "
        "the article's CNN, trained from scratch for up to --epochs epochs of minutes each",
    )
    p.add_argument(
        "--init-from",
        metavar="NAME|PATH",
        help="linear probes: start from this model (a bundled name, bundle or run folder), e.g. "
        "to retrain on a corrections file: keep its genres, and, when it is a probe on the "
        "same backbone, fit toward its head (genres no training poster shows keep it as is)",
    )
    p.add_argument(
        "--mode",
        choices=["linear-probe", "adapt", "finetune"],
        help="for EfficientNet-Lite: a head on frozen, cached embeddings (linear-probe, the "
        "default; seconds once cached), the top stages tuned on cached early-stage maps "
        "(adapt; seconds to minutes per epoch, see --cut) or the whole network (finetune; "
        "minutes per epoch)",
    )
    p.add_argument(
        "--cut",
        type=int,
        choices=range(1, 7),
        metavar="1..6",
        help="adapt: the first stage to tune (Lite has stages 0..6; default 6); the stages "
        "before it are frozen and their maps cached once per poster and view",
    )
    p.add_argument(
        "--views",
        type=positive_int,
        metavar="N",
        help="adapt: maps cached per training poster, the poster then N-1 augmented views "
        "(default 2; memory grows with N)",
    )
    p.add_argument(
        "--maps",
        type=Path,
        metavar="DIR",
        help="adapt: keep the early-stage maps in DIR and reuse them in later runs on the same "
        "posters, cut, views and seed (default: computed per run and removed after)",
    )
    p.add_argument(
        "--task",
        choices=["single", "multi"],
        help="single-label (softmax) or multi-label (sigmoid); default: from the data",
    )
    p.add_argument(
        "--genres",
        type=genre_list,
        metavar="A,B,C",
        help="genre vocabulary (default: every genre with >= --min-count posters)",
    )
    p.add_argument(
        "--min-count",
        type=positive_int,
        metavar="N",
        help="derive the vocabulary: genres with at least N training posters",
    )
    _add_fitting_args(p)
    add_engine_args(p, "frozen embeddings (linear-probe, knn) are computed")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out from its last checkpoint",
    )
    add_cache_arg(p)
    p.set_defaults(handler=_run, on_interrupt=_on_interrupt)


def _add_fitting_args(p: argparse.ArgumentParser) -> None:
    """How the model is fitted: epochs to text, in the order `train --help` lists them."""
    p.add_argument("--epochs", type=positive_int, help="maximum epochs (default 30; adapt: 4)")
    p.add_argument("--batch-size", type=positive_int, help="default: the architecture's")
    p.add_argument("--lr", type=positive_float, help="learning rate (default: the architecture's)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--patience",
        type=positive_int,
        default=5,
        help="early stopping: epochs without validation gain (default 5)",
    )
    p.add_argument(
        "--monitor",
        help="history column for early stopping (default "
        "val_balanced_accuracy, or val_map for multi-label)",
    )
    p.add_argument(
        "--balance",
        choices=["none", "weights", "sampler"],
        default="weights",
        help="class balancing: loss weights (default), balanced sampling, or none",
    )
    p.add_argument(
        "--no-augment", action="store_true", help="turn off random crops and colour jitter"
    )
    p.add_argument(
        "--no-calibrate",
        action="store_true",
        help="keep the raw probabilities (default: calibrated on the validation split, "
        "temperature for single-label, Platt scaling per genre for multi-label)",
    )
    p.add_argument(
        "--text",
        action="store_true",
        help="linear probes: also read each poster's text with OCR (needs postergenre[ocr]; "
        "about 0.15 s per poster per core at the default OCR setting, once, cached) and fuse "
        "it with the image features; the model then reads text when it predicts, too",
    )
    p.add_argument(
        "--text-features",
        choices=("ngrams", "sentence", "both"),
        default="ngrams",
        help="with --text: what the text model reads: hashed character n-grams (default), the "
        "all-MiniLM-L6-v2 sentence embedding of the text (needs postergenre[text]), or both",
    )
    p.add_argument(
        "--ocr-det-side",
        type=int,
        default=320,
        metavar="PX",
        help="with --text: OCR's text detector sees the poster with its short side scaled to "
        "this (default 320; 736 is what the first text model used, 2.5x slower)",
    )
    p.add_argument(
        "--ocr-max-boxes",
        type=int,
        default=0,
        metavar="N",
        help="with --text: recognise only the N largest text boxes (default 0: all)",
    )


def _run(args: argparse.Namespace) -> int:
    from postergenre.training.run import TrainConfig, train

    train(TrainConfig.from_args(args))
    return 0


def _on_interrupt(args: argparse.Namespace) -> str:
    return f"continue with the same command plus --resume (run folder {args.out})"
