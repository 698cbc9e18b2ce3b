"""Readable evidence and map options (issue 15): axes and fonts on the panels, feature names from
the registry, the model read-out before training, map colours / filters, the current-candidate
marker at the map's edge, no WebP on the page."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import ImageDraw, ImageFont
from ui_fixtures import make_test_store

from actsort_gpu import CELL, NOT_CELL
from actsort_gpu.features.registry import (
    ACTSORT_NAMES,
    EXTRA_COMPUTED_NAMES,
    FEATURE_TEXT,
    describe_feature,
)
from actsort_gpu.ui import handlers as H
from actsort_gpu.ui import open_workspace, render
from actsort_gpu.ui.render import Window
from actsort_gpu.ui.session import COLOUR_MODES, ViewState


@pytest.fixture
def ws(tmp_path):
    w = open_workspace([make_test_store(tmp_path, n=40)], annotator="tester")
    yield w
    w.close()


def _train(ws, st, n=10):
    truth = ws.stores[0].store.read("truth/labels")
    for _ in range(n):
        st, _ = H.on_label(ws, st, int(truth[st.current]))
    return st


# ------------------------------------------------------------------ registry: plain names
def test_every_feature_has_one_plain_name_and_a_description():
    names = ACTSORT_NAMES + EXTRA_COMPUTED_NAMES
    assert set(names) <= set(FEATURE_TEXT) and len(ACTSORT_NAMES) == 76
    plain = [FEATURE_TEXT[n][0] for n in names]
    assert len(set(plain)) == len(plain)  # a plain name identifies its column
    assert all(FEATURE_TEXT[n][1] and "_" not in FEATURE_TEXT[n][0] for n in names)
    assert describe_feature("tqm_0.9")[0] == "Movie matches footprint (>90 %)"
    assert describe_feature("source_suite2p_iscell")[0] == "From the extraction: suite2p iscell"
    assert describe_feature("emb3")[0] == "Learned feature 3"
    assert describe_feature("unknown_x") == ("unknown_x", "unknown_x")


# ------------------------------------------------------------------ render: fonts and axes
def test_text_is_a_real_font_of_at_least_11_px():
    font = render._font()
    assert isinstance(font, ImageFont.FreeTypeFont) and font.size >= 11
    draw = ImageDraw.Draw(__import__("PIL.Image", fromlist=["Image"]).new("RGB", (10, 10)))
    top, bottom = draw.textbbox((0, 0), "Hg 1 frame", font=font)[1::2]
    assert bottom - top >= 11


def test_nice_ticks_known_answers():
    ticks, dec = render.nice_ticks(-0.3, 7.9, 4)
    np.testing.assert_allclose(ticks, [0.0, 2.5, 5.0, 7.5])
    assert dec == 1
    ticks, dec = render.nice_ticks(0, 86, 5)
    np.testing.assert_allclose(ticks, [0, 20, 40, 60, 80]) and dec == 0
    assert render._tick_label(-0.0001, 1) == "0.0" and render._tick_label(12500, 0) == "12k"


def test_display_trace_is_dff_only_with_a_fluorescence_baseline():
    f = np.full(100, 200.0)
    f[50] = 400.0
    v, units = render.display_trace(f)
    assert units == "dF/F" and v[50] == pytest.approx(1.0) and v[0] == pytest.approx(0.0)
    c = np.zeros(100)
    c[50] = 1.0  # EXTRACT / CaImAn style: rest at 0
    v, units = render.display_trace(c)
    assert units == "source units" and np.array_equal(v, c)


def test_trace_plot_has_y_axis_units_and_event_markers():
    tr = np.sin(np.arange(600) / 20.0)
    ev = np.array([100, 300, -1, -1, -1])
    plain = render.trace_plot(tr, ev, width=500, height=140, fs_hz=10.0)
    with_units = render.trace_plot(tr, ev, width=500, height=140, fs_hz=10.0, units="dF/F")
    assert plain.shape == (140, 500, 3) and not np.array_equal(plain, with_units)
    blue = (with_units == render.COLOURS["event"]).all(-1)
    assert blue.sum() > 40  # dots on the trace and the event numbers
    # the units read up the left margin, never under the event numbers of early events
    first = render.trace_plot(tr, np.array([0, 3, 6, -1, -1]), width=500, height=140, units="x")
    for units in ("source units", "dF/F"):
        img = render.trace_plot(tr, np.array([0, 3, 6, -1, -1]), width=500, height=140, units=units)
        top = slice(0, render.FONT_PX + 6)
        assert np.array_equal(img[top], first[top])  # the numbers' row holds no units text
        ink = (img[:, : render.FONT_PX + 4] < 200).all(-1)
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        assert rows.size and np.ptp(rows) > np.ptp(cols)  # written upwards
    # the numbers of events a few frames apart stand side by side: three blue runs
    top = first[: render.FONT_PX + 4].astype(int)
    blue = ((top[..., 2] - top[..., 0]) > 60).any(axis=0)
    runs = np.flatnonzero(np.diff(blue.astype(np.int8)) == 1)
    assert len(runs) == 3


def test_value_colours_and_colourbar():
    rgb = render.value_colours(np.array([0.0, 1.0, np.nan, 5.0]))
    assert tuple(rgb[0]) == (68, 1, 84) and tuple(rgb[1]) == (253, 231, 37)
    assert tuple(rgb[2]) == render.COLOURS["no_value"] and tuple(rgb[3]) == tuple(rgb[1])
    assert render.colourbar_css().startswith("linear-gradient(to right, rgb(68,1,84)")
    # quantised: a tiny change of a value does not change its colour
    a, b = render.value_colours(np.array([0.5, 0.5001]))
    assert tuple(a) == tuple(b)


def test_current_marker_stays_whole_at_the_map_edge():
    fp = __import__("scipy.sparse", fromlist=["csr_matrix"]).csr_matrix((1, 40 * 40))
    c = render.MapCanvas(fp, [np.zeros((0, 2))], 40, 40)
    c.set_base(np.zeros((40, 40), np.uint8))
    c.set_colours(render.candidate_colours(np.zeros(1, np.int8), None))
    outline = np.array([[0, 0], [0, 3], [3, 3], [3, 0]], np.float32)  # in the top-left corner
    img = c.view(Window(0, 40, 0, 40, 1.0), 0, outline, marker_px=2)
    yellow = (img == render.COLOURS["current"]).all(-1)
    # the top-left bracket: a full arm along row 0 and one down column 0 (not clipped away)
    assert yellow[0:2, 0:8].all() and yellow[0:8, 0:2].all()
    img = c.view(Window(0, 40, 0, 40, 1.0), 0, outline + 36, marker_px=2)  # bottom-right
    yellow = (img == render.COLOURS["current"]).all(-1)
    assert yellow[38:40, 32:40].all() and yellow[32:40, 38:40].all()


# ------------------------------------------------------------------ the info card
def test_model_read_out_before_training_and_plain_feature_names(ws):
    st, p = H.on_load(ws, ViewState())
    assert "not trained yet" in p.info and "P(cell) <b>-" not in p.info
    st = _train(ws, st)
    p = H.render_panels(ws, st)
    assert "P(cell) <b>0." in p.info or "P(cell) <b>1." in p.info
    names = [n for n, _, _ in ws.contributions(0, st.current)]
    assert names and all(f'title="{n}: ' in p.info for n in names)


def test_feature_cell_shows_the_plain_name_and_the_exact_one_in_a_tooltip():
    cell = H._feature_cell("resid3_q0.75")
    assert "Inside above surround (75th pct)" in cell and 'title="resid3_q0.75: ' in cell


def test_next_at_the_newest_candidate_says_so(ws):
    st, _ = H.on_load(ws, ViewState())
    st = _train(ws, st, 8)
    st, _ = H.on_strategy(ws, st, "In order", 0.5)
    st, p = H.on_next(ws, st)  # to the first unlabelled candidate: the newest query
    assert "newest" not in p.status or st.current == int(np.flatnonzero(ws.human(0) == 0)[0])
    cur = st.current
    st, p = H.on_next(ws, st)  # the query picks it again
    assert st.current == cur and "newest" in p.status and "U" in p.status


# ------------------------------------------------------------------ map options
def test_colour_by_probability_and_feature_with_a_colour_bar(ws):
    st, _ = H.on_load(ws, ViewState())
    st, p = H.on_map_options(ws, st, "P(cell)", "", 0, 100, False)
    assert st.colour_by == "probability" and "P(cell)" in p.legend and "not trained" in p.legend
    st = _train(ws, st)
    st, p = H.on_map_options(ws, st, "P(cell)", "", 0, 100, False)
    assert "linear-gradient" in p.legend
    st2, p2 = H.on_map_options(ws, st, "A feature (below)", "snr", 0, 100, False)
    assert st2.feature == "snr" and "snr" in p2.legend and "as-cbar" in p2.legend
    assert not np.array_equal(p.map, p2.map)
    st3, p3 = H.on_map_options(ws, st, "Labels and decisions", "snr", 0, 100, False)
    assert p3.legend == ""
    with pytest.raises(ValueError, match="colour"):
        H.on_map_options(ws, st, "rainbow", "", 0, 100, False)
    assert set(COLOUR_MODES.values()) == {"labels", "probability", "feature"}


def test_hide_rejected_and_feature_range_filter_the_map_and_the_box(ws):
    st, _ = H.on_load(ws, ViewState())
    st = _train(ws, st)
    human = ws.human(0)
    _, dec = ws.model(0)
    st, p = H.on_map_options(ws, st, "Labels and decisions", "snr", 0, 100, True)
    hidden, text = H.map_filters(ws, st, human, dec)
    final = np.where(human != 0, human, dec)
    assert np.array_equal(hidden, final < 0) and "rejected hidden" in p.legend
    st, p = H.on_map_options(ws, st, "Labels and decisions", "snr", 50, 100, False)
    hidden, text = H.map_filters(ws, st, human, dec)
    snr = ws.stores[0].feature_column("snr")
    assert np.array_equal(~hidden, snr >= np.percentile(snr, 50))
    assert f"Showing {int((~hidden).sum())} of 40" in p.legend
    # the two percentiles cannot cross; the box selects only what the map shows
    st, _ = H.on_map_options(ws, st, "Labels and decisions", "snr", 90, 40, False)
    assert (st.feature_lo_pct, st.feature_hi_pct) == (40.0, 90.0)
    st, _ = H.on_map_options(ws, st, "Labels and decisions", "snr", 50, 100, False)
    st, _ = H.on_view(ws, st, "max", 1, 99.7, 0, True, click_mode="Box: two corners")
    win = H.map_window(ws, st)
    st, _ = H.on_click(ws, st, 0, 0)
    s = ws.stores[0]
    st, _ = H.on_click(ws, st, (s.width - 1) * win.scale, (s.height - 1) * win.scale)
    assert st.selected and not hidden[list(st.selected)].any()
    # no filter: nothing hidden
    st, _ = H.on_map_options(ws, st, "Labels and decisions", "snr", 0, 100, False)
    assert H.map_filters(ws, st, human, dec) == (None, "")


def test_feature_choices_are_plain_names_with_exact_values(ws):
    choices = H.feature_choices(ws)
    assert ("snr", "snr") in choices and len(choices) == len(ws.stores[0].feature_names)


# ------------------------------------------------------------------ the page
def test_no_page_image_goes_through_webp(ws, tmp_path):
    import gradio as gr

    from actsort_gpu.ui.layout import build_app

    demo = build_app(ws, export_dir=tmp_path / "exports")
    images = [b for b in demo.blocks.values() if isinstance(b, gr.Image)]
    ids = {b.elem_id for b in images}
    assert {"as-map", "as-footprint", "as-snapshots", "as-trace"} <= ids
    assert all(b.format in ("png", "jpeg") for b in images), [(b.elem_id, b.format) for b in images]
    assert set(render.ENCODINGS) == {"map", "panel"}
    assert {fmt for fmt, _ in render.ENCODINGS.values()} <= {"png", "jpeg"}


def test_label_keys_include_unsure():
    from actsort_gpu.ui.layout import KEYBOARD_JS, KEYS

    assert KEYS["u"] == KEYS["U"] == "as-unsure" and "as-unsure" in KEYBOARD_JS
    assert KEYS["ArrowUp"] == "as-cell" and CELL == 1 and NOT_CELL == -1


def test_a_strip_crop_sits_in_the_middle_of_its_panel_with_its_outline_on_it():
    """A candidate at the field of view's edge has a strip of a crop (22 x 51 px on the 1p
    movie): it was pasted at the top of its square panel, a white band below; now centred,
    the outline drawn where the image is."""
    fp = np.zeros((10, 40), np.float32)
    fp[3:7, 18:24] = 1.0
    crop = (100, 110, 200, 240)
    outline = np.array([[103, 218], [103, 224], [107, 224], [107, 218], [103, 218]], float)
    img = render.footprint_panel(fp, outline, crop, panel_px=150)
    band = np.flatnonzero((img[:, :, :] != 255).any(axis=(1, 2)))
    top, bottom = band.min(), band[band < 150 - render.FONT_PX - 6].max()
    assert top >= 40 and 150 - bottom >= 40  # white above and below, not all below
    blue = np.flatnonzero((img == render.COLOURS["selected"]).all(-1).any(axis=1))
    assert top <= blue.min() and blue.max() <= bottom
