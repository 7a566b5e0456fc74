"""Posters in batches for a model: decoded and resized by worker processes (or a thread), or
through the decode cache, read lazily and in order with a bounded number of batches in flight.

A model that reads the poster's text gets it with each batch: OCR runs in the decoding
processes on the pixels they decoded, or comes from the text cache beside the decode cache.
Used by the local engine (every collection a `Predictor` scores) and by the Ray engine's actors.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from postergenre.data.preprocess import load_poster_array
from postergenre.data.text import read_poster_texts
from postergenre.errors import PosterDecodeError

if TYPE_CHECKING:
    from postergenre.data.cache import PosterCache
    from postergenre.data.preprocess import InputSpec
    from postergenre.data.text import OcrSetting, PosterText

# With the decode cache, posters are looked up (and missing ones decoded into it) this many
# at a time, one chunk ahead of the model; the pixels are memory-mapped from the cache.
CACHE_CHUNK = 4096


def in_flight_batches(workers: int) -> int:
    """Batches handed to the decoders and not yet taken by the model: two per decoding
    process (one being decoded, one waiting), two for the one decoding thread. With the batch
    the model is running, at most this + 1 batches of decoded posters exist at once."""
    return 2 * max(workers, 1)


# What runs on a batch: uint8 (B, H, W, 3) pixels (and their OCR text, for a model that reads
# text) -> float32 (B, outputs) values, e.g. genre probabilities or embeddings.
Model = Callable[[np.ndarray, list[str] | None], np.ndarray]


@dataclass
class DecodedBatch:
    """Posters decoded together: the readable ones (position in the stream, path, uint8
    pixels at the model's input size) and the unreadable ones (position, path, reason)."""

    positions: list[int]
    paths: list[Path]
    pixels: np.ndarray  # (len(paths), height, width, 3)
    errors: list[tuple[int, Path, str]]
    texts: list[str] | None = None  # OCR text of the readable posters (models that read text)

    @property
    def size(self) -> int:
        """Posters in the batch, readable or not."""
        return len(self.paths) + len(self.errors)


def decode_batch(
    paths: list[str], spec: InputSpec, ocr: OcrSetting | None = None
) -> tuple[list[int], np.ndarray, list[tuple[int, str]], list[str] | None]:
    """A decoder's unit of work: (the positions of the readable `paths`, their pixels at
    `spec`'s size, [(position, reason)] of the others, and with `ocr` the text OCR reads
    in the pixels, so OCR runs in the decoding processes too)."""
    kept: list[int] = []
    pixels: list[np.ndarray] = []
    errors: list[tuple[int, str]] = []
    for i, path in enumerate(paths):
        try:
            pixels.append(load_poster_array(path, spec))
            kept.append(i)
        except PosterDecodeError as exc:
            errors.append((i, str(exc)))
        except Exception as exc:  # an image library bug on one odd file must not stop a run
            errors.append((i, f"{path}: cannot be decoded ({type(exc).__name__}: {exc})"))
    stacked = np.stack(pixels) if pixels else np.zeros((0, spec.height, spec.width, 3), np.uint8)
    texts = read_poster_texts(pixels, ocr) if ocr is not None else None
    return kept, stacked, errors, texts


def decoder_started() -> None:
    """In a decoding process: leave Ctrl-C to the parent, and exit as soon as the parent is
    gone (even killed with SIGKILL) instead of waiting for work forever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:

        def exit_with_parent() -> None:
            parent.join()
            os._exit(1)

        threading.Thread(target=exit_with_parent, daemon=True).start()


def numbered_chunks(posters: Iterable[Path], size: int) -> Iterator[list[tuple[int, Path]]]:
    """`posters` (read lazily) as lists of up to `size` (position in the stream, path)."""
    items = enumerate(posters)
    while chunk := list(islice(items, size)):
        yield chunk


def decoded_batches(
    posters: Iterable[Path],
    spec: InputSpec,
    batch_size: int,
    executor: Executor,
    in_flight: int,
    ocr: OcrSetting | None = None,
) -> Iterator[DecodedBatch]:
    """Decode `posters` (read lazily) in batches on `executor`, in order, with at most
    `in_flight` batches submitted and not yet taken: memory is bounded whatever the number of
    posters, and the decoders work while the caller runs the model on the batch it took."""
    chunks = numbered_chunks(posters, batch_size)
    pending: deque[tuple[list[tuple[int, Path]], Future[Any]]] = deque()

    def submit() -> None:
        chunk = next(chunks, None)
        if chunk is not None:
            pending.append(
                (
                    chunk,
                    executor.submit(decode_batch, [str(p) for _, p in chunk], spec, ocr),
                )
            )

    for _ in range(in_flight):
        submit()
    while pending:
        chunk, future = pending.popleft()
        kept, pixels, errors, texts = future.result()
        submit()  # keep the decoders busy while the model runs this batch
        yield DecodedBatch(
            [chunk[i][0] for i in kept],
            [chunk[i][1] for i in kept],
            pixels,
            [(chunk[i][0], chunk[i][1], reason) for i, reason in errors],
            texts,
        )


def cached_batches(
    posters: Iterable[Path],
    open_cache: Callable[[], PosterCache],
    batch_size: int,
    workers: int,
    open_text: Callable[[], PosterText] | None = None,
) -> Iterator[DecodedBatch]:
    """Like `decoded_batches`, through the decode cache: `CACHE_CHUNK` posters at a time are
    looked up (missing ones decoded into the cache by `workers` processes) one chunk ahead, in
    a thread that opens the cache (`open_cache()`) and alone uses it; with `open_text`, their
    OCR text is looked up (and read where missing) in the text cache the same way."""
    chunks = numbered_chunks(posters, CACHE_CHUNK)
    opened: list[Any] = []

    def load(chunk: list[tuple[int, Path]]) -> Any:
        if not opened:  # the caches' databases work in the thread that opened them
            opened.extend([open_cache(), open_text() if open_text is not None else None])
        paths = [p for _, p in chunk]
        n = max(workers, 1)
        cached = opened[0].load(paths, workers=n, progress=False)
        texts = opened[1].load(paths, workers=n, progress=False)[0] if opened[1] else None
        return cached, texts

    with ThreadPoolExecutor(1, thread_name_prefix="postergenre-cache") as pool:
        chunk = next(chunks, None)
        pending = pool.submit(load, chunk) if chunk is not None else None
        while chunk is not None and pending is not None:
            cached, texts = pending.result()
            following = next(chunks, None)
            pending = pool.submit(load, following) if following is not None else None
            for start in range(0, len(chunk), batch_size):
                part = range(start, min(start + batch_size, len(chunk)))
                kept = [i for i in part if cached.rows[i] >= 0]
                yield DecodedBatch(
                    [chunk[i][0] for i in kept],
                    [chunk[i][1] for i in kept],
                    cached[np.asarray(kept, dtype=np.int64)],
                    [
                        (chunk[i][0], chunk[i][1], cached.errors[i])
                        for i in part
                        if i in cached.errors
                    ],
                    [texts[i] or "" for i in kept] if texts is not None else None,
                )
            chunk = following
