"""Page handlers called directly (no browser, no server) on a small synthetic store."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from ui_fixtures import make_test_store

from actsort_gpu import CELL, NOT_CELL, UNLABELLED
from actsort_gpu.store import StoreError
from actsort_gpu.ui import handlers as H
from actsort_gpu.ui import open_workspace, render
from actsort_gpu.ui.session import CLICK_MODES, ViewState


@pytest.fixture
def ws(tmp_path):
    path = make_test_store(tmp_path, n=40)
    w = open_workspace([path], annotator="tester")
    yield w
    w.close()


def _truth(ws):
    return ws.stores[0].store.read("truth/labels")


def _journal(ws):
    path = ws.paths[0] / "labels" / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_load_label_and_journal_first(ws):
    st, p = H.on_load(ws, ViewState())
    assert 0 <= st.current < 40
    assert p.map.ndim == 3 and p.snapshots.shape[0] == H.PANEL_PX
    first = st.current
    st, p = H.on_label(ws, st, CELL)
    lines = _journal(ws)
    assert lines[-1]["candidate"] == first and lines[-1]["label"] == 1
    assert lines[-1]["annotator"] == "tester"
    assert st.current != first and "Saved" in p.status
    assert ws.human(0)[first] == CELL


def test_label_rejects_bad_value_without_losing_labels(ws):
    st, _ = H.on_load(ws, ViewState())
    st, _ = H.on_label(ws, st, NOT_CELL)
    with pytest.raises(ValueError, match="label"):
        H.on_label(ws, st, 7)
    assert (ws.human(0) != 0).sum() == 1


def test_undo_redo_and_history_navigation(ws):
    st, _ = H.on_load(ws, ViewState())
    truth = _truth(ws)
    done = []
    for _ in range(8):
        done.append(st.current)
        st, _ = H.on_label(ws, st, int(truth[st.current]))
    st, p = H.on_undo(ws, st)
    assert st.current == done[-1] and ws.human(0)[done[-1]] == UNLABELLED
    st, p = H.on_redo(ws, st)
    assert ws.human(0)[done[-1]] == truth[done[-1]]
    # Previous walks back along the labelling order, Next forward again.
    st, _ = H.on_jump(ws, st, int(np.flatnonzero(ws.human(0) == 0)[0]))
    st, _ = H.on_prev(ws, st)
    assert st.current == done[-1]
    st, _ = H.on_prev(ws, st)
    assert st.current == done[-2]
    st, _ = H.on_next(ws, st)
    assert st.current == done[-1]
    # Re-labelling a candidate does not duplicate it in the history (ActSort B18).
    st, _ = H.on_jump(ws, st, done[0])
    st, _ = H.on_label(ws, st, int(truth[done[0]]))
    order = ws.labelled_order(0)
    assert len(order) == len(set(order)) == 8 and order[-1] == done[0]


def test_unlabel_stays_on_candidate(ws):
    st, _ = H.on_load(ws, ViewState())
    cur = st.current
    st, _ = H.on_label(ws, st, CELL)
    st, _ = H.on_jump(ws, st, cur)
    st, _ = H.on_label(ws, st, UNLABELLED)
    assert st.current == cur and ws.human(0)[cur] == 0


def test_click_selects_candidate_under_cursor_with_rows_and_cols_not_swapped(ws):
    st, _ = H.on_load(ws, ViewState())
    s = ws.stores[0]
    # Pick a candidate whose row and column differ a lot, so a swap would miss it.
    k = int(np.argmax(np.abs(s.centers[:, 0] - s.centers[:, 1])))
    win = H.map_window(ws, st)
    r, c = s.centers[k]
    x, y = (c - win.col0 + 0.5) * win.scale, (r - win.row0 + 0.5) * win.scale
    st, _ = H.on_click(ws, st, x, y)
    assert st.current == k


def test_box_selection_labels_all_inside(ws):
    st, _ = H.on_load(ws, ViewState())
    st, _ = H.on_view(ws, st, "max", 1, 99.7, 0, True, click_mode=CLICK_MODES[2])
    win = H.map_window(ws, st)
    st, p = H.on_click(ws, st, 0, 0)
    assert st.box_corner == (0, 0) and "corner" in p.status
    st, p = H.on_click(ws, st, 48 * win.scale, 48 * win.scale)
    s = ws.stores[0]
    inside = np.flatnonzero((s.centers[:, 0] <= 48) & (s.centers[:, 1] <= 48))
    assert set(st.selected) == set(inside.tolist()) and len(inside) > 1
    st, _ = H.on_label(ws, st, NOT_CELL)
    assert (ws.human(0)[inside] == NOT_CELL).all() and st.selected == ()


def test_threshold_relabels_decisions_and_strategy_modes(ws):
    st, _ = H.on_load(ws, ViewState())
    truth = _truth(ws)
    for _ in range(10):
        st, _ = H.on_label(ws, st, int(truth[st.current]))
    H.on_threshold(ws, st, 0.0)
    _, dec = ws.model(0)
    assert (dec > 0).all()
    st, p = H.on_threshold(ws, st, 1.0)
    _, dec = ws.model(0)
    assert (dec < 0).all() and "Threshold" in p.status
    H.on_threshold(ws, st, 0.5)
    st, _ = H.on_strategy(ws, st, "Audit: predicted cells", 0.5)
    st, _ = H.on_next(ws, st)
    p_cell, dec = ws.model(0)
    assert ws.human(0)[st.current] == 0 and dec[st.current] > 0
    with pytest.raises(ValueError, match="strategy"):
        H.on_strategy(ws, st, "nonsense", 0.5)


def test_view_contrast_sliders_cannot_cross_and_jump_errors(ws):
    st, _ = H.on_load(ws, ViewState())
    st, _ = H.on_view(ws, st, "corr", 60, 40, 50, False)
    assert st.lo_pct < st.hi_pct and st.image == "corr"
    st2, p = H.on_jump(ws, st, 999)
    assert "out of range" in p.status and st2.current == st.current
    st2, p = H.on_jump(ws, st, "abc")
    assert "expected" in p.status


def test_playback_steps_frames(ws):
    st, _ = H.on_load(ws, ViewState())
    st, _ = H.on_play(ws, st)
    assert st.playing
    st, snaps, evt = H.on_tick(ws, st)
    assert st.frame == 1 and snaps is not None and evt is not None
    st, _ = H.on_play(ws, st)
    assert H.on_tick(ws, st)[1] is None


def test_position_resumes_after_reopen(tmp_path):
    path = make_test_store(tmp_path, n=30)
    ws = open_workspace([path])
    st, _ = H.on_load(ws, ViewState())
    st, _ = H.on_label(ws, st, CELL)
    where = st.current
    labels = ws.human(0).copy()
    ws.close()
    ws = open_workspace([path])
    st, p = H.on_load(ws, ViewState())
    assert st.current == where and np.array_equal(ws.human(0), labels)
    assert "1 labels" in p.status
    ws.close()


def test_two_stores_and_concurrent_tabs(tmp_path):
    a = make_test_store(tmp_path, n=20, name="a.actsort", seed=1)
    b = make_test_store(tmp_path, n=25, name="b.actsort", seed=2)
    ws = open_workspace([a, b])
    st1, _ = H.on_load(ws, ViewState())
    st2, _ = H.on_store(ws, ViewState(), "b.actsort")
    assert st2.store == 1 and 0 <= st2.current < 25
    # the << / >> buttons step the drop-down through the stores, wrapping around
    assert H.step_store(ws, "a.actsort", +1) == "b.actsort"
    assert H.step_store(ws, "b.actsort", +1) == "a.actsort"
    assert H.step_store(ws, "a.actsort", -1) == "b.actsort"
    assert H.step_store(ws, "gone.actsort", -1) == "a.actsort"
    errors = []

    def tab(st, n):
        try:
            for _ in range(n):
                st, _ = H.on_label(ws, st, CELL if st.current % 2 else NOT_CELL)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=tab, args=(st1, 6)),
        threading.Thread(target=tab, args=(st2, 6)),
    ]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert (ws.human(0) != 0).sum() == 6 and (ws.human(1) != 0).sum() == 6
    ws.close()
    lines_b = (b / "labels" / "journal.jsonl").read_text().splitlines()
    assert len(lines_b) == 6 and all(json.loads(x)["dataset"] == "b.actsort" for x in lines_b)


def test_open_workspace_errors(tmp_path):
    a = make_test_store(tmp_path, n=10)
    with pytest.raises(ValueError, match="twice"):
        open_workspace([a, a])
    with pytest.raises(ValueError, match="no sort store"):
        open_workspace([])


def test_box_label_is_undone_and_redone_as_one_action(ws):
    st, _ = H.on_load(ws, ViewState())
    single = st.current
    st, _ = H.on_label(ws, st, CELL)
    st, _ = H.on_view(ws, st, "max", 1, 99.7, 0, True, click_mode=CLICK_MODES[2])
    win = H.map_window(ws, st)
    st, _ = H.on_click(ws, st, 0, 0)
    st, _ = H.on_click(ws, st, 60 * win.scale, 60 * win.scale)
    box = [c for c in st.selected if c != single]
    st = st.with_(selected=tuple(box))
    assert len(box) > 2
    st, _ = H.on_label(ws, st, NOT_CELL)
    assert (ws.human(0)[box] == NOT_CELL).all()
    st, p = H.on_undo(ws, st)
    assert (ws.human(0)[box] == UNLABELLED).all() and ws.human(0)[single] == CELL
    assert f"{len(box)} candidates of a group label are now {len(box)} unlabelled" in p.status
    st, p = H.on_redo(ws, st)
    assert (ws.human(0)[box] == NOT_CELL).all()
    assert f"{len(box)} candidates of a group label are now {len(box)} not a cell" in p.status
    st, _ = H.on_undo(ws, st)
    # a group that held a cell: each candidate goes back to its own label, and the status
    # says so rather than naming the shown candidate's label for all of them
    st = st.with_(selected=(single, *box))
    st, _ = H.on_label(ws, st, NOT_CELL)
    st, p = H.on_undo(ws, st)
    assert ws.human(0)[single] == CELL and (ws.human(0)[box] == UNLABELLED).all()
    assert f"are now 1 cell, {len(box)} unlabelled" in p.status
    st, p = H.on_undo(ws, st)  # the single label before the box
    assert ws.human(0)[single] == UNLABELLED and f"candidate {single} is now unlabelled" in p.status
    assert [x["origin"] for x in _journal(ws)].count("undo") == 3 * len(box) + 2


def test_truth_comparison_hidden_until_asked(ws):
    st, _ = H.on_load(ws, ViewState())
    truth = _truth(ws)
    assert ws.has_truth()
    for _ in range(6):
        st, _ = H.on_label(ws, st, int(truth[st.current]))
    # The error colours need the comparison first.
    st2, p = H.on_errors(ws, st, True)
    assert not st2.show_errors and "Compare with truth first" in p.status
    st, report = H.on_truth(ws, st)
    assert st.truth_shown and "balanced accuracy" in report
    assert "6 (100.0 % right)" in report
    H.on_threshold(ws, st, 0.0)  # every unlabelled candidate called a cell
    fp_col, fn_col = (np.array(H.render.COLOURS[k]) for k in ("false_pos", "false_neg"))
    st_off, p_off = H.on_errors(ws, st, False)
    st, p = H.on_errors(ws, st, True)
    assert st.show_errors
    n_fp = int(((ws.human(0) == 0) & (truth < 0)).sum())
    assert n_fp > 0 and (p.map == fp_col).all(-1).sum() >= n_fp  # outline pixels
    assert not (p.map == fn_col).all(-1).any()  # no false negatives
    assert not (p_off.map == fp_col).all(-1).any()


def test_store_without_truth(tmp_path):
    from actsort_gpu.store import SortStore

    path = make_test_store(tmp_path, n=12)
    store = SortStore.open(path, "r+")
    store.write_array("truth/labels", np.zeros(12, np.int8), dims=["candidates"])  # malformed
    w = open_workspace([path])
    try:
        assert not w.has_truth()
        st, report = H.on_truth(w, ViewState(current=0))
        assert not st.truth_shown and "no truth" in report
    finally:
        w.close()


def test_box_label_undone_as_one_action_after_a_restart(tmp_path):
    path = make_test_store(tmp_path, n=40)
    w = open_workspace([path], annotator="tester")
    st, _ = H.on_load(w, ViewState())
    st, _ = H.on_label(w, st, CELL)  # an earlier single label
    single = int(np.flatnonzero(w.human(0))[0])
    box = [int(i) for i in np.flatnonzero(w.human(0) == 0)[:5]]
    st, _ = H.on_label(w, st.with_(selected=tuple(box)), NOT_CELL)
    assert (w.human(0)[box] == NOT_CELL).all()
    w.close()
    w = open_workspace([path], annotator="tester")  # server restart
    try:
        st, _ = H.on_load(w, ViewState())
        st, p = H.on_undo(w, st)  # one Z
        assert (w.human(0)[box] == UNLABELLED).all() and w.human(0)[single] == CELL
        assert "5 candidates" in p.status
        st, p = H.on_redo(w, st)
        assert (w.human(0)[box] == NOT_CELL).all()
    finally:
        w.close()
    lines = [json.loads(x) for x in (path / "labels" / "journal.jsonl").read_text().splitlines()]
    assert len({x["action"] for x in lines[1:6]}) == 1 and lines[1]["action_size"] == 5


def test_a_finished_store_never_leaves_the_page_empty(tmp_path):
    """The page opened on a fully labelled first store with empty panels and "All candidates
    of this store are labelled", though the second store had work left; the last label of a
    store emptied the panels too. Now it opens on a store with work left, stays on the
    candidate just labelled, says what is left where, and a fully labelled page shows the
    last label for review."""
    a = make_test_store(tmp_path, n=12, name="a.actsort", seed=1)
    b = make_test_store(tmp_path, n=12, name="b.actsort", seed=2)
    w = open_workspace([a, b], annotator="tester")
    try:
        truth = w.stores[0].store.read("truth/labels")
        w.label(0, range(12), CELL)
        w.label(0, [int(i) for i in np.flatnonzero(truth < 0)], NOT_CELL)
        st, p = H.on_load(w, ViewState())
        assert st.store == 1 and st.current >= 0
        assert "a.actsort is fully labelled: showing b.actsort" in p.status
        # label b to the end: the last label stays on screen, the status says all is done
        for _ in range(12):
            st, p = H.on_label(w, st, CELL)
        assert st.current >= 0 and (w.human(1) != 0).all()
        assert "All 12 candidates of b.actsort are labelled: ← / → walk your labels" in p.status
        # a mode with nothing left, while candidates remain unlabelled elsewhere in the mode
        w.label(1, [3], UNLABELLED)
        st, _ = H.on_strategy(w, st, "Review: unsure candidates", 0.5)
        st, p = H.on_next(w, st.with_(history_pos=None))
        assert st.current == -1 and "No candidate left in this mode (1 still unlabelled)" in (
            p.status
        )
        # opened when everything is labelled: the last label, for review
        w.label(1, [3], CELL)
        st, p = H.on_load(w, ViewState())
        assert st.current >= 0 and st.history_pos is not None
        assert "are labelled" in p.status
    finally:
        w.close()


def test_load_labels_from_a_file_and_from_an_earlier_store(ws, tmp_path):
    """The MATLAB app's Load labels in the page: a label file by extraction row, then an
    earlier store matched by footprints; only unlabelled candidates take a label, the current
    one moves on when it took one, Z reverts the whole import, and a bad path changes
    nothing."""
    import shutil

    from actsort_gpu.labels import Journal

    st, _ = H.on_load(ws, ViewState(), tab="t1")
    first = st.current
    st, _ = H.on_label(ws, st, NOT_CELL)  # a label the file disagrees with: kept
    truth = _truth(ws)
    file_labels = np.zeros(40, np.int8)
    rows = [first, st.current, *range(0, 10)]
    rows = list(dict.fromkeys(rows))
    file_labels[rows] = truth[rows]
    file_labels[first] = CELL
    np.save(tmp_path / "old_labels.npy", file_labels)
    shown = st.current
    lines_before = len(_journal(ws))

    st, p = H.on_load_labels(ws, st, f'  "{tmp_path / "old_labels.npy"}" ')
    n_new = len(rows) - 1
    assert f"{n_new} labels imported" in p.status and "1 kept" in p.status, p.status
    assert "Z undoes it" in p.status
    assert ws.human(0)[first] == NOT_CELL  # never over a label the store has
    np.testing.assert_array_equal(ws.human(0)[rows[1:]], truth[rows[1:]])
    assert st.current != shown and ws.human(0)[st.current] == UNLABELLED  # moved on
    new_lines = _journal(ws)[lines_before:]
    assert {x["origin"] for x in new_lines} == {"import"} and len(new_lines) == n_new
    assert {x["annotator"] for x in new_lines} == {"import:old_labels.npy"}

    st, p = H.on_undo(ws, st)  # the whole import, one action
    assert f"{n_new} candidates of a group label are now {n_new} unlabelled" in p.status
    assert (ws.human(0) != 0).sum() == 1 and ws.human(0)[first] == NOT_CELL

    # an earlier store of the recording (same footprints): labels carried by overlap
    earlier = tmp_path / "earlier.actsort"
    shutil.copytree(ws.paths[0], earlier, ignore=shutil.ignore_patterns("labels"))
    with Journal(earlier / "labels" / "journal.jsonl", dataset=earlier.name) as j:
        j.append_many(earlier.name, [11, 12, 13], [int(truth[c]) for c in (11, 12, 13)], "old")
    st, p = H.on_load_labels(ws, st, str(earlier))
    assert "3 labels imported" in p.status and "median IoU 1.00" in p.status, p.status
    np.testing.assert_array_equal(ws.human(0)[[11, 12, 13]], truth[[11, 12, 13]])

    before = ws.human(0).copy()
    for source, message in [
        ("", "type the path of a label file"),
        (str(tmp_path / "missing_LABELS.mat"), "missing_LABELS.mat: not found"),
        (str(tmp_path / "nowhere.actsort"), "nowhere.actsort: no such sort store"),
        (str(tmp_path), "not a sort store"),
        (str(ws.paths[0]), "the store the labels would go to"),
    ]:
        st, p = H.on_load_labels(ws, st, source)
        assert message in p.status, p.status
        assert "Loaded" not in p.status
    np.testing.assert_array_equal(ws.human(0), before)
    # an empty path names the journal copies a sync left in the store's labels/ folder
    copy = ws.paths[0] / "labels" / "journal (conflicted copy).jsonl"
    copy.write_bytes(b"")
    st, p = H.on_load_labels(ws, st, "")
    assert f"This store holds another journal to merge: {copy}." in p.status, p.status
    copy.unlink()


def test_snapshot_contrast_sliders(ws):
    """ActSort's snapshot contrast sliders: the black and white points are percentiles of the
    candidate's snapshot values (default 10 and 99.9); they cannot cross; the map is left as
    it was."""
    from actsort_gpu.ui.layout import PLAYBACK_SPEEDS, _speed_name

    st, p = H.on_load(ws, ViewState())
    assert (st.snap_lo_pct, st.snap_hi_pct) == (10.0, 99.9)
    st2, p2 = H.on_snapshot_contrast(ws, st, 0.0, 100.0)
    assert (st2.snap_lo_pct, st2.snap_hi_pct) == (0.0, 100.0)
    assert not np.array_equal(p.snapshots, p2.snapshots)  # a wider range: greyer panels
    np.testing.assert_array_equal(p.map, p2.map)
    st3, p3 = H.on_snapshot_contrast(ws, st2, 60.0, 55.0)  # crossed: white moves above black
    assert st3.snap_lo_pct < st3.snap_hi_pct and st3.snap_lo_pct <= 60.0
    st4, p4 = H.on_snapshot_contrast(ws, st3, 10.0, 99.9)
    np.testing.assert_array_equal(p4.snapshots, p.snapshots)
    assert _speed_name(0.15) == "Moderate" and PLAYBACK_SPEEDS[_speed_name(0.21)] == 0.2


def test_hide_all_outlines_leaves_the_image_and_the_current_candidate(ws):
    """ActSort's "NO BORDER": with every outline hidden the map is the image itself apart from
    the current candidate's marker and the selection; clicks still select."""
    st, _ = H.on_load(ws, ViewState())
    args = ("max", 1.0, 99.7, 0, True, False, False, CLICK_MODES[0])
    st, shown = H.on_view(ws, st, *args)
    st2, bare = H.on_view(ws, st, *args, True)
    assert st2.hide_outlines and not np.array_equal(shown.map, bare.map)
    st3, bare_elsewhere = H.on_jump(ws, st2, (st2.current + 1) % 40)
    changed = np.any(bare.map != bare_elsewhere.map, axis=-1)
    assert 0 < changed.mean() < 0.05  # only the two candidates' markers moved
    s = ws.stores[0]
    k = (st3.current + 7) % 40
    win = H.map_window(ws, st3)
    r, c = s.centers[k]
    st4, _ = H.on_click(ws, st3, (c - win.col0 + 0.5) * win.scale, (r - win.row0 + 0.5) * win.scale)
    assert st4.current == k  # a click on a hidden outline still selects it
    st5, back = H.on_view(ws, st4, *args, False)
    assert not st5.hide_outlines


def test_fill_opacity_slider(ws):
    """ActSort's transparency slider: 0 leaves the outlines of your labels unfilled, 1 fills
    them twice as strongly as the default 0.5; only the labelled candidates' pixels change."""
    st, _ = H.on_load(ws, ViewState())
    st, _ = H.on_label(ws, st, CELL)
    args = ("max", 1.0, 99.7, 0, True, False, False, CLICK_MODES[0], False)
    maps = {f: H.on_view(ws, st, *args, f)[1].map.astype(int) for f in (0.0, 0.5, 1.0)}
    _, default = H.on_view(ws, st, *args)
    np.testing.assert_array_equal(default.map, maps[0.5])
    changed = np.any(maps[0.0] != maps[1.0], axis=-1)
    assert 0 < changed.mean() < 0.05
    # the fill is green: stronger fill, greener pixels where they differ
    green = maps[1.0][..., 1] - maps[1.0][..., 0] - (maps[0.0][..., 1] - maps[0.0][..., 0])
    assert green[changed].mean() > 0


def test_outline_colour_choice(ws):
    """ActSort's cell border colour: the unlabelled candidates' outlines on the map and the
    neighbours' outlines in the snapshots take the chosen colour; labelled ones keep theirs;
    an unknown name keeps the current colour."""
    st, _ = H.on_load(ws, ViewState())
    st, _ = H.on_label(ws, st, CELL)
    args = ("max", 1.0, 99.7, 0, False, False, False, CLICK_MODES[0], False, 0.5)
    st, blue = H.on_view(ws, st, *args)
    st2, pink = H.on_view(ws, st, *args, "Pink")
    assert st2.border == "Pink" and st.border == "Light blue"
    pink_rgb = np.array(render.BORDER_COLOURS["Pink"])
    assert not np.any(np.all(blue.map == pink_rgb, axis=-1))
    assert np.all(pink.map == pink_rgb, axis=-1).sum() > 100  # outline pixels
    assert not np.array_equal(blue.snapshots, pink.snapshots)  # the neighbours' outlines
    human = np.array([1, -1, 0, 0], np.int8)
    lut = render.candidate_colours(human, None, border=render.BORDER_COLOURS["Black"])
    assert np.all(lut[human == 0, :3] == 0) and np.all(lut[human > 0, :3] != 0)
    st3, _ = H.on_view(ws, st2, *args, "Mauve")
    assert st3.border == "Pink"


def test_the_page_refuses_a_store_copied_in_part(tmp_path):
    """A store whose traces lost a chunk file (an interrupted copy) is refused when the page
    opens, naming the array, instead of showing flat traces at some candidate."""
    path = make_test_store(tmp_path, n=20)
    next(p for p in (path / "candidates" / "traces" / "c").rglob("*") if p.is_file()).unlink()
    with pytest.raises(StoreError, match="'candidates/traces' is damaged"):
        open_workspace([path])
