"""The app's routes: the page, and the JSON API assembled by `api_router`."""

from __future__ import annotations

from fastapi import APIRouter

from postergenre.serving.routes import collection, explain, info, predict, similar


def api_router(max_files: int, max_batch: int) -> APIRouter:
    """Every API route, in the order the OpenAPI schema lists them; the predict docs quote
    this server's `max_files` and `max_batch`."""
    router = APIRouter()
    router.include_router(info.router)
    router.include_router(predict.router(max_files, max_batch))
    router.include_router(explain.router)
    router.include_router(similar.router)
    router.include_router(collection.router)
    return router
