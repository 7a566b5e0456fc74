"""A scored collection to look through and correct: the /collection page and its API.

Every route answers 404 when the server was started without a collection. Corrections are
saved to the collection's corrections.csv before the answer goes out; a read-only collection
is browsed but its corrections are refused with a 409.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, Response

from postergenre.curation.collection import Collection, NotAvailable
from postergenre.curation.corrections import CorrectionsNotSaved
from postergenre.errors import UserError
from postergenre.serving.collection_schemas import (
    CollectionInfo,
    CollectionPage,
    CollectionPoster,
    CollectionSimilar,
    GenresUpdate,
    RetrainState,
)
from postergenre.serving.limits import MAX_K, RETRY_AFTER_S
from postergenre.serving.review import RetrainRunning, ReviewSession, TooFewReviewed
from postergenre.serving.routes.explain import OVERLAY_MAX_SIDE, overlay_response
from postergenre.serving.routes.page import PAGE_SECURITY_HEADERS, STATIC_DIR
from postergenre.serving.schemas import error_responses
from postergenre.serving.state import Server, ServerState

MAX_PAGE = 200  # posters per page of the grid
Position = Annotated[int, Path(description="the poster's position in the index")]

router = APIRouter()

# The status of each refusal the collection raises (any other UserError is a 422).
_STATUS = {
    TooFewReviewed: 400,
    NotAvailable: 409,
    CorrectionsNotSaved: 409,
    RetrainRunning: 409,
}


@contextmanager
def _refusals() -> Iterator[None]:
    """Turn the collection's refusals into JSON errors with their statuses."""
    try:
        yield
    except UserError as exc:
        status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 422)
        raise HTTPException(status, exc.one_line()) from None


def _session(server: ServerState) -> ReviewSession:
    if server.collection is None:
        if server.collection_folder is not None:
            if server.collection_error is not None:
                raise HTTPException(
                    404, f"the collection could not be opened: {server.collection_error}"
                )
            status = server.index_status.to_json()
            if status["state"] == "failed":
                raise HTTPException(404, f"indexing the collection failed: {status['message']}")
            done, total = status["done"], status["total"]
            progress = f": {done:,} of {total:,} posters" if total else ""
            raise HTTPException(
                503,
                f"the collection is being indexed{progress}; the page opens when it is ready",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        raise HTTPException(404, "no collection open (start the server with --collection DIR)")
    return server.collection


def _poster(server: ServerState, i: int) -> tuple[ReviewSession, Collection]:
    session = _session(server)
    if not 0 <= i < len(session.collection):
        raise HTTPException(404, f"no poster {i} in the collection")
    return session, session.collection


@router.get("/collection", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "collection.html", headers=PAGE_SECURITY_HEADERS)


@router.get(
    "/api/collection",
    response_model=CollectionPage,
    summary="A page of the collection's posters",
    description="Filtered, sorted and paged. `genre` with `min_p`/`max_p`: that genre's "
    "probability (the top genre's when no genre) within the range; `q`: title or file name "
    "contains it (any case); `reviewed`: only reviewed (true) or not yet reviewed (false). "
    "`sort`: confidence (most probable first), uncertain (nearest a decision threshold first), "
    "mislabelled (lowest label quality first; labelled collections, 409 until computed), name.",
    responses=error_responses(404, 409, 422),
)
async def list_posters(
    server: Server,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 48,
    genre: Annotated[str | None, Query(max_length=200)] = None,
    min_p: Annotated[float, Query(ge=0, le=1)] = 0.0,
    max_p: Annotated[float, Query(ge=0, le=1)] = 1.0,
    q: Annotated[str, Query(max_length=200)] = "",
    sort: Literal["confidence", "uncertain", "mislabelled", "name"] = "confidence",
    reviewed: bool | None = None,
) -> dict[str, Any]:
    session = _session(server)
    if min_p > max_p:
        raise HTTPException(422, f"min_p ({min_p}) is above max_p ({max_p})")
    with _refusals():
        if sort == "mislabelled":
            session.check_mislabelled()
        collection = session.collection
        total, positions = collection.query(
            genre=genre or None,
            min_p=min_p,
            max_p=max_p,
            q=q,
            sort=sort,
            reviewed=reviewed,
            offset=offset,
            limit=limit,
        )
    items = [collection.tile(i) for i in positions]
    return {"total": total, "offset": offset, "limit": limit, "items": items}


@router.get(
    "/api/collection/info",
    response_model=CollectionInfo,
    summary="The collection and the live models",
    responses=error_responses(404),
)
async def info(server: Server) -> dict[str, Any]:
    return _session(server).info(server.predictor.name)


@router.get(
    "/api/collection/corrections.csv",
    response_class=Response,
    summary="Download corrections.csv",
    description="One row per poster: id, path, title, genres, reviewed (1/0), reviewed_at.",
    responses={200: {"content": {"text/csv": {}}}, **error_responses(404)},
)
async def corrections_csv(server: Server) -> Response:
    text = await asyncio.to_thread(_session(server).collection.corrections.text)
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="corrections.csv"',
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/api/collection/retrain",
    response_model=RetrainState,
    summary="How retraining stands",
    responses=error_responses(404),
)
async def retrain_status(server: Server) -> dict[str, Any]:
    return _session(server).retrain.to_json()


@router.post(
    "/api/collection/retrain",
    response_model=RetrainState,
    status_code=202,
    summary="Retrain from the corrections",
    description="Fits the served model's head again on the reviewed posters, in the "
    "background, into COLLECTION/models/<UTC time>; when done the server serves it. "
    "409 while one runs, 400 with too few reviewed posters.",
    responses=error_responses(400, 404, 409),
)
async def retrain(server: Server) -> dict[str, Any]:
    session = _session(server)
    with _refusals():
        return session.start_retrain(server).to_json()


@router.get(
    "/api/collection/{i}",
    response_model=CollectionPoster,
    summary="One poster of the collection",
    responses=error_responses(404, 422),
)
async def poster(server: Server, i: Position) -> dict[str, Any]:
    _, collection = _poster(server, i)
    return collection.detail(i)


@router.get(
    "/api/collection/{i}/similar",
    response_model=CollectionSimilar,
    summary="The posters most similar to one of the collection",
    responses=error_responses(404, 422),
)
async def similar(
    request: Request,
    server: Server,
    i: Position,
    k: Annotated[int, Query(ge=1, le=MAX_K, description="how many posters")] = 8,
) -> dict[str, Any]:
    _, collection = _poster(server, i)
    index = collection.index
    neighbours = index.neighbours_of(i, k)
    root = request.scope.get("root_path", "").rstrip("/")
    results = [
        {
            "position": n.position,
            "id": n.id,
            "name": n.name,
            "genres": n.genres,
            "similarity": round(n.similarity, 6),
            "image_url": f"{root}/api/poster/{n.position}",
        }
        for n in neighbours
    ]
    return {"results": results}


@router.get(
    "/api/collection/{i}/explain",
    response_class=Response,
    summary="Grad-CAM heatmap of one poster of the collection",
    description="As /api/explain, for the indexed poster, with the served model.",
    responses={
        200: {"content": {"image/png": {}}, "description": "The overlay image"},
        **error_responses(404, 415, 422, 503),
    },
)
async def explain(
    server: Server,
    i: Position,
    genre: Annotated[str | None, Query(max_length=200, description="a genre of the model")] = None,
) -> Response:
    _, collection = _poster(server, i)
    predictor = server.predictor
    if genre is not None:
        try:
            genre = predictor.genres[predictor.card.find_genre(genre)]
        except UserError as exc:
            raise HTTPException(404, str(exc)) from None
    path = FilePath(collection.index.items[i]["path"])
    if not path.is_file():
        raise HTTPException(404, f"poster {i} is not available ({path} is gone)")
    explanation = await server.threads.run_slow(predictor.explain, path, genre, OVERLAY_MAX_SIDE)
    return await overlay_response(explanation)


@router.put(
    "/api/collection/{i}/genres",
    response_model=CollectionPoster,
    summary="Set a poster's genres",
    description="Saved at once to corrections.csv, marked reviewed now. 422 for a genre the "
    "model does not know; 409 when the collection is read-only.",
    responses=error_responses(404, 409, 422),
)
async def set_genres(server: Server, i: Position, body: GenresUpdate) -> dict[str, Any]:
    _, collection = _poster(server, i)
    with _refusals():
        return await asyncio.to_thread(collection.correct, i, body.genres)


@router.post(
    "/api/collection/{i}/accept",
    response_model=CollectionPoster,
    summary="Accept the predicted genres",
    description="Saves the genres the model predicts for the poster, as shown, as its "
    "reviewed genres; 409 when the collection is read-only.",
    responses=error_responses(404, 409, 422),
)
async def accept(server: Server, i: Position) -> dict[str, Any]:
    _, collection = _poster(server, i)
    with _refusals():
        return await asyncio.to_thread(collection.accept, i)
