"""The server builds or updates its poster index in the background: the page is up at once,
/api/info says how far the index is, /api/similar answers 503 until there is one."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from postergenre.cli import main
from postergenre.inference import index_build
from postergenre.serving.app import create_app
from postergenre.serving.index_job import IndexJob
from tests.serving.conftest import png_bytes

YELLOW = (230, 210, 40)


@pytest.fixture
def gate(monkeypatch) -> threading.Event:
    """Holds every `build_index` until set: the test sees the server while it builds."""
    opened = threading.Event()
    real = index_build.build_index

    def held(*args, **kwargs):
        assert opened.wait(60), "the test never let the build go on"
        return real(*args, **kwargs)

    monkeypatch.setattr(index_build, "build_index", held)
    return opened


def _job(out: Path, posters: Path, predictor, cache: Path) -> IndexJob:
    options = {"posters": str(posters), "model": predictor, "cache_dir": cache}
    return IndexJob(out, options)


def _similar(client: TestClient):
    return client.post("/api/similar?k=3", files={"file": ("p.png", png_bytes(YELLOW))})


def _wait(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_server_answers_503_while_building_then_finds_similar_posters(
    predictor, serving_posters, serving_cache, tmp_path, gate
):
    out = tmp_path / "idx"
    job = _job(out, serving_posters / "train", predictor, serving_cache)
    with TestClient(create_app(predictor, warmup=False, index_job=job)) as client:
        assert client.get("/").status_code == 200  # the page is up before any index
        info = client.get("/api/info").json()
        assert info["index"]["state"] == "building" and info["index"]["size"] == 0
        busy = _similar(client)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
        assert "still being built" in busy.json()["error"]
        gate.set()
        job.join(120)
        info = client.get("/api/info").json()["index"]
        assert (info["state"], info["size"], info["done"], info["total"]) == ("ready", 24, 24, 24)
        assert "24 new, 0 removed, 0 kept" in info["message"]
        found = _similar(client)
        assert found.status_code == 200, found.text
        results = found.json()["results"]
        assert len(results) == 3
        assert all(r["genres_are"] == "predicted" and r["name"].endswith(".png") for r in results)
        assert all(r["genres"] == ["Comedy"] for r in results)  # the probe's verdict
        assert client.get(results[0]["image_url"]).status_code == 200
        assert client.get("/api/model").json()["server"]["index_size"] == 24
    assert (out / "index.json").is_file()


def test_a_restart_serves_the_saved_index_while_it_is_updated(
    predictor, serving_posters, serving_cache, tmp_path, gate
):
    out = tmp_path / "idx"
    gate.set()
    first = _job(out, serving_posters / "train", predictor, serving_cache)
    with TestClient(create_app(predictor, warmup=False, index_job=first)):
        first.join(120)
    gate.clear()
    job = _job(out, serving_posters / "train", predictor, serving_cache)
    app = create_app(predictor, warmup=False, index_job=job)
    with TestClient(app) as client:
        _wait(lambda: app.state.server.index is not None)  # the saved one, before the update
        assert client.get("/api/info").json()["index"]["state"] == "building"
        assert _similar(client).status_code == 200
        gate.set()
        job.join(120)
        info = client.get("/api/info").json()["index"]
        assert info["state"] == "ready" and "0 new, 0 removed, 24 kept" in info["message"]


def test_a_failed_build_says_why_and_genres_still_work(predictor, tmp_path):
    job = _job(tmp_path / "idx", tmp_path / "no-such-folder", predictor, tmp_path / "cache")
    with TestClient(create_app(predictor, warmup=False, index_job=job)) as client:
        job.join(60)
        info = client.get("/api/info").json()["index"]
        assert info["state"] == "failed" and "no such file" in info["message"]
        missing = _similar(client)
        assert missing.status_code == 404 and "building it failed" in missing.json()["error"]
        predicted = client.post("/api/predict", files={"files": ("p.png", png_bytes(YELLOW))})
        assert predicted.status_code == 200


def test_a_server_without_index_says_none(predictor):
    with TestClient(create_app(predictor, warmup=False)) as client:
        info = client.get("/api/info").json()
        assert info["index"]["state"] == "none" and info["model"] == predictor.name


@pytest.mark.parametrize("case", ["posters without --index", "--index is a file"])
def test_serve_refuses_a_bad_index_request_in_one_line(case, serving_posters, tmp_path, capsys):
    argv = ["serve", str(serving_posters / "val"), "--port", "0"]
    if case == "--index is a file":
        (tmp_path / "idx").write_text("not an index")
        argv += ["--index", str(tmp_path / "idx")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("postergenre serve: error: "), err


def test_a_poster_folder_opened_as_a_collection_is_indexed_then_reviewed(
    predictor, serving_posters, serving_cache, tmp_path, gate
):
    """`serve --collection FOLDER` of a folder not indexed yet: /collection's API answers 503
    while the index is built, then the collection is open and takes corrections."""
    out = tmp_path / "posters" / ".postergenre-index"
    out.parent.mkdir()
    job = _job(out, serving_posters / "train", predictor, serving_cache)
    app = create_app(predictor, warmup=False, index_job=job, collection_folder=out)
    with TestClient(app) as client:
        busy = client.get("/api/collection/info")
        assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
        assert "being indexed" in busy.json()["error"]
        gate.set()
        job.join(120)
        info = client.get("/api/collection/info")
        assert info.status_code == 200, info.text
        assert info.json()["size"] == 24
        page = client.get("/api/collection?limit=5").json()
        assert page["total"] == 24 and len(page["items"]) == 5
        first = page["items"][0]["position"]
        saved = client.put(f"/api/collection/{first}/genres", json={"genres": ["Drama"]})
        assert saved.status_code == 200, saved.text
    rows = (out / "corrections.csv").read_text().splitlines()
    assert rows[0] == "id,path,title,genres,reviewed,reviewed_at"
    assert any(",Drama,1," in row for row in rows[1:])


def test_serve_collection_of_a_poster_folder_with_other_posters_is_refused(tmp_path, capsys):
    folder = tmp_path / "posters"
    folder.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    code = main(["serve", "--collection", str(folder), "--index", str(tmp_path / "i"), str(other)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not indexed yet" in err[0]
