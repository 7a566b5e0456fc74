"""`postergenre label-issues`: the labelled posters whose genres look wrong."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from postergenre.cli._args import (
    Subparsers,
    add_cache_arg,
    add_data_args,
    genre_list,
    load_collection,
    non_negative_int,
    positive_int,
)
from postergenre.errors import UserError


def register(commands: Subparsers) -> None:
    """Add `label-issues` to `commands`."""
    p = commands.add_parser(
        "label-issues",
        help="find labelled posters whose genres are likely wrong",
        description="Fit a linear probe on frozen embeddings (cached) by cross-validation, so "
        "every poster gets probabilities from a probe that never saw it, and let cleanlab "
        "judge the given genres against them (needs postergenre[label-issues]). Lists the "
        "flagged posters, least credible labels first, with the genres the probe suggests.",
    )
    add_data_args(p)
    p.add_argument("--split", help="judge one split only (e.g. train); default: all posters")
    p.add_argument(
        "--arch", default="efficientnet-lite0", help="backbone of the embeddings (default lite0)"
    )
    p.add_argument(
        "--genres",
        type=genre_list,
        metavar="A,B,C",
        help="genres judged (default: every genre given to at least --folds posters)",
    )
    p.add_argument("--folds", type=positive_int, default=5, help="cross-validation folds (5)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the folds (default 0)")
    p.add_argument("--top", type=positive_int, default=20, help="flagged posters shown (20)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--csv",
        type=Path,
        metavar="FILE",
        help="write every judged poster, least credible first: id, path, quality, flagged, "
        "given and suggested genres",
    )
    add_cache_arg(p)
    p.set_defaults(handler=_run)


def _rows(records, issues) -> list[dict]:
    return [
        {
            "id": records[i].id,
            "path": str(records[i].path),
            "quality": round(float(issues.quality[i]), 6),
            "flagged": bool(issues.flagged[i]),
            "given": [g for g in records[i].genres if g in issues.genre_names],
            "suggested": issues.suggested(i),
        }
        for i in issues.ranked()
    ]


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv
    import io

    from postergenre.atomic import write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["id"])
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "flagged": int(row["flagged"]), "given": "|".join(row["given"]),
                         "suggested": "|".join(row["suggested"])})  # fmt: skip
    write_text(path, buffer.getvalue())


def _run(args: argparse.Namespace) -> int:
    from postergenre.console import echo
    from postergenre.curation.label_issues import label_issues_of

    records = load_collection(args).split(args.split).records
    if not records:
        raise UserError(f"no posters in split {args.split!r}")
    kept, issues = label_issues_of(
        records, args.arch, args.genres, args.folds, args.seed, args.cache_dir
    )
    rows = _rows(kept, issues)
    flagged = [row for row in rows if row["flagged"]]
    if args.csv is not None:
        _write_csv(args.csv, rows)
    if args.json:
        summary = {"judged": len(rows), "flagged": len(flagged), "genres": issues.genre_names,
                   "threshold": issues.threshold, "issues": flagged[: args.top]}  # fmt: skip
        print(json.dumps(summary))
        return 0
    share = len(flagged) / max(len(rows), 1)
    print(f"{len(flagged):,} of {len(rows):,} posters flagged as likely mislabelled ({share:.1%}); "
          f"{len(issues.genre_names)} genres judged: {', '.join(issues.genre_names)}")  # fmt: skip
    if flagged:
        print(f"\n{'quality':>7}  {'id':<14} {'given':<30} {'suggested':<30} path")
    for row in flagged[: args.top]:
        given, suggested = ", ".join(row["given"]) or "-", ", ".join(row["suggested"]) or "-"
        print(f"{row['quality']:>7.3f}  {row['id']:<14} {given:<30} {suggested:<30} {row['path']}")
    if len(flagged) > args.top:
        print(f"... and {len(flagged) - args.top:,} more (--top N, or --csv FILE for all)")
    if args.csv is not None:
        echo(f"wrote {len(rows):,} judged posters to {args.csv}")
    return 0
