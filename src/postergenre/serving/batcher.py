"""Micro-batching: concurrent requests share one forward pass of the model.

Each request submits one preprocessed poster and awaits its probabilities. A single worker
task takes the first waiting poster, waits at most `max_wait_ms` for more (up to
`max_batch`), and runs the model once for all of them in a worker thread, so the event loop
never blocks on inference.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

PredictFn = Callable[[np.ndarray], np.ndarray]


class BatcherClosedError(RuntimeError):
    """The batcher is not running (not started yet, or shutting down)."""


@dataclass
class BatcherStats:
    """What the batcher has done so far."""

    batches: int = 0
    items: int = 0
    largest_batch: int = 0
    failed_batches: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "batches": self.batches,
            "items": self.items,
            "largest_batch": self.largest_batch,
            "failed_batches": self.failed_batches,
        }


@dataclass
class _Pending:
    pixels: np.ndarray
    future: asyncio.Future[np.ndarray]
    enqueued: float


class MicroBatcher:
    """Gather single posters into batches for `predict(np.stack(batch)) -> (B, n)`.

    `start()` and `stop()` must run on the event loop that calls `submit()` (the app's
    lifespan does this).
    """

    def __init__(
        self,
        predict: PredictFn,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        executor: Executor | None = None,
        on_idle: Callable[[], None] | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.executor = executor
        # run in the executor when the queue drains after work (e.g. give freed memory back)
        self.on_idle = on_idle
        self.stats = BatcherStats()
        self._queue: deque[_Pending] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    async def start(self) -> None:
        """Start the worker task on the running loop (idempotent)."""
        if self.running:
            return
        self._wakeup = asyncio.Event()
        self._worker = asyncio.create_task(self._run(), name="postergenre-batcher")

    async def stop(self) -> None:
        """Stop the worker; requests still waiting fail with `BatcherClosedError`."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._fail_all(BatcherClosedError("the server is shutting down"))

    async def submit(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities (n_genres,) for one uint8 (H, W, 3) poster."""
        if not self.running or self._wakeup is None:
            raise BatcherClosedError("the batcher is not running")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(pixels, future, time.monotonic()))
        self._wakeup.set()
        return await future

    # -- worker ---------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wakeup is not None
        worked = False
        while True:
            if not self._queue:
                if worked and self.on_idle is not None:
                    worked = False
                    with contextlib.suppress(Exception):
                        await asyncio.get_running_loop().run_in_executor(
                            self.executor, self.on_idle
                        )
                    continue  # requests may have arrived meanwhile
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # The deadline counts from the oldest request, so posters that queued up during
            # the previous batch go without further waiting.
            deadline = self._queue[0].enqueued + self.max_wait
            while len(self._queue) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            # A client that gave up (its request was cancelled) needs no prediction.
            batch = [p for p in batch if not p.future.done()]
            if batch:
                await self._run_batch(batch)
                worked = True

    async def _run_batch(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        try:
            probs = await loop.run_in_executor(
                self.executor, self._predict_stacked, [p.pixels for p in batch]
            )
            if len(probs) != len(batch):
                raise RuntimeError(f"model returned {len(probs)} rows for {len(batch)} posters")
        except asyncio.CancelledError:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(BatcherClosedError("the server is shutting down"))
            raise
        except Exception as exc:  # every waiting request gets the error, none hangs
            self.stats.failed_batches += 1
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        self.stats.batches += 1
        self.stats.items += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        for pending, row in zip(batch, probs, strict=True):
            if not pending.future.done():
                pending.future.set_result(row)

    def _predict_stacked(self, pixels: list[np.ndarray]) -> np.ndarray:
        return np.asarray(self.predict(np.stack(pixels)))

    def _fail_all(self, error: Exception) -> None:
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(error)
