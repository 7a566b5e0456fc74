"""Messages for people: one place that decides where status lines and warnings go (stderr),
so stdout stays clean for `--json` output. Cheap to import: tqdm loads only when a bar is shown."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from typing import Any

PROGRESS_ENV = "POSTERGENRE_PROGRESS_SECONDS"
_DEFAULT_INTERVAL = 10.0


def echo(message: str) -> None:
    """A status line on stderr."""
    print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A warning line on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def report_skipped(
    reasons: Mapping[Any, str],
    what: str = "posters",
    limit: int = 20,
    *,
    count: int | None = None,
    tally: bool = True,
) -> None:
    """One warning per skipped file (the first `limit` of `reasons`), then how many more of
    `count` (default: all of `reasons`, which may list only the first few); with `tally`, a
    last line counting them all, else the "more" line says what it counts."""
    total = len(reasons) if count is None else count
    if not total:
        return
    for message in list(reasons.values())[:limit]:
        warn(f"skipped {message}")
    if total > limit:
        more = total - limit
        warn(f"... and {more} more" if tally else f"... and {more:,} more unreadable {what}")
    if tally:
        warn(f"{total} unreadable {what} skipped")


def format_bytes(n: int) -> str:
    """`512 B`, `3.4 kB`, `1.6 GB` (powers of 1000, like `du --si`)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """`0.4s`, `42s`, `2m3s`, `1h5m0s`: short enough for a log line."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _env_interval() -> float:
    raw = os.environ.get(PROGRESS_ENV)
    if not raw:
        return _DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        warn(f"{PROGRESS_ENV}={raw!r} is not a number; using {_DEFAULT_INTERVAL:g}")
        return _DEFAULT_INTERVAL
    return max(value, 0.0)


class Progress:
    """Progress of `total` units of work: a tqdm bar when stderr is a terminal, plain lines at
    most every `interval` seconds (and one final line) when it is not, so logs show it too.

    Use as a context manager: `with progress(n, "decoding posters") as bar: bar.update()`.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "img",
        enabled: bool = True,
        interval: float | None = None,
    ):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = 0
        self.interval = _env_interval() if interval is None else max(float(interval), 0.0)
        self._active = enabled and self.total > 0
        self._closed = False
        self._postfix = ""
        self._bar: Any = None
        self._start = self._last = time.monotonic()
        if self._active and _stderr_is_tty():
            # tqdm.auto would pull in IPython checks; the plain bar is all a terminal needs.
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, disable=False)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """`n` more units done."""
        if not self._active or self._closed:
            return
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        # The final line reports the last count, so a periodic line at 100% would repeat it.
        if self.n < self.total and now - self._last >= self.interval:
            self._last = now
            echo(self._line(now))

    def set_postfix(self, **values: object) -> None:
        """Extra `name=value` pairs shown after the counts (e.g. the running loss)."""
        if not self._active:
            return
        if self._bar is not None:
            self._bar.set_postfix(**values)
            return
        self._postfix = ", ".join(f"{k}={_short(v)}" for k, v in values.items())

    def close(self) -> None:
        """Finish: close the bar, or print the final line (`done`, or where it stopped)."""
        if not self._active or self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            return
        elapsed = time.monotonic() - self._start
        rate = f" ({self.n / elapsed:.1f} {self.unit}/s)" if elapsed > 0 else ""
        counts = f"{self.desc}: {self.n}/{self.total}"
        if self.n >= self.total:
            echo(f"{counts} done in {format_duration(elapsed)}{rate}{self._suffix()}")
        else:
            echo(f"{counts} stopped after {format_duration(elapsed)}{rate}{self._suffix()}")

    def _line(self, now: float) -> str:
        elapsed = now - self._start
        parts = [f"{self.desc}: {self.n}/{self.total} ({100 * self.n / self.total:.1f}%)"]
        if elapsed > 0 and self.n > 0:
            rate = self.n / elapsed
            parts.append(f"{rate:.1f} {self.unit}/s")
            parts.append(f"ETA {format_duration((self.total - self.n) / rate)}")
        return ", ".join(parts) + self._suffix()

    def _suffix(self) -> str:
        return f" [{self._postfix}]" if self._postfix else ""


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def progress(
    total: int,
    desc: str,
    unit: str = "img",
    enabled: bool = True,
    interval: float | None = None,
) -> Progress:
    """A `Progress` for `total` units (see there); silent when disabled or `total` is 0.
    `interval` defaults to `$POSTERGENRE_PROGRESS_SECONDS`, else 10 seconds."""
    return Progress(total, desc, unit, enabled, interval)
