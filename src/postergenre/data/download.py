"""Build a poster data set from a CSV of poster URLs (the Kaggle `MovieGenre.csv`, or any list
with an id and a URL column): download politely, keep only files that decode as posters, resume.

`OUT/images/<id>.<ext>` holds the posters, `OUT/labels.csv` (id, genres, title, year, url) is
ready for `train --labels`, and `OUT/failures.csv` (id, url, reason, attempts) lists the rest.
Every file is written atomically, so an interrupted run leaves no partial file; running again
skips the posters already there and retries the failures.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import random
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
from PIL import Image

from postergenre import __version__, console
from postergenre.atomic import remove_stale_temporaries, write_bytes, write_text
from postergenre.data.decode import MAX_PIXELS, POSTER_FORMATS, decode_poster, open_poster
from postergenre.data.formats import is_image_name
from postergenre.data.labels import LABEL_COLUMNS, find_column, match_key, open_csv, parse_genres
from postergenre.errors import PosterDecodeError, UserError

__all__ = [
    "USER_AGENT",
    "DownloadInterrupted",
    "DownloadReport",
    "Failure",
    "download_posters",
    "retry_after_seconds",
]

USER_AGENT = f"postergenre/{__version__} (poster data set download)"
# Column names looked for, in order of preference (matched case-insensitively).
ID_COLUMNS = ("id", "imdbid", "imdb_id", "tconst", "movie_id", "movieid", "filename")
URL_COLUMNS = (
    "url",
    "poster_url",
    "posterurl",
    "poster",
    "poster_link",
    "image_url",
    "imageurl",
    "img_url",
    "image",
)
TITLE_COLUMNS = ("title", "movie_title", "name")
YEAR_COLUMNS = ("year", "release_year")
LABELS_HEADER = ("id", "genres", "title", "year", "url")
FAILURES_HEADER = ("id", "url", "reason", "attempts")
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
# Decoded format -> extension. The others Pillow may read (TIFF, AVIF) are stored as PNG, the
# formats the label reader looks for.
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
RETRY_STATUSES = frozenset({408, 429})
NOT_ATTEMPTED = "not attempted (interrupted)"
_TITLE_YEAR = re.compile(r"(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-–]\s*\d{0,4})?\s*\)\s*")


class UrlColumnMissing(UserError):
    """The URL list has no column of poster URLs."""

    hint = "name it with --url-column"


class IdColumnMissing(UserError):
    """The URL list has no id column."""

    hint = "name it with --id-column"


class DownloadFolderError(UserError):
    """The output folder cannot be created or written."""


class DownloadSettingError(UserError):
    """A limit that makes no sense (a negative timeout, no concurrency)."""


@dataclass(frozen=True)
class Failure:
    """A poster that is not in the data set, and why."""

    id: str
    url: str
    reason: str
    attempts: int


@dataclass
class DownloadReport:
    """What a download did; `summary()` says it in a few lines."""

    out: Path
    total: int
    kept: int
    downloaded: int = 0
    already_there: int = 0
    failures: list[Failure] = field(default_factory=list)
    duplicates: int = 0
    interrupted: bool = False

    @property
    def failed(self) -> int:
        """Posters not in the data set (including rows with no URL)."""
        return len(self.failures)

    @property
    def labels_path(self) -> Path:
        return self.out / "labels.csv"

    @property
    def failures_path(self) -> Path:
        return self.out / "failures.csv"

    def failure_counts(self) -> dict[str, int]:
        """{reason: count}, the most common first."""
        return dict(Counter(f.reason for f in self.failures).most_common())

    def summary(self) -> list[str]:
        """Counts, failures by reason and the files written, for people."""
        lines = [
            f"downloaded {self.downloaded}, already there {self.already_there}, "
            f"failed {self.failed} (of {self.total} posters)"
        ]
        if self.failures:
            counts = ", ".join(f"{reason}: {n}" for reason, n in self.failure_counts().items())
            lines.append(f"failures by reason: {counts}")
        if self.duplicates:
            lines.append(f"{self.duplicates} rows repeating an id were merged into one poster")
        lines.append(
            f"wrote {self.labels_path} ({self.kept} posters) and {self.failures_path} "
            f"({self.failed} rows)"
        )
        return lines


class DownloadInterrupted(KeyboardInterrupt):
    """Ctrl-C during a download: the lists were written for what was done (see `report`)."""

    def __init__(self, report: DownloadReport):
        super().__init__("download interrupted")
        self.report = report


# -- the URL list ---------------------------------------------------------------------------


@dataclass
class _Row:
    index: int
    id: str
    url: str
    genres: tuple[str, ...]
    title: str
    year: str
    problem: str = ""  # a reason to fail without a request ("no id", "bad id")


def _poster_id(raw: str) -> tuple[str, str]:
    """The id a poster is stored under (numeric IMDb ids become `tt` + 7 digits), and a
    problem that makes it unusable as a file name ("" when none)."""
    text = raw.strip()
    if is_image_name(text):
        text = text[: -len(Path(text).suffix)]
    poster_id = match_key(text)
    if not poster_id:
        return "", "no id"
    unsafe = poster_id.startswith(".") or any(c in poster_id for c in "/\\\0")
    if unsafe or not poster_id.isprintable() or len(poster_id) > 200:
        return poster_id, "bad id"
    return poster_id, ""


def split_title_year(title: str) -> tuple[str, str]:
    """`"Toy Story (1995)"` -> `("Toy Story", "1995")`; a title without a year is kept whole."""
    found = _TITLE_YEAR.fullmatch(title.strip())
    if found and found.group("title"):
        return found.group("title"), found.group("year")
    return title.strip(), ""


def _column(fieldnames: list[str], name: str | None, candidates: tuple[str, ...]) -> str | None:
    if name is None:
        return find_column(fieldnames, candidates)
    found = find_column(fieldnames, (name.strip().lower(),))
    if found is None:
        raise UserError(f"no column {name!r} (columns: {', '.join(fieldnames)})")
    return found


def _read_rows(
    labels: Path,
    url_column: str | None,
    id_column: str | None,
    max_label_bytes: int | None,
) -> tuple[list[_Row], int]:
    """The rows of the URL list, one per poster id in file order (repeated ids merged, their
    genres united), and how many rows were merged."""
    csv_file = open_csv(labels, max_label_bytes)
    names = csv_file.fieldnames
    id_col = _column(names, id_column, ID_COLUMNS)
    if id_col is None:
        raise IdColumnMissing(
            f"{labels}: no id column; expected one of {', '.join(ID_COLUMNS)} "
            f"(found {', '.join(names)})"
        )
    url_col = _column(names, url_column, URL_COLUMNS)
    if url_col is None:
        raise UrlColumnMissing(
            f"{labels}: no URL column; expected one of {', '.join(URL_COLUMNS)} "
            f"(found {', '.join(names)})"
        )
    genre_col = find_column(names, LABEL_COLUMNS)
    title_col = find_column(names, TITLE_COLUMNS)
    year_col = find_column(names, YEAR_COLUMNS)

    rows: list[_Row] = []
    by_id: dict[str, _Row] = {}
    duplicates = 0
    for line in csv_file.rows():
        poster_id, problem = _poster_id(line.get(id_col) or "")
        url = (line.get(url_col) or "").strip()
        try:
            genres = parse_genres(line.get(genre_col) or "") if genre_col else ()
        except ValueError:
            genres = ()
        title, year = split_title_year(line.get(title_col) or "") if title_col else ("", "")
        if year_col and (line.get(year_col) or "").strip():
            year = (line.get(year_col) or "").strip()
        row = _Row(len(rows), poster_id, url, genres, title, year, problem)
        previous = by_id.get(poster_id) if not problem else None
        if previous is None:
            rows.append(row)
            if not problem:
                by_id[poster_id] = row
            continue
        duplicates += 1
        previous.genres += tuple(g for g in genres if g not in previous.genres)
        previous.url = previous.url or url
        previous.title = previous.title or title
        previous.year = previous.year or year
    if not rows:
        raise UserError(f"{labels} has no rows")
    return rows, duplicates


# -- fetching -------------------------------------------------------------------------------


class _Failed(Exception):
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


def _classify(exc: httpx.HTTPError) -> _Failed:
    """An httpx error as a failure reason; network trouble is worth another attempt."""
    if isinstance(exc, httpx.ConnectTimeout):
        return _Failed("timeout (connect)", retry=True)
    if isinstance(exc, httpx.TimeoutException):
        return _Failed("timeout (read)", retry=True)
    if isinstance(exc, httpx.RemoteProtocolError):
        message = str(exc)
        if "complete message body" in message:
            return _Failed("truncated body", retry=True)
        if "without sending" in message or "disconnected" in message:
            return _Failed("connection error", retry=True)
        return _Failed("protocol error")
    if isinstance(exc, httpx.NetworkError):
        return _Failed("connection error", retry=True)
    if isinstance(exc, httpx.UnsupportedProtocol):
        return _Failed("bad url")
    return _Failed(f"http error ({type(exc).__name__})")


def _is_http_url(url: str | httpx.URL) -> bool:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


@dataclass(frozen=True)
class _Settings:
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


class _HostRateLimit:
    """At most `rate` requests per second to each host (0: no limit), and pauses a host asks
    for with 429 Too Many Requests."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next: dict[str, float] = {}

    async def wait(self, host: str) -> None:
        now = asyncio.get_running_loop().time()
        slot = max(now, self._next.get(host, now))
        self._next[host] = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)

    def pause(self, host: str, seconds: float) -> None:
        until = asyncio.get_running_loop().time() + seconds
        self._next[host] = max(self._next.get(host, until), until)


@dataclass(frozen=True)
class _Outcome:
    kind: str  # "downloaded", "there" or "failed"
    reason: str = ""
    attempts: int = 0


def _scan_images(images: Path) -> dict[str, list[Path]]:
    """{file stem: image files} in `images`."""
    found: dict[str, list[Path]] = {}
    with os.scandir(images) as entries:
        for entry in entries:
            if entry.is_file() and is_image_name(entry.name) and not entry.name.startswith("."):
                path = Path(entry.path)
                found.setdefault(path.stem, []).append(path)
    return found


def _is_poster(path: Path, max_pixels: int) -> bool:
    try:
        decode_poster(path, max_pixels)
    except Exception:  # any reason not to trust the file means fetching it again
        return False
    return True


class _Downloader:
    """Fetches, checks and stores one poster at a time; shared by the workers."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: _Settings,
        images: Path,
        existing: dict[str, list[Path]],
    ):
        self.client, self.settings, self.images, self.existing = client, settings, images, existing
        self.limit = _HostRateLimit(settings.rate)

    async def process(self, row: _Row) -> _Outcome:
        if row.problem:
            return _Outcome("failed", row.problem)
        old = self.existing.get(row.id, [])
        for path in old:
            if await asyncio.to_thread(_is_poster, path, self.settings.max_pixels):
                return _Outcome("there")
        if not row.url:
            return _Outcome("failed", "no url")
        if not _is_http_url(row.url):
            return _Outcome("failed", "bad url")
        attempts = 0
        while True:
            attempts += 1
            try:
                body = await self._attempt(row.url)
                await asyncio.to_thread(self._keep, row.id, body, old)
                return _Outcome("downloaded", attempts=attempts)
            except _Failed as failed:
                if not failed.retry or attempts > self.settings.retries:
                    return _Outcome("failed", failed.reason, attempts)
                await asyncio.sleep(self.settings.retry_delay(attempts, failed.retry_after))

    async def _attempt(self, url: str) -> bytes:
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
                raise _Failed("timeout (deadline)", retry=True) from None
            budget -= loop.time() - started
            if isinstance(outcome, bytes):
                return outcome
            request = outcome
            if not _is_http_url(request.url):
                raise _Failed("bad redirect")
            if str(request.url) in seen:
                raise _Failed("redirect loop")
            seen.add(str(request.url))
        raise _Failed("too many redirects")

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
                raise _Failed(f"http {status}", retry, wait)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.settings.max_bytes:
                raise _Failed("too large")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self.settings.max_bytes:
                    raise _Failed("too large")
            return bytes(body)
        except httpx.HTTPError as exc:
            raise _classify(exc) from exc
        finally:
            await response.aclose()

    def _keep(self, poster_id: str, body: bytes, old: list[Path]) -> Path:
        """Write `body` as `images/<id>.<ext>` if it decodes as a poster (runs in a thread)."""
        if not body:
            raise _Failed("empty body")
        try:
            with Image.open(io.BytesIO(body), formats=POSTER_FORMATS) as probe:
                image_format = probe.format or ""
        except Exception:
            raise _Failed("not an image") from None
        try:
            image = open_poster(io.BytesIO(body), poster_id, self.settings.max_pixels)
        except PosterDecodeError as exc:
            raise _Failed("too many pixels" if "pixels" in str(exc) else "corrupt image") from None
        except Exception:
            raise _Failed("corrupt image") from None
        extension = EXTENSIONS.get(image_format)
        if extension is None:
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            body, extension = buffer.getvalue(), "png"
        path = self.images / f"{poster_id}.{extension}"
        try:
            write_bytes(path, body)
            for stale in old:
                if stale != path:
                    stale.unlink(missing_ok=True)
        except OSError as exc:
            raise DownloadFolderError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path


async def _download_all(
    rows: list[_Row],
    settings: _Settings,
    images: Path,
    results: dict[int, _Outcome],
    progress: bool,
) -> None:
    """Process every row with `concurrency` workers, recording each outcome in `results` as
    it comes (so an interruption keeps what was done)."""
    pending = deque(rows)
    existing = _scan_images(images)
    client = httpx.AsyncClient(
        headers={"User-Agent": USER_AGENT, "Accept": "image/*, */*;q=0.5"},
        timeout=httpx.Timeout(settings.timeout),
        limits=httpx.Limits(
            max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
        ),
        follow_redirects=False,  # followed one hop at a time, each under the rate limit
    )
    async with client:
        downloader = _Downloader(client, settings, images, existing)
        with console.progress(len(rows), "downloading posters", enabled=progress) as bar:
            failed = 0

            async def work() -> None:
                nonlocal failed
                while pending:
                    row = pending.popleft()
                    outcome = await downloader.process(row)
                    results[row.index] = outcome
                    bar.update()
                    if outcome.kind == "failed":
                        failed += 1
                        bar.set_postfix(failed=failed)

            try:
                async with asyncio.TaskGroup() as group:
                    for _ in range(min(settings.concurrency, len(rows))):
                        group.create_task(work())
            except BaseExceptionGroup as errors:
                raise errors.exceptions[0] from None


# -- the lists ------------------------------------------------------------------------------


def _csv_text(header: tuple[str, ...], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_lists(
    out: Path,
    rows: list[_Row],
    results: dict[int, _Outcome],
    duplicates: int,
    interrupted: bool,
) -> DownloadReport:
    """Write labels.csv and failures.csv in the order of the URL list. Rows an interruption
    left unprocessed count as posters when their image is on disk, else as not attempted."""
    on_disk = _scan_images(out / "images")
    labels: list[list[str]] = []
    report = DownloadReport(out, total=len(rows), kept=0, duplicates=duplicates)
    report.interrupted = interrupted
    for row in rows:
        outcome = results.get(row.index)
        if outcome is None:
            there = not row.problem and row.id in on_disk
            outcome = _Outcome("there") if there else _Outcome("failed", NOT_ATTEMPTED)
        elif outcome.kind == "downloaded":
            report.downloaded += 1
        elif outcome.kind == "there":
            report.already_there += 1
        if outcome.kind == "failed":
            report.failures.append(Failure(row.id, row.url, outcome.reason, outcome.attempts))
        else:
            labels.append([row.id, "|".join(row.genres), row.title, row.year, row.url])
    report.kept = len(labels)
    failures = [[f.id, f.url, f.reason, str(f.attempts)] for f in report.failures]
    write_text(report.labels_path, _csv_text(LABELS_HEADER, labels))
    write_text(report.failures_path, _csv_text(FAILURES_HEADER, failures))
    return report


def _prepare(out: Path) -> Path:
    """Create OUT/images (or say why not) and remove temporaries a killed run left there."""
    images = out / "images"
    try:
        images.mkdir(parents=True, exist_ok=True)
        for folder in (out, images):
            remove_stale_temporaries(folder)
    except OSError as exc:
        raise DownloadFolderError(
            f"cannot use {out} as the output folder: {exc.strerror or exc}"
        ) from exc
    if not os.access(out, os.W_OK) or not os.access(images, os.W_OK):
        raise DownloadFolderError(f"cannot write in the output folder {out}")
    return images


def download_posters(
    labels: str | Path,
    out: str | Path,
    *,
    url_column: str | None = None,
    id_column: str | None = None,
    concurrency: int = 8,
    timeout: float = 30.0,
    deadline: float = 120.0,
    retries: int = 3,
    max_bytes: int = DEFAULT_MAX_BYTES,
    rate: float = 10.0,
    max_redirects: int = 5,
    backoff: float = 1.0,
    max_backoff: float = 30.0,
    max_retry_after: float = 120.0,
    max_pixels: int = MAX_PIXELS,
    max_label_bytes: int | None = None,
    progress: bool = True,
) -> DownloadReport:
    """Download the posters of a URL list into `out` (see the module docstring for the files).

    `labels`: a CSV with an id column (id, imdbId, ...) and a URL column (url, poster_url,
    Poster, ...), or the columns named by `id_column` / `url_column`; genres (Genre, genres),
    title ("Title (Year)" is split) and year columns are carried over when present.
    Limits: `concurrency` requests at once; `timeout` seconds to connect and between bytes;
    `deadline` seconds per request in all; `retries` more attempts after timeouts, connection
    errors, 408, 429 and 5xx, `backoff` * 2^n seconds apart (with jitter, at most
    `max_backoff`) or as Retry-After says (at most `max_retry_after`); bodies over `max_bytes`
    refused; `rate` requests per second per host (0: no limit); `max_redirects` hops.

    Raises `UserError` for a missing or unreadable list, missing columns and an unusable
    `out`; on Ctrl-C writes both lists for what is done, then raises `DownloadInterrupted`.
    """
    settings = _Settings(
        concurrency,
        timeout,
        deadline,
        retries,
        max_bytes,
        rate,
        max_redirects,
        backoff,
        max_backoff,
        max_retry_after,
        max_pixels,
    )
    rows, duplicates = _read_rows(Path(labels), url_column, id_column, max_label_bytes)
    out = Path(out)
    images = _prepare(out)
    results: dict[int, _Outcome] = {}
    interrupted = False
    try:
        asyncio.run(_download_all(rows, settings, images, results, progress))
    except KeyboardInterrupt:
        interrupted = True
    report = _write_lists(out, rows, results, duplicates, interrupted)
    if interrupted:
        raise DownloadInterrupted(report)
    return report
