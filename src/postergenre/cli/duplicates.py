"""`postergenre duplicates`: groups of the same poster in a collection."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from postergenre.cli._args import Subparsers, add_cache_arg, bounded, positive_int


def register(commands: Subparsers) -> None:
    """Add `duplicates` to `commands`."""
    from postergenre.curation.duplicates import (
        DEFAULT_HASH_CONFIRM,
        DEFAULT_HASH_DISTANCE,
        DEFAULT_NEIGHBOURS,
        DEFAULT_SIMILARITY,
    )

    p = commands.add_parser(
        "duplicates",
        help="find copies of the same poster in a collection",
        description="List groups of the same poster: exact copies, resized or recompressed "
        "versions, crops and borders (same image), and near-identical variants (mirrored, "
        "other text). Perceptual hashes and the cached backbone embeddings find candidate "
        "pairs; every two posters of a group must match on their own, so a film series does "
        "not chain into one group. The largest poster of each group comes first.",
    )
    p.add_argument(
        "collection",
        nargs="+",
        metavar="COLLECTION",
        help="posters as 'predict' takes them (files, folders, quoted globs, label CSVs, "
        "text files of paths), or one index folder written by 'postergenre index' (its "
        "embeddings are reused)",
    )
    p.add_argument(
        "--similarity",
        type=bounded(float, "a number from 0 to 1", lambda v: 0 <= v <= 1),
        default=DEFAULT_SIMILARITY,
        metavar="S",
        help=f"embedding cosine similarity at which two posters match (default "
        f"{DEFAULT_SIMILARITY}; lower finds more variants and more false pairs)",
    )
    p.add_argument(
        "--hash-distance",
        type=bounded(int, "a number of bits from 0 to 64", lambda v: 0 <= v <= 64),
        default=DEFAULT_HASH_DISTANCE,
        metavar="BITS",
        help=f"perceptual hash bits (of 64) two copies of the same image may differ by "
        f"(default {DEFAULT_HASH_DISTANCE})",
    )
    p.add_argument(
        "--hash-confirm",
        type=bounded(float, "a number from 0 to 1", lambda v: 0 <= v <= 1),
        default=DEFAULT_HASH_CONFIRM,
        metavar="S",
        help=f"embedding similarity a hash match also needs (default {DEFAULT_HASH_CONFIRM}; "
        "guards against unrelated posters whose hashes happen to be close)",
    )
    p.add_argument(
        "--neighbours",
        type=positive_int,
        default=DEFAULT_NEIGHBOURS,
        metavar="K",
        help=f"nearest embeddings of each poster considered (default {DEFAULT_NEIGHBOURS})",
    )
    p.add_argument(
        "--max-groups", type=positive_int, metavar="N", help="report the first N groups only"
    )
    p.add_argument("--json", action="store_true", help="print the groups as a JSON list")
    p.add_argument(
        "--csv", type=Path, metavar="FILE", help="write one row per poster of each group"
    )
    p.add_argument(
        "--sheet",
        type=Path,
        metavar="FILE",
        help="write a contact sheet (.png or .jpg): one row of thumbnails per group",
    )
    p.add_argument(
        "--sheet-rows",
        type=positive_int,
        default=50,
        metavar="N",
        help="groups shown on the sheet (default 50; a note says how many more)",
    )
    p.add_argument(
        "--arch",
        default="efficientnet-lite0",
        help="backbone whose embeddings are compared (default efficientnet-lite0; an index "
        "folder uses its own)",
    )
    add_cache_arg(p)
    p.set_defaults(handler=_duplicates)


def _duplicates(args: argparse.Namespace) -> int:
    from postergenre.console import echo
    from postergenre.curation.contact_sheet import sheet_format, write_sheet
    from postergenre.curation.duplicates import (
        Thresholds,
        fingerprint_collection,
        group_duplicates,
        write_csv,
    )
    from postergenre.errors import UserError

    if args.sheet is not None:
        sheet_format(args.sheet)  # refused before any work
    thresholds = Thresholds(
        args.similarity, args.hash_distance, args.neighbours, hash_confirm=args.hash_confirm
    )
    collection = fingerprint_collection(
        args.collection, arch=args.arch, cache_dir=args.cache_dir, progress=True
    )
    if len(collection) < 2:
        raise UserError(f"{len(collection)} readable poster(s): duplicates needs at least two")
    groups = group_duplicates(collection, thresholds)
    found = len(groups)
    groups = groups[: args.max_groups] if args.max_groups else groups
    if args.json:
        print(json.dumps([g.to_json() for g in groups]))
    else:
        _print_table(groups)
    if args.csv is not None:
        write_csv(groups, args.csv)
        echo(f"wrote {len(groups)} groups to {args.csv}")
    if args.sheet is not None:
        write_sheet(groups, args.sheet, max_rows=args.sheet_rows)
        echo(f"wrote a contact sheet of {min(len(groups), args.sheet_rows)} groups to {args.sheet}")
    posters = sum(len(g.members) for g in groups)
    shown = f" (showing {len(groups)})" if len(groups) < found else ""
    echo(
        f"{found} groups of duplicates{shown} among {len(collection):,} posters "
        f"({posters} posters in the groups shown)"
    )
    return 0


def _print_table(groups: list) -> None:
    from postergenre.console import format_bytes

    for number, group in enumerate(groups, 1):
        print(
            f"#{number}  {group.kind}, lowest similarity {group.similarity:.3f}, "
            f"{len(group.members)} posters"
        )
        for m in group.members:
            size = f"{m.width}x{m.height}" if m.width else "?"
            title = f"  ({m.title})" if m.title else ""
            print(f"    {size:>11}  {format_bytes(m.bytes):>8}  {m.shown}{title}")
