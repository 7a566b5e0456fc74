"""Uploaded posters: read a bounded number of bytes and decode them with `decode_poster`'s rules."""

from __future__ import annotations

import io

from PIL import Image
from starlette.datastructures import Headers, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postergenre.data.decode import MAX_PIXELS, open_poster
from postergenre.errors import PosterDecodeError, UserError
from postergenre.serving.limits import send_json_error

READ_CHUNK = 1024 * 1024


class EmptyUploadError(PosterDecodeError):
    """An upload with no bytes at all."""


class UploadTooLargeError(UserError):
    """An upload over the server's size limit."""


def describe_size(n_bytes: int) -> str:
    """Bytes as a short human-readable size (10 MB, 512 KB)."""
    for unit, size in (("MB", 1024 * 1024), ("KB", 1024)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n_bytes} bytes"


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
            raise UploadTooLargeError(f"{name}: larger than the {describe_size(limit)} limit")
    return b"".join(chunks)


def decode_poster_bytes(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode uploaded bytes with the same rules as poster files (`open_poster`).

    Raises `EmptyUploadError` for no bytes and `PosterDecodeError` otherwise.
    """
    if not data:
        raise EmptyUploadError(f"{name}: empty file (0 bytes)")
    return open_poster(io.BytesIO(data), name, max_pixels)


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
