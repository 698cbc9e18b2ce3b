"""``synthesize``: write a synthetic recording, its simulated extraction and the truth."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import writers
from .config import SynthConfig
from .render import Renderer
from .scene import build_scene

log = logging.getLogger(__name__)

__all__ = ["synthesize", "SynthResult", "FORMATS", "load_truth"]

FORMATS = ("suite2p", "extract")
_README = """Synthetic calcium-imaging recording written by actsort_gpu.synth (seed {seed}).
{n_frames} frames of {height} x {width} px at {fs_hz} Hz; {n_cells} true cells and
{n_fp} false-positive candidates ({kinds}), shuffled together: {n_candidates} candidates.

movie.tif       (T, H, W) uint16, uncompressed {tiff_kind} (memory-mappable with tifffile.memmap).
movie.h5        (if written) HDF5 dataset "mov", (T, H, W) uint16.
suite2p/plane0/ stat.npy (object array of dicts: ypix, xpix, lam, med, npix, compact, radius,
                aspect_ratio, skew, std, ...; np.load(..., allow_pickle=True)), F.npy, Fneu.npy,
                spks.npy (N, T) float32, iscell.npy (N, 2) float64 [label, P(cell)] from
                Suite2p's three statistics (skew, npix_norm, compact), never the truth,
                ops.npy (dict: Ly, Lx, nframes, fs, tau, diameter, meanImg, max_proj, Vcorr,
                xoff, yoff, ...). Unlike Suite2p, max_proj and Vcorr
                are full size (H, W), not cropped to yrange/xrange. F is the lam-weighted mean of
                the motion-free movie, Fneu the mean over an annulus excluding all candidates.
extract_output.mat  MATLAB struct `output`: spatial_weights (H, W, N) single (max 1 per
                candidate), temporal_weights (T, N) single (footprint-matched projection of the
                ideally dF/F-normalised movie), info.summary_image / info.max_image (H, W).
                {mat_kind}
truth.npz       per candidate (same order as stat.npy / spatial_weights):
                is_cell (N,) int8 +1/-1; kind (N,) str: cell, duplicate, split, merged, neuropil,
                noise, dendrite, edge, fragment; source_cell, source_cell2 (N,) int: candidate
                index of the true cell(s) a duplicate/split/merged came from, else -1;
                spike_frames_flat + spike_offsets (N+1): planted spike frames behind each
                candidate (candidate i: flat[offsets[i]:offsets[i+1]]; cells, edges, dendrites
                and fragments their own, duplicates/splits their cell's, merged the union,
                others none);
                spike_amps_flat: dF/F of each planted spike (NaN for merged);
                footprints_data/indices/indptr/shape: CSR (N, H*W) of the candidate footprints
                (row-major pixels; true cells: exactly the footprint rendered into the movie);
                decay_s, brightness_counts (N,) (NaN where no own source);
                annotators (K, N) int8 +1/-1 simulated labels, annotator_names /
                annotator_leniency / annotator_noise (K,); motion (T, 2) (dy, dx) per frame
                (movie[t, y, x] = registered[t, y + dy, x + dx]); config_json.
"""


SYNTH_MARK = ".actsort-synth"  # written first into every folder synthesize() fills


@dataclass
class SynthResult:
    """What :func:`synthesize` wrote. ``files`` maps a short name to its path."""

    out_dir: Path
    config: SynthConfig
    files: dict = field(default_factory=dict)
    n_candidates: int = 0
    n_chunks: int = 0
    chunk_frames: int = 0
    movie_bytes: int = 0
    seconds: float = 0.0
    extract_v73: bool = False

    @property
    def mb_per_s(self) -> float:
        return self.movie_bytes / 1e6 / max(self.seconds, 1e-9)


def load_truth(path) -> dict:
    """truth.npz as a dict, with ``spike_frames`` (list of arrays) and ``footprints`` (CSR)."""
    with np.load(path, allow_pickle=False) as z:
        t = {k: z[k] for k in z.files}
    off = t["spike_offsets"]
    t["spike_frames"] = [t["spike_frames_flat"][off[i] : off[i + 1]] for i in range(len(off) - 1)]
    t["footprints"] = sp.csr_matrix(
        (t["footprints_data"], t["footprints_indices"], t["footprints_indptr"]),
        shape=tuple(t["footprints_shape"]),
    )
    return t


def synthesize(
    out_dir,
    config: SynthConfig | None = None,
    *,
    formats=FORMATS,
    h5: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> SynthResult:
    """Write a synthetic recording with ground truth into ``out_dir`` (see README.txt there).

    formats : iterable of "suite2p" and/or "extract" (extraction layouts to write).
    h5 : also write movie.h5 (dataset "mov", (T, H, W) uint16).
    overwrite : replace the files of an earlier synthetic recording in out_dir. Without it, any
        file it would write that exists already raises FileExistsError; with it, so does a
        folder that is not an earlier synthetic recording (a real extraction is never replaced).
    The movie is rendered and written in frame chunks (``config.chunk_frames``), so memory stays
    bounded by one chunk plus the (N, T) traces written to memory-mapped .npy files.
    """
    cfg = config or SynthConfig()
    formats = tuple(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"synthesize formats: expected a subset of {FORMATS}, found {bad}")
    out = Path(out_dir)
    _check_out_dir(out, formats, h5, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    (out / SYNTH_MARK).touch()  # first: a killed run's folder is still known as ours
    start = time.perf_counter()
    scene = build_scene(cfg)
    H, W, T = cfg.height, cfg.width, cfg.n_frames
    fp = scene.cand_footprints
    N = fp.shape[0]
    res = SynthResult(out, cfg, n_candidates=N)
    rend = Renderer(scene, cfg)
    res.chunk_frames = rend.chunk

    lam = (
        (sp.diags(1 / np.maximum(np.asarray(fp.sum(1)).ravel(), 1e-12)) @ fp)
        .astype(np.float32)
        .tocsr()
    )
    proj = sp.diags(1 / np.maximum(np.asarray(fp.multiply(fp).sum(1)).ravel(), 1e-12)) @ fp
    proj = proj.astype(np.float32).tocsr()
    s2p = out / "suite2p" / "plane0"
    if "suite2p" in formats:
        s2p.mkdir(parents=True, exist_ok=True)
        neu = writers.neuropil_masks(fp, H, W)
        F = np.lib.format.open_memmap(s2p / "F.npy", "w+", np.float32, (N, T))
        Fneu = np.lib.format.open_memmap(s2p / "Fneu.npy", "w+", np.float32, (N, T))
    tmp_tw = out / "_temporal_weights.tmp.npy"
    if "extract" in formats:
        TW = np.lib.format.open_memmap(tmp_tw, "w+", np.float32, (T, N))

    acc = {
        "s": np.zeros(H * W),
        "ss": np.zeros(H * W),
        "right": np.zeros((H, W - 1)),
        "down": np.zeros((H - 1, W)),
    }
    vmax = np.full(H * W, -np.inf, np.float32)

    def frames():
        for t0, movie, reg in rend:
            t1 = t0 + len(movie)
            regT = np.ascontiguousarray(reg.T)  # (H*W, n), one copy
            if "suite2p" in formats:
                F[:, t0:t1] = lam @ regT
                Fneu[:, t0:t1] = neu @ regT
            if "extract" in formats:
                b = rend.baseline(np.arange(t0, t1))  # (H*W, n)
                np.divide(regT, b, out=b)
                b -= 1
                TW[t0:t1] = (proj @ b).T
            _accumulate(acc, vmax, reg, H, W)
            if h5_ds is not None:
                h5_ds[t0:t1] = movie
            if bar is not None:
                bar.update(t1 - t0)
            yield from movie

    import tifffile

    res.movie_bytes = T * H * W * 2
    big = res.movie_bytes > cfg.bigtiff_threshold_bytes
    h5_file = h5_ds = bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=T, unit="frame", desc="synth")
    try:
        if h5:
            import h5py

            h5_file = h5py.File(out / "movie.h5", "w")
            h5_ds = h5_file.create_dataset("mov", (T, H, W), np.uint16, chunks=(min(T, 16), H, W))
            res.files["movie_h5"] = out / "movie.h5"
        with tifffile.TiffWriter(out / "movie.tif", bigtiff=big) as tw:
            tw.write(frames(), shape=(T, H, W), dtype=np.uint16, photometric="minisblack")
    finally:
        if h5_file is not None:
            h5_file.close()
        if bar is not None:
            bar.close()
    res.files["movie"] = out / "movie.tif"
    res.n_chunks = rend.n_chunks

    mean_img = (acc["s"] / T).reshape(H, W).astype(np.float32)
    max_img = vmax.reshape(H, W)
    vcorr = _vcorr(acc, T, H, W).astype(np.float32)
    truth_rng = np.random.default_rng([cfg.seed, 3])
    is_cell = np.where(scene.cand_kind == "cell", 1, -1).astype(np.int8)
    if "suite2p" in formats:
        skew = np.empty(N, np.float32)
        std = np.empty(N, np.float32)
        snr = np.empty(N, np.float32)
        spks = np.lib.format.open_memmap(s2p / "spks.npy", "w+", np.float32, (N, T))
        tau_s = float(np.mean(cfg.decay_s))
        for r0 in range(0, N, 64):
            f, fn = np.asarray(F[r0 : r0 + 64]), np.asarray(Fneu[r0 : r0 + 64])
            skew[r0 : r0 + 64], std[r0 : r0 + 64], snr[r0 : r0 + 64] = writers.trace_stats(f, fn)
            spks[r0 : r0 + 64] = writers.spks_from_traces(f, fn, tau_s * cfg.fs_hz)
        for a in (F, Fneu, spks):
            a.flush()
        del F, Fneu, spks
        stat = writers.suite2p_stat(fp, W, skew=skew, std=std, snr=snr)
        np.save(s2p / "stat.npy", stat, allow_pickle=True)
        np.save(s2p / "iscell.npy", writers.iscell_probability(stat, truth_rng))
        d = float(np.mean(cfg.diameter_px))
        ops = {
            "Ly": H,
            "Lx": W,
            "nframes": T,
            "fs": float(cfg.fs_hz),
            "tau": tau_s,
            "diameter": np.array([d, d]),
            "meanImg": mean_img,
            "max_proj": max_img,
            "Vcorr": vcorr,
            "yrange": [0, H],
            "xrange": [0, W],
            "nplanes": 1,
            "nchannels": 1,
            "nrois": N,
            "neucoeff": 0.7,
            "yoff": scene.motion[:, 0].copy(),
            "xoff": scene.motion[:, 1].copy(),
            "badframes": np.zeros(T, bool),
            "save_path": ".",
            "synthetic": True,
        }
        np.save(s2p / "ops.npy", ops, allow_pickle=True)
        res.files["suite2p"] = s2p
    if "extract" in formats:
        size = 4 * N * H * W + TW.nbytes
        res.extract_v73 = size > cfg.v73_threshold_bytes
        TW.flush()
        writers.write_extract_mat(
            out / "extract_output.mat",
            fp,
            (H, W),
            TW,
            {"summary_image": vcorr, "max_image": max_img},
            v73=res.extract_v73,
        )
        del TW
        tmp_tw.unlink()
        res.files["extract"] = out / "extract_output.mat"
    _write_truth(out / "truth.npz", scene, cfg, is_cell, truth_rng)
    res.files["truth"] = out / "truth.npz"
    counts = cfg.fp_counts()
    (out / "README.txt").write_text(
        _README.format(
            seed=cfg.seed,
            n_frames=T,
            height=H,
            width=W,
            fs_hz=cfg.fs_hz,
            n_cells=cfg.n_cells,
            n_fp=N - cfg.n_cells,
            n_candidates=N,
            kinds=", ".join(f"{v} {k}" for k, v in counts.items() if v),
            tiff_kind="BigTIFF" if big else "TIFF",
            mat_kind="MATLAB v7.3 (HDF5; h5py shows (N, W, H) and (N, T))."
            if res.extract_v73
            else "MATLAB v5 (scipy.io.loadmat).",
        )
    )
    res.files["readme"] = out / "README.txt"
    res.seconds = time.perf_counter() - start
    log.info(
        "synth: wrote %s (%d candidates, %d chunks, %.1f MB/s)", out, N, res.n_chunks, res.mb_per_s
    )
    return res


def _accumulate(acc, vmax, reg, H, W):
    """Running sums for meanImg and the correlation image (sum, sum of squares, and the
    lag-0 products with the right and lower neighbour). reg : (n, H*W) float32."""
    n = len(reg)
    ones = np.ones(n, np.float32)
    x = reg.reshape(n, H, W)
    acc["s"] += ones @ reg
    acc["ss"] += ones @ (reg * reg)
    acc["right"] += np.tensordot(ones, x[:, :, :-1] * x[:, :, 1:], 1)
    acc["down"] += np.tensordot(ones, x[:, :-1] * x[:, 1:], 1)
    np.maximum(vmax, reg.max(0), out=vmax)


def _vcorr(acc, T, H, W):
    """Mean Pearson correlation of each pixel with its 4 neighbours over time, (H, W)."""
    m = (acc["s"] / T).reshape(H, W)
    sd = np.sqrt(np.maximum((acc["ss"] / T).reshape(H, W) - m**2, 1e-12))
    cr = (acc["right"] / T - m[:, :-1] * m[:, 1:]) / (sd[:, :-1] * sd[:, 1:])
    cd = (acc["down"] / T - m[:-1] * m[1:]) / (sd[:-1] * sd[1:])
    tot = np.zeros((H, W))
    cnt = np.zeros((H, W))
    tot[:, :-1] += cr
    tot[:, 1:] += cr
    cnt[:, :-1] += 1
    cnt[:, 1:] += 1
    tot[:-1] += cd
    tot[1:] += cd
    cnt[:-1] += 1
    cnt[1:] += 1
    return tot / np.maximum(cnt, 1)


def _written_files(out: Path, formats, h5: bool) -> list[Path]:
    """Every file :func:`synthesize` writes into ``out`` with these options."""
    files = [out / "movie.tif", out / "truth.npz", out / "README.txt"]
    if h5:
        files.append(out / "movie.h5")
    if "suite2p" in formats:
        plane = out / "suite2p" / "plane0"
        files += [plane / f"{n}.npy" for n in ("F", "Fneu", "spks", "stat", "iscell", "ops")]
    if "extract" in formats:
        files.append(out / "extract_output.mat")
    return files


def _check_out_dir(out: Path, formats, h5: bool, overwrite: bool) -> None:
    """Refuse to write over files of ``out`` unless ``overwrite`` and ``out`` is an earlier
    synthetic recording (its mark, or the truth.npz of one written before the mark)."""
    there = [p for p in _written_files(out, formats, h5) if p.exists()]
    if not there:
        return
    names = ", ".join(str(p.relative_to(out)) for p in there[:4])
    more = f" and {len(there) - 4} more" if len(there) > 4 else ""
    if not overwrite:
        raise FileExistsError(
            f"{out}: already holds {names}{more} (pass overwrite=True / --overwrite to replace "
            "an earlier synthetic recording)"
        )
    if (out / SYNTH_MARK).exists():
        return
    try:
        ours = set(np.load(out / "truth.npz", allow_pickle=False).files) >= {"is_cell", "kind"}
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise FileExistsError(
            f"{out}: holds {names}{more}, and it is not a synthetic recording of actsort synth: "
            "nothing there is replaced, even with overwrite; choose another folder"
        )


def _write_truth(path, scene, cfg, is_cell, rng):
    N = len(is_cell)
    spikes = scene.cand_spike_frames
    off = np.concatenate([[0], np.cumsum([len(s) for s in spikes])]).astype(np.int64)
    amps = []
    for i in range(N):
        s = scene.cand_source[i]
        c = scene.cand_source_cell[i]
        if s >= 0:
            amps.append(scene.src_spike_amps[s])
        elif c >= 0 and scene.cand_kind[i] != "merged":
            amps.append(scene.src_spike_amps[scene.cand_source[c]])
        else:
            amps.append(np.full(len(spikes[i]), np.nan, np.float32))
    src = scene.cand_source
    has = src >= 0
    decay = np.where(has, scene.src_decay_s[np.maximum(src, 0)], np.nan).astype(np.float32)
    bright = np.where(has, scene.src_brightness[np.maximum(src, 0)], np.nan).astype(np.float32)
    fp = scene.cand_footprints
    specs = cfg.annotators
    np.savez_compressed(
        path,
        is_cell=is_cell,
        kind=scene.cand_kind.astype("U9"),
        source_cell=scene.cand_source_cell.astype(np.int64),
        source_cell2=scene.cand_source_cell2.astype(np.int64),
        spike_frames_flat=np.concatenate(spikes + [np.zeros(0, np.int64)]).astype(np.int64),
        spike_offsets=off,
        spike_amps_flat=np.concatenate(amps + [np.zeros(0, np.float32)]).astype(np.float32),
        footprints_data=fp.data,
        footprints_indices=fp.indices.astype(np.int64),
        footprints_indptr=fp.indptr.astype(np.int64),
        footprints_shape=np.array(fp.shape, np.int64),
        decay_s=decay,
        brightness_counts=bright,
        annotators=writers.simulate_annotators(is_cell, scene.cand_kind, specs, rng),
        annotator_names=np.array([a.name for a in specs], dtype="U32"),
        annotator_leniency=np.array([a.leniency for a in specs], np.float32),
        annotator_noise=np.array([a.noise for a in specs], np.float32),
        motion=scene.motion,
        fs_hz=np.float64(cfg.fs_hz),
        config_json=np.array(json.dumps(cfg.as_dict())),
    )
