"""`postergenre serve`: the web page and JSON API."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from postergenre.cli._args import (
    Subparsers,
    add_threshold_policy_arg,
    non_negative_float,
    port_number,
    positive_float,
    positive_int,
)
from postergenre.cli.similarity import add_collection_args, has_collection, index_options
from postergenre.errors import UserError
from postergenre.paths import user_path


def register(commands: Subparsers) -> None:
    """Add `serve` to `commands`."""
    p = commands.add_parser(
        "serve",
        help="a web page and JSON API: drop posters, see genres and heatmaps",
        description="Serve a page to drop posters on: genre probabilities, a Grad-CAM heatmap "
        "per genre and, with --index, the most similar indexed posters. With posters as well "
        "(POSTER... or --labels/--folder, as 'index' takes them) the server starts at once "
        "and builds or updates the index in the background: the page shows how far it is "
        "and offers similar posters when it is ready. The JSON API is documented at /docs.",
    )
    p.add_argument(
        "--index",
        type=Path,
        metavar="INDEX",
        help="an index folder from 'postergenre index': enables similar posters; with "
        "posters named, the folder is built or brought up to date in the background",
    )
    p.add_argument(
        "--collection",
        nargs="?",
        const=True,
        metavar="DIR",
        help="look through and correct a scored collection at /collection: an index folder, "
        "or a poster folder (indexed into DIR/.postergenre-index, in the background the first "
        "time: the page opens when it is ready); alone, the --index folder. Corrections are "
        "saved to corrections.csv in the index folder",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1: this machine only)",
    )
    p.add_argument(
        "--port", type=port_number, default=8000, help="port (default 8000; 0: any free one)"
    )
    _add_limit_args(p)
    add_collection_args(p, required=False)  # --model and --runtime: the served model too
    add_threshold_policy_arg(p)
    p.set_defaults(handler=_run)


def _add_limit_args(p: argparse.ArgumentParser) -> None:
    """What one request may send and take, and how requests are batched."""
    p.add_argument(
        "--max-upload-mb",
        type=positive_float,
        default=10,
        metavar="MB",
        help="largest upload per request (default 10)",
    )
    p.add_argument(
        "--max-megapixels",
        type=positive_float,
        default=16,
        metavar="MP",
        help="largest poster the server decodes, in megapixels (default 16)",
    )
    p.add_argument(
        "--request-timeout",
        type=positive_float,
        default=15,
        metavar="S",
        help="seconds a client may take to send its request headers, or pause in its upload, "
        "before the server gives up on it (default 15)",
    )
    p.add_argument(
        "--max-batch",
        type=positive_int,
        default=32,
        help="most posters predicted together from concurrent requests (default 32)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=non_negative_float,
        default=5.0,
        metavar="MS",
        help="how long a request may wait for others to batch with (default 5)",
    )


def _run(args: argparse.Namespace) -> int:
    try:
        from postergenre.serving.server import serve
    except ImportError as exc:
        raise UserError(
            f"the web app needs {exc.name}: pip install fastapi uvicorn python-multipart"
        ) from exc
    from postergenre.inference import Predictor
    from postergenre.inference.similarity import PosterIndex

    job, pending = _index_job(args)  # refusals first: nothing loads for a bad command line
    predictor = Predictor.from_pretrained(
        args.model, args.runtime, args.cache_dir, threshold_policy=args.threshold_policy
    )
    if job is not None and job.build_options["model"] is not None:
        job.build_options["model"] = predictor  # the served model scores the collection
    collection = None
    if args.collection is not None and pending is None:
        collection = _open_collection(args, predictor)
        index = collection.index
    else:
        index = PosterIndex.load(args.index) if args.index is not None and job is None else None
    serve(
        predictor,
        host=args.host,
        port=args.port,
        index=index,
        collection=collection,
        max_upload_mb=args.max_upload_mb,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_pixels=int(args.max_megapixels * 1_000_000),
        request_timeout=args.request_timeout,
        index_job=job,
        collection_folder=pending,
    )
    return 0


def _index_job(args: argparse.Namespace) -> tuple[Any, Path | None]:
    """The background build of the index from the posters named (or of a --collection poster
    folder not indexed yet, into DIR/.postergenre-index), or None when there is nothing to
    build; and the collection folder to open once that index is there (else None)."""
    from postergenre.curation.collection import COLLECTION_INDEX, NotIndexed, resolve_collection
    from postergenre.inference.index_build import check_index_output
    from postergenre.serving.index_job import IndexJob

    named = args.collection not in (None, True)
    if named:
        try:
            resolve_collection(args.collection)
            named = False  # an index already: opened before serving
        except NotIndexed:
            if has_collection(args) or args.index is not None:
                raise UserError(
                    f"--collection {args.collection} is a poster folder not indexed yet: "
                    "give it alone (it is indexed in the background) or index it first"
                ) from None
            folder = user_path(args.collection)
            args = argparse.Namespace(**{**vars(args), "posters": [str(folder)]})
            args.index = folder / COLLECTION_INDEX
    if not has_collection(args):
        return None, None
    if args.index is None:
        raise UserError("posters to index need --index DIR: the folder the index is kept in")
    check_index_output(args.index)  # a file or a foreign folder there is refused now
    job = IndexJob(args.index, index_options(args), private=args.private)
    pending = args.index if named or args.collection is True else None
    return job, pending


def _open_collection(args: argparse.Namespace, predictor: Any) -> Any:
    """The collection --collection names (alone: the --index folder); refuses two different
    indexes, since the collection's index also answers similar-poster searches."""
    from postergenre.curation.collection import open_collection, resolve_collection

    if args.collection is True:
        if args.index is None:
            raise UserError("--collection without a folder needs --index INDEX")
        return open_collection(resolve_collection(args.index), predictor)
    folder = resolve_collection(args.collection)
    if args.index is not None and resolve_collection(args.index).resolve() != folder.resolve():
        raise UserError(
            f"--index {args.index} and --collection {args.collection} are different indexes",
            hint="give --collection alone: its index also finds similar posters",
        )
    return open_collection(folder, predictor)
