"""Build or update a similar-poster index: `build_index(...)` is what `postergenre index` does.

Any posters `predict` takes (files, folders, globs, label CSVs, lists of paths) or labelled
records make a collection. Each poster is embedded with the index's backbone (through the
embedding cache) and, unless `model=None`, scored by a model, whose probabilities are stored
beside its embedding: the genres shown for posters without labels.

Given the `previous` index of the same folder, only new or changed posters are embedded and
scored: a poster whose resolved path, size and modification time match an item of the previous
index keeps its vector and probabilities; items whose files are no longer listed are dropped.
A previous index of another backbone or model is not reused at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from postergenre.console import report_skipped, warn
from postergenre.data.metadata import PosterTitles
from postergenre.data.records import PosterCollection, PosterRecord
from postergenre.data.sources import PosterFiles, find_posters
from postergenre.errors import UserError
from postergenre.models import get_arch
from postergenre.models.catalog import DEFAULT_MODEL

if TYPE_CHECKING:
    from postergenre.inference.predictor import Predictor
    from postergenre.inference.similarity import PosterIndex

Posters = (
    PosterCollection | Sequence[PosterRecord] | str | Path | Sequence[str | Path] | PosterFiles
)
ProgressCallback = Callable[[int, int], None]
# With a progress callback (the server's background build), posters are embedded and scored
# this many at a time, so the callback hears of each step.
CHUNK = 256


@dataclass
class IndexChanges:
    """What a build did: posters embedded (`new`, `changed`), dropped, reused, unreadable."""

    new: int = 0
    changed: int = 0
    removed: int = 0
    kept: int = 0
    skipped: int = 0
    rebuilt: str | None = None  # why a previous index was not reused

    def describe(self) -> str:
        """One line: "12 new, 3 removed, 4,988 kept" (changed and unreadable when any)."""
        parts = [f"{self.new:,} new"]
        if self.changed:
            parts.append(f"{self.changed:,} changed")
        parts += [f"{self.removed:,} removed", f"{self.kept:,} kept"]
        if self.skipped:
            parts.append(f"{self.skipped:,} unreadable skipped")
        return ", ".join(parts)


def _file_identity(path: Path) -> tuple[int | None, int | None]:
    try:
        stat = path.stat()
    except (OSError, ValueError):
        return None, None  # the embedding pass says why it cannot be read
    return stat.st_size, stat.st_mtime_ns


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def collection_items(posters: Posters, titles: PosterTitles | None = None) -> list[dict[str, Any]]:
    """One index item (without its vector) per poster: labelled records keep their id and
    genres; posters named by source are unlabelled, their id the file stem (the path as given
    where two share a stem). A file named twice is one item."""
    if isinstance(posters, PosterCollection):
        posters = posters.records
    records: list[PosterRecord] | None = None
    if isinstance(posters, Sequence) and posters and isinstance(posters[0], PosterRecord):
        records = list(posters)  # type: ignore[arg-type]
    elif not isinstance(posters, PosterFiles):
        posters = find_posters(posters)  # type: ignore[arg-type]
    if records is None:
        assert isinstance(posters, PosterFiles)
        records = [PosterRecord(p.stem, p, ()) for p in posters.paths]
        labelled = False
        stems: dict[str, int] = {}
        for r in records:
            stems[r.id] = stems.get(r.id, 0) + 1
    else:
        labelled = True
    items: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for r in records:
        path = _resolved(Path(r.path))
        if path in seen:
            continue
        seen.add(path)
        size, mtime_ns = _file_identity(path)
        poster_id = r.id if labelled or stems[r.id] == 1 else str(r.path)
        items.append(
            {
                "id": poster_id,
                "path": str(path),
                "shown": str(r.path),
                "title": titles.title(poster_id, path) if titles is not None else None,
                "genres": list(r.genres),
                "labelled": labelled,
                "size": size,
                "mtime_ns": mtime_ns,
            }
        )
    return items


def load_predictor(
    model: str | Path | Predictor | None, runtime: str = "auto", cache_dir: Path | None = None
) -> Predictor | None:
    """The model that scores the collection: a `Predictor`, a bundled name or a bundle path
    (loaded here), or None for no scores."""
    from postergenre.inference.predictor import Predictor

    if model is None or isinstance(model, Predictor):
        return model
    return Predictor.from_pretrained(model, runtime, cache_dir)


def _reusable(
    previous: PosterIndex | None, arch: str, predictor: Predictor | None
) -> tuple[dict[str, int], str | None]:
    """{resolved path: position} of the previous index's items that may be reused, or why
    none may."""
    if previous is None:
        return {}, None
    if previous.arch != arch:
        return {}, f"it holds {previous.arch} embeddings, not {arch}"
    if predictor is not None and previous.model_digest != predictor.digest:
        was = f"model {previous.model}" if previous.model else "no model's probabilities"
        return {}, f"it holds {was}, not model {predictor.name}"
    return {item["path"]: i for i, item in enumerate(previous.items)}, None


def _unchanged(item: dict[str, Any], old: dict[str, Any]) -> bool:
    return item["size"] is not None and (item["size"], item["mtime_ns"]) == (
        old.get("size"),
        old.get("mtime_ns"),
    )


def build_index(
    posters: Posters,
    *,
    arch: str = "efficientnet-lite0",
    model: str | Path | Predictor | None = DEFAULT_MODEL,
    runtime: str = "auto",
    previous: PosterIndex | None = None,
    titles: PosterTitles | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> PosterIndex:
    """An index of `posters` (sources or labelled records; see `collection_items`) embedded
    with `arch` and scored by `model` (a name, a bundle path, a `Predictor`, or None), reusing
    what it can of `previous` (see the module docstring). `index.changes` says what was done;
    `on_progress(done, total)` hears of the posters embedded so far."""
    from postergenre.engines.ray_cluster import check_engine
    from postergenre.inference.similarity import PosterIndex

    check_engine(engine, address)
    arch = get_arch(arch).embedding_arch or arch
    items = collection_items(posters, titles)
    if not items:
        raise UserError("no posters to index")
    predictor = load_predictor(model, runtime, cache_dir)
    reuse, rebuilt = _reusable(previous, arch, predictor)
    if rebuilt is not None:
        warn(f"the existing index is built whole again: {rebuilt}")
    changes = IndexChanges(rebuilt=rebuilt)
    listed = {item["path"] for item in items}
    changes.removed = sum(path not in listed for path in reuse)
    todo = []
    for i, item in enumerate(items):
        old = reuse.get(item["path"])
        if old is None:
            changes.new += 1
            todo.append(i)
        elif not _unchanged(item, previous.items[old]):  # type: ignore[union-attr]
            changes.changed += 1
            todo.append(i)
    changes.kept = len(items) - len(todo)
    embedded = set(todo)
    shown = [Path(items[i]["shown"]) for i in todo]
    scored = _embed_and_score(
        shown, arch, predictor, cache_dir, progress, engine, address, workers, on_progress
    )
    computed = {todo[j]: row for j, row in scored.items()}
    changes.skipped = len(todo) - len(computed)
    dim = previous.vectors.shape[1] if reuse and previous is not None else 0
    vectors, probabilities, kept = [], [], []
    for i, item in enumerate(items):
        if i in computed:
            vector, probs = computed[i]
        elif i not in embedded:
            old = reuse[item["path"]]
            vector = previous.vectors[old]  # type: ignore[union-attr]
            probs = None if predictor is None else previous.probabilities[old]  # type: ignore[union-attr]
        else:
            continue  # unreadable
        vectors.append(vector)
        probabilities.append(probs)
        kept.append(item)
        dim = len(vector)
    if not kept:
        raise UserError("no readable posters to index")
    index = PosterIndex(
        arch,
        kept,
        np.stack(vectors).reshape(len(kept), dim),
        probabilities=None if predictor is None else np.stack(probabilities),
        genre_names=None if predictor is None else predictor.genres,
        thresholds=None if predictor is None else [float(t) for t in predictor.thresholds],
        model=None if predictor is None else predictor.name,
        model_digest=None if predictor is None else predictor.digest,
    )
    index.changes = changes
    return index


def _embed_and_score(
    paths: list[Path],
    arch: str,
    predictor: Predictor | None,
    cache_dir: Path | None,
    progress: bool,
    engine: str,
    address: str | None,
    workers: int | None,
    on_progress: ProgressCallback | None,
) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
    """{position in `paths`: (embedding, probabilities or None)} of the readable posters;
    unreadable ones are reported on stderr. In chunks of `CHUNK` when `on_progress` is given."""
    out: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    step = CHUNK if on_progress is not None else max(len(paths), 1)
    skipped: dict[int, str] = {}
    if on_progress is not None:
        on_progress(0, len(paths))
    for start in range(0, len(paths), step):
        part = paths[start : start + step]
        vectors = _embeddings(arch, part, cache_dir, progress, engine, address, workers)
        skipped.update((start + j, reason) for j, reason in vectors.errors.items())
        ok = [int(j) for j in vectors.ok]
        scores: dict[str, np.ndarray] = {}
        if predictor is not None and ok:
            scores = _scores(predictor, [part[j] for j in ok], progress, workers, on_progress)
        for j in ok:
            probs = scores.get(str(part[j])) if predictor is not None else None
            if predictor is not None and probs is None:
                continue  # it could not be read a second time (changed meanwhile)
            out[start + j] = (np.asarray(vectors[j], dtype=np.float32), probs)
        if on_progress is not None:
            on_progress(min(start + step, len(paths)), len(paths))
    report_skipped(skipped)
    return out


def _embeddings(
    arch: str,
    paths: list[Path],
    cache_dir: Path | None,
    progress: bool,
    engine: str,
    address: str | None,
    workers: int | None,
) -> Any:
    from postergenre.models.embeddings import compute_embeddings

    if engine == "ray":
        from postergenre.engines.ray import ray_embeddings

        return ray_embeddings(arch, paths, cache_dir, progress, address=address, workers=workers)
    return compute_embeddings(arch, paths, cache_dir, progress)


def _scores(
    predictor: Predictor,
    paths: list[Path],
    progress: bool,
    workers: int | None,
    on_progress: ProgressCallback | None,
) -> dict[str, np.ndarray]:
    """{path: probabilities}: through the decode cache the embedding pass just filled (the
    same input size for the bundled models), so posters are decoded once for both."""
    # In chunks (a background build) one decoding thread is enough: the posters are cached.
    chunk_workers = 0 if on_progress is not None else workers
    predictions = predictor.predict(
        PosterFiles(paths, single=False), cache=True, workers=chunk_workers, progress_bar=progress
    )
    return dict(zip(predictions.paths, predictions.probabilities, strict=True))


class IndexOutputError(UserError):
    """`--out` names something an index cannot replace."""

    hint = "name a new folder, an empty one, or an existing index"


def check_index_output(out: str | Path) -> bool:
    """Whether an index is already at `out` (False: nothing there, or an empty folder). A
    file, or a folder of other things, is refused: writing the index would replace it."""
    from postergenre.inference.similarity import META_FILE

    out = Path(out)
    try:
        if not out.exists():
            return False
        if not out.is_dir():
            raise IndexOutputError(f"{out} is a file, not an index folder")
        if (out / META_FILE).exists():
            return True
        if any(out.iterdir()):
            raise IndexOutputError(f"{out} is a folder that is not a poster index")
        return False
    except OSError as exc:
        raise IndexOutputError(f"cannot read {out}: {exc.strerror or exc}") from None


def previous_index(out: str | Path) -> PosterIndex | None:
    """The index already at `out`, to update (see `check_index_output`); None when there is
    none, or when it cannot be read (then one warning says it is built whole)."""
    from postergenre.inference.similarity import PosterIndex

    if not check_index_output(out):
        return None
    try:
        return PosterIndex.load(Path(out))
    except Exception as exc:  # any damage at all: it is rebuilt, never trusted
        warn(f"the index in {out} cannot be read ({exc}); building it whole")
        return None
