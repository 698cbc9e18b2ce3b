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


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """Run a test once with NumPy and, on a GPU machine, once with CuPy."""
    import numpy as np

    return np if request.param == "numpy" else pytest.importorskip("cupy")
