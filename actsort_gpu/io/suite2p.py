"""Suite2p plane output: ``stat.npy``, ``F.npy``, ``Fneu.npy``, ``spks.npy``, ``iscell.npy``,
``ops.npy``.

``stat.npy`` and ``ops.npy`` are pickles (lists / dicts of arrays) and can run code when
loaded: they are loaded only from the folder the user named, never searched for elsewhere.

Accepted paths: a plane folder (``.../suite2p/plane0``), a ``suite2p`` folder holding exactly
one ``plane*`` folder (or the files directly), or the path of ``stat.npy``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from ..config import IngestConfig
from ._footprints import as_metric, check_fov, csr_from_pixel_lists
from .candidates import Candidates, RowBlockTraces
from .direct import release_memmap

log = logging.getLogger(__name__)

__all__ = [
    "read_suite2p",
    "resolve_plane_folder",
    "rois_differ",
    "SUITE2P_TRACES",
    "STAT_METRICS",
]

SUITE2P_TRACES = ("F", "F-0.7Fneu", "spks")
STAT_METRICS = ("skew", "compact", "npix_norm", "aspect_ratio")


def resolve_plane_folder(path: str | Path) -> Path:
    """The plane folder holding ``stat.npy`` for a plane folder, suite2p folder or stat path."""
    path = Path(path)
    if path.is_file():
        if path.name != "stat.npy":
            raise ValueError(f"{path}: expected a Suite2p folder or its stat.npy")
        return path.parent
    if (path / "stat.npy").is_file():
        return path
    planes = sorted(p.parent for p in path.glob("plane*/stat.npy"))
    if len(planes) == 1:
        return planes[0]
    if planes:
        raise ValueError(
            f"{path}: {len(planes)} plane folders ({', '.join(p.name for p in planes)}); "
            f"name one plane folder"
        )
    raise FileNotFoundError(
        f"{path}: no stat.npy here or in a plane*/ folder (expected a Suite2p output)"
    )


def _load(path: Path, pickle: bool, mmap: bool = False):
    """``np.load`` of a Suite2p file; ``mmap``: a read-only memory map (read as it is used;
    a Fortran-ordered one by runs of its columns, ``candidates.mapped_row_traces``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (Suite2p output needs it)")
    try:
        return np.load(path, allow_pickle=pickle, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as exc:
        raise OSError(f"{path}: not a readable .npy file (truncated or corrupt?): {exc}") from exc
    except Exception as exc:  # a corrupt pickle (stat.npy, ops.npy) raises almost any type
        if not pickle:
            raise
        raise OSError(
            f"{path}: not a readable Suite2p pickle (truncated or corrupt?): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


#: the median pixel-set overlap (intersection over union) of sampled ROIs below which a plane
#: folder's stat.npy is not the one a store was ingested from
SAME_ROIS_MIN_IOU = 0.9


def rois_differ(
    folder: Path, footprints, source_index: np.ndarray, width: int, samples: int = 64
) -> str | None:
    """Why the plane ``folder``'s ``stat.npy`` does not hold the ROIs a store was ingested
    from, or None when it does (or holds no stat.npy). ``footprints`` (N, H*W) CSR and
    ``source_index`` (N,) are the store's; up to ``samples`` candidates spread over the store
    are compared by their pixel sets (median IoU >= :data:`SAME_ROIS_MIN_IOU`): a Suite2p run
    again in the same folder, or another plane's folder with as many ROIs, gives other ROIs."""
    path = Path(folder) / "stat.npy"
    if not path.is_file():
        return None
    stat = _load(path, pickle=True)
    n_rois = int(source_index.max()) + 1 if len(source_index) else 0
    picks = np.unique(np.linspace(0, len(source_index) - 1, min(samples, len(source_index))))
    ious = []
    try:
        if len(stat) != n_rois:
            return f"{path}: {len(stat)} ROIs, but this store's candidates come from {n_rois}"
        for i in picks.astype(np.int64):
            roi = stat[int(source_index[i])]
            theirs = set((np.asarray(roi["ypix"]) * width + np.asarray(roi["xpix"])).tolist())
            ours = set(footprints[int(i)].indices.tolist())
            if theirs or ours:
                ious.append(len(theirs & ours) / len(theirs | ours))
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        return f"{path}: not Suite2p ROIs with ypix / xpix ({exc!r})"
    if ious and np.median(ious) < SAME_ROIS_MIN_IOU:
        return (
            f"{path}: its ROIs are not the ones this store was ingested from (median pixel "
            f"overlap {np.median(ious):.2f} over {len(ious)} ROIs): Suite2p run again in this "
            "folder, or another plane's folder?"
        )
    return None


def _pad_image(
    img: np.ndarray, ops: dict, height: int, width: int, name: str, where: Path
) -> np.ndarray | None:
    """Suite2p crops max_proj / Vcorr to ops yrange, xrange: put them back into (H, W)."""
    img = np.asarray(img, dtype=np.float32)
    if img.shape == (height, width):
        return img
    yr, xr = ops.get("yrange"), ops.get("xrange")
    if yr is None or xr is None or (yr[1] - yr[0], xr[1] - xr[0]) != img.shape:
        log.info(
            "%s: image %s of shape %s does not fit %d x %d nor ops yrange/xrange; skipped",
            where,
            name,
            img.shape,
            height,
            width,
        )
        return None
    out = np.full((height, width), float(img.min()) if img.size else 0.0, np.float32)
    out[yr[0] : yr[1], xr[0] : xr[1]] = img
    log.info(
        "%s: %s was cropped to rows %s, cols %s by Suite2p; padded back to %d x %d with "
        "its minimum",
        where,
        name,
        list(yr),
        list(xr),
        height,
        width,
    )
    return out


def _neuropil_corrected(f: np.ndarray, fneu: np.ndarray, coefficient: float) -> RowBlockTraces:
    """F - coefficient * Fneu (N, T) of the memory-mapped F and Fneu, computed block by block
    of rows when ingest reads it (each block's pages of both files released once used): the
    whole F, Fneu or difference is never held. Each block has the values of the one-line
    expression (in the wider of the two dtypes, then float32)."""
    c = np.float32(coefficient)
    wide = np.result_type(f.dtype, fneu.dtype, c)

    def block(rows: slice) -> np.ndarray:
        out = np.array(f[rows], dtype=wide)  # a copy: F itself is never changed
        out -= c * fneu[rows]
        release_memmap(f, rows)
        release_memmap(fneu, rows)
        return out

    return RowBlockTraces(f.shape, block)


def read_suite2p(
    path: str | Path,
    *,
    config: IngestConfig = IngestConfig(),
    progress: bool = False,
    movie_shape: tuple[int, int, int] | None = None,
) -> Candidates:
    """Read a Suite2p plane into Candidates.

    footprints: ``lam`` weights at (``ypix``, ``xpix``) of each ROI (FOV coordinates), H, W
        from ops ``Ly``, ``Lx``.
    traces: ``config.suite2p_trace``: 'F', 'F-0.7Fneu' (F - neuropil_coefficient * Fneu) or
        'spks'.
    metrics: ``suite2p_iscell`` (0/1), ``suite2p_iscell_prob``, and ``suite2p_<stat>`` for
        skew, compact, npix_norm, aspect_ratio (NaN where an ROI lacks it).
    images: ``suite2p_meanImg``, ``suite2p_max_proj``, ``suite2p_Vcorr`` (the last two padded
        back from ops yrange/xrange to (H, W)).
    fs_hz: ops ``fs``.
    movie_shape: the movie's shape when known: ops Ly, Lx are checked against it before
        anything of their size is allocated.
    """
    folder = resolve_plane_folder(path)
    if config.suite2p_trace not in SUITE2P_TRACES:
        raise ValueError(
            f"suite2p_trace must be one of {SUITE2P_TRACES}, got {config.suite2p_trace!r}"
        )
    stat = _load(folder / "stat.npy", pickle=True)
    ops = _load(folder / "ops.npy", pickle=True)
    ops = (
        ops.item()
        if isinstance(ops, np.ndarray) and ops.dtype == object and ops.shape == ()
        else ops
    )
    if not isinstance(ops, dict) or "Ly" not in ops or "Lx" not in ops:
        raise ValueError(f"{folder / 'ops.npy'}: expected a dict with Ly and Lx (Suite2p ops)")
    height, width = check_fov(ops["Ly"], ops["Lx"], f"{folder / 'ops.npy'} (Ly, Lx)", movie_shape)
    try:
        n = len(stat)
        rows = [np.asarray(s["ypix"]) for s in stat]
        cols = [np.asarray(s["xpix"]) for s in stat]
        lam = [np.asarray(s["lam"], dtype=np.float32) for s in stat]
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise ValueError(
            f"{folder / 'stat.npy'}: each ROI needs ypix, xpix, lam ({exc!r})"
        ) from exc
    footprints = csr_from_pixel_lists(rows, cols, lam, height, width, str(folder / "stat.npy"))

    name = {"F": "F.npy", "F-0.7Fneu": "F.npy", "spks": "spks.npy"}[config.suite2p_trace]
    # memory-mapped: ingest reads the traces (or F - c Fneu, computed) by blocks of rows
    traces = _load(folder / name, pickle=False, mmap=True)
    if traces.dtype.kind not in "biuf":
        raise ValueError(f"{folder / name}: dtype {traces.dtype}, expected numbers")
    if traces.ndim != 2 or traces.shape[0] != n:
        raise ValueError(
            f"{folder / name}: shape {traces.shape}, expected ({n}, n_frames): one "
            f"trace per ROI in stat.npy"
        )
    if config.suite2p_trace == "F-0.7Fneu":
        if not (folder / "Fneu.npy").is_file():
            raise FileNotFoundError(
                f"{folder / 'Fneu.npy'}: missing (the default trace F - 0.7 Fneu needs it; "
                "--suite2p-trace F uses F alone)"
            )
        fneu = _load(folder / "Fneu.npy", pickle=False, mmap=True)
        if fneu.shape != traces.shape or fneu.dtype.kind not in "biuf":
            raise ValueError(
                f"{folder / 'Fneu.npy'}: shape {fneu.shape} dtype {fneu.dtype}, expected "
                f"{traces.shape} numbers like F.npy"
            )
        traces = _neuropil_corrected(traces, fneu, config.neuropil_coefficient)

    metrics: dict[str, np.ndarray] = {}
    where = str(folder)
    if (folder / "iscell.npy").is_file():
        iscell = _load(folder / "iscell.npy", pickle=False)
        if iscell.dtype.kind not in "biuf" or iscell.ndim not in (1, 2):
            raise ValueError(
                f"{folder / 'iscell.npy'}: shape {iscell.shape} dtype {iscell.dtype}, expected "
                f"(n_rois, 2) numbers"
            )
        iscell = iscell.astype(np.float32)
        if iscell.ndim == 1:
            iscell = iscell[:, None]
        if iscell.shape[0] != n:
            raise ValueError(f"{folder / 'iscell.npy'}: {iscell.shape[0]} rows, expected {n}")
        metrics["suite2p_iscell"] = iscell[:, 0]
        if iscell.shape[1] > 1:
            metrics["suite2p_iscell_prob"] = iscell[:, 1]
    for key in STAT_METRICS:
        if any(key in s for s in stat):
            try:
                raw = [float(np.squeeze(s[key])) if key in s else np.nan for s in stat]
            except (TypeError, ValueError):
                log.info("%s: stat.npy %s is not one number per ROI; skipped", where, key)
                continue
            values = as_metric(raw, n, key, where)
            if values is not None:
                metrics[f"suite2p_{key}"] = values
    images = {}
    for key in ("meanImg", "max_proj", "Vcorr"):
        if ops.get(key) is not None:
            img = _pad_image(ops[key], ops, height, width, key, folder)
            if img is not None:
                images[f"suite2p_{key}"] = img
    fs = ops.get("fs")
    try:
        fs = float(fs) if fs is not None else None
    except (TypeError, ValueError):
        log.warning("%s: ops fs %r is not a number; frame rate unknown", folder / "ops.npy", fs)
        fs = None
    log.info("%s: Suite2p trace %s", folder, config.suite2p_trace)
    return Candidates(
        footprints,
        traces,
        height,
        width,
        "suite2p",
        folder,
        metrics=metrics,
        images=images,
        fs_hz=fs or None,
        movie_layout=_movie_layout(ops, folder),
        registration_shift_px=_largest_shift(ops),
        registered_movie=folder / "data.bin" if (folder / "data.bin").is_file() else None,
    )


def _largest_shift(ops: dict) -> float | None:
    """The largest rigid shift (px) Suite2p's registration applied to a frame (ops ``yoff``,
    ``xoff``); None when ops do not record it."""
    try:
        shifts = [np.abs(np.asarray(ops[k], dtype=np.float64)) for k in ("yoff", "xoff")]
    except (KeyError, TypeError, ValueError):
        return None
    if any(s.size == 0 or not np.isfinite(s).all() for s in shifts):
        return None
    return float(max(s.max() for s in shifts))


def _plane_index(ops: dict, folder: Path) -> int | None:
    """The plane of a Suite2p plane folder: ops ``iplane``, else the folder's name
    (``plane<k>``); None when neither says."""
    try:
        return int(ops["iplane"])
    except (KeyError, TypeError, ValueError):
        match = re.fullmatch(r"plane(\d+)", folder.name)
        return None if match is None else int(match.group(1))


def _movie_layout(ops: dict, folder: Path):
    """The channel, plane and rows of the raw movie's pages this plane was extracted from:
    ops ``nchannels``, ``functional_chan`` (1-based), ``nplanes`` and the plane (ops
    ``iplane``, else the folder's name ``plane<k>``); a multi-ROI (mesoscope) plane folder
    also records ``nrois`` (its ``nplanes`` counts planes x ROIs, ``iplane`` the plane) and
    the ROI's ``lines`` of the page. None for one channel, one plane and whole pages, or when
    ops do not say."""
    from .movies.interleave import Interleave

    try:
        channels = int(ops.get("nchannels", 1))
        planes = int(ops.get("nplanes", 1))
        channel = int(ops.get("functional_chan", 1))
        rows, planes = _roi_rows(ops, planes)
    except (TypeError, ValueError):
        return None
    if channels * planes <= 1 and rows is None:
        return None
    if planes <= 1:
        plane = 0
    elif rows is not None:  # a mesoscope folder planeJ counts ROIs x planes: ops only
        try:
            plane = int(ops["iplane"])
        except (KeyError, TypeError, ValueError):
            plane = None
    else:
        plane = _plane_index(ops, folder)
    if plane is None:
        return None
    try:
        return Interleave(planes=planes, plane=plane, channels=channels, channel=channel, rows=rows)
    except ValueError as exc:
        log.info("%s: ops' channels / planes not used (%s)", folder / "ops.npy", exc)
        return None


def _roi_rows(ops: dict, planes: int) -> tuple[tuple[int, int] | None, int]:
    """(The (first, stop) rows of the page a mesoscope ROI occupies, the planes of the
    recording) from ops ``lines`` and ``nrois`` (Suite2p counts each ROI of each plane as a
    plane); (None, ``planes``) for a recording of whole pages."""
    nrois = int(ops.get("nrois", 1) or 1)
    lines = ops.get("lines")
    if nrois <= 1 or lines is None:
        return None, planes
    lines = np.asarray(lines, dtype=np.int64).ravel()
    if lines.size == 0 or planes % nrois:
        raise ValueError(f"ops lines / nrois / nplanes disagree ({nrois} ROIs, {planes} planes)")
    return (int(lines[0]), int(lines[-1]) + 1), planes // nrois
