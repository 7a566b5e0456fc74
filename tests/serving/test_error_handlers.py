"""Every exception the app lets out is `{"error": ...}` JSON with the status it stands for."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, HTTPException, Query
from fastapi.testclient import TestClient

from postergenre.errors import PosterDecodeError, UserError
from postergenre.serving.batcher import BatcherClosedError
from postergenre.serving.error_handlers import install_error_handlers
from postergenre.serving.uploads import EmptyUploadError, UploadTooLargeError

RAISED = {
    "empty": (EmptyUploadError("e.png: empty file (0 bytes)"), 400),
    "large": (UploadTooLargeError("x.jpg: larger than the 65.5 kB limit"), 413),
    "decode": (PosterDecodeError("x.txt: not an image"), 415),
    "user": (UserError("unknown genre"), 422),
    "closed": (BatcherClosedError("the server is shutting down"), 503),
    "bug": (RuntimeError("a bug"), 500),
}


@pytest.fixture(scope="module")
def client():
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{kind}")
    async def raise_(kind: str) -> None:
        raise RAISED[kind][0]

    @app.get("/http")
    async def http() -> None:
        raise HTTPException(404, "no such poster", headers={"X-Why": "gone"})

    @app.get("/query")
    async def query(k: int = Query(ge=1)) -> int:
        return k

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize("kind", list(RAISED))
def test_each_error_class_has_its_status(client, kind):
    exc, status = RAISED[kind]
    response = client.get(f"/raise/{kind}")
    assert response.status_code == status
    expected = str(exc) if status != 500 else "internal server error (see the server log)"
    assert response.json() == {"error": expected}


def test_http_errors_keep_their_headers(client):
    response = client.get("/http")
    assert response.status_code == 404 and response.headers["x-why"] == "gone"
    assert response.json() == {"error": "no such poster"}


def test_invalid_parameters_are_one_readable_line(client):
    response = client.get("/query?k=0")
    assert response.status_code == 422
    assert response.json()["error"].startswith("query k: ")
    missing = client.get("/query")
    assert missing.status_code == 422 and missing.json()["error"].startswith("query k: ")
