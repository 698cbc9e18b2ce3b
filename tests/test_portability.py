"""Without the Linux-only facilities the fast paths use (``O_DIRECT``, the affinity call,
/proc's memory readings, ``madvise(MADV_DONTNEED)``, glibc's ``malloc_trim``), as on macOS or
a musl Linux: the demo runs end to end through the fallbacks and gives the same store (to
float32 rounding)."""

from __future__ import annotations

import mmap
import os

import numpy as np
import pytest

from actsort_gpu import heap
from actsort_gpu.cli import main
from actsort_gpu.preprocess import plan
from actsort_gpu.store import SortStore

#: the arrays every stage of the demo writes, compared between the two runs
ARRAYS = ("fov/mean", "fov/max", "fov/corr", "candidates/traces", "features/matrix")


def _demo(out) -> SortStore:
    assert (
        main(["demo", "--out", str(out), "--no-browser", "--no-progress", "--device", "cpu"]) == 0
    )
    return SortStore.open(out / "recording.actsort")


@pytest.fixture
def without_linux_facilities(monkeypatch):
    monkeypatch.delattr(os, "O_DIRECT", raising=False)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.delattr(mmap, "MADV_DONTNEED", raising=False)
    for module in (heap, plan):  # no /proc: memory readings are None
        monkeypatch.setattr(module, "proc_bytes", lambda path, field: None)
    monkeypatch.setattr(heap, "_malloc_trim", lambda: None)


def test_the_demo_runs_without_linux_only_facilities(tmp_path, capsys, request):
    linux = _demo(tmp_path / "linux")
    request.getfixturevalue("without_linux_facilities")
    assert heap.resident_anon_bytes() is None and plan.mem_available_bytes() is None
    assert not heap.release_free_heap()
    elsewhere = _demo(tmp_path / "elsewhere")
    assert "balanced accuracy vs truth" in capsys.readouterr().out
    # the same store to float32 rounding: without MemAvailable the pass's chunks follow a
    # fixed budget, so its sums run in another order
    for key in ARRAYS:
        a, b = linux.read(key), elsewhere.read(key)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(linux.snapshots(0), elsewhere.snapshots(0), rtol=1e-5, atol=1e-6)
