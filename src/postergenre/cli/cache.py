"""`postergenre cache`: show, prune or clear the cache."""

from __future__ import annotations

import argparse

from postergenre.cli._args import Subparsers, add_cache_arg


def register(commands: Subparsers) -> None:
    """Add `cache` to `commands`."""
    p = commands.add_parser(
        "cache",
        help="show, prune or clear the cache",
        description="The cache keeps decoded posters, backbone embeddings and exported ONNX "
        "models, so repeated work is fast; deleting it only costs time. 'info' shows what it "
        "holds, 'prune' drops entries of posters that are gone or changed (and frees their "
        "space), 'clear' empties it.",
    )
    p.add_argument("action", choices=["info", "prune", "clear"])
    add_cache_arg(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from postergenre.console import format_bytes
    from postergenre.data import cache_admin

    if args.action == "info":
        print(cache_admin.cache_info(args.cache_dir).format())
    elif args.action == "prune":
        print(cache_admin.prune_cache(args.cache_dir).format())
    else:
        freed = cache_admin.clear_cache(args.cache_dir)
        print(f"cleared the cache: {format_bytes(freed)} freed")
    return 0
