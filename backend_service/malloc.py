"""The C heap's settings for the backend's process (glibc's malloc), made once at start, before gRPC's
threads run.

Objects of 128 KiB or more (the big dicts of a full plan at 10,000 peers, the kernel dumps' 1 MiB receive
buffers) get pages of their own, returned when freed, instead of glibc's default, which raises that bound
to the largest block freed so far and then keeps such blocks in the heap, with the free space at its top
up to twice that; and gRPC's threads share two heaps instead of one each. Measured at 10,000 peers (the
backend's peak RSS at its initial sync, the same run otherwise): ~1.0-1.5 MB less.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

LARGE = 128 * 1024
"""Bytes from which a block is mapped on its own, and free space at the heap's top that is returned."""
ARENAS = 2


def settle() -> None:
    """Make the settings above; a C library without ``mallopt`` (not glibc) keeps its own."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt(M_MMAP_THRESHOLD, LARGE)
    mallopt(M_TRIM_THRESHOLD, LARGE)
    mallopt(M_ARENA_MAX, ARENAS)
