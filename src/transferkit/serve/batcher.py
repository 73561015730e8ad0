"""Dynamic batching: pictures submitted within `max_wait` seconds of the first one waiting (up to `max_batch` of
them) run through the model as one batch, in one worker thread, off the event loop.

A batch of 16 costs far less than 16 batches of one on a CPU (and much less on a GPU), so under load the server
answers more requests per second. The deadline counts from the first waiting picture's arrival, so pictures that
queued up during the previous batch go at once. The batch waits only while more pictures are on their way (the
server says so with `coming` while it decodes a request): a lone request on an idle server does not wait at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

__all__ = ["Batcher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Waiting:
    pixels: np.ndarray
    future: asyncio.Future[np.ndarray]
    arrived: float  # the event loop's clock


class Batcher:
    """`await batcher.submit(pixels)` gives that picture's row of `predict(batch)`. `on_batch(size, seconds)` is
    told about every batch that ran (for the metrics)."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch: int, max_wait: float,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        if max_batch < 1 or max_wait < 0:
            raise ValueError(f"max_batch must be 1 or more and max_wait 0 or more, got {max_batch} and {max_wait}")
        self.predict, self.max_batch, self.max_wait = predict, max_batch, max_wait
        self.on_batch = on_batch
        self._waiting: deque[_Waiting] = deque()
        self._coming = 0  # pictures being decoded that will be submitted soon
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transferkit-inference")

    def start(self) -> None:
        """Start collecting batches on the running event loop."""
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="transferkit-batcher")

    async def stop(self) -> None:
        """Stop: pictures still waiting fail with RuntimeError; the inference thread is let go."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._waiting:
            item = self._waiting.popleft()
            if not item.future.done():
                item.future.set_exception(RuntimeError("the server is shutting down"))
        self._executor.shutdown(wait=False)

    @contextmanager
    def coming(self, count: int) -> Iterator[None]:
        """While inside, `count` more pictures are on their way: a waiting batch waits for them (up to
        `max_wait`) instead of running at once."""
        self._coming += count
        try:
            yield
        finally:
            self._coming -= count

    async def submit(self, pixels: np.ndarray) -> np.ndarray:
        return (await self.submit_all([pixels]))[0]

    async def submit_all(self, pictures: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each picture's row, the pictures queued together (one request's pictures share a batch)."""
        if self._task is None or self._task.done() or self._arrived is None:
            raise RuntimeError("the batcher is not running")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[np.ndarray]] = [loop.create_future() for _ in pictures]
        self._waiting.extend(_Waiting(p, f, loop.time()) for p, f in zip(pictures, futures))
        self._arrived.set()
        return list(await asyncio.gather(*futures))

    async def _collect(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            remaining = self._waiting[0].arrived + self.max_wait - loop.time()
            while len(self._waiting) < self.max_batch and remaining > 0 and self._coming > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                remaining = self._waiting[0].arrived + self.max_wait - loop.time()
            batch = [self._waiting.popleft() for _ in range(min(self.max_batch, len(self._waiting)))]
            batch = [item for item in batch if not item.future.done()]  # a client that went away is cancelled
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[_Waiting]) -> None:
        started = time.perf_counter()
        try:
            pixels = np.stack([item.pixels for item in batch])
            probs = await asyncio.get_running_loop().run_in_executor(self._executor, self.predict, pixels)
        except Exception as exc:  # the model failed: these requests fail (500), the server goes on
            log.exception("inference failed for a batch of %d", len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        if self.on_batch is not None:
            self.on_batch(len(batch), time.perf_counter() - started)
        for item, row in zip(batch, probs):
            if not item.future.done():
                item.future.set_result(row)
