"""The chunk files of a sort store's arrays: what each stage left, and whether it is still there.

zarr reads a missing chunk file as the array's fill value, without an error. A store copied or
synced in part (an interrupted ``cp`` or ``rsync``, a cloud folder still syncing to a second
computer) would feed zeros to the features, the learner and the page. So the end of every stage
records, for every array of the store, how many chunk files it holds and their bytes
(:func:`chunk_manifest`, kept in the store's ``chunk_files`` attribute), and a reader compares an
array with that record before it first reads it (:func:`chunk_files`, ``SortStore.array``).

The store is a local zarr v3 folder: an array is a folder with a ``zarr.json`` whose
``node_type`` is ``array``, its chunks the files under its ``c/`` folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["chunk_files", "chunk_manifest", "describe_change"]


def chunk_files(array_dir: Path) -> tuple[int, int]:
    """(number of chunk files, their total bytes) of the zarr v3 array in ``array_dir``."""
    count = size = 0
    for folder, _, files in os.walk(Path(array_dir) / "c"):
        for name in files:
            if name.startswith("."):  # a writer's temporary file, not a chunk
                continue
            count += 1
            size += os.stat(os.path.join(folder, name)).st_size
    return count, size


def chunk_manifest(root: Path) -> dict[str, list[int]]:
    """{array path in the store: [chunk files, bytes]} of every array under ``root``."""
    root = Path(root)
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "c" and not d.startswith(".")]
        if "zarr.json" not in files or Path(folder) == root:
            continue
        try:
            meta = json.loads((Path(folder) / "zarr.json").read_text())
        except (OSError, ValueError):
            continue  # a damaged node is refused when it is opened
        if meta.get("node_type") == "array":
            name = Path(folder).relative_to(root).as_posix()
            out[name] = list(chunk_files(Path(folder)))
    return out


def describe_change(recorded: list[int], now: tuple[int, int]) -> str | None:
    """What changed between the recorded (files, bytes) and now, in words; None if nothing."""
    (files_then, bytes_then), (files_now, bytes_now) = recorded, now
    if files_now < files_then:
        return f"{files_then - files_now} of its {files_then} chunk files are missing"
    if files_now > files_then:
        return f"it holds {files_now} chunk files where {files_then} were written"
    if bytes_now != bytes_then:
        return f"its chunk files hold {bytes_now} bytes where {bytes_then} were written"
    return None
