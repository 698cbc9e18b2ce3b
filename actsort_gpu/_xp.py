"""Array-module dispatch: one code path for NumPy (CPU) and CuPy (GPU)."""

from __future__ import annotations

import numpy as np

__all__ = ["get_xp", "to_numpy", "is_cupy"]


def is_cupy(array) -> bool:
    """True when ``array`` is a CuPy array (checked without importing CuPy)."""
    return type(array).__module__.split(".")[0] == "cupy"


def get_xp(*arrays, xp=None):
    """Return the array module of ``arrays`` (``numpy`` or ``cupy``).

    A caller that already knows the module passes ``xp`` and skips the check.
    Mixing host and device arrays raises ``ValueError`` naming both kinds.
    """
    if xp is not None:
        return xp
    kinds = {is_cupy(a) for a in arrays if a is not None and not np.isscalar(a)}
    if len(kinds) > 1:
        raise ValueError("arrays live on different devices: got both numpy and cupy arrays")
    if kinds == {True}:
        import cupy

        return cupy
    return np


def to_numpy(array) -> np.ndarray:
    """Copy a CuPy array (or torch tensor) to host memory; NumPy arrays pass through."""
    if is_cupy(array):
        return array.get()
    if type(array).__module__.split(".")[0] == "torch":
        return array.detach().cpu().numpy()
    return np.asarray(array)
