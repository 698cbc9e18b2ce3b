"""A user's ``.npy`` / ``.npz`` file, loaded without unpickling, with errors that name it.

NumPy's own message for a file that is neither (a text file, a half-copied download) speaks of
pickled data and ``allow_pickle``: advice to run the file. :func:`load_numpy` checks the magic
bytes first and says what the file is not.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

__all__ = ["load_numpy"]

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def load_numpy(path, what: str, kind: str = "npy"):
    """``np.load(path, allow_pickle=False)`` of ``path``: an array (``kind="npy"``) or an open
    ``NpzFile`` (``kind="npz"``; use it as a context manager).

    what : what the file should be, with its article, for the messages ("a labels file").
    Raises FileNotFoundError when it is missing and ValueError naming it when it is not a file
    of that kind, holds Python objects, or is truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (expected {what})")
    with open(path, "rb") as fh:
        head = fh.read(len(_NPY_MAGIC))
    if not head.startswith(_NPY_MAGIC if kind == "npy" else _ZIP_MAGIC):
        raise ValueError(
            f"{path}: not a NumPy .{kind} file (it starts with {head[:6]!r}); expected {what}"
        )
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        if "allow_pickle" in first or "Object arrays" in first:
            raise ValueError(
                f"{path}: holds Python objects, not numbers (never unpickled here); expected {what}"
            ) from None
        raise ValueError(
            f"{path}: not a readable .{kind} file (truncated or corrupt?): {first}; expected {what}"
        ) from None
