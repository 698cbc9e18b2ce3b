"""File writers of the synthesiser: Suite2p plane folder, EXTRACT .mat (v5 or v7.3), truth.

Layouts follow what the real tools write (docs/field_survey.md section 3, actsort_reference.md
section 1.1); deviations are listed in docs/differences.md ("synth").
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

__all__ = [
    "suite2p_stat",
    "neuropil_masks",
    "spks_from_traces",
    "write_extract_mat",
    "simulate_annotators",
    "iscell_probability",
]


def _disk_mean_radius(npix: int) -> float:
    r = int(np.ceil(np.sqrt(npix / np.pi))) + 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    d = np.sort(np.hypot(yy, xx).ravel())
    return float(d[:npix].mean())


def suite2p_stat(
    footprints: sp.csr_matrix, width: int, *, skew=None, std=None, snr=None
) -> np.ndarray:
    """Suite2p ``stat.npy`` content: object array of dicts, one per candidate.

    footprints : (N, H*W) CSR, max 1 per row (lam = these weights, like Suite2p's unnormalised lam).
    skew, std, snr : (N,) float32 per-candidate trace statistics (None: NaN).
    compact, radius and aspect_ratio follow Suite2p's definitions (roi_stats / fitMVGaus) on
    the weighted pixel cloud.
    """
    N = footprints.shape[0]
    npix_all = np.diff(footprints.indptr)
    count = np.bincount(footprints.indices, minlength=footprints.shape[1])
    med_npix = float(np.median(npix_all[:100])) if N else 1.0
    out = np.empty(N, dtype=object)
    nan = np.float32(np.nan)
    for i in range(N):
        idx = footprints.indices[footprints.indptr[i] : footprints.indptr[i + 1]]
        lam = footprints.data[footprints.indptr[i] : footprints.indptr[i + 1]].astype(np.float32)
        ypix, xpix = (idx // width).astype(np.int64), (idx % width).astype(np.int64)
        npix = int(len(idx))
        if npix:
            med = [int(np.median(ypix)), int(np.median(xpix))]
            mrs = float(np.hypot(ypix - med[0], xpix - med[1]).mean())
            mrs0 = _disk_mean_radius(npix)
            w = lam / lam.sum()
            mu = np.array([w @ ypix, w @ xpix])
            d = np.stack([ypix - mu[0], xpix - mu[1]])
            ev = np.sort(np.linalg.eigvalsh((d * w) @ d.T))[::-1].clip(0)
            radii = 2 * np.sqrt(ev)
            radius = float(radii[0] * np.sqrt(radii[1] / radii[0])) if radii[0] > 0 else 0.0
            aspect = float(2 * radii[0] / (0.01 + radii[0] + radii[1]))
        else:
            med, mrs, mrs0, radius, aspect = [0, 0], 0.0, 1.0, 0.0, 1.0
        out[i] = {
            "ypix": ypix,
            "xpix": xpix,
            "lam": lam,
            "med": med,
            "npix": npix,
            "soma_crop": np.ones(npix, bool),
            "npix_soma": np.int64(npix),
            "mrs": np.float64(mrs),
            "mrs0": np.float64(mrs0),
            "compact": np.float64(mrs / max(mrs0, 1e-9)),
            "radius": np.float64(radius),
            "aspect_ratio": np.float64(aspect),
            "footprint": np.float64(np.clip(np.round(np.log2(max(radius, 1) / 3)), 0, 3)),
            "npix_norm": np.float32(npix / med_npix),
            "npix_norm_no_crop": np.float32(npix / med_npix),
            "overlap": count[idx] > 1,
            "skew": nan if skew is None else np.float32(skew[i]),
            "std": nan if std is None else np.float32(std[i]),
            "snr": nan if snr is None else np.float32(snr[i]),
        }
    return out


def neuropil_masks(
    footprints: sp.csr_matrix, height: int, width: int, inner_px: float = 2.0, min_pixels: int = 350
) -> sp.csr_matrix:
    """Suite2p-like neuropil masks: an annulus around each candidate, excluding every
    candidate's pixels, grown until it has ``min_pixels``. Rows sum to 1. (N, H*W) float32."""
    N = footprints.shape[0]
    occupied = np.zeros(height * width, bool)
    occupied[footprints.indices] = True
    occupied = occupied.reshape(height, width)
    rows, cols = [], []
    for i in range(N):
        idx = footprints.indices[footprints.indptr[i] : footprints.indptr[i + 1]]
        if len(idx) == 0:
            cy, cx, r_in = height / 2, width / 2, 0.0
        else:
            y, x = idx // width, idx % width
            cy, cx = y.mean(), x.mean()
            r_in = np.hypot(y - cy, x - cx).max() + inner_px
        r_out = np.sqrt(r_in**2 + 2 * min_pixels / np.pi)
        for _ in range(8):
            R = int(np.ceil(r_out))
            y0, y1 = max(0, int(cy) - R), min(height, int(cy) + R + 1)
            x0, x1 = max(0, int(cx) - R), min(width, int(cx) + R + 1)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            d = np.hypot(yy - cy, xx - cx)
            sel = (d >= r_in) & (d < r_out) & ~occupied[y0:y1, x0:x1]
            if sel.sum() >= min_pixels or (y1 - y0) * (x1 - x0) >= height * width:
                break
            r_out *= 1.3
        if not sel.any():
            sel = (d >= r_in) & (d < r_out)
        p = (yy[sel] * width + xx[sel]).ravel()
        rows.append(np.full(len(p), i))
        cols.append(p)
    r = np.concatenate(rows) if rows else np.zeros(0, int)
    c = np.concatenate(cols) if cols else np.zeros(0, int)
    m = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(N, height * width))
    s = np.asarray(m.sum(1)).ravel()
    return (sp.diags(1 / np.maximum(s, 1)).astype(np.float32) @ m).tocsr()


def trace_stats(F: np.ndarray, Fneu: np.ndarray, coef: float = 0.7):
    """skew, std and snr of F - coef * Fneu per row; snr = std / noise (first-difference MAD)."""
    x = F.astype(np.float64) - coef * Fneu
    x -= x.mean(1, keepdims=True)
    std = x.std(1)
    skew = (x**3).mean(1) / np.maximum(std, 1e-12) ** 3
    noise = (
        1.4826 * np.median(np.abs(np.diff(x, axis=1)), axis=1) / np.sqrt(2)
        if x.shape[1] > 1
        else np.ones(len(x))
    )
    return (
        skew.astype(np.float32),
        std.astype(np.float32),
        (std / np.maximum(noise, 1e-12)).astype(np.float32),
    )


def spks_from_traces(F: np.ndarray, Fneu: np.ndarray, tau_frames: float, coef: float = 0.7):
    """A simple AR(1) deconvolution standing in for OASIS: (N, T) float32, >= 0.

    d_t = Fc_t - g Fc_{t-1} (g = exp(-1/tau)), minus the baseline's share (1 - g) * b
    (b = 10th percentile of Fc) and one noise std of d; negative values -> 0.
    """
    Fc = F.astype(np.float32) - coef * Fneu
    g = np.float32(np.exp(-1 / tau_frames))
    d = np.empty_like(Fc)
    d[:, 0] = Fc[:, 0] * (1 - g)
    d[:, 1:] = Fc[:, 1:] - g * Fc[:, :-1]
    b = np.percentile(Fc, 10, axis=1, keepdims=True) * (1 - g)
    d -= b
    noise = 1.4826 * np.median(np.abs(d - np.median(d, 1, keepdims=True)), 1, keepdims=True)
    return np.maximum(d - noise, 0).astype(np.float32)


def _matlab_header() -> bytes:
    text = (
        f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: "
        f"{datetime.datetime.now():%a %b %d %H:%M:%S %Y} HDF5 schema 1.00 ."
    )
    return text.encode("ascii").ljust(116, b" ") + b" " * 8 + b"\x00\x02" + b"IM"


def write_extract_mat(
    path: Path,
    spatial: sp.csr_matrix,
    shape,
    temporal,
    extra: dict,
    *,
    v73: bool,
    frame_block: int = 4096,
) -> None:
    """EXTRACT output: struct ``output`` with spatial_weights (H, W, N) single, temporal_weights
    (T, N) single, info.{summary_image, max_image} (H, W) single, info.version.

    spatial : (N, H*W) CSR footprints (row-major pixels); densified here, per candidate for
        v7.3 (so only one footprint is dense at a time)
    temporal : (T, N) float32 (array or memmap; read by frame blocks for v7.3)
    v73 False: MATLAB v5 via scipy.io.savemat; True: MATLAB v7.3 (HDF5) via h5py, dimensions
    reversed as MATLAB writes them (h5py: spatial (N, W, H), temporal (N, T)).
    """
    path = Path(path)
    H, W = shape
    N = spatial.shape[0]
    if not v73:
        dense = np.zeros((H * W, N), np.float32)
        coo = spatial.tocoo()
        dense[coo.col, coo.row] = coo.data
        import scipy.io

        info = {k: np.asarray(v, np.float32) for k, v in extra.items()}
        info["version"] = "1.3.0"
        scipy.io.savemat(
            path,
            {
                "output": {
                    "spatial_weights": dense.reshape(H, W, N),
                    "temporal_weights": np.asarray(temporal, np.float32),
                    "info": info,
                }
            },
            do_compression=False,
            oned_as="column",
        )
        return
    import h5py

    T = temporal.shape[0]
    with h5py.File(path, "w", userblock_size=512, libver="earliest") as f:
        out = f.create_group("output")
        out.attrs["MATLAB_class"] = np.bytes_("struct")
        ds = out.create_dataset("spatial_weights", shape=(N, W, H), dtype="f4")
        for i in range(N):
            img = np.zeros(H * W, np.float32)
            img[spatial.indices[spatial.indptr[i] : spatial.indptr[i + 1]]] = spatial.data[
                spatial.indptr[i] : spatial.indptr[i + 1]
            ]
            ds[i] = img.reshape(H, W).T
        ds.attrs["MATLAB_class"] = np.bytes_("single")
        tw = out.create_dataset(
            "temporal_weights",
            shape=(N, T),
            dtype="f4",
            chunks=(max(1, min(N, 64)), min(T, 4096)) if N and T else None,
        )
        tw.attrs["MATLAB_class"] = np.bytes_("single")
        for t0 in range(0, T, frame_block):
            tw[:, t0 : t0 + frame_block] = np.asarray(temporal[t0 : t0 + frame_block]).T
        info = out.create_group("info")
        info.attrs["MATLAB_class"] = np.bytes_("struct")
        for k, v in extra.items():
            d = info.create_dataset(k, data=np.asarray(v, np.float32).T)
            d.attrs["MATLAB_class"] = np.bytes_("single")
        ver = np.frombuffer("1.3.0".encode("utf-16-le"), np.uint16).reshape(-1, 1)
        d = info.create_dataset("version", data=ver)
        d.attrs["MATLAB_class"] = np.bytes_("char")
        d.attrs["MATLAB_int_decode"] = np.int32(2)
    with open(path, "r+b") as fh:
        fh.write(_matlab_header())


#: The simulated Suite2p classifier's weights on its three statistics (a logit per unit):
#: the direction of Suite2p's built-in classifier (cells: positively skewed traces, about the
#: recording's median size, disk-like), set by hand, never fitted to the simulator's truth.
ISCELL_WEIGHTS = {"bias": 0.5, "skew": 1.0, "log_npix_norm": 1.5, "compact": 2.0, "noise": 0.5}


def iscell_probability(stat, rng: np.random.Generator) -> np.ndarray:
    """Suite2p's ``iscell.npy`` as its default classifier would write it: (N, 2) float64
    [label 0/1, P(cell)], computed from the observable statistics it uses (``skew``,
    ``npix_norm``, ``compact`` of :func:`suite2p_stat`) and never from the truth.

    logit = bias + w_skew clip(skew - 1, -2, 2) - w_npix |log npix_norm| - w_compact
    clip(compact - 1, 0, 2) + w_noise N(0, 1) (the classifier's own idiosyncrasy); a NaN
    statistic contributes nothing. Exactly N normal draws from ``rng``, so what the caller
    draws after it does not move. (Before 2026-12-06 the logit was drawn from each candidate's
    kind: the column scored AUC 0.88-0.93 on simulated recordings, where Suite2p's own scores
    0.50 on the labelled real crop, and flattered every synthetic benchmark that used it.)
    """
    w = ISCELL_WEIGHTS

    def column(key):
        return np.array([float(d[key]) for d in stat], float)

    skew, npix_norm, compact = column("skew"), column("npix_norm"), column("compact")
    with np.errstate(divide="ignore", invalid="ignore"):
        size = np.abs(np.log(np.clip(npix_norm, 1e-3, None)))
    logit = (
        w["bias"]
        + w["skew"] * np.nan_to_num(np.clip(skew - 1, -2, 2))
        - w["log_npix_norm"] * np.nan_to_num(size)
        - w["compact"] * np.nan_to_num(np.clip(compact - 1, 0, 2))
        + w["noise"] * rng.standard_normal(len(stat))
    )
    p = 1 / (1 + np.exp(-logit))
    return np.stack([(p > 0.5).astype(float), p], 1)


BORDERLINE = ("duplicate", "split", "edge")


def simulate_annotators(is_cell: np.ndarray, kind: np.ndarray, specs, rng) -> np.ndarray:
    """(n_annotators, N) int8 +1/-1: truth, borderline false positives called cells with
    probability ``leniency``, then every label flipped with probability ``noise``."""
    out = np.empty((len(specs), len(is_cell)), np.int8)
    border = np.isin(kind, BORDERLINE)
    for a, spec in enumerate(specs):
        lab = is_cell.astype(np.int8).copy()
        lab[border & (rng.random(len(lab)) < spec.leniency)] = 1
        flip = rng.random(len(lab)) < spec.noise
        lab[flip] = -lab[flip]
        out[a] = lab
    return out
