"""How much work the server has in progress at once: bounded thread pools (:class:`Lane`) and
server-wide slots (:class:`Slots`); both refuse one more with a 503 at once rather than queue
without end. Per-client shares are :mod:`.shares`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from mnistkit.serving.bodies import ApiError


class Lane:
    """A dedicated pool of worker threads with a bounded queue: when both are full, refuse at once (503).

    Queuing without end would turn a burst into unbounded memory and latency; an
    immediate 503 with ``Retry-After`` lets the client back off. ``nice`` lowers the
    scheduling priority of the lane's own threads (Linux schedules threads one by one),
    so on a busy machine the CPU goes to light requests first.
    """

    def __init__(self, name: str, workers: int, queue: int, nice: int = 0):
        self.name = name
        self.capacity = workers + queue
        self.in_flight = 0  # only touched on the event loop: no lock needed
        self.pool = ThreadPoolExecutor(
            workers,
            thread_name_prefix=f"mnistkit-{name.replace(' ', '-')}",
            initializer=functools.partial(_lower_priority, nice) if nice else None,
        )

    async def run(self, fn, *args):
        if self.in_flight >= self.capacity:
            raise ApiError(503, f"server busy with {self.name}; retry in a moment", {"Retry-After": "1"})
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        finally:
            self.in_flight -= 1


class Slots:
    """At most ``capacity`` of something in progress, server-wide; one more is refused (503) at once.

    Touched only on the event loop's thread, so it needs no lock.
    """

    def __init__(self, what: str, capacity: int):
        self.what = what
        self.capacity = capacity
        self.held = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold one while the block runs; all taken: :class:`ApiError` 503, closing the unread body's connection."""
        if self.held >= self.capacity:
            raise ApiError(
                503, f"server busy with {self.what}; retry in a moment", {"Retry-After": "1", "Connection": "close"}
            )
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1


def _lower_priority(nice: int) -> None:
    """Raise this thread's nice value (Linux: per thread); elsewhere, or if refused, run as is."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):
        pass
