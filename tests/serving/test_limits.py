"""A server that one request cannot stall: bounded requests, slow clients cut off, errors below
the app still JSON, HEAD where GET works, heavy explanations beside quick predictions."""

from __future__ import annotations

import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from postergenre.serving.app import create_app
from postergenre.serving.limits import SERVER_MAX_PIXELS
from postergenre.serving.server import bind_socket, make_server
from tests.serving.conftest import png_bytes


@pytest.fixture(scope="module")
def live(predictor):
    """The app behind the real HTTP server on 127.0.0.1, with 1-second client timeouts.

    One server for the module: its tests send requests the server refuses or cuts off, and
    each opens its own connections, so none sees another's state.
    """
    app = create_app(predictor, warmup=False, request_timeout=1.0)
    sock = bind_socket("127.0.0.1", 0)
    server = make_server(app, request_timeout=1.0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(10)
    sock.close()


def _raw(port: int, data: bytes, wait: float = 5.0) -> bytes:
    """Send raw bytes, return everything the server answers before it closes (or `wait`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as conn:
        conn.sendall(data)
        chunks = []
        try:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def _json_error(answer: bytes, status: int) -> str:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode()), answer[:200]
    assert b"application/json" in head.lower(), head
    assert body.startswith(b'{"error":'), body
    return body.decode()


def test_head_answers_where_get_does(client):
    for path in ("/", "/healthz", "/api/model"):
        response = client.head(path)
        assert response.status_code == 200, path
        assert response.content == b""


def test_long_queries_and_headers_are_refused_with_json(live):
    long_query = f"GET /healthz?q={'a' * 100_000} HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = _raw(live, long_query.encode())
    assert answer.split(b" ", 2)[1] in (b"400", b"414") and b'{"error":' in answer
    with httpx.Client(timeout=10) as http:
        response = http.get(f"http://127.0.0.1:{live}/healthz", headers={"X-Big": "b" * 70_000})
        assert response.status_code in (400, 431) and "error" in response.json()
    many = "".join(f"X-H{i}: v\r\n" for i in range(10_000))
    answer = _raw(live, f"GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())
    assert answer.split(b" ", 2)[1] in (b"400", b"431") and b'{"error":' in answer
    # within the limits, the same server still answers
    with httpx.Client(timeout=10) as http:
        assert http.get(f"http://127.0.0.1:{live}/healthz?q=short").status_code == 200


def test_protocol_errors_below_the_app_are_json(live):
    _json_error(_raw(live, b"NONSENSE\r\n\r\n"), 400)
    bad_length = b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
    _json_error(_raw(live, bad_length), 400)


def test_slow_clients_are_cut_off(live):
    started = time.monotonic()
    answer = _raw(live, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", wait=10)  # headers never end
    assert time.monotonic() - started < 5
    assert answer == b"" or b"408" in answer.split(b"\r\n", 1)[0]
    body_stalls = (
        b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
        b"boundary=xx\r\nContent-Length: 5000\r\n\r\n--xx\r\n"
    )
    started = time.monotonic()
    answer = _raw(live, body_stalls, wait=10)
    assert time.monotonic() - started < 5
    _json_error(answer, 408)


def _palette_png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("P", (width, height), 0).save(out, format="PNG")
    return out.getvalue()


def test_the_server_has_a_lower_pixel_budget_than_files(client):
    big = _palette_png(6000, 6600)  # 39.6 MP: under the 40 MP file limit, over the server's
    assert SERVER_MAX_PIXELS < 6000 * 6600
    started = time.monotonic()
    response = client.post("/api/explain", files={"file": ("big.png", big, "image/png")})
    assert response.status_code == 415 and "over the limit" in response.json()["error"]
    assert time.monotonic() - started < 5


def test_an_explanation_of_a_large_poster_comes_back_small(client):
    poster = _palette_png(2400, 3600)
    response = client.post("/api/explain", files={"file": ("p.png", poster, "image/png")})
    assert response.status_code == 200
    assert max(Image.open(io.BytesIO(response.content)).size) <= 1024


def test_quick_predictions_are_not_stuck_behind_a_slow_explanation(predictor, monkeypatch):
    real_explain = predictor.explain
    explaining = threading.Event()
    finish = threading.Event()

    def slow_explain(*args, **kwargs):
        # Runs until the quick prediction is back: were that prediction queued behind this
        # explanation, it would come back only after `finish` timed out, with `slow` done.
        explaining.set()
        finish.wait(10)
        return real_explain(*args, **kwargs)

    monkeypatch.setattr(predictor, "explain", slow_explain)
    app = create_app(predictor, warmup=False)
    poster = png_bytes()
    with TestClient(app) as http, ThreadPoolExecutor(2) as pool:
        slow = pool.submit(
            http.post, "/api/explain", files={"file": ("p.png", poster, "image/png")}
        )
        assert explaining.wait(10)
        quick = http.post("/api/predict", files={"files": ("q.png", poster, "image/png")})
        assert quick.status_code == 200
        assert not slow.done()  # the prediction came back while the explanation was running
        finish.set()
        assert slow.result().status_code == 200
