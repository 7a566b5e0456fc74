"""The web app: a page to drop posters on, and a JSON API for genres, heatmaps and look-alikes.

`create_app(predictor)` (or `build_app` with `ServerSettings`) assembles it from its parts
(schemas, routes, error handlers, limits, model threads); `postergenre.serving.server.serve`
runs it. Every bad request gets a 4xx with
`{"error": "..."}`; only a bug gives a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from postergenre import __version__
from postergenre._allocator import release_free_memory
from postergenre.console import format_bytes
from postergenre.curation.collection import Collection
from postergenre.inference.predictor import Predictor
from postergenre.inference.similarity import PosterIndex
from postergenre.serving.batcher import MicroBatcher
from postergenre.serving.error_handlers import install_error_handlers
from postergenre.serving.index_job import IndexJob
from postergenre.serving.limits import (
    MAX_FILES,
    MAX_UPLOAD_BYTES,
    MEGABYTE,
    MULTIPART_OVERHEAD,
    REQUEST_TIMEOUT_S,
    SERVER_MAX_PIXELS,
    HeadAsGetMiddleware,
    RequestLimitsMiddleware,
)
from postergenre.serving.review import ReviewSession
from postergenre.serving.routes import api_router
from postergenre.serving.routes.page import add_page
from postergenre.serving.settings import ServerSettings
from postergenre.serving.state import ServerState
from postergenre.serving.uploads import BodyLimitMiddleware, UploadDecoder


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the model threads (warmed up unless told not to) and the batcher; stop them last."""
    server: ServerState = app.state.server
    server.threads.start(server.batcher)
    if server.collection is not None:
        server.collection.start()  # label issues, in the background
    try:
        if server.warmup:
            await server.threads.warm_up(server.predictor, server.index)
        await server.batcher.start()
        if server.index_job is not None:  # the page is up meanwhile; /api/info says how far
            server.index_job.start(server.index_status, server.set_index)
        yield
    finally:
        await server.batcher.stop()
        server.threads.stop()


def create_app(
    predictor: Predictor,
    index: PosterIndex | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    max_pixels: int = SERVER_MAX_PIXELS,
    max_files: int = MAX_FILES,
    warmup: bool = True,
    request_timeout: float = REQUEST_TIMEOUT_S,
    index_job: IndexJob | None = None,
    collection: Collection | None = None,
    collection_folder: Path | None = None,
) -> FastAPI:
    """The web app for `predictor` (and `index`, for similar posters, or `index_job`, which
    builds or updates one in the background once the app has started; `collection`, to look
    through and correct at /collection, whose index is then `index` too).

    `max_upload_bytes` bounds the poster bytes of one request (all its files together);
    `max_pixels` bounds one decoded poster; `max_batch` / `max_wait_ms` tune the
    micro-batcher that pools concurrent predictions; a request body that pauses for
    `request_timeout` seconds gets a 408. A setting out of range raises `SettingError`.
    """
    settings = ServerSettings(
        max_upload_mb=max_upload_bytes / MEGABYTE,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_files=max_files,
        max_pixels=max_pixels,
        request_timeout=request_timeout,
    ).check()
    return build_app(predictor, settings, index, warmup, index_job, collection, collection_folder)


def build_app(
    predictor: Predictor,
    settings: ServerSettings,
    index: PosterIndex | None = None,
    warmup: bool = True,
    index_job: IndexJob | None = None,
    collection: Collection | None = None,
    collection_folder: Path | None = None,
) -> FastAPI:
    """The web app for `predictor` with `settings` (checked: `ServerSettings.check`), serving
    `index` or the one `index_job` builds, and `collection` at /collection (or, once
    `index_job` has built it, the collection in `collection_folder`)."""
    if collection is not None:
        index = collection.index
    batcher = MicroBatcher(
        predictor.predict_pixels,
        max_batch=settings.max_batch,
        max_wait_ms=settings.max_wait_ms,
        on_idle=release_free_memory,  # the tuned allocator keeps its peak otherwise
    )
    app = FastAPI(
        title="PosterGenre",
        summary="Predict a movie's genres from its poster.",
        description='Upload posters as multipart/form-data. Errors are JSON `{"error": ...}` '
        "with a 4xx status.",
        version=__version__,
        lifespan=_lifespan,
        form_limits={"max_files": settings.max_files, "max_fields": 16},
    )
    # Huge posters are decoded reduced, still with twice the pixels the model takes.
    spec = predictor.input_spec
    max_upload_bytes = settings.max_upload_bytes
    uploads = UploadDecoder(max_upload_bytes, settings.max_pixels, fit=(spec.width, spec.height))
    app.state.server = ServerState(
        predictor,
        index,
        batcher,
        uploads,
        settings.max_files,
        warmup,
        index_job=index_job,
        collection_folder=collection_folder,
    )
    if collection is not None:
        app.state.server.collection = ReviewSession(collection, cache_dir=predictor.cache_dir)
    # The attributes callers reached for before ServerState (tests swap the batcher's model).
    app.state.batcher, app.state.predictor, app.state.index = batcher, predictor, index
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_size=max_upload_bytes + MULTIPART_OVERHEAD,
        message=f"upload larger than the {format_bytes(max_upload_bytes)} limit",
    )
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(  # outermost
        RequestLimitsMiddleware, body_timeout=settings.request_timeout
    )
    add_page(app)
    app.include_router(api_router(settings.max_files, settings.max_batch))
    return app
