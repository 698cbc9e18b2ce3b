"""Rendering and progress helpers of the page: known answers on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from actsort_gpu.active.learner import top_contributions
from actsort_gpu.ui import progress, render
from actsort_gpu.ui.render import MapCanvas, Window


def test_outline_pixels_closes_and_fills_gaps():
    pts = np.array([[0, 0], [0, 3], [2, 3]], float)
    px = {tuple(p) for p in render.outline_pixels(pts)}
    assert {(0, 0), (0, 1), (0, 2), (0, 3), (1, 3), (2, 3), (1, 1)} <= px  # closing segment too


def test_vectorised_outlines_match_per_candidate():
    rng = np.random.default_rng(1)
    outlines = [
        np.vstack([rng.uniform(0, 30, (5, 2)), [[np.nan, np.nan]], rng.uniform(0, 30, (4, 2))])
        for _ in range(6)
    ]
    pix, ids = render._rasterise_outlines(outlines, 40, 40)
    for k, o in enumerate(outlines):
        ref = {tuple(p) for p in render.outline_pixels(o)}
        got = {(int(p) // 40, int(p) % 40) for p in pix[ids == k]}
        assert got == ref


def test_outline_pixels_nan_separates_boundaries():
    pts = np.array([[0, 0], [0, 1], [np.nan, np.nan], [5, 5], [5, 6]], float)
    px = {tuple(p) for p in render.outline_pixels(pts)}
    assert (5, 5) in px and (0, 0) in px and (3, 3) not in px


def test_window_click_maps_x_to_column_not_row():
    # B8: ActSort compared x with rows. Display (x=30, y=10) at scale 2 -> row 5, col 15.
    w = Window(0, 40, 0, 40, 2.0)
    assert w.to_fov(30, 10) == (5, 15)
    w = Window(10, 50, 20, 60, 0.5)
    assert w.to_fov(4, 2) == (14, 28)


def test_window_zoom_follows_actsort_formula():
    w = Window.around((50, 50), 100, 100, 200, 720)
    assert (w.row1 - w.row0, w.col1 - w.col0) == (10, 10)
    w = Window.around((50, 50), 0, 100, 200, 720)
    assert (w.row0, w.row1, w.col0, w.col1) == (0, 100, 0, 200) and w.scale == 1.0
    w = Window.around((50, 50), 0, 1000, 2000, 720)
    assert w.scale == 1 / 3 and w.to_fov(3, 3) == (9, 9)


def test_event_summary_weights():
    s = np.zeros((11, 1, 1), np.float32)
    s[:, 0, 0] = np.arange(11)  # max 10, median 5, mean 5
    assert render.event_summary(s)[0, 0] == pytest.approx(0.5 * 10 + 0.3 * 5 + 0.2 * 5)


def _canvas():
    h = w = 20
    fp = np.zeros((2, h * w), np.float32)
    fp[0, [5 * w + 5, 5 * w + 6]] = [1.0, 0.5]
    fp[1, [15 * w + 15, 5 * w + 6]] = [1.0, 1.0]
    outlines = [
        np.array([[4, 4], [4, 7], [6, 7], [6, 4]], np.float32),
        np.array([[14, 14], [14, 16], [16, 16]], np.float32),
    ]
    c = MapCanvas(sp.csr_matrix(fp), outlines, h, w)
    c.set_base(np.full((h, w), 100, np.uint8))
    return c


def test_map_canvas_owner_pick_and_incremental_repaint():
    c = _canvas()
    assert c.owner[5, 5] == 0 and c.owner[15, 15] == 1
    assert sorted(c.candidates_at(5, 6)) == [0, 1]
    lut = render.candidate_colours(np.array([0, 0], np.int8), None)
    assert c.set_colours(lut) == 2
    assert tuple(c.rgb[4, 4]) == render.COLOURS["unlabelled"]
    before = c.rgb.copy()
    lut2 = render.candidate_colours(np.array([1, 0], np.int8), None)
    assert c.set_colours(lut2) == 1  # only candidate 0 repainted
    assert tuple(c.rgb[4, 4]) == render.COLOURS["human_cell"]
    far = (c.owner != 0) & (c.line != 0)
    assert np.array_equal(c.rgb[far], before[far])
    # Painting from scratch gives the same picture as the incremental update.
    fresh = _canvas()
    fresh.set_colours(lut2)
    assert np.array_equal(fresh.rgb, c.rgb)


def test_candidate_colours_hide_and_select():
    lut = render.candidate_colours(
        np.array([1, -1, 0], np.int8), np.array([1, 1, -1], np.int8), selected=[2], hide_cells=True
    )
    assert lut[0, 3] < 0 and tuple(lut[1, :3]) == render.COLOURS["human_not"]
    assert tuple(lut[2, :3]) == render.COLOURS["selected"]


def test_panels_shapes():
    snaps = np.random.default_rng(0).random((5, 11, 12, 10)).astype(np.float32)
    ev = np.array([30, 40, -1, -1, -1])
    out = render.snapshot_strip(
        snaps,
        ev,
        (0, 12, 0, 10),
        np.array([[2, 2], [2, 6], [6, 6]]),
        [],
        None,
        panel_px=100,
        gap_px=4,
    )
    assert out.shape == (100, 5 * 100 + 4 * 4, 3)
    tr = render.trace_plot(np.sin(np.arange(5000) / 50.0), ev, width=400, height=100)
    assert tr.shape == (100, 400, 3) and (tr < 50).any()  # black line drawn
    et = render.event_trace_strip(np.arange(100.0), ev, panel_px=80, height=60, gap_px=2)
    assert et.shape == (60, 5 * 80 + 4 * 2, 3)


def test_stability_tracker_fires_only_when_decisions_settle():
    tr = progress.StabilityTracker(window=3, churn_tol=0.1, min_labels=4)
    d = np.ones(100, np.int8)
    for k in range(3):
        tr.before_label(1, 1 if k % 2 else -1)
        d = d.copy()
        d[k * 20 : (k + 1) * 20] = -1  # 20 % of decisions flip per label
        tr.after_label(d, k + 1)
    assert tr.state().churn is None
    tr.after_label(d, 4)
    assert tr.state().churn == pytest.approx(0.4) and not tr.state().stable
    for k in range(3):
        tr.after_label(d, 5 + k)
    st = tr.state()
    assert st.churn == 0.0 and st.stable and "STABLE" in st.text()
    # Prequential BA: decisions 1 for labels -1, 1, -1 -> TPR 1, TNR 0.
    assert st.prequential_ba == pytest.approx(0.5)


def test_stability_tracker_rejects_bad_arguments():
    with pytest.raises(ValueError, match="window"):
        progress.StabilityTracker(window=0)
    with pytest.raises(ValueError, match="churn_tol"):
        progress.StabilityTracker(churn_tol=2.0)


def test_counts_and_contributions():
    c = progress.counts(np.array([1, -1, 0, 0], np.int8), np.array([-1, 1, 1, -1], np.int8))
    assert c["human"] == {"cell": 1, "not": 1, "unlabelled": 2}
    assert c["model"]["cell"] == 2 and c["overall"] == {"cell": 2, "not": 2, "unlabelled": 0}
    top = top_contributions(
        np.array([0.0, 2.0, -1.0]), np.array([5.0, 1.0, 3.0]), ["a", "b", "c"], k=2
    )
    assert [t[0] for t in top] == ["c", "b"] and top[0][2] == pytest.approx(-3.0)
    with pytest.raises(ValueError, match="entries"):
        top_contributions(np.zeros(2), np.zeros(3), ["a"])
    assert progress.labelling_speed([0.0, 1.0, 2.0]) == pytest.approx(60.0)


def test_map_canvas_small_change_path_matches_full_repaint():
    rng = np.random.default_rng(3)
    h = w = 60
    n = 40
    fp = sp.random(n, h * w, density=0.01, random_state=4, format="csr", dtype=np.float32)
    outlines = [rng.uniform(0, 59, (6, 2)).astype(np.float32) for _ in range(n)]
    c = MapCanvas(fp, outlines, h, w)
    c.set_base(np.full((h, w), 90, np.uint8))
    human = np.zeros(n, np.int8)
    c.set_colours(render.candidate_colours(human, None))
    human[[3, 17]] = [1, -1]  # 2 of 40 changed: the grouped-gather path
    lut = render.candidate_colours(human, None)
    assert c.set_colours(lut) == 2
    fresh = MapCanvas(fp, outlines, h, w)
    fresh.set_base(np.full((h, w), 90, np.uint8))
    fresh.set_colours(lut)
    assert np.array_equal(fresh.rgb, c.rgb)


def test_truth_report_known_answer():
    truth = np.array([1, 1, 1, 1, -1, -1, -1, -1], np.int8)
    human = np.array([1, -1, 0, 0, -1, 0, 0, 1], np.int8)  # 4 labelled, 2 agree
    model = np.array([1, 1, -1, -1, -1, -1, 1, 1], np.int8)
    final = np.where(human != 0, human, model)  # [1,-1,-1,-1,-1,-1,1,1]
    r = progress.truth_report(human, final, model, truth)
    h, f, m = r["human"], r["final"], r["model"]
    assert r["n"] == 8 and h["n_labelled"] == 4 and h["agreement"] == 0.5
    assert h["tpr"] == 0.5 and h["tnr"] == 0.5 and h["ba"] == 0.5 and h["fp"] == 1
    assert f["tpr"] == 0.25 and f["tnr"] == 0.5 and f["ba"] == 0.375
    assert (f["fp"], f["fn"]) == (2, 3) and f["accuracy"] == 3 / 8
    assert m["tpr"] == 0.5 and m["tnr"] == 0.5 and m["ba"] == 0.5
    assert progress.truth_report(human, final, None, truth)["model"] is None
    # A class absent among the human labels: its rate and the balanced accuracy are None.
    only_cells = np.array([1, 0, 0, 0, 0, 0, 0, 0], np.int8)
    h1 = progress.truth_report(only_cells, final, model, truth)["human"]
    assert h1["tpr"] == 1.0 and h1["tnr"] is None and h1["ba"] is None
    np.testing.assert_array_equal(progress.error_kinds(final, truth), [0, -1, -1, -1, 0, 0, 1, 1])


def test_truth_report_rejects_bad_input():
    a = np.ones(4, np.int8)
    with pytest.raises(ValueError, match="equal-length"):
        progress.truth_report(a, a, None, np.ones(3, np.int8))
    with pytest.raises(ValueError, match="only \\+1 / -1"):
        progress.truth_report(a, a, None, np.array([1, 0, -1, 1], np.int8))
    with pytest.raises(ValueError, match="shape"):
        progress.binary_scores(a, np.ones(3))


def test_error_colours_and_encoding():
    human = np.array([1, 0, 0], np.int8)
    lut = render.candidate_colours(
        human, np.array([1, 1, -1], np.int8), errors=np.array([0, 1, -1], np.int8)
    )
    assert tuple(lut[1, :3]) == render.COLOURS["false_pos"]
    assert tuple(lut[2, :3]) == render.COLOURS["false_neg"]
    assert tuple(lut[0, :3]) == render.COLOURS["human_cell"]
    img = np.zeros((20, 30, 3), np.uint8)
    img[5:10, 5:25] = (200, 40, 40)
    data, ext = render.encode_image(img, "map")
    assert ext == "jpg" and data[:2] == b"\xff\xd8"
    data, ext = render.encode_image(img, "panel")
    assert ext == "png" and data[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="kind"):
        render.encode_image(img, "poster")
    assert render.fingerprint(img) == render.fingerprint(img.copy())
    img2 = img.copy()
    img2[0, 0, 0] = 1
    assert render.fingerprint(img) != render.fingerprint(img2)
    assert render.fingerprint(img) != render.fingerprint(img.reshape(30, 20, 3))


def test_map_canvas_many_changes_match_full_repaint():
    """Outline-only changes (decision flips), fill changes, hiding and unhiding, in one table
    change and in sequence: the incremental canvas equals a fresh paint every time."""
    rng = np.random.default_rng(5)
    h, w, n = 50, 70, 60
    fp = sp.random(n, h * w, density=0.02, random_state=6, format="csr", dtype=np.float32)
    outlines = [rng.uniform(0, 49, (7, 2)).astype(np.float32) for _ in range(n)]
    base = rng.integers(0, 255, (h, w)).astype(np.uint8)
    c = MapCanvas(fp, outlines, h, w)
    c.set_base(base)
    human = np.zeros(n, np.int8)
    dec = np.where(rng.random(n) > 0.5, 1, -1).astype(np.int8)
    c.set_colours(render.candidate_colours(human, dec))
    for step in range(4):
        dec = np.where(rng.random(n) > 0.5, 1, -1).astype(np.int8)  # many flips
        human[rng.choice(n, 5, replace=False)] = rng.choice([-1, 0, 1], 5)
        lut = render.candidate_colours(
            human, dec, hide_cells=step == 1, hide_not=step == 2, selected=(step, step + 1)
        )
        c.set_colours(lut)
        fresh = MapCanvas(fp, outlines, h, w)
        fresh.set_base(base)
        fresh.set_colours(lut)
        assert np.array_equal(fresh.rgb, c.rgb), step
