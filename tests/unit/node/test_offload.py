import threading
import time

import pytest
import trio

from node.offload import Offload


def where_it_ran() -> str:
    return threading.current_thread().name


def busy(seconds: float) -> str:
    """Burn CPU (not sleep: the rule is about work, and sleeping costs none)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    return threading.current_thread().name


async def run_twice(offload: Offload, fn, *args) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    return await offload.run(fn, *args), await offload.run(fn, *args)


def test_a_short_job_goes_to_a_thread_first_then_runs_on_the_loop() -> None:
    loop_thread = threading.current_thread().name
    first, second = trio.run(run_twice, Offload(inline_below=0.05), where_it_ran)
    assert first != loop_thread
    assert second == loop_thread


def test_a_long_job_keeps_going_to_a_thread() -> None:
    loop_thread = threading.current_thread().name
    offload = Offload(inline_below=0.001)
    first, second = trio.run(run_twice, offload, busy, 0.01)
    assert first != loop_thread and second != loop_thread
    assert offload.last_seconds is not None and offload.last_seconds >= 0.01


def test_a_job_that_grows_long_goes_back_to_a_thread() -> None:
    loop_thread = threading.current_thread().name
    offload = Offload(inline_below=0.005)

    async def main() -> list[str]:
        return [
            await offload.run(busy, 0.0),  # thread: nothing known yet
            await offload.run(busy, 0.02),  # inline: the last run was short
            await offload.run(busy, 0.0),  # thread: the last run was long
        ]

    assert [t == loop_thread for t in trio.run(main)] == [False, True, False]


def test_an_inline_job_is_still_a_cancel_point() -> None:
    offload = Offload(inline_below=1.0)

    async def main() -> bool:
        await offload.run(where_it_ran)
        with trio.CancelScope() as scope:
            scope.cancel()
            await offload.run(where_it_ran)
            return False
        return scope.cancelled_caught

    assert trio.run(main)


def test_a_failing_job_raises_and_is_still_timed() -> None:
    offload = Offload()

    def fail() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        trio.run(offload.run, fail)
    assert offload.last_seconds is not None
