"""`postergenre index` (embed a collection) and `postergenre similar` (search it)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from postergenre.cli._args import (
    Subparsers,
    add_cache_arg,
    add_data_args,
    add_engine_args,
    load_collection,
    positive_int,
)
from postergenre.errors import UserError


def register_index(commands: Subparsers) -> None:
    """Add `index` to `commands`."""
    p = commands.add_parser(
        "index",
        help="index a poster collection for 'similar'",
        description="Embed every poster with a pretrained backbone (cached) and write an index "
        "folder that 'similar' and 'serve --index' search by cosine similarity.",
    )
    add_data_args(p)
    p.add_argument("--out", type=Path, required=True, metavar="INDEX", help="index folder")
    p.add_argument(
        "--arch",
        default="efficientnet-lite0",
        help="backbone whose embeddings are indexed (default efficientnet-lite0)",
    )
    p.add_argument("--split", help="index one split only")
    add_engine_args(p, "posters not cached yet are embedded")
    add_cache_arg(p)
    p.set_defaults(handler=_index)


def _index(args: argparse.Namespace) -> int:
    from postergenre.console import echo
    from postergenre.engines.ray_cluster import check_engine
    from postergenre.inference.similarity import PosterIndex

    check_engine(args.engine, args.address)
    collection = load_collection(args)
    records = collection.split(args.split).records
    if not records:
        raise UserError(f"no posters in split {args.split!r}")
    index = PosterIndex.build(
        records, args.arch, args.cache_dir, engine=args.engine, address=args.address
    )
    index.save(args.out)
    echo(f"indexed {len(index)} posters ({index.arch}) in {args.out}")
    return 0


def register_similar(commands: Subparsers) -> None:
    """Add `similar` to `commands`."""
    p = commands.add_parser(
        "similar",
        help="the most similar posters of an indexed collection",
        description="Rank the posters of an index by cosine similarity to POSTER.",
    )
    p.add_argument("poster", type=Path, metavar="POSTER")
    p.add_argument("--index", type=Path, required=True, metavar="INDEX")
    p.add_argument("--k", type=positive_int, default=8, help="how many (default 8)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(handler=_similar)


def _similar(args: argparse.Namespace) -> int:
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
