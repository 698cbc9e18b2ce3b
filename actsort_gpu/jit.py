"""Numba, imported on first use: whether it runs here, and functions jitted with a disk cache.

Every compiled loop in the package (``preprocess.compiled``, ``active.qp``, ``features.shapes``)
has a NumPy / SciPy / Python twin that gives the same result where Numba does not import or a
kernel fails to compile; :func:`available` and :func:`why` are how callers decide and say which
ran.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache, lru_cache

__all__ = ["available", "jitted", "warm_in_background", "why"]


@lru_cache(maxsize=1)
def available() -> bool:
    """True when Numba imports."""
    try:
        import numba  # noqa: F401
    except Exception:  # ImportError, or a Numba that does not support this NumPy
        return False
    return True


@cache
def jitted(py_func):
    """``py_func`` jitted: compiled once per argument types (~1.6 s for the movie pass's
    accumulator) and cached on disk by Numba (beside the module, else in the user's cache
    directory), so later runs load it in milliseconds; where no cache directory is writable it
    is compiled in every process."""
    from numba import njit

    try:
        return njit(nogil=True, cache=True)(py_func)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return njit(nogil=True)(py_func)


def why(exc: Exception) -> str:
    """One line saying why a kernel could not run: the exception's type and first line."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def warm_in_background(*checks: Callable[[], str | None]) -> threading.Thread:
    """Run ``checks`` (kernels' ``*_unusable`` functions, which compile their kernel or load
    it from Numba's disk cache) on a daemon thread and return it. Where the first call would
    otherwise wait for a compile (the learner's L1 step: ~11 s after an install, ~0.7 s to load
    from the cache later), a long-lived program starts this first; a call that needs a kernel
    still being compiled waits for it (Numba compiles one function at a time)."""

    def run() -> None:
        for check in checks:
            check()

    thread = threading.Thread(target=run, name="numba-warm-up", daemon=True)
    thread.start()
    return thread
