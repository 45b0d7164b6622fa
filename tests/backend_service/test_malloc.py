"""The backend's C heap returns big blocks when they are freed (backend_service.malloc), where glibc's default
keeps them in the heap once a bigger one was freed."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
from backend_service import malloc
if sys.argv[1:] == ["settled"]:
    malloc.settle()
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
bigger = bytearray(8 << 20)
del bigger  # glibc's default: blocks up to this size now come from the heap and stay in it when freed
before = mallinfo2().hblks
block = bytearray(1 << 20)
print(mallinfo2().hblks - before)
"""


def mapped_blocks(*args: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True, timeout=60
    )
    return int(out.stdout)


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="not glibc >= 2.33")
def test_a_big_block_is_mapped_on_its_own_after_a_bigger_one_was_freed() -> None:
    assert mapped_blocks() == 0  # the default, as the test means it: otherwise it proves nothing
    assert mapped_blocks("settled") == 1
