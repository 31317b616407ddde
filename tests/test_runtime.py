"""vidiff.runtime: a training process keeps freed memory for reuse instead of handing it back to the kernel."""

import subprocess
import sys

import pytest

# The child allocates one 16 MiB block at start-up and prints how many bytes glibc holds in mmapped blocks
# (mallinfo2().hblkhd). With glibc's defaults (mmap threshold 128 KiB until a free raises it) the block is
# mmapped, so freeing it unmaps it and the next allocation page-faults it in again; with keep_freed_memory
# it comes from the heap, which keeps it. The faults this saves in a training step are measured by
# scripts/bench/train_step.py (docs/benchmarks.md); counts of faults in a small test vary between runs with
# glibc's dynamic threshold, this layout does not.
CHILD = """
import ctypes, sys
from vidiff.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
before = libc.mallinfo2().hblkhd
block = libc.malloc(16 << 20)
print(libc.mallinfo2().hblkhd - before)
"""


def mmapped_bytes(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_training_blocks_come_from_the_heap_that_keeps_them():
    assert mmapped_bytes("default") >= 16 << 20
    assert mmapped_bytes("keep") == 0


def test_keep_freed_memory_is_idempotent():
    from vidiff.runtime import keep_freed_memory

    assert keep_freed_memory() == keep_freed_memory()
