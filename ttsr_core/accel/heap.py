"""Inference with freed tensor memory kept in the process heap instead of handed back to the kernel.

glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and
returns it with ``munmap`` when freed. The main network's feature maps at ×4 are ~100 MB each, so
every convolution, ReLU, upsampling and concatenation there pays for a fresh mapping: the kernel
zeroes and faults in every page. On the 2-core CPU of benchmarks/README.md a fresh 32-channel ×4
ReLU took 0.080 s against 0.006 s into memory already mapped, and a 3×3 convolution 0.19 s against
0.085 s. Inside :func:`retained_heap` allocations come from the heap (``M_MMAP_MAX`` = 0) and
freed memory stays there (a high ``M_TRIM_THRESHOLD``); on leaving, the defaults come back and
``malloc_trim`` returns the unused memory. Results are bit-identical: only where bytes live changes.
Elsewhere than glibc (musl, macOS, Windows) it does nothing.
"""
from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
DEFAULT_MMAP_MAX = 65536  # glibc's defaults, restored on leaving
DEFAULT_TRIM_THRESHOLD = 128 * 1024
RETAINED_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes a C int

_lock = threading.Lock()
_depth = 0


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # only glibc has it
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


def available() -> bool:
    """Whether this process's C library lets :func:`retained_heap` change anything."""
    return _LIBC is not None


@contextmanager
def retained_heap(enabled: bool = True) -> Iterator[None]:
    """Keep freed memory in the heap while inside (process-wide, nesting and thread safe)."""
    global _depth
    if not enabled or _LIBC is None:
        yield
        return
    with _lock:
        if _depth == 0:
            _LIBC.mallopt(M_MMAP_MAX, 0)
            _LIBC.mallopt(M_TRIM_THRESHOLD, RETAINED_TRIM_THRESHOLD)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _LIBC.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                _LIBC.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                _LIBC.malloc_trim(0)
