"""Fetching one poster over HTTP politely: a per-host rate with no bursts, redirects followed
one hop at a time under it, a deadline per request, bodies capped, and each failure named."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from postergenre import __version__
from postergenre.errors import UserError

USER_AGENT = f"postergenre/{__version__} (poster data set download)"
RETRY_STATUSES = frozenset({408, 429})


class DownloadSettingError(UserError):
    """A limit that makes no sense (a negative timeout, no concurrency)."""


class AttemptFailed(Exception):
    """One attempt failed: `reason` for failures.csv, whether another attempt may succeed."""

    def __init__(self, reason: str, retry: bool = False, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry, self.retry_after = reason, retry, retry_after


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delay-seconds or an HTTP date); None when
    absent or unreadable."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if seconds == seconds else None  # NaN is no answer
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def _classify(exc: httpx.HTTPError) -> AttemptFailed:
    """An httpx error as a failure reason; network trouble is worth another attempt."""
    if isinstance(exc, httpx.ConnectTimeout):
        return AttemptFailed("timeout (connect)", retry=True)
    if isinstance(exc, httpx.TimeoutException):
        return AttemptFailed("timeout (read)", retry=True)
    if isinstance(exc, httpx.RemoteProtocolError):
        message = str(exc)
        if "complete message body" in message:
            return AttemptFailed("truncated body", retry=True)
        if "without sending" in message or "disconnected" in message:
            return AttemptFailed("connection error", retry=True)
        return AttemptFailed("protocol error")
    if isinstance(exc, httpx.NetworkError):
        return AttemptFailed("connection error", retry=True)
    if isinstance(exc, httpx.UnsupportedProtocol):
        return AttemptFailed("bad url")
    return AttemptFailed(f"http error ({type(exc).__name__})")


def is_http_url(url: str | httpx.URL) -> bool:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


@dataclass(frozen=True)
class DownloadSettings:
    concurrency: int
    timeout: float
    deadline: float
    retries: int
    max_bytes: int
    rate: float
    max_redirects: int
    backoff: float
    max_backoff: float
    max_retry_after: float
    max_pixels: int

    def __post_init__(self) -> None:
        positive = ("concurrency", "timeout", "deadline", "max_bytes", "max_pixels")
        for name in positive:
            if not getattr(self, name) > 0:
                raise DownloadSettingError(f"{name} must be positive, got {getattr(self, name)}")
        others = ("retries", "rate", "max_redirects", "backoff", "max_backoff", "max_retry_after")
        for name in others:
            if not getattr(self, name) >= 0:
                raise DownloadSettingError(f"{name} must be 0 or more, got {getattr(self, name)}")

    def retry_delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before attempt `attempt + 1`: the server's Retry-After (capped), else an
        exponential backoff with jitter."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1)


class HostRateLimit:
    """At most `rate` requests per second to each host (0: no limit), and pauses a host asks
    for with 429 Too Many Requests."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next: dict[str, float] = {}
        self._turns: dict[str, asyncio.Lock] = {}

    async def wait(self, host: str) -> None:
        """Return when a request to `host` may start: one `interval` after the previous one
        really started. Slots are not booked ahead, so requests whose wake-up comes late (a
        busy loop) cannot start together; the lock hands out turns first come, first served."""
        loop = asyncio.get_running_loop()
        async with self._turns.setdefault(host, asyncio.Lock()):
            while (delay := self._next.get(host, 0.0) - loop.time()) > 0:
                await asyncio.sleep(delay)  # again if a 429 moved the time on meanwhile
            self._next[host] = loop.time() + self.interval

    def pause(self, host: str, seconds: float) -> None:
        until = asyncio.get_running_loop().time() + seconds
        self._next[host] = max(self._next.get(host, until), until)


def open_client(settings: DownloadSettings) -> httpx.AsyncClient:
    """The HTTP client of a download: our user agent, `concurrency` connections at most."""
    return httpx.AsyncClient(
        headers={"User-Agent": USER_AGENT, "Accept": "image/*, */*;q=0.5"},
        timeout=httpx.Timeout(settings.timeout),
        limits=httpx.Limits(
            max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
        ),
        follow_redirects=False,  # followed one hop at a time, each under the rate limit
    )


class Fetcher:
    """GETs poster bodies through one client, under one per-host rate limit."""

    def __init__(self, client: httpx.AsyncClient, settings: DownloadSettings):
        self.client, self.settings = client, settings
        self.limit = HostRateLimit(settings.rate)

    async def fetch(self, url: str) -> bytes:
        """One GET, following redirects; the deadline counts network time only (not the waits
        for the rate limit)."""
        loop = asyncio.get_running_loop()
        budget = self.settings.deadline
        request = self.client.build_request("GET", url)
        seen = {str(request.url)}
        for _ in range(self.settings.max_redirects + 1):
            await self.limit.wait(request.url.host)
            started = loop.time()
            try:
                async with asyncio.timeout(budget):
                    outcome = await self._send(request)
            except TimeoutError:
                raise AttemptFailed("timeout (deadline)", retry=True) from None
            budget -= loop.time() - started
            if isinstance(outcome, bytes):
                return outcome
            request = outcome
            if not is_http_url(request.url):
                raise AttemptFailed("bad redirect")
            if str(request.url) in seen:
                raise AttemptFailed("redirect loop")
            seen.add(str(request.url))
        raise AttemptFailed("too many redirects")

    async def _send(self, request: httpx.Request) -> bytes | httpx.Request:
        """The body of a 2xx response (streamed, at most `max_bytes`), or the next request of a
        redirect."""
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _classify(exc) from exc
        try:
            if response.next_request is not None:
                return response.next_request
            status = response.status_code
            if not 200 <= status < 300:
                retry = status in RETRY_STATUSES or status >= 500
                wait = retry_after_seconds(response.headers.get("retry-after")) if retry else None
                if status == 429:
                    self.limit.pause(request.url.host, self.settings.retry_delay(1, wait))
                raise AttemptFailed(f"http {status}", retry, wait)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.settings.max_bytes:
                raise AttemptFailed("too large")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self.settings.max_bytes:
                    raise AttemptFailed("too large")
            return bytes(body)
        except httpx.HTTPError as exc:
            raise _classify(exc) from exc
        finally:
            await response.aclose()
