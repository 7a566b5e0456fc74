"""`postergenre models`: the bundled models and the architectures `train --arch` accepts."""

from __future__ import annotations

import argparse

from postergenre.cli._args import Subparsers


def register(commands: Subparsers) -> None:
    """Add `models` to `commands`."""
    p = commands.add_parser(
        "models",
        help="list bundled models and architectures",
        description="The models shipped with PosterGenre (task, architecture, genres, test "
        "metrics) and the architectures 'train --arch' accepts.",
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
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
