"""A scored collection to look through and correct: filter, sort, search and page its posters.

`Collection` wraps a `PosterIndex` with one model's probabilities (`Scores`), the person's
corrections (`Corrections`) and, for a labelled collection, its label issues. Everything a page
query needs is computed once as NumPy arrays (each poster's top probability and top genres,
how near a decision threshold it is, its name in lower case, the orders of every sort), so a
query over 100,000 posters is a few vectorised passes; a correction updates only its own row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from postergenre.curation.corrections import Corrections
from postergenre.curation.scores import Scores, head_scores
from postergenre.errors import UserError
from postergenre.inference.similarity import META_FILE, PosterIndex
from postergenre.models.card import decide
from postergenre.paths import user_path

SORTS = ("confidence", "uncertain", "mislabelled", "name")
TOP_GENRES = 3


class UnknownGenre(UserError):
    """A genre the collection's model does not know."""


class NotAvailable(UserError):
    """A view the collection cannot offer (yet): e.g. label issues still being computed."""


class _ScoredView:
    """The arrays every query reads, derived from one model's scores."""

    def __init__(self, scores: Scores, current: bool, n: int):
        probs = np.asarray(scores.probabilities, dtype=np.float32)
        if probs.shape != (n, len(scores.genre_names)):
            raise ValueError("scores must be one row per poster, one column per genre")
        self.scores, self.current, self.probabilities = scores, current, probs
        self.top = np.argsort(-probs, axis=1, kind="stable")[:, :TOP_GENRES]
        self.top_p = np.take_along_axis(probs, self.top[:, :1], axis=1)[:, 0]
        # How near each decision is to flipping: the distance to a threshold ...
        self.margin = np.abs(probs - np.asarray(scores.thresholds, dtype=np.float32)[None, :])
        if scores.task == "single" and probs.shape[1] > 1:
            two = np.sort(probs, axis=1)[:, -2:]  # ... or, single-label, to the runner-up
            self.nearest = two[:, 1] - two[:, 0]
        else:
            self.nearest = self.margin.min(axis=1)
        self.orders: dict[tuple[str, int | None], np.ndarray] = {}

    def order(self, sort: str, genre: int | None) -> np.ndarray:
        """Every position in `confidence` or `uncertain` order (of `genre` when given)."""
        key = (sort, genre)
        if key not in self.orders:
            if sort == "confidence":
                values = -(self.top_p if genre is None else self.probabilities[:, genre])
            else:
                values = self.nearest if genre is None else self.margin[:, genre]
            self.orders[key] = np.argsort(values, kind="stable")
        return self.orders[key]


def _names(index: PosterIndex) -> list[str]:
    """What a person reads for each poster: its title, else its file name as given."""
    return [item["title"] or Path(item["shown"]).name for item in index.items]


class Collection:
    """The posters of `index` in `folder` (where corrections.csv lives), scored by `scores`."""

    def __init__(self, index: PosterIndex, folder: Path, scores: Scores, corrections: Corrections):
        self.index = index
        self.folder = Path(folder)
        self.corrections = corrections
        self.names = _names(index)
        # Searched with one vectorised substring test: title and file name, in lower case.
        self._search_text = np.array(
            [f"{it['title'] or ''}\n{Path(it['shown']).name}".casefold() for it in index.items]
        )
        self._name_order = np.argsort(np.array([n.casefold() for n in self.names]), kind="stable")
        self.labelled = np.array([bool(item["labelled"]) for item in index.items])
        self.reviewed = np.zeros(len(index), dtype=bool)
        self.reviewed[corrections.reviewed_positions()] = True
        self.quality: np.ndarray | None = None
        self.suggestions: Any = None  # LabelIssues, once computed
        self._mislabelled_order: np.ndarray | None = None
        self.set_scores(scores)

    def __len__(self) -> int:
        return len(self.index)

    # -- the model's view of the posters -----------------------------------------------------
    def set_scores(self, scores: Scores, current: bool = True) -> None:
        """Show `scores` (e.g. a retrained model's); `current=False` marks them as an earlier
        model's, kept because the new one could not score the collection. Safe while other
        threads query: the arrays are built aside and swapped in with one assignment."""
        self.view = _ScoredView(scores, current, len(self))

    @property
    def scores(self) -> Scores:
        """The probabilities shown, and the model that gave them."""
        return self.view.scores

    @property
    def genre_names(self) -> list[str]:
        return self.view.scores.genre_names

    def genre_index(self, name: str) -> int:
        """The column of a genre named in any case; `UnknownGenre` otherwise."""
        return _genre_index(self.genre_names, name)

    def predicted(self, i: int) -> list[str]:
        """The genres the model predicts for poster `i`, most probable first."""
        return _predicted(self.view.scores, i)

    # -- label issues ------------------------------------------------------------------------
    def set_label_issues(self, issues: Any) -> None:
        """Use label issues (`curation.label_issues.LabelIssues`) for the `mislabelled` sort."""
        quality = np.asarray(issues.quality, dtype=np.float64)
        if quality.shape != (len(self),):
            raise ValueError("label issues must have one quality score per poster")
        self.suggestions, self.quality = issues, quality
        # Lowest quality first; unlabelled posters (NaN) last.
        self._mislabelled_order = np.argsort(np.nan_to_num(quality, nan=np.inf), kind="stable")

    # -- queries -----------------------------------------------------------------------------
    def query(
        self,
        *,
        genre: str | None = None,
        min_p: float = 0.0,
        max_p: float = 1.0,
        q: str = "",
        sort: str = "confidence",
        reviewed: bool | None = None,
        offset: int = 0,
        limit: int = 48,
    ) -> tuple[int, list[int]]:
        """(how many posters match, the positions of the page `offset:offset+limit`).

        `genre` with `min_p`/`max_p` keeps posters whose probability of that genre (of their
        top genre when no genre is given) lies in the range; `q` keeps titles or file names
        that contain it (any case); `reviewed` keeps reviewed (True) or other (False) posters.
        `sort`: `confidence` (most probable first: of `genre` when given), `uncertain` (nearest
        a decision threshold first), `mislabelled` (lowest label quality first) or `name`."""
        view = self.view
        if sort not in SORTS:
            raise UserError(f"unknown sort {sort!r}: choose one of {', '.join(SORTS)}")
        j = _genre_index(view.scores.genre_names, genre) if genre else None
        if sort == "name":
            order = self._name_order
        elif sort == "mislabelled":
            if self._mislabelled_order is None:
                raise NotAvailable("likely mislabelled posters are not available yet")
            order = self._mislabelled_order
        else:
            order = view.order(sort, j)
        mask = np.ones(len(self), dtype=bool)
        if min_p > 0 or max_p < 1:
            values = view.top_p if j is None else view.probabilities[:, j]
            mask &= (values >= min_p) & (values <= max_p)
        if reviewed is not None:
            mask &= self.reviewed == reviewed
        if q.strip():
            mask &= np.char.find(self._search_text, q.strip().casefold()) >= 0
        hits = order[mask[order]]
        return len(hits), hits[offset : offset + limit].tolist()

    # -- one poster --------------------------------------------------------------------------
    def _given(self, i: int) -> list[str] | None:
        item = self.index.items[i]
        return list(item["genres"]) if item["labelled"] else None

    def tile(self, i: int, view: _ScoredView | None = None) -> dict[str, Any]:
        """What the grid shows of poster `i`."""
        view = view or self.view
        probs, names = view.probabilities[i], view.scores.genre_names
        correction = self.corrections.get(i)
        return {
            "position": i,
            "id": self.index.items[i]["id"],
            "name": self.names[i],
            "genres_top": [[names[j], round(float(probs[j]), 6)] for j in view.top[i]],
            "given": self._given(i),
            "corrected": list(correction.genres) if correction else None,
            "reviewed": correction is not None,
        }

    def detail(self, i: int) -> dict[str, Any]:
        """Everything about poster `i`: every probability, the given, predicted, corrected and
        suggested genres, and when it was reviewed."""
        view = self.view
        item, probs, scores = self.index.items[i], view.probabilities[i], view.scores
        correction = self.corrections.get(i)
        issues = self.suggestions
        return {
            **self.tile(i, view),
            "title": item["title"],
            "shown": item["shown"],
            "probabilities": [
                {
                    "genre": scores.genre_names[j],
                    "probability": round(float(probs[j]), 6),
                    "threshold": round(float(scores.thresholds[j]), 6),
                }
                for j in np.argsort(-probs, kind="stable")
            ],
            "predicted": _predicted(scores, i),
            "reviewed_at": correction.reviewed_at if correction else None,
            "suggested": issues.suggested(i) if issues is not None and self.labelled[i] else None,
            "label_quality": _finite(self.quality[i]) if self.quality is not None else None,
        }

    # -- corrections -------------------------------------------------------------------------
    def correct(self, i: int, genres: Sequence[str]) -> dict[str, Any]:
        """Set poster `i`'s genres (names of the model's genres, any case) and save at once."""
        names = [self.genre_names[self.genre_index(g)] for g in genres]
        self.corrections.set(i, names)
        self.reviewed[i] = True
        return self.detail(i)

    def accept(self, i: int) -> dict[str, Any]:
        """Accept the genres the model predicts for poster `i`, as shown, and save at once."""
        return self.correct(i, self.predicted(i))


def _genre_index(genre_names: Sequence[str], name: str) -> int:
    wanted = name.strip().casefold()
    for j, genre in enumerate(genre_names):
        if genre.casefold() == wanted:
            return j
    raise UnknownGenre(f"unknown genre {name!r}; the model knows: {', '.join(genre_names)}")


def _predicted(scores: Scores, i: int) -> list[str]:
    row = scores.probabilities[i]
    mask = decide(row, scores.task, scores.thresholds)
    return [scores.genre_names[j] for j in np.argsort(-row, kind="stable") if mask[j]]


def _finite(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 6)


# -- opening one ---------------------------------------------------------------------------------
COLLECTION_INDEX = ".postergenre-index"  # a plain poster folder's index, inside it


class NotIndexed(UserError):
    """A poster folder with no index yet."""


def resolve_collection(path: str | Path) -> Path:
    """The index folder of a collection: `path` itself when it is an index (written by
    `postergenre index`), else `path/.postergenre-index` when that is one; `NotIndexed` (with
    the command that indexes it) for a plain poster folder."""
    folder = user_path(path)
    if (folder / META_FILE).is_file():
        return folder
    inner = folder / COLLECTION_INDEX
    if (inner / META_FILE).is_file():
        return inner
    if not folder.is_dir():
        raise UserError(f"collection not found: {folder}")
    raise NotIndexed(
        f"{folder} is not indexed yet",
        hint=f"index it first: postergenre index --folder {folder} --out {inner}",
    )


def open_collection(
    folder: str | Path,
    predictor: Any,
    *,
    index: PosterIndex | None = None,
    cache_dir: Path | None = None,
    writable: bool | None = None,
) -> Collection:
    """The collection in index folder `folder` (see `resolve_collection`; `index`: the index
    already loaded from it), scored by the probabilities its index stores, else by `predictor`
    over the posters' cached embeddings. Its corrections.csv is read back when it exists;
    `writable=False` opens it read-only (None: whether the folder takes a file)."""
    folder = resolve_collection(folder)
    index = index if index is not None else PosterIndex.load(folder)
    if index.probabilities is not None:
        # The index does not store its model's task: its own decision rule is the thresholds'.
        task = predictor.task if index.model == predictor.name else "multi"
        scores = Scores.of_index(index, task)
    else:
        found, why = head_scores(predictor, index, cache_dir)
        if found is None:
            raise UserError(
                f"the index in {folder} holds no genre probabilities and {why}",
                hint="rebuild it with 'postergenre index', or serve a model over its "
                f"embeddings (e.g. --model imdb-20-fast for {index.arch})",
            )
        scores = found
    corrections = Corrections(folder, index.items, writable=writable)
    return Collection(index, folder, scores, corrections)
