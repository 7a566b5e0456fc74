"""The micro-batcher: pooling, limits, error propagation, clean shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from postergenre.serving.batcher import BatcherClosedError, MicroBatcher


def _pixels(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, dtype=np.uint8)


def _mean_colour(batch: np.ndarray) -> np.ndarray:
    return batch.reshape(len(batch), -1).mean(axis=1, keepdims=True).astype(np.float32)


def test_concurrent_submissions_share_batches_and_keep_their_order():
    sizes: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        time.sleep(0.02)
        return _mean_colour(batch)

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(predict, max_batch=8, max_wait_ms=20)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(_pixels(i)) for i in range(20)))
        finally:
            await batcher.stop()

    results = asyncio.run(main())
    assert [float(r[0]) for r in results] == list(range(20))
    assert sum(sizes) == 20 and max(sizes) <= 8 and len(sizes) < 20


def test_a_lone_request_waits_no_longer_than_max_wait():
    async def main() -> float:
        batcher = MicroBatcher(_mean_colour, max_batch=32, max_wait_ms=30)
        await batcher.start()
        started = time.perf_counter()
        await batcher.submit(_pixels(1))
        elapsed = time.perf_counter() - started
        await batcher.stop()
        assert batcher.stats.batches == 1 and batcher.stats.items == 1
        return elapsed

    assert asyncio.run(main()) < 1.0


def test_inference_runs_off_the_event_loop():
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        seen.append(threading.get_ident())
        return _mean_colour(batch)

    async def main() -> None:
        batcher = MicroBatcher(predict)
        await batcher.start()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        await batcher.submit(_pixels(3))
        task.cancel()
        await batcher.stop()

    asyncio.run(main())
    assert seen and loop_thread not in seen


def test_an_error_reaches_every_request_of_the_batch_and_the_worker_survives():
    calls = 0

    def predict(batch: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("model exploded")
        return _mean_colour(batch)

    async def main() -> None:
        batcher = MicroBatcher(predict, max_batch=8, max_wait_ms=20)
        await batcher.start()
        outcomes = await asyncio.gather(
            *(batcher.submit(_pixels(i)) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        assert float((await batcher.submit(_pixels(7)))[0]) == 7  # still serving
        assert batcher.stats.failed_batches == 1
        await batcher.stop()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_wrong_number_of_rows_is_an_error_not_a_hang():
    async def main() -> None:
        batcher = MicroBatcher(lambda batch: np.zeros((1, 3)), max_wait_ms=20)
        await batcher.start()
        outcomes = await asyncio.gather(
            *(batcher.submit(_pixels(i)) for i in range(3)), return_exceptions=True
        )
        await batcher.stop()
        assert all(isinstance(o, RuntimeError) for o in outcomes)

    asyncio.run(asyncio.wait_for(main(), 10))


def test_stop_fails_waiting_requests_and_submit_needs_a_running_batcher():
    release = threading.Event()

    def slow(batch: np.ndarray) -> np.ndarray:
        release.wait(5)
        return _mean_colour(batch)

    async def main() -> None:
        batcher = MicroBatcher(slow, max_batch=1, max_wait_ms=0)
        with pytest.raises(BatcherClosedError):
            await batcher.submit(_pixels(0))
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit(_pixels(i))) for i in range(3)]
        await asyncio.sleep(0.05)
        await batcher.stop()
        release.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(o, BatcherClosedError) for o in outcomes)
        with pytest.raises(BatcherClosedError):
            await batcher.submit(_pixels(0))

    asyncio.run(asyncio.wait_for(main(), 10))


def test_cancelled_requests_are_skipped():
    sizes: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        return _mean_colour(batch)

    async def main() -> None:
        batcher = MicroBatcher(predict, max_batch=8, max_wait_ms=50)
        await batcher.start()
        gone = asyncio.create_task(batcher.submit(_pixels(1)))
        kept = asyncio.create_task(batcher.submit(_pixels(2)))
        await asyncio.sleep(0)
        gone.cancel()
        assert float((await kept)[0]) == 2
        await batcher.stop()

    asyncio.run(main())
    assert sizes == [1]


@pytest.mark.parametrize(("max_batch", "max_wait_ms"), [(0, 5.0), (4, -1.0)])
def test_bad_settings_are_refused(max_batch, max_wait_ms):
    with pytest.raises(ValueError):
        MicroBatcher(_mean_colour, max_batch=max_batch, max_wait_ms=max_wait_ms)


def test_on_idle_runs_once_each_time_the_queue_drains():
    idle_calls: list[int] = []
    batches: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        batches.append(len(batch))
        return _mean_colour(batch)

    async def main() -> None:
        batcher = MicroBatcher(
            predict, max_batch=4, max_wait_ms=1, on_idle=lambda: idle_calls.append(len(batches))
        )
        await batcher.start()
        try:
            await asyncio.gather(*(batcher.submit(_pixels(i)) for i in range(10)))
            await asyncio.sleep(0.05)
            assert len(idle_calls) == 1 and idle_calls[0] == len(batches)  # after all batches
            await batcher.submit(_pixels(1))
            await asyncio.sleep(0.05)
            assert len(idle_calls) == 2
            await asyncio.sleep(0.05)
            assert len(idle_calls) == 2  # idle without work: not called again
        finally:
            await batcher.stop()

    asyncio.run(main())
