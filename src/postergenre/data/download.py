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
import errno
import io
import os
import warnings
from collections import Counter, deque
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from postergenre import console
from postergenre.atomic import remove_stale_temporaries, write_bytes, write_text
from postergenre.data.decode import MAX_PIXELS, POSTER_FORMATS, decode_poster, open_poster
from postergenre.data.formats import is_image_name
from postergenre.data.poster_fetch import (
    USER_AGENT,
    AttemptFailed,
    DownloadSettings,
    Fetcher,
    is_http_url,
    open_client,
    retry_after_seconds,
)
from postergenre.data.url_list import UrlRow, read_url_list
from postergenre.errors import PosterDecodeError, UserError

__all__ = [
    "USER_AGENT",
    "DownloadInterrupted",
    "DownloadReport",
    "Failure",
    "download_posters",
    "retry_after_seconds",
]

LABELS_HEADER = ("id", "genres", "title", "year", "url")
FAILURES_HEADER = ("id", "url", "reason", "attempts")
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
# Decoded format -> extension. The others Pillow may read (TIFF, AVIF) are stored as PNG, the
# formats the label reader looks for.
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
# Errors writing one poster that no other poster would escape: the run stops, lists written.
FOLDER_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
NOT_ATTEMPTED = "not attempted (interrupted)"


class DownloadFolderError(UserError):
    """The output folder cannot be created or written."""


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


@dataclass(frozen=True)
class _Outcome:
    kind: str  # "downloaded", "there" or "failed"
    reason: str = ""
    attempts: int = 0


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.3g}"


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

    def __init__(self, fetcher: Fetcher, images: Path, existing: dict[str, list[Path]]):
        self.fetcher, self.settings = fetcher, fetcher.settings
        self.images, self.existing = images, existing

    async def process(self, row: UrlRow) -> _Outcome:
        if row.problem:
            return _Outcome("failed", row.problem)
        old = self.existing.get(row.id, [])
        for path in old:
            if await asyncio.to_thread(_is_poster, path, self.settings.max_pixels):
                return _Outcome("there")
        if not row.url:
            return _Outcome("failed", "no url")
        if not is_http_url(row.url):
            return _Outcome("failed", "bad url")
        attempts = 0
        while True:
            attempts += 1
            try:
                body = await self.fetcher.fetch(row.url)
                await asyncio.to_thread(self._keep, row.id, body, old)
                return _Outcome("downloaded", attempts=attempts)
            except AttemptFailed as failed:
                if not failed.retry or attempts > self.settings.retries:
                    return _Outcome("failed", failed.reason, attempts)
                await asyncio.sleep(self.settings.retry_delay(attempts, failed.retry_after))

    def _keep(self, poster_id: str, body: bytes, old: list[Path]) -> Path:
        """Write `body` as `images/<id>.<ext>` if it decodes as a poster (runs in a thread)."""
        if not body:
            raise AttemptFailed("empty body")
        limit = f"over the limit of {_megapixels(self.settings.max_pixels)} megapixels"
        try:
            with warnings.catch_warnings():  # the size is checked below, against our limit
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(body), formats=POSTER_FORMATS) as probe:
                    image_format, (width, height) = probe.format or "", probe.size
        except Image.DecompressionBombError:  # so large that Pillow will not even say the size
            pillow = _megapixels(2 * (Image.MAX_IMAGE_PIXELS or 0))
            raise AttemptFailed(
                f"too many pixels: more than {pillow} megapixels, {limit}"
            ) from None
        except Exception:
            raise AttemptFailed("not an image") from None
        if width * height > self.settings.max_pixels:
            raise AttemptFailed(f"too many pixels: {width} x {height}, {limit}")
        try:
            image = open_poster(io.BytesIO(body), poster_id, self.settings.max_pixels)
        except PosterDecodeError as exc:
            raise AttemptFailed(
                "too many pixels" if "pixels" in str(exc) else "corrupt image"
            ) from None
        except Exception:
            raise AttemptFailed("corrupt image") from None
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
            if exc.errno in FOLDER_ERRORS:
                raise DownloadFolderError(f"cannot write {path}: {exc.strerror or exc}") from exc
            raise AttemptFailed(f"cannot store the poster ({exc.strerror or exc})") from None
        return path


async def _download_all(
    rows: list[UrlRow],
    settings: DownloadSettings,
    images: Path,
    results: dict[int, _Outcome],
    progress: bool,
) -> None:
    """Process every row with `concurrency` workers, recording each outcome in `results` as
    it comes (so an interruption keeps what was done)."""
    pending = deque(rows)
    existing = _scan_images(images)
    async with open_client(settings) as client:
        downloader = _Downloader(Fetcher(client, settings), images, existing)
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
    rows: list[UrlRow],
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
    for path, text in (
        (report.labels_path, _csv_text(LABELS_HEADER, labels)),
        (report.failures_path, _csv_text(FAILURES_HEADER, failures)),
    ):
        try:
            write_text(path, text)
        except OSError as exc:
            raise DownloadFolderError(f"cannot write {path}: {exc.strerror or exc}") from exc
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
    settings = DownloadSettings(
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
    rows, duplicates = read_url_list(Path(labels), url_column, id_column, max_label_bytes)
    out = Path(out)
    images = _prepare(out)
    results: dict[int, _Outcome] = {}
    interrupted = False
    try:
        asyncio.run(_download_all(rows, settings, images, results, progress))
    except KeyboardInterrupt:
        interrupted = True
    except DownloadFolderError:  # the folder refuses every poster: keep what is done, stop
        with suppress(DownloadFolderError):
            _write_lists(out, rows, results, duplicates, interrupted=True)
        raise
    report = _write_lists(out, rows, results, duplicates, interrupted)
    if interrupted:
        raise DownloadInterrupted(report)
    return report
