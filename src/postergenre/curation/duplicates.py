"""Groups of the same poster in a collection: exact copies, resized or recompressed versions,
crops and borders, and near-identical variants (mirrored, other text).

Two cheap signals find candidate pairs: a perceptual hash (`fingerprints`; a resized,
recompressed or framed copy hashes within a few bits, a mirrored copy matches the mirror
image's hash) and the cosine similarity of frozen-backbone embeddings (the cached ones the
similar-poster index uses; a crop, new text or a flip keeps them close). Pairs are joined into
groups, and every group is then checked *complete-link*: each pair of its members must match on
its own, so a chain of look-alikes (a film series, a studio's house style) never merges into
one huge group. See BENCHMARKS.md for how the defaults were chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from postergenre.console import report_skipped
from postergenre.errors import UserError

if TYPE_CHECKING:  # numpy, Pillow and the cache load when work starts: `--help` stays quick
    import numpy as np

KINDS = ("exact", "same image", "variant")
DEFAULT_ARCH = "efficientnet-lite0"
# Tuned on the validation half of benchmarks/duplicates.py (BENCHMARKS.md).
DEFAULT_SIMILARITY = 0.88
DEFAULT_HASH_DISTANCE = 12
DEFAULT_NEIGHBOURS = 20
# A hash match counts only when the embeddings agree this much too: unrelated posters whose
# 64-bit hashes happen to be 10-12 bits apart sit at cosine 0.6-0.7 in the shared set, and
# planted resized, recompressed and framed copies almost all above 0.75.
DEFAULT_HASH_CONFIRM = 0.7
# Complete-link checking costs (group size)^2: a larger connected set means a far too low
# threshold, refused rather than clustered for minutes.
MAX_COMPONENT = 20_000


@dataclass
class DuplicateMember:
    """One poster of a group."""

    id: str
    path: str
    shown: str
    title: str | None = None
    width: int = 0
    height: int = 0
    bytes: int = 0

    @property
    def name(self) -> str:
        """What a person reads: the title, else the file name as the user gave it."""
        return self.title or Path(self.shown).name

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "shown": self.shown,
            "title": self.title,
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
        }


@dataclass
class DuplicateGroup:
    """Posters that are the same poster. `kind` is the weakest match between two members
    (`exact`: identical bytes; `same image`: perceptual hashes within the distance; `variant`:
    only the embeddings, or the mirror image's hash, match); `similarity` is the lowest cosine
    similarity of two members' embeddings. Members come largest first (pixels, then bytes)."""

    members: list[DuplicateMember]
    kind: str
    similarity: float

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "similarity": round(self.similarity, 6),
            "size": len(self.members),
            "members": [m.to_json() for m in self.members],
        }


@dataclass
class Fingerprints:
    """What grouping needs of a collection: one entry per readable poster."""

    arch: str
    items: list[dict[str, Any]]  # id, path, shown, title
    vectors: np.ndarray  # (n, d) L2-normalised embeddings
    rows: np.ndarray  # (n, fp.ROW_BYTES) fingerprint rows
    has_hash: np.ndarray  # (n,) bool: False where the file could not be hashed
    skipped: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class Thresholds:
    """When two posters match: embeddings at least `similarity` apart in cosine, or
    perceptual hashes at most `hash_distance` bits apart (of 64). `neighbours`: how many
    nearest embeddings of each poster are candidates (a group larger than this still forms
    through hashes and shared neighbours); a hash match needs a cosine of `hash_confirm`."""

    similarity: float = DEFAULT_SIMILARITY
    hash_distance: int = DEFAULT_HASH_DISTANCE
    neighbours: int = DEFAULT_NEIGHBOURS
    hash_confirm: float = DEFAULT_HASH_CONFIRM

    def __post_init__(self) -> None:
        if not -1.0 <= self.similarity <= 1.0:
            raise UserError(f"similarity threshold {self.similarity} is not between -1 and 1")
        if not 0 <= self.hash_distance <= 64:
            raise UserError(f"hash distance {self.hash_distance} is not between 0 and 64")
        if not -1.0 <= self.hash_confirm <= 1.0:
            raise UserError(f"hash confirmation {self.hash_confirm} is not between -1 and 1")
        if self.neighbours < 1:
            raise UserError("neighbours must be at least 1")


def _index_folder(sources: Sequence[str | Path]) -> Path | None:
    """The folder when `sources` names exactly one index folder written by `index`."""
    from postergenre.inference.similarity import META_FILE

    if len(sources) == 1 and (Path(sources[0]) / META_FILE).is_file():
        return Path(sources[0])
    return None


def _from_index(folder: Path, cache_dir: Path | None, progress: bool) -> Fingerprints:
    """An index folder's stored embeddings, with fingerprints of the files still there."""
    import numpy as np

    from postergenre.curation import fingerprints as fp
    from postergenre.inference.similarity import PosterIndex

    index = PosterIndex.load(folder)
    items = [{k: item[k] for k in ("id", "path", "shown", "title")} for item in index.items]
    arrays = fp.compute_fingerprints(
        index.arch, [Path(i["path"]) for i in items], cache_dir, progress
    )
    rows = np.zeros((len(items), fp.ROW_BYTES), np.uint8)
    ok = arrays.ok
    rows[ok] = arrays[ok]
    has_hash = np.zeros(len(items), bool)
    has_hash[ok] = True
    # Their embeddings are in the index: they take part, matched by embeddings alone.
    skipped = {
        i: f"{msg} (matched by its stored embedding only)" for i, msg in arrays.errors.items()
    }
    return Fingerprints(index.arch, items, index.vectors, rows, has_hash, skipped)


def _resolved(path: Path) -> str:
    try:
        return str(Path(path).resolve())
    except (OSError, ValueError):  # a link loop, a NUL byte: reading it reports why
        return str(path)


def _once(paths: Sequence[Path]) -> list[Path]:
    """`paths` without repeats: a poster named twice (a folder and a file in it) is one
    poster, not its own duplicate."""
    seen: set[str] = set()
    unique = []
    for path in paths:
        key = _resolved(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def fingerprint_collection(
    sources: str | Path | Sequence[str | Path],
    *,
    arch: str = DEFAULT_ARCH,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> Fingerprints:
    """Embeddings and fingerprints of every readable poster of `sources` (any SOURCE `predict`
    takes, or one index folder, whose stored embeddings are reused), through the cache.
    Unreadable files are skipped and reported."""
    import numpy as np

    from postergenre.curation import fingerprints as fp
    from postergenre.data.sources import find_posters
    from postergenre.models import get_arch
    from postergenre.models.embeddings import compute_embeddings

    if isinstance(sources, str | Path):
        sources = [sources]
    folder = _index_folder(sources)
    if folder is not None:
        collection = _from_index(folder, cache_dir, progress)
        report_skipped(collection.skipped)
        return collection
    found = find_posters(sources)
    if found.single:
        raise UserError("one poster named: duplicates needs at least two posters")
    paths = _once(found.paths)
    arch = get_arch(arch).embedding_arch or arch
    vectors = compute_embeddings(arch, paths, cache_dir, progress)
    ok = vectors.ok
    arrays = fp.compute_fingerprints(arch, [paths[i] for i in ok], cache_dir, progress)
    skipped = dict(vectors.errors)
    skipped.update({int(ok[j]): msg for j, msg in arrays.errors.items()})
    report_skipped(skipped)
    keep = [j for j in range(len(ok)) if arrays.rows[j] >= 0]
    chosen = ok[keep]
    items = [
        {
            "id": paths[i].stem,
            "path": _resolved(paths[i]),
            "shown": str(paths[i]),
            "title": None,
        }
        for i in chosen
    ]
    matrix = np.asarray(vectors[chosen], dtype=np.float32).reshape(len(chosen), -1)
    matrix /= np.clip(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12, None)
    rows = np.asarray(arrays[np.asarray(keep, dtype=np.int64)]).reshape(len(chosen), fp.ROW_BYTES)
    return Fingerprints(arch, items, matrix, rows, np.ones(len(items), bool), skipped)


def find_duplicates(
    sources: str | Path | Sequence[str | Path],
    *,
    thresholds: Thresholds | None = None,
    arch: str = DEFAULT_ARCH,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> list[DuplicateGroup]:
    """Groups of the same poster among `sources` (see `fingerprint_collection` for what
    sources are), most certain first: exact copies, then the same image, then variants, each
    by similarity. What `postergenre duplicates` prints."""
    collection = fingerprint_collection(sources, arch=arch, cache_dir=cache_dir, progress=progress)
    return group_duplicates(collection, thresholds or Thresholds())


def group_duplicates(collection: Fingerprints, thresholds: Thresholds) -> list[DuplicateGroup]:
    """Group a fingerprinted collection (see the module docstring for how)."""
    from postergenre.curation.grouping import candidate_pairs, complete_link_groups

    if len(collection) < 2:
        return []
    pairs = candidate_pairs(collection.vectors, collection.rows, collection.has_hash, thresholds)
    groups = complete_link_groups(
        len(collection),
        pairs,
        collection.vectors,
        collection.rows,
        collection.has_hash,
        thresholds,
        max_component=MAX_COMPONENT,
    )
    result = [_group(collection, members, kind, sim) for members, kind, sim in groups]
    result.sort(key=lambda g: (KINDS.index(g.kind), -g.similarity, g.members[0].path))
    return result


def _group(
    collection: Fingerprints, members: Sequence[int], kind: str, similarity: float
) -> DuplicateGroup:
    import numpy as np

    from postergenre.curation import fingerprints as fp

    sizes = fp.sizes(collection.rows[np.asarray(members)])
    people = []
    for i, (width, height) in zip(members, sizes, strict=True):
        item = collection.items[i]
        try:
            size = Path(item["path"]).stat().st_size
        except OSError:
            size = 0
        people.append(
            DuplicateMember(
                item["id"],
                item["path"],
                item["shown"],
                item.get("title"),
                int(width),
                int(height),
                size,
            )
        )
    people.sort(key=lambda m: (-m.width * m.height, -m.bytes, m.path))
    return DuplicateGroup(people, kind, float(similarity))


CSV_COLUMNS = (
    "group",
    "kind",
    "similarity",
    "size",
    "id",
    "path",
    "shown",
    "title",
    "width",
    "height",
    "bytes",
)


def write_csv(groups: Sequence[DuplicateGroup], path: Path) -> Path:
    """One row per poster of every group (`CSV_COLUMNS`; `group` counts from 1, the first
    poster of a group is its largest), written atomically."""
    import csv
    import io

    from postergenre.atomic import write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for number, group in enumerate(groups, 1):
        for m in group.members:
            writer.writerow(
                [
                    number,
                    group.kind,
                    f"{group.similarity:.6f}",
                    len(group.members),
                    m.id,
                    m.path,
                    m.shown,
                    m.title or "",
                    m.width,
                    m.height,
                    m.bytes,
                ]
            )
    return write_text(path, buffer.getvalue())
