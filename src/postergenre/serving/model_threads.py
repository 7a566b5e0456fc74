"""The app's two model threads: one runs the micro-batcher's quick predictions, the other the
slow work (Grad-CAM, embeddings for similar posters, models that read poster text), so a heavy
request never holds up the quick predictions queued behind it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from postergenre._allocator import release_free_memory
from postergenre.inference.predictor import Predictor
from postergenre.inference.similarity import PosterIndex
from postergenre.serving.batcher import BatcherClosedError, MicroBatcher

T = TypeVar("T")


class ModelThreads:
    """The prediction and slow-work threads, started and stopped by the app's lifespan."""

    def __init__(self) -> None:
        self._predict: ThreadPoolExecutor | None = None
        self._slow: ThreadPoolExecutor | None = None

    def start(self, batcher: MicroBatcher) -> None:
        """Start both threads; `batcher` runs its predictions on the first."""
        self._predict = ThreadPoolExecutor(1, thread_name_prefix="postergenre-predict")
        self._slow = ThreadPoolExecutor(1, thread_name_prefix="postergenre-heavy")
        batcher.executor = self._predict

    def stop(self) -> None:
        """Stop both threads; work still queued on them is cancelled."""
        executors = (self._predict, self._slow)
        self._predict = self._slow = None
        for executor in executors:
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)

    async def run_slow(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the slow-work thread, then hand the memory it freed back."""
        executor = self._slow
        if executor is None:
            raise BatcherClosedError("the server is not running (lifespan not started)")

        def call() -> T:
            try:
                return fn(*args)
            finally:
                release_free_memory()

        return await asyncio.get_running_loop().run_in_executor(executor, call)

    async def warm_up(self, predictor: Predictor, index: PosterIndex | None) -> None:
        """Load and run every model once, so the first requests do not pay for it."""
        assert self._predict is not None and self._slow is not None, "start() first"
        loop = asyncio.get_running_loop()
        for slow, call in _warm_up_calls(predictor, index):
            await loop.run_in_executor(self._slow if slow else self._predict, call)


def warm_up(predictor: Predictor, index: PosterIndex | None) -> None:
    """Load and run every model once, here and now: `serve()` does it before it listens, so a
    model that cannot load is refused (one line) instead of failing the server's start-up."""
    for _, call in _warm_up_calls(predictor, index):
        call()


def _warm_up_calls(
    predictor: Predictor, index: PosterIndex | None
) -> list[tuple[bool, Callable[[], object]]]:
    """Each warm-up step, and whether it belongs on the slow-work thread."""
    spec = predictor.input_spec
    blank = np.zeros((1, spec.height, spec.width, 3), dtype=np.uint8)
    # The PyTorch model first: Grad-CAM needs it whatever the runtime, and a bundle that cannot
    # load is then reported as it is, before any runtime falls back to it.
    # An exported graph has no PyTorch model: it only predicts (explain is refused per request).
    calls: list[tuple[bool, Callable[[], object]]] = [
        *([(True, lambda: predictor.model)] if predictor.has_weights else []),
        (False, lambda: predictor.predict_pixels(blank)),
    ]
    if index is not None:
        blank_poster = Image.new("RGB", (spec.width, spec.height))
        calls.append((True, lambda: index.embed_images([blank_poster])))
    return calls
