"""Look-alikes: the indexed posters most similar to an upload, and their image files."""

from __future__ import annotations

import asyncio
import io
import mimetypes
from pathlib import Path as FilePath
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, File, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from PIL import Image

from postergenre.data.decode import decode_poster
from postergenre.serving.limits import MAX_K, RETRY_AFTER_S
from postergenre.serving.schemas import SimilarResponse, error_responses
from postergenre.serving.state import Server

# Grid thumbnails: at most this many pixels on their longer side.
MAX_THUMBNAIL = 512
# Formats every browser shows: a poster in one of them that already fits is sent as it is.
_SHOWN_AS_IS = ("JPEG", "PNG", "GIF", "WEBP")
IMAGE_HEADERS = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}

router = APIRouter()
# What a client is told to wait before asking again while the index is being built.


def _thumbnail(path: FilePath, size: int) -> bytes | None:
    """The poster as a JPEG at most `size` pixels on its longer side (decoded reduced), or
    None when the file already fits and a browser shows it as it is (no work, no loss)."""
    try:
        with Image.open(path) as header:
            if max(header.size) <= size and header.format in _SHOWN_AS_IS:
                return None
    except (OSError, ValueError):
        pass  # decode_poster says what is wrong with it
    image = decode_poster(path, fit=(size, size))
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
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


def _no_index(server: Server) -> NoReturn:
    """Why there is no index to search: 503 while one is being built, else 404."""
    status = server.index_status.to_json()
    if status["state"] == "building":
        done, total = status["done"], status["total"]
        progress = f" ({done:,} of {total:,} posters)" if total else ""
        raise HTTPException(
            503,
            f"the poster index is still being built{progress}; try again shortly",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    if status["state"] == "failed":
        raise HTTPException(404, f"no poster index: building it failed: {status['message']}")
    raise HTTPException(404, "no poster index configured (start the server with one)")


@router.post(
    "/api/similar",
    response_model=SimilarResponse,
    summary="The most similar indexed posters",
    description="Cosine similarity of pretrained-backbone embeddings against the index "
    "the server was started with; 503 (with Retry-After) while it is still being built, 404 "
    "when it has none.",
    responses=error_responses(400, 404, 413, 415, 422, 503),
)
async def similar(
    request: Request,
    server: Server,
    file: Annotated[UploadFile, File(description="one poster image")],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="how many posters")] = 8,
) -> dict[str, Any]:
    index = server.index
    if index is None:
        _no_index(server)
    image = await server.uploads.image(file)
    vectors = await server.threads.run_slow(index.embed_images, [image])
    [neighbours] = index.search(vectors, k)
    root = request.scope.get("root_path", "").rstrip("/")
    results = [
        {
            "id": n.id,
            "name": n.name,
            "title": n.title,
            "genres": n.genres,
            "genres_are": "given" if n.labelled else "predicted",
            "similarity": round(n.similarity, 6),
            "image_url": f"{root}/api/poster/{n.position}",  # of `index`, whatever is served next
        }
        for n in neighbours
    ]
    return {"results": results}


@router.get(
    "/api/poster/{i}",
    response_class=FileResponse,
    summary="An indexed poster's image",
    description="The image file of the i-th poster of the index (only files the index "
    f"lists are ever served); `size` (at most {MAX_THUMBNAIL}): a JPEG thumbnail at most that "
    "many pixels on its longer side instead (the file itself when it already fits).",
    responses={
        200: {"content": {"image/*": {}}, "description": "The poster file"},
        **error_responses(404, 415, 422),
    },
)
async def poster(
    server: Server,
    i: Annotated[int, Path(description="position in the index")],
    size: Annotated[
        int | None, Query(ge=16, le=MAX_THUMBNAIL, description="thumbnail size in pixels")
    ] = None,
) -> Response:
    index = server.index
    if index is None or not 0 <= i < len(index):
        raise HTTPException(404, f"no indexed poster {i}")
    path = FilePath(index.items[i]["path"])
    if size is not None:
        if not path.is_file():
            raise HTTPException(404, f"poster {i} is not available")
        jpeg = await asyncio.to_thread(_thumbnail, path, size)
        if jpeg is not None:
            return Response(jpeg, media_type="image/jpeg", headers=IMAGE_HEADERS)
    media_type = await asyncio.to_thread(_image_media_type, path) if path.is_file() else None
    if media_type is None:
        raise HTTPException(404, f"poster {i} is not available")
    return FileResponse(path, media_type=media_type, headers=IMAGE_HEADERS)
