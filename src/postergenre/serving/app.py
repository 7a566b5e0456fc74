"""The web app: a page to drop posters on, and a JSON API for genres, heatmaps and look-alikes.

`create_app(predictor)` returns a FastAPI application; `postergenre.serving.server.serve` runs it.
Every bad request gets a 4xx with `{"error": "..."}`; only a bug gives a 500.
"""

from __future__ import annotations

import asyncio
import io
import logging
import mimetypes
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, File, HTTPException, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from postergenre import __version__
from postergenre._allocator import release_free_memory
from postergenre.data.decode import POSTER_FORMATS
from postergenre.errors import PosterDecodeError, UserError
from postergenre.inference.predictor import Predictor
from postergenre.inference.similarity import PosterIndex
from postergenre.serving.batcher import BatcherClosedError, MicroBatcher
from postergenre.serving.limits import (
    REQUEST_TIMEOUT_S,
    HeadAsGetMiddleware,
    RequestLimitsMiddleware,
)
from postergenre.serving.uploads import (
    BodyLimitMiddleware,
    EmptyUploadError,
    UploadTooLargeError,
    decode_poster_bytes,
    describe_size,
    read_upload,
)

STATIC_DIR = FilePath(__file__).resolve().parent / "static"
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Posters are a few megapixels; the server decodes at most this many per image (files on disk
# may have up to 40 MP), so one upload cannot take seconds of CPU and hundreds of MB.
SERVER_MAX_PIXELS = 16_000_000
# Uploads decoded at once; more wait their turn (each decode holds a whole image in memory).
DECODE_CONCURRENCY = 2
MAX_FILES = 32
MAX_K = 50
# Boundaries and part headers of a multipart body, on top of the poster bytes themselves.
MULTIPART_OVERHEAD = 64 * 1024
# The overlay PNG is for display; a 4000-pixel poster need not come back at full size.
OVERLAY_MAX_SIDE = 1024
PAGE_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

log = logging.getLogger("postergenre.serving")
T = TypeVar("T")


# -- response models --------------------------------------------------------------------------
class ErrorResponse(BaseModel):
    """Every error: a human-readable message."""

    error: str = Field(examples=["poster.txt: not an image (accepted formats: JPEG, PNG, ...)"])


class GenreProbability(BaseModel):
    genre: str
    probability: float = Field(ge=0, le=1)


class PosterResult(BaseModel):
    """Genres of one uploaded poster."""

    filename: str
    genres: list[GenreProbability] = Field(description="every genre, most probable first")
    predicted: list[str] = Field(
        description="the top genre (single-label) or the genres at or above their thresholds "
        "(multi-label), most probable first"
    )


class PredictResponse(BaseModel):
    model: str
    results: list[PosterResult]


class SimilarPoster(BaseModel):
    id: str
    genres: list[str]
    similarity: float = Field(description="cosine similarity of the backbone embeddings")
    image_url: str


class SimilarResponse(BaseModel):
    results: list[SimilarPoster] = Field(description="most similar first")


class ServerInfo(BaseModel):
    max_upload_bytes: int
    max_files: int
    formats: list[str] = Field(description="image formats an upload may be in")
    similar: bool = Field(description="whether /api/similar has an index to search")
    index_size: int
    version: str


class ModelInfo(BaseModel):
    """The bundle's model.json, plus how this server runs it."""

    model_config = ConfigDict(extra="allow")

    name: str
    runtime: str | None = None
    architecture: str | None = None
    task: str = Field(description="single (softmax) or multi (sigmoid + per-genre thresholds)")
    genres: list[str]
    thresholds: dict[str, float] | None = None
    server: ServerInfo


class Health(BaseModel):
    status: str = "ok"


class Stats(BaseModel):
    """What the micro-batcher has done since start-up."""

    batches: int
    items: int
    largest_batch: int
    failed_batches: int


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "No file, an empty file, or a malformed upload",
        404: "Not found",
        413: "Upload over the size limit",
        415: "Not an image, a truncated or corrupt image, or too many pixels",
        422: "Invalid parameters",
        501: "Not supported by this model",
        503: "The server is shutting down",
    }
    return {c: {"model": ErrorResponse, "description": descriptions[c]} for c in codes}


# -- errors -----------------------------------------------------------------------------------
def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> tuple[int, str]:
    """A 400 for a missing upload, else 422, with one readable line for all problems."""
    problems = []
    missing_upload = False
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        where, name = (loc[0], ".".join(loc[1:])) if len(loc) > 1 else ("request", ".".join(loc))
        if err.get("type") == "missing" and where == "body":
            missing_upload = True
            problems.append(f"no file uploaded: send multipart/form-data with a {name!r} field")
        else:
            problems.append(f"{where} {name}: {err.get('msg', 'invalid')}".replace("  ", " "))
    return (400 if missing_upload else 422), "; ".join(problems) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return _error(exc.status_code, str(exc.detail), exc.headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _error(*_describe_validation(exc))

    def status_for(status: int) -> Callable[[Request, Exception], Any]:
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            return _error(status, str(exc))

        return handler

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return _error(500, "internal server error (see the server log)")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(EmptyUploadError, status_for(400))
    app.add_exception_handler(UploadTooLargeError, status_for(413))
    app.add_exception_handler(PosterDecodeError, status_for(415))
    app.add_exception_handler(UserError, status_for(422))
    app.add_exception_handler(BatcherClosedError, status_for(503))
    app.add_exception_handler(Exception, unexpected)


# -- helpers ----------------------------------------------------------------------------------
def _encode_png(image: Image.Image) -> bytes:
    """The overlay as PNG (explanations already draw it at most OVERLAY_MAX_SIDE on a side)."""
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _image_media_type(path: FilePath) -> str | None:
    """The file's image MIME type from its name, or from its header when the name says none."""
    guessed, _ = mimetypes.guess_type(path.name)
    if guessed and guessed.startswith("image/"):
        return guessed
    try:
        with Image.open(path) as image:
            return Image.MIME.get(image.format or "")
    except (OSError, ValueError):
        return None


def _model_info(
    predictor: Predictor, index: PosterIndex | None, max_upload_bytes: int, max_files: int
) -> dict[str, Any]:
    info: dict[str, Any] = predictor.card.to_json()
    info["name"] = predictor.name
    info["runtime"] = predictor.runtime
    info["server"] = {
        "max_upload_bytes": max_upload_bytes,
        "max_files": max_files,
        "formats": list(POSTER_FORMATS),
        "similar": index is not None,
        "index_size": len(index) if index is not None else 0,
        "version": __version__,
    }
    return info


# -- the app ----------------------------------------------------------------------------------
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
) -> FastAPI:
    """The web app for `predictor` (and `index`, for similar posters).

    `max_upload_bytes` bounds the poster bytes of one request (all its files together);
    `max_pixels` bounds one decoded poster; `max_batch` / `max_wait_ms` tune the
    micro-batcher that pools concurrent predictions; a request body that pauses for
    `request_timeout` seconds gets a 408.
    """
    if max_upload_bytes < 1:
        raise ValueError(f"max_upload_bytes must be positive, got {max_upload_bytes}")
    batcher = MicroBatcher(
        predictor.predict_pixels,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        on_idle=release_free_memory,  # the tuned allocator keeps its peak otherwise
    )
    info = _model_info(predictor, index, max_upload_bytes, max_files)
    positions = (
        {(item["id"], item["path"]): i for i, item in enumerate(index.items)} if index else {}
    )

    decode_slots = asyncio.Semaphore(DECODE_CONCURRENCY)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Two model threads: one runs the batcher's predictions, the other the slow work
        # (Grad-CAM, embeddings for similar posters), so a heavy explanation never holds up
        # the quick predictions queued behind it.
        predict_executor = ThreadPoolExecutor(1, thread_name_prefix="postergenre-predict")
        heavy_executor = ThreadPoolExecutor(1, thread_name_prefix="postergenre-heavy")
        app.state.model_executor = heavy_executor
        batcher.executor = predict_executor
        if warmup:
            await _warm_up(predict_executor, heavy_executor)
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            app.state.model_executor = None
            for executor in (predict_executor, heavy_executor):
                executor.shutdown(wait=False, cancel_futures=True)

    async def _warm_up(predict_executor: ThreadPoolExecutor, heavy: ThreadPoolExecutor) -> None:
        spec = predictor.input_spec
        blank = np.zeros((1, spec.height, spec.width, 3), dtype=np.uint8)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(predict_executor, predictor.predict_pixels, blank)
        # Grad-CAM needs the PyTorch model whatever the runtime: load it now, not on the first
        # /api/explain request.
        await loop.run_in_executor(heavy, lambda: predictor.model)
        if index is not None:
            await loop.run_in_executor(
                heavy, index.embed_images, [Image.new("RGB", (spec.width, spec.height))]
            )

    app = FastAPI(
        title="PosterGenre",
        summary="Predict a movie's genres from its poster.",
        description='Upload posters as multipart/form-data. Errors are JSON `{"error": ...}` '
        "with a 4xx status.",
        version=__version__,
        lifespan=lifespan,
        form_limits={"max_files": max_files, "max_fields": 16},
    )
    app.state.batcher = batcher
    app.state.predictor = predictor
    app.state.index = index
    _install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_size=max_upload_bytes + MULTIPART_OVERHEAD,
        message=f"upload larger than the {describe_size(max_upload_bytes)} limit",
    )
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(RequestLimitsMiddleware, body_timeout=request_timeout)  # outermost

    async def run_model(request: Request, fn: Callable[..., T], *args: Any) -> T:
        """Run slow model work on the heavy thread, then hand its freed memory back."""
        executor: ThreadPoolExecutor | None = getattr(request.app.state, "model_executor", None)
        if executor is None:
            raise BatcherClosedError("the server is not running (lifespan not started)")

        def call() -> T:
            try:
                return fn(*args)
            finally:
                release_free_memory()

        return await asyncio.get_running_loop().run_in_executor(executor, call)

    async def decode(fn: Callable[..., T], *args: Any) -> T:
        async with decode_slots:
            return await asyncio.to_thread(fn, *args)

    async def decode_upload(upload: UploadFile) -> Image.Image:
        data = await read_upload(upload, max_upload_bytes)
        name = upload.filename or "upload"
        return await decode(decode_poster_bytes, data, name, max_pixels)

    def decode_and_resize(data: bytes, name: str) -> np.ndarray:
        return predictor.preprocess(decode_poster_bytes(data, name, max_pixels))

    # -- page -----------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_SECURITY_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # -- API ------------------------------------------------------------------------------
    @app.get(
        "/healthz",
        response_model=Health,
        summary="Liveness check",
        description='Always `{"status": "ok"}` once the server is up.',
    )
    async def healthz() -> Health:
        return Health()

    @app.get(
        "/api/model",
        response_model=ModelInfo,
        summary="The model being served",
        description="The bundle's model.json (architecture, task, genres, input, training "
        "and validation metrics), plus its name, runtime, thresholds and the server's limits.",
    )
    async def model_info() -> dict[str, Any]:
        return info

    @app.get(
        "/api/stats",
        response_model=Stats,
        summary="Micro-batcher counters",
        description="Batches run and posters predicted since start-up: `items / batches` is "
        "the mean batch size.",
    )
    async def stats() -> dict[str, int]:
        return batcher.stats.to_json()

    @app.post(
        "/api/predict",
        response_model=PredictResponse,
        summary="Genres of one or more posters",
        description=f"Multipart field `files` (repeat it for several posters, at most "
        f"{max_files}). Concurrent requests are pooled into batches of up to {max_batch}.",
        responses=_errors(400, 413, 415, 422, 503),
    )
    async def predict(
        request: Request,
        files: Annotated[
            list[UploadFile], File(description="poster images (JPEG, PNG, WebP, GIF, ...)")
        ],
    ) -> dict[str, Any]:
        names = [f.filename or "upload" for f in files]
        uploads: list[bytes] = []
        for upload in files:
            remaining = max_upload_bytes - sum(map(len, uploads))
            try:
                uploads.append(await read_upload(upload, remaining))
            except UploadTooLargeError:
                if len(files) == 1:
                    raise
                limit = describe_size(max_upload_bytes)
                raise UploadTooLargeError(
                    f"{len(files)} posters together are larger than the {limit} limit"
                ) from None
        pixels = await asyncio.gather(
            *(decode(decode_and_resize, d, n) for d, n in zip(uploads, names, strict=True))
        )
        if predictor.card.reads_text:
            # OCR costs about a second a poster: the heavy thread reads and predicts, so the
            # batcher never waits on it (batching would save nothing next to OCR).
            probs = list(await run_model(request, predictor.predict_pixels, np.stack(pixels)))
        else:
            probs = await asyncio.gather(*(batcher.submit(p) for p in pixels))
        results = []
        for name, row in zip(names, probs, strict=True):
            prediction = predictor.to_prediction(name, row).to_json()
            results.append(
                {
                    "filename": prediction["path"],
                    "genres": prediction["genres"],
                    "predicted": prediction["predicted"],
                }
            )
        return {"model": predictor.name, "results": results}

    @app.post(
        "/api/explain",
        response_class=Response,
        summary="Grad-CAM heatmap of a genre",
        description="The poster with a heatmap of where the model found evidence for `genre` "
        "(default: its top genre), as a PNG at most "
        f"{OVERLAY_MAX_SIDE} pixels on a side. Headers `X-Genre` (URL-encoded) and "
        "`X-Probability` say which genre and how probable.",
        responses={
            200: {"content": {"image/png": {}}, "description": "The overlay image"},
            **_errors(400, 404, 413, 415, 422, 503),
        },
    )
    async def explain(
        request: Request,
        file: Annotated[UploadFile, File(description="one poster image")],
        genre: Annotated[
            str | None, Query(max_length=200, description="a genre of the model")
        ] = None,
    ) -> Response:
        if genre is not None:
            try:
                genre = predictor.genres[predictor.card.find_genre(genre)]
            except UserError as exc:
                raise HTTPException(404, str(exc)) from None
        image = await decode_upload(file)
        explanation = await run_model(request, predictor.explain, image, genre, OVERLAY_MAX_SIDE)
        png = await asyncio.to_thread(_encode_png, explanation.overlay)
        headers = {
            "X-Genre": quote(explanation.genre),
            "X-Probability": f"{explanation.probability:.6f}",
            "Cache-Control": "no-store",
        }
        return Response(png, media_type="image/png", headers=headers)

    @app.post(
        "/api/similar",
        response_model=SimilarResponse,
        summary="The most similar indexed posters",
        description="Cosine similarity of pretrained-backbone embeddings against the index "
        "the server was started with; 404 when it has none.",
        responses=_errors(400, 404, 413, 415, 422, 503),
    )
    async def similar(
        request: Request,
        file: Annotated[UploadFile, File(description="one poster image")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="how many posters")] = 8,
    ) -> dict[str, Any]:
        if index is None:
            raise HTTPException(404, "no poster index configured (start the server with one)")
        image = await decode_upload(file)
        vectors = await run_model(request, index.embed_images, [image])
        [neighbours] = index.search(vectors, k)
        root = request.scope.get("root_path", "").rstrip("/")
        results = [
            {
                "id": n.id,
                "genres": n.genres,
                "similarity": round(n.similarity, 6),
                "image_url": f"{root}/api/poster/{positions[(n.id, n.path)]}",
            }
            for n in neighbours
        ]
        return {"results": results}

    @app.get(
        "/api/poster/{i}",
        response_class=FileResponse,
        summary="An indexed poster's image",
        description="The image file of the i-th poster of the index (only files the index "
        "lists are ever served).",
        responses={
            200: {"content": {"image/*": {}}, "description": "The poster file"},
            **_errors(404, 422),
        },
    )
    async def poster(i: Annotated[int, Path(description="position in the index")]) -> Response:
        if index is None or not 0 <= i < len(index):
            raise HTTPException(404, f"no indexed poster {i}")
        path = FilePath(index.items[i]["path"])
        media_type = await asyncio.to_thread(_image_media_type, path) if path.is_file() else None
        if media_type is None:
            raise HTTPException(404, f"poster {i} is not available")
        return FileResponse(
            path,
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
        )

    return app
