"""What the server is: liveness, the model it serves, and the micro-batcher's counters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from postergenre import __version__
from postergenre.serving.schemas import Health, Info, ModelInfo, Stats
from postergenre.serving.state import Server

router = APIRouter()


@router.get(
    "/healthz",
    response_model=Health,
    summary="Liveness check",
    description='Always `{"status": "ok"}` once the server is up.',
)
async def healthz() -> Health:
    return Health()


@router.get(
    "/api/model",
    response_model=ModelInfo,
    summary="The model being served",
    description="The bundle's model.json (architecture, task, genres, input, training "
    "and validation metrics), plus its name, runtime, thresholds and the server's limits.",
)
async def model_info(server: Server) -> dict[str, Any]:
    return server.model_info


@router.get(
    "/api/stats",
    response_model=Stats,
    summary="Micro-batcher counters",
    description="Batches run and posters predicted since start-up: `items / batches` is "
    "the mean batch size.",
)
async def stats(server: Server) -> dict[str, int]:
    return server.batcher.stats.to_json()


@router.get(
    "/api/info",
    response_model=Info,
    summary="The server and its poster index",
    description="The model's name, the version, and the poster index: `state` none (no "
    "index), building (`done` of `total` posters embedded), ready or failed (`message` says "
    "why); `size` posters are searchable now.",
)
async def info(server: Server) -> dict[str, Any]:
    return {
        "model": server.predictor.name,
        "version": __version__,
        "index": server.index_status.to_json(),
    }
