"""How many cores this process may use, and how many decoding processes to start by default."""

from __future__ import annotations

import os


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers() -> int:
    """Decoding (or OCR) processes when none are named: min(2, cores)."""
    return min(2, available_cores())
