"""The web app's API: every endpoint's happy path, every bad request, batching, OpenAPI."""

from __future__ import annotations

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from postergenre.serving.app import create_app
from tests.serving.conftest import jpeg_bytes, png_bytes

YELLOW = (230, 210, 40)  # the tiny data set's Comedy colour


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"]
    return body["error"]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels: a decompression bomb's calling card."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00\x00\x00\x00IEND\xaeB`\x82"


# -- happy paths ------------------------------------------------------------------------------
def test_healthz_and_page(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "PosterGenre" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = client.get(f"/static/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]


def test_model_info(client, predictor):
    info = client.get("/api/model").json()
    assert info["name"] == predictor.name
    assert info["genres"] == ["Action", "Comedy", "Drama"]
    assert info["task"] == "single" and info["architecture"] == "efficientnet-lite0"
    assert info["input"]["width"] == predictor.input_spec.width  # model.json passes through
    assert info["server"]["similar"] is True and info["server"]["index_size"] == 48
    assert info["server"]["max_upload_bytes"] == 64_000


def test_model_info_of_a_multi_label_model_has_thresholds(multi_predictor):
    with TestClient(create_app(multi_predictor, warmup=False)) as client:
        info = client.get("/api/model").json()
    assert info["task"] == "multi"
    assert set(info["thresholds"]) == {"Action", "Comedy", "Drama"}
    assert info["server"]["similar"] is False


def test_predict_one_and_many(client):
    response = client.post("/api/predict", files={"files": ("comedy.png", png_bytes(YELLOW))})
    assert response.status_code == 200, response.text
    body = response.json()
    [result] = body["results"]
    assert body["model"] and result["filename"] == "comedy.png"
    probs = [g["probability"] for g in result["genres"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-4)
    assert result["predicted"] == ["Comedy"] == [result["genres"][0]["genre"]]

    files = [("files", (f"p{i}.png", png_bytes(YELLOW, seed=i), "image/png")) for i in range(3)]
    files.append(("files", ("red.jpg", jpeg_bytes(size=(60, 90)), "image/jpeg")))
    results = client.post("/api/predict", files=files).json()["results"]
    assert [r["filename"] for r in results] == ["p0.png", "p1.png", "p2.png", "red.jpg"]
    assert all(len(r["genres"]) == 3 for r in results)


def test_explain_returns_a_png_overlay_at_the_posters_size(client):
    poster = png_bytes(YELLOW, size=(90, 120))
    [result] = client.post("/api/predict", files={"files": ("p.png", poster)}).json()["results"]
    top, last = result["genres"][0], result["genres"][-1]
    response = client.post("/api/explain", files={"file": ("p.png", poster)})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-genre"] == top["genre"]  # default: the top genre
    assert float(response.headers["x-probability"]) == pytest.approx(top["probability"], abs=1e-4)
    assert Image.open(io.BytesIO(response.content)).size == (90, 120)
    other = client.post(f"/api/explain?genre={last['genre']}", files={"file": ("p.png", poster)})
    assert other.status_code == 200 and other.headers["x-genre"] == last["genre"]
    assert float(other.headers["x-probability"]) == pytest.approx(last["probability"], abs=1e-4)
    assert other.content != response.content


def test_similar_and_poster_images(client, poster_index):
    response = client.post("/api/similar?k=4", files={"file": ("p.png", png_bytes(YELLOW))})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 4
    assert all(r["genres"] == ["Comedy"] for r in results)
    sims = [r["similarity"] for r in results]
    assert sims == sorted(sims, reverse=True)
    image = client.get(results[0]["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    i = int(results[0]["image_url"].rsplit("/", 1)[1])
    expected = open(poster_index.items[i]["path"], "rb").read()  # noqa: SIM115
    assert image.content == expected


def test_poster_route_serves_only_indexed_files(client, poster_index):
    _error(client.get(f"/api/poster/{len(poster_index)}"), 404)
    _error(client.get("/api/poster/-1"), 404)
    assert client.get("/api/poster/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)
    _error(client.get("/api/poster/1.5"), 422)


# -- bad requests -----------------------------------------------------------------------------
def test_no_file_and_empty_file(client):
    assert "no file" in _error(client.post("/api/predict"), 400)
    assert "no file" in _error(client.post("/api/explain"), 400)
    assert "no file" in _error(client.post("/api/similar", data={"k": "3"}), 400)
    message = _error(client.post("/api/predict", files={"files": ("e.png", b"")}), 400)
    assert "e.png" in message and "empty" in message
    _error(client.post("/api/explain", files={"file": ("e.png", b"")}), 400)


def test_a_text_field_instead_of_a_file_is_a_validation_error(client):
    _error(client.post("/api/predict", data={"files": "not a file"}), 422)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("notes.txt", b"these are not the pixels you are looking for", "not an image"),
        ("cut.jpg", jpeg_bytes()[:2000], "truncated"),
        ("bomb.png", _png_header_only(100_000, 100_000), "pixels"),
        ("script.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),
    ],
)
def test_unusable_images_are_415(client, name, data, reason):
    for url, field in (
        ("/api/predict", "files"),
        ("/api/explain", "file"),
        ("/api/similar", "file"),
    ):
        message = _error(client.post(url, files={field: (name, data)}), 415)
        assert name in message and reason in message


def test_pixel_limit_is_configurable(predictor):
    app = create_app(predictor, max_pixels=100 * 100, warmup=False)
    with TestClient(app) as client:
        ok = client.post("/api/predict", files={"files": ("s.png", png_bytes(size=(50, 50)))})
        assert ok.status_code == 200
        big = client.post("/api/predict", files={"files": ("b.png", png_bytes(size=(200, 120)))})
        assert "decompression bomb" in _error(big, 415)


def test_oversized_uploads_are_413(client):
    big = jpeg_bytes(size=(400, 600))
    assert len(big) > 64_000
    for url, field in (
        ("/api/predict", "files"),
        ("/api/explain", "file"),
        ("/api/similar", "file"),
    ):
        assert "64.0 kB" in _error(client.post(url, files={field: ("big.jpg", big)}), 413)
    # several small files that add up to too much
    files = [("files", (f"{i}.jpg", big[:30_000])) for i in range(4)]
    assert "together" in _error(client.post("/api/predict", files=files), 413)


def test_oversized_chunked_upload_is_refused_without_a_content_length(client):
    boundary = b"posterboundary"
    head = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="files"; filename="x.jpg"'
        b"\r\nContent-Type: image/jpeg\r\n\r\n"
    )

    def body():
        yield head
        for _ in range(100):  # 1.6 MB, far over the limit
            yield b"\xff" * 16384

    response = client.post(
        "/api/predict",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary.decode()}"},
    )
    _error(response, 413)


def test_a_file_just_under_the_limit_is_read_whole(predictor):
    app = create_app(predictor, max_upload_bytes=4096, warmup=False)
    poster = png_bytes(size=(20, 30))
    assert len(poster) < 4096
    with TestClient(app) as client:
        ok = client.post("/api/predict", files={"files": ("p.png", poster)})
        assert ok.status_code == 200
        padded = poster + b"\0" * (4097 - len(poster))  # trailing bytes: one over the limit
        _error(client.post("/api/predict", files={"files": ("p.png", padded)}), 413)


def test_unknown_genre_is_404(client):
    message = _error(
        client.post("/api/explain?genre=Western", files={"file": ("p.png", png_bytes())}), 404
    )
    assert "Western" in message and "Comedy" in message


def test_similar_without_index_is_404(predictor):
    with TestClient(create_app(predictor, warmup=False)) as client:
        message = _error(client.post("/api/similar", files={"file": ("p.png", png_bytes())}), 404)
        assert "index" in message
        _error(client.get("/api/poster/0"), 404)


def test_bad_parameters_and_unknown_routes_are_json(client):
    poster = {"file": ("p.png", png_bytes())}
    assert "k" in _error(client.post("/api/similar?k=0", files=poster), 422)
    _error(client.post("/api/similar?k=many", files=poster), 422)
    _error(client.get("/api/nothing-here"), 404)
    _error(client.get("/api/predict"), 405)


def test_too_many_files_is_400(predictor):
    with TestClient(create_app(predictor, max_files=2, warmup=False)) as client:
        files = [("files", (f"{i}.png", png_bytes(seed=i))) for i in range(3)]
        assert "files" in _error(client.post("/api/predict", files=files), 400).lower()


def test_a_failing_model_gives_json_500_not_a_hang(predictor):
    app = create_app(predictor, warmup=False)

    def broken(pixels):
        raise RuntimeError("out of memory")

    app.state.batcher.predict = broken
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/api/predict", files={"files": ("p.png", png_bytes())})
    assert response.status_code == 500 and "error" in response.json()


# -- batching ---------------------------------------------------------------------------------
def test_concurrent_requests_are_batched(predictor):
    app = create_app(predictor, max_batch=32, max_wait_ms=50, warmup=False)
    posters = [png_bytes(YELLOW, seed=i) for i in range(16)]
    with TestClient(app) as client:

        def one(i: int):
            return client.post("/api/predict", files={"files": (f"{i}.png", posters[i])})

        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(one, range(16)))
        stats = client.get("/api/stats").json()
    assert [r.status_code for r in responses] == [200] * 16
    assert all(r.json()["results"][0]["predicted"] == ["Comedy"] for r in responses)
    assert stats["items"] == 16
    assert stats["batches"] < 16 and stats["largest_batch"] > 1
    assert stats["failed_batches"] == 0


def test_batched_and_single_predictions_agree(client, predictor):
    poster = png_bytes(YELLOW, seed=3)
    [result] = client.post("/api/predict", files={"files": ("p.png", poster)}).json()["results"]
    [direct] = predictor.predict(Image.open(io.BytesIO(poster)).convert("RGB"))
    served = {g["genre"]: g["probability"] for g in result["genres"]}
    for genre, probability in direct.genres:
        assert served[genre] == pytest.approx(probability, abs=1e-5)


# -- OpenAPI ----------------------------------------------------------------------------------
def test_openapi_lists_every_route_with_error_responses(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    expected = {
        "/healthz": "get",
        "/api/model": "get",
        "/api/stats": "get",
        "/api/info": "get",
        "/api/predict": "post",
        "/api/explain": "post",
        "/api/similar": "post",
        "/api/poster/{i}": "get",
    }
    for path, method in expected.items():
        operation = paths[path][method]
        assert operation["summary"] and operation["description"], path
    for path in ("/api/predict", "/api/explain", "/api/similar"):
        responses = paths[path]["post"]["responses"]
        for code in ("400", "413", "415", "422"):
            ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorResponse"), (path, code)
    assert "image/png" in paths["/api/explain"]["post"]["responses"]["200"]["content"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
