"""The app's model threads: quick predictions and slow work each on their own thread."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from postergenre.serving import model_threads
from postergenre.serving.batcher import BatcherClosedError, MicroBatcher
from postergenre.serving.model_threads import ModelThreads


def _batcher() -> MicroBatcher:
    return MicroBatcher(lambda batch: np.zeros((len(batch), 2)), max_batch=4, max_wait_ms=1)


def test_slow_work_needs_started_threads():
    threads = ModelThreads()
    with pytest.raises(BatcherClosedError, match="not running"):
        asyncio.run(threads.run_slow(lambda: 1))
    threads.start(_batcher())
    threads.stop()
    with pytest.raises(BatcherClosedError, match="not running"):
        asyncio.run(threads.run_slow(lambda: 1))


def test_predictions_and_slow_work_run_on_their_own_threads():
    threads, batcher = ModelThreads(), _batcher()
    threads.start(batcher)
    try:
        assert batcher.executor is not None
        predict_thread = batcher.executor.submit(lambda: threading.current_thread().name).result()
        slow_thread = asyncio.run(threads.run_slow(lambda: threading.current_thread().name))
    finally:
        threads.stop()
    assert predict_thread.startswith("postergenre-predict")
    assert slow_thread.startswith("postergenre-heavy")


def test_slow_work_hands_memory_back_even_when_it_fails(monkeypatch):
    released = []
    monkeypatch.setattr(model_threads, "release_free_memory", lambda: released.append(1))
    threads = ModelThreads()
    threads.start(_batcher())

    def broken() -> None:
        raise RuntimeError("out of memory")

    try:
        assert asyncio.run(threads.run_slow(lambda a, b: a + b, 2, 3)) == 5
        with pytest.raises(RuntimeError, match="out of memory"):
            asyncio.run(threads.run_slow(broken))
    finally:
        threads.stop()
    assert released == [1, 1]
