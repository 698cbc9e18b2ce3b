"""Images for the annotation page, rendered server-side with NumPy and Pillow (no Gradio here).

The field-of-view map is built once per store (:class:`MapCanvas`): a grey base image, an
"owner" image (the candidate whose footprint is largest at each pixel, -1 = none) and an
outline image (candidate index at each outline pixel). Colours come from a per-candidate lookup
table, so labelling a candidate only repaints the pixels inside that candidate's box
(:meth:`MapCanvas.set_colours`), never the whole map.

All images are uint8 RGB arrays (rows, cols, 3). Coordinates are 0-based (row, col).
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

__all__ = [
    "COLOURS",
    "MapCanvas",
    "Window",
    "contrast_stretch",
    "outline_pixels",
    "candidate_colours",
    "event_summary",
    "snapshot_strip",
    "footprint_panel",
    "trace_plot",
    "event_trace_strip",
    "draw_outline",
    "ENCODINGS",
    "encode_image",
    "fingerprint",
]

# RGB colours (0-255). Human labels are saturated, model decisions lighter shades.
COLOURS = {
    "human_cell": (40, 200, 70),
    "human_not": (230, 50, 50),
    "model_cell": (150, 235, 160),
    "model_not": (245, 160, 160),
    "unlabelled": (178, 204, 217),  # ActSort's default light blue border [0.7 0.8 0.85]
    "current": (255, 200, 0),
    "selected": (40, 120, 255),
    "neighbour": (178, 204, 217),
    "trace": (20, 20, 20),
    "event": (30, 90, 220),
    "false_pos": (255, 140, 0),  # truth comparison: called a cell, truly not
    "false_neg": (190, 40, 255),  # called not a cell, truly a cell
}
_FILL_ALPHA = {
    "human_cell": 0.35,
    "human_not": 0.35,
    "model_cell": 0.0,
    "model_not": 0.0,
    "unlabelled": 0.0,
    "selected": 0.45,
    "false_pos": 0.55,
    "false_neg": 0.55,
}


@lru_cache(maxsize=1)
def _font():
    """Pillow's bitmap font: about 20x faster to draw than the FreeType default."""
    try:
        return ImageFont.load_default_imagefont()
    except AttributeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _text(draw: ImageDraw.ImageDraw, xy, text: str, fill) -> None:
    draw.text(xy, text, fill=fill, font=_font())


def contrast_stretch(image: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.5) -> np.ndarray:
    """(H, W) float -> (H, W) uint8 grey, the [lo_pct, hi_pct] percentiles mapped to [0, 255]."""
    img = np.nan_to_num(np.asarray(image, dtype=np.float32))
    lo, hi = np.percentile(img, [lo_pct, hi_pct]) if img.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((img - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def outline_pixels(points: np.ndarray) -> np.ndarray:
    """Outline polygon(s) -> (K, 2) int pixel (row, col) of the closed, gap-free outline.

    points : (M, 2) float (row, col); NaN rows separate boundaries.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        return np.zeros((0, 2), np.int64)
    out = []
    nan = np.isnan(pts).any(1)
    breaks = np.flatnonzero(nan)
    starts = np.concatenate([[0], breaks + 1])
    stops = np.concatenate([breaks, [len(pts)]])
    for a, b in zip(starts, stops):
        seg = pts[a:b]
        if len(seg) == 0:
            continue
        seg = np.vstack([seg, seg[:1]])
        d = np.abs(np.diff(seg, axis=0)).max(1)
        steps = np.maximum(np.ceil(d).astype(np.int64), 1)
        idx = np.repeat(np.arange(len(seg) - 1), steps)
        frac = (np.arange(steps.sum()) - np.repeat(np.cumsum(steps) - steps, steps)) / np.repeat(
            steps, steps
        )
        p = seg[idx] + (seg[idx + 1] - seg[idx]) * frac[:, None]
        out.append(np.round(p).astype(np.int64))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


@dataclass(frozen=True)
class Window:
    """The part of the FOV shown on the page and its display scale.

    (row0, row1, col0, col1) half-open FOV box; ``scale`` display pixels per FOV pixel (> 1:
    nearest-neighbour enlargement, < 1: striding). A click at display (x, y) is FOV pixel
    (row0 + y / scale, col0 + x / scale) (x is the column: ActSort swapped them, bug B8).
    """

    row0: int
    row1: int
    col0: int
    col1: int
    scale: float

    def to_fov(self, x: float, y: float) -> tuple[int, int]:
        row = int(min(self.row1 - 1, max(self.row0, self.row0 + int(y / self.scale))))
        col = int(min(self.col1 - 1, max(self.col0, self.col0 + int(x / self.scale))))
        return row, col

    @staticmethod
    def around(
        center: tuple[float, float], zoom: float, height: int, width: int, display_px: int
    ) -> Window:
        """ActSort zoom: side = full - (zoom / 100) * (full - 10) px, centred on ``center``."""
        zoom = float(np.clip(zoom, 0, 100))
        h = int(round(height - zoom / 100 * (height - min(10, height))))
        w = int(round(width - zoom / 100 * (width - min(10, width))))
        cr, cc = (height / 2, width / 2) if center is None or np.isnan(center).any() else center
        r0 = int(np.clip(round(cr - h / 2), 0, height - h))
        c0 = int(np.clip(round(cc - w / 2), 0, width - w))
        side = max(h, w)
        # Never enlarge on the server (the browser scales with image-rendering: pixelated, so
        # a zoomed window costs fewer bytes, not more); shrink by striding above display_px.
        scale = 1.0 if side <= display_px else 1.0 / int(np.ceil(side / display_px))
        return Window(r0, r0 + h, c0, c0 + w, scale)


def candidate_colours(
    human: np.ndarray,
    model: np.ndarray | None,
    *,
    show_model: bool = True,
    selected=(),
    hide_cells: bool = False,
    hide_not: bool = False,
    errors: np.ndarray | None = None,
) -> np.ndarray:
    """Per-candidate (N, 4) float32 RGBA: outline RGB in [0, 255] and fill alpha.

    human : (N,) int8 labels +1 / -1 / 0; model : (N,) int8 decisions +1 / -1 or None (untrained).
    errors : optional (N,) int8 from ``progress.error_kinds`` (+1 false positive, -1 false
    negative, 0 correct): errors get their own filled colours over everything but the selection.
    A negative alpha hides the candidate (no outline, no fill).
    """
    human = np.asarray(human)
    names = ("unlabelled", "model_cell", "model_not", "human_cell", "human_not")
    table = np.array([[*COLOURS[k], _FILL_ALPHA[k]] for k in names], np.float32)
    kind = np.zeros(len(human), np.int64)
    if model is not None and show_model:
        model = np.asarray(model)
        kind[model > 0] = 1
        kind[model < 0] = 2
    kind[human > 0] = 3
    kind[human < 0] = 4
    lut = table[kind]
    if hide_cells:
        lut[human > 0, 3] = -1
    if hide_not:
        lut[human < 0, 3] = -1
    if errors is not None:
        errors = np.asarray(errors)
        for kind_name, mask in (("false_pos", errors > 0), ("false_neg", errors < 0)):
            lut[mask, :3] = COLOURS[kind_name]
            lut[mask, 3] = _FILL_ALPHA[kind_name]
    sel = np.asarray(list(selected), dtype=np.int64)
    if sel.size:
        lut[sel, :3] = COLOURS["selected"]
        lut[sel, 3] = _FILL_ALPHA["selected"]
    return lut


def _rasterise_outlines(outlines: list, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """All outlines at once -> (flat pixel index, candidate id) of every outline pixel.

    Consecutive points of one boundary are joined by straight runs; each boundary is closed;
    NaN rows separate boundaries (same result as :func:`outline_pixels` per candidate).
    """
    lengths = np.array([len(o) for o in outlines], np.int64)
    if lengths.sum() == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pts = np.concatenate([np.asarray(o, np.float64).reshape(-1, 2) for o in outlines])
    ids = np.repeat(np.arange(len(outlines)), lengths)
    nan = np.isnan(pts).any(1)
    # Boundary number of each point: a new boundary after each NaN row and each new candidate.
    new_cand = np.r_[True, ids[1:] != ids[:-1]]
    bnd = np.cumsum(new_cand | np.r_[False, nan[:-1]])
    keep = ~nan
    pts, ids, bnd = pts[keep], ids[keep], bnd[keep]
    if not len(pts):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # Successor of each point within its boundary (the last one wraps to the first).
    first = np.r_[True, bnd[1:] != bnd[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(pts)), 0))
    last = np.r_[bnd[1:] != bnd[:-1], True]
    nxt = np.where(last, start, np.arange(len(pts)) + 1)
    a, b = pts, pts[nxt]
    steps = np.maximum(np.ceil(np.abs(b - a).max(1)).astype(np.int64), 1)
    seg = np.repeat(np.arange(len(pts)), steps)
    frac = (np.arange(steps.sum()) - np.repeat(np.cumsum(steps) - steps, steps)) / steps[seg]
    p = np.round(a[seg] + (b[seg] - a[seg]) * frac[:, None]).astype(np.int64)
    ok = (p[:, 0] >= 0) & (p[:, 0] < height) & (p[:, 1] >= 0) & (p[:, 1] < width)
    return p[ok, 0] * width + p[ok, 1], ids[seg][ok]


def _group_by(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``keys`` (candidate ids, -1 = none) grouped by id: (positions, (n + 1,)
    start offsets); the positions of id c are ``positions[start[c]:start[c + 1]]``."""
    pos = np.flatnonzero(keys >= 0)
    order = np.argsort(keys[pos], kind="stable")
    pos = pos[order]
    return pos, np.searchsorted(keys[pos], np.arange(n + 1))


def _gather(positions: np.ndarray, start: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Concatenated positions of the groups ``ids`` (see :func:`_group_by`)."""
    a, b = start[ids], start[ids + 1]
    k = b - a
    idx = np.repeat(a - np.r_[0, np.cumsum(k)[:-1]], k) + np.arange(k.sum())
    return positions[idx]


class MapCanvas:
    """The FOV map of one store, painted once and repainted incrementally.

    footprints : (N, H*W) CSR max-normalised footprints; outlines : list of N (M, 2) (row, col)
    point arrays. Only "foreground" pixels (under a footprint or an outline) ever change colour;
    :meth:`set_colours` recomposes just the foreground pixels of candidates whose colour
    changed, with vectorised gathers (no per-candidate Python loop), so a label costs
    O(pixels of the changed candidates); a flipped model decision (outline colour only) costs
    O(its outline pixels).
    """

    def __init__(self, footprints: sp.csr_matrix, outlines: list, height: int, width: int):
        self.height, self.width = int(height), int(width)
        n = footprints.shape[0]
        self.n = n
        fp = sp.csr_matrix(footprints)
        self.footprints = fp
        self._csc = fp.tocsc()
        hw = height * width
        # Owner = candidate with the largest footprint value at each pixel (fill colour).
        rows = np.repeat(np.arange(n), np.diff(fp.indptr))
        order = np.lexsort((-fp.data, fp.indices))
        pix_sorted = fp.indices[order]
        first = np.r_[True, pix_sorted[1:] != pix_sorted[:-1]] if len(order) else np.zeros(0, bool)
        owner = np.full(hw, -1, np.int64)
        owner[pix_sorted[first]] = rows[order][first]
        line = np.full(hw, -1, np.int64)
        lpix, lid = _rasterise_outlines(outlines, height, width)
        line[lpix] = lid
        self.owner = owner.reshape(height, width)
        self.line = line.reshape(height, width)
        fg = np.flatnonzero((owner >= 0) | (line >= 0))
        self._fg = fg
        self._fg_owner = owner[fg]
        self._fg_line = line[fg]
        # Foreground positions grouped by candidate, as owner (fill) and as outline, so that
        # changed candidates gather their pixels without scanning the whole foreground.
        self._own_pos, self._own_start = _group_by(self._fg_owner, n)
        self._line_pos, self._line_start = _group_by(self._fg_line, n)
        self._base: np.ndarray | None = None
        self._lut: np.ndarray | None = None
        self.rgb: np.ndarray | None = None

    # ------------------------------------------------------------------ painting
    def set_base(self, grey: np.ndarray) -> None:
        """(H, W) uint8 grey base image; repaints everything (contrast or image change)."""
        grey = np.asarray(grey, np.uint8)
        if grey.shape != (self.height, self.width):
            raise ValueError(f"base image: expected {(self.height, self.width)}, got {grey.shape}")
        self._base = np.repeat(grey[:, :, None], 3, axis=2)
        if self._lut is not None:
            self.rgb = self._base.copy()
            self._paint(self._lut, self._fg, self._fg_owner, self._fg_line)

    def set_colours(self, lut: np.ndarray) -> int:
        """Apply the (N, 4) colour table; recomposes only the pixels of candidates whose entry
        changed. Returns the number of candidates whose colour changed."""
        lut = np.asarray(lut, np.float32)
        if self._base is None:
            raise RuntimeError("MapCanvas.set_base must be called before set_colours")
        if self._lut is None or self.rgb is None:
            self._lut = lut.copy()
            self.rgb = self._base.copy()
            self._paint(lut, self._fg, self._fg_owner, self._fg_line)
            return self.n
        old = self._lut
        ids = np.flatnonzero((old != lut).any(1))
        self._lut = lut.copy()
        if not len(ids):
            return 0
        # Outline-only change (a model decision flipped; model colours have no fill): same fill
        # (alpha, and colour where the fill shows) and a visible new outline. Such a candidate's
        # outline pixels just take the new colour; its interior is untouched.
        o, c = old[ids], lut[ids]
        a_old, a_new = np.clip(o[:, 3], 0, 1), np.clip(c[:, 3], 0, 1)
        line_only = (
            (a_old == a_new) & ((a_new == 0) | (o[:, :3] == c[:, :3]).all(1)) & (c[:, 3] >= 0)
        )
        full = ids[~line_only]
        if len(full):
            sel = np.concatenate(
                [
                    _gather(self._own_pos, self._own_start, full),
                    _gather(self._line_pos, self._line_start, full),
                ]
            )
            self._paint(lut, self._fg[sel], self._fg_owner[sel], self._fg_line[sel])
        if line_only.any():
            sel = _gather(self._line_pos, self._line_start, ids[line_only])
            colour = np.clip(lut[self._fg_line[sel], :3], 0, 255).astype(np.uint8)
            self.rgb.reshape(-1, 3)[self._fg[sel]] = colour
        return len(ids)

    def _paint(self, lut: np.ndarray, pix, owner, line) -> None:
        """Composite the given flat pixels: base blended with the owner's fill, outline on top."""
        flat = self.rgb.reshape(-1, 3)
        out = self._base.reshape(-1, 3)[pix].astype(np.float32)
        has = owner >= 0
        if has.any():
            col = lut[owner[has]]
            a = np.clip(col[:, 3], 0, 1)[:, None]
            out[has] = out[has] * (1 - a) + col[:, :3] * a
        on = line >= 0
        if on.any():
            col = lut[line[on]]
            vis = col[:, 3] >= 0
            idx = np.flatnonzero(on)[vis]
            out[idx] = col[vis, :3]
        flat[pix] = np.clip(out, 0, 255).astype(np.uint8)

    # ------------------------------------------------------------------ views
    def view(
        self, window: Window, current: int | None = None, current_outline: np.ndarray | None = None
    ) -> np.ndarray:
        """The displayed map: the window's pixels at display scale, the current candidate's
        outline drawn thick in the 'current' colour on top."""
        sub = self.rgb[window.row0 : window.row1, window.col0 : window.col1]
        if window.scale >= 1:
            s = int(window.scale)
            img = np.repeat(np.repeat(sub, s, axis=0), s, axis=1) if s > 1 else sub.copy()
        else:
            k = int(round(1 / window.scale))
            img = np.ascontiguousarray(sub[::k, ::k])
        if current is not None and current_outline is not None and len(current_outline):
            px = outline_pixels(current_outline)
            px = ((px - [window.row0, window.col0]) * window.scale).astype(np.int64)
            hh, ww = img.shape[:2]
            ok = (px[:, 0] >= 0) & (px[:, 0] < hh) & (px[:, 1] >= 0) & (px[:, 1] < ww)
            img[px[ok, 0], px[ok, 1]] = COLOURS["current"]
            if ok.any():
                # Corner brackets 3 px outside the outline's box: visible at any zoom.
                r0, c0 = px[ok].min(0) - 3
                r1, c1 = px[ok].max(0) + 3
                for r, c, dr, dc in (
                    (r0, c0, 1, 1),
                    (r0, c1, 1, -1),
                    (r1, c0, -1, 1),
                    (r1, c1, -1, -1),
                ):
                    rr = np.clip([r] * 4 + [r + dr * k for k in range(4)], 0, hh - 1)
                    cc = np.clip([c + dc * k for k in range(4)] + [c] * 4, 0, ww - 1)
                    img[rr, cc] = COLOURS["current"]
        return img

    def candidates_at(self, row: int, col: int) -> np.ndarray:
        """Indices of candidates whose footprint covers pixel (row, col)."""
        p = int(row) * self.width + int(col)
        return self._csc.indices[self._csc.indptr[p] : self._csc.indptr[p + 1]]


def draw_outline(pil: Image.Image, points: np.ndarray, colour, width: int = 2) -> None:
    """Draw NaN-separated (row, col) polylines (already in image pixel units) on a PIL image."""
    pts = np.asarray(points, np.float64)
    if pts.size == 0:
        return
    draw = ImageDraw.Draw(pil)
    nan = np.isnan(pts).any(1)
    breaks = np.flatnonzero(nan)
    for seg in np.split(pts, breaks):
        seg = seg[~np.isnan(seg).any(1)]
        if len(seg) >= 2:
            xy = [(float(c), float(r)) for r, c in seg] + [(float(seg[0, 1]), float(seg[0, 0]))]
            draw.line(xy, fill=tuple(int(v) for v in colour), width=width)


def _upscale(img: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Nearest-neighbour enlargement of a small (h, w[, 3]) image so its long side is ~size."""
    h, w = img.shape[:2]
    s = max(1, int(size // max(h, w, 1)))
    return np.repeat(np.repeat(img, s, axis=0), s, axis=1), float(s)


def _grey(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        hi = lo + 1e-6
    g = (np.clip((np.nan_to_num(img) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def event_summary(snapshot: np.ndarray) -> np.ndarray:
    """ActSort's still image of one event: 0.5 max + 0.3 median + 0.2 mean over its frames.

    snapshot : (event_frames, h, w) float -> (h, w) float32
    """
    s = np.asarray(snapshot, np.float32)
    return 0.5 * s.max(0) + 0.3 * np.median(s, axis=0) + 0.2 * s.mean(0)


def _crop_outline(points: np.ndarray, crop) -> np.ndarray:
    return np.asarray(points, np.float64) - [crop[0], crop[2]]


def snapshot_strip(
    snapshots: np.ndarray,
    events: np.ndarray,
    crop,
    outline: np.ndarray,
    neighbour_outlines: list,
    frame: int | None = None,
    *,
    panel_px: int = 150,
    clim: tuple[float, float] | None = None,
    gap_px: int = 6,
) -> np.ndarray:
    """The event panels side by side: (panel_px, n_events * (panel_px + gap), 3) uint8.

    snapshots : (n_events, event_frames, h, w) float; events : (n_events,) frame or -1;
    crop : (row0, row1, col0, col1); frame : None = summary image, else that snapshot frame
    (playback). Each panel carries the candidate's outline (current colour) and its neighbours'
    outlines (neighbour colour) and the event number.
    """
    n_ev, n_fr, h, w = snapshots.shape
    if clim is None:
        valid = snapshots[np.asarray(events) >= 0]
        vals = valid.ravel() if valid.size else np.zeros(1, np.float32)
        clim = tuple(np.percentile(vals, [10, 99.9]))
    panels = []
    for e in range(n_ev):
        if events[e] < 0:
            img = np.full((h, w, 3), 235, np.uint8)
        else:
            still = (
                snapshots[e, int(frame) % n_fr]
                if frame is not None
                else event_summary(snapshots[e])
            )
            img = _grey(still, *clim)
        big, s = _upscale(img, panel_px)
        pil = Image.new("RGB", (panel_px, panel_px), (255, 255, 255))
        pil.paste(Image.fromarray(big), (0, 0))
        if events[e] >= 0:
            for nb in neighbour_outlines:
                draw_outline(pil, (_crop_outline(nb, crop) + 0.5) * s, COLOURS["neighbour"], 1)
            draw_outline(pil, (_crop_outline(outline, crop) + 0.5) * s, COLOURS["selected"], 2)
        d = ImageDraw.Draw(pil)
        label = f"{e + 1}" if events[e] < 0 else f"{e + 1}  frame {int(events[e])}"
        d.rectangle([0, panel_px - 14, 6 * len(label) + 6, panel_px], fill=(255, 255, 255))
        _text(d, (3, panel_px - 12), label, COLOURS["event"])
        if events[e] < 0:
            _text(d, (panel_px // 2 - 20, panel_px // 2), "no event", (120, 120, 120))
        panels.append(np.asarray(pil))
        panels.append(np.full((panel_px, gap_px, 3), 255, np.uint8))
    return np.concatenate(panels[:-1], axis=1)


def footprint_panel(
    footprint: np.ndarray, outline: np.ndarray, crop, *, panel_px: int = 150
) -> np.ndarray:
    """Cropped footprint (grey, white = 1) with the candidate outline; (panel_px, panel_px, 3)."""
    img = _grey(footprint, 0.0, max(float(np.nanmax(footprint)) if footprint.size else 1.0, 1e-6))
    big, s = _upscale(img, panel_px)
    pil = Image.new("RGB", (panel_px, panel_px), (255, 255, 255))
    pil.paste(Image.fromarray(big), (0, 0))
    draw_outline(pil, (_crop_outline(outline, crop) + 0.5) * s, COLOURS["selected"], 2)
    return np.asarray(pil)


def _line_canvas(
    values: np.ndarray, width: int, height: int, pad: int, vrange: tuple[float, float] | None = None
):
    """Min/max envelope of ``values`` per display column -> polyline in pixel space."""
    v = np.nan_to_num(np.asarray(values, np.float64))
    n = len(v)
    lo, hi = vrange if vrange is not None else (v.min() if n else 0.0, v.max() if n else 1.0)
    if hi <= lo:
        hi = lo + 1.0
    inner_w, inner_h = width - 2 * pad, height - 2 * pad
    y = lambda a: pad + inner_h - (a - lo) / (hi - lo) * inner_h  # noqa: E731
    if n > inner_w:
        edges = np.linspace(0, n, inner_w + 1).astype(np.int64)
        mins = np.minimum.reduceat(v, edges[:-1])
        maxs = np.maximum.reduceat(v, edges[:-1])
        xs = pad + np.arange(inner_w)
        pts = np.empty((2 * inner_w, 2))
        pts[0::2, 0] = xs
        pts[1::2, 0] = xs
        pts[0::2, 1] = y(mins)
        pts[1::2, 1] = y(maxs)
    else:
        xs = pad + (np.arange(n) + 0.5) * inner_w / max(n, 1)
        pts = np.stack([xs, y(v)], 1)
    x_of = lambda f: pad + (f + 0.5) * inner_w / max(n, 1)  # noqa: E731
    return pts, x_of


def trace_plot(
    trace: np.ndarray,
    events: np.ndarray,
    *,
    width: int = 900,
    height: int = 170,
    fs_hz: float | None = None,
) -> np.ndarray:
    """The full trace (black) with numbered event markers (blue): (height, width, 3) uint8."""
    pad = 18
    pil = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(pil)
    pts, x_of = _line_canvas(trace, width, height, pad)
    d.rectangle([pad, pad, width - pad, height - pad], outline=(210, 210, 210))
    for e, f in enumerate(np.asarray(events)):
        if f >= 0:
            x = x_of(int(f))
            d.line([(x, pad), (x, height - pad)], fill=(200, 215, 245), width=1)
            _text(d, (x - 3, 3), str(e + 1), COLOURS["event"])
    if len(pts) >= 2:
        d.line([tuple(p) for p in pts], fill=COLOURS["trace"], width=1)
    n = len(trace)
    span = f"{n / fs_hz:.0f} s" if fs_hz else f"{n} frames"
    _text(d, (pad, height - pad + 3), f"0 - {span}", (90, 90, 90))
    return np.asarray(pil)


def event_trace_strip(
    trace: np.ndarray,
    events: np.ndarray,
    *,
    half_window: int | None = None,
    panel_px: int = 150,
    height: int = 90,
    gap_px: int = 6,
    frame: int | None = None,
    event_frames: int = 11,
) -> np.ndarray:
    """Zoomed trace around each event (ActSort's 'hold t' view: +/- round(0.0035 T) frames,
    at least the snapshot window); the snapshot window is shaded and, during playback, the
    current frame is marked. (height, n_events * (panel_px + gap), 3) uint8."""
    t = len(trace)
    hw = half_window if half_window is not None else max(int(round(0.0035 * t)), event_frames)
    panels = []
    v = np.asarray(trace, np.float64)
    for e, f in enumerate(np.asarray(events)):
        pil = Image.new("RGB", (panel_px, height), (255, 255, 255))
        d = ImageDraw.Draw(pil)
        d.rectangle([0, 0, panel_px - 1, height - 1], outline=(215, 215, 215))
        if f >= 0:
            a, b = max(0, int(f) - hw), min(t, int(f) + hw + 1)
            seg = v[a:b]
            pts, x_of = _line_canvas(seg, panel_px, height, 6)
            half = event_frames // 2
            x0, x1 = x_of(int(f) - half - a - 0.5), x_of(int(f) + half - a + 0.5)
            d.rectangle([x0, 6, x1, height - 6], fill=(225, 235, 252))
            if frame is not None:
                xf = x_of(int(f) - half + int(frame) % event_frames - a)
                d.line([(xf, 6), (xf, height - 6)], fill=COLOURS["current"], width=2)
            if len(pts) >= 2:
                d.line([tuple(p) for p in pts], fill=COLOURS["trace"], width=1)
        _text(d, (4, 2), str(e + 1), COLOURS["event"])
        panels.append(np.asarray(pil))
        panels.append(np.full((height, gap_px, 3), 255, np.uint8))
    return np.concatenate(panels[:-1], axis=1)


# How each page image is sent (measured in benchmarks/RESULTS.md, "Annotation page"): the map is
# a noisy photograph-like image where PNG costs ~280 ms at 580 px; JPEG quality 90 without chroma
# subsampling (4:4:4, so 1-px coloured outlines keep their colour) costs ~10 ms. The panels are
# small line drawings: PNG at zlib level 1 (lossless, about 3x faster than level 6).
ENCODINGS = {
    "map": ("jpeg", {"quality": 90, "subsampling": 0}),
    "panel": ("png", {"compress_level": 1}),
}


def encode_image(img: np.ndarray, kind: str = "panel") -> tuple[bytes, str]:
    """(rows, cols, 3) uint8 RGB -> (encoded bytes, file extension) per :data:`ENCODINGS`."""
    if kind not in ENCODINGS:
        raise ValueError(f"image kind must be one of {sorted(ENCODINGS)}, got {kind!r}")
    fmt, params = ENCODINGS[kind]
    with io.BytesIO() as buf:
        Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).save(buf, fmt, **params)
        return buf.getvalue(), ("jpg" if fmt == "jpeg" else fmt)


def fingerprint(value) -> bytes | str | None:
    """Cheap content key of a panel (array: 16-byte BLAKE2b of shape and bytes; str: itself),
    to skip re-sending panels that did not change."""
    if value is None or isinstance(value, str):
        return value
    a = np.ascontiguousarray(value)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((a.shape, a.dtype.str)).encode())
    h.update(a.data)
    return h.digest()
