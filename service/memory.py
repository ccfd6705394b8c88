"""Keep freed heap memory for reuse (glibc malloc), in processes that allocate and free large
numpy arrays on every request.

An identification builds a few dozen temporary arrays of 10^5-10^6 elements and frees them.
glibc hands allocations this large to mmap, or trims the freed top of its heap back to the
system, so the next request faults every page in again: at 10,000 songs that was 14 of a
clip's 22 ms of voting (the same code on memory already mapped: 8 ms), and 20 ms of the
server's 55 ms p50. Fixed thresholds keep such arrays on the heap and the freed heap mapped, so
a process's resident size settles at its peak working set instead of returning to the system.

The voting runs in worker threads (asyncio.to_thread), and glibc gives threads heaps (arenas)
of their own: each would keep the peak of the requests it happened to serve, and the process
several requests' worth. One arena keeps one: these threads allocate a few large arrays per
request, so they hardly ever wait for each other's allocations.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameter numbers, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

#: Allocations up to this size come from the heap (a one-hour file's samples at 11 kHz are
#: 160 MB); larger ones are still mapped and unmapped on their own.
MMAP_THRESHOLD = 256 << 20
#: Freed memory at the top of the heap is kept up to this much.
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Set the thresholds; False where the C library is not glibc (musl, macOS)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    ok = mallopt(_M_ARENA_MAX, 1) == 1 and ok
    if not ok:
        log.warning("mallopt refused the thresholds; freed memory is returned as usual")
    return ok
