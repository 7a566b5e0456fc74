"""The collection API on the tiny posters: browse, filter, correct, reload, refuse in JSON, and
retrain and find mislabelled posters through stand-ins for the functions other parts provide."""

from __future__ import annotations

import csv
import io
import shutil
import sys
import threading
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from postergenre.curation.collection import open_collection
from postergenre.models.card import ModelCard
from postergenre.serving import review
from postergenre.serving.app import create_app

LABEL_ISSUES = "postergenre.curation.label_issues"


def fake_label_issues_module(calls: list) -> types.ModuleType:
    """A stand-in for curation.label_issues: quality falls with the position."""
    module = types.ModuleType(LABEL_ISSUES)

    def find_label_issues(vectors, labels, labelled, genre_names=None, folds=5, seed=0):
        calls.append((vectors.shape, len(labels), list(genre_names)))
        n = len(labels)
        return SimpleNamespace(
            genre_names=list(genre_names),
            quality=np.linspace(1, 0, n),
            flagged=np.arange(n) >= n - 2,
            suggested=lambda i: [genre_names[0]],
        )

    module.find_label_issues = find_label_issues
    return module


def _client(predictor, folder: Path, **options):
    collection = open_collection(folder, predictor, **options)
    return TestClient(create_app(predictor, warmup=False, collection=collection))


@pytest.fixture(scope="module")
def api(multi_predictor, collection_folder):
    """The app on a copy of the collection, label issues from the stand-in."""
    folder = collection_folder.parent / "working"
    shutil.copytree(collection_folder, folder)
    calls: list = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, LABEL_ISSUES, fake_label_issues_module(calls))
        with _client(multi_predictor, folder) as client:
            client.label_issue_calls = calls
            client.folder = folder
            yield client


def _wait_for(client, path: str, key: str, value: str, seconds: float = 60) -> dict:
    for _ in range(int(seconds * 10)):
        body = client.get(path).json()
        if body[key] == value or body[key] == "failed":
            return body
        threading.Event().wait(0.1)
    raise AssertionError(f"{path} never reached {key}={value}")


def test_the_first_page_lists_posters_most_probable_first(api, multi_predictor):
    body = api.get("/api/collection", params={"limit": 5}).json()
    assert body["total"] == 48 and body["offset"] == 0 and len(body["items"]) == 5
    tops = [item["genres_top"][0][1] for item in body["items"]]
    assert tops == sorted(tops, reverse=True)
    item = body["items"][0]
    assert set(item) == {"position", "id", "name", "genres_top", "given", "corrected", "reviewed"}
    assert len(item["genres_top"]) == 3 and item["given"] and item["reviewed"] is False
    assert {g for g, _ in item["genres_top"]} <= set(multi_predictor.genres)


def test_filters_search_and_paging(api):
    drama = api.get("/api/collection", params={"genre": "drama", "min_p": 0.5, "limit": 200})
    rows = drama.json()["items"]
    assert rows and all(dict(r["genres_top"]).get("Drama", 1) >= 0.5 for r in rows)
    film = api.get("/api/collection", params={"q": "FILM 1", "sort": "name"}).json()
    assert [r["name"] for r in film["items"]] == [f"Film {i}" for i in range(11, 20, 2)]
    page = api.get("/api/collection", params={"offset": 45, "limit": 10}).json()
    assert page["total"] == 48 and len(page["items"]) == 3


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": 500}, "query limit"),
        ({"sort": "random"}, "query sort"),
        ({"genre": "Western"}, "unknown genre 'Western'"),
        ({"min_p": 0.8, "max_p": 0.2}, "min_p (0.8) is above max_p (0.2)"),
        ({"min_p": 2}, "query min_p"),
    ],
)
def test_bad_queries_get_a_422_in_json(api, params, message):
    response = api.get("/api/collection", params=params)
    assert response.status_code == 422 and message in response.json()["error"]


def test_a_poster_in_detail_with_similar_posters_and_its_heatmap(api):
    detail = api.get("/api/collection/3").json()
    probs = [p["probability"] for p in detail["probabilities"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True)
    assert detail["name"] == "Film 03" and detail["shown"].endswith(".png")
    similar = api.get("/api/collection/3/similar", params={"k": 4}).json()["results"]
    assert len(similar) == 4 and 3 not in [n["position"] for n in similar]
    sims = [n["similarity"] for n in similar]
    assert sims == sorted(sims, reverse=True)
    assert api.get(similar[0]["image_url"]).status_code == 200
    heat = api.get("/api/collection/3/explain", params={"genre": "comedy"})
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"
    assert heat.headers["x-genre"] == "Comedy"
    assert Image.open(io.BytesIO(heat.content)).size[0] > 0
    for path in ("/api/collection/48", "/api/collection/-1/similar"):
        response = api.get(path)
        assert response.status_code == 404 and "no poster" in response.json()["error"]
    assert api.get("/api/collection/3/explain", params={"genre": "x"}).status_code == 404


def test_thumbnails_are_bounded_jpegs(api):
    response = api.get("/api/poster/0", params={"size": 32})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(response.content)).size) <= 32
    # A poster that already fits (the tiny ones are 40 x 60) comes as it is.
    fits = api.get("/api/poster/0", params={"size": 64})
    assert fits.headers["content-type"] == "image/png"
    assert fits.content == api.get("/api/poster/0").content
    too_big = api.get("/api/poster/0", params={"size": 5000})
    assert too_big.status_code == 422 and "size" in too_big.json()["error"]


def test_corrections_are_saved_at_once_and_downloadable(api, multi_predictor):
    saved = api.put("/api/collection/5/genres", json={"genres": ["drama", "Action"]})
    assert saved.status_code == 200
    body = saved.json()
    assert body["corrected"] == ["Drama", "Action"] and body["reviewed"] is True
    rows = list(csv.DictReader((api.folder / "corrections.csv").open(encoding="utf-8")))
    assert len(rows) == 48
    assert (rows[5]["genres"], rows[5]["reviewed"]) == ("Drama|Action", "1")
    accepted = api.post("/api/collection/6/accept").json()
    assert accepted["corrected"] == accepted["predicted"]
    download = api.get("/api/collection/corrections.csv")
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    assert download.text == (api.folder / "corrections.csv").read_text(encoding="utf-8")
    reviewed = api.get("/api/collection", params={"reviewed": True}).json()
    assert sorted(r["position"] for r in reviewed["items"]) == [5, 6]
    refused = api.put("/api/collection/7/genres", json={"genres": ["Western"]})
    assert refused.status_code == 422 and "unknown genre 'Western'" in refused.json()["error"]
    missing = api.put("/api/collection/7/genres", json={"genre": "Drama"})
    assert missing.status_code == 422 and "body genres: Field required" in missing.json()["error"]

    # A restart reads them back.
    with _client(multi_predictor, api.folder) as again:
        assert again.get("/api/collection/5").json()["corrected"] == ["Drama", "Action"]
        assert again.get("/api/collection/info").json()["reviewed"] == 2


def test_mislabelled_posters_first_once_label_issues_are_computed(api):
    info = _wait_for(api, "/api/collection/info", "mislabelled", "ready")
    assert info["mislabelled"] == "ready" and info["labelled"]
    shape, n, genres = api.label_issue_calls[0]  # (a restart in another test computes them again)
    assert shape[0] == n == 48 and genres == info["genres"]
    body = api.get("/api/collection", params={"sort": "mislabelled", "limit": 3}).json()
    assert [r["position"] for r in body["items"]] == [47, 46, 45]  # lowest quality first
    assert api.get("/api/collection/47").json()["suggested"] == [info["genres"][0]]


def test_without_label_issues_the_mislabelled_sort_is_a_409(multi_predictor, collection_folder):
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, LABEL_ISSUES, None)  # importing it fails, as before merging
        with _client(multi_predictor, collection_folder, writable=False) as client:
            response = client.get("/api/collection", params={"sort": "mislabelled"})
            assert response.status_code == 409
            assert "not available yet" in response.json()["error"]
            assert client.get("/api/collection/info").json()["mislabelled"] == "unavailable"


def test_a_read_only_collection_browses_but_refuses_corrections(multi_predictor, collection_folder):
    with _client(multi_predictor, collection_folder, writable=False) as client:
        assert client.get("/api/collection").json()["total"] == 48
        assert client.get("/api/collection/info").json()["writable"] is False
        for response in (
            client.put("/api/collection/1/genres", json={"genres": ["Drama"]}),
            client.post("/api/collection/1/accept"),
            client.post("/api/collection/retrain"),
        ):
            assert response.status_code == 409 and "read-only" in response.json()["error"]
    assert not (collection_folder / "corrections.csv").exists()


def test_without_a_collection_its_routes_are_404(client):
    for path in ("/api/collection", "/api/collection/info", "/api/collection/0"):
        response = client.get(path)
        assert response.status_code == 404 and "--collection" in response.json()["error"]


def test_retrain_serves_the_new_model_and_rescores_the_collection(
    multi_predictor, collection_folder, tmp_path
):
    folder = tmp_path / "retrain"
    shutil.copytree(collection_folder, folder)
    calls, release = [], threading.Event()

    def fake_retrain(labels, out, *, arch, init_from=None, cache_dir=None, progress=False):
        calls.append((Path(labels).name, out.parent.name, arch, init_from))
        release.wait(60)
        shutil.copytree(multi_predictor.folder, out)
        ModelCard.read(out).replace(name="retrained").write(out)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(review, "_retrain_function", lambda: fake_retrain)
        patch.setitem(sys.modules, LABEL_ISSUES, None)
        with _client(multi_predictor, folder) as client:
            few = client.post("/api/collection/retrain")
            assert few.status_code == 400
            assert f"at least {review.MIN_REVIEWED_TO_RETRAIN}" in few.json()["error"]
            for i in range(review.MIN_REVIEWED_TO_RETRAIN):
                assert client.post(f"/api/collection/{i}/accept").status_code == 200
            started = client.post("/api/collection/retrain")
            assert started.status_code == 202 and started.json()["state"] == "running"
            again = client.post("/api/collection/retrain")
            assert again.status_code == 409 and "already running" in again.json()["error"]
            release.set()
            status = _wait_for(client, "/api/collection/retrain", "state", "done")
            assert status["state"] == "done", status
            assert Path(status["model"]).parent == folder / "models"
            [(labels, models, arch, init_from)] = calls
            assert (labels, models, arch) == ("corrections.csv", "models", "efficientnet-lite0")
            assert init_from == str(multi_predictor.folder)
            info = client.get("/api/collection/info").json()
            assert info["model"] == info["scores_model"] == "retrained" and info["scores_current"]
            assert client.get("/api/model").json()["name"] == "retrained"


def test_retrain_is_a_409_where_this_version_cannot_retrain(multi_predictor, collection_folder):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(review, "_retrain_function", lambda: None)
        patch.setitem(sys.modules, LABEL_ISSUES, None)
        with _client(multi_predictor, collection_folder, writable=True) as client:
            response = client.post("/api/collection/retrain")
            assert response.status_code == 409 and "not available yet" in response.json()["error"]


def test_retrain_for_real_from_accepted_posters(multi_predictor, collection_folder, tmp_path):
    """The page's retrain end to end, without stand-ins: accept enough posters, retrain from
    corrections.csv starting from the served probe, and the server serves the new bundle."""
    folder = tmp_path / "real-retrain"
    shutil.copytree(collection_folder, folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, LABEL_ISSUES, None)
        with _client(multi_predictor, folder) as client:
            for i in range(review.MIN_REVIEWED_TO_RETRAIN):
                assert client.post(f"/api/collection/{i}/accept").status_code == 200
            started = client.post("/api/collection/retrain")
            assert started.status_code == 202, started.text
            status = _wait_for(client, "/api/collection/retrain", "state", "done", seconds=240)
            assert status["state"] == "done", status
            bundle = Path(status["model"])
            assert (bundle / "model.safetensors").is_file() and bundle.is_relative_to(folder)
            card = ModelCard.read(bundle)
            assert list(card.genres) == list(multi_predictor.genres)  # --init-from keeps them
            served = client.get("/api/model").json()
            assert served["name"] == card.name != multi_predictor.name
            page = client.get("/api/collection?limit=3").json()
            assert page["total"] == 48
