"""node.allocator in a fresh process each (the settings are process-wide): Arrow's system
pool unless the user chose another, and glibc's mmap threshold kept from rising after a large
free during the intake, and heap blocks again for the rounds (observed through mallinfo2's
count of mmapped blocks)."""

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, json, sys

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

if sys.argv[1] in ("apply", "rounds"):
    from node.allocator import give_back_freed_memory, settle_for_rounds
    give_back_freed_memory()
    if sys.argv[1] == "rounds":
        settle_for_rounds()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
libc.free(libc.malloc(8 << 20))  # glibc's own rule: the threshold rises to 8 MiB here
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)  # 1 MiB: mmapped only if the threshold stayed low
mmapped = libc.mallinfo2().hblks - before
import pyarrow
print(json.dumps({"mmapped": mmapped, "pool": pyarrow.default_memory_pool().backend_name}))
"""


def probe(mode: str, **env: str) -> dict:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MALLOC_MMAP_THRESHOLD_", "ARROW_DEFAULT_MEMORY_POOL")
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env={**clean, **env}, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_blocks_stay_mmapped_after_a_larger_free():
    assert probe("default")["mmapped"] == 0  # glibc alone: the 1 MiB block came from the heap
    assert probe("apply")["mmapped"] == 1
    assert probe("rounds")["mmapped"] == 0  # the rounds: from the heap again


def test_arrow_uses_the_system_pool_unless_the_user_chose_one():
    assert probe("default")["pool"] != "system"
    assert probe("apply")["pool"] == "system"
    assert probe("apply", ARROW_DEFAULT_MEMORY_POOL="jemalloc")["pool"] == "jemalloc"


def test_a_users_threshold_is_left_alone():
    assert probe("apply", MALLOC_MMAP_THRESHOLD_=str(16 << 20))["mmapped"] == 0
