"""`postergenre download`: a poster data set from a CSV of poster URLs."""

from __future__ import annotations

import argparse
from pathlib import Path

from postergenre.cli._args import (
    Subparsers,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)


def register(commands: Subparsers) -> None:
    """Add `download` to `commands`."""
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
    _add_request_args(p)
    p.set_defaults(handler=_run, on_interrupt=_on_interrupt)


def _add_request_args(p: argparse.ArgumentParser) -> None:
    """How many requests, how patient, how often retried, how large, how fast."""
    p.add_argument(
        "--concurrency",
        type=positive_int,
        default=8,
        metavar="N",
        help="downloads at once (default 8)",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="seconds to connect, and without a byte while reading (default 30)",
    )
    p.add_argument(
        "--deadline",
        type=positive_float,
        default=120.0,
        metavar="S",
        help="seconds one request may take in all (default 120)",
    )
    p.add_argument(
        "--retries",
        type=non_negative_int,
        default=3,
        metavar="N",
        help="attempts after the first (default 3)",
    )
    p.add_argument(
        "--max-mb",
        type=positive_float,
        default=20.0,
        metavar="MB",
        help="refuse posters larger than this (default 20)",
    )
    p.add_argument(
        "--rate",
        type=non_negative_float,
        default=10.0,
        metavar="N",
        help="requests per second to any one host (default 10; 0: no limit)",
    )


def _run(args: argparse.Namespace) -> int:
    from postergenre.console import echo
    from postergenre.data.download import download_posters

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
    for line in report.summary():
        echo(line)
    return 0


def _on_interrupt(args: argparse.Namespace) -> str:
    return f"what is done is kept in {args.out}: run the same command again to resume"
