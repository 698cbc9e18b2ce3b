"""The movie pass's files: the scratch snapshots, the resume checkpoints and their digest.

- Scratch: ``<store>/.scratch/preprocess/snapshots.scratch`` (:data:`SCRATCH_NAME`), a memory
  map laid out block by block as the store's ``snapshots/data``, in :func:`scratch_dtype`.
  :func:`open_scratch` checks the free space first and reserves the blocks, so a full disk is
  an error message, not a SIGBUS. The pass writes it through the file
  (``io.direct.MappedFileWriter``: ``pwrite``, no page of the map touched), and the snapshot
  writer reads it back with ``pread`` into one reused buffer (``io.direct.FileBytes``): when
  the map's pages were touched, every page the pass wrote or read back counted in the resident
  memory, up to the scratch's size (9.2 GB at 100,000 candidates, benchmarks/RESULTS.md).
- Checkpoints: the accumulators and the next frame to read (``state.npz``, written to a
  temporary file then renamed) with ``meta.json`` holding the pass digest
  (:func:`pass_digest`: plan, movie shape / dtype / path / size / mtime, the caller's
  inputs); :func:`try_resume` loads them only when the digest matches.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from .kernels import ProjectionAccumulator
from .plan import PassPlan

log = logging.getLogger(__name__)

__all__ = [
    "SCRATCH_NAME",
    "scratch_dtype",
    "pass_digest",
    "save_state",
    "try_resume",
    "state_bytes",
    "write_json",
    "open_scratch",
    "check_free_space",
    "disk_error",
]

SCRATCH_NAME = "snapshots.scratch"


def scratch_dtype(movie_dtype) -> np.dtype:
    """dtype of the scratch snapshots: the movie's if an integer or float of <= 4 bytes (the
    values are copied exactly), else float32."""
    dt = np.dtype(movie_dtype)
    return dt if dt.kind in "uif" and dt.itemsize <= 4 else np.dtype(np.float32)


def save_state(
    scratch: Path,
    acc: ProjectionAccumulator,
    next_frame: int,
    digest: str,
    name: str = "state",
    nonfinite: int = 0,
):
    """Write the accumulators, ``next_frame`` and the non-finite pixel values read as 0 up to
    it atomically (temporary file, fsync, rename), then the digest (``meta.json``, or
    ``<name>.json`` for a Dask piece)."""
    tmp = scratch / f"{name}.tmp.npz"
    with open(tmp, "wb") as fh:
        np.savez(fh, next_frame=np.array(next_frame), nonfinite=np.array(nonfinite), **acc.state())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, scratch / f"{name}.npz")
    write_json(
        scratch / f"{name}.json" if name != "state" else scratch / "meta.json",
        {"digest": digest, "next_frame": int(next_frame)},
    )


def state_bytes(height: int, width: int) -> int:
    """Disk bytes of the checkpoints, at most: the saved state (about 8 float64 (H, W)
    accumulators, ``ProjectionAccumulator.state``) and its temporary copy."""
    return 2 * 10 * 8 * int(height) * int(width)


def write_json(path: Path, obj: dict):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def try_resume(
    scratch: Path, digest: str, acc: ProjectionAccumulator, name: str = "state"
) -> tuple[int, int]:
    """Load the saved state if it belongs to this plan. Returns (the frame to continue from,
    the non-finite pixel values read as 0 before it); (0, 0) when there is none."""
    meta_p = scratch / ("meta.json" if name == "state" else f"{name}.json")
    state_p = scratch / f"{name}.npz"
    if not (meta_p.is_file() and state_p.is_file()):
        return 0, 0
    try:
        meta = json.loads(meta_p.read_text())
        if meta.get("digest") != digest:
            log.warning(
                "%s: the saved state is for other parameters or another version of the movie "
                "(size / mtime changed); starting the pass from frame 0",
                scratch,
            )
            return 0, 0
        with np.load(state_p) as st:
            state = {k: st[k] for k in st.files}
        acc.load(state)
        # a state saved before the count was kept: 0 (the report then misses that part)
        return int(state["next_frame"]), int(state.get("nonfinite", 0))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("%s: unreadable saved state (%s); starting from frame 0", scratch, exc)
        return 0, 0


def _movie_stamp(path: Path) -> list:
    """[size in bytes, newest mtime] of the movie file or folder; [] for an in-memory movie.

    Part of the pass digest: a movie edited in place (same shape, new content) between a
    killed pass and its resume gives another digest, so the pass restarts instead of mixing
    old and new frames."""
    path = Path(path)
    if not path.exists():
        return []
    files = [q for q in path.rglob("*") if q.is_file()] if path.is_dir() else [path]
    stats = [q.stat() for q in files]
    return [sum(st.st_size for st in stats), max((st.st_mtime_ns for st in stats), default=0)]


def pass_digest(plan: PassPlan, movie, inputs: str = "") -> str:
    """Identifies a pass: the plan (frames, crops, offsets), the movie's shape, dtype, path,
    size and mtime, and ``inputs`` (the caller's fingerprint of what the plan came from, e.g.
    the store's ingest record)."""
    facts = [list(movie.shape), str(movie.dtype), str(movie.path), _movie_stamp(movie.path)]
    return hashlib.sha256((plan.digest() + json.dumps(facts) + inputs).encode()).hexdigest()


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.3g}"


def disk_error(code: int, message: str) -> OSError:
    """An OSError with ``errno`` ``code`` whose text is ``message`` alone (no "[Errno N]"):
    the CLI prints it as the one line it is."""
    err = OSError(message)
    err.errno = code
    return err


def check_free_space(folder: Path, need_bytes: int, what: str) -> None:
    """OSError(ENOSPC) "needs N GB in DIR, M GB free" unless ``folder`` has ``need_bytes``."""
    free = shutil.disk_usage(folder).free
    if need_bytes > free:
        raise disk_error(
            errno.ENOSPC,
            f"{what} needs {_gb(need_bytes)} GB in {folder}, {_gb(free)} GB free; free some "
            f"space (or move the store to a larger disk) and run again",
        )


def open_scratch(snap_path: Path, nbytes: int, fresh: bool, extra_bytes: int = 0) -> None:
    """Create (or keep, when resuming) the scratch file of ``nbytes`` with its blocks reserved.

    A memory-mapped write to a block the disk cannot provide kills the process with SIGBUS:
    the free space is checked first (plus ``extra_bytes`` for the checkpoints) and the blocks
    are reserved with ``posix_fallocate``, so a full disk is an error message, not a crash.
    """
    keep = not fresh and snap_path.is_file() and snap_path.stat().st_size == nbytes
    held = snap_path.stat().st_blocks * 512 if snap_path.is_file() else 0
    need = max(nbytes + extra_bytes - held, 0)
    check_free_space(snap_path.parent, need, f"{snap_path}: the movie pass")
    if not keep:
        with open(snap_path, "wb") as fh:
            fh.truncate(nbytes)
    fd = os.open(snap_path, os.O_RDWR)
    try:
        if nbytes:
            os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            log.info("%s: cannot reserve the scratch blocks (%s)", snap_path, exc.strerror)
        else:
            raise disk_error(
                exc.errno, f"{snap_path}: cannot reserve {_gb(nbytes)} GB ({exc.strerror})"
            ) from exc
    finally:
        os.close(fd)
