"""The server's settings and their allowed ranges, checked in one place.

`serve()` and `create_app()` both build a `ServerSettings` and `check()` it, so a setting out of
range is refused in one line naming it and its range, before anything starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from numbers import Integral, Real

from postergenre.data.decode import MAX_PIXELS
from postergenre.errors import UserError
from postergenre.serving.limits import (
    MAX_FILES,
    MAX_UPLOAD_BYTES,
    MEGABYTE,
    REQUEST_TIMEOUT_S,
    SERVER_MAX_PIXELS,
)


class SettingError(UserError):
    """A server setting out of its allowed range."""


@dataclass(frozen=True)
class _Range:
    """The values a setting allows: `low` to `high`, a whole number or any finite number."""

    low: float
    high: float
    whole: bool = False
    low_excluded: bool = False  # e.g. a timeout: any positive number, but not 0

    def allows(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, Integral if self.whole else Real):
            return False
        number = float(value)  # type: ignore[arg-type]
        above_low = number > self.low if self.low_excluded else number >= self.low
        return math.isfinite(number) and above_low and number <= self.high

    def describe(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        if self.low_excluded:
            return f"{kind} over {_plain(self.low)} and at most {_plain(self.high)}"
        return f"{kind} from {_plain(self.low)} to {_plain(self.high)}"


def _plain(number: float) -> str:
    return f"{number:.6f}".rstrip("0").rstrip(".")


# The upper ends keep one request's memory and wait bounded, whatever the caller asked for.
_RANGES = {
    "port": _Range(0, 65535, whole=True),
    "max_upload_mb": _Range(0.000001, 1000),  # at least one byte, at most 1 GB
    "max_batch": _Range(1, 1024, whole=True),
    "max_wait_ms": _Range(0, 10_000),
    "max_files": _Range(1, 1000, whole=True),
    "max_pixels": _Range(1, MAX_PIXELS, whole=True),  # no more than a poster file may have
    "request_timeout": _Range(0, 3600, low_excluded=True),
}


@dataclass(frozen=True)
class ServerSettings:
    """What `serve()` and `create_app()` take; `check()` before use."""

    port: int = 8000
    max_upload_mb: float = MAX_UPLOAD_BYTES / MEGABYTE
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_files: int = MAX_FILES
    max_pixels: int = SERVER_MAX_PIXELS
    request_timeout: float = REQUEST_TIMEOUT_S

    def check(self) -> ServerSettings:
        """These settings, or `SettingError` naming the first one out of its range."""
        for setting in fields(self):
            value = getattr(self, setting.name)
            allowed = _RANGES[setting.name]
            if not allowed.allows(value):
                raise SettingError(f"{setting.name} must be {allowed.describe()}, got {value!r}")
        return self

    @property
    def max_upload_bytes(self) -> int:
        """The upload limit in bytes (`max_upload_mb` SI megabytes)."""
        return round(self.max_upload_mb * MEGABYTE)
