"""Request and response models of the collection API (/api/collection...)."""

from __future__ import annotations

from pydantic import BaseModel, Field

MAX_GENRES_PER_POSTER = 100


class CollectionTile(BaseModel):
    """One poster as the grid shows it."""

    position: int = Field(description="its position in the index (/api/poster/{position})")
    id: str
    name: str = Field(description="its title, else its file name as given")
    genres_top: list[tuple[str, float]] = Field(description="its 3 most probable genres")
    given: list[str] | None = Field(description="its labels; null in an unlabelled collection")
    corrected: list[str] | None = Field(description="the genres a person set; null if none")
    reviewed: bool


class CollectionPage(BaseModel):
    total: int = Field(description="posters matching the filters")
    offset: int
    limit: int
    items: list[CollectionTile]


class GenreScore(BaseModel):
    genre: str
    probability: float = Field(ge=0, le=1)
    threshold: float


class CollectionPoster(CollectionTile):
    """Everything about one poster of the collection."""

    title: str | None
    shown: str = Field(description="its path as given when it was indexed")
    probabilities: list[GenreScore] = Field(description="every genre, most probable first")
    predicted: list[str] = Field(description="the genres the model predicts (what accept takes)")
    reviewed_at: str | None = Field(description="when a person reviewed it (ISO 8601 UTC)")
    suggested: list[str] | None = Field(
        description="the genres a cross-validated model suggests (labelled collections)"
    )
    label_quality: float | None = Field(description="label quality in [0, 1]; low: suspect")


class GenresUpdate(BaseModel):
    genres: list[str] = Field(
        max_length=MAX_GENRES_PER_POSTER, description="the poster's genres (the model's names)"
    )


class CollectionNeighbour(BaseModel):
    position: int
    id: str
    name: str
    genres: list[str]
    similarity: float
    image_url: str


class CollectionSimilar(BaseModel):
    results: list[CollectionNeighbour] = Field(description="most similar first, itself left out")


class RetrainState(BaseModel):
    state: str = Field(description="idle, running, done or failed")
    started_at: str | None
    finished_at: str | None
    reviewed: int = Field(description="reviewed posters it trains on")
    model: str | None = Field(description="the new bundle's folder, once done")
    message: str | None


class CollectionInfo(BaseModel):
    """The collection, and which models are live."""

    size: int
    folder: str
    writable: bool = Field(description="false: corrections cannot be saved (read-only folder)")
    reviewed: int
    labelled: bool
    genres: list[str]
    model: str = Field(description="the model the server serves (predict, explain)")
    scores_model: str | None = Field(description="the model whose probabilities are shown")
    scores_current: bool = Field(description="false: an earlier model's probabilities")
    scores_note: str | None
    mislabelled: str = Field(
        description="label issues: pending, computing, ready, unlabelled, unavailable or failed"
    )
    mislabelled_message: str | None
    retrain: RetrainState
    min_reviewed_to_retrain: int
