"""Shared test fixtures: real-data location, thread limits, GPU marker handling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config):
    try:
        import torch

        # Two cores shared by the test process and subprocesses: one thread avoids a 10x slowdown
        # from oversubscription (docs/environment.md).
        torch.set_num_threads(1)
    except ImportError:
        pass


def pytest_collection_modifyitems(config, items):
    from actsort_gpu.backend import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"GPU test: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets at ../shared/data; fails (never skips) when missing."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA}: clone the project beside shared/")
    return SHARED_DATA


def _cupy_module(name: str, monkeypatch):
    if name == "cupy":
        return pytest.importorskip("cupy")
    import fake_cupy

    return fake_cupy.install(monkeypatch)


@pytest.fixture(params=[pytest.param("cupy", marks=pytest.mark.gpu), "fake_cupy"])
def cp(request, monkeypatch):
    """The GPU array module: CuPy on a GPU machine, and in every run tests/fake_cupy.py (CuPy's
    rules on host arrays: CPU CI runs every CuPy branch but the kernels' device code)."""
    return _cupy_module(request.param, monkeypatch)


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu), "fake_cupy"])
def xp(request, monkeypatch):
    """Run a test with NumPy, with the fake CuPy and, on a GPU machine, with CuPy."""
    import numpy as np

    return np if request.param == "numpy" else _cupy_module(request.param, monkeypatch)
