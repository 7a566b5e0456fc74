"""`postergenre index` (embed a collection) and `postergenre similar` (search it)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from postergenre.cli._args import (
    Subparsers,
    add_cache_arg,
    add_data_args,
    add_engine_args,
    add_model_arg,
    add_runtime_arg,
    load_collection,
    positive_int,
)
from postergenre.errors import UserError


class CollectionMissing(UserError):
    """No posters, or posters named two ways at once."""

    hint = "name posters (files, folders, globs, lists) or use --labels CSV or --folder DIR"


def add_collection_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The posters of a collection and how they are indexed: POSTERS or the data arguments,
    --split, --metadata, --arch, --model/--runtime, --no-predict, --private, --cache-dir."""
    p.add_argument(
        "posters",
        nargs="*",
        metavar="POSTER",
        help="posters to index, as 'predict' takes them: image files, folders (searched "
        "recursively), quoted globs, label CSVs or text files of paths; or give --labels / "
        "--folder instead"
        + ("" if required else " (with --index: built or updated in the background)"),
    )
    add_data_args(p)
    p.add_argument("--split", help="with --labels or --folder: index one split only")
    p.add_argument(
        "--metadata",
        type=Path,
        metavar="CSV",
        help="titles for the posters: a CSV with an id column (the file stem, or the path) "
        "and a 'title' column (a label file's Title column is read by itself)",
    )
    p.add_argument(
        "--arch",
        default="efficientnet-lite0",
        help="backbone whose embeddings are indexed (default efficientnet-lite0)",
    )
    add_model_arg(p)
    add_runtime_arg(p)
    p.add_argument(
        "--no-predict",
        action="store_true",
        help="store no model probabilities (by default each poster's genres under --model are "
        "stored beside its embedding: what 'similar' shows for posters without labels)",
    )
    p.add_argument(
        "--private",
        action="store_true",
        help="make the index folder readable by you only (0700); by default it is an "
        "ordinary folder, as mkdir makes it under your umask",
    )
    add_cache_arg(p)


def register_index(commands: Subparsers) -> None:
    """Add `index` to `commands`."""
    p = commands.add_parser(
        "index",
        help="index a poster collection for 'similar'",
        description="Embed every poster with a pretrained backbone (cached) and score it with "
        "a model, and write an index folder that 'similar' and 'serve --index' search by "
        "cosine similarity. Any folder is a collection: labels are optional (without them "
        "'similar' shows the model's genres), titles come from a label file's Title column "
        "or --metadata. Run again with the same --out to update it: only new or changed "
        "posters are embedded, posters no longer listed are dropped.",
    )
    add_collection_args(p)
    p.add_argument("--out", type=Path, required=True, metavar="INDEX", help="index folder")
    add_engine_args(p, "posters not cached yet are embedded")
    p.set_defaults(handler=_index)


def has_collection(args: argparse.Namespace) -> bool:
    """Whether the command line names posters to index."""
    return bool(args.posters) or args.labels is not None or args.folder is not None


def index_options(args: argparse.Namespace) -> dict[str, Any]:
    """What `build_index` takes from the command line: the posters (sources, or records of a
    label file or folder), their titles, backbone, model and cache. Refusals are `UserError`s."""
    from postergenre.console import warn
    from postergenre.data.metadata import PosterTitles, read_titles
    from postergenre.data.sources import open_sources
    from postergenre.models.catalog import DEFAULT_MODEL

    labelled = args.labels is not None or args.folder is not None
    if args.posters and labelled:
        raise CollectionMissing("give posters or --labels/--folder, not both")
    if not args.posters and not labelled:
        raise CollectionMissing("no posters to index")
    if args.split is not None and not labelled:
        raise UserError("--split needs --labels or --folder (a split is read from labels)")
    titles = PosterTitles()
    if labelled:
        records = load_collection(args).split(args.split).records
        if not records:
            raise UserError(f"no posters in split {args.split!r}")
        posters: Any = records
        if args.labels is not None:
            titles.update(read_titles(args.labels, required=False))
    else:
        posters = open_sources(args.posters)  # a missing file is refused before any work
        for source in posters.sources:
            if source.kind == "labels":
                titles.update(read_titles(source.path, required=False))
    if args.metadata is not None:
        titles.update(read_titles(args.metadata))
    for note in titles.notes:
        warn(note)
    return {
        "posters": posters,
        "titles": titles,
        "arch": args.arch,
        "model": None if args.no_predict else (args.model or DEFAULT_MODEL),
        "runtime": args.runtime,
        "cache_dir": args.cache_dir,
    }


def _index(args: argparse.Namespace) -> int:
    from postergenre.console import echo
    from postergenre.engines.ray_cluster import check_engine
    from postergenre.inference.index_build import build_index, previous_index

    check_engine(args.engine, args.address)
    previous = previous_index(args.out)  # a file or a foreign folder is refused first
    options = index_options(args)
    index = build_index(
        options.pop("posters"),
        previous=previous,
        engine=args.engine,
        address=args.address,
        **options,
    )
    index.save(args.out, private=args.private)
    scored = f", genres by {index.model}" if index.model else ""
    echo(
        f"indexed {len(index):,} posters ({index.arch}{scored}) in {args.out}: "
        f"{index.changes.describe()}"
    )
    return 0


def register_similar(commands: Subparsers) -> None:
    """Add `similar` to `commands`."""
    p = commands.add_parser(
        "similar",
        help="the most similar posters of an indexed collection",
        description="Rank the posters of an index by cosine similarity to POSTER: a poster "
        "of the index, named by id or path (it is left out of its own answer), or any "
        "other poster file. Each hit shows its title (else its file name), its genres (the "
        "given ones, or the model's for posters without labels) and its path.",
    )
    p.add_argument("poster", metavar="POSTER", help="an id or path in the index, or a file")
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
    print(f"most similar to {args.poster} (of {len(index):,} posters):")
    width = min(max((len(n.name) for n in neighbours), default=0), 40)
    for rank, n in enumerate(neighbours, 1):
        genres = ", ".join(n.genres) + ("" if n.labelled or not n.genres else " (predicted)")
        print(f"{rank:>3}. {n.similarity:.3f}  {n.name[:40]:<{width}}  {genres:<34} {n.shown}")
    return 0
