"""Give the C heap's free memory back to the operating system between large steps.

The feature stage allocates and frees many arrays of a few to a few tens of MB per block
(decoded store chunks, per-thread temporaries). glibc serves those from its heaps rather than
from fresh mappings once such a size has been freed (its mmap threshold rises up to 32 MB), and
it keeps freed heap memory resident, in each thread's arena, until told otherwise. On the
20,000 x 10,000 benchmark store that was 400-600 MB of resident memory that no live array
held (live arrays measured with ``tracemalloc``, which NumPy reports to, against ``RssAnon``).
``malloc_trim(0)`` returns every free page of every arena; pages reused afterwards are faulted
in again, which costs far less than the step it follows (benchmarks/RESULTS.md, "Feature stage
memory").

Elsewhere than glibc (macOS, musl, Windows) :func:`release_free_heap` does nothing.
:func:`resident_anon_bytes` says how much anonymous memory the process holds (Linux only): the
movie pass takes it off its default budget.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["release_free_heap", "resident_anon_bytes", "proc_bytes"]


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim`` or None where the C library has none."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim(0)``); True if any was
    returned, False if none was or the C library has no such call."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def resident_anon_bytes() -> int | None:
    """The process's resident anonymous memory in bytes (``RssAnon`` of /proc/self/status:
    the heap and anonymous maps, not the pages of mapped files), or None where there is no
    such file (not Linux)."""
    return proc_bytes("/proc/self/status", "RssAnon")


def proc_bytes(path: str, field: str) -> int | None:
    """A ``field: N kB`` line of a /proc file (``/proc/self/status``, ``/proc/meminfo``) in
    bytes, or None where the file or the field is missing (not Linux)."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
