"""Messages for people: one place that decides where status lines and warnings go (stderr),
so stdout stays clean for `--json` output."""

from __future__ import annotations

import sys


def echo(message: str) -> None:
    """A status line on stderr."""
    print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A warning line on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def report_skipped(errors: dict[int, str], what: str = "posters", limit: int = 20) -> None:
    """One line per skipped file (up to `limit`), then a summary count."""
    if not errors:
        return
    for message in list(errors.values())[:limit]:
        warn(f"skipped {message}")
    if len(errors) > limit:
        warn(f"... and {len(errors) - limit} more")
    warn(f"{len(errors)} unreadable {what} skipped")
