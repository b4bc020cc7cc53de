"""Allocator settings that give the data intake's freed memory back to the system, applied at
the start of every medswarm process (the CLI's callback) and relaxed when the rounds begin.

glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB): after the
intake (pandas cleaning a node's columns, Arrow reading its Parquet file) arrays of those sizes
come from the heap, whose freed space is rarely returned, and Arrow's default pool (mimalloc)
keeps freed pages for reuse. So the intake runs with the threshold fixed at 128 KiB (every
larger block its own mapping, unmapped when freed) and Arrow's system pool. The rounds, which
allocate arrays of the same few sizes every round, take blocks below 2 MiB from the heap
(scoring goes in slices of that size, node.training.evaluate): a fresh mapping per array cost
about 15% more CPU in page faults.

Measured on the 20-site `bench scale` workload (inproc, two processes, complete graph, quiet
machine): peak 1,137 and 1,151 MB summed over the processes with glibc's and Arrow's defaults,
967 and 971 MB with these; CPU time of the whole run 42 s before, 32 to 36 s after.
"""

import ctypes
import os
from collections.abc import Callable

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
INTAKE_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value, kept from moving
ROUNDS_THRESHOLD_BYTES = 2 * 1024 * 1024  # above a scoring slice (4,096 rows x 64 floats)


def give_back_freed_memory() -> None:
    """Arrow's system pool instead of mimalloc, and glibc's mmap threshold fixed at 128 KiB
    (each only where the user has not chosen otherwise). Call before pyarrow allocates."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # children inherit it
    _set_threshold(INTAKE_THRESHOLD_BYTES)


def settle_for_rounds() -> None:
    """Blocks below 2 MiB from the heap again: called when a node's rounds begin (its intake
    done; in a shared process, every node's: they load before any round)."""
    _set_threshold(ROUNDS_THRESHOLD_BYTES)


def _set_threshold(size: int) -> None:
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:  # the user's choice, which glibc has applied
        return
    mallopt = _mallopt()
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, size)


def _mallopt() -> Callable[[int, int], int] | None:
    try:
        return ctypes.CDLL(None).mallopt  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc (musl, macOS): their own defaults
        return None
