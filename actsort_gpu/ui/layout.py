"""The Gradio page: ``build_app(workspace, ui_config)`` binds the plain handlers to components.

Layout (issue 15: everything a candidate is judged by on the first screen, 1366x768 and up):
the field-of-view map on the left; on the right the candidate read-out, one row of label
buttons, then the evidence (``as-footprint`` and ``as-snapshots`` side by side, ``as-trace``,
the zoomed event traces), and below it the progress and the tabs (View, Map colours and filters,
Active learning, Export, Truth). Keyboard shortcuts are a small injected listener that clicks
buttons by ``elem_id`` (docs/environment.md). Every page image is a PNG or JPEG file written by
``render.encode_image`` (never Gradio's default WebP: see render.ENCODINGS).
"""

import json
import logging
import os
import threading
from pathlib import Path

from .. import CELL, NOT_CELL, UNLABELLED, UNSURE
from ..export import FORMATS
from . import handlers as H
from .progress import StabilityTracker
from .session import CLICK_MODES, COLOUR_MODES, IMAGE_KINDS, STRATEGY_CHOICES, ViewState

log = logging.getLogger(__name__)

__all__ = ["build_app", "launch", "check_address", "KEYBOARD_JS", "CSS"]

# The page's export formats: all but NWB, which edits the extraction's own file (CLI only).
PAGE_EXPORTS = tuple(f for f in FORMATS if f != "nwb")
#: ActSort's playback speeds: seconds per snapshot frame
PLAYBACK_SPEEDS = {"Slow": 0.2, "Moderate": 0.15, "Fast": 0.1}


def _speed_name(seconds: float) -> str:
    """The playback speed closest to ``seconds`` per frame."""
    return min(PLAYBACK_SPEEDS, key=lambda name: abs(PLAYBACK_SPEEDS[name] - seconds))


#: Gradio's upload route accepts at most this many bytes per file (the page uploads nothing)
MAX_UPLOAD_BYTES = 1024
KEYS = {
    "ArrowUp": "as-cell",
    "ArrowDown": "as-notcell",
    "ArrowLeft": "as-prev",
    "ArrowRight": "as-next",
    " ": "as-play",
    "u": "as-unsure",
    "U": "as-unsure",
    "z": "as-undo",
    "Z": "as-undo",
    "y": "as-redo",
    "Y": "as-redo",
    "Escape": "as-clear",
}

#: client-side step before an event that a text or number box sends: the keys go back to the
#: page's shortcuts (the inputs pass through unchanged)
BLUR_JS = "(...args) => { document.activeElement?.blur(); return args; }"

KEYBOARD_JS = """
() => {
  const keys = __KEYS__;
  document.addEventListener('keydown', (e) => {
    if ((e.ctrlKey || e.metaKey) && !e.altKey && (e.key === 's' || e.key === 'S')) {
      // ActSort's Save: export this store (the browser's own save dialog is of no use here)
      e.preventDefault();
      if (e.repeat) return;
      let save = document.getElementById('as-save');
      if (save && save.tagName.toLowerCase() !== 'button') save = save.querySelector('button');
      if (save) save.click();
      return;
    }
    const t = e.target;
    const tag = t && t.tagName ? t.tagName.toLowerCase() : '';
    // keys typed into a text or number box stay there; a slider, check box or radio button
    // keeps no keys (else Up after moving a contrast slider would move the slider)
    const kind = tag === 'input' ? (t.type || 'text').toLowerCase() : '';
    const fixed = ['range', 'checkbox', 'radio', 'button', 'submit'].includes(kind);
    if ((tag === 'input' && !fixed) || tag === 'textarea' || tag === 'select'
        || (t && t.isContentEditable)) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const id = keys[e.key];
    if (!id) return;
    e.preventDefault();
    if (e.repeat) return;
    if (fixed) t.blur();
    let el = document.getElementById(id);
    if (el && el.tagName.toLowerCase() !== 'button') el = el.querySelector('button') || el;
    if (el) el.click();
  });
}
""".replace("__KEYS__", json.dumps(KEYS))

CSS = """
.gradio-container {max-width: 1800px !important; padding-top: 6px !important;
                   padding-bottom: 6px !important}
#as-header {margin: 0 0 -6px 0}
#as-title {margin: 0; font-size: 18px; display: inline}
#as-main {gap: 12px}
#as-left, #as-right {gap: 6px}
/* The map may shrink to its box but never grow past its natural size: Gradio maps a click to
   image pixels assuming it is not enlarged (handlers.map_window). */
#as-map {height: auto !important; aspect-ratio: 1 / 1; max-height: calc(100vh - 90px)}
#as-map img {image-rendering: pixelated; cursor: crosshair; width: 100%; height: 100%;
             object-fit: scale-down}
.as-panel, .as-panel > div {padding: 0 !important; border: none !important;
                            background: transparent !important}
.as-panel .image-container, .as-panel button, .as-panel .image-frame {
    display: flex !important; justify-content: flex-start !important;
    align-items: flex-start !important; cursor: default}
.as-panel img {object-fit: scale-down; object-position: left top; max-width: 100%;
               max-height: 100%; width: auto; height: auto}
#as-event-traces img {margin-left: __EVT_OFFSET__px}
.as-pixels img {image-rendering: pixelated}
#as-evidence {gap: 12px; flex-wrap: nowrap}
#as-evidence > * {flex-grow: 0}
#as-buttons {gap: 6px}
#as-buttons button {padding-left: 4px; padding-right: 4px}
.as-info {border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 10px; font-size: 14px;
          display: flex; gap: 12px; align-items: flex-start}
.as-info-text {flex: 1 1 0; min-width: 250px}
.as-title {font-size: 16px; margin-bottom: 2px; white-space: nowrap}
.as-small {font-size: 12px; color: #57606a}
.as-feat {font-size: 12px; border-collapse: collapse; flex: 1.5 1 0; border: none !important;
          margin: 0 !important}
.as-feat td, .as-feat th {padding: 0 6px !important; border: none !important;
                          border-bottom: 1px solid #e4e4e4 !important; text-align: left;
                          background: transparent !important}
.as-fname {border-bottom: 1px dotted #888; cursor: help}
.as-maplegend {font-size: 12px; color: #333; display: flex; align-items: center; gap: 6px;
               flex-wrap: wrap}
.as-cbar {display: inline-block; width: 160px; height: 12px; border: 1px solid #999}
.as-bar-row {display: flex; align-items: center; gap: 6px; margin: 3px 0; font-size: 13px}
.as-bar-label {width: 58px}
.as-bar {flex: 1; display: flex; height: 14px; border: 1px solid #bbb; border-radius: 3px;
         overflow: hidden}
.as-bar div {height: 100%}
.as-bar-count {width: 110px; text-align: right; font-size: 12px}
.as-stable {border: 1px solid; border-radius: 4px; padding: 4px 6px; margin-top: 6px;
            font-size: 13px; font-weight: 600}
.as-legend {font-size: 12px; color: #333}
.as-legend kbd {border: 1px solid #999; border-bottom-width: 2px; border-radius: 3px;
                padding: 0 4px; background: #f6f8fa; font-size: 12px}
#as-status {font-size: 13px; min-height: 1.4em; padding: 0 4px}
.as-hidden {display: none !important}
#as-status p {margin: 0}
#as-cell button, button#as-cell {background: #2da44e; color: white}
#as-notcell button, button#as-notcell {background: #cf222e; color: white}
#as-unsure button, button#as-unsure {background: #8250df; color: white}
""".replace("__EVT_OFFSET__", str(H.PANEL_PX + 12))  # under the snapshots (#as-evidence gap)

_KEYS_HTML = (
    "<b>Keys</b>: <kbd>&uarr;</kbd> cell &nbsp; <kbd>&darr;</kbd> not a cell &nbsp; "
    "<kbd>U</kbd> unsure (skip, revisit later) &nbsp; <kbd>&larr;</kbd> / <kbd>&rarr;</kbd> "
    "previous / next &nbsp; <kbd>Space</kbd> play snapshots &nbsp; <kbd>Z</kbd> undo &nbsp; "
    "<kbd>Y</kbd> redo &nbsp; <kbd>Esc</kbd> clear selection &nbsp; <kbd>Ctrl</kbd>+<kbd>S</kbd> "
    "export"
)
HEADER = (
    '<div class="as-legend"><h2 id="as-title">actsort-gpu</h2> &nbsp;'
    '<span class="as-small">active-learning curation of cell candidates</span> &nbsp;&nbsp; '
    f"{_KEYS_HTML}</div>"
)
MAP_KEY = (
    '<div class="as-legend"><b>Map</b>: '
    '<span style="color:#28c846">&#9632;</span> your cells, '
    '<span style="color:#e63232">&#9632;</span> your non-cells, '
    '<span style="color:#9650e6">&#9632;</span> unsure, '
    '<span style="color:#8fd99a">&#9633;</span> / <span style="color:#f0a0a0">&#9633;</span> '
    'model\'s cells / non-cells, <span style="color:#ffc800">&#9633;</span> current, '
    '<span style="color:#2878ff">&#9632;</span> selected. Colours by P(cell) or a feature, '
    "and filters: tab <i>Map colours and filters</i>.</div>"
)
LEGEND = f'<div class="as-legend">{_KEYS_HTML}</div>'  # the keys (former name)
#: the map's box: a square as high as the window allows (<= its natural MAP_DISPLAY_PX)
MAP_BOX_HEIGHT = f"min({H.MAP_DISPLAY_PX}px, calc(100vh - 90px))"

STOPPING_HELP = """
**When to stop.** After every label the page compares the model's decisions on *all* candidates
with its decisions 20 labels earlier. When fewer than 0.5 % of the decisions changed over the
last 20 labels (and at least 30 labels were given) the signal turns **STABLE**: further labels of
the kind the query strategy picks are unlikely to change the exported table. The *estimated
accuracy* scores the model on each candidate just *before* you label it (it never trained on
it); since active learning asks about hard candidates it is a pessimistic estimate. A threshold
or strategy change restarts the count. Validation on the ActSort benchmark: benchmarks/RESULTS.md.
"""

LOAD_LABELS_HELP = """
The MATLAB app's *Load labels*, for the store shown: ActSort's `<name>_LABELS.mat`
(`labels_ex`), the CSV of an export, an `.npy` of +1 / -1 / 0 or Suite2p's curated
`iscell.npy`, one label per row of the
extraction this store was ingested from; or an earlier store (`.actsort` folder) of another
extraction of the same recording, matched by footprint overlap; or another copy of this
store's journal in its `labels/` folder (a synced folder's conflicted copy). Only unlabelled
candidates take a label; the import is one action (Z reverts it). Same as
`actsort import-labels`.
"""

# Page images: (Panels attribute, encoding kind of render.ENCODINGS).
IMAGES = (
    ("map", "map"),
    ("footprint", "panel"),
    ("snapshots", "panel"),
    ("trace", "panel"),
    ("event_traces", "panel"),
)
_UNSENT = object()


def _image_file(img, kind: str, key: bytes, cache_dir: Path) -> str:
    """Encode ``img`` (render.ENCODINGS[kind]) into Gradio's cache, named by its content key,
    so Gradio serves it as is (no re-encoding, no copy)."""
    from . import render

    folder = Path(cache_dir) / f"actsort-{key.hex()}"
    fmt = render.ENCODINGS[kind][0]
    path = folder / f"{kind}.{'jpg' if fmt == 'jpeg' else fmt}"
    if not path.exists():  # shown before (e.g. back to a candidate): reuse
        data, _ = render.encode_image(img, kind)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{kind}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return str(path)


def _images(st: ViewState, values: dict, cache_dir: Path, gr) -> tuple[ViewState, list]:
    """Page images of ``values`` {name: array or None}: ``gr.skip()`` for those the tab already
    shows (same content key), encoded files for the others; the state remembers what it shows."""
    from . import render

    sent = dict(st.sent)
    out = []
    for name, img in values.items():
        key = render.fingerprint(img)
        if sent.get(name, _UNSENT) == key:
            out.append(gr.skip())
            continue
        kind = dict(IMAGES).get(name, "panel")
        out.append(None if img is None else _image_file(img, kind, key, cache_dir))
        sent[name] = key
    return st.with_(sent=sent), out


def _emit(st: ViewState, p: H.Panels, gr, cache_dir: Path):
    st, imgs = _images(st, {name: getattr(p, name) for name, _ in IMAGES}, cache_dir, gr)
    sent = dict(st.sent)
    texts = []
    for name, text in (("info", p.info), ("progress", p.progress), ("legend", p.legend)):
        if sent.get(name, _UNSENT) == text:
            texts.append(gr.skip())
        else:
            texts.append(text)
            sent[name] = text
    st = st.with_(sent=sent)
    info, progress, legend = texts
    return (
        st,
        *imgs,
        info,
        progress,
        p.status,
        st.current if st.current >= 0 else None,
        gr.update(active=st.playing),
        legend,  # last: the outputs' order before it is the page's API (tests/test_ui_app.py)
    )


def build_app(ws, ui_config=None, export_dir: Path | None = None):
    """The page over a :class:`~actsort_gpu.ui.workspace.Workspace` (one per process)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from ..config import UIConfig

    cfg = ui_config or UIConfig()
    export_dir = Path(export_dir) if export_dir is not None else ws.paths[0] / "exports"
    for tr_i in range(len(ws.trackers)):
        ws.trackers[tr_i] = StabilityTracker(
            window=cfg.stop_window_labels,
            churn_tol=cfg.stop_churn_fraction,
            min_labels=cfg.stop_min_labels,
        )
    names = ws.names
    # Page images accumulate in Gradio's cache (one file per changed panel): delete those older
    # than an hour, checking every 30 minutes.
    with gr.Blocks(
        title="actsort-gpu: curate candidates",
        analytics_enabled=False,
        delete_cache=(1800, 3600),
        fill_width=True,
    ) as demo:
        state = gr.State(ViewState())
        gr.HTML(HEADER, elem_id="as-header")
        with gr.Row(equal_height=False, elem_id="as-main"):
            # Left: the map (shown at most at its natural size: Gradio's click mapping needs
            # it, see handlers.map_window), its colour bar / filter line, the status line.
            with gr.Column(scale=4, min_width=400, elem_id="as-left"):
                map_img = gr.Image(
                    label="Field of view (click: select candidate)",
                    elem_id="as-map",
                    interactive=False,
                    format="jpeg",
                    buttons=["fullscreen"],
                    height=MAP_BOX_HEIGHT,
                    show_label=False,
                )
                map_legend = gr.HTML(elem_id="as-map-legend")
                gr.HTML(MAP_KEY)
            # Right: the evidence first (what a candidate is judged by), then the controls.
            with gr.Column(scale=5, min_width=H.EVIDENCE_PX + 24, elem_id="as-right"):
                info = gr.HTML(elem_id="as-info")
                with gr.Row(elem_id="as-buttons"):
                    small = {"size": "sm", "min_width": 60}
                    b_cell = gr.Button("Cell ↑", elem_id="as-cell", variant="primary", **small)
                    b_not = gr.Button("Not a cell ↓", elem_id="as-notcell", variant="stop", **small)
                    b_unsure = gr.Button("Unsure (U)", elem_id="as-unsure", **small)
                    b_unl = gr.Button("Unlabel", elem_id="as-unlabel", **small)
                    b_prev = gr.Button("← Prev", elem_id="as-prev", **small)
                    b_next = gr.Button("Next →", elem_id="as-next", **small)
                    b_undo = gr.Button("Undo (Z)", elem_id="as-undo", **small)
                    b_redo = gr.Button("Redo (Y)", elem_id="as-redo", **small)
                    # Ctrl+S: the Export tab's button is drawn only once its tab is opened
                    b_save = gr.Button("Save", elem_id="as-save", elem_classes=["as-hidden"])
                # right under the buttons: it confirms each key press
                status = gr.Markdown(elem_id="as-status")
                with gr.Row(equal_height=False, elem_id="as-evidence"):
                    fp_img = gr.Image(
                        label="Footprint",
                        elem_id="as-footprint",
                        interactive=False,
                        format="png",
                        elem_classes=["as-panel", "as-pixels"],
                        scale=0,
                        min_width=H.PANEL_PX,
                        height=H.PANEL_PX,
                        show_label=False,
                        buttons=[],
                    )
                    snap_img = gr.Image(
                        label="Event snapshots (Space: play)",
                        elem_id="as-snapshots",
                        interactive=False,
                        format="png",
                        elem_classes=["as-panel", "as-pixels"],
                        scale=1,
                        min_width=5 * H.PANEL_PX,
                        height=H.PANEL_PX,
                        show_label=False,
                        buttons=[],
                    )
                trace_img = gr.Image(
                    label="Trace (numbers: events)",
                    elem_id="as-trace",
                    interactive=False,
                    format="png",
                    elem_classes=["as-panel"],
                    height=H.TRACE_PX,
                    show_label=False,
                    buttons=[],
                )
                evt_img = gr.Image(
                    label="Zoomed event traces (shaded: snapshot window)",
                    elem_id="as-event-traces",
                    interactive=False,
                    format="png",
                    elem_classes=["as-panel", "as-events"],
                    height=H.EVENT_TRACE_PX,
                    show_label=False,
                    buttons=[],
                )
                with gr.Row(elem_id="as-nav"):
                    b_play = gr.Button(
                        "▶ Play / stop snapshots (Space)", elem_id="as-play", size="sm", scale=2
                    )
                    # ActSort's dataset << / >> buttons, shown with several stores
                    b_store_prev, b_store_next = (
                        gr.Button(
                            text,
                            size="sm",
                            min_width=40,
                            scale=0,
                            visible=len(names) > 1,
                            elem_id=f"as-store-{step}",
                            render=False,
                        )
                        for text, step in (("<<", "prev"), (">>", "next"))
                    )
                    b_store_prev.render()
                    store_dd = gr.Dropdown(
                        names,
                        value=names[0],
                        label="Store (animal)",
                        elem_id="as-store",
                        interactive=len(names) > 1,
                        scale=2,
                        min_width=120,
                    )
                    b_store_next.render()
                    index_nb = gr.Number(
                        label="Candidate",
                        precision=0,
                        elem_id="as-index",
                        scale=1,
                        minimum=0,
                        min_width=90,
                    )
                progress = gr.HTML(elem_id="as-progress")
                with gr.Tabs():
                    with gr.Tab("View"):
                        image_dd = gr.Radio(list(IMAGE_KINDS), value="max", label="Image")
                        with gr.Row():
                            lo_sl = gr.Slider(0, 50, value=1.0, step=0.5, label="Black (%ile)")
                            hi_sl = gr.Slider(50, 100, value=99.7, step=0.1, label="White (%ile)")
                        with gr.Row():
                            zoom_sl = gr.Slider(
                                0,
                                100,
                                value=0,
                                step=5,
                                label="Zoom around the current candidate",
                                elem_id="as-zoom",
                            )
                            fill_sl = gr.Slider(
                                0,
                                1,
                                value=ViewState.fill_opacity,
                                step=0.05,
                                label="Fill opacity of your labels",
                            )
                        with gr.Row():
                            show_model = gr.Checkbox(True, label="Show model decisions")
                            hide_cells = gr.Checkbox(False, label="Hide my cells")
                            hide_not = gr.Checkbox(False, label="Hide my non-cells")
                            hide_outlines = gr.Checkbox(False, label="Hide all outlines")
                            border_dd = gr.Dropdown(
                                list(H.render.BORDER_COLOURS),
                                value=ViewState.border,
                                label="Outline colour (unlabelled, neighbours)",
                            )
                        click_mode = gr.Radio(
                            list(CLICK_MODES), value=CLICK_MODES[0], label="Click on the map"
                        )
                        b_clear = gr.Button("Clear selection (Esc)", elem_id="as-clear", size="sm")
                    with gr.Tab("Snapshots"):
                        with gr.Row():
                            snap_lo = gr.Slider(
                                0,
                                50,
                                value=ViewState.snap_lo_pct,
                                step=0.5,
                                label="Snapshots: black (%ile of the candidate's values)",
                            )
                            snap_hi = gr.Slider(
                                50,
                                100,
                                value=ViewState.snap_hi_pct,
                                step=0.1,
                                label="white (%ile)",
                            )
                        speed_rd = gr.Radio(
                            list(PLAYBACK_SPEEDS),
                            value=_speed_name(cfg.playback_s_per_frame),
                            label="Playback speed (Space plays)",
                        )
                    with gr.Tab("Map colours and filters"):
                        colour_rd = gr.Radio(
                            list(COLOUR_MODES),
                            value=next(iter(COLOUR_MODES)),
                            label="Colour the outlines by",
                            elem_id="as-colour-by",
                        )
                        feature_dd = gr.Dropdown(
                            H.feature_choices(ws),
                            value=H.feature_choice(ws, ViewState()) or None,
                            label="Feature (colour and range filter; hover the table's names "
                            "for their meaning)",
                            elem_id="as-feature",
                        )
                        with gr.Row():
                            flo_sl = gr.Slider(
                                0, 100, value=0, step=1, label="Feature range: from percentile"
                            )
                            fhi_sl = gr.Slider(0, 100, value=100, step=1, label="to percentile")
                        hide_rej = gr.Checkbox(
                            False,
                            label="Hide rejected (not a cell: your label, else the model's)",
                            elem_id="as-hide-rejected",
                        )
                    with gr.Tab("Active learning"):
                        strat_dd = gr.Dropdown(
                            list(STRATEGY_CHOICES), value="DCAL (default)", label="Next candidate"
                        )
                        weight_sl = gr.Slider(
                            0,
                            1,
                            value=ws.learner.policy.dcal_weight,
                            step=0.05,
                            label="DCAL weight",
                        )
                        thr_sl = gr.Slider(
                            0,
                            1,
                            value=ws.learner.threshold,
                            step=0.01,
                            label="Decision threshold on P(cell)",
                        )
                        gr.Markdown(STOPPING_HELP)
                    with gr.Tab("Export"):
                        fmt_dd = gr.Radio(list(PAGE_EXPORTS), value="csv", label="Format")
                        b_export = gr.Button("Export this store", elem_id="as-export")
                        export_file = gr.File(label="Exported file", interactive=False)
                        export_msg = gr.Markdown()
                    with gr.Tab("Load labels"):
                        load_tb = gr.Textbox(
                            label="Label file or earlier store (a path on the computer running "
                            "this page)",
                            placeholder="e.g. ~/data/plane0_LABELS.mat",
                            elem_id="as-load-source",
                        )
                        b_load = gr.Button("Load labels into this store", elem_id="as-load")
                        gr.Markdown(LOAD_LABELS_HELP)
                    with gr.Tab("Truth (demo)", visible=ws.has_truth()):
                        gr.Markdown(
                            "This store carries the known truth of a synthetic "
                            "recording. It stays hidden until you press the button."
                        )
                        b_truth = gr.Button("Compare with truth", elem_id="as-truth")
                        truth_out = gr.HTML(elem_id="as-truth-report")
                        errors_cb = gr.Checkbox(
                            False,
                            label="Colour the map by errors (false positives / negatives)",
                            visible=False,
                            elem_id="as-errors",
                        )
        timer = gr.Timer(cfg.playback_s_per_frame, active=False)

        outs = [
            state,
            map_img,
            fp_img,
            snap_img,
            trace_img,
            evt_img,
            info,
            progress,
            status,
            index_nb,
            timer,
            map_legend,
        ]

        cache_dir = Path(map_img.GRADIO_CACHE)

        def wrap(fn):
            def run(st, *args):
                new, panels = fn(ws, st, *args)
                return _emit(new, panels, gr, cache_dir)

            return run

        def tab_of(request) -> str:
            # the tab's id is its Gradio session: a reload or a second tab is a new one
            return getattr(request, "session_hash", None) or ""

        def on_open(st, request: gr.Request):
            new, panels = H.on_load(ws, st, tab=tab_of(request))
            return _emit(new, panels, gr, cache_dir)

        def on_close(request: gr.Request):
            ws.forget(tab_of(request))

        demo.load(on_open, [state], outs, api_name="load")
        demo.unload(on_close)  # a closed or reloaded tab's labels are anyone's to undo
        # The key-press path: no progress overlay on the ten outputs (drawing and removing it
        # costs the browser more than the whole server round trip; the status line confirms).
        quick = {"show_progress": "hidden"}
        b_cell.click(
            wrap(lambda w, st: H.on_label(w, st, CELL)), [state], outs, api_name="cell", **quick
        )
        b_not.click(
            wrap(lambda w, st: H.on_label(w, st, NOT_CELL)),
            [state],
            outs,
            api_name="not_cell",
            **quick,
        )
        b_unl.click(
            wrap(lambda w, st: H.on_label(w, st, UNLABELLED)),
            [state],
            outs,
            api_name="unlabel",
            **quick,
        )
        b_unsure.click(
            wrap(lambda w, st: H.on_label(w, st, UNSURE)),
            [state],
            outs,
            api_name="unsure",
            **quick,
        )
        b_prev.click(wrap(H.on_prev), [state], outs, api_name="prev", **quick)
        b_next.click(wrap(H.on_next), [state], outs, api_name="next", **quick)
        b_undo.click(wrap(H.on_undo), [state], outs, api_name="undo", **quick)
        b_redo.click(wrap(H.on_redo), [state], outs, api_name="redo", **quick)
        b_play.click(wrap(H.on_play), [state], outs, api_name="play", **quick)
        b_clear.click(wrap(H.on_clear_selection), [state], outs, **quick)
        # after the jump the keys label again (in the box, Up / Down would change the number)
        index_nb.submit(
            wrap(H.on_jump), [state, index_nb], outs, api_name="jump", js=BLUR_JS, **quick
        )
        store_dd.change(wrap(H.on_store), [state, store_dd], outs)
        # ActSort's dataset << / >>: the drop-down's value, whose change loads the store
        b_store_prev.click(lambda name: H.step_store(ws, name, -1), store_dd, store_dd)
        b_store_next.click(lambda name: H.step_store(ws, name, +1), store_dd, store_dd)
        view_inputs = [
            state,
            image_dd,
            lo_sl,
            hi_sl,
            zoom_sl,
            show_model,
            hide_cells,
            hide_not,
            click_mode,
            hide_outlines,
            fill_sl,
            border_dd,
        ]
        toggles = (image_dd, zoom_sl, show_model, hide_cells, hide_not, hide_outlines, border_dd)
        for comp in toggles:
            comp.change(wrap(H.on_view), view_inputs, outs)
        # The click mode and the map's clicks: one concurrency group, so that neither event
        # overwrites the state the other one just wrote (each reads the state when it starts).
        # No progress overlay for the mode change: it would cover the map and swallow a click
        # that follows at once.
        map_events = {"concurrency_id": "map-click"}
        click_mode.change(wrap(H.on_view), view_inputs, outs, **quick, **map_events)
        for comp in (lo_sl, hi_sl, fill_sl):
            comp.release(wrap(H.on_view), view_inputs, outs)
        map_inputs = [state, colour_rd, feature_dd, flo_sl, fhi_sl, hide_rej]
        for comp in (colour_rd, feature_dd, hide_rej):
            comp.change(wrap(H.on_map_options), map_inputs, outs)
        for comp in (flo_sl, fhi_sl):
            comp.release(wrap(H.on_map_options), map_inputs, outs)
        thr_sl.release(wrap(H.on_threshold), [state, thr_sl], outs)
        for comp in (snap_lo, snap_hi):
            comp.release(wrap(H.on_snapshot_contrast), [state, snap_lo, snap_hi], outs)
        speed_rd.change(lambda name: gr.update(value=PLAYBACK_SPEEDS[name]), [speed_rd], [timer])
        strat_dd.change(wrap(H.on_strategy), [state, strat_dd, weight_sl], outs)
        weight_sl.release(wrap(H.on_strategy), [state, strat_dd, weight_sl], outs)

        def on_select(st, mode, evt: gr.SelectData):
            x, y = evt.index[0], evt.index[1]
            new, panels = H.on_click(ws, st, x, y, mode)
            return _emit(new, panels, gr, cache_dir)

        # The radio's value travels with the click: the mode change's own event may not have
        # reached the state yet.
        map_img.select(on_select, [state, click_mode], outs, **map_events)

        def on_tick(st):
            new, snaps, evt = H.on_tick(ws, st)
            if snaps is None:
                return new, gr.skip(), gr.skip()
            new, imgs = _images(new, {"snapshots": snaps, "event_traces": evt}, cache_dir, gr)
            return (new, *imgs)

        timer.tick(on_tick, [state], [state, snap_img, evt_img], show_progress="hidden")

        def on_export(st, fmt):
            from ..export import EXPORTERS, export_labels

            name = EXPORTERS[fmt].name_for(ws.paths[st.store])
            target = None if name is None else export_dir / ws.names[st.store] / name
            try:
                with ws.lock:
                    path = export_labels(
                        ws.paths[st.store], fmt, target, learner=ws.learner, dataset=st.store
                    )
            except (ValueError, ImportError, OSError) as exc:
                return None, f"Export failed: {exc}", f"Export failed: {exc}"
            inside = str(Path(path).resolve()).startswith(str(export_dir.resolve()))
            said = f"Wrote `{path}` ({fmt}; every label is also in the journal as you give it)."
            return (str(path) if inside else None), f"Wrote `{path}`.", said

        def on_truth(st):
            new, report = H.on_truth(ws, st)
            return new, report, gr.update(visible=new.truth_shown)

        b_truth.click(on_truth, [state], [state, truth_out, errors_cb], api_name="truth")
        errors_cb.change(wrap(H.on_errors), [state, errors_cb], outs, api_name="errors")

        export_outputs = [export_file, export_msg, status]
        b_export.click(on_export, [state, fmt_dd], export_outputs, api_name="export")
        b_save.click(on_export, [state, fmt_dd], export_outputs)
        # the keys go back to the page once the path is sent (else Z and the arrows would
        # edit the text box)
        b_load.click(
            wrap(H.on_load_labels), [state, load_tb], outs, api_name="load_labels", js=BLUR_JS
        )
        load_tb.submit(wrap(H.on_load_labels), [state, load_tb], outs, js=BLUR_JS)
    demo.queue(default_concurrency_limit=1)
    demo._actsort_export_dir = export_dir
    return demo


def check_address(host: str, port: int) -> None:
    """Raise a one-line error when the page could not listen on ``host``:``port`` (Gradio
    reports a bad port, a taken one and a host that is not this computer's alike, as 'Cannot
    find empty port')."""
    import errno
    import socket

    if not 1 <= int(port) <= 65535:
        raise ValueError(f"--port {port}: a port is a number from 1 to 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ValueError(
            f"--host {host}: not a name or address this computer knows ({exc})"
        ) from None
    with socket.socket(family, kind, proto) as sock:
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OSError(
                    f"port {port} on {host} is taken (another page or program is serving "
                    "there); pass --port with a free one"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ValueError(
                    f"--host {host}: not an address of this computer (use 127.0.0.1, or "
                    "0.0.0.0 for every network interface, with --auth)"
                ) from None
            raise OSError(f"cannot serve the page on {host}:{port}: {exc.strerror}") from None


def launch(
    demo,
    ui_config=None,
    *,
    auth: str | None = None,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
    inbrowser: bool = False,
):
    """Serve the page: 127.0.0.1 unless told otherwise, optional USER:PASS, analytics off,
    files reachable only under the export folder; ``inbrowser`` opens it in the default
    browser."""
    from ..config import UIConfig

    cfg = ui_config or UIConfig()
    creds = None
    if auth:
        if ":" not in auth or auth.startswith(":"):
            raise ValueError("--auth: expected USER:PASS (the value is not shown)")
        user, password = auth.split(":", 1)
        creds = (user, password)
    export_dir = Path(demo._actsort_export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    return demo.launch(
        server_name=cfg.host,
        server_port=cfg.port,
        auth=creds,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        inbrowser=bool(inbrowser),
        allowed_paths=[str(export_dir)],
        js=KEYBOARD_JS,
        css=CSS,
        footer_links=[],
        show_error=True,
        ssr_mode=False,
        # the page uploads nothing: bound Gradio's upload route, open even without a login
        max_file_size=MAX_UPLOAD_BYTES,
    )
