"""Blocking work (training, scoring) off the event loop, unless it is too short to be worth it.

A worker thread keeps the node's host serving peers while a long job runs. Handing a job to
a thread costs two wake-ups across threads, which on a machine shared by many nodes means a
few milliseconds of scheduling each round: more than a small model's whole training step.
So a job whose last run took less than `inline_below` seconds of CPU runs on the event loop
itself, blocking it about that long; the first run, and any after a long one, go to a thread.
"""

import time
from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")

INLINE_BELOW_SECONDS = 0.01


class Offload:
    """One kind of job (its durations decide where the next run goes)."""

    def __init__(
        self,
        inline_below: float = INLINE_BELOW_SECONDS,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self.inline_below = inline_below
        self.limiter = limiter  # shared by jobs that should not run at once (None: trio's)
        self.last_seconds: float | None = None  # the job's CPU time in its last run

    @property
    def inline(self) -> bool:
        return self.last_seconds is not None and self.last_seconds < self.inline_below

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self.inline:
            result = self._timed(fn, *args)
            await trio.lowlevel.checkpoint()  # still a point where the loop may switch or cancel
            return result
        return await trio.to_thread.run_sync(self._timed, fn, *args, limiter=self.limiter)

    def _timed(self, fn: Callable[..., T], *args: object) -> T:
        # CPU time, not wall-clock: on a busy machine a short job is often preempted midway,
        # which says nothing about how much work it is.
        began = time.thread_time()
        try:
            return fn(*args)
        finally:
            self.last_seconds = time.thread_time() - began
