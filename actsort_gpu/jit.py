"""Numba, imported on first use: whether it runs here, and functions jitted with a disk cache.

Every compiled loop in the package (``preprocess.compiled``, ``active.qp``, ``features.shapes``)
has a NumPy / SciPy / Python twin that gives the same result where Numba does not import or a
kernel fails to compile; :func:`available` and :func:`why` are how callers decide and say which
ran.
"""

from __future__ import annotations

from functools import cache, lru_cache

__all__ = ["available", "jitted", "why"]


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
