"""Uploaded posters: read a bounded number of bytes and decode them with `decode_poster`'s rules,
large ones in a lane of their own."""

from __future__ import annotations

import asyncio
import io
import warnings
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from PIL import Image
from starlette.datastructures import Headers, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postergenre.console import format_bytes
from postergenre.data.decode import MAX_PIXELS, POSTER_FORMATS, open_poster
from postergenre.errors import PosterDecodeError, UserError
from postergenre.serving.limits import (
    DECODE_CONCURRENCY,
    LARGE_DECODE_CONCURRENCY,
    LARGE_IMAGE_PIXELS,
    send_json_error,
)

READ_CHUNK = 1024 * 1024
T = TypeVar("T")


class EmptyUploadError(PosterDecodeError):
    """An upload with no bytes at all."""


class UploadTooLargeError(UserError):
    """An upload over the server's size limit."""


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    """The bytes of one uploaded file, read in chunks and never more than `limit` + 1 of them."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await upload.read(min(READ_CHUNK, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            name = upload.filename or "upload"
            raise UploadTooLargeError(f"{name}: larger than the {format_bytes(limit)} limit")
    return b"".join(chunks)


def decode_poster_bytes(
    data: bytes, name: str, max_pixels: int = MAX_PIXELS, fit: tuple[int, int] | None = None
) -> Image.Image:
    """Decode uploaded bytes with the same rules as poster files (`open_poster`).

    Raises `EmptyUploadError` for no bytes and `PosterDecodeError` otherwise.
    """
    if not data:
        raise EmptyUploadError(f"{name}: empty file (0 bytes)")
    return open_poster(io.BytesIO(data), name, max_pixels, fit=fit)


def _claimed_pixels(data: bytes) -> int:
    """The pixels an upload's header claims (only the header is read); 0 when it has none
    readable, since decoding it then fails at once."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=POSTER_FORMATS) as image:
                return image.width * image.height
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return 0


class UploadDecoder:
    """Reads uploads within the server's byte limit and decodes them off the event loop.

    Decodes take one of two lanes by the pixels an upload claims: at most `concurrency` normal
    posters at once, and beside them at most `LARGE_DECODE_CONCURRENCY` over `large_pixels`,
    every one decoded reduced when much larger than `fit` (the model input) needs.
    Each decode holds a whole image in memory, hence the bounds."""

    def __init__(
        self,
        max_upload_bytes: int,
        max_pixels: int,
        concurrency: int = DECODE_CONCURRENCY,
        large_pixels: int = LARGE_IMAGE_PIXELS,
        fit: tuple[int, int] | None = None,
    ):
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.large_pixels = large_pixels
        self.fit = fit
        self._lane = asyncio.Semaphore(concurrency)
        self._large_lane = asyncio.Semaphore(LARGE_DECODE_CONCURRENCY)

    async def _decode(
        self, data: bytes, name: str, then: Callable[[Image.Image], T] = lambda image: image
    ) -> T:
        """`then(decoded image)` in a worker thread, in the upload's lane."""
        large = _claimed_pixels(data) > self.large_pixels
        lane = self._large_lane if large else self._lane

        def decode() -> T:
            return then(decode_poster_bytes(data, name, self.max_pixels, self.fit))

        async with lane:
            return await asyncio.to_thread(decode)

    async def image(self, upload: UploadFile) -> Image.Image:
        """One uploaded poster, decoded."""
        data = await read_upload(upload, self.max_upload_bytes)
        return await self._decode(data, upload.filename or "upload")

    async def read_all(self, uploads: list[UploadFile]) -> list[bytes]:
        """The bytes of every upload; all of them together must fit in the limit."""
        datas: list[bytes] = []
        for upload in uploads:
            remaining = self.max_upload_bytes - sum(map(len, datas))
            try:
                datas.append(await read_upload(upload, remaining))
            except UploadTooLargeError:
                if len(uploads) == 1:
                    raise
                limit = format_bytes(self.max_upload_bytes)
                raise UploadTooLargeError(
                    f"{len(uploads)} posters together are larger than the {limit} limit"
                ) from None
        return datas

    async def pixels(
        self, data: bytes, name: str, preprocess: Callable[[Image.Image], np.ndarray]
    ) -> np.ndarray:
        """Uploaded bytes decoded and made model input by `preprocess`, in one go (the decoded
        image is dropped as soon as it is resized)."""
        return await self._decode(data, name, preprocess)


class BodyLimitMiddleware:
    """Answer 413 `{"error": ...}` to a request body over `max_body_size` bytes.

    A too-large Content-Length is refused before any of the body is read; otherwise the bytes
    are counted as they arrive and reading stops at the limit, so a huge upload (chunked, or
    with a lying header) is never buffered whole.
    """

    def __init__(self, app: ASGIApp, max_body_size: int, message: str = "upload too large"):
        self.app = app
        self.max_body_size = max_body_size
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_size:
            await self._refuse(send)
            return
        total = 0
        exceeded = False
        replaced = started = False

        async def counting_receive() -> Message:
            nonlocal total, exceeded
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_body_size:
                    exceeded = True
                    raise UploadTooLargeError(self.message)
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app made of the interrupted body (FastAPI calls it a parse error),
            # the client gets the 413.
            nonlocal replaced, started
            if message["type"] == "http.response.start":
                started = True
                if exceeded:
                    replaced = True
                    await self._refuse(send)
                    return
            if not replaced:
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if exceeded and not started:
                await self._refuse(send)
                return
            raise

    async def _refuse(self, send: Send) -> None:
        await send_json_error(send, 413, self.message)
