"""Compute device selection: ``auto`` | ``cpu`` | ``cuda``.

The backend never crashes when CuPy, the CUDA driver or a GPU is missing: ``auto`` (and
``cuda``, with a warning) falls back to the CPU and logs one line saying why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Backend", "resolve_backend", "cuda_unavailable_reason", "DEVICES"]

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Backend:
    """Where array work runs.

    name : "cpu" or "cuda"
    xp : the array module (numpy or cupy)
    torch_device : the torch device string ("cpu" or "cuda")
    """

    name: str
    xp: object
    torch_device: str

    @property
    def is_gpu(self) -> bool:
        return self.name == "cuda"


@lru_cache(maxsize=1)
def cuda_unavailable_reason() -> str | None:
    """None when CuPy can run kernels on a GPU, else a one-line reason."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'actsort-gpu[gpu]')"
    try:
        # is_available() is False without raising when no driver exists; the device count
        # raises CUDARuntimeError (a RuntimeError) on a driverless machine (docs/environment.md).
        if not cupy.cuda.is_available() or cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy found no CUDA GPU"
        cupy.zeros(1).sum().get()
    except (RuntimeError, OSError, ImportError) as exc:
        return f"CUDA is not usable ({type(exc).__name__}: {exc})"
    return None


def _torch_cuda_ok() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_backend(device: str = "auto") -> Backend:
    """Pick the backend for ``device`` in ``DEVICES``.

    ``cuda`` when no GPU is usable falls back to the CPU with a warning (a laptop user who
    copied a workstation's config must still be able to run); ``auto`` does so with an info line.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return Backend("cpu", np, "cpu")
    reason = cuda_unavailable_reason()
    if reason is None:
        import cupy

        return Backend("cuda", cupy, "cuda" if _torch_cuda_ok() else "cpu")
    level = logging.WARNING if device == "cuda" else logging.INFO
    log.log(level, "using the CPU: %s", reason)
    return Backend("cpu", np, "cpu")
