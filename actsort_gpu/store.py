"""The sort store: one zarr v3 directory per recording, the only seam between stages.

Every stage reads its inputs from the store and writes its outputs back (docs/store_schema.md
lists every array, its shape, dtype, units and the stage that writes it). Stages record their
parameters, timings and status (``complete`` / ``incomplete``) in the root attributes, so a
killed stage is visible and ``actsort info`` can say what is done.

Arrays are compressed with Blosc lz4 + byte shuffle: on two cores, compression work and not the
disk sets the ceiling, and zarr's default zstd is 2-4x slower to write (docs/environment.md).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import scipy.sparse as sp
import zarr
from zarr.codecs import BloscCodec

from . import __version__

log = logging.getLogger(__name__)

__all__ = ["SortStore", "SCHEMA_VERSION", "StoreError", "file_fingerprint", "STAGES"]

SCHEMA_VERSION = 1
STAGES = ("ingest", "preprocess", "features", "embed")
_COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
_TARGET_CHUNK_BYTES = 8 * 2**20


class StoreError(RuntimeError):
    """A store that is missing, corrupt, from a newer schema, or lacks a stage's output."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def file_fingerprint(path: str | Path, *, content_hash: bool = False) -> dict[str, Any]:
    """Path (as given and resolved), size in bytes, mtime and optionally a SHA-256 of the content.

    A folder (Suite2p plane, TIFF series, zarr) gets the total size and the newest mtime of its
    files; its hash covers the files' names and contents in sorted order.
    """
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    info: dict[str, Any] = {
        "path": str(path),
        "resolved": str(path.resolve()),
        "size_bytes": int(sum(p.stat().st_size for p in files)),
        "mtime": max((p.stat().st_mtime for p in files), default=0.0),
    }
    if content_hash:
        digest = hashlib.sha256()
        for p in files:
            if path.is_dir():
                digest.update(str(p.relative_to(path)).encode())
            with open(p, "rb") as fh:
                while block := fh.read(16 * 2**20):
                    digest.update(block)
        info["sha256"] = digest.hexdigest()
    return info


def _default_chunks(shape: Sequence[int], itemsize: int) -> tuple[int, ...]:
    """Chunk along the first axis so that one chunk holds about 8 MB."""
    if len(shape) == 0:
        return ()
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * itemsize if len(shape) > 1 else itemsize
    rows = max(1, min(int(shape[0]) or 1, _TARGET_CHUNK_BYTES // max(row_bytes, 1)))
    return (rows, *[max(int(s), 1) for s in shape[1:]])


class SortStore:
    """A sort store on disk (zarr v3 directory, conventionally named ``*.actsort``).

    Create with :meth:`create`, open with :meth:`open`. Attribute ``path`` is the directory;
    ``attrs`` is the root attribute dict (read-only view; change it with :meth:`update_attrs`).

    Shape facts used everywhere: ``n_candidates`` (N), ``n_frames`` (T, trace frames at the
    extractor's rate), ``height`` (H) and ``width`` (W) of the field of view in pixels.
    """

    def __init__(self, path: Path, root: zarr.Group, mode: str):
        self.path = path
        self._root = root
        self.mode = mode

    # ------------------------------------------------------------------ open / create
    @classmethod
    def create(cls, path: str | Path, *, overwrite: bool = False) -> "SortStore":
        """Create an empty store at ``path``; refuses to replace an existing one unless asked."""
        path = Path(path)
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path}: already exists (pass overwrite=True / --overwrite)")
            if path.is_dir() and (path / "labels" / "journal.jsonl").exists():
                # Labels are the one thing a user cannot recompute: never delete them silently.
                raise FileExistsError(
                    f"{path}: holds human labels (labels/journal.jsonl); move it away or export "
                    f"the labels before overwriting")
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        root = zarr.open_group(str(path), mode="w", zarr_format=3)
        root.attrs.update({
            "schema_version": SCHEMA_VERSION,
            "package_version": __version__,
            "created": _now(),
            "stages": {},
        })
        log.debug("created store %s", path)
        return cls(path, root, "r+")

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "SortStore":
        """Open an existing store (``mode`` 'r' or 'r+'), checking it is one and its schema."""
        path = Path(path)
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such sort store")
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path}: not a sort store (no zarr.json; create it with `actsort ingest`)")
        try:
            root = zarr.open_group(str(path), mode=mode, zarr_format=3)
            attrs = dict(root.attrs)
        except (ValueError, KeyError, OSError) as exc:
            raise StoreError(f"{path}: cannot read the store metadata ({exc})") from exc
        version = attrs.get("schema_version")
        if version is None:
            raise StoreError(f"{path}: not a sort store (no schema_version attribute)")
        if int(version) > SCHEMA_VERSION:
            raise StoreError(
                f"{path}: written with store schema {version} by actsort-gpu "
                f"{attrs.get('package_version', '?')}; this is actsort-gpu {__version__}, which "
                f"reads schema <= {SCHEMA_VERSION}: upgrade actsort-gpu")
        return cls(path, root, mode)

    # ------------------------------------------------------------------ attributes
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._root.attrs)

    def update_attrs(self, **values: Any) -> None:
        self._check_writable()
        self._root.attrs.update(values)

    def _check_writable(self) -> None:
        if self.mode == "r":
            raise StoreError(f"{self.path}: opened read-only")

    @property
    def n_candidates(self) -> int:
        return int(self.attrs["n_candidates"])

    @property
    def n_frames(self) -> int:
        return int(self.attrs["n_frames"])

    @property
    def height(self) -> int:
        return int(self.attrs["height"])

    @property
    def width(self) -> int:
        return int(self.attrs["width"])

    @property
    def labels_dir(self) -> Path:
        return self.path / "labels"

    # ------------------------------------------------------------------ stages
    def begin_stage(self, stage: str, params: dict[str, Any] | None = None) -> None:
        """Mark ``stage`` incomplete (a crash leaves it so) and record its parameters."""
        stages = self.attrs.get("stages", {})
        stages[stage] = {"status": "incomplete", "started": _now(), "params": params or {},
                         "package_version": __version__}
        self.update_attrs(stages=stages)

    def finish_stage(self, stage: str, seconds: float, **extra: Any) -> None:
        """Mark ``stage`` complete with its wall time and any extra facts (JSON-ready)."""
        stages = self.attrs.get("stages", {})
        entry = stages.get(stage, {})
        entry.update({"status": "complete", "finished": _now(), "seconds": round(seconds, 3),
                      **extra})
        stages[stage] = entry
        self.update_attrs(stages=stages)

    def stage_status(self, stage: str) -> str | None:
        """'complete', 'incomplete' or None (never run)."""
        return self.attrs.get("stages", {}).get(stage, {}).get("status")

    def require(self, *stages: str) -> None:
        """Raise StoreError naming the command to run when a needed stage is not complete."""
        for stage in stages:
            status = self.stage_status(stage)
            if status != "complete":
                state = "was interrupted" if status == "incomplete" else "has not been run"
                raise StoreError(f"{self.path}: stage '{stage}' {state}; run "
                                 f"`actsort {stage} {self.path}` first")

    # ------------------------------------------------------------------ dense arrays
    def has(self, name: str) -> bool:
        try:
            self._root[name]
        except KeyError:
            return False
        return True

    def array(self, name: str) -> zarr.Array:
        """The zarr array ``name`` (e.g. 'candidates/traces'), for sliced reads and writes."""
        try:
            node = self._root[name]
        except KeyError:
            raise StoreError(f"{self.path}: no array '{name}' in the store") from None
        if not isinstance(node, zarr.Array):
            raise StoreError(f"{self.path}: '{name}' is a group, not an array")
        return node

    def read(self, name: str, selection: Any = slice(None)) -> np.ndarray:
        """Read ``name`` (optionally a selection, e.g. a slice of rows) into a NumPy array."""
        return np.asarray(self.array(name)[selection])

    def create_array(self, name: str, shape: Sequence[int], dtype: Any, *,
                     dims: Sequence[str], units: str = "", chunks: Sequence[int] | None = None,
                     fill_value: Any = 0, attrs: dict[str, Any] | None = None) -> zarr.Array:
        """Create (replacing any old one) an array to be filled piece by piece."""
        self._check_writable()
        dtype = np.dtype(dtype)
        if len(dims) != len(shape):
            raise ValueError(f"{name}: {len(dims)} dims {list(dims)} for shape {tuple(shape)}")
        chunks = tuple(chunks) if chunks is not None else _default_chunks(shape, dtype.itemsize)
        chunks = tuple(max(1, min(int(c), max(int(s), 1))) for c, s in zip(chunks, shape))
        return zarr.create_array(
            store=self._root.store, name=name, shape=tuple(int(s) for s in shape), dtype=dtype,
            chunks=chunks, compressors=_COMPRESSOR, fill_value=fill_value, overwrite=True,
            dimension_names=list(dims),
            attributes={"dims": list(dims), "units": units, **(attrs or {})})

    def write_array(self, name: str, data: Any, *, dims: Sequence[str], units: str = "",
                    chunks: Sequence[int] | None = None,
                    attrs: dict[str, Any] | None = None) -> zarr.Array:
        """Write a whole NumPy array as ``name`` with its dims, units and extra attributes."""
        data = np.asarray(data)
        arr = self.create_array(name, data.shape, data.dtype, dims=dims, units=units,
                                chunks=chunks, attrs=attrs)
        if data.size:
            arr[...] = data
        return arr

    def delete(self, name: str) -> None:
        self._check_writable()
        if self.has(name):
            del self._root[name]

    # ------------------------------------------------------------------ sparse (CSR)
    def write_csr(self, name: str, matrix: sp.csr_matrix, *, units: str = "",
                  attrs: dict[str, Any] | None = None) -> None:
        """Store a CSR matrix as group ``name`` with ``indptr``, ``indices``, ``data``."""
        matrix = sp.csr_matrix(matrix)
        matrix.sort_indices()
        self.write_array(f"{name}/indptr", matrix.indptr.astype(np.int64), dims=["rows+1"])
        self.write_array(f"{name}/indices", matrix.indices.astype(np.int32), dims=["nonzeros"])
        self.write_array(f"{name}/data", matrix.data.astype(np.float32), dims=["nonzeros"],
                         units=units)
        group = self._root[name]
        group.attrs.update({"shape": [int(s) for s in matrix.shape], "format": "csr",
                            "units": units, **(attrs or {})})

    def read_csr(self, name: str, rows: slice | None = None) -> sp.csr_matrix:
        """Read CSR ``name``, or only the block of ``rows`` (a slice with step 1)."""
        try:
            group = self._root[name]
        except KeyError:
            raise StoreError(f"{self.path}: no sparse matrix '{name}' in the store") from None
        shape = tuple(group.attrs["shape"])
        start, stop, step = (rows or slice(None)).indices(shape[0])
        if step != 1:
            raise ValueError("read_csr reads contiguous row blocks only (step 1)")
        indptr = np.asarray(group["indptr"][start:stop + 1], dtype=np.int64)
        lo, hi = int(indptr[0]), int(indptr[-1])
        indices = np.asarray(group["indices"][lo:hi])
        data = np.asarray(group["data"][lo:hi])
        return sp.csr_matrix((data, indices, indptr - lo), shape=(stop - start, shape[1]))

    # ------------------------------------------------------------------ ragged arrays
    def write_ragged(self, name: str, pieces: Iterable[np.ndarray], *, dtype: Any,
                     dims: Sequence[str], units: str = "",
                     attrs: dict[str, Any] | None = None) -> None:
        """Store a list of arrays of varying length along axis 0 as ``data`` + ``offsets``.

        ``offsets`` has n_items + 1 entries; item i is ``data[offsets[i]:offsets[i + 1]]``.
        """
        pieces = [np.asarray(p, dtype=dtype) for p in pieces]
        lengths = np.array([len(p) for p in pieces], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        inner = pieces[0].shape[1:] if pieces else ()
        data = (np.concatenate(pieces, axis=0) if pieces and offsets[-1] > 0
                else np.zeros((0, *inner), dtype=dtype))
        self.write_array(f"{name}/data", data, dims=list(dims), units=units)
        self.write_array(f"{name}/offsets", offsets, dims=["items+1"])
        self._root[name].attrs.update({"format": "ragged", **(attrs or {})})

    def read_ragged(self, name: str, items: slice | None = None) -> list[np.ndarray]:
        """Read the ragged array ``name`` as a list (optionally only ``items``, a slice)."""
        offsets = self.read(f"{name}/offsets")
        start, stop, _ = (items or slice(None)).indices(len(offsets) - 1)
        lo, hi = int(offsets[start]), int(offsets[stop])
        data = self.read(f"{name}/data", slice(lo, hi))
        return [data[offsets[i] - lo:offsets[i + 1] - lo] for i in range(start, stop)]

    # ------------------------------------------------------------------ typed accessors
    def footprints(self, rows: slice | None = None) -> sp.csr_matrix:
        """Max-normalised footprints (N, H*W) CSR float32; pixel index = row * W + col."""
        return self.read_csr("candidates/footprints", rows)

    def traces(self, rows: Any = slice(None)) -> np.ndarray:
        """Traces (N, T) float32 in the extractor's units, at the extractor's frame rate."""
        return self.read("candidates/traces", rows)

    def snapshots(self, index: int) -> np.ndarray:
        """Event snapshots of one candidate, dequantised: (n_events, frames_per_event, h, w) float32.

        Slots of missing events (``candidates/events`` == -1) and frames outside the movie
        (``snapshots/frames`` == -1) are zeros.
        """
        self.require("preprocess")
        return self.snapshots_block(slice(index, index + 1))[0]

    def snapshots_block(self, items: slice, *, dequantise: bool = True) -> list[np.ndarray]:
        """Snapshots of a contiguous block of candidates (list of float32 4-D arrays).

        dequantise : True gives movie units. False gives the stored codes (for integer storage
            an increasing affine map of movie units per candidate, cheaper when only the shape
            of the data matters), with missing frames set to the code of the value 0 and a
            constant candidate (hi <= lo) set to zeros.
        """
        start, stop, _ = items.indices(self.n_candidates)
        crops = self.read("candidates/crops", slice(start, stop))
        scale = self.read("snapshots/scale", slice(start, stop))
        frames = self.read("snapshots/frames", slice(start, stop))
        offsets = self.read("snapshots/offsets", slice(start, stop + 1))
        data = self.read("snapshots/data", slice(int(offsets[0]), int(offsets[-1])))
        q_max = _quant_max(data.dtype)
        out = []
        for k in range(stop - start):
            h = int(crops[k, 1] - crops[k, 0])
            w = int(crops[k, 3] - crops[k, 2])
            raw = data[offsets[k] - offsets[0]:offsets[k + 1] - offsets[0]]
            block = raw.reshape(frames.shape[1], frames.shape[2], h, w).astype(np.float32)
            missing = frames[k] < 0
            lo, hi = float(scale[k, 0]), float(scale[k, 1])
            if q_max is None:
                zero_value = 0.0
            elif dequantise:
                block = lo + block * np.float32((hi - lo) / q_max)
                zero_value = 0.0
            elif hi <= lo:
                block[...] = 0.0
                zero_value = 0.0
            else:
                zero_value = -lo / (hi - lo) * q_max
            block[missing] = zero_value
            out.append(block)
        return out

    # ------------------------------------------------------------------ summary
    def summary(self) -> str:
        """A readable multi-line description for ``actsort info``."""
        a = self.attrs
        lines = [f"sort store   {self.path}",
                 f"schema       {a.get('schema_version')} (actsort-gpu {a.get('package_version')}, "
                 f"created {a.get('created')})"]
        movie = a.get("movie")
        if movie:
            fs = movie.get("fs_hz")
            lines.append(
                f"movie        {movie.get('path')} [{movie.get('format')}] "
                f"{movie['n_frames']} x {a['height']} x {a['width']} "
                f"{movie.get('dtype')}" + (f", {fs:g} Hz" if fs else ", frame rate unknown"))
            if movie.get("temporal_downsample", 1) != 1:
                lines.append(f"             traces have {movie['temporal_downsample']}x the "
                             f"movie's frames (temporal downsampling)")
        ext = a.get("extraction")
        if ext:
            lines.append(f"extraction   {ext.get('path')} [{ext.get('format')}]")
        if "n_candidates" in a:
            n_empty = int(self.read("candidates/is_empty").sum()) if self.has(
                "candidates/is_empty") else 0
            lines.append(f"candidates   {a['n_candidates']:,} ({n_empty} with empty footprints), "
                         f"{self.n_frames:,} trace frames")
        metrics = sorted(self._root["candidates/source_metrics"].array_keys()) if self.has(
            "candidates/source_metrics") else []
        if metrics:
            lines.append(f"source info  {', '.join(metrics)}")
        lines.append("stages")
        for stage in (*STAGES, *sorted(set(a.get("stages", {})) - set(STAGES))):
            info = a.get("stages", {}).get(stage)
            if info is None:
                lines.append(f"  {stage:<11} not run")
                continue
            took = f" in {info['seconds']:.1f} s" if "seconds" in info else ""
            lines.append(f"  {stage:<11} {info['status']}{took}")
        journal = self.labels_dir / "journal.jsonl"
        if journal.exists():
            n_lines = sum(1 for _ in open(journal, "rb"))
            lines.append(f"labels       {journal} ({n_lines} journal entries)")
        size = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        lines.append(f"size on disk {size / 2**20:,.1f} MiB")
        return "\n".join(lines)


def _quant_max(dtype: np.dtype) -> float | None:
    """Largest code of an integer snapshot dtype (None for float storage)."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else None


def quantise(block: np.ndarray, dtype: Any) -> tuple[np.ndarray, tuple[float, float]]:
    """Quantise a float block to ``dtype`` with its own (lo, hi) range; float dtypes pass through.

    Returns the codes and (lo, hi) such that value = lo + code / q_max * (hi - lo). The inverse
    is :meth:`SortStore.snapshots_block`. The error is at most (hi - lo) / (2 * q_max).
    """
    dtype = np.dtype(dtype)
    q_max = _quant_max(dtype)
    block = np.asarray(block, dtype=np.float32)
    if q_max is None:
        return block.astype(dtype), (0.0, 1.0)
    lo = float(block.min()) if block.size else 0.0
    hi = float(block.max()) if block.size else 0.0
    if hi <= lo:
        return np.zeros(block.shape, dtype=dtype), (lo, lo)
    codes = np.floor((block - lo) * (q_max / (hi - lo)) + 0.5)
    return np.clip(codes, 0, q_max).astype(dtype), (lo, hi)

