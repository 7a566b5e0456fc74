"""The entry point: build the parser from the command modules, run the chosen command, and turn
what stops it into one message and an exit code, in this one place."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from postergenre import __version__
from postergenre.cli import (
    cache,
    download,
    duplicates,
    evaluate,
    export,
    label_issues,
    models,
    predict,
    serve,
    similarity,
    train,
)
from postergenre.errors import UserError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# In the order `postergenre --help` lists the commands.
_REGISTER = (
    train.register,
    evaluate.register,
    label_issues.register,
    predict.register_predict,
    similarity.register_index,
    similarity.register_similar,
    duplicates.register,
    predict.register_explain,
    export.register,
    serve.register,
    models.register,
    cache.register,
    download.register,
)


class _Parser(argparse.ArgumentParser):
    """argparse, refusing a bad command line in one line (its usage is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command-line interface."""
    parser = _Parser(
        prog="postergenre",
        description="Predict a movie's genres from its poster: train, evaluate, predict.",
        epilog="Run 'postergenre COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"postergenre {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _REGISTER:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, and turn user errors into one line and exit code 2, Ctrl-C into
    the command's advice and exit code 130."""
    from postergenre._allocator import tune_allocator

    tune_allocator()
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UserError as exc:
        print(f"postergenre {args.command}: error: {exc.one_line()}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        on_interrupt: Callable[[argparse.Namespace], str | None] | None
        on_interrupt = getattr(args, "on_interrupt", None)
        advice = on_interrupt(args) if on_interrupt is not None else None
        print("\ninterrupted" + (f"; {advice}" if advice else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
