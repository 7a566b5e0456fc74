"""What the routes share, kept on `app.state.server`, and the dependency that hands it to them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request

from postergenre import __version__
from postergenre.console import warn
from postergenre.data.decode import POSTER_FORMATS
from postergenre.errors import UserError
from postergenre.inference.predictor import Predictor
from postergenre.inference.similarity import PosterIndex
from postergenre.serving.batcher import MicroBatcher
from postergenre.serving.index_job import IndexJob, IndexStatus
from postergenre.serving.model_threads import ModelThreads
from postergenre.serving.review import ReviewSession
from postergenre.serving.uploads import UploadDecoder


@dataclass
class ServerState:
    """The model, its index, and the machinery the routes run them with. `index` is None
    while a first index is being built (`index_job`, started with the app); `index_status`
    says how far that is."""

    predictor: Predictor
    index: PosterIndex | None
    batcher: MicroBatcher
    uploads: UploadDecoder
    max_files: int
    warmup: bool = True
    threads: ModelThreads = field(default_factory=ModelThreads)
    index_job: IndexJob | None = None
    index_status: IndexStatus = field(default_factory=IndexStatus)
    collection: ReviewSession | None = None  # the collection under review (serve --collection)
    # The index folder `index_job` builds, opened as the collection each time it hands one over.
    collection_folder: Path | None = None
    # Built once: /api/model's answer, and each indexed poster's position for its image URL.
    collection_error: str | None = None
    model_info: dict[str, Any] = field(init=False)
    positions: dict[tuple[str, str], int] = field(init=False)

    def __post_init__(self) -> None:
        self.model_info = self._model_info()
        self.positions = {}
        if self.index is not None:
            self.set_index(self.index)

    def set_index(self, index: PosterIndex) -> None:
        """Serve `index` from now on (the background build hands over each index it has)."""
        self.positions = {(item["id"], item["path"]): i for i, item in enumerate(index.items)}
        self.index = index
        self.model_info["server"].update(similar=True, index_size=len(index))
        if self.index_job is None:
            self.index_status.set(state="ready", size=len(index), message="")
        if self.collection_folder is not None:
            self._open_collection(index)

    def _open_collection(self, index: PosterIndex) -> None:
        """Open the collection in `collection_folder` on `index` (from the index job's thread);
        a refusal is logged and the page keeps saying why there is none."""
        from postergenre.curation.collection import open_collection

        assert self.collection_folder is not None
        try:
            opened = open_collection(
                self.collection_folder,
                self.predictor,
                index=index,
                cache_dir=self.predictor.cache_dir,
            )
        except UserError as exc:
            self.collection_error = exc.one_line()
            warn(f"the collection could not be opened: {self.collection_error}")
            return
        session = ReviewSession(opened, cache_dir=self.predictor.cache_dir)
        session.start()
        self.collection = session  # one assignment: a request sees the old session or the new

    def use_predictor(self, predictor: Predictor) -> None:
        """Serve `predictor` from now on (a retrained model); call on the event loop."""
        self.predictor = predictor
        self.batcher.predict = predictor.predict_pixels
        self.model_info = self._model_info()

    def _model_info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.predictor.card.to_json()
        info["name"] = self.predictor.name
        info["runtime"] = self.predictor.runtime
        info["explain"] = self.predictor.has_weights  # Grad-CAM needs PyTorch weights
        info["server"] = {
            "max_upload_bytes": self.uploads.max_upload_bytes,
            "max_files": self.max_files,
            "formats": list(POSTER_FORMATS),
            "similar": self.index is not None,
            "index_size": len(self.index) if self.index is not None else 0,
            "version": __version__,
        }
        return info


def _server_state(request: Request) -> ServerState:
    return request.app.state.server


Server = Annotated[ServerState, Depends(_server_state)]
"""A route parameter of this type receives the app's `ServerState`."""
