"""Every error the app raises becomes `{"error": ...}` JSON: a 4xx for a bad request, 500 for a
bug (logged with its traceback)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from postergenre.errors import PosterDecodeError, UserError
from postergenre.serving.batcher import BatcherClosedError
from postergenre.serving.uploads import EmptyUploadError, UploadTooLargeError

log = logging.getLogger("postergenre.serving")

# Starlette answers with the handler of the nearest class in the exception's MRO, so an
# EmptyUploadError (a PosterDecodeError) is a 400, not a 415.
_STATUS_OF: dict[type[Exception], int] = {
    EmptyUploadError: 400,
    UploadTooLargeError: 413,
    PosterDecodeError: 415,
    UserError: 422,
    BatcherClosedError: 503,
}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError, json_body: bool) -> tuple[int, str]:
    """A 400 for a missing upload, else 422, with one readable line for all problems (a field
    missing from a JSON body is a 422 like any invalid field)."""
    problems = []
    missing_upload = False
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        where, name = (loc[0], ".".join(loc[1:])) if len(loc) > 1 else ("request", ".".join(loc))
        if err.get("type") == "missing" and where == "body" and not json_body:
            missing_upload = True
            problems.append(f"no file uploaded: send multipart/form-data with a {name!r} field")
        else:
            problems.append(f"{where} {name}: {err.get('msg', 'invalid')}".replace("  ", " "))
    return (400 if missing_upload else 422), "; ".join(problems) or "invalid request"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _error(exc.status_code, str(exc.detail), exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    json_body = request.headers.get("content-type", "").startswith("application/json")
    return _error(*_describe_validation(exc, json_body))


def _answer_with(status: int) -> Callable[[Request, Exception], Any]:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return _error(status, str(exc))

    return handler


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return _error(500, "internal server error (see the server log)")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every exception `app` lets out as `{"error": ...}` with its status."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for exc_class, status in _STATUS_OF.items():
        app.add_exception_handler(exc_class, _answer_with(status))
    app.add_exception_handler(Exception, _unexpected)
