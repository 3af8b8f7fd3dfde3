"""The C allocator told to give freed image memory back to the system (glibc only).

Decoded images are tens to hundreds of megabytes, freed within a second. glibc's default
raises its mmap threshold each time such a block is freed (up to 32 MiB), after which
blocks below it come from per-thread heaps that keep their freed pages; with one heap per
thread (up to 8 x cores) a server that had decoded 20 large references kept 1.5 GB it no
longer used, although every cache was within its byte budget
(benchmarks/memory_references.py). A fixed mmap threshold (256 KiB: every image buffer is
mapped, and unmapped when freed) and two heaps keep the resident size at what is live:
571 MB instead of 1,550 MB in that run. Operators' own ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_ARENA_MAX`` win. Elsewhere (macOS, musl) nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger("castframe")

M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024
ARENAS = 2


def bound_heap_retention() -> bool:
    """Apply the settings above (module doc); True when glibc took them. Call early, before
    the process starts its threads (a thread's heap is made at its first allocation)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    applied = True
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and applied
    if "MALLOC_ARENA_MAX" not in os.environ:
        applied = bool(mallopt(M_ARENA_MAX, ARENAS)) and applied
    if not applied:
        log.warning("the C allocator refused its settings; freed images may stay resident")
    return applied
