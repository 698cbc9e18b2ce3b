"""Page handlers: plain functions ``(workspace, state, inputs) -> (state, Panels)``.

No Gradio here: the layout (``layout.py``) binds these to components, and the tests call them
directly. ``state`` is the tab's :class:`~actsort_gpu.ui.session.ViewState`; the workspace holds
the stores and the learner shared by all tabs.
"""

from __future__ import annotations

import html
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import CELL, NOT_CELL, UNLABELLED, UNSURE, schema
from ..features.registry import describe_feature
from ..labels import final_labels, other_journals
from ..store import StoreError
from . import render
from .progress import counts, error_kinds, labelling_speed, truth_report
from .render import Window
from .session import CLICK_MODES, COLOUR_MODES, STRATEGY_CHOICES, ViewState

log = logging.getLogger(__name__)

__all__ = [
    "Panels",
    "render_panels",
    "on_load",
    "on_label",
    "on_prev",
    "on_next",
    "on_undo",
    "on_redo",
    "on_jump",
    "on_store",
    "on_click",
    "on_view",
    "on_map_options",
    "feature_choices",
    "feature_choice",
    "map_filters",
    "map_values",
    "on_threshold",
    "on_strategy",
    "on_play",
    "on_tick",
    "on_clear_selection",
    "on_truth",
    "on_errors",
    "truth_html",
    "map_window",
    "MAP_DISPLAY_PX",
    "PANEL_PX",
    "EVIDENCE_PX",
]

MAP_DISPLAY_PX = 720
# The evidence column at 1366 px wide (layout.py): the footprint and the five event snapshots
# side by side, the trace and the event traces below, each image at its natural size (text on
# them stays >= 11 px: the browser only shrinks images that do not fit).
PANEL_PX = 112
GAP_PX = 4
#: width of the footprint + snapshot row, and of the trace under it
EVIDENCE_PX = PANEL_PX + 12 + 5 * PANEL_PX + 4 * GAP_PX
TRACE_PX = 150
EVENT_TRACE_PX = 70
#: words for the label codes (status line, info card)
LABEL_WORDS = {CELL: "cell", NOT_CELL: "not a cell", UNLABELLED: "unlabelled", UNSURE: "unsure"}


@dataclass
class Panels:
    """Everything the page shows for one state (images are uint8 RGB arrays)."""

    map: np.ndarray | None
    footprint: np.ndarray | None
    snapshots: np.ndarray | None
    trace: np.ndarray | None
    event_traces: np.ndarray | None
    info: str
    progress: str
    status: str
    timings_ms: dict
    legend: str = ""  # the map's colour bar and filter read-out (empty: labels colours)


# ---------------------------------------------------------------------------- helpers
def _mode(st: ViewState) -> str:
    return st.extra.get("mode", "dcal")


def _canvas_window(ws, st: ViewState) -> Window:
    """The FOV part the map shows, at the canvas's resolution (``Window.around``: scale 1, or
    a stride above MAP_DISPLAY_PX)."""
    s = ws.stores[st.store]
    c = s.centers[st.current] if 0 <= st.current < s.n else None
    return Window.around(
        None if c is None else (float(c[0]), float(c[1])),
        st.zoom,
        s.height,
        s.width,
        MAP_DISPLAY_PX,
    )


def map_window(ws, st: ViewState) -> Window:
    """The FOV part the map shows and the scale of the map image sent to the page: the image
    is MAP_DISPLAY_PX on its longer side at any zoom (display pixel (x, y) is FOV pixel
    ``to_fov(x, y)``).

    The page must never enlarge the map itself: Gradio turns a click into image pixels
    assuming the image is shown at most at its natural size (``object-fit: scale-down``), so
    an image the browser enlarged reports clicks at the wrong pixel, and none at all away from
    its centre. The server therefore sends the map at least as large as it is shown."""
    win = _canvas_window(ws, st)
    side = max(win.row1 - win.row0, win.col1 - win.col0)
    return replace(win, scale=MAP_DISPLAY_PX / side)


def _display_counts(n: int, stride: int, scale: float) -> np.ndarray:
    """Repeat counts of the ``ceil(n / stride)`` canvas rows (or columns) that make the
    ``round(n * scale)`` display rows: display row y shows the canvas sample of FOV row
    ``int(y / scale)``, the row a click there picks (``Window.to_fov``)."""
    out = max(1, int(round(n * scale)))
    fov = np.minimum((np.arange(out) / scale).astype(np.int64), n - 1)
    return np.bincount(fov // stride, minlength=-(-n // stride))


def _bar(label: str, c: dict, total: int) -> str:
    total = max(total, 1)
    parts = [
        ("cell", "#28c846", c["cell"]),
        ("unlabelled", "#f4f4f4", c.get("unlabelled", 0)),
        ("not", "#e63232", c["not"]),
    ]
    segs = "".join(
        f'<div title="{name}: {v}" style="width:{100 * v / total:.3f}%;background:{col}"></div>'
        for name, col, v in parts
        if v
    )
    return (
        f'<div class="as-bar-row"><span class="as-bar-label">{label}</span>'
        f'<div class="as-bar">{segs}</div>'
        f'<span class="as-bar-count"><b style="color:#1a9a35">{c["cell"]}</b> / '
        f'{c.get("unlabelled", 0)} / <b style="color:#c02020">{c["not"]}</b></span></div>'
    )


def _unsure_html(unsure) -> str:
    """The unsure queue: how many, the first candidates, how to walk them."""
    idx = np.flatnonzero(unsure) if unsure is not None else np.zeros(0, np.int64)
    if not len(idx):
        return ""
    first = ", ".join(str(int(i)) for i in idx[:12]) + (", ..." if len(idx) > 12 else "")
    return (
        f'<div class="as-small as-unsure">unsure (not used for training): {len(idx)} '
        f"&mdash; {first} &nbsp;·&nbsp; revisit them: Active learning &rarr; Next candidate "
        f"&rarr; <i>Review: unsure candidates</i></div>"
    )


def _progress_html(ws, st: ViewState, human, dec, unsure=None) -> str:
    c = counts(human, dec)
    n = len(human)
    speed = labelling_speed(ws.label_times)
    stab = ws.trackers[st.store].state()
    ba = (
        "n/a (needs both classes among recent labels)"
        if stab.prequential_ba is None
        else f"{100 * stab.prequential_ba:.0f} % over the last {stab.n_scored} labels"
    )
    colour = "#1a7f37" if stab.stable else "#9a6700"
    return (
        '<div class="as-progress">'
        + _bar("Overall", c["overall"], n)
        + _bar("Model", c["model"], n)
        + _bar("Human", c["human"], n)
        + f'<div class="as-small">cells / unlabelled / not cells &nbsp;·&nbsp; labelled '
        f"{n - c['human']['unlabelled']} of {n} "
        f"({100 * (n - c['human']['unlabelled']) / max(n, 1):.1f} %)"
        f" &nbsp;·&nbsp; speed {'-' if speed is None else f'{speed:.0f} labels/min'}</div>"
        + _unsure_html(unsure)
        + f'<div class="as-small">estimated accuracy (model vs. your next answer): {ba}</div>'
        + _transfer_html(ws)
        + f'<div class="as-stable" style="border-color:{colour};color:{colour}">'
        f"{html.escape(stab.text())}</div></div>"
    )


def _transfer_html(ws) -> str:
    """The pretrained classifier's line (``--classifier``): which model decides, how often the
    classifier agreed with the latest labels, and a warning when the recording looks unlike its
    training data (empty without a classifier); then which inputs the classifier uses."""
    text = ws.transfer_summary()
    out = f'<div class="as-small as-transfer">{html.escape(text)}</div>' if text else ""
    return out + f'<div class="as-small as-inputs">{html.escape(ws.inputs_summary())}</div>'


def _feature_cell(name: str) -> str:
    """A feature's plain name, with its exact column name and meaning in a tooltip (one
    place: ``features.registry.describe_feature``)."""
    plain, text = describe_feature(name)
    tip = html.escape(f"{name}: {text}", quote=True)
    return f'<span class="as-fname" title="{tip}">{html.escape(plain)}</span>'


def _info_html(ws, st: ViewState, human, proba, dec, unsure=None) -> str:
    s = ws.stores[st.store]
    i = st.current
    if not 0 <= i < s.n:
        left = _open_count(ws, st.store)
        what = (
            f"No candidate left in this mode ({left} unlabelled)."
            if left
            else "All candidates of this store are labelled."
        )
        return f'<div class="as-info">{what}</div>'
    h = int(human[i])
    is_unsure = unsure is not None and bool(unsure[i])
    user = {CELL: "Cell", NOT_CELL: "Not a cell", UNLABELLED: "unlabelled"}[h]
    if is_unsure:
        user = "Unsure (not used for training; in the review queue)"
    if proba is None:
        model = (
            "Model: <b>not trained yet</b> "
            '<span class="as-small">(it needs at least one cell and one non-cell)</span>'
        )
    else:
        score = f"{np.floor(proba[i] * 100) / 100:.2f}"
        decision = "Cell" if dec[i] > 0 else "Not a cell"
        model = (
            f"Model: P(cell) <b>{score}</b> &rarr; <b>{decision}</b> "
            f'<span class="as-small">(threshold {ws.learner.threshold:.2f})</span>'
        )
    shown = h if h != 0 else (0 if dec is None else int(dec[i]))
    bg = {CELL: "#e3f6e6", NOT_CELL: "#fbe4e4", 0: "#f1f3f5"}[shown]
    if is_unsure:
        bg = "#efe6fb"
    who = ws.learner.label_source(ws.g(st.store, i))
    by = f" by {html.escape(who[0])}" if who and (h != 0 or is_unsure) else ""
    rows = "".join(
        f"<tr><td>{_feature_cell(name)}</td><td>{val:+.2f}</td>"
        f'<td style="color:{"#1a9a35" if c > 0 else "#c02020"}">{c:+.2f}</td></tr>'
        for name, val, c in ws.contributions(st.store, i)
    )
    feats = (
        '<table class="as-feat"><tr><th title="hover a name for its column and meaning">'
        'features pushing the score</th><th title="z-scored value">z</th>'
        '<th title="contribution to the log-odds of a cell">push</th></tr>'
        f"{rows}</table>"
        if rows
        else ""
    )
    sel = (
        f'<div class="as-small">{len(st.selected)} selected on the map: the label buttons '
        f"apply to all of them</div>"
        if st.selected
        else ""
    )
    return (
        f'<div class="as-info" style="background:{bg}"><div class="as-info-text">'
        f'<div class="as-title">{html.escape(s.name)} &nbsp; candidate <b>{i}</b> '
        f'<span class="as-small">of {s.n}</span></div>'
        f"<div>Your label: <b>{user}</b>{by}</div>"
        f"<div>{model}</div>"
        f"{sel}</div>{feats}</div>"
    )


def _errors(ws, st: ViewState, human, dec) -> np.ndarray | None:
    """Error kinds of the final labels against the truth, only once the user asked."""
    truth = ws.stores[st.store].truth
    if not (st.truth_shown and st.show_errors) or truth is None:
        return None
    final = final_labels(human, dec)
    return error_kinds(final, truth)


def feature_choice(ws, st: ViewState) -> str:
    """The feature the map colours by and filters on: the tab's choice, else the first."""
    names = ws.stores[st.store].feature_names
    return st.feature if st.feature in names else (names[0] if names else "")


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def map_filters(ws, st: ViewState, human, dec) -> tuple[np.ndarray | None, str]:
    """(N,) bool of the candidates the map's filters hide (None: no filter on) and a line
    saying what is shown. Filters: "hide rejected" (final label not a cell: yours where given,
    else the model's) and the feature range (percentiles of the chosen feature; candidates
    without a value are hidden while the range is on)."""
    s = ws.stores[st.store]
    hidden = np.zeros(s.n, bool)
    parts = []
    if st.hide_rejected:
        hidden |= final_labels(human, dec) < 0
        parts.append("rejected hidden")
    lo, hi = float(st.feature_lo_pct), float(st.feature_hi_pct)
    name = feature_choice(ws, st)
    if name and (lo > 0 or hi < 100):
        v = s.feature_column(name)
        ok = np.isfinite(v)
        a, b = np.percentile(v[ok], [lo, hi]) if ok.any() else (np.nan, np.nan)
        hidden |= ~(ok & (v >= a) & (v <= b))
        parts.append(
            f"{html.escape(describe_feature(name)[0])} between {_fmt(a)} and {_fmt(b)} "
            f"(percentiles {lo:g} to {hi:g})"
        )
    if not parts:
        return None, ""
    return hidden, f"Showing {s.n - int(hidden.sum())} of {s.n} candidates: " + "; ".join(parts)


def map_values(ws, st: ViewState, proba) -> tuple[np.ndarray | None, str]:
    """Outline values in [0, 1] for ``st.colour_by`` ("probability": P(cell); "feature": the
    chosen feature between its 1st and 99th percentiles) and the colour bar's HTML; (None,
    '') for the label colours."""
    if st.colour_by == "probability":
        n = ws.stores[st.store].n
        values = np.full(n, np.nan) if proba is None else np.asarray(proba, np.float64)
        title, lo, hi = "P(cell)", "0", "1"
        note = " (model not trained yet: grey)" if proba is None else ""
    elif st.colour_by == "feature" and feature_choice(ws, st):
        name = feature_choice(ws, st)
        v = ws.stores[st.store].feature_column(name).astype(np.float64)
        ok = np.isfinite(v)
        a, b = np.percentile(v[ok], [1, 99]) if ok.any() else (0.0, 1.0)
        values = (v - a) / (b - a) if b > a else np.where(ok, 0.5, np.nan)
        plain, text = describe_feature(name)
        title = (
            f'<span class="as-fname" title="{html.escape(f"{name}: {text}", quote=True)}">'
            f"{html.escape(plain)}</span>"
        )
        lo, hi, note = _fmt(a), _fmt(b), " (1st to 99th percentile)"
    else:
        return None, ""
    bar = (
        f'<span class="as-cbar-title">{title}</span> <span>{lo}</span>'
        f'<span class="as-cbar" style="background:{render.colourbar_css()}"></span>'
        f'<span>{hi}</span><span class="as-small">{note}{";" if note else ""} your labels '
        f"keep their colours</span>"
    )
    return values, bar


def render_map(ws, st: ViewState, human, dec, proba=None, unsure=None) -> np.ndarray:
    return _render_map(ws, st, human, dec, proba, unsure)[0]


def _render_map(ws, st: ViewState, human, dec, proba=None, unsure=None):
    """(map image, legend HTML): outlines in the colours of ``st.colour_by``, the filters
    applied, the current candidate marked."""
    s = ws.stores[st.store]
    values, bar = map_values(ws, st, proba)
    hidden, shown = map_filters(ws, st, human, dec)
    if st.hide_outlines:
        hidden = np.ones(s.n, bool)  # the current and selected ones are drawn all the same
    lut = render.candidate_colours(
        human,
        dec,
        show_model=st.show_model,
        selected=st.selected,
        hide_cells=st.hide_cells,
        hide_not=st.hide_not,
        errors=_errors(ws, st, human, dec),
        unsure=unsure,
        values=values,
        hidden=hidden,
        fill=st.fill_opacity / ViewState.fill_opacity,
        border=render.BORDER_COLOURS[st.border],
    )
    canvas = ws.map_canvas(st.store, st.image, st.lo_pct, st.hi_pct, lut)
    base, win = _canvas_window(ws, st), map_window(ws, st)
    cur = st.current if 0 <= st.current < s.n else None
    # marker about 3 display px thick whatever the canvas-to-display enlargement
    marker = max(1, int(round(3 * base.scale / win.scale)))
    img = canvas.view(base, cur, s.outlines[cur] if cur is not None else None, marker_px=marker)
    # Nearest-neighbour resampling to the display scale (see map_window).
    stride = max(1, int(round(1 / base.scale)))
    img = np.repeat(img, _display_counts(base.row1 - base.row0, stride, win.scale), axis=0)
    img = np.repeat(img, _display_counts(base.col1 - base.col0, stride, win.scale), axis=1)
    if st.box_corner is not None:
        from PIL import Image, ImageDraw

        pil = Image.fromarray(img)
        r, c = st.box_corner
        x, y = (c - win.col0 + 0.5) * win.scale, (r - win.row0 + 0.5) * win.scale
        ImageDraw.Draw(pil).ellipse([x - 5, y - 5, x + 5, y + 5], outline=(40, 120, 255), width=2)
        img = np.asarray(pil)
    legend = "".join(f'<div class="as-maplegend">{part}</div>' for part in (bar, shown) if part)
    return img, legend


def render_candidate(ws, st: ViewState, frame: int | None = None):
    """(footprint, snapshot strip, trace, event-trace strip) of the current candidate."""
    s = ws.stores[st.store]
    i = st.current
    if not 0 <= i < s.n:
        return None, None, None, None
    crop = s.crops[i]
    nb = [s.outlines[j] for j in s.neighbors[i][:30]]
    snaps = s.snapshots(i)
    snap_img = render.snapshot_strip(
        snaps,
        s.events[i],
        crop,
        s.outlines[i],
        nb,
        frame,
        panel_px=PANEL_PX,
        clim_pct=(st.snap_lo_pct, st.snap_hi_pct),
        gap_px=GAP_PX,
        fs_hz=s.fs_hz,
        neighbour_colour=render.BORDER_COLOURS[st.border],
    )
    tr, units = render.display_trace(s.trace(i))
    fp_img = render.footprint_panel(s.footprint_crop(i), s.outlines[i], crop, panel_px=PANEL_PX)
    trace_img = render.trace_plot(
        tr, s.events[i], width=EVIDENCE_PX, height=TRACE_PX, fs_hz=s.fs_hz, units=units
    )
    ev_img = render.event_trace_strip(
        tr,
        s.events[i],
        panel_px=PANEL_PX,
        height=EVENT_TRACE_PX,
        gap_px=GAP_PX,
        frame=frame,
        event_frames=s.event_frames,
    )
    return fp_img, snap_img, trace_img, ev_img


def render_panels(ws, st: ViewState, status: str = "") -> Panels:
    """Render every panel of the page for ``st`` (timings in ms in ``timings_ms``)."""
    t0 = time.perf_counter()
    human = ws.human(st.store)
    unsure = ws.unsure(st.store)
    proba, dec = ws.model(st.store)
    t1 = time.perf_counter()
    map_img, legend = _render_map(ws, st, human, dec, proba, unsure)
    t2 = time.perf_counter()
    fp, snaps, trace, evt = render_candidate(ws, st, st.frame if st.playing else None)
    t3 = time.perf_counter()
    info = _info_html(ws, st, human, proba, dec, unsure)
    prog = _progress_html(ws, st, human, dec, unsure)
    t4 = time.perf_counter()
    return Panels(
        map_img,
        fp,
        snaps,
        trace,
        evt,
        info,
        prog,
        status or st.message,
        {
            "model": 1e3 * (t1 - t0),
            "map": 1e3 * (t2 - t1),
            "candidate": 1e3 * (t3 - t2),
            "text": 1e3 * (t4 - t3),
        },
        legend,
    )


def _go(ws, st: ViewState, current: int | None, status: str = "", **changes):
    """Move to ``current`` (None: nothing left), remember the position, render."""
    cur = -1 if current is None else int(current)
    st = st.with_(current=cur, frame=0, **changes)
    ws.touch(st.tab)
    if cur >= 0:
        ws.save_position(st.store, cur)
    if current is None and not status:
        status = _none_left(ws, st)
    return st, render_panels(ws, st, status)


def _open_count(ws, store: int) -> int:
    """Candidates of ``store`` with no label (unsure ones wait in their own queue)."""
    return int(((ws.human(store) == UNLABELLED) & ~ws.unsure(store)).sum())


def _none_left(ws, st: ViewState) -> str:
    """What to say when the query mode has no candidate left in this store: another mode,
    or, when everything is labelled, the stores with work left (else how to review)."""
    left = _open_count(ws, st.store)
    if left:
        return (
            f"No candidate left in this mode ({left} still unlabelled): choose another under "
            "Active learning."
        )
    s = ws.stores[st.store]
    others = [
        f"{ws.stores[d].name} ({n} to go)"
        for d in range(len(ws.stores))
        if d != st.store and (n := _open_count(ws, d))
    ]
    where = (
        f"; {', '.join(others)}: choose it under Store (animal)"
        if others
        else ": ← / → walk your labels, tab Export writes them"
    )
    return f"All {s.n} candidates of {s.name} are labelled{where}."


def _next_candidate(ws, st: ViewState) -> tuple[int | None, int | None]:
    """ActSort's Next: forward along the labelling order while browsing history, else query.
    Returns (candidate, new history position)."""
    if st.history_pos is not None:
        order = ws.labelled_order(st.store)
        pos = st.history_pos + 1
        if pos < len(order):
            return order[pos], pos
    return ws.next_query(st.store, _mode(st), st.current, st.tab), None


# ---------------------------------------------------------------------------- handlers
def on_load(ws, st: ViewState | None = None, tab: str = ""):
    """A tab opens (or reloads): resume at the remembered candidate, else the first query.
    ``tab``: its id (the page's session; default a new one): its labels are its to undo."""
    st = (st or ViewState()).with_(tab=tab or uuid.uuid4().hex[:12])
    cur = ws.resume_position(st.store, st.tab)
    if cur is None:
        cur = ws.next_query(st.store, _mode(st), tab=st.tab)
    done = ""
    if cur is None and not _open_count(ws, st.store):
        # this store is finished: open on one with work left, else on its last label
        later = [d for d in range(len(ws.stores)) if _open_count(ws, d)]
        if later:
            name, nxt = ws.stores[st.store].name, ws.stores[later[0]].name
            done = f" {name} is fully labelled: showing {nxt}."
            st = st.with_(store=later[0])
            cur = ws.next_query(st.store, _mode(st), tab=st.tab)
        elif ws.labelled_order(st.store):
            order = ws.labelled_order(st.store)
            return _go(ws, st, order[-1], _none_left(ws, st), history_pos=len(order) - 1)
    n_lab = int((ws.human(st.store) != 0).sum())
    n_unsure = int(ws.unsure(st.store).sum())
    more = f" {n_unsure} unsure." if n_unsure else ""
    copies = "".join(
        f" Not read: {p} (another copy of a journal, e.g. a synced folder's conflicted copy): "
        "tab Load labels merges it."
        for s in ws.stores
        for p in other_journals(s.path / schema.LABELS_DIR)
    )
    return _go(
        ws,
        st,
        cur,
        f"Resumed: {n_lab} labels in {ws.stores[st.store].name}.{more}{done}{copies}",
    )


def on_label(ws, st: ViewState, y: int):
    """Label the selection (or the current candidate) y = +1 / -1 / 0 / UNSURE and move on
    (an unlabel stays on the candidate)."""
    if y not in LABEL_WORDS or isinstance(y, bool):
        raise ValueError(f"label must be +1, -1, 0 or {UNSURE} (unsure), got {y!r}")
    targets = tuple(st.selected) or ((st.current,) if st.current >= 0 else ())
    if not targets:
        return st, render_panels(ws, st, "No candidate to label.")
    n_new = ws.label(st.store, targets, y, tab=st.tab) or 0
    word = LABEL_WORDS[y]
    if y == UNSURE:
        word += " (not used for training; Review: unsure candidates lists it)"
    what = f"{len(targets)} candidates" if len(targets) > 1 else f"candidate {targets[0]}"
    # a label that replaced another annotator's different one: both stay in the journal
    note = (
        f" Replaced another annotator's label ({ws.disagreement_count(st.store)} "
        f"disagreements in this store, column 'disagreement' of the export)."
        if n_new
        else ""
    )
    st = st.with_(selected=(), box_corner=None)
    if y == UNLABELLED:
        return _go(ws, st, st.current, f"Saved: {what} {word}.{note}")
    cur, pos = _next_candidate(ws, st)
    if cur is None:  # nothing left here: stay on what was just labelled and say what next
        return _go(ws, st, targets[-1], f"Saved: {what} = {word}.{note} {_none_left(ws, st)}")
    return _go(ws, st, cur, f"Saved: {what} = {word}.{note}", history_pos=pos)


def on_next(ws, st: ViewState):
    """ActSort's Next: forward along the labelling order, else the next query. At the newest
    candidate the query picks it again: the status says so (it needs a label, or U)."""
    cur, pos = _next_candidate(ws, st)
    status = ""
    if cur is not None and cur == st.current and pos is None:
        status = (
            f"Candidate {cur} is the newest: the query picks it again. Label it (Up / Down), "
            f"or press U to skip it as unsure."
        )
    return _go(ws, st, cur, status, history_pos=pos, selected=())


def on_prev(ws, st: ViewState):
    """ActSort's Previous: back along the labelling order (from its end when the current
    candidate is not in it)."""
    order = ws.labelled_order(st.store)
    if not order:
        return st, render_panels(ws, st, "No labelled candidate yet.")
    if (
        st.history_pos is not None
        and 0 <= st.history_pos < len(order)
        and order[st.history_pos] == st.current
    ):
        pos = max(st.history_pos - 1, 0)
    elif st.current in order:
        pos = max(order.index(st.current) - 1, 0)
    else:
        pos = len(order) - 1
    return _go(ws, st, order[pos], history_pos=pos, selected=())


def _after_undo_redo(ws, st, step, verb):
    ws.touch(st.tab)
    if step is None:
        return st, render_panels(ws, st, f"Nothing to {verb}.")
    d, locals_, elsewhere = step
    local = locals_[-1]
    if elsewhere:  # another open tab's label: its own to undo (the journal has one stack)
        what = f"{len(locals_)} candidates" if len(locals_) > 1 else f"candidate {local}"
        store = f" of {ws.stores[d].name}" if len(ws.stores) > 1 else ""
        return st, render_panels(
            ws,
            st,
            f"Nothing changed: the latest label ({what}{store}) was given in another open "
            f"tab; {verb} it there.",
        )
    now = [UNSURE if ws.unsure(d)[c] else int(ws.human(d)[c]) for c in locals_]
    if len(locals_) == 1:
        what = f"candidate {local} is now {LABEL_WORDS[now[0]]}"
    else:  # a group's candidates go back to what each had before: say how many have what
        have = Counter(now)
        tally = ", ".join(f"{have[lab]} {word}" for lab, word in LABEL_WORDS.items() if have[lab])
        what = f"{len(locals_)} candidates of a group label are now {tally}"
        what += f" (candidate {local} shown)"
    return _go(
        ws, st.with_(store=d), local, f"{verb.capitalize()}: {what}.", history_pos=None, selected=()
    )


def on_undo(ws, st: ViewState):
    return _after_undo_redo(ws, st, ws.undo(st.tab), "undo")


def on_redo(ws, st: ViewState):
    return _after_undo_redo(ws, st, ws.redo(st.tab), "redo")


def on_load_labels(ws, st: ViewState, source: str):
    """ActSort's *Load labels*: the labels of ``source`` (a path on the computer serving the
    page: a _LABELS.mat, an exported CSV, an .npy, or an earlier store of the recording) for
    this store's unlabelled candidates, as one action (Z reverts it). The current candidate
    is left for the next query when it took a label."""
    source = (source or "").strip().strip("\"'")
    if not source:
        copies = other_journals(ws.stores[st.store].path / schema.LABELS_DIR)
        found = "".join(f" This store holds another journal to merge: {p}." for p in copies)
        return st, render_panels(
            ws,
            st,
            "Load labels: type the path of a label file (_LABELS.mat, exported .csv, .npy), "
            "of an earlier store of this recording, or of another copy of this store's journal "
            f"in its labels/ folder.{found}",
        )
    path = Path(source).expanduser()
    try:
        report = ws.import_labels(st.store, path, tab=st.tab)
    except (ValueError, OSError, StoreError) as exc:
        return st, render_panels(ws, st, f"Load labels: nothing loaded. {exc}")
    status = f"Loaded {path.name} into {ws.stores[st.store].name}: {report.summary()}."
    if report.imported_cells + report.imported_not_cells:
        status += " Z undoes it."
    if st.current >= 0 and ws.human(st.store)[st.current] != UNLABELLED and st.history_pos is None:
        cur, pos = _next_candidate(ws, st)
        if cur is not None:
            return _go(ws, st, cur, status, history_pos=pos, selected=())
    return _go(ws, st, st.current if st.current >= 0 else None, status)


def on_jump(ws, st: ViewState, index):
    s = ws.stores[st.store]
    try:
        i = int(index)
    except (TypeError, ValueError):
        return st, render_panels(ws, st, f"Candidate number expected, got {index!r}.")
    if not 0 <= i < s.n:
        return st, render_panels(ws, st, f"Candidate {i} out of range 0..{s.n - 1}.")
    return _go(ws, st, i, history_pos=None, selected=())


def step_store(ws, name: str, step: int) -> str:
    """The store ``step`` places after ``name`` in the drop-down, wrapping around (ActSort's
    dataset << / >> buttons); an unknown name gives the first store."""
    if name not in ws.names:
        return ws.names[0]
    return ws.names[(ws.names.index(name) + step) % len(ws.names)]


def on_store(ws, st: ViewState, name: str):
    if name not in ws.names:
        return st, render_panels(ws, st, f"Unknown store {name!r}.")
    d = ws.names.index(name)
    st = st.with_(store=d, selected=(), box_corner=None, history_pos=None)
    cur = ws.resume_position(d, st.tab)  # unless another tab holds it now
    return _go(ws, st, cur if cur is not None else ws.next_query(d, _mode(st), tab=st.tab))


def pick_candidate(
    ws, store: int, row: int, col: int, radius: float = 8.0, exclude: int | None = None
) -> int | None:
    """The candidate at FOV pixel (row, col): among those whose footprint covers it, the one
    with the nearest centre; else the nearest centre within ``radius`` px."""
    s = ws.stores[store]
    cover = s.canvas.candidates_at(row, col)
    cand = cover if len(cover) else np.arange(s.n)
    if exclude is not None and len(cand) > 1:
        cand = cand[cand != exclude]
    c = s.centers[cand]
    d2 = (c[:, 0] - row) ** 2 + (c[:, 1] - col) ** 2  # row with row, col with col (B8 fix)
    d2 = np.where(np.isnan(d2), np.inf, d2)
    k = int(np.argmin(d2))
    if not len(cover) and d2[k] > radius**2:
        return None
    return int(cand[k])


def on_click(ws, st: ViewState, x: float, y: float, mode: str | None = None):
    """A click on the map at display pixel (x, y) (Gradio's ``evt.index``: x = column).

    ``mode``: the click mode the page shows (one of ``CLICK_MODES``), sent with the click so
    that it holds even when the radio's own change event has not reached the state yet (the
    page's events may reach the server in either order); None: the state's mode. A changed
    mode drops a pending box corner."""
    if mode is not None and mode in CLICK_MODES and mode != st.click_mode:
        st = st.with_(click_mode=mode, box_corner=None)
    win = map_window(ws, st)
    row, col = win.to_fov(x, y)
    mode = st.click_mode
    if mode == CLICK_MODES[2]:  # box: two corners
        if st.box_corner is None:
            return st.with_(box_corner=(row, col)), render_panels(
                ws,
                st.with_(box_corner=(row, col)),
                f"Box corner at ({row}, {col}): click the opposite corner.",
            )
        (r0, c0), (r1, c1) = st.box_corner, (row, col)
        s = ws.stores[st.store]
        lo_r, hi_r, lo_c, hi_c = min(r0, r1), max(r0, r1), min(c0, c1), max(c0, c1)
        inside = np.flatnonzero(
            (s.centers[:, 0] >= lo_r)
            & (s.centers[:, 0] <= hi_r)
            & (s.centers[:, 1] >= lo_c)
            & (s.centers[:, 1] <= hi_c)
        )
        human = ws.human(st.store)
        if st.hide_cells:
            inside = inside[human[inside] <= 0]
        if st.hide_not:
            inside = inside[human[inside] >= 0]
        hidden, _ = map_filters(ws, st, human, ws.model(st.store)[1])
        if hidden is not None:  # what the map does not show is not selected
            inside = inside[~hidden[inside]]
        st = st.with_(box_corner=None, selected=tuple(int(i) for i in inside))
        return st, render_panels(
            ws,
            st,
            f"{len(inside)} candidates selected: press Cell / "
            f"Not a cell to label them all, Esc to clear.",
        )
    hit = pick_candidate(ws, st.store, row, col)
    if hit is None:
        return st, render_panels(ws, st, f"No candidate at ({row}, {col}).")
    if mode == CLICK_MODES[1]:  # add / remove
        sel = list(st.selected)
        sel.remove(hit) if hit in sel else sel.append(hit)
        st = st.with_(selected=tuple(sel))
        return st, render_panels(ws, st, f"{len(sel)} selected.")
    return _go(ws, st, hit, history_pos=None, selected=())


def on_clear_selection(ws, st: ViewState):
    st = st.with_(selected=(), box_corner=None)
    return st, render_panels(ws, st, "Selection cleared.")


def on_view(
    ws,
    st: ViewState,
    image: str,
    lo_pct: float,
    hi_pct: float,
    zoom: float,
    show_model: bool,
    hide_cells: bool = False,
    hide_not: bool = False,
    click_mode: str | None = None,
    hide_outlines: bool = False,
    fill_opacity: float = ViewState.fill_opacity,
    border: str = ViewState.border,
):
    """View settings: FOV image, contrast percentiles (the two cannot cross), zoom, colours,
    outlines shown and their colour (an unknown name keeps the current one), click mode
    (leaving the box mode drops a pending box corner)."""
    lo, hi = _uncrossed(lo_pct, hi_pct, gap=1.0)
    mode = click_mode or st.click_mode
    st = st.with_(
        image=image,
        lo_pct=lo,
        hi_pct=hi,
        zoom=float(zoom),
        show_model=bool(show_model),
        hide_cells=bool(hide_cells),
        hide_not=bool(hide_not),
        hide_outlines=bool(hide_outlines),
        fill_opacity=float(np.clip(fill_opacity, 0.0, 1.0)),
        border=border if border in render.BORDER_COLOURS else st.border,
        click_mode=mode,
        box_corner=st.box_corner if mode == CLICK_MODES[2] else None,
    )
    return st, render_panels(ws, st)


def _uncrossed(lo, hi, *, gap: float = 0.5) -> tuple[float, float]:
    """Two percentile sliders that cannot cross: ``hi`` moves above ``lo`` (ActSort's sliders
    push each other)."""
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        hi = min(100.0, lo + gap)
        lo = min(lo, hi - gap)
    return lo, hi


def on_snapshot_contrast(ws, st: ViewState, lo_pct: float, hi_pct: float):
    """The event snapshots' black and white points, as percentiles of the candidate's
    snapshot values (ActSort's snapshot contrast sliders); they cannot cross."""
    lo, hi = _uncrossed(lo_pct, hi_pct)
    st = st.with_(snap_lo_pct=lo, snap_hi_pct=hi)
    return st, render_panels(ws, st)


def on_map_options(
    ws,
    st: ViewState,
    colour: str,
    feature: str,
    lo_pct: float,
    hi_pct: float,
    hide_rejected: bool,
):
    """The map's options: outline colours (a key of ``COLOUR_MODES``), the feature to colour
    by and to filter on (its plain name, as the page lists it, or its exact name), the
    feature range in percentiles (the two cannot cross) and "hide rejected"."""
    if colour not in COLOUR_MODES:
        raise ValueError(f"colour must be one of {list(COLOUR_MODES)}, got {colour!r}")
    names = ws.stores[st.store].feature_names
    plain = {describe_feature(n)[0]: n for n in names}
    name = feature if feature in names else plain.get(feature, "")
    lo, hi = sorted((float(np.clip(lo_pct, 0, 100)), float(np.clip(hi_pct, 0, 100))))
    st = st.with_(
        colour_by=COLOUR_MODES[colour],
        feature=name,
        feature_lo_pct=lo,
        feature_hi_pct=hi,
        hide_rejected=bool(hide_rejected),
    )
    return st, render_panels(ws, st, "Map options updated.")


def feature_choices(ws, store: int = 0) -> list[tuple[str, str]]:
    """(plain name, exact name) of the store's features, for the page's drop-down."""
    return [(describe_feature(n)[0], n) for n in ws.stores[store].feature_names]


def on_threshold(ws, st: ViewState, threshold: float):
    ws.set_threshold(float(threshold))
    return st, render_panels(ws, st, f"Threshold {float(threshold):.2f}: decisions updated.")


def on_strategy(ws, st: ViewState, choice: str, weight: float):
    if choice not in STRATEGY_CHOICES:
        raise ValueError(f"strategy must be one of {list(STRATEGY_CHOICES)}, got {choice!r}")
    mode = STRATEGY_CHOICES[choice]
    ws.set_strategy(mode, float(weight))
    st = st.with_(extra={**st.extra, "mode": mode})
    return st, render_panels(ws, st, f"Query mode: {choice}.")


def on_play(ws, st: ViewState):
    st = st.with_(playing=not st.playing, frame=0)
    return st, render_panels(ws, st, "Playing snapshots." if st.playing else "Stopped.")


def on_tick(ws, st: ViewState):
    """One playback step: (state, snapshot strip, event-trace strip); None images = no change."""
    if not st.playing:
        return st, None, None
    s = ws.stores[st.store]
    st = st.with_(frame=(st.frame + 1) % max(s.event_frames, 1))
    _, snaps, _, evt = render_candidate(ws, st, st.frame)
    return st, snaps, evt


# ---------------------------------------------------------------------------- truth (demo)
def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def truth_html(report: dict) -> str:
    """The truth comparison of :func:`~actsort_gpu.ui.progress.truth_report` as HTML."""
    h, f, m = report["human"], report["final"], report["model"]
    rows = [
        (
            "Your labels",
            f"{h['n_labelled']} ({_pct(h['agreement'])} right)",
            h["ba"],
            h["tpr"],
            h["tnr"],
            h["fp"],
            h["fn"],
        ),
        ("Final", f"all {report['n']}", f["ba"], f["tpr"], f["tnr"], f["fp"], f["fn"]),
    ]
    if m is not None:
        rows.append(
            ("Model alone", f"all {report['n']}", m["ba"], m["tpr"], m["tnr"], m["fp"], m["fn"])
        )
    body = "".join(
        f"<tr><td>{a}</td><td>{b}</td><td><b>{_pct(ba)}</b></td><td>{_pct(tp)}</td>"
        f"<td>{_pct(tn)}</td><td>{fp}</td><td>{fn}</td></tr>"
        for a, b, ba, tp, tn, fp, fn in rows
    )
    fp_c, fn_c = render.COLOURS["false_pos"], render.COLOURS["false_neg"]
    return (
        '<div class="as-info"><div class="as-title">Compared with the truth</div>'
        '<table class="as-feat"><tr><th></th><th>candidates</th><th>BA</th><th>TPR</th>'
        f"<th>TNR</th><th>FP</th><th>FN</th></tr>{body}</table>"
        + (
            ""
            if m is not None
            else '<div class="as-small">The model is untrained (label a cell and a non-cell).</div>'
        )
        + '<div class="as-small">Final = your label where given, else the model\'s. '
        "BA: balanced accuracy, the mean of TPR (cells found) and TNR (non-cells "
        "rejected); FP: called a cell, truly not; FN: called not a cell, truly a cell. "
        f'With errors on, the map shows <span style="color:rgb{fp_c}">&#9632;</span> FP '
        f'and <span style="color:rgb{fn_c}">&#9632;</span> FN.</div></div>'
    )


def on_truth(ws, st: ViewState):
    """ "Compare with truth": (state with ``truth_shown``, report HTML). Stores without truth
    get a message; the truth is read only here (and for the error colours afterwards)."""
    truth = ws.stores[st.store].truth
    if truth is None:
        return st, (
            f'<div class="as-info">{html.escape(ws.stores[st.store].name)} has no '
            "truth to compare with.</div>"
        )
    human = ws.human(st.store)
    _, dec = ws.model(st.store)
    final = final_labels(human, dec)
    report = truth_report(human, final, dec, truth)
    return st.with_(truth_shown=True), truth_html(report)


def on_errors(ws, st: ViewState, show: bool):
    """Toggle the map's error colours (ignored until the truth was shown)."""
    if not st.truth_shown:
        return st, render_panels(ws, st, "Press Compare with truth first.")
    st = st.with_(show_errors=bool(show))
    return st, render_panels(
        ws,
        st,
        "Map coloured by errors against the truth."
        if show
        else "Map coloured by labels and decisions.",
    )
