"""Cheap fingerprints of poster files for finding copies: a perceptual hash of the poster and of
its mirror image, a digest of the file's bytes, and the poster's size in pixels.

The hash is `imagehash.phash` (64-bit DCT hash) of the pixels the embedding backbone already
decoded (the pixel cache at the model's input size), after trimming a uniform border, so a
resized, recompressed or framed copy hashes within a few bits of the original and hashing
costs no second decode. Fingerprints are cached per file like pixels and embeddings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from postergenre import console
from postergenre.data.cache import CachedArrays, PosterCache, cache_root, fill_store
from postergenre.data.store import ArrayStore
from postergenre.models import get_arch

# Row layout (uint8): phash | phash of the mirror image | blake2b-8 of the bytes | w, h (uint16)
HASH_BYTES = 8
ROW_BYTES = 3 * HASH_BYTES + 4
_VERSION = 1
# A border is rows/columns within this many levels of the corner colour (JPEG noise included).
BORDER_TOLERANCE = 24
# Trim at most this much of a side: a poster that is mostly flat colour keeps its frame.
MAX_TRIM = 0.25


def trim_border(pixels: np.ndarray, tolerance: int = BORDER_TOLERANCE) -> np.ndarray:
    """`pixels` (H, W, 3) without a uniform frame of the top-left corner's colour."""
    height, width = pixels.shape[:2]
    background = pixels[0, 0].astype(np.int16)
    differs = np.abs(pixels.astype(np.int16) - background).max(axis=2) > tolerance
    rows, cols = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    if not len(rows) or not len(cols):
        return pixels
    top, bottom = rows[0], rows[-1] + 1
    left, right = cols[0], cols[-1] + 1
    if bottom - top < (1 - 2 * MAX_TRIM) * height or right - left < (1 - 2 * MAX_TRIM) * width:
        return pixels
    return pixels[top:bottom, left:right]


def _phash(pixels: np.ndarray) -> np.ndarray:
    import imagehash

    bits = imagehash.phash(Image.fromarray(np.ascontiguousarray(pixels))).hash
    return np.packbits(bits.astype(np.uint8).ravel())


def _file_facts(path: Path) -> tuple[bytes, int, int]:
    """The blake2b-8 digest of the file's bytes and its size in pixels (0, 0 if unknown)."""
    digest = hashlib.blake2b(Path(path).read_bytes(), digest_size=HASH_BYTES).digest()
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        width = height = 0
    return digest, min(width, 65535), min(height, 65535)


def fingerprint(pixels: np.ndarray, path: Path) -> np.ndarray:
    """One poster's fingerprint row from its decoded pixels and its file."""
    trimmed = trim_border(pixels)
    digest, width, height = _file_facts(path)
    size = np.array([width, height], dtype="<u2").view(np.uint8)
    row = [_phash(trimmed), _phash(trimmed[:, ::-1]), np.frombuffer(digest, np.uint8), size]
    return np.concatenate(row)


def fingerprint_store(arch: str, cache_dir: Path | None) -> ArrayStore:
    """The cache folder of fingerprints made from `arch`'s decoded pixels."""
    spec = get_arch(arch).input
    name = f"fingerprints-v{_VERSION}-{spec.width}x{spec.height}-{spec.resize}"
    folder = cache_root(cache_dir) / name
    return ArrayStore(folder, (ROW_BYTES,), "uint8")


def compute_fingerprints(
    arch: str, paths: Sequence[Path], cache_dir: Path | None = None, progress: bool = True
) -> CachedArrays:
    """Fingerprint rows for `paths` (decoding and hashing only posters not cached yet)."""
    spec = get_arch(arch).input
    store = fingerprint_store(arch, cache_dir)

    def compute(indices: list[int]) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        if not indices:
            return
        pixels, failed = PosterCache(cache_dir, spec).load_some(paths, indices, progress)
        yield from failed
        ok = pixels.ok
        with console.progress(len(ok), "hashing posters", "img", enabled=progress) as bar:
            for j in ok:
                try:
                    row = fingerprint(pixels[j], paths[indices[j]])
                except OSError as exc:  # gone or unreadable since it was decoded
                    yield indices[j], None, f"{paths[indices[j]]}: cannot read file ({exc})"
                else:
                    yield indices[j], row, None
                bar.update()

    return fill_store(store, paths, compute)


def hashes(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(phash, mirrored phash, byte digest) columns of fingerprint rows, each (n, 8) uint8."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    return rows[:, :8].copy(), rows[:, 8:16].copy(), rows[:, 16:24].copy()


def sizes(rows: np.ndarray) -> np.ndarray:
    """(n, 2) width and height in pixels of fingerprint rows (0 where unknown)."""
    return np.ascontiguousarray(rows[:, 24:28], dtype=np.uint8).view("<u2").astype(np.int64)
