"""How a path the user typed becomes a `Path`: one rule for every layer (no imports above it)."""

from __future__ import annotations

from pathlib import Path


def user_path(text: str | Path) -> Path:
    """A path as the user named it, with `~` and `~user` expanded to their home folder."""
    return Path(text).expanduser()
