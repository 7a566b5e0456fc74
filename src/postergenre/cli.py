"""The `postergenre` command line. Each sub-command is a thin wrapper over the Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

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


def _add_cache_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="decoded-poster cache (default $POSTERGENRE_CACHE or "
        "~/.cache/postergenre); deleting it only costs time",
    )


def _add_runtime_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runtime",
        choices=["torch", "onnx"],
        default="torch",
        help="inference engine: PyTorch (default) or ONNX Runtime (exported "
        "once, cached, ~3x faster on CPU)",
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


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
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out from its last checkpoint",
    )
    _add_cache_arg(p)
    p.set_defaults(handler=_cmd_train)

    p = commands.add_parser(
        "evaluate",
        help="metrics of a model on labelled posters",
        description="Accuracy, balanced accuracy, macro F1, per-genre "
        "precision/recall/F1 and the confusion matrix.",
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
        help="also write metrics.json and confusion_matrix.png here",
    )
    _add_cache_arg(p)
    p.set_defaults(handler=_cmd_evaluate)

    p = commands.add_parser(
        "predict",
        help="genres for posters (files or folders)",
        description="Rank genres for each poster. A folder argument writes "
        "a CSV of predictions (see --csv).",
    )
    _add_model_arg(p)
    _add_runtime_arg(p)
    p.add_argument(
        "posters", nargs="+", type=Path, metavar="POSTER", help="image files, or folders of images"
    )
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument("--top", type=_positive_int, default=5, help="genres shown per poster (table)")
    p.add_argument(
        "--csv",
        type=Path,
        metavar="FILE",
        help="predictions CSV for folder input (default: predictions.csv)",
    )
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
    p.add_argument("--genre", help="genre to explain (default: the top prediction)")
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
    p.add_argument(
        "--runtime",
        choices=["torch", "onnx"],
        default="torch",
        help="inference runtime (default torch; Grad-CAM always uses torch)",
    )
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

    p = commands.add_parser("models", help="list bundled models and architectures")
    p.set_defaults(handler=_cmd_models)
    return parser


# -- commands -------------------------------------------------------------------------------


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
        cache_dir=args.cache_dir,
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
    from postergenre.console import warn
    from postergenre.data.labels import load_posters
    from postergenre.evaluation.report import format_multi_label, format_single_label
    from postergenre.inference import Predictor
    from postergenre.models.bundle import write_json_atomic

    predictor = Predictor.from_pretrained(args.model, runtime=args.runtime)
    collection = load_posters(
        labels=args.labels, images=args.images, splits=args.splits, folder=args.folder
    )
    for message in collection.warnings:
        warn(message)
    subset = collection.split(args.split)
    if not subset.records:
        known = ", ".join(collection.splits) or "none"
        raise UserError(f"no posters in split {args.split!r} (splits: {known})")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    metrics = predictor.evaluate(
        subset.records, args.cache_dir, plots_dir=args.out, title=args.split or "all posters"
    )
    if metrics["n"] == 0:
        raise UserError(
            "none of the posters carries a genre the model knows "
            f"(model genres: {', '.join(predictor.genres)})"
        )
    multi = metrics["task"] == "multi"
    if args.out is not None:
        write_json_atomic(args.out / "metrics.json", metrics)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(format_multi_label(metrics) if multi else format_single_label(metrics))
        if args.out is not None:
            print(f"\nwrote metrics.json and {metrics['plot']} in {args.out}")
    return 0


def _expand_posters(paths: Sequence[Path]) -> tuple[list[Path], bool]:
    from postergenre.data.formats import is_image_name

    files: list[Path] = []
    any_folder = False
    for path in paths:
        if path.is_dir():
            any_folder = True
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p.name))
            if not found:
                raise UserError(f"no images found in folder {path}")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise UserError(f"no such file: {path}")
    return files, any_folder


def _cmd_predict(args: argparse.Namespace) -> int:
    import csv

    from postergenre.console import echo, report_skipped
    from postergenre.inference import Predictor

    files, any_folder = _expand_posters(args.posters)
    predictor = Predictor.from_pretrained(args.model, runtime=args.runtime)
    if any_folder:
        predictions, errors = predictor.predict_files(files, args.cache_dir)
        report_skipped(errors)
        out = args.csv or Path("predictions.csv")
        tmp = out.with_name(f".{out.name}.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "predicted", *predictor.genres])
            for prediction in predictions:
                probs = dict(prediction.genres)
                writer.writerow(
                    [
                        prediction.path,
                        "|".join(prediction.predicted),
                        *(f"{probs[g]:.6f}" for g in predictor.genres),
                    ]
                )
        os.replace(tmp, out)
        echo(f"wrote {len(predictions)} predictions to {out}")
    else:
        predictions = predictor.predict(files)
    if args.json:
        print(json.dumps([p.to_json() for p in predictions]))
    elif not any_folder:
        for prediction in predictions:
            print(prediction.path)
            for genre, probability in prediction.genres[: args.top]:
                mark = "*" if genre in prediction.predicted else " "
                bar = "#" * round(probability * 30)
                print(f"  {mark} {genre:<14}{probability:7.1%}  {bar}")
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from postergenre.console import echo, warn
    from postergenre.data.labels import load_posters
    from postergenre.inference.similarity import PosterIndex

    collection = load_posters(
        labels=args.labels, images=args.images, splits=args.splits, folder=args.folder
    )
    for message in collection.warnings:
        warn(message)
    records = collection.split(args.split).records
    if not records:
        raise UserError(f"no posters in split {args.split!r}")
    index = PosterIndex.build(records, args.arch, args.cache_dir)
    index.save(args.out)
    echo(f"indexed {len(index)} posters ({index.arch}) in {args.out}")
    return 0


def _cmd_similar(args: argparse.Namespace) -> int:
    from postergenre.data.decode import decode_poster
    from postergenre.inference.similarity import PosterIndex

    index = PosterIndex.load(args.index)
    query = index.embed_images([decode_poster(args.poster)])
    [neighbours] = index.search(query, args.k)
    if args.json:
        print(json.dumps([n.to_json() for n in neighbours]))
        return 0
    print(f"most similar to {args.poster} (of {len(index)} posters):")
    for rank, n in enumerate(neighbours, 1):
        print(f"{rank:>3}. {n.similarity:.3f}  {n.id:<14} {', '.join(n.genres):<32} {n.path}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    import numpy as np

    from postergenre.data.decode import decode_poster
    from postergenre.explain import explain_poster
    from postergenre.inference import Predictor

    image = decode_poster(args.poster)
    predictor = Predictor.from_pretrained(args.model)
    explanation = explain_poster(predictor, image, args.genre)
    out = args.out or Path(f"{args.poster.stem}.gradcam.png")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise UserError(f"--out must end in .png, .jpg or .webp: {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    explanation.overlay.save(tmp)
    os.replace(tmp, out)
    print(f"{explanation.genre} ({explanation.probability:.1%}): heatmap overlay written to {out}")
    if args.npy:
        np.save(out.with_suffix(".npy"), explanation.heatmap)
        print(f"raw heatmap written to {out.with_suffix('.npy')}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from postergenre.export.onnx import export_onnx

    report = export_onnx(args.model, args.out, images=args.check)
    if args.json:
        print(json.dumps(report))
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

    predictor = Predictor.from_pretrained(args.model, runtime=args.runtime)
    index = PosterIndex.load(args.index) if args.index is not None else None
    serve(
        predictor,
        host=args.host,
        port=args.port,
        index=index,
        max_upload_mb=args.max_upload_mb,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
    )
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from postergenre.inference import bundled_models
    from postergenre.models import available_archs, get_arch
    from postergenre.models.bundle import read_meta

    print("bundled models:")
    from postergenre.models.bundle import BUNDLED_DIR

    for name in bundled_models():
        meta = read_meta(BUNDLED_DIR / name)
        print(
            f"  {name:<14}{meta['architecture']}, {meta['task']}-label, "
            f"{len(meta['genres'])} genres"
        )
    if not bundled_models():
        print("  (none)")
    print("architectures:")
    for name in available_archs():
        print(f"  {name:<20}{get_arch(name).description}")
    return 0


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
        print(f"postergenre {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
