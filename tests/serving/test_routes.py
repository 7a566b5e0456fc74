"""The API's routes as the OpenAPI schema lists them, before any model is involved."""

from __future__ import annotations

from fastapi import FastAPI

from postergenre.serving.routes import api_router


def test_the_predict_docs_quote_the_servers_limits():
    app = FastAPI()
    app.include_router(api_router(max_files=3, max_batch=7))
    description = app.openapi()["paths"]["/api/predict"]["post"]["description"]
    assert "at most 3)" in description and "batches of up to 7." in description


def test_routes_are_listed_in_a_stable_order():
    app = FastAPI()
    app.include_router(api_router(max_files=32, max_batch=32))
    assert list(app.openapi()["paths"]) == [
        "/healthz",
        "/api/model",
        "/api/stats",
        "/api/info",
        "/api/predict",
        "/api/explain",
        "/api/similar",
        "/api/poster/{i}",
        "/api/collection",
        "/api/collection/info",
        "/api/collection/corrections.csv",
        "/api/collection/retrain",
        "/api/collection/{i}",
        "/api/collection/{i}/similar",
        "/api/collection/{i}/explain",
        "/api/collection/{i}/genres",
        "/api/collection/{i}/accept",
    ]
