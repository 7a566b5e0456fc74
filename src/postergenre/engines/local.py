"""The local engine: posters scored on this machine, batch by batch.

Paths are read lazily, decoded and resized by worker processes (`decoded_batches`: at most
`in_flight_batches` batches ahead of the model) or through the decode cache (`cached_batches`),
and the model runs each batch in this process. `Predictor` scores every collection here, and
streams into a file (`predict_to`) with the same batches as the Ray engine's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from postergenre._cpu import available_cores, default_workers
from postergenre.console import progress, warn
from postergenre.engines.decoding import (
    DecodedBatch,
    Model,
    cached_batches,
    decoded_batches,
    decoder_started,
    in_flight_batches,
)
from postergenre.errors import UserError

if TYPE_CHECKING:
    from postergenre.data.cache import PosterCache
    from postergenre.data.preprocess import InputSpec
    from postergenre.data.text import OcrSetting, PosterText

# Fewer posters than this decode in one thread beside the model when no worker count is
# named: starting decoding processes would cost more than they save.
PROCESS_MIN_POSTERS = 64


def check_batch_size(batch_size: int) -> None:
    """Refuse a batch size below 1."""
    if batch_size < 1:
        raise UserError(f"batch size must be 1 or more, not {batch_size}")


def decoding_workers(workers: int | None, posters: int) -> int:
    """Decoding processes for `posters` posters: `workers` when given (0: one thread beside the
    model), at most the cores this process may use (more only wait for a core, each holding
    its memory; one warning says so), else `default_workers()`, or 0 for fewer than
    `PROCESS_MIN_POSTERS`."""
    if workers is None:
        return default_workers() if posters >= PROCESS_MIN_POSTERS else 0
    if workers < 0:
        raise UserError(f"workers must be 0 or more, not {workers}")
    cores = available_cores()
    if workers > cores:
        warn(f"{workers} decoding workers asked for, {cores} cores here: using {cores}")
        return cores
    return workers


@dataclass
class LocalEngine:
    """Runs `model` (uint8 pixels at `spec`'s size, and their OCR text, read with `ocr`, ->
    `outputs` values per poster) over posters decoded here; `cache_dir` holds the decode (and
    text) cache when a call asks for it."""

    spec: InputSpec
    model: Model
    outputs: int
    ocr: OcrSetting | None = None  # set for a model that reads the poster's text
    cache_dir: Path | None = None

    def batches(
        self, posters: Iterable[Path], cache: bool, batch_size: int, workers: int
    ) -> Iterator[DecodedBatch]:
        """`posters` decoded and resized to the model's input, in batches, in order: by
        `workers` processes (0: a thread), or through the decode cache."""
        check_batch_size(batch_size)
        if cache:
            yield from cached_batches(
                posters, self._open_cache, batch_size, workers, self._text_opener()
            )
            return
        executor: Executor
        if workers == 0:
            executor = ThreadPoolExecutor(1, thread_name_prefix="postergenre-decode")
        else:  # spawn, not fork: the parent may hold torch's or ONNX Runtime's threads
            executor = ProcessPoolExecutor(
                workers, mp_context=get_context("spawn"), initializer=decoder_started
            )
        try:
            yield from decoded_batches(
                posters, self.spec, batch_size, executor, in_flight_batches(workers), self.ocr
            )
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def scored(
        self, posters: Iterable[Path], cache: bool, batch_size: int, workers: int
    ) -> Iterator[tuple[DecodedBatch, np.ndarray]]:
        """Each batch of `posters` with the model's values for its readable posters; closing
        this stops the decoders."""
        batches = self.batches(posters, cache, batch_size, workers)
        with closing(batches):
            for batch in batches:
                if batch.paths:
                    yield batch, self.model(batch.pixels, batch.texts)
                else:
                    yield batch, np.zeros((0, self.outputs), np.float32)

    def values(
        self,
        paths: Sequence[Path],
        cache: bool,
        batch_size: int,
        workers: int | None = None,
        show: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """All of `paths` in memory: (indices of the readable paths, their values,
        {index: reason} for the others), with a "predicting" progress bar when `show`."""
        ok: list[int] = []
        chunks: list[np.ndarray] = []
        errors: dict[int, str] = {}
        scored = self.scored(paths, cache, batch_size, decoding_workers(workers, len(paths)))
        with progress(len(paths), "predicting", enabled=show) as bar, closing(scored):
            for batch, values in scored:
                ok += batch.positions
                chunks.append(values)
                errors.update((i, reason) for i, _, reason in batch.errors)
                bar.update(batch.size)
        values = np.concatenate(chunks) if chunks else np.zeros((0, self.outputs), np.float32)
        return np.asarray(ok, dtype=np.int64), values, errors

    def _open_cache(self) -> PosterCache:
        from postergenre.data.cache import PosterCache

        return PosterCache(self.cache_dir, self.spec)

    def _text_opener(self) -> Callable[[], PosterText] | None:
        """What opens the text cache, for a model that reads text (None otherwise)."""
        if self.ocr is None:
            return None
        from postergenre.data.text import PosterText

        ocr = self.ocr
        return lambda: PosterText(self.cache_dir, self.spec, ocr)
