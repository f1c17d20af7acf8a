"""Native memory: have glibc's allocator give freed memory back, so a long run's RSS follows what it uses.

Frames (640x360 RGB is 675 KiB), decoder and encoder buffers are allocated and freed by many threads.
glibc mmaps blocks above its mmap threshold and unmaps them when freed, but the first time such a block
is freed it raises the threshold to that block's size (up to 32 MiB): from then on frame-sized blocks
come from its arenas (up to 8 per core, one per thread that found the others busy), and what they free
stays mapped wherever a block still in use sits above it. A run that adds, removes and reconnects
cameras then grows its RSS in steps, while Python's own allocations stay flat.

    tune_allocator()        # once, at start: large blocks always mmapped, so returned when freed
    release_free_memory()   # after a stream is removed: the arenas' free pages go back

Both are no-ops where the C library is not glibc (musl, macOS). `MALLOC_MMAP_THRESHOLD_` in the
environment wins over the setting here; `MALLOC_ARENA_MAX=2` lowers the level a little more (measured in
docs/RELIABILITY.md) at the price of more lock contention between allocating threads on large machines.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024
"""Blocks at least this large (frames, decoder buffers) are mmapped and unmapped when freed: glibc's
initial threshold, fixed so that it is never raised. The cost is the page faults of each new frame's
pages, a small part of decoding or rendering the frame."""


def _glibc():
    """The process's glibc, or None (another C library, or another OS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.malloc_trim.argtypes = [ctypes.c_int, ctypes.c_int], [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def tune_allocator() -> bool:
    """Fix glibc's mmap threshold (see the module docstring) unless the environment sets it. Call at start,
    before the pipeline's threads; returns False where glibc is not the allocator."""
    if _LIBC is None:
        return False
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    return True


def release_free_memory() -> None:
    """Return the free pages of every arena to the system (glibc `malloc_trim(0)`): a walk over the arenas,
    cheap next to starting or stopping a stream, which is when it is called."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
