"""In-process sites for analytics tests: each site's coroutine runs concurrently under trio
and `total` sums one vector from every site (as the swarm's secure sum does), so the real
protocol of lock-step sums is exercised without a network."""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import trio

from node.analytics import Total


class SumBarrier:
    """`total` for n sites: returns, to each, the sum of the n vectors of the same call."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pending: list[np.ndarray] = []
        self.done = trio.Event()
        self.result = np.zeros(0)
        self.calls = 0

    async def total(self, vector: np.ndarray) -> np.ndarray:
        vector = np.asarray(vector, np.float64)
        if self.pending and self.pending[0].shape != vector.shape:
            raise AssertionError(f"sites summed vectors of shapes {self.pending[0].shape} and "
                                 f"{vector.shape} in one call")  # fmt: skip
        self.pending.append(vector)
        done = self.done
        if len(self.pending) == self.n:
            self.result, self.pending = np.sum(self.pending, axis=0), []
            self.calls += 1
            self.done = trio.Event()
            done.set()
        else:
            await done.wait()
        return self.result


def run_sites(frames: Sequence[Any], work: Callable[[Any, Total], Awaitable[Any]]) -> list[Any]:
    """`work(frame, total)` at every site at once; each site's result (or the exception it
    raised) in site order."""
    results: list[Any] = [None] * len(frames)
    barrier = SumBarrier(len(frames))

    async def one(i: int) -> None:
        try:
            results[i] = await work(frames[i], barrier.total)
        except Exception as exc:  # every site should fail alike: the test compares them
            results[i] = exc

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(len(frames)):
                nursery.start_soon(one, i)

    trio.run(main)
    return results
