"""The `postergenre` command line. Each sub-command is a thin wrapper over the Python API: one
module per command family registers its sub-parser and handler; `main` runs them."""

from postergenre.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
