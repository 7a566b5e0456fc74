"""The `postergenre` command line. Each sub-command is a thin wrapper over the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from postergenre import __version__
from postergenre.errors import UserError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _add_data_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
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
        type=float,
        metavar="MB",
        help="refuse label files larger than this (default 1024, or $POSTERGENRE_MAX_LABELS_MB)",
    )


def _add_cache_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="cache of decoded posters, embeddings and exported models (default "
        "$POSTERGENRE_CACHE or ~/.cache/postergenre); see 'postergenre cache info'",
    )


def _add_runtime_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runtime",
        choices=["auto", "onnx", "openvino", "torch"],
        default="auto",
        help="inference engine: ONNX Runtime (the model is exported once, then cached; ~3x "
        "faster on CPU and quick to start), OpenVINO (the same exported model and "
        "probabilities, often faster; pip install 'postergenre[openvino]') or PyTorch; auto "
        "(default): ONNX Runtime where installed",
    )


def _add_engine_args(parser: argparse.ArgumentParser, what: str) -> None:
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


def _add_model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        metavar="NAME|PATH",
        default=None,
        help="a bundled model name, a bundle folder, or a run folder "
        "(default: the bundled imdb-20 model)",
    )


def _genre_list(text: str) -> list[str]:
    genres = [g.strip() for g in text.split(",") if g.strip()]
    if not genres:
        raise argparse.ArgumentTypeError(
            "expected comma-separated genres, e.g. Action,Comedy,Drama"
        )
    return genres


def _bounded(convert: Callable[[str], Any], what: str, ok: Callable[[Any], bool]) -> Any:
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


_positive_int = _bounded(int, "a positive integer", lambda value: value >= 1)
_non_negative_int = _bounded(int, "0 or a positive integer", lambda value: value >= 0)
_positive_float = _bounded(float, "a positive number", lambda value: value > 0)


def build_parser() -> argparse.ArgumentParser:
    """The whole command-line interface."""
    parser = argparse.ArgumentParser(
        prog="postergenre",
        description="Predict a movie's genres from its poster: train, evaluate, predict.",
        epilog="Run 'postergenre COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"postergenre {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "train",
        help="train a model and write a run folder with its bundle",
        description="Train a model. The run folder gets config.json, "
        "history.csv, plots/, checkpoints/ and the final bundle "
        "in model/.",
    )
    _add_data_args(p)
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run folder")
    p.add_argument("--arch", default="seed-cnn", help="architecture (see 'postergenre models')")
    p.add_argument(
        "--mode",
        choices=["linear-probe", "finetune"],
        help="for EfficientNet-Lite: a head on frozen, cached embeddings (linear-probe, the "
        "default; seconds once cached) or the whole network (finetune; minutes per epoch)",
    )
    p.add_argument(
        "--task",
        choices=["single", "multi"],
        help="single-label (softmax) or multi-label (sigmoid); default: from the data",
    )
    p.add_argument(
        "--genres",
        type=_genre_list,
        metavar="A,B,C",
        help="genre vocabulary (default: every genre with >= --min-count posters)",
    )
    p.add_argument(
        "--min-count",
        type=_positive_int,
        metavar="N",
        help="derive the vocabulary: genres with at least N training posters",
    )
    p.add_argument("--epochs", type=_positive_int, default=30, help="maximum epochs (default 30)")
    p.add_argument("--batch-size", type=_positive_int, help="default: the architecture's")
    p.add_argument("--lr", type=float, help="learning rate (default: the architecture's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--patience",
        type=_positive_int,
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
        "about 1 s per poster per core, once, cached) and fuse it with the image features; "
        "the model then reads text when it predicts, too",
    )
    _add_engine_args(p, "frozen embeddings (linear-probe, knn) are computed")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out from its last checkpoint",
    )
    _add_cache_arg(p)
    p.set_defaults(handler=_cmd_train)

    p = commands.add_parser(
        "evaluate",
        help="metrics of a model on labelled posters",
        description="Score a model on labelled posters. Single-label data (one genre per "
        "poster, e.g. the article's three genres): accuracy, balanced accuracy, macro F1, "
        "per-genre precision/recall/F1 and the confusion matrix. Multi-label data (several "
        "genres per poster) with a multi-label model: mAP, micro/macro/samples F1 at the "
        "model's thresholds and at 0.5, per-genre AP/F1/threshold, next to trivial baselines, "
        "and precision-recall curves. Genres the model or the data lack are listed, not "
        "guessed.",
    )
    _add_model_arg(p)
    _add_runtime_arg(p)
    _add_data_args(p)
    p.add_argument("--split", help="evaluate one split (train/val/test); default: all posters")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="also write metrics.json and the picture (confusion_matrix.png or pr_curves.png) here",
    )
    _add_cache_arg(p)
    p.set_defaults(handler=_cmd_evaluate)

    p = commands.add_parser(
        "predict",
        help="genres for posters (files, folders, globs, label CSVs, lists of paths)",
        description="Rank genres for each poster. One poster prints a table; anything else is "
        "a collection: unreadable files are skipped and reported on stderr. With --out (or a "
        "folder without it, into predictions.csv) the collection is streamed into a file, one "
        "row per readable poster with its path, a probability per genre and the predicted "
        "genres: memory stays flat whatever its size (at most 2 x workers + 1 batches of 32 "
        "decoded posters, and 8 bytes per poster path), posters are decoded by --workers "
        "processes while the model runs, a progress bar shows how far it is, and a line at "
        "the end says what was written and skipped. Rows go to FILE.partial first and FILE "
        "appears whole when every poster is done; a run that was killed or interrupted goes "
        "on with --resume.",
    )
    _add_model_arg(p)
    _add_runtime_arg(p)
    p.add_argument(
        "posters",
        nargs="+",
        metavar="POSTER",
        help="what to predict (SOURCE): image files, folders of images (searched "
        "recursively), quoted globs "
        "('posters/*.jpg'), label CSVs (.csv/.tsv: an id column, images in CSV_DIR/images or "
        "CSV_DIR, as for train --labels) or text files of paths (.txt/.lst: one a line, "
        "relative to the file's folder; blank lines and # comments ignored)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list on stdout")
    p.add_argument(
        "--top",
        type=_positive_int,
        help="genres shown per poster: the N most probable (default: 5 in the table, all in "
        "--json and files)",
    )
    p.add_argument(
        "--out",
        "--csv",
        dest="out",
        type=Path,
        metavar="FILE",
        help="stream all predictions into FILE: .csv, .json, .jsonl or .parquet (a folder "
        "without --out writes predictions.csv)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="go on with the unfinished run into --out FILE (its FILE.partial): posters "
        "already there are skipped",
    )
    p.add_argument(
        "--workers",
        type=_non_negative_int,
        metavar="N",
        help="processes decoding posters beside the model (default min(2, cores); collections "
        "under 64 posters, and 0, decode in one thread); with --engine ray: Ray actors, each "
        "decoding and running the model (default one per CPU of the Ray cluster)",
    )
    caching = p.add_mutually_exclusive_group()
    caching.add_argument(
        "--cache",
        action="store_true",
        help="keep decoded posters in the cache, so a re-run skips decoding (default: off)",
    )
    caching.add_argument(
        "--no-cache",
        action="store_true",
        help="accepted for compatibility and does nothing: the cache is off unless --cache",
    )
    _add_engine_args(p, "a collection streamed into --out is scored")
    _add_cache_arg(p)
    p.set_defaults(handler=_cmd_predict)

    p = commands.add_parser(
        "index",
        help="index a poster collection for 'similar'",
        description="Embed every poster with a pretrained backbone (cached) and write an index "
        "folder that 'similar' and 'serve --index' search by cosine similarity.",
    )
    _add_data_args(p)
    p.add_argument("--out", type=Path, required=True, metavar="INDEX", help="index folder")
    p.add_argument(
        "--arch",
        default="efficientnet-lite0",
        help="backbone whose embeddings are indexed (default efficientnet-lite0)",
    )
    p.add_argument("--split", help="index one split only")
    _add_engine_args(p, "posters not cached yet are embedded")
    _add_cache_arg(p)
    p.set_defaults(handler=_cmd_index)

    p = commands.add_parser(
        "similar",
        help="the most similar posters of an indexed collection",
        description="Rank the posters of an index by cosine similarity to POSTER.",
    )
    p.add_argument("poster", type=Path, metavar="POSTER")
    p.add_argument("--index", type=Path, required=True, metavar="INDEX")
    p.add_argument("--k", type=_positive_int, default=8, help="how many (default 8)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(handler=_cmd_similar)

    p = commands.add_parser(
        "explain",
        help="Grad-CAM heatmap: where the model looked for a genre",
        description="Write the poster with a Grad-CAM heatmap overlaid for a genre (default: the "
        "most probable one).",
    )
    _add_model_arg(p)
    p.add_argument("poster", type=Path, metavar="POSTER")
    p.add_argument("--genre", help="genre to explain, in any case (default: the top prediction)")
    p.add_argument(
        "--out",
        type=Path,
        metavar="PNG",
        help="overlay image to write (default: POSTER_NAME.gradcam.png here)",
    )
    p.add_argument(
        "--npy",
        action="store_true",
        help="also save the raw heatmap (model input size, [0, 1]) as .npy",
    )
    p.set_defaults(handler=_cmd_explain)

    p = commands.add_parser(
        "export",
        help="export a model to ONNX (validated against PyTorch)",
        description="Export a model to ONNX with a dynamic batch axis and the preprocessing in "
        "its metadata; the exported probabilities are checked against PyTorch (max abs diff "
        "<= 1e-4) before anything is written.",
    )
    _add_model_arg(p)
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
        type=_positive_int,
        default=256,
        metavar="N",
        help="with --quantize: training posters drawn (seeded) to calibrate on (default 256)",
    )
    _add_data_args(p)
    p.add_argument("--json", action="store_true", help="print the export report as JSON")
    p.set_defaults(handler=_cmd_export)

    p = commands.add_parser(
        "serve",
        help="a web page and JSON API: drop posters, see genres and heatmaps",
        description="Serve a page to drop posters on: genre probabilities, a Grad-CAM heatmap "
        "per genre and, with --index, the most similar indexed posters. The JSON API is "
        "documented at /docs.",
    )
    _add_model_arg(p)
    _add_runtime_arg(p)
    p.add_argument(
        "--index",
        type=Path,
        metavar="INDEX",
        help="an index folder from 'postergenre index': enables similar posters",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1: this machine only)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one)")
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=10,
        metavar="MB",
        help="largest upload per request (default 10)",
    )
    p.add_argument(
        "--max-megapixels",
        type=float,
        default=16,
        metavar="MP",
        help="largest poster the server decodes, in megapixels (default 16)",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=15,
        metavar="S",
        help="seconds a client may take to send its request headers, or pause in its upload, "
        "before the server gives up on it (default 15)",
    )
    p.add_argument(
        "--max-batch",
        type=_positive_int,
        default=32,
        help="most posters predicted together from concurrent requests (default 32)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        metavar="MS",
        help="how long a request may wait for others to batch with (default 5)",
    )
    p.set_defaults(handler=_cmd_serve)

    p = commands.add_parser(
        "models",
        help="list bundled models and architectures",
        description="The models shipped with PosterGenre (task, architecture, genres, test "
        "metrics) and the architectures 'train --arch' accepts.",
    )
    p.set_defaults(handler=_cmd_models)

    p = commands.add_parser(
        "cache",
        help="show, prune or clear the cache",
        description="The cache keeps decoded posters, backbone embeddings and exported ONNX "
        "models, so repeated work is fast; deleting it only costs time. 'info' shows what it "
        "holds, 'prune' drops entries of posters that are gone or changed (and frees their "
        "space), 'clear' empties it.",
    )
    p.add_argument("action", choices=["info", "prune", "clear"])
    _add_cache_arg(p)
    p.set_defaults(handler=_cmd_cache)

    p = commands.add_parser(
        "download",
        help="build a poster data set from a CSV of poster URLs",
        description="Download the posters of a URL list, such as Kaggle's MovieGenre.csv "
        "(imdbId, Imdb Link, Title, IMDB Score, Genre, Poster; Latin-1 is fine), or any CSV with "
        "an id column (id, imdbId, ...) and a URL column (url, poster_url, Poster, ...). Genre "
        "('A|B'), Title ('Toy Story (1995)' gives the year) and year columns are carried over. "
        "Writes OUT/images/<id>.<ext> (numeric IMDb ids become tt0114709; the extension comes "
        "from the decoded image, and only files that decode as posters are kept), "
        "OUT/labels.csv (id, genres, title, year, url: ready for 'train --labels "
        "OUT/labels.csv') and OUT/failures.csv (id, url, reason, attempts). Timeouts, "
        "connection errors, 5xx and 429 are retried with backoff (or as Retry-After says); 404 "
        "and other client errors are not. After Ctrl-C or a crash, run the same command again "
        "to resume: posters already there are skipped without a request, failures are retried.",
    )
    p.add_argument("--labels", type=Path, required=True, metavar="CSV", help="the URL list")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="data set folder")
    p.add_argument("--url-column", metavar="NAME", help="column of poster URLs (default: detected)")
    p.add_argument("--id-column", metavar="NAME", help="column of poster ids (default: detected)")
    p.add_argument(
        "--concurrency",
        type=_positive_int,
        default=8,
        metavar="N",
        help="downloads at once (default 8)",
    )
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="seconds to connect, and without a byte while reading (default 30)",
    )
    p.add_argument(
        "--deadline",
        type=_positive_float,
        default=120.0,
        metavar="S",
        help="seconds one request may take in all (default 120)",
    )
    p.add_argument(
        "--retries", type=int, default=3, metavar="N", help="attempts after the first (default 3)"
    )
    p.add_argument(
        "--max-mb",
        type=_positive_float,
        default=20.0,
        metavar="MB",
        help="refuse posters larger than this (default 20)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=10.0,
        metavar="N",
        help="requests per second to any one host (default 10; 0: no limit)",
    )
    p.set_defaults(handler=_cmd_download)
    return parser


# -- commands -------------------------------------------------------------------------------
# Each parses nothing and computes nothing: it calls the library and prints. Heavy modules are
# imported inside the command, so `--help` and argument errors stay instant.


def _label_limit(args: argparse.Namespace) -> int | None:
    return None if args.max_labels_mb is None else int(args.max_labels_mb * 1024 * 1024)


def _load_collection(args: argparse.Namespace) -> Any:
    from postergenre.console import warn
    from postergenre.data.labels import load_posters

    collection = load_posters(
        labels=args.labels,
        images=args.images,
        splits=args.splits,
        folder=args.folder,
        max_label_bytes=_label_limit(args),
    )
    for message in collection.warnings:
        warn(message)
    return collection


def _cmd_train(args: argparse.Namespace) -> int:
    from postergenre.training.run import TrainConfig, train

    cfg = TrainConfig(
        out=args.out,
        arch=args.arch,
        labels=args.labels,
        images=args.images,
        splits=args.splits,
        folder=args.folder,
        genres=args.genres,
        min_count=args.min_count,
        mode=args.mode,
        task=args.task,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        patience=args.patience,
        monitor=args.monitor,
        balance=args.balance,
        augment=not args.no_augment,
        calibrate=not args.no_calibrate,
        text=args.text,
        engine=args.engine,
        address=args.address,
        cache_dir=args.cache_dir,
        max_label_bytes=_label_limit(args),
        resume=args.resume,
    )
    try:
        train(cfg)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; continue with the same command plus --resume (run folder {args.out})",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from postergenre.evaluation.report import format_multi_label, format_single_label
    from postergenre.inference import Predictor

    collection = _load_collection(args)
    predictor = Predictor.from_pretrained(args.model, args.runtime, args.cache_dir)
    metrics = predictor.evaluate(collection, split=args.split, out=args.out)
    if args.json:
        print(json.dumps(metrics))
        return 0
    multi = metrics["task"] == "multi"
    print(format_multi_label(metrics) if multi else format_single_label(metrics))
    if args.out is not None:
        print(
            f"\nwrote metrics.json, {metrics['plot']} and {metrics['reliability_plot']} in "
            f"{args.out}"
        )
    return 0


def _print_table(prediction: Any, top: int) -> None:
    print(prediction.path)
    for genre, probability in prediction.genres[:top]:
        mark = "*" if genre in prediction.predicted else " "
        bar = "#" * round(probability * 30)
        print(f"  {mark} {genre:<14}{probability:7.1%}  {bar}")


def _cmd_predict(args: argparse.Namespace) -> int:
    from postergenre.console import echo
    from postergenre.data.sources import PosterFiles, open_sources
    from postergenre.inference import Predictor
    from postergenre.inference.predictions import check_output, journal_path, read_predictions
    from postergenre.inference.ray_engine import check_engine

    check_engine(args.engine, args.address)
    folder_given = any(Path(p).is_dir() for p in args.posters)
    out = args.out or (Path("predictions.csv") if folder_given else None)
    if out is not None:
        check_output(out)  # say so before the work
    elif args.resume:
        raise UserError("--resume goes on with an unfinished --out FILE: name the FILE")
    elif args.engine == "ray":
        raise UserError("--engine ray streams a collection into a file: name it with --out FILE")
    sources = open_sources(args.posters)  # a missing file fails before any model loads
    predictor = Predictor.from_pretrained(args.model, args.runtime, args.cache_dir)
    if out is not None:
        try:
            summary = predictor.predict_to(
                sources,
                out,
                resume=args.resume,
                workers=args.workers,
                cache=args.cache,
                top=args.top,
                engine=args.engine,
                address=args.address,
            )
        except KeyboardInterrupt:
            if journal_path(out).exists():
                echo(f"predictions so far are in {journal_path(out)}: add --resume to go on")
            raise
        echo(summary.describe())
        if args.json:  # read back from the file, one prediction at a time
            sys.stdout.write("[")
            for i, prediction in enumerate(read_predictions(out)):
                sys.stdout.write((", " if i else "") + json.dumps(prediction.to_json(args.top)))
            sys.stdout.write("]\n")
        return 0
    files = PosterFiles(list(sources), sources.single)
    predictions = predictor.predict(files, cache=args.cache, workers=args.workers)
    if args.json:
        print(json.dumps(predictions.to_json(top=args.top)))
    else:
        for prediction in predictions:
            _print_table(prediction, args.top or 5)
        if len(predictions):
            print(f"* predicted: {predictor.card.describe_rule()}")
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from postergenre.console import echo
    from postergenre.inference.ray_engine import check_engine
    from postergenre.inference.similarity import PosterIndex

    check_engine(args.engine, args.address)
    collection = _load_collection(args)
    records = collection.split(args.split).records
    if not records:
        raise UserError(f"no posters in split {args.split!r}")
    index = PosterIndex.build(
        records, args.arch, args.cache_dir, engine=args.engine, address=args.address
    )
    index.save(args.out)
    echo(f"indexed {len(index)} posters ({index.arch}) in {args.out}")
    return 0


def _cmd_similar(args: argparse.Namespace) -> int:
    from postergenre.inference.similarity import PosterIndex

    index = PosterIndex.load(args.index)
    neighbours = index.similar(args.poster, args.k)
    if args.json:
        print(json.dumps([n.to_json() for n in neighbours]))
        return 0
    print(f"most similar to {args.poster} (of {len(index)} posters):")
    for rank, n in enumerate(neighbours, 1):
        print(f"{rank:>3}. {n.similarity:.3f}  {n.id:<14} {', '.join(n.genres):<32} {n.path}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from postergenre.inference import Predictor

    out = args.out or Path(f"{args.poster.stem}.gradcam.png")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise UserError(f"--out must end in .png, .jpg or .webp: {out}")
    predictor = Predictor.from_pretrained(args.model, runtime="torch")  # Grad-CAM needs torch
    explanation = predictor.explain(args.poster, args.genre)
    written = explanation.save(out, npy=args.npy)
    print(f"{explanation.genre} ({explanation.probability:.1%}): heatmap overlay written to {out}")
    if explanation.text is not None:
        print(f"text read on the poster (it counts in the probability): {explanation.text!r}")
    if args.npy:
        print(f"raw heatmap written to {written[1]}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from postergenre.inference import Predictor

    predictor = Predictor.from_pretrained(args.model, runtime="torch")
    if args.quantize is None:
        if args.labels is not None or args.folder is not None:
            raise UserError("--labels and --folder give calibration posters for --quantize int8")
        report = predictor.export(args.out, args.check)
    else:
        if args.labels is None and args.folder is None:
            raise UserError(
                f"--quantize {args.quantize} calibrates on training posters: give them with "
                "--labels CSV [--splits CSV] or --folder DIR"
            )
        collection = _load_collection(args)
        train = collection.split("train") if "train" in collection.splits else collection
        report = predictor.export(
            args.out,
            args.check,
            quantize=args.quantize,
            calibration=[r.path for r in train.records],
            calibration_size=args.calibration_size,
        )
        if report["note"]:
            from postergenre.console import warn

            warn(report["note"])
    if args.json:
        print(json.dumps(report))
    elif args.quantize is not None:
        print(
            f"wrote {report['path']} ({report['size_bytes'] / 1e6:.1f} MB, {args.quantize}, "
            f"from {report['fp32_size_bytes'] / 1e6:.1f} MB fp32, {report['architecture']}, "
            f"{report['task']}-label); calibrated on {report['calibration_posters']} posters; "
            f"max abs difference from fp32 {report['max_abs_diff_vs_fp32']:.2g}, same top "
            f"genre on {report['top_genre_agreement']:.0%} of {report['n_compared']} posters"
        )
    else:
        print(
            f"wrote {report['path']} ({report['size_bytes'] / 1e6:.1f} MB, opset "
            f"{report['opset']}, {report['architecture']}, {report['task']}-label); max abs "
            f"difference from PyTorch {report['max_abs_diff']:.2e} over "
            f"{report['n_checked']} posters"
        )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from postergenre.serving.server import serve
    except ImportError as exc:
        raise UserError(
            f"the web app needs {exc.name}: pip install fastapi uvicorn python-multipart"
        ) from exc
    from postergenre.inference import Predictor
    from postergenre.inference.similarity import PosterIndex

    predictor = Predictor.from_pretrained(args.model, args.runtime)
    index = PosterIndex.load(args.index) if args.index is not None else None
    serve(
        predictor,
        host=args.host,
        port=args.port,
        index=index,
        max_upload_mb=args.max_upload_mb,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_pixels=int(args.max_megapixels * 1_000_000),
        request_timeout=args.request_timeout,
    )
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from postergenre.models import available_archs, get_arch
    from postergenre.models.catalog import describe_bundled

    print("bundled models:")
    lines = describe_bundled()
    for line in lines or ["(none)"]:
        print(f"  {line}")
    print("architectures:")
    names = available_archs()
    width = max(map(len, names)) + 2
    for name in names:
        print(f"  {name:<{width}}{get_arch(name).description}")
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from postergenre.data import cache

    if args.action == "info":
        print(cache.cache_info(args.cache_dir).format())
    elif args.action == "prune":
        report = cache.prune_cache(args.cache_dir)
        print(report.format())
    else:
        freed = cache.clear_cache(args.cache_dir)
        print(f"cleared the cache: {freed / 1e6:.1f} MB freed")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from postergenre.console import echo
    from postergenre.data.download import download_posters

    try:
        report = download_posters(
            args.labels,
            args.out,
            url_column=args.url_column,
            id_column=args.id_column,
            concurrency=args.concurrency,
            timeout=args.timeout,
            deadline=args.deadline,
            retries=args.retries,
            max_bytes=int(args.max_mb * 1024 * 1024),
            rate=args.rate,
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; what is done is kept in {args.out}: run the same command again to "
            "resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    for line in report.summary():
        echo(line)
    return 0


# Library errors say what is wrong; the command line adds which flag changes it.
_FLAG_HINTS = {
    "UnfinishedPredictions": "pass --resume to go on with it, or delete it",
    "RunFolderInUse": "pass --resume to continue it, or choose another --out",
    "NothingToResume": "run without --resume to start it",
    "PortInUse": "choose another with --port (make demo PORT=N)",
    "PosterSourceMissing": "use --labels CSV or --folder DIR",
    "LabelFileTooLarge": "or pass --max-labels-mb",
    "UrlColumnMissing": "name it with --url-column",
    "IdColumnMissing": "name it with --id-column",
    "AddressWithoutRay": "--address goes with --engine ray",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, and turn user errors into one line and exit code 2."""
    from postergenre._allocator import tune_allocator

    tune_allocator()
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UserError as exc:
        hint = _FLAG_HINTS.get(type(exc).__name__)
        message = (f"{exc}; {hint}" if hint else str(exc)).replace("\n", " ")
        print(f"postergenre {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
