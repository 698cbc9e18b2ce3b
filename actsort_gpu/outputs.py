"""Output files a command replaces: only its own earlier ones, and whole.

A command that writes a file the user names (an export, a simulation's JSON and plot, an
encoder checkpoint) may meet an existing file there. It replaces it only when it is an
earlier output of the same kind (``is_own``), so a mistyped name never destroys a movie,
notes or another program's file; the check runs before any long computation. The new file is
written beside the old one and moved onto it, so a killed command never leaves half a file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["check_replaceable", "replace_whole"]


def check_replaceable(path: str | Path, is_own: Callable[[Path], bool], what: str) -> None:
    """Raise FileExistsError (IsADirectoryError for a folder) naming ``path`` unless it is
    missing or ``is_own(path)`` says it is an earlier ``what`` of actsort; a file ``is_own``
    cannot read counts as someone else's."""
    path = Path(path)
    if not path.exists():
        return
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder (a {what} is written to a file)")
    try:
        own = bool(is_own(path))
    except Exception:  # unreadable as that kind of file: not one of ours
        own = False
    if not own:
        raise FileExistsError(
            f"{path}: exists and is not an earlier {what} of actsort, so it is not "
            "replaced; name a new file or a folder, or move that file away first"
        )


def replace_whole(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` for a temporary file beside ``path`` (same suffix), put it on disk
    (``fsync``), then move it onto ``path`` with the replaced file's permissions; returns
    ``path``. The temporary file (its name is this process's and thread's: two writers never
    share one) never outlives the call."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.actsort-{os.getpid()}-{threading.get_ident()}{path.suffix}")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # on disk before it replaces the old file
        finally:
            os.close(fd)
        if path.exists():  # the replaced file's permissions stay (a group-readable export)
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except OSError as exc:  # "disk full", "permission denied": said of the file asked for
        if exc.errno is None:
            raise
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path
