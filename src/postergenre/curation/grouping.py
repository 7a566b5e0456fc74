"""From fingerprints to groups: candidate pairs by FAISS search (embeddings by inner product,
perceptual hashes by Hamming distance), connected sets of pairs, and a complete-link check that
splits a set until every two members of a group match on their own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from postergenre.curation import fingerprints as fp
from postergenre.errors import UserError

if TYPE_CHECKING:
    from postergenre.curation.duplicates import Thresholds

# Bits set in each byte value: Hamming distances of packed hashes by table lookup.
_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)
# Rows of a pairwise Hamming matrix computed at once (memory: rows x columns x 8 bytes).
_HAMMING_ROWS = 256
# A mirrored copy hashes within 0-2 bits of the original's mirror image; unrelated posters
# matched that way at 10 bits (cosine ~0.6) were all false in the shared set, and the
# embeddings find mirrored copies on their own (cosine >= 0.93), so mirror matches stay tight.
MIRROR_DISTANCE = 4


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distances between packed hashes: (n, 8) x (m, 8) uint8 -> (n, m) int."""
    out = np.empty((len(a), len(b)), dtype=np.int16)
    for start in range(0, len(a), _HAMMING_ROWS):
        xor = a[start : start + _HAMMING_ROWS, None, :] ^ b[None, :, :]
        out[start : start + _HAMMING_ROWS] = _POPCOUNT[xor].sum(axis=2, dtype=np.int16)
    return out


def _embedding_pairs(vectors: np.ndarray, similarity: float, neighbours: int) -> np.ndarray:
    import faiss

    k = min(len(vectors), neighbours + 1)  # +1: each poster finds itself
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    scores, found = index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
    rows = np.repeat(np.arange(len(vectors)), k)
    keep = (scores.ravel() >= similarity) & (found.ravel() >= 0)
    return np.stack([rows[keep], found.ravel()[keep]], axis=1)


def _hash_pairs(rows: np.ndarray, has_hash: np.ndarray, distance: int) -> np.ndarray:
    """Pairs whose perceptual hashes, or one's and the other's mirror image's, are within
    `distance` bits (FAISS binary range search: exact, and fast for 100k hashes)."""
    import faiss

    hashed = np.flatnonzero(has_hash)
    if len(hashed) < 2:
        return np.zeros((0, 2), np.int64)
    phash, mirror, _ = fp.hashes(rows[hashed])
    index = faiss.IndexBinaryFlat(64)
    index.add(phash)
    found = []
    for queries, radius in ((phash, distance), (mirror, min(distance, MIRROR_DISTANCE))):
        lims, _, neighbours = index.range_search(queries, radius + 1)  # strict: < radius
        counts = np.diff(lims).astype(np.int64)
        found.append(
            np.stack([np.repeat(hashed, counts), hashed[neighbours.astype(np.int64)]], axis=1)
        )
    return np.concatenate(found)


def _confirmed(pairs: np.ndarray, vectors: np.ndarray, floor: float) -> np.ndarray:
    """The hash pairs whose embeddings agree at least `floor` (`Thresholds.hash_confirm`)."""
    cosine = np.einsum("ij,ij->i", vectors[pairs[:, 0]], vectors[pairs[:, 1]])
    return pairs[cosine >= floor]


def candidate_pairs(
    vectors: np.ndarray, rows: np.ndarray, has_hash: np.ndarray, thresholds: Thresholds
) -> np.ndarray:
    """(m, 2) distinct pairs i < j that match by embeddings (among each poster's
    `thresholds.neighbours` nearest) or by hash."""
    pairs = np.concatenate(
        [
            _embedding_pairs(vectors, thresholds.similarity, thresholds.neighbours),
            _confirmed(
                _hash_pairs(rows, has_hash, thresholds.hash_distance),
                vectors,
                thresholds.hash_confirm,
            ),
        ]
    )
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def _components(n: int, pairs: np.ndarray) -> Iterator[np.ndarray]:
    """The connected sets (of two or more) of the graph of `pairs`."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not len(pairs):
        return
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, bounds):
        if len(members) > 1:
            yield members


def _pair_matrices(
    members: np.ndarray,
    vectors: np.ndarray,
    rows: np.ndarray,
    has_hash: np.ndarray,
    thresholds: Thresholds,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For the members of one set: cosine, exact (same bytes), same (hashes match) and
    mirrored (hash matches the other's mirror image) matrices."""
    v = vectors[members]
    cosine = np.clip(v @ v.T, -1.0, 1.0)
    phash, mirror, digest = fp.hashes(rows[members])
    hashed = has_hash[members][:, None] & has_hash[members][None, :]
    exact = hashed & (digest[:, None, :] == digest[None, :, :]).all(axis=2)
    hashed &= cosine >= thresholds.hash_confirm
    distance = thresholds.hash_distance
    same = hashed & (hamming(phash, phash) <= distance)
    flipped = hamming(phash, mirror) <= min(distance, MIRROR_DISTANCE)
    mirrored = hashed & (flipped | flipped.T)
    return cosine, exact, same, mirrored


def _split(cosine: np.ndarray, strong: np.ndarray, linked: np.ndarray, similarity: float):
    """Complete-link clusters in which every pair is `linked`: distance 0 for pairs matched
    by hash, 1 - cosine otherwise, cut where cosine falls below `similarity`."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    distance = np.where(strong, 0.0, 1.0 - cosine)
    # Unlinked pairs sit strictly above the cut, whatever their rounding.
    distance = np.where(linked, np.minimum(distance, 1.0 - similarity), 2.0 + distance)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="complete")
    return fcluster(tree, t=1.0 - similarity, criterion="distance")


def complete_link_groups(
    n: int,
    pairs: np.ndarray,
    vectors: np.ndarray,
    rows: np.ndarray,
    has_hash: np.ndarray,
    thresholds: Thresholds,
    *,
    max_component: int,
) -> list[tuple[list[int], str, float]]:
    """Groups as (members, kind, lowest pairwise cosine); every two members match."""
    groups = []
    for members in _components(n, pairs):
        if len(members) > max_component:
            raise UserError(
                f"{len(members):,} posters are joined by look-alike pairs: the similarity "
                f"threshold {thresholds.similarity} is far too low",
                hint=f"raise --similarity (default {type(thresholds)().similarity})",
            )
        cosine, exact, same, mirrored = _pair_matrices(members, vectors, rows, has_hash, thresholds)
        strong = exact | same | mirrored
        linked = strong | (cosine >= thresholds.similarity)
        labels = (
            np.ones(len(members), int)
            if linked.all()
            else _split(cosine, strong, linked, thresholds.similarity)
        )
        for label in np.unique(labels):
            part = np.flatnonzero(labels == label)
            if len(part) < 2:
                continue
            block = np.ix_(part, part)
            kind = (
                "exact"
                if exact[block].all()
                else "same image"
                if (exact | same)[block].all()
                else "variant"
            )
            groups.append(([int(i) for i in members[part]], kind, float(cosine[block].min())))
    return groups
