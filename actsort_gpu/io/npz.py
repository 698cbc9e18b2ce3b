"""Generic ``.npz`` extraction output (``numpy.savez``), for any extractor without a reader.

Keys
- ``footprints``: (N, H, W) dense float array, **or** CSR parts ``footprints_data`` (nnz,),
  ``footprints_indices`` (nnz,) pixel index = row * W + col, ``footprints_indptr`` (N + 1,)
  together with ``height`` and ``width`` (scalars);
- ``traces``: (N, T) float;
- optional ``fs_hz`` (scalar), ``metric_<name>`` (N,) -> metric ``<name>``,
  ``image_<name>`` (H, W) -> image ``<name>``.
Loaded with ``allow_pickle=False``: the file cannot run code.
"""

from __future__ import annotations

import logging
import zipfile
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ._footprints import check_compressed, check_fov, csr_from_dense_blocks
from .candidates import Candidates, RowBlockTraces

log = logging.getLogger(__name__)

__all__ = ["read_npz", "write_npz"]


def _npy_header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy stream ``fh``, left at its first data byte."""
    major, _ = np.lib.format.read_magic(fh)
    read = (
        np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read(fh)
    return tuple(int(v) for v in shape), bool(fortran), dtype


def _member_shape(z, key: str) -> tuple[int, ...] | None:
    """Shape of array ``key`` of an open .npz from its .npy header (nothing else is read)."""
    try:
        with z.zip.open(f"{key}.npy") as fh:
            return _npy_header(fh)[0]
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, EOFError):
        return None  # read_npz's own read of the array reports the problem


def _array(z, key: str, path: Path) -> np.ndarray:
    try:
        return z[key]
    except ValueError as exc:  # object arrays (allow_pickle=False), bad headers
        raise ValueError(f"{path}: array {key!r} cannot be read: {exc}") from exc


def _plain_member(z, key: str):
    """(info, shape, dtype, header_bytes, fortran) of array ``key`` of an open .npz when its
    .npy header says a numeric 2-D array and the member is not encrypted; None otherwise (the
    whole read then reports any problem). Only the header is read."""
    try:
        info = z.zip.getinfo(f"{key}.npy")
        if info.flag_bits & 0x1:  # encrypted
            return None
        with z.zip.open(info) as fh:
            shape, fortran, dtype = _npy_header(fh)
            header_bytes = fh.tell()
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, zlib.error, EOFError):
        return None
    if dtype.hasobject or dtype.kind not in "biuf" or len(shape) != 2:
        return None
    return info, shape, dtype, header_bytes, fortran


def _mapped_member(z, key: str, path: Path) -> np.memmap | None:
    """Array ``key`` of an open .npz as a read-only memory map of the file, when the member is
    stored uncompressed (``numpy.savez``) as a numeric 2-D array (C or Fortran order, as the
    array was); None otherwise (compressed: ``numpy.savez_compressed``, see
    :func:`_streamed_member`). Ingest then reads the matrix by blocks of rows and releases
    the pages it read (``candidates.mapped_row_traces``): a 4 GB trace matrix never becomes
    resident whole."""
    member = _plain_member(z, key)
    if member is None or member[0].compress_type != zipfile.ZIP_STORED:
        return None
    info, shape, dtype, header_bytes, fortran = member
    with open(path, "rb") as raw:  # the member's local header: its name and extra field
        raw.seek(info.header_offset)
        local = raw.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise OSError(f"{path}: member {key}.npy has no local header (corrupt .npz?)")
    name_len = int.from_bytes(local[26:28], "little")
    extra_len = int.from_bytes(local[28:30], "little")
    offset = info.header_offset + 30 + name_len + extra_len + header_bytes
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if offset + nbytes > path.stat().st_size or header_bytes + nbytes > info.file_size:
        raise OSError(f"{path}: member {key}.npy is shorter than its header says (truncated?)")
    if nbytes == 0:
        return None
    order = "F" if fortran else "C"
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)


class _MemberRows:
    """Rows of a 2-D array stored compressed in a .npz, decompressed in order: ``rows`` ->
    (len, T) array of the member's dtype. One decompression stream stays open between calls
    (ingest reads the blocks in order: each pass decompresses the member once); a block
    before the stream's position reopens it; reaching the last row closes it. A member that
    cannot be decompressed raises OSError naming the file and the rows."""

    def __init__(self, path: Path, member: str, shape: tuple[int, int], dtype: np.dtype):
        self.path, self.member = path, member
        self.n_rows, self.row_bytes = shape[0], shape[1] * dtype.itemsize
        self.dtype = dtype
        self._zip = self._fh = None
        self._next = 0  # the row the open stream is at

    def __call__(self, rows: slice) -> np.ndarray:
        try:
            if self._fh is None or rows.start < self._next:
                self.close()
                self._zip = zipfile.ZipFile(self.path)
                self._fh = self._zip.open(self.member)
                _npy_header(self._fh)
                self._next = 0
            while self._next < rows.start:  # skip, at most one block's bytes at a time
                step = min(rows.start - self._next, max(1, (64 << 20) // max(self.row_bytes, 1)))
                self._read(step)
                self._next += step
            data = self._read(rows.stop - rows.start)
            self._next = rows.stop
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            self.close()
            raise OSError(
                f"{self.path}: cannot read rows {rows.start}-{rows.stop} of {self.member} "
                f"(corrupt or truncated?): {exc}"
            ) from exc
        if self._next >= self.n_rows:
            self.close()
        return np.frombuffer(data, self.dtype).reshape(rows.stop - rows.start, -1)

    def _read(self, n_rows: int) -> bytes:
        want = n_rows * self.row_bytes
        data = self._fh.read(want)
        if len(data) != want:
            raise EOFError(f"the member ends {want - len(data)} bytes early")
        return data

    def close(self) -> None:
        for handle in (self._fh, self._zip):
            if handle is not None:
                handle.close()
        self._zip = self._fh = None

    __del__ = close


def _streamed_member(z, key: str, path: Path) -> RowBlockTraces | None:
    """Array ``key`` of an open .npz, stored compressed (``numpy.savez_compressed``) as a
    C-ordered numeric 2-D array, as a :class:`RowBlockTraces` decompressed block by block
    (float32 rows); None when it is not such a member (the whole read reports problems)."""
    member = _plain_member(z, key)
    if member is None or 0 in member[1] or member[4]:  # Fortran order: rows not in sequence
        return None
    info, shape, dtype, _, _ = member
    return RowBlockTraces(shape, _MemberRows(path, info.filename, shape, dtype))


#: a trace matrix read whole from a .npz above this size gets a line saying how to avoid it
WHOLE_READ_NOTE_BYTES = 1 << 30


def _note_whole_read(z, path: Path) -> None:
    """Log when a large trace matrix must be read whole (compressed in Fortran order: neither
    mapped nor decompressed by rows)."""
    try:
        info = z.zip.getinfo("traces.npy")
    except KeyError:
        return
    if info.file_size > WHOLE_READ_NOTE_BYTES:
        log.warning(
            "%s: 'traces' (%.1f GB) is stored compressed in Fortran order, so ingest holds it "
            "whole in memory; saved C-ordered (np.ascontiguousarray) or uncompressed "
            "(numpy.savez) it is read by blocks of rows",
            path,
            info.file_size / 1e9,
        )


def _scalar_int(z, key: str, path: Path) -> int:
    value = _array(z, key, path)
    if value.size != 1 or value.dtype.kind not in "iu":
        raise ValueError(f"{path}: {key!r} must be one integer, got {value.dtype} {value.shape}")
    return int(value.reshape(()))


def read_npz(path: str | Path, *, movie_shape: tuple[int, int, int] | None = None) -> Candidates:
    """Read a generic ``.npz`` (see the module docstring) into Candidates.

    movie_shape : the movie's shape, when known: the field of view is checked against it before
        the footprints are read (``_footprints.check_fov``).
    """
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
        keys = set(z.files)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise OSError(f"{path}: not a readable .npz file (corrupt or truncated?): {exc}") from exc
    try:
        with z:
            if "traces" not in keys:
                raise KeyError(f"{path}: no 'traces' array; keys found: {sorted(keys)}")
            if "footprints" in keys:
                shape = _member_shape(z, "footprints")
                if shape is not None and len(shape) == 3:
                    check_fov(shape[1], shape[2], f"{path}: 'footprints'", movie_shape)
                fp = _array(z, "footprints", path)
                if fp.ndim != 3:
                    raise ValueError(
                        f"{path}: 'footprints' has shape {fp.shape}, expected (N, H, W)"
                    )
                if fp.dtype.kind not in "biuf":
                    raise ValueError(f"{path}: 'footprints' has dtype {fp.dtype}, expected numbers")
                n, h, w = fp.shape
                h, w = check_fov(h, w, f"{path}: 'footprints'", movie_shape)
                footprints = csr_from_dense_blocks(lambda a, b: fp[a:b], n, h, w)
            elif {
                "footprints_data",
                "footprints_indices",
                "footprints_indptr",
                "height",
                "width",
            } <= keys:
                h, w = check_fov(
                    _scalar_int(z, "height", path),
                    _scalar_int(z, "width", path),
                    f"{path}: height x width",
                    movie_shape,
                )
                indptr = _array(z, "footprints_indptr", path)
                indices = _array(z, "footprints_indices", path)
                data = _array(z, "footprints_data", path)
                n = len(indptr) - 1 if indptr.ndim == 1 else -1
                check_compressed(indptr, indices, data, max(n, 0), h * w, str(path))
                footprints = sp.csr_matrix((data, indices, indptr), shape=(n, h * w))
            else:
                raise KeyError(
                    f"{path}: no 'footprints' (N, H, W) nor CSR parts footprints_data/"
                    f"indices/indptr + height, width; keys found: {sorted(keys)}"
                )
            traces = _mapped_member(z, "traces", path)
            if traces is None:
                traces = _streamed_member(z, "traces", path)
            if traces is None:
                _note_whole_read(z, path)
                traces = _array(z, "traces", path)
            metrics = {
                k[len("metric_") :]: _array(z, k, path) for k in keys if k.startswith("metric_")
            }
            images = {
                k[len("image_") :]: _array(z, k, path) for k in keys if k.startswith("image_")
            }
            fs = None
            if "fs_hz" in keys:
                value = _array(z, "fs_hz", path)
                if value.size != 1 or value.dtype.kind not in "iuf":
                    raise ValueError(f"{path}: 'fs_hz' must be one number, got {value!r}")
                fs = float(value.reshape(()))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise OSError(f"{path}: cannot read an array (corrupt or truncated?): {exc}") from exc
    return Candidates(
        footprints, traces, h, w, "npz", path, metrics=metrics, images=images, fs_hz=fs
    )


def write_npz(
    path: str | Path,
    footprints: sp.csr_matrix,
    traces: np.ndarray,
    height: int,
    width: int,
    *,
    fs_hz: float | None = None,
    metrics: dict | None = None,
    images: dict | None = None,
) -> None:
    """Write the generic layout (CSR parts) that :func:`read_npz` reads."""
    fp = sp.csr_matrix(footprints)
    arrays = {
        "footprints_data": fp.data,
        "footprints_indices": fp.indices,
        "footprints_indptr": fp.indptr,
        "height": np.int64(height),
        "width": np.int64(width),
        "traces": np.asarray(traces),
    }
    if fs_hz is not None:
        arrays["fs_hz"] = np.float64(fs_hz)
    arrays.update({f"metric_{k}": np.asarray(v) for k, v in (metrics or {}).items()})
    arrays.update({f"image_{k}": np.asarray(v) for k, v in (images or {}).items()})
    np.savez(path, **arrays)
