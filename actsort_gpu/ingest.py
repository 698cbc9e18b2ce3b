"""Ingest: check that a movie and an extraction output belong together, write a sort store.

``ingest(movie, candidates, out)`` is the core (a ``Movie`` and ``Candidates`` already opened);
``ingest_files(movie_path, extraction_path, out)`` opens both from paths first. Neither reads
the movie's pixels: only its shape. The movie is read once, later, by ``preprocess``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import schema
from .config import IngestConfig, as_dict
from .io.candidates import Candidates, trace_row_blocks
from .io.movies import Movie
from .store import SortStore, file_fingerprint

log = logging.getLogger(__name__)

__all__ = ["ingest", "ingest_files", "temporal_downsample_factor", "normalise_footprints"]


#: fewer movie frames than this make temporal downsampling implausible (a 1-frame image or a
#: 7-frame clip passed for the movie) unless ``IngestConfig.allow_downsampling``
MIN_DOWNSAMPLED_MOVIE_FRAMES = 100


def check_fs_hz(fs_hz, where: str = "--fs") -> float | None:
    """A frame rate given by the user: None, or a finite number > 0 (else ValueError)."""
    if fs_hz is None:
        return None
    try:
        value = float(fs_hz)
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{where}: frame rate must be a finite number > 0 Hz, got {fs_hz!r}")
    return value


def temporal_downsample_factor(
    n_trace_frames: int, n_movie_frames: int, *, trace_source: str, movie_source: str
) -> int:
    """The integer dt with n_movie_frames == n_trace_frames // dt, or a ValueError.

    ActSort allows a movie downsampled in time by an integer factor relative to the traces
    (block means of dt frames, a trailing remainder dropped: reference section 2 step 2).
    """
    if n_trace_frames == n_movie_frames:
        return 1
    if n_movie_frames < n_trace_frames and n_movie_frames > 0:
        dt = n_trace_frames // n_movie_frames
        if dt > 1 and n_trace_frames // dt == n_movie_frames:
            return dt
    pages = ""
    k = round(n_movie_frames / max(n_trace_frames, 1))
    if k >= 2 and abs(n_movie_frames - k * n_trace_frames) < k:
        pages = (
            f" The movie has {k}x the traces' frames: are {k} channels or planes interleaved "
            f"in its pages? --channels / --channel and --planes / --plane pick one."
        )
    raise ValueError(
        f"{trace_source}: traces have {n_trace_frames} frames but the movie {movie_source} has "
        f"{n_movie_frames}; expected equal counts, or a movie downsampled in time by an integer "
        f"factor (traces // factor == movie frames). Are these the movie and extraction of the "
        f"same recording?{pages}"
    )


def normalise_footprints(footprints: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Max-normalise each row (ActSort's thresholds assume a peak of about 1).

    Negative weights (CaImAn, NMF noise) are clipped to 0 first: a footprint is a non-negative
    spatial weight, and every ActSort threshold is on positive values.

    Returns (normalised CSR float32, peak (N,) float32 original maxima, is_empty (N,) bool).
    """
    fp = sp.csr_matrix(footprints, dtype=np.float32, copy=True)
    fp.data = np.where(np.isfinite(fp.data), np.maximum(fp.data, 0), 0).astype(np.float32)
    fp.eliminate_zeros()
    peak = np.asarray(fp.max(axis=1).todense(), dtype=np.float32).ravel()
    is_empty = peak <= 0
    scale = np.where(is_empty, 1.0, peak).astype(np.float32)
    fp.data /= np.repeat(scale, np.diff(fp.indptr))
    return fp, peak, is_empty


def _write_traces(store: SortStore, traces, policy: str, where: str) -> None:
    """Write the (N, T) trace matrix as ``schema.TRACES`` float32 by blocks of whole chunks of
    rows, checking each block as it goes (one read of the traces): a memory-mapped matrix's
    pages are released block by block, a :class:`~actsort_gpu.io.candidates.RowBlockTraces`
    is computed block by block, so neither is ever held whole.

    A value that is not finite as float32 (NaN, Inf, or beyond the float32 range) is, by
    ``policy``, an error naming the candidates after the whole matrix was counted ('error';
    the caller's half-built store is then discarded) or written as 0 with a warning ('zero').
    The caller's matrix is never changed.
    """
    arr = store.create_array(schema.TRACES, traces.shape, np.float32)
    bad_per_row = np.zeros(traces.shape[0], np.int64)
    for rows in trace_row_blocks(*traces.shape, mapped=traces, align=arr.chunks[0]):
        # one block alive at a time: the next is read after this one is written and freed
        arr[rows] = _finite_block(traces, rows, bad_per_row, zero=policy != "error")
    if not bad_per_row.any():
        return
    bad_rows = np.flatnonzero(bad_per_row)
    n_bad = int(bad_per_row.sum())
    shown = ", ".join(str(r) for r in bad_rows[:10]) + (" ..." if len(bad_rows) > 10 else "")
    if policy == "error":
        raise ValueError(
            f"{where}: {n_bad} NaN/Inf values in the traces of {len(bad_rows)} candidates "
            f"(indices {shown}; values beyond the float32 range count as Inf); fix the "
            f"extraction or ingest with --nonfinite zero to replace them by 0"
        )
    log.warning(
        "%s: replaced %d NaN/Inf trace values by 0 in %d candidates (indices %s)",
        where,
        n_bad,
        len(bad_rows),
        shown,
    )


def _finite_block(traces, rows: slice, bad_per_row: np.ndarray, zero: bool) -> np.ndarray:
    """``traces[rows]`` as float32; the count of its values that are not finite goes to
    ``bad_per_row[rows]``, and with ``zero`` they are 0 in the block returned (a copy)."""
    with np.errstate(over="ignore"):  # beyond float32: Inf, counted below
        block = np.asarray(traces[rows], dtype=np.float32)
    # A float64 sum of float32 values cannot overflow: it is finite iff every value is, so
    # a clean block (the usual case) needs no mask
    if np.isfinite(block.sum(dtype=np.float64)):
        return block
    finite = np.isfinite(block)
    bad_per_row[rows] = (~finite).sum(axis=1)
    return np.where(finite, block, np.float32(0)) if zero else block


#: below this pixel correlation between the extraction's mean image and the mean of the
#: movie's signature frames, ingest refuses the pair (matching recordings: 0.85-0.90 on the
#: real two-photon and one-photon data, 0.96-0.98 synthetic, 0.79 on the fault campaign's
#: tiny noisy movie; a mirrored movie -0.01 to 0.13, cells moved by 5-9 px 0.03)
MIN_MEAN_IMAGE_CORRELATION = 0.2


def check_mean_image(
    frames_mean: np.ndarray, images: dict, *, movie_path, where: str, n_sampled: int
) -> float | None:
    """Pixel correlation between the extraction's mean image (Suite2p ``meanImg``) and
    ``frames_mean``, the (H, W) mean of the movie's ``n_sampled`` signature frames
    (:meth:`~.io.movies.base.Movie.sample_frames`); ValueError naming both when it is below
    :data:`MIN_MEAN_IMAGE_CORRELATION` (another recording of the same shape, another channel or
    plane). None when the extraction has no mean image of that shape, or one is flat."""
    mean_image = next((v for k, v in images.items() if k.lower().endswith("meanimg")), None)
    if mean_image is None or mean_image.shape != frames_mean.shape:
        return None
    a, b = frames_mean.ravel(), np.asarray(mean_image, np.float64).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2 or a[ok].std() == 0 or b[ok].std() == 0:
        return None
    r = float(np.corrcoef(a[ok], b[ok])[0, 1])
    if r < MIN_MEAN_IMAGE_CORRELATION:
        raise ValueError(
            f"{movie_path}: its frames do not look like the mean image of {where} (pixel "
            f"correlation {r:.2f} over {n_sampled} frames; matching recordings measured "
            "0.79-0.98): another recording, channel or plane? If it is the right movie, pass "
            "--skip-image-check"
        )
    return r


def _frame_rate(movie, candidates: Candidates, dt: int) -> float | None:
    """The traces' frame rate from the movie's own record (ScanImage's settings, Suite2p's ops
    beside a data.bin; a movie downsampled in time by ``dt`` has dt times fewer frames per
    second), else the extraction's; a disagreement is logged (Suite2p's ``fs`` is often left
    at its default of 10 Hz)."""
    movie_fs = movie.fs_hz * dt if movie.fs_hz else None
    source_fs = candidates.fs_hz
    if movie_fs and source_fs and abs(movie_fs - source_fs) > 0.01 * movie_fs:
        log.warning(
            "%s records %.4g Hz, the movie %s %.4g Hz: using the movie's (--fs sets another)",
            candidates.source_path,
            source_fs,
            movie.path,
            movie_fs,
        )
    return movie_fs or source_fs


def ingest(
    movie: Movie,
    candidates: Candidates,
    out: str | Path,
    *,
    config: IngestConfig = IngestConfig(),
    overwrite: bool = False,
    extraction_fingerprint: dict | None = None,
) -> SortStore:
    """Validate ``movie`` against ``candidates`` and write a new sort store at ``out``.

    Parameters
    ----------
    movie : the recording, shape (T_movie, H, W); only its shape and metadata are used here.
    candidates : footprints (N, H*W) and traces (N, T) from an extraction reader.
    out : path of the store directory to create.
    config : ingest parameters (``nonfinite``: 'error' or 'zero'; ``fs_hz`` override, a
        finite number > 0; ``allow_downsampling``: accept a movie of fewer than
        :data:`MIN_DOWNSAMPLED_MOVIE_FRAMES` frames with fewer frames than the traces).
    overwrite : replace an existing sort store (never one holding labels, never an input of
        this call nor a folder or file that is not a sort store: ``SortStore.check_create``).

    Returns the open store (mode 'r+') with the ``ingest`` stage complete.
    """
    t0 = time.perf_counter()
    where = str(candidates.source_path)
    fs_given = check_fs_hz(config.fs_hz, "ingest.fs_hz (--fs)")
    SortStore.check_create(out, overwrite=overwrite, protect=(movie.path, candidates.source_path))
    if (candidates.height, candidates.width) != (movie.height, movie.width):
        raise ValueError(
            f"{where}: footprints are {candidates.height} x {candidates.width} pixels but the "
            f"movie {movie.path} is {movie.height} x {movie.width}; they must be the same field "
            f"of view (was the movie cropped, or motion-corrected with a different border?)"
        )
    dt = temporal_downsample_factor(
        candidates.n_frames, movie.n_frames, trace_source=where, movie_source=str(movie.path)
    )
    if dt > 1:
        if movie.n_frames < MIN_DOWNSAMPLED_MOVIE_FRAMES and not config.allow_downsampling:
            raise ValueError(
                f"{movie.path}: the movie has {movie.n_frames} frames for {candidates.n_frames} "
                f"trace frames in {where} ({dt}x temporal downsampling); a movie of fewer than "
                f"{MIN_DOWNSAMPLED_MOVIE_FRAMES} frames is more likely the wrong file. If the "
                f"downsampling is deliberate, pass --allow-downsampling"
            )
        log.log(
            logging.INFO if config.allow_downsampling else logging.WARNING,
            "movie %s has %d frames, traces %d: temporal downsampling by %dx (snapshot "
            "traces are means of %d trace frames; --allow-downsampling silences this warning)",
            movie.path,
            movie.n_frames,
            candidates.n_frames,
            dt,
            dt,
        )
    if candidates.n_candidates == 0:
        raise ValueError(f"{where}: the extraction output holds no candidates")
    signature, frames_mean = movie.sample_frames()  # one read of each frame for both
    if config.check_mean_image:
        check_mean_image(
            frames_mean,
            candidates.images,
            movie_path=movie.path,
            where=where,
            n_sampled=len(signature["frames"]),
        )
    footprints, peak, is_empty = normalise_footprints(candidates.footprints)
    if is_empty.any():
        log.warning(
            "%s: %d candidates have empty footprints (indices %s); they are kept and flagged in %s",
            where,
            int(is_empty.sum()),
            ", ".join(map(str, np.flatnonzero(is_empty)[:10])),
            schema.IS_EMPTY,
        )
    fs_hz = fs_given or _frame_rate(movie, candidates, dt)

    # Built beside `out` and moved there at the end: a failure (NaN in the traces, a cut
    # file, Ctrl-C) leaves what `out` held untouched.
    protect = (movie.path, candidates.source_path)
    with SortStore.build(out, overwrite=overwrite, protect=protect) as store:
        store.begin_stage("ingest", as_dict(config))
        n, t = candidates.n_candidates, candidates.n_frames
        store.update_attrs(
            n_candidates=n,
            n_frames=t,
            height=movie.height,
            width=movie.width,
            movie={
                **movie.describe(),
                "fs_hz": fs_hz,
                "temporal_downsample": dt,
                "fingerprint": file_fingerprint(movie.path) if movie.path.exists() else None,
                "signature": signature,
            },
            extraction={
                "path": where,
                "format": candidates.source_format,
                "fingerprint": extraction_fingerprint,
            },
        )
        store.write_csr(
            schema.FOOTPRINTS, footprints, attrs={"height": movie.height, "width": movie.width}
        )
        store.write_array(schema.FOOTPRINT_PEAK, peak)
        _write_traces(store, candidates.traces, config.nonfinite, where)
        store.write_array(schema.IS_EMPTY, is_empty)
        store.write_array(schema.SOURCE_INDEX, candidates.source_index.astype(np.int64))
        for name, values in candidates.metrics.items():
            store.write_source_metric(name, values)
        for name, image in candidates.images.items():
            store.write_source_image(name, image)
        store.finish_stage(
            "ingest", time.perf_counter() - t0, n_empty=int(is_empty.sum()), temporal_downsample=dt
        )
    log.info("ingested %d candidates x %d frames into %s", n, t, store.path)
    return store


def movie_interleave(config: IngestConfig, scanimage=None):
    """The ``io.movies.Interleave`` the config asks for (``movie_channels``, ``movie_channel``,
    ``movie_planes``, ``movie_plane``, ``movie_rows``, ``movie_roi``), or None when it names
    none. Without ``scanimage`` those not given are 1 channel, channel 1, 1 plane, plane 0,
    whole pages; with the ``ScanImageLayout`` of a movie that holds several, its counts and ROI
    rows fill them in (and a part it holds several of must be chosen)."""
    from .io.movies import Interleave

    given = {
        "channels": config.movie_channels,
        "channel": config.movie_channel,
        "planes": config.movie_planes,
        "plane": config.movie_plane,
        "rows": None if config.movie_rows is None else tuple(config.movie_rows),
    }
    if all(v is None for v in given.values()) and config.movie_roi is None:
        return None
    try:
        if scanimage is not None:
            chosen = scanimage.complete(**given, roi=config.movie_roi)
            log.info("%s: %s; reading %s", scanimage.path, scanimage.describe(), chosen.describe())
            return chosen
        if config.movie_roi is not None:
            raise ValueError(
                f"--roi {config.movie_roi} needs a ScanImage multi-ROI TIFF, whose settings "
                "give its ROIs' rows; give --rows FIRST:STOP"
            )
        return Interleave(**{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        raise ValueError(
            f"ingest (--channels / --channel / --planes / --plane / --rows / --roi): {exc}"
        ) from None


def movie_scanimage(movie_path, config: IngestConfig):
    """The ``ScanImageLayout`` of a ScanImage TIFF movie (or folder of parts), None for other
    movies. Settings that contradict each other are an error unless ``--planes`` says how to
    read the pages (then a warning)."""
    from .io.movies.scanimage import scanimage_layout

    try:
        return scanimage_layout(movie_path)
    except ValueError as exc:
        if config.movie_planes is None:
            raise
        log.warning(
            "%s; reading %d pages per time point as --planes says", exc, config.movie_planes
        )
        return None


#: a registration that shifted frames by more than this (px) makes an unregistered movie's
#: snapshots drift visibly from the outlines
MAX_UNREGISTERED_SHIFT_PX = 2.0


def _warn_if_unregistered(candidates: Candidates, movie_path) -> None:
    """Warn when the extraction registered the movie with large shifts (Suite2p ops) and the
    movie given is not the registered one it wrote: footprints and traces are in the
    registered frames."""
    shift = candidates.registration_shift_px
    if shift is None or shift <= MAX_UNREGISTERED_SHIFT_PX:
        return
    registered = candidates.registered_movie
    given = Path(movie_path).resolve()
    if registered is not None and given in (registered.resolve(), registered.parent.resolve()):
        return
    log.warning(
        "%s: its registration shifted frames by up to %.1f px (Suite2p ops yoff / xoff), and "
        "its footprints and traces are in the registered frames: if %s is the raw recording, "
        "its event snapshots will drift from the outlines; pass the registered movie%s",
        candidates.source_path,
        shift,
        movie_path,
        f" ({registered})" if registered is not None else " (Suite2p's data.bin)",
    )


def _check_pages_chosen(movie, candidates: Candidates) -> None:
    """Refuse a channel or plane chosen from a movie whose every page is one of the traces'
    frames (one channel, one plane): the choice would read every k-th frame, which ingest would
    take for temporal downsampling."""
    pages = movie.describe().get("pages")
    if pages == candidates.n_frames and movie.n_frames != pages:
        raise ValueError(
            f"{movie.path}: its {pages} pages match the {candidates.n_frames} trace frames of "
            f"{candidates.source_path}, so it holds one channel of one plane; "
            f"{movie.interleave.describe()} would read one page in {movie.interleave.stride} "
            "(leave out --channels / --planes)"
        )


def _layout_from_source(candidates: Candidates, movie, movie_path):
    """The channel and plane the extraction says it came from (Suite2p's ops), when the
    movie's pages hold that many times the traces' frames, and the rows of a multi-ROI page
    when its pages are taller than the extraction's field of view; else None (every page a
    frame).
    ``movie`` None: the movie could not be opened without a choice (an array's channel axis, a
    folder of several channels' files), so the extraction's choice is taken as it is."""
    layout = candidates.movie_layout
    whole = movie is not None and movie.height == candidates.height  # the ROI's own movie
    if layout is not None and layout.rows is not None and whole:  # (data.bin): whole pages
        layout = layout.without_rows()
    if layout is None or layout.is_plain:
        return None
    if movie is not None and layout.n_frames(movie.n_frames) != candidates.n_frames:
        return None
    log.info(
        "%s: reading %s of %s%s, as the extraction's settings say (--channels / --channel / "
        "--planes / --plane / --rows choose another)",
        candidates.source_path,
        layout.describe(),
        movie_path,
        "" if movie is None else f"'s pages ({movie.n_frames} pages, {candidates.n_frames} frames)",
    )
    return layout


def _refuse_unchosen(scanimage, candidates: Candidates, movie) -> None:
    """A ScanImage movie that holds several channels, planes or ROIs, with none chosen by the
    flags or the extraction: refused naming what it holds and the flags (a movie whose every
    page is one of the traces' frames goes on: its settings are not those of its pages)."""
    whole = movie.height == candidates.height or not scanimage.multi_roi
    if whole and movie.n_frames == candidates.n_frames:
        log.warning(
            "%s: %s, but its %d pages match the traces' frames: reading every page",
            movie.path,
            scanimage.describe(),
            movie.n_frames,
        )
        return
    try:
        scanimage.complete(
            channels=None, channel=None, planes=None, plane=None, rows=None, roi=None
        )
    except ValueError as exc:
        fits = [
            k for k, r in enumerate(scanimage.rois, 1) if r.rows[1] - r.rows[0] == candidates.height
        ]
        if not fits:
            raise
        rois = " or ".join(map(str, fits))
        raise ValueError(
            f"{exc} (the extraction's field of view is {candidates.height} x "
            f"{candidates.width}: ROI {rois} has that many rows)"
        ) from None


def ingest_files(
    movie_path: str | Path,
    extraction_path: str | Path,
    out: str | Path,
    *,
    config: IngestConfig = IngestConfig(),
    overwrite: bool = False,
    progress: bool = False,
) -> SortStore:
    """Open the movie and the extraction output from paths, then :func:`ingest` them.

    ``out`` is checked first (``SortStore.check_create``: never an input, never a non-store).
    Then the movie's header: its sizes bound the extraction's field of view before the
    extraction is read (``read_extraction(movie_shape=...)``). The extraction's (H, W) then
    tells the movie reader the axis order of HDF5 / zarr movies (MATLAB's reversed order: the
    movie is reopened with it when the first guess differs). When the extraction does not
    record its field of view (an EXTRACT sparse matrix without a summary image, NWB pixel
    masks), the movie's (H, W) is used instead. A movie that holds several channels or planes
    side by side (an HDF5 / zarr channel axis, a Bruker folder of ``_Ch<k>_`` files) is opened
    only after the extraction, with the channel and plane it records (Suite2p's ops) when none
    is given, else refused naming the flags.
    """
    from .io.extraction import MissingShapeError, read_extraction
    from .io.movies import open_movie

    # Refuse a bad --out before reading anything (never an input, never a non-store).
    SortStore.check_create(out, overwrite=overwrite, protect=(movie_path, extraction_path))
    check_fs_hz(config.fs_hz, "ingest.fs_hz (--fs)")
    from .io.movies import Interleave, LayoutNeeded

    scanimage = movie_scanimage(movie_path, config)
    chosen = movie_interleave(config, scanimage)
    # The movie's shape first (its header only): its sizes bound the extraction's field of
    # view, so a header that lies about H x W fails before anything that size is allocated.
    # Its pages as they are (a hyperstack too) until the extraction says which to read; a
    # movie that cannot be opened before a choice (an array's channel axis, a Bruker folder)
    # waits for the extraction's.
    movie = needed = None
    try:
        movie = open_movie(
            movie_path, dataset=config.movie_dataset, interleave=chosen or Interleave()
        )
    except LayoutNeeded as exc:
        if chosen is not None:
            raise
        needed = exc
    try:
        try:
            candidates = read_extraction(
                extraction_path,
                format=config.format,
                config=config,
                progress=progress,
                movie_shape=None if movie is None else movie.shape,
            )
        except MissingShapeError as exc:
            if movie is None:  # neither tells the field of view: the movie's choice first
                raise needed from None
            log.info("%s; taking height and width from the movie %s", exc, movie_path)
            candidates = read_extraction(
                extraction_path,
                format=config.format,
                config=config,
                hw=(movie.height, movie.width),
                progress=progress,
                movie_shape=movie.shape,
            )
        reopen = movie is None
        if chosen is None:  # opened as its pages: reopened for the extraction's layout, or
            # for the refusal of a hyperstack left without one (else the same movie)
            chosen = _layout_from_source(candidates, movie, movie_path)
            if movie is None and chosen is None:
                raise needed
            if chosen is None and scanimage is not None and scanimage.needs_choice:
                _refuse_unchosen(scanimage, candidates, movie)
            reopen = reopen or chosen is not None or getattr(movie, "stack", None) is not None
        if reopen or (candidates.height, candidates.width) != (movie.height, movie.width):
            # HDF5 / zarr movies: the extraction's (H, W) decides the axis order; the
            # channel and plane are now known (a hyperstack with none chosen is refused here)
            if movie is not None:
                movie.close()
                movie = None
            movie = open_movie(
                movie_path,
                dataset=config.movie_dataset,
                expected_hw=(candidates.height, candidates.width),
                interleave=chosen,
            )
        _check_pages_chosen(movie, candidates)
        _warn_if_unregistered(candidates, movie_path)
        if movie.fs_hz is None and scanimage is not None and scanimage.fs_hz:
            movie.fs_hz = scanimage.fs_hz  # of one channel of one plane: a frame of the movie
        fingerprint = file_fingerprint(extraction_path, content_hash=True)
        return ingest(
            movie,
            candidates,
            out,
            config=config,
            overwrite=overwrite,
            extraction_fingerprint=fingerprint,
        )
    finally:
        if movie is not None:
            movie.close()
