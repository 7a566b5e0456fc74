"""The API's request and response models, as the OpenAPI schema shows them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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
    name: str = Field(description="the poster's title, else its file name")
    title: str | None = None
    genres: list[str]
    genres_are: str = Field(
        description="'given' (the collection's labels) or 'predicted' (by the index's model)"
    )
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
    explain: bool = Field(
        True,
        description="whether /api/explain answers: Grad-CAM needs a bundle's PyTorch "
        "weights, which an exported .onnx model has not",
    )
    architecture: str | None = None
    task: str = Field(description="single (softmax) or multi (sigmoid + per-genre thresholds)")
    genres: list[str]
    thresholds: dict[str, float] | None = None
    server: ServerInfo


class IndexInfo(BaseModel):
    """The poster index: built in the background when the server was started with posters."""

    state: str = Field(description="none, building, ready or failed")
    done: int = Field(description="posters embedded so far (while building)")
    total: int = Field(description="posters to embed (while building)")
    message: str
    size: int = Field(description="posters in the index served now (0: none yet)")


class Info(BaseModel):
    """The server at a glance; the page polls it while the index is built."""

    model: str
    version: str
    index: IndexInfo


class Health(BaseModel):
    status: str = "ok"


class Stats(BaseModel):
    """What the micro-batcher has done since start-up."""

    batches: int
    items: int
    largest_batch: int
    failed_batches: int


_ERROR_DESCRIPTIONS = {
    400: "No file, an empty file, or a malformed upload",
    404: "Not found",
    413: "Upload over the size limit",
    415: "Not an image, a truncated or corrupt image, or too many pixels",
    409: "Not possible in the server's present state (e.g. a read-only collection)",
    422: "Invalid parameters",
    501: "Not supported by this model",
    503: "The server is shutting down, or its poster index is still being built",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` entries of a route's error statuses (all `ErrorResponse`)."""
    return {c: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[c]} for c in codes}
