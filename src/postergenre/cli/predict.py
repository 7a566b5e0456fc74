"""`postergenre predict` (genres for posters) and `postergenre explain` (where the model looked)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from postergenre.cli._args import (
    Subparsers,
    add_cache_arg,
    add_engine_args,
    add_model_arg,
    add_runtime_arg,
    add_threshold_policy_arg,
    non_negative_int,
    positive_int,
)
from postergenre.errors import UserError


def register_predict(commands: Subparsers) -> None:
    """Add `predict` to `commands`."""
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
    add_model_arg(p)
    add_runtime_arg(p)
    add_threshold_policy_arg(p)
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
        type=positive_int,
        metavar="N",
        help="at most N genres per poster, in every format: the table and --json/.json/.jsonl "
        "list the N most probable, and the predicted genres are those among them (a "
        "predicted genre ranked below N is left out); .csv/.parquet keep a probability "
        "column for every genre and cap the predicted column alike. Default: the table "
        "shows 5, everything else every genre, with every predicted genre",
    )
    _add_output_args(p)
    add_engine_args(p, "a collection streamed into --out is scored")
    add_cache_arg(p)
    p.set_defaults(handler=_predict, on_interrupt=_on_interrupt)


def _add_output_args(p: argparse.ArgumentParser) -> None:
    """Where a collection goes and how it is decoded: --out to --no-cache."""
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
        type=non_negative_int,
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
        dest="cache",
        action="store_false",
        default=False,
        help="keep decoded posters out of the cache (the default, said explicitly)",
    )


def _predict(args: argparse.Namespace) -> int:
    from postergenre.data.sources import PosterFiles, open_sources
    from postergenre.engines.ray_cluster import check_engine
    from postergenre.inference import Predictor
    from postergenre.inference.predictions import prediction_output

    check_engine(args.engine, args.address)
    out = prediction_output(args.posters, args.out, resume=args.resume, engine=args.engine)
    sources = open_sources(args.posters)  # a missing file fails before any model loads
    predictor = Predictor.from_pretrained(
        args.model, args.runtime, args.cache_dir, threshold_policy=args.threshold_policy
    )
    if out is not None:
        return _stream(args, predictor, sources, out)
    files = PosterFiles(list(sources), sources.single)
    predictions = predictor.predict(files, cache=args.cache, workers=args.workers)
    if args.json:
        print(json.dumps(predictions.to_json(top=args.top)))
    else:
        for prediction in predictions:
            _print_table(prediction, args.top or 5)
        if len(predictions):
            cap = f"; at most {args.top} per poster (--top)" if args.top else ""
            policy = predictor.threshold_policy
            cap += f" (--threshold-policy {policy})" if policy != "card" else ""
            print(f"* predicted: {predictor.card.describe_rule()}{cap}")
    return 0


def _stream(args: argparse.Namespace, predictor: Any, sources: Any, out: Path) -> int:
    """Stream the collection into `out`; with --json, print it back one prediction at a time."""
    from postergenre.console import echo
    from postergenre.inference.predictions import read_predictions

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
    echo(summary.describe())
    if args.json:
        sys.stdout.write("[")
        for i, prediction in enumerate(read_predictions(out)):
            sys.stdout.write((", " if i else "") + json.dumps(prediction.to_json(args.top)))
        sys.stdout.write("]\n")
    return 0


def _print_table(prediction: Any, top: int) -> None:
    print(prediction.path)
    predicted = prediction.top_predicted(top)
    for genre, probability in prediction.genres[:top]:
        mark = "*" if genre in predicted else " "
        bar = "#" * round(probability * 30)
        print(f"  {mark} {genre:<14}{probability:7.1%}  {bar}")


def _on_interrupt(args: argparse.Namespace) -> str | None:
    """Where the predictions so far are, when a streamed run left any."""
    from postergenre.inference.journal import journal_path
    from postergenre.inference.predictions import prediction_output

    out = None
    with contextlib.suppress(UserError):  # then it stopped before it wrote anything
        out = prediction_output(args.posters, args.out, resume=args.resume, engine=args.engine)
    if out is None or not journal_path(out).exists():
        return None
    return f"predictions so far are in {journal_path(out)}: add --resume to go on"


def register_explain(commands: Subparsers) -> None:
    """Add `explain` to `commands`."""
    p = commands.add_parser(
        "explain",
        help="Grad-CAM heatmap: where the model looked for a genre",
        description="Write the poster with a Grad-CAM heatmap overlaid for a genre (default: the "
        "most probable one), and print where it went. Grad-CAM takes gradients through the "
        "network, so it needs a bundle (a bundled name, a bundle or run folder), not an "
        "exported .onnx file.",
    )
    add_model_arg(p)
    p.add_argument("poster", type=Path, metavar="POSTER")
    p.add_argument("--genre", help="genre to explain, in any case (default: the top prediction)")
    p.add_argument(
        "--out",
        metavar="PNG|DIR",
        help="overlay image to write (.png, .jpg or .webp), or a folder to write "
        "POSTER_NAME.gradcam.png into (an existing folder, or a path ending in /; created). "
        "Default: POSTER_NAME.gradcam.png in the current folder, never beside the poster "
        "(poster folders are often shared data). The path written is printed",
    )
    p.add_argument(
        "--npy",
        action="store_true",
        help="also save the raw heatmap (model input size, [0, 1]) as .npy",
    )
    p.set_defaults(handler=_explain)


def _explain(args: argparse.Namespace) -> int:
    from postergenre.explain.gradcam import overlay_path
    from postergenre.inference import Predictor

    out = overlay_path(args.poster, args.out)  # a bad --out fails before the model loads
    predictor = Predictor.from_pretrained(args.model)
    predictor.check_explainable()  # Grad-CAM needs PyTorch weights: a graph file has none
    explanation = predictor.explain(args.poster, args.genre)
    written = explanation.save(out, npy=args.npy)
    print(f"{explanation.genre} ({explanation.probability:.1%}): heatmap overlay written to {out}")
    if explanation.text is not None:
        print(f"text read on the poster (it counts in the probability): {explanation.text!r}")
    if args.npy:
        print(f"raw heatmap written to {written[1]}")
    return 0
