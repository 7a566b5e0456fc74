"""Genres of uploaded posters: pooled into batches, or on the slow-work thread for models that
read poster text."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, UploadFile

from postergenre.serving.schemas import PredictResponse, error_responses
from postergenre.serving.state import Server


async def predict(
    server: Server,
    files: Annotated[
        list[UploadFile], File(description="poster images (JPEG, PNG, WebP, GIF, ...)")
    ],
) -> dict[str, Any]:
    predictor = server.predictor
    names = [f.filename or "upload" for f in files]
    uploads = await server.uploads.read_all(files)
    pixels = await asyncio.gather(
        *(
            server.uploads.pixels(data, name, predictor.preprocess)
            for data, name in zip(uploads, names, strict=True)
        )
    )
    if predictor.card.reads_text:
        # OCR costs about a second a poster: the slow-work thread reads and predicts, so the
        # batcher never waits on it (batching would save nothing next to OCR).
        probs = list(await server.threads.run_slow(predictor.predict_pixels, np.stack(pixels)))
    else:
        probs = await asyncio.gather(*(server.batcher.submit(p) for p in pixels))
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


def router(max_files: int, max_batch: int) -> APIRouter:
    """The predict route, its docs quoting this server's limits."""
    predict_router = APIRouter()
    predict_router.add_api_route(
        "/api/predict",
        predict,
        methods=["POST"],
        response_model=PredictResponse,
        summary="Genres of one or more posters",
        description=f"Multipart field `files` (repeat it for several posters, at most "
        f"{max_files}). Concurrent requests are pooled into batches of up to {max_batch}.",
        responses=error_responses(400, 413, 415, 422, 503),
    )
    return predict_router
