"""Grad-CAM: where the model found evidence for a genre, drawn over the poster."""

from __future__ import annotations

import asyncio
import io
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote

from fastapi import APIRouter, File, HTTPException, Query, UploadFile
from fastapi.responses import Response
from PIL import Image

from postergenre.errors import UserError
from postergenre.serving.schemas import error_responses
from postergenre.serving.state import Server

if TYPE_CHECKING:
    from postergenre.explain.gradcam import Explanation

# The overlay PNG is for display; a 4000-pixel poster need not come back at full size.
OVERLAY_MAX_SIDE = 1024

router = APIRouter()


def _encode_png(image: Image.Image) -> bytes:
    """The overlay as PNG (explanations already draw it at most OVERLAY_MAX_SIDE on a side)."""
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


@router.post(
    "/api/explain",
    response_class=Response,
    summary="Grad-CAM heatmap of a genre",
    description="The poster with a heatmap of where the model found evidence for `genre` "
    "(default: its top genre), as a PNG at most "
    f"{OVERLAY_MAX_SIDE} pixels on a side. Headers `X-Genre` (URL-encoded) and "
    "`X-Probability` say which genre and how probable.",
    responses={
        200: {"content": {"image/png": {}}, "description": "The overlay image"},
        **error_responses(400, 404, 413, 415, 422, 503),
    },
)
async def explain(
    server: Server,
    file: Annotated[UploadFile, File(description="one poster image")],
    genre: Annotated[str | None, Query(max_length=200, description="a genre of the model")] = None,
) -> Response:
    predictor = server.predictor
    predictor.check_explainable()  # a graph-only model: one JSON error, before the upload is read
    if genre is not None:
        try:
            genre = predictor.genres[predictor.card.find_genre(genre)]
        except UserError as exc:
            raise HTTPException(404, str(exc)) from None
    image = await server.uploads.image(file)
    explanation = await server.threads.run_slow(predictor.explain, image, genre, OVERLAY_MAX_SIDE)
    return await overlay_response(explanation)


async def overlay_response(explanation: Explanation) -> Response:
    """An explanation's overlay as the PNG response both explain routes give."""
    png = await asyncio.to_thread(_encode_png, explanation.overlay)
    headers = {
        "X-Genre": quote(explanation.genre),
        "X-Probability": f"{explanation.probability:.6f}",
        "Cache-Control": "no-store",
    }
    return Response(png, media_type="image/png", headers=headers)
