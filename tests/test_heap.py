"""release_free_heap: freed heap memory leaves the resident set (glibc), a no-op elsewhere."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from actsort_gpu import heap

STATUS = Path("/proc/self/status")


def _anon_kb() -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(
    heap._malloc_trim() is None or not STATUS.exists(), reason="needs glibc's malloc_trim"
)
def test_freed_heap_blocks_leave_the_resident_set():
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 << 10  # below glibc's mmap threshold: served from the heap
    blocks = [libc.malloc(size) for _ in range(3000)]  # 192 MB
    for b in blocks:
        ctypes.memset(b, 1, size)  # touched: resident
    for b in blocks[:-1]:  # the last one keeps the heap's top from being trimmed on free
        libc.free(b)
    held = _anon_kb()
    assert heap.release_free_heap()
    released = held - _anon_kb()
    libc.free(blocks[-1])
    assert released > 150_000  # kB: most of the 192 MB freed


def test_without_malloc_trim_nothing_happens(monkeypatch):
    monkeypatch.setattr(heap, "_malloc_trim", lambda: None)
    assert heap.release_free_heap() is False


@pytest.mark.skipif(not STATUS.exists(), reason="needs /proc/self/status")
def test_resident_anon_bytes_counts_touched_memory():
    before = heap.resident_anon_bytes()
    block = bytearray(64 << 20)  # zero-filled by calloc: touch every page
    for i in range(0, len(block), 4096):
        block[i] = 1
    grown = heap.resident_anon_bytes() - before
    del block
    assert 60 << 20 < grown < 80 << 20


def test_resident_anon_bytes_is_none_without_proc(monkeypatch):
    def no_file(*args, **kwargs):
        raise FileNotFoundError("/proc/self/status")

    monkeypatch.setattr("builtins.open", no_file)
    assert heap.resident_anon_bytes() is None
