"""Limits that keep one request (or one slow client) from stalling the server.

- The app's default limits: upload bytes, decoded pixels, files per request, decodes at once.
- `RequestLimitsMiddleware` (ASGI): refuses over-long queries (414) and oversized or too many
  headers (431) before the app runs, and answers 408 when a request body stops arriving.
- `HeadAsGetMiddleware`: HEAD is answered wherever GET is.
- `GuardedH11Protocol` (uvicorn's HTTP/1.1 protocol): closes a connection whose request
  headers do not arrive in time (a slow-loris client), and answers malformed requests with the
  API's JSON error shape instead of uvicorn's plain text.

Every refusal is `{"error": ...}` JSON, like the rest of the API.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_QUERY_BYTES = 4 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100
REQUEST_TIMEOUT_S = 15.0

# What the app accepts by default (`create_app` and `serve` take most of them as settings).
MEGABYTE = 1_000_000  # sizes are SI, like every size the project prints
MAX_UPLOAD_BYTES = 10 * MEGABYTE
# Posters are a few megapixels; the server decodes at most this many per image (files on disk
# may have up to 40 MP), so one upload cannot take seconds of CPU and hundreds of MB.
SERVER_MAX_PIXELS = 16_000_000
# Uploads decoded at once; more wait their turn (each decode holds a whole image in memory).
DECODE_CONCURRENCY = 2
# Uploads over this many pixels decode in a lane of their own, one at a time and reduced where
# the format allows, so a few huge posters never hold up the normal ones queued behind them.
LARGE_IMAGE_PIXELS = 4_000_000
LARGE_DECODE_CONCURRENCY = 1
MAX_FILES = 32
MAX_K = 50
# Boundaries and part headers of a multipart body, on top of the poster bytes themselves.
MULTIPART_OVERHEAD = 64 * 1024


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class RequestTimeoutError(Exception):
    """The client stopped sending the request body."""


async def send_json_error(send: Send, status: int, message: str) -> None:
    """A complete JSON error response that closes the connection."""
    body = error_body(message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestLimitsMiddleware:
    """Bound the query, the headers and the pauses in a request body (see the module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        max_query_bytes: int = MAX_QUERY_BYTES,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_headers: int = MAX_HEADERS,
        body_timeout: float = REQUEST_TIMEOUT_S,
    ):
        self.app = app
        self.max_query_bytes = max_query_bytes
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope.get("query_string", b"")) > self.max_query_bytes:
            await send_json_error(
                send, 414, f"query string over the {self.max_query_bytes} byte limit"
            )
            return
        headers = scope.get("headers", [])
        size = sum(len(k) + len(v) + 4 for k, v in headers)
        if len(headers) > self.max_headers or size > self.max_header_bytes:
            await send_json_error(
                send,
                431,
                f"request headers over the limit ({self.max_headers} headers, "
                f"{self.max_header_bytes} bytes)",
            )
            return
        started = False
        timed_out = False
        body_done = False

        async def timed_receive() -> Message:
            # Only the body's arrival is timed: after it, receive() waits for a disconnect,
            # which may rightly take as long as the response does.
            nonlocal timed_out, body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                timed_out = True
                raise RequestTimeoutError from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if timed_out:  # whatever the app made of the cut-off body, the client gets 408
                    return
            elif timed_out:
                return
            await send(message)

        try:
            await self.app(scope, timed_receive, tracking_send)
        except Exception:
            if not timed_out:
                raise
        if timed_out:
            message = f"the request body stopped arriving for {self.body_timeout:g} s"
            await send_json_error(send, 408, message)


class HeadAsGetMiddleware:
    """Answer HEAD wherever GET works: the app runs the GET, the client gets its status and
    headers without the body (the OpenAPI schema keeps listing GET only)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b"", "more_body": message.get("more_body", False)}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for request headers and JSON 400 answers.

    The deadline is armed when a connection opens and after every response; it is disarmed
    once a request's headers are in (the body has its own timeout in the middleware)."""

    request_timeout: float = REQUEST_TIMEOUT_S

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._seen_cycle: Any = None
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()  # type: ignore[union-attr]
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self._send_json(408, "the request headers did not arrive in time")

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self.cycle is not self._seen_cycle:
            self._seen_cycle = self.cycle  # a request's headers are in
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._send_json(400, f"malformed HTTP request ({msg.rstrip('.').lower()})")

    def _send_json(self, status: int, message: str) -> None:
        """Answer and close, written directly: h11 cannot frame a response before it has seen
        a whole request, and the connection ends here anyway."""
        body = error_body(message)
        reason = {400: b"Bad Request", 408: b"Request Timeout"}[status]
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, reason, len(body))
        )
        self.transport.write(head + body)
        self.transport.close()


# Seconds a client is asked to wait (Retry-After) while the index or collection is built.
RETRY_AFTER_S = 5
