"""The dynamic batcher with a stand-in model (no network, no HTTP): what arrives within the wait shares a batch,
batches never exceed `max_batch`, each caller gets its own row, a failing batch fails only its callers, and
inference runs off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from transferkit.serve.batcher import Batcher


class _Model:
    """Returns each picture's first pixel as its "probabilities"; records batch sizes and the thread it ran in."""

    def __init__(self, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.sizes: list[int] = []
        self.threads: set[int] = set()
        self.delay, self.fail_on = delay, fail_on

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.sizes.append(len(batch))
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        if self.fail_on is not None and (batch[:, 0, 0, 0] == self.fail_on).any():
            raise RuntimeError("model failed")
        return batch[:, 0, 0, :].astype(np.float32)


def _picture(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, dtype=np.uint8)


async def _submit_all(batcher: Batcher, values: list[int]) -> list[np.ndarray | BaseException]:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(_picture(v)) for v in values), return_exceptions=True)
    finally:
        await batcher.stop()


def test_requests_within_the_wait_share_a_batch() -> None:
    model = _Model()
    rows = asyncio.run(_submit_all(Batcher(model, max_batch=32, max_wait=0.2), list(range(10))))
    assert model.sizes == [10]
    assert [int(r[0]) for r in rows] == list(range(10))  # type: ignore[index]  # each caller gets its own row
    assert threading.get_ident() not in model.threads  # never on the event loop's thread


def test_batches_never_exceed_max_batch() -> None:
    model = _Model()
    rows = asyncio.run(_submit_all(Batcher(model, max_batch=4, max_wait=0.05), list(range(10))))
    assert model.sizes == [4, 4, 2] and len(rows) == 10


def _lone(model: _Model, coming: int) -> float:
    async def one() -> float:
        batcher = Batcher(model, max_batch=32, max_wait=0.3)
        batcher.start()
        started = time.perf_counter()
        with batcher.coming(coming):
            await batcher.submit(_picture(1))
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return elapsed

    return asyncio.run(one())


def test_a_lone_request_waits_only_while_more_are_coming() -> None:
    model = _Model()
    assert _lone(model, coming=0) < 0.15  # an idle server: no wait at all
    assert 0.29 <= _lone(model, coming=1) < 2.0  # another picture is being decoded: wait for it, at most max_wait
    assert model.sizes == [1, 1]


def test_pictures_still_decoding_join_the_waiting_batch() -> None:
    model = _Model()

    async def two_requests() -> None:
        batcher = Batcher(model, max_batch=32, max_wait=1.0)
        batcher.start()

        async def request(value: int, decode_s: float) -> np.ndarray:
            with batcher.coming(1):
                await asyncio.sleep(decode_s)
                return (await batcher.submit_all([_picture(value)]))[0]

        first = asyncio.ensure_future(request(1, 0.0))
        second = asyncio.ensure_future(request(2, 0.1))
        assert [int(r[0]) for r in await asyncio.gather(first, second)] == [1, 2]
        await batcher.stop()

    asyncio.run(two_requests())
    assert model.sizes == [2]


def test_requests_queued_during_a_batch_go_next_together() -> None:
    model = _Model(delay=0.2)

    async def staggered() -> None:
        batcher = Batcher(model, max_batch=32, max_wait=0.0)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(_picture(0)))
        await asyncio.sleep(0.05)  # the first batch (of one) is running
        rest = [asyncio.ensure_future(batcher.submit(_picture(v))) for v in range(1, 6)]
        await asyncio.gather(first, *rest)
        await batcher.stop()

    asyncio.run(staggered())
    assert model.sizes == [1, 5]


def test_a_failing_batch_fails_its_callers_only() -> None:
    model = _Model(fail_on=3)

    async def two_batches() -> tuple[list[np.ndarray | BaseException], np.ndarray]:
        batcher = Batcher(model, max_batch=8, max_wait=0.05)
        batcher.start()
        failed = await asyncio.gather(*(batcher.submit(_picture(v)) for v in range(5)), return_exceptions=True)
        after = await batcher.submit(_picture(7))
        await batcher.stop()
        return failed, after

    failed, after = asyncio.run(two_batches())
    assert all(isinstance(r, RuntimeError) for r in failed) and int(after[0]) == 7


def test_a_cancelled_request_is_left_out() -> None:
    model = _Model()

    async def cancel_one() -> None:
        batcher = Batcher(model, max_batch=8, max_wait=0.1)
        batcher.start()
        with batcher.coming(1):  # the batch waits for a third picture, so the cancel lands before it runs
            gone = asyncio.ensure_future(batcher.submit(_picture(1)))
            kept = asyncio.ensure_future(batcher.submit(_picture(2)))
            await asyncio.sleep(0.01)
            gone.cancel()
        assert int((await kept)[0]) == 2
        await batcher.stop()

    asyncio.run(cancel_one())
    assert model.sizes == [1]


def test_bad_settings_and_use_before_start() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(_Model(), max_batch=0, max_wait=0.0)

    async def early() -> None:
        await Batcher(_Model(), max_batch=1, max_wait=0.0).submit(_picture(1))

    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(early())
