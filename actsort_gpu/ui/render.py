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
    "value_colours",
    "colourbar_css",
    "display_trace",
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
    "unsure": (150, 80, 230),  # key U: seen, skipped for now (no training label)
    "no_value": (120, 120, 120),  # colour by a value: candidates without one (NaN)
}
#: the outline colours a user may choose for candidates without a label or decision and for the
#: snapshots' neighbours (ActSort's cell border colours; its blue, orange and purple are taken
#: here by the selection, the truth's false positives and "unsure", so cyan and yellow-green
#: stand in for them); "Hide all outlines" is ActSort's NO BORDER
BORDER_COLOURS = {
    "Light blue": COLOURS["unlabelled"],
    "White": (255, 255, 255),
    "Black": (0, 0, 0),
    "Pink": (255, 110, 199),
    "Cyan": (0, 215, 230),
    "Yellow-green": (190, 230, 40),
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
    "unsure": 0.35,
}


#: text size on the page's images (px); readable at the size the page shows them (issue 15:
#: the former 6 px bitmap font was not)
FONT_PX = 12


@lru_cache(maxsize=8)
def _font(size: int = FONT_PX):
    """Pillow's bundled FreeType font at ``size`` px (Pillow >= 10.1 with FreeType); the 6 px
    bitmap font only where FreeType is missing. A label costs about 0.05 ms: the panels carry
    a few dozen."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, AttributeError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def _text(draw: ImageDraw.ImageDraw, xy, text: str, fill, size: int = FONT_PX, **kw) -> None:
    draw.text(xy, text, fill=fill, font=_font(size), **kw)


def _text_width(draw: ImageDraw.ImageDraw, text: str, size: int = FONT_PX) -> float:
    return draw.textlength(text, font=_font(size))


def _vertical_text(pil: Image.Image, centre, text: str, fill, size: int = FONT_PX) -> None:
    """``text`` read bottom to top (an axis title), centred at ``centre`` (x, y) px."""
    font = _font(size)
    _, _, right, bottom = font.getbbox(text)
    tile = Image.new("L", (int(right) + 2, int(bottom) + 2), 0)
    ImageDraw.Draw(tile).text((1, 1), text, fill=255, font=font)
    tile = tile.rotate(90, expand=True)
    corner = (int(centre[0] - tile.width / 2), int(centre[1] - tile.height / 2))
    pil.paste(Image.new("RGB", tile.size, fill), corner, mask=tile)


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
        # The canvas resolution: FOV pixels as they are, or strided above display_px. The
        # page then resamples it to display_px (handlers.map_window): the browser must never
        # enlarge the map, since Gradio maps clicks assuming it is shown at most at its
        # natural size (CSS object-fit: scale-down).
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
    unsure: np.ndarray | None = None,
    values: np.ndarray | None = None,
    hidden: np.ndarray | None = None,
    fill: float = 1.0,
    border=None,
) -> np.ndarray:
    """Per-candidate (N, 4) float32 RGBA: outline RGB in [0, 255] and fill alpha.

    human : (N,) int8 labels +1 / -1 / 0; model : (N,) int8 decisions +1 / -1 or None (untrained).
    errors : optional (N,) int8 from ``progress.error_kinds`` (+1 false positive, -1 false
    negative, 0 correct): errors get their own filled colours over everything but the selection.
    unsure : optional (N,) bool, candidates marked unsure: their own filled colour, like a label.
    values : optional (N,) float in [0, 1] (NaN: no value): the outlines of the candidates
    without a human label (nor unsure) take the colour bar's colour (:func:`value_colours`)
    instead of the model's; labelled ones keep their label colours.
    hidden : optional (N,) bool: candidates not drawn (the page's filters).
    fill : factor on the fills' opacity (1: the defaults; 0: outlines only), capped at opaque.
    border : RGB of the candidates without a label or a shown decision (default: light blue).
    A negative alpha hides the candidate (no outline, no fill).
    """
    human = np.asarray(human)
    names = ("unlabelled", "model_cell", "model_not", "human_cell", "human_not")
    table = np.array([[*COLOURS[k], _FILL_ALPHA[k]] for k in names], np.float32)
    if border is not None:
        table[0, :3] = border
    kind = np.zeros(len(human), np.int64)
    if model is not None and show_model:
        model = np.asarray(model)
        kind[model > 0] = 1
        kind[model < 0] = 2
    kind[human > 0] = 3
    kind[human < 0] = 4
    lut = table[kind]
    if values is not None:
        free = kind < 3
        if unsure is not None:
            free &= ~np.asarray(unsure, bool)
        lut[free, :3] = value_colours(np.asarray(values)[free])
        lut[free, 3] = 0.0
    if unsure is not None:
        mark = np.asarray(unsure, bool)
        lut[mark, :3] = COLOURS["unsure"]
        lut[mark, 3] = _FILL_ALPHA["unsure"]
    if hidden is not None:
        lut[np.asarray(hidden, bool), 3] = -1
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
    drawn = lut[:, 3] > 0
    lut[drawn, 3] = np.minimum(lut[drawn, 3] * max(float(fill), 0.0), 1.0)
    return lut


# Viridis (matplotlib's perceptually uniform map, readable by colour-blind people) at 9 stops;
# the page's colour bar draws the same stops as a CSS gradient (colourbar_css).
_VIRIDIS = np.array(
    [
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ],
    np.float32,
)
#: colour levels of :func:`value_colours`: a value change inside one level repaints nothing
VALUE_LEVELS = 32


def value_colours(values: np.ndarray) -> np.ndarray:
    """(N,) float in [0, 1] (clipped; NaN: no value) -> (N, 3) float32 RGB of the colour bar,
    quantised to :data:`VALUE_LEVELS` levels (so that a refit that moves a value a little
    repaints nothing); NaN gets ``COLOURS["no_value"]``."""
    v = np.asarray(values, np.float64)
    ok = np.isfinite(v)
    q = np.round(np.clip(np.where(ok, v, 0), 0, 1) * (VALUE_LEVELS - 1)) / (VALUE_LEVELS - 1)
    pos = q * (len(_VIRIDIS) - 1)
    i = np.minimum(pos.astype(np.int64), len(_VIRIDIS) - 2)
    f = (pos - i)[:, None]
    rgb = _VIRIDIS[i] * (1 - f) + _VIRIDIS[i + 1] * f
    rgb[~ok] = COLOURS["no_value"]
    return np.round(rgb).astype(np.float32)


def colourbar_css() -> str:
    """The CSS ``linear-gradient`` of :func:`value_colours` (low values on the left)."""
    stops = ", ".join(f"rgb({r:.0f},{g:.0f},{b:.0f})" for r, g, b in _VIRIDIS)
    return f"linear-gradient(to right, {stops})"


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
        self._line_pix = self._fg[self._line_pos]  # flat pixel of each grouped outline position
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
            # one colour per candidate, repeated over its outline pixels (grouped by candidate):
            # no per-pixel lookup, which matters when a refit recolours most outlines (colour
            # by P(cell))
            lo = ids[line_only]
            idx = _gather(np.arange(len(self._line_pix)), self._line_start, lo)
            counts = self._line_start[lo + 1] - self._line_start[lo]
            colour = np.clip(lut[lo, :3], 0, 255).astype(np.uint8)
            self.rgb.reshape(-1, 3)[self._line_pix[idx]] = np.repeat(colour, counts, axis=0)
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
        self,
        window: Window,
        current: int | None = None,
        current_outline: np.ndarray | None = None,
        *,
        marker_px: int = 1,
    ) -> np.ndarray:
        """The displayed map: the window's pixels at display scale, the current candidate's
        outline in the 'current' colour on top, with corner brackets ``marker_px`` thick (whole
        even at the map's edge)."""
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
                gap = 2 + marker_px
                _corner_brackets(
                    img, px[ok].min(0) - gap, px[ok].max(0) + gap, 4 * marker_px, marker_px
                )
        return img

    def candidates_at(self, row: int, col: int) -> np.ndarray:
        """Indices of candidates whose footprint covers pixel (row, col)."""
        p = int(row) * self.width + int(col)
        return self._csc.indices[self._csc.indptr[p] : self._csc.indptr[p + 1]]


def _corner_brackets(img: np.ndarray, lo, hi, arm: int = 5, thick: int = 2) -> None:
    """Draw four L-shaped brackets (``arm`` px long, ``thick`` px wide, 'current' colour) at
    the corners of the box ``lo`` = (row0, col0) .. ``hi`` = (row1, col1), the box moved
    inside the image first, so that a candidate at the map's edge keeps whole brackets."""
    hh, ww = img.shape[:2]
    span = arm + thick
    r0, c0 = (int(np.clip(v, 0, max(n - span, 0))) for v, n in zip(lo, (hh, ww)))
    r1, c1 = (int(np.clip(v, min(span - 1, n - 1), n - 1)) for v, n in zip(hi, (hh, ww)))
    colour = COLOURS["current"]
    for r, c, dr, dc in ((r0, c0, 1, 1), (r0, c1, 1, -1), (r1, c0, -1, 1), (r1, c1, -1, -1)):
        ra, rb = sorted((r, r + dr * (arm - 1)))
        ca, cb = sorted((c, c + dc * (arm - 1)))
        ta, tb = sorted((r, r + dr * (thick - 1)))
        sa, sb = sorted((c, c + dc * (thick - 1)))
        img[max(ta, 0) : tb + 1, max(ca, 0) : cb + 1] = colour  # horizontal arm
        img[max(ra, 0) : rb + 1, max(sa, 0) : sb + 1] = colour  # vertical arm


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


def _panel(img: np.ndarray, panel_px: int) -> tuple[Image.Image, float, np.ndarray]:
    """A (panel_px, panel_px) white panel with ``img`` enlarged and centred in it (a crop cut
    by the field of view's edge is a strip: centred, not stuck to the top); returns the panel,
    the enlargement and the (row, col) pixel offset of the image in it."""
    big, s = _upscale(img, panel_px)
    offset = np.array([(panel_px - big.shape[0]) // 2, (panel_px - big.shape[1]) // 2])
    offset = np.maximum(offset, 0)
    pil = Image.new("RGB", (panel_px, panel_px), (255, 255, 255))
    pil.paste(Image.fromarray(big), (int(offset[1]), int(offset[0])))
    return pil, s, offset


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
    clim_pct: tuple[float, float] = (10.0, 99.9),
    gap_px: int = 6,
    fs_hz: float | None = None,
    neighbour_colour=COLOURS["neighbour"],
) -> np.ndarray:
    """The event panels side by side: (panel_px, n_events * (panel_px + gap), 3) uint8.

    snapshots : (n_events, event_frames, h, w) float; events : (n_events,) frame or -1;
    crop : (row0, row1, col0, col1); frame : None = summary image, else that snapshot frame
    (playback). Each panel carries the candidate's outline (selected colour) and its
    neighbours' outlines (``neighbour_colour``), and a caption: the event number and its time
    (s with ``fs_hz``, else its frame). The grey scale spans ``clim`` (values), else the
    ``clim_pct`` percentiles of the candidate's snapshot values (ActSort: 10 and 99.9).
    """
    n_ev, n_fr, h, w = snapshots.shape
    if clim is None:
        valid = snapshots[np.asarray(events) >= 0]
        vals = valid.ravel() if valid.size else np.zeros(1, np.float32)
        clim = tuple(np.percentile(vals, list(clim_pct)))
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
        pil, s, at = _panel(img, panel_px)
        if events[e] >= 0:
            for nb in neighbour_outlines:
                points = (_crop_outline(nb, crop) + 0.5) * s + at
                draw_outline(pil, points, neighbour_colour, 1)
            points = (_crop_outline(outline, crop) + 0.5) * s + at
            draw_outline(pil, points, COLOURS["selected"], 2)
        d = ImageDraw.Draw(pil)
        if events[e] < 0:
            label = f"{e + 1}"
            _text(d, (panel_px // 2, panel_px // 2), "no event", (110, 110, 110), anchor="mm")
        elif fs_hz:
            label = f"{e + 1} · {int(events[e]) / fs_hz:.1f} s"
        else:
            label = f"{e + 1} · frame {int(events[e])}"
        tw = _text_width(d, label)
        d.rectangle([0, panel_px - FONT_PX - 5, tw + 6, panel_px], fill=(255, 255, 255))
        _text(d, (3, panel_px - FONT_PX - 4), label, COLOURS["event"])
        panels.append(np.asarray(pil))
        panels.append(np.full((panel_px, gap_px, 3), 255, np.uint8))
    return np.concatenate(panels[:-1], axis=1)


def footprint_panel(
    footprint: np.ndarray, outline: np.ndarray, crop, *, panel_px: int = 150
) -> np.ndarray:
    """Cropped footprint (grey, white = 1) with the candidate outline and the caption
    "footprint"; (panel_px, panel_px, 3)."""
    img = _grey(footprint, 0.0, max(float(np.nanmax(footprint)) if footprint.size else 1.0, 1e-6))
    pil, s, at = _panel(img, panel_px)
    draw_outline(pil, (_crop_outline(outline, crop) + 0.5) * s + at, COLOURS["selected"], 2)
    d = ImageDraw.Draw(pil)
    tw = _text_width(d, "footprint")
    d.rectangle([0, panel_px - FONT_PX - 5, tw + 6, panel_px], fill=(255, 255, 255))
    _text(d, (3, panel_px - FONT_PX - 4), "footprint", (60, 60, 60))
    return np.asarray(pil)


def _polyline(values: np.ndarray, box, vrange: tuple[float, float] | None = None):
    """Min/max envelope of ``values`` per pixel column of ``box`` = (x0, y0, x1, y1) ->
    (polyline points (K, 2) in pixels, x of a frame, y of a value)."""
    v = np.nan_to_num(np.asarray(values, np.float64))
    n = len(v)
    x0, y0, x1, y1 = box
    lo, hi = vrange if vrange is not None else (v.min() if n else 0.0, v.max() if n else 1.0)
    if hi <= lo:
        hi = lo + 1.0
    inner_w, inner_h = max(int(x1 - x0), 1), y1 - y0
    y_of = lambda a: y1 - (np.asarray(a) - lo) / (hi - lo) * inner_h  # noqa: E731
    if n > inner_w:
        edges = np.linspace(0, n, inner_w + 1).astype(np.int64)
        mins = np.minimum.reduceat(v, edges[:-1])
        maxs = np.maximum.reduceat(v, edges[:-1])
        xs = x0 + np.arange(inner_w)
        pts = np.empty((2 * inner_w, 2))
        pts[0::2, 0] = xs
        pts[1::2, 0] = xs
        pts[0::2, 1] = y_of(mins)
        pts[1::2, 1] = y_of(maxs)
    else:
        xs = x0 + (np.arange(n) + 0.5) * inner_w / max(n, 1)
        pts = np.stack([xs, y_of(v)], 1)
    x_of = lambda f: x0 + (f + 0.5) * inner_w / max(n, 1)  # noqa: E731
    return pts, x_of, y_of


def _line_canvas(
    values: np.ndarray, width: int, height: int, pad: int, vrange: tuple[float, float] | None = None
):
    """Min/max envelope of ``values`` per display column -> polyline in pixel space."""
    pts, x_of, _ = _polyline(values, (pad, pad, width - pad, height - pad), vrange)
    return pts, x_of


def nice_ticks(lo: float, hi: float, n: int = 4) -> tuple[np.ndarray, int]:
    """About ``n`` round tick values in [lo, hi] (steps 1, 2, 2.5 or 5 x 10^k) and the number
    of decimals their labels need."""
    span = float(hi - lo)
    if not np.isfinite(span) or span <= 0:
        return np.array([lo]), 0
    raw = span / max(n - 1, 1)
    mag = 10.0 ** np.floor(np.log10(raw))
    step = min((1.0, 2.0, 2.5, 5.0, 10.0), key=lambda m: abs(m * mag - raw)) * mag
    first = np.ceil(lo / step - 1e-9) * step
    ticks = np.arange(first, hi + 1e-9 * span, step)
    decimals = max(0, -int(np.floor(np.log10(step) + 1e-9)))
    if abs(step / 10.0**-decimals - round(step / 10.0**-decimals)) > 1e-6:  # 2.5, 0.25 ...
        decimals += 1
    return ticks, decimals


def _tick_label(v: float, decimals: int) -> str:
    if abs(v) >= 10_000:
        return f"{v / 1000:.0f}k"
    text = f"{v:.{decimals}f}"
    return text.lstrip("-") if float(text) == 0 else text


def display_trace(trace: np.ndarray) -> tuple[np.ndarray, str]:
    """A trace as the page plots it: (values, y-axis label).

    dF/F = (F - F0) / F0 with F0 its 20th percentile, when F0 is clearly positive (a baseline
    that is fluorescence, as in Suite2p's F or F - 0.7 Fneu: F0 > 0 and the trace spans less
    than 50 F0); otherwise the source's own units (EXTRACT and CaImAn traces sit at 0 at rest,
    where dF/F means nothing).
    """
    v = np.nan_to_num(np.asarray(trace, np.float64))
    if v.size:
        f0 = float(np.percentile(v, 20))
        span = float(v.max() - v.min())
        if f0 > 0 and span < 50 * f0:
            return (v - f0) / f0, "dF/F"
    return v, "source units"


def trace_plot(
    trace: np.ndarray,
    events: np.ndarray,
    *,
    width: int = 900,
    height: int = 170,
    fs_hz: float | None = None,
    units: str | None = None,
) -> np.ndarray:
    """The full trace (black) with a y-axis labelled ``units`` (e.g. "dF/F", see
    :func:`display_trace`), a time axis (s with ``fs_hz``, else frames) and the events:
    numbered blue lines with a dot on the trace. (height, width, 3) uint8."""
    v = np.nan_to_num(np.asarray(trace, np.float64))
    n = len(v)
    pil = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(pil)
    lo, hi = (float(v.min()), float(v.max())) if n else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    yt, ydec = nice_ticks(lo, hi, 4)
    labels = [_tick_label(t, ydec) for t in yt]
    title = FONT_PX + 4 if units else 0  # the units, turned, left of the tick labels
    left = int(max((_text_width(d, t) for t in labels), default=0)) + 10 + title
    box = (left, FONT_PX + 6, width - 6, height - FONT_PX - 8)
    x0, y0, x1, y1 = box
    pts, x_of, y_of = _polyline(v, box, (lo, hi))
    d.rectangle([x0, y0, x1, y1], outline=(200, 200, 200))
    grey = (90, 90, 90)
    for t, text in zip(yt, labels):
        y = float(y_of(t))
        d.line([(x0 - 3, y), (x0, y)], fill=grey)
        d.line([(x0 + 1, y), (x1 - 1, y)], fill=(238, 238, 238))
        _text(d, (x0 - 5, y), text, grey, anchor="rm")
    if units:  # beside the axis, not above it where the event numbers go
        _vertical_text(pil, (2 + FONT_PX / 2, (y0 + y1) / 2), units, grey)
    # time axis: seconds with a frame rate, else frames
    scale = 1.0 / fs_hz if fs_hz else 1.0
    xt, xdec = nice_ticks(0.0, n * scale, max(2, min(8, (x1 - x0) // 90)))
    for k, t in enumerate(xt):
        x = float(x_of(t / scale - 0.5))
        if x > x1:
            continue
        d.line([(x, y1), (x, y1 + 3)], fill=grey)
        text = _tick_label(t, xdec) + ((" s" if fs_hz else " frames") if k == len(xt) - 1 else "")
        anchor = "ra" if x + _text_width(d, text) / 2 > width else "ma"
        _text(d, (x, y1 + 4), text, grey, anchor=anchor)
    for f in np.asarray(events):
        if 0 <= f < n:
            x = float(x_of(int(f)))
            d.line([(x, y0 + 1), (x, y1 - 1)], fill=(200, 215, 245), width=1)
    if len(pts) >= 2:
        d.line([tuple(p) for p in pts], fill=COLOURS["trace"], width=1)
    shown = [(float(x_of(int(f))), e, int(f)) for e, f in enumerate(events) if 0 <= f < n]
    right = -np.inf  # numbers of close events side by side, left to right, not on each other
    for x, e, f in sorted(shown):
        y = float(y_of(v[f]))
        d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=COLOURS["event"])
        half = _text_width(d, str(e + 1), FONT_PX + 1) / 2
        at = max(x, right + half + 2)
        _text(d, (at, y0 - 2), str(e + 1), COLOURS["event"], FONT_PX + 1, anchor="mb")
        right = at + half
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
