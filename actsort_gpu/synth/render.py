"""Chunked rendering of the movie and of the simulated extraction (bounded memory).

Per chunk of frames (t0..t1): spikes -> calcium (double-exponential kernel, carried IIR state)
-> canvas = bleach(t) * (background + sum_j footprint_j * brightness_j * (1 + dF/F_j(t))
+ neuropil(x, t)) + drift(t) -> + Gaussian-approximated shot noise (variance gain * signal)
+ read noise (normals from a seeded bank, see Renderer) -> rounded to uint16 counts. The
*registered* view (canvas crop at zero shift) is
what the simulated extractor sees; the written movie is the crop shifted by the frame's motion.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .config import SynthConfig
from .scene import Scene, slow_signal

log = logging.getLogger(__name__)

__all__ = ["Renderer", "chunk_frames_for"]

_COEF_BLOCK = 4096  # frames per block of low-rank coefficients (see Renderer._coefficients)


def chunk_frames_for(cfg: SynthConfig, canvas_px: int) -> int:
    if cfg.chunk_frames is not None:
        return min(cfg.chunk_frames, cfg.n_frames)
    return int(max(1, min(cfg.n_frames, (32 << 20) // (4 * canvas_px))))


def bleach_curve(cfg: SynthConfig, frames: np.ndarray) -> np.ndarray:
    """Multiplicative bleaching exp(-t / tau), losing ``bleach_fraction`` by the last frame."""
    if cfg.bleach_fraction == 0 or cfg.n_frames < 2:
        return np.ones(frames.shape, np.float32)
    rate = -math.log(1 - cfg.bleach_fraction) / (cfg.n_frames - 1)
    return np.exp(-rate * frames).astype(np.float32)


def kernel_constants(decay_s, rise_s, fs_hz):
    """Per-source IIR constants of h[k] = (exp(-(k+.5)/td) - exp(-(k+.5)/tr)) / peak."""
    td = np.asarray(decay_s, np.float64) * fs_hz
    tr = max(rise_s * fs_hz, 1e-3)
    k = np.arange(0, int(10 * td.max()) + 2)[:, None] + 0.5
    h = np.exp(-k / td) - np.exp(-k / tr)
    norm = 1 / h.max(0)
    return (
        np.exp(-1 / td),
        math.exp(-1 / tr),
        np.exp(-0.5 / td) * norm,
        math.exp(-0.5 / tr) * norm,
    )


@dataclass
class Renderer:
    """Iterate over chunks: ``for t0, movie_u16, registered_f32 in Renderer(scene, cfg)``.

    movie_u16 : (n, H, W) uint16, the written movie (with motion)
    registered_f32 : (n, H*W) float32, the same counts without motion (what extraction sees)
    Also fills ``dff`` (n, S) float32 per chunk (the planted dF/F of each source).
    """

    scene: Scene
    cfg: SynthConfig
    n_chunks: int = 0
    chunk: int = field(init=False)

    def __post_init__(self):
        sc, cfg = self.scene, self.cfg
        Hc, Wc = sc.canvas_shape
        self.chunk = chunk_frames_for(cfg, Hc * Wc)
        self._gd, self._gr, self._ad, self._ar = kernel_constants(
            sc.src_decay_s, cfg.rise_s, cfg.fs_hz
        )
        S = sc.src_footprints.shape[0]
        self._y1 = np.zeros(S)
        self._y2 = np.zeros(S)
        self._A = (sp.diags(sc.src_brightness) @ sc.src_footprints).T.tocsr()  # (Hc*Wc, S)
        self.rest = sc.background + np.asarray(self._A.sum(1)).ravel().astype(np.float32)
        self.np_mean = (cfg.neuropil_counts * sc.neuropil_fields.sum(0)).astype(np.float32)
        f = np.concatenate(sc.src_spike_frames + [np.zeros(0, np.int64)])
        s = np.repeat(np.arange(S), [len(x) for x in sc.src_spike_frames])
        a = np.concatenate(sc.src_spike_amps + [np.zeros(0, np.float32)])
        order = np.argsort(f, kind="stable")
        self._sf, self._ss, self._sa = f[order], s[order], a[order]
        self._noise_rng = np.random.default_rng([cfg.seed, 2])
        # Noise: standard normals from a seeded bank read at a random offset per frame
        # (drawing fresh normals cost ~60 % of the render time on a 2-core CPU). Pixel series
        # stay i.i.d. in practice: two draws coincide only where offsets align by chance.
        self._bank = self._noise_rng.standard_normal(
            max(1 << 22, 4 * Hc * Wc) + 1, dtype=np.float32
        )
        self._coef_cache: tuple[int, np.ndarray | None] = (-1, None)
        self._lowrank = np.concatenate(
            [sc.neuropil_fields, self.rest[None], np.ones((1, Hc * Wc), np.float32)]
        ).astype(np.float32)

    def baseline(self, frames: np.ndarray) -> np.ndarray:
        """(H*W, n) resting level (no activity, mean neuropil) of the registered view."""
        sc = self.scene
        Hc, Wc = sc.canvas_shape
        p = sc.pad
        img = (
            (self.rest + self.np_mean).reshape(Hc, Wc)[p : p + sc.height, p : p + sc.width].ravel()
        )
        t_s = frames / self.cfg.fs_hz
        drift = self.cfg.drift_counts * slow_signal(self.scene.drift_sig, t_s)[:, 0]
        return img[:, None] * bleach_curve(self.cfg, frames)[None] + drift[None]

    def _coefficients(self, t0: int, t1: int) -> np.ndarray:
        """(t1 - t0, P + 2) float32 per-frame weights of the low-rank components
        (neuropil fields * bleach, rest * bleach, drift), computed in blocks of
        ``_COEF_BLOCK`` frames on a fixed grid so that every frame's value is the same whatever
        the chunking (vectorised sin / exp may round differently at another array position)."""
        b0, b1 = t0 // _COEF_BLOCK, (t1 - 1) // _COEF_BLOCK + 1
        blocks = []
        for b in range(b0, b1):
            if self._coef_cache[0] != b:
                self._coef_cache = (b, self._coefficient_block(b))
            blocks.append(self._coef_cache[1])
        coef = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        return coef[t0 - b0 * _COEF_BLOCK : t1 - b0 * _COEF_BLOCK]

    def _coefficient_block(self, b: int) -> np.ndarray:
        sc, cfg = self.scene, self.cfg
        frames = np.arange(b * _COEF_BLOCK, min(cfg.n_frames, (b + 1) * _COEF_BLOCK))
        t_s = (frames / cfg.fs_hz).astype(np.float64)
        bleach = bleach_curve(cfg, frames)
        np_t = cfg.neuropil_counts * (
            1 + cfg.neuropil_modulation * slow_signal(sc.neuropil_sig, t_s)
        )  # (n, P)
        coef = np.concatenate(
            [
                bleach[:, None] * np_t,
                bleach[:, None],
                cfg.drift_counts * slow_signal(sc.drift_sig, t_s),
            ],
            1,
        )
        return coef.astype(np.float32)

    def _calcium(self, t0, t1):
        S = len(self._y1)
        lo, hi = np.searchsorted(self._sf, [t0, t1])
        spikes = np.zeros((t1 - t0, S))
        np.add.at(spikes, (self._sf[lo:hi] - t0, self._ss[lo:hi]), self._sa[lo:hi])
        out = np.empty((t1 - t0, S), np.float32)
        y1, y2 = self._y1, self._y2
        for k in range(t1 - t0):
            y1 = self._gd * y1 + self._ad * spikes[k]
            y2 = self._gr * y2 + self._ar * spikes[k]
            out[k] = y1 - y2
        self._y1, self._y2 = y1, y2
        return out

    def __iter__(self):
        sc, cfg = self.scene, self.cfg
        H, W, p = sc.height, sc.width, sc.pad
        Hc, Wc = sc.canvas_shape
        for t0 in range(0, cfg.n_frames, self.chunk):
            t1 = min(cfg.n_frames, t0 + self.chunk)
            self.dff = self._calcium(t0, t1)  # (n, S)
            coef = self._coefficients(t0, t1)  # (n, P + 2)
            bleach = coef[:, -2]
            # low-rank part: bleach * (rest + neuropil) + drift, one component at a time
            # (elementwise float32 multiply-adds: the same value whatever the chunking, which
            # a BLAS product does not promise)
            canvas = coef[:, :1] * self._lowrank[0]  # (n, Hc*Wc)
            for j in range(1, len(self._lowrank)):
                canvas += coef[:, j : j + 1] * self._lowrank[j]
            canvas += (self._A @ (self.dff * bleach[:, None]).T).T  # activity
            # shot (Gaussian approximation of Poisson) + read noise
            std = np.multiply(canvas, cfg.gain_counts_per_photon)
            std += cfg.read_noise_counts**2
            np.maximum(std, cfg.read_noise_counts**2, out=std)
            np.sqrt(std, out=std)
            offsets = self._noise_rng.integers(0, len(self._bank) - Hc * Wc, t1 - t0)
            for k, o in enumerate(offsets):
                std[k] *= self._bank[o : o + Hc * Wc]
            canvas += std
            del std
            np.rint(canvas, out=canvas)
            np.clip(canvas, 0, 65535, out=canvas)
            canvas = canvas.reshape(-1, Hc, Wc)
            reg = canvas[:, p : p + H, p : p + W]
            if p == 0:
                movie = reg.astype(np.uint16)
            else:
                movie = np.empty((t1 - t0, H, W), np.uint16)
                for k, (dy, dx) in enumerate(sc.motion[t0:t1]):
                    movie[k] = self._shifted(canvas[k], float(dy), float(dx))
            self.n_chunks += 1
            yield t0, movie, np.ascontiguousarray(reg).reshape(t1 - t0, H * W)

    def _shifted(self, img, dy, dx):
        """movie[y, x] = canvas[pad + y + dy, pad + x + dx] (bilinear for fractional shifts)."""
        H, W, p = self.scene.height, self.scene.width, self.scene.pad
        fy, fx = math.floor(dy), math.floor(dx)
        ry, rx = dy - fy, dx - fx
        out = np.zeros((H, W), np.float32)
        for oy, wy in ((0, 1 - ry), (1, ry)):
            for ox, wx in ((0, 1 - rx), (1, rx)):
                if wy * wx == 0:
                    continue
                y0 = min(max(p + fy + oy, 0), 2 * p)
                x0 = min(max(p + fx + ox, 0), 2 * p)
                out += wy * wx * img[y0 : y0 + H, x0 : x0 + W]
        return np.rint(out).astype(np.uint16)
