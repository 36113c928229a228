"""Dynamic batching: coalesce concurrent requests into one backend call, then split back.

``on_batch(rows, queue seconds of each request, compute seconds)`` reports every batch.
Requests wait at most ``max_delay`` seconds for company, a batch holds at most
``max_batch`` rows (a larger request runs alone), and at most ``max_queue_rows`` rows may
wait: beyond that ``submit`` raises ``QueueFull`` at once (the server answers 503).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from typing import Callable

import numpy as np

__all__ = ["Batcher", "QueueFull"]

Outputs = dict[str, np.ndarray]


class QueueFull(Exception):
    """The batcher's queue holds ``max_queue_rows`` rows already."""


class Batcher:
    """One worker task per model: gathers rows, runs ``fn`` in ``executor``, splits outputs."""

    def __init__(self, fn: Callable[[np.ndarray], Outputs], executor: Executor, *, max_batch: int = 1024,
                 max_delay: float = 0.002, max_queue_rows: int = 65536,
                 on_batch: Callable[[int, list[float], float], None] | None = None):
        self.fn = fn
        self.executor = executor
        self.max_batch = max(1, max_batch)
        self.max_delay = max_delay
        self.max_queue_rows = max_queue_rows
        self.on_batch = on_batch
        self._queue: list[tuple[np.ndarray, asyncio.Future, float]] = []  # rows, result, when queued
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopped = False
        self._busy = False  # a batch taken from the queue is running

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """Finish what is queued, then stop the worker. A request submitted afterwards (one that
        picked this model just before a reload replaced it) runs alone, on this model."""
        self._stopped = True
        while self._queue or self._busy:  # cancelling mid-batch would leave its requests waiting forever
            await asyncio.sleep(0.001)
        if self._task:
            self._task.cancel()

    async def submit(self, rows: np.ndarray) -> Outputs:
        """Queue ``rows`` (n, width); resolve to this request's slice of the batch outputs."""
        if self._stopped:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self.fn, rows)
        if self._queued_rows + len(rows) > self.max_queue_rows and self._queued_rows:
            raise QueueFull(f"{self._queued_rows} rows already queued (limit {self.max_queue_rows})")
        future = asyncio.get_running_loop().create_future()
        self._queue.append((rows, future, time.perf_counter()))
        self._queued_rows += len(rows)
        self._wakeup.set()
        return await future

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future, float]]:
        taken, rows = [], 0
        while self._queue and (not taken or rows + len(self._queue[0][0]) <= self.max_batch):
            item = self._queue.pop(0)
            taken.append(item)
            rows += len(item[0])
        self._queued_rows -= rows
        return taken

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            deadline = loop.time() + self.max_delay
            while self._queued_rows < self.max_batch and loop.time() < deadline:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), deadline - loop.time())
                    self._wakeup.clear()
                except asyncio.TimeoutError:
                    break
            while self._queue:
                self._busy = True
                batch = self._take()
                arrays = [rows for rows, _, _ in batch]
                sizes = [len(a) for a in arrays]
                started = time.perf_counter()
                waited = [started - queued for _, _, queued in batch]
                try:
                    outputs = await loop.run_in_executor(self.executor, self.fn, np.concatenate(arrays))
                except Exception as exc:  # hand the failure to every waiting request
                    for _, future, _ in batch:
                        if not future.done():
                            future.set_exception(exc)
                    self._busy = False
                    continue
                if self.on_batch:
                    self.on_batch(sum(sizes), waited, time.perf_counter() - started)
                offsets = np.cumsum([0, *sizes])
                for (_, future, _), start, stop in zip(batch, offsets[:-1], offsets[1:]):
                    if not future.done():
                        future.set_result({k: v[start:stop] for k, v in outputs.items()})
                self._busy = False
