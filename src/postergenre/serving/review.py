"""A collection under review in the server, and its background work: label issues computed
at start-up, and retraining from the corrections, after which the server serves the new model.

Both run in daemon threads, so the page stays responsive; their results are swapped in with
single assignments on the event loop, so a request sees the old state or the new, never half.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from postergenre.curation.collection import Collection, NotAvailable
from postergenre.curation.corrections import utc_now
from postergenre.curation.scores import head_scores
from postergenre.errors import UserError
from postergenre.training.retrain import MIN_REVIEWED

log = logging.getLogger("postergenre.serving")

# The retrain's own floor (some reviewed posters are held out to calibrate and measure it).
MIN_REVIEWED_TO_RETRAIN = MIN_REVIEWED
MODELS_FOLDER = "models"  # retrained bundles, inside the collection folder


class RetrainRunning(UserError):
    """A retrain was asked for while one runs."""


class TooFewReviewed(UserError):
    """Too few reviewed posters to retrain from."""


def _label_issues_finder() -> Any:
    """`curation.label_issues.find_label_issues`, or None where this version lacks it."""
    try:
        from postergenre.curation.label_issues import find_label_issues
    except ImportError:
        return None
    return find_label_issues


def _retrain_function() -> Any:
    """`training.retrain.retrain_from_corrections`, or None where this version lacks it."""
    try:
        from postergenre.training.retrain import retrain_from_corrections
    except ImportError:
        return None
    return retrain_from_corrections


@dataclass
class RetrainStatus:
    """Where retraining stands: idle, running, done or failed."""

    state: str = "idle"
    started_at: str | None = None
    finished_at: str | None = None
    reviewed: int = 0
    model: str | None = None  # the new bundle's folder, once done
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ReviewSession:
    """The collection the server opened, how far its label issues and retraining are, and
    whether the model that scored it is the one served."""

    collection: Collection
    cache_dir: Path | None = None
    issues_state: str = "pending"  # pending, computing, ready, unlabelled, unavailable, failed
    issues_message: str | None = None
    retrain: RetrainStatus = field(default_factory=RetrainStatus)
    scores_note: str | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- label issues ------------------------------------------------------------------------
    def start(self) -> None:
        """At start-up (on the event loop, or in the thread that opened the collection):
        compute label issues in the background."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the loop: start_retrain takes it when a retrain starts
            self._loop = None
        collection = self.collection
        if collection.quality is not None:  # given with the collection
            self.issues_state = "ready"
            return
        if not collection.labelled.any():
            self.issues_state = "unlabelled"
            self.issues_message = "the collection has no labels to check"
            return
        find = _label_issues_finder()
        if find is None:
            self.issues_state = "unavailable"
            self.issues_message = "finding likely mislabelled posters is not available yet"
            return
        self.issues_state = "computing"
        threading.Thread(
            target=self._label_issues, args=(find,), name="postergenre-label-issues", daemon=True
        ).start()

    def _label_issues(self, find: Any) -> None:
        collection = self.collection
        index = collection.index
        labels = [list(item["genres"]) for item in index.items]
        try:
            issues = find(index.vectors, labels, collection.labelled, collection.genre_names)
            collection.set_label_issues(issues)
        except UserError as exc:
            self.issues_state, self.issues_message = "failed", exc.one_line()
            return
        except Exception:
            log.exception("finding label issues failed")
            self.issues_state, self.issues_message = "failed", "label issues failed (see log)"
            return
        self.issues_state, self.issues_message = "ready", None

    def check_mislabelled(self) -> None:
        """`NotAvailable` (saying why) unless the `mislabelled` sort can be offered."""
        if self.issues_state != "ready":
            message = {
                "pending": "likely mislabelled posters are not computed yet",
                "computing": "likely mislabelled posters are still being computed; try again "
                "in a moment",
            }.get(self.issues_state, self.issues_message or "not available")
            raise NotAvailable(message)

    # -- retraining --------------------------------------------------------------------------
    def start_retrain(self, server: Any) -> RetrainStatus:
        """Start retraining from the corrections in the background (`RetrainRunning` while
        one runs, `TooFewReviewed`, `NotAvailable` where this version cannot retrain)."""
        collection = self.collection
        if not collection.corrections.writable:
            raise NotAvailable(
                f"the collection folder {collection.folder} is read-only: nowhere to write "
                "the retrained model"
            )
        retrain = _retrain_function()
        if retrain is None:
            raise NotAvailable("retraining from corrections is not available yet")
        reviewed = len(collection.corrections)
        if reviewed < MIN_REVIEWED_TO_RETRAIN:
            raise TooFewReviewed(
                f"{reviewed} reviewed posters; retraining needs at least "
                f"{MIN_REVIEWED_TO_RETRAIN} (accept or correct more first)"
            )
        with self._lock:
            if self.retrain.state == "running":
                raise RetrainRunning("a retrain is already running")
            self.retrain = RetrainStatus("running", utc_now(), reviewed=reviewed)
        self._loop = asyncio.get_running_loop()
        threading.Thread(
            target=self._retrain, args=(retrain, server), name="postergenre-retrain", daemon=True
        ).start()
        return self.retrain

    def _retrain(self, retrain: Any, server: Any) -> None:
        from postergenre.inference.predictor import Predictor
        from postergenre.serving.model_threads import warm_up

        collection, old = self.collection, server.predictor
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = collection.folder / MODELS_FOLDER / stamp
        try:
            path = retrain(
                collection.corrections.path,
                out,
                arch=collection.index.arch,
                init_from=str(old.folder) if old.folder is not None else old.name,
                cache_dir=self.cache_dir,
            )
            new = Predictor.from_pretrained(path, old.runtime, old.cache_dir)
            warm_up(new, None)  # loads it now: a bundle that cannot load fails here
            scores, why = head_scores(new, collection.index, self.cache_dir)
        except UserError as exc:
            self._finish("failed", exc.one_line())
            return
        except Exception:
            log.exception("retraining failed")
            self._finish("failed", "retraining failed (see the server log)")
            return

        def swap() -> None:
            server.use_predictor(new)
            if scores is not None:
                collection.set_scores(scores)
                self.scores_note = None
            else:
                collection.set_scores(collection.scores, current=False)
                self.scores_note = f"probabilities are still {collection.scores.model}'s: {why}"
            self._finish("done", f"now serving {new.name}", model=str(path))

        assert self._loop is not None
        self._loop.call_soon_threadsafe(swap)

    def _finish(self, state: str, message: str, model: str | None = None) -> None:
        status = self.retrain
        self.retrain = RetrainStatus(
            state, status.started_at, utc_now(), status.reviewed, model, message
        )

    # -- what the page shows -----------------------------------------------------------------
    def info(self, served: str) -> dict[str, Any]:
        """The collection's size, folder, writability, and which models are live."""
        collection = self.collection
        scores = collection.scores
        return {
            "size": len(collection),
            "folder": str(collection.folder),
            "writable": collection.corrections.writable,
            "reviewed": len(collection.corrections),
            "labelled": bool(collection.labelled.any()),
            "genres": scores.genre_names,
            "model": served,
            "scores_model": scores.model,
            "scores_current": collection.view.current,
            "scores_note": self.scores_note,
            "mislabelled": self.issues_state,
            "mislabelled_message": self.issues_message,
            "retrain": self.retrain.to_json(),
            "min_reviewed_to_retrain": MIN_REVIEWED_TO_RETRAIN,
        }
