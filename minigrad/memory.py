"""Keep freed memory in the process for the next training step.

Every training step allocates the values the tape saves during the forward pass
and frees them all at the end of backward.  glibc's malloc then hands that
memory back to the OS, and the next forward pass faults it in again, one 4 KB
page at a time.  On a small VM that costs more than the arithmetic: an LSTM
step at B=32, T=50, H=128 took 8,000 page faults and 59 ms of CPU time, and
0 faults and 33 ms with the memory kept (PyTorch's CPU performance guide gives
the same advice for the same reason: swap in jemalloc or tcmalloc).
"""
from __future__ import annotations

import ctypes
import sys

# glibc <malloc.h>.  Setting either turns off glibc's own adjustment of the mmap threshold, so
# both are set: arrays up to 32 MB (glibc's largest threshold) come from the heap, whose top
# keeps up to M_TOP_PAD bytes of freed memory instead of returning it to the OS.
_M_TOP_PAD, _M_MMAP_THRESHOLD = -2, -3
_MMAP_THRESHOLD_MAX = 32 << 20


def retain_freed_memory(megabytes: int = 1024) -> bool:
    """Ask glibc's malloc to keep up to ``megabytes`` MB of freed heap memory instead of returning it.

    Arrays up to 32 MB are then served from the heap (glibc's mmap threshold is
    raised to its maximum), and up to ``megabytes`` of freed memory stays resident
    for the next step to reuse.  Process-wide (every library's arrays share the one
    heap) and lasting: call it once, before training.  ``minigrad-rnn`` calls it at
    start-up; ``python -m benchmarks.run --retain-freed-memory`` shows its effect.

    Returns:
        True if applied; False (and nothing changed) where the C library is not
        glibc, e.g. on macOS, Windows or musl.

    Raises:
        ValueError: ``megabytes`` is negative or not an integer.
    """
    if isinstance(megabytes, bool) or not isinstance(megabytes, int) or megabytes < 0:
        raise ValueError(f"retain_freed_memory: megabytes must be a non-negative integer; got {megabytes!r}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no mallopt: not glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    top_pad = min(megabytes << 20, 2**31 - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TOP_PAD, top_pad))
