"""A real browser (headless Debian Chromium through Playwright) on a store built from the
neurofinder crop: label with the arrow keys, undo with Z, reload the tab, check the journal.

Screenshots of each step go to artifacts/browser/ (gitignored). Needs /usr/bin/chromium
(`apt-get install chromium`; never `playwright install`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def neurofinder_store(tmp_path_factory, shared_data):
    from actsort_gpu.features import compute_features
    from actsort_gpu.ingest import ingest_files
    from actsort_gpu.preprocess import preprocess

    src = shared_data / "neurofinder_crop"
    out = tmp_path_factory.mktemp("browser") / "neurofinder.actsort"
    ingest_files(src / "movie.tif", src / "suite2p", out)
    preprocess(out, device="cpu", progress=False)
    compute_features(out, device="cpu", progress=False)
    return out


@contextlib.contextmanager
def _served(store: Path | list[Path], **options):
    """(port, workspace) of a page serving ``store`` (or several) in this process, closed
    afterwards."""
    from actsort_gpu.config import load_config
    from actsort_gpu.ui import serve

    port = _free_port()
    stores = store if isinstance(store, list) else [store]
    demo, ws = serve(
        stores, port=port, prevent_thread_lock=True, quiet=True, config=load_config(), **options
    )
    try:
        yield port, ws
    finally:
        demo.close()
        ws.close()


def _index(page) -> str:
    return page.locator("#as-index input").input_value()


def _press_and_wait(page, key: str, status_word: str) -> float:
    """Press ``key``; wait until the status shows ``status_word`` and every image has loaded.
    Returns milliseconds from the key press to the fully shown page."""
    page.evaluate(
        "() => { const s = document.querySelector('#as-status');"
        " if (s) s.setAttribute('data-old', s.innerText); }"
    )
    t0 = time.perf_counter()
    page.keyboard.press(key)
    page.wait_for_function(
        """(word) => {
            const s = document.querySelector('#as-status');
            if (!s || !s.innerText.includes(word) || s.innerText === s.getAttribute('data-old'))
                return false;
            if (document.querySelector('.progress-text, .eta-bar')) return false;
            return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=status_word,
        timeout=20000,
    )
    return 1e3 * (time.perf_counter() - t0)


def test_keyboard_labelling_undo_reload(neurofinder_store, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (never playwright install)")
    from playwright.sync_api import sync_playwright

    from actsort_gpu.config import load_config
    from actsort_gpu.ui import serve

    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    port = _free_port()
    demo, ws = serve(
        [neurofinder_store],
        port=port,
        prevent_thread_lock=True,
        quiet=True,
        annotator="browser",
        config=load_config(),
        export_dir=tmp_path / "exports",
    )
    timings = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1150})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function(
                "() => { const s = document.querySelector('#as-status');"
                " return s && s.innerText.includes('Resumed') &&"
                " Array.from(document.images).every(i => i.complete && i.naturalWidth > 0); }",
                timeout=30000,
            )
            page.screenshot(path=str(ARTIFACTS / "01_opened.png"), full_page=True)
            labelled = []
            for k, key in enumerate(["ArrowUp", "ArrowDown", "ArrowDown", "ArrowUp", "ArrowDown"]):
                labelled.append(int(_index(page)))
                timings.append(_press_and_wait(page, key, "Saved"))
                page.screenshot(path=str(ARTIFACTS / f"02_label_{k + 1}_{key}.png"), full_page=True)
            assert int(_index(page)) not in labelled
            _press_and_wait(page, "z", "Undo")
            page.screenshot(path=str(ARTIFACTS / "03_undo.png"), full_page=True)
            assert int(_index(page)) == labelled[-1]
            # Reload the tab: the page resumes at the same candidate with the same labels.
            page.reload()
            page.wait_for_function(
                "() => { const s = document.querySelector('#as-status');"
                " return s && s.innerText.includes('Resumed: 4 labels'); }",
                timeout=30000,
            )
            page.wait_for_function(
                "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
            )
            page.screenshot(path=str(ARTIFACTS / "04_reloaded.png"), full_page=True)
            assert int(_index(page)) == labelled[-1]
            # Box selection mode + zoom, for the record.
            page.get_by_role("tab", name="Active learning").click()
            page.screenshot(path=str(ARTIFACTS / "05_active_learning_tab.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
        ws.close()
    lines = [
        json.loads(x)
        for x in (neurofinder_store / "labels" / "journal.jsonl").read_text().splitlines()
    ]
    assert [x["origin"] for x in lines] == ["human"] * 5 + ["undo"]
    assert [x["candidate"] for x in lines[:5]] == labelled
    assert [x["label"] for x in lines[:5]] == [1, -1, -1, 1, -1]
    assert lines[5]["candidate"] == labelled[-1] and lines[5]["label"] == 0
    (ARTIFACTS / "timings_ms.json").write_text(
        json.dumps({"key_to_shown_ms": [round(t, 1) for t in timings]}, indent=1)
    )


_SCREEN_POINT = """(pt) => {
    // Screen point of map-image pixel pt (object-fit: scale-down, as Gradio's click math
    // assumes); null until the map has loaded and nothing (a progress overlay) covers it.
    const img = document.querySelector('#as-map img');
    if (!img || !img.complete || !img.naturalWidth) return null;
    const r = img.getBoundingClientRect();
    const s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight, 1);
    const x = r.left + (r.width - img.naturalWidth * s) / 2 + pt[0] * s;
    const y = r.top + (r.height - img.naturalHeight * s) / 2 + pt[1] * s;
    return document.elementFromPoint(x, y) === img ? [x, y, r.width / img.naturalWidth] : null;
}"""


def _open_page(browser, port: int):
    page = browser.new_page(viewport={"width": 1500, "height": 1150})
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_function(
        "() => { const s = document.querySelector('#as-status');"
        " return s && s.innerText.includes('Resumed') &&"
        " Array.from(document.images).every(i => i.complete && i.naturalWidth > 0); }",
        timeout=30000,
    )
    return page


def _wait_status(page, word: str) -> None:
    page.wait_for_function(
        "(w) => { const s = document.querySelector('#as-status');"
        " return s && s.innerText.includes(w); }",
        arg=word,
        timeout=20000,
    )


def test_box_label_undone_with_one_key_after_a_server_restart(neurofinder_store, tmp_path):
    """Label a box of candidates on the map, restart the server, press Z once: the whole box
    is back to its earlier labels."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (never playwright install)")
    import numpy as np
    from playwright.sync_api import sync_playwright

    from actsort_gpu.config import load_config
    from actsort_gpu.store import SortStore
    from actsort_gpu.ui import serve
    from actsort_gpu.ui.handlers import map_window
    from actsort_gpu.ui.session import ViewState

    store = SortStore.open(neurofinder_store)
    centers = store.read("candidates/centers")
    ok = np.flatnonzero(~np.isnan(centers).any(1))
    mid = np.array([store.height / 2, store.width / 2])
    seed = ok[np.argmin(((centers[ok] - mid) ** 2).sum(1))]
    near = ok[np.argsort(((centers[ok] - centers[seed]) ** 2).sum(1))[:6]]
    (r0, c0), (r1, c1) = np.floor(centers[near].min(0)), np.ceil(centers[near].max(0))
    r0, c0, r1, c1 = int(r0), int(c0), int(r1), int(c1)
    in_box = (
        (centers[:, 0] >= r0)
        & (centers[:, 0] <= r1)
        & (centers[:, 1] >= c0)
        & (centers[:, 1] <= c1)
    )
    n_box = int(in_box.sum())
    assert n_box >= 6
    journal = neurofinder_store / "labels" / "journal.jsonl"
    n_lines = len(journal.read_text().splitlines()) if journal.exists() else 0

    def corner(page, ws, row, col):
        """Click the map at the centre of FOV pixel (row, col) (zoom 0: the whole FOV)."""
        win = map_window(ws, ViewState())
        x, y = (col - win.col0 + 0.5) * win.scale, (row - win.row0 + 0.5) * win.scale
        page.evaluate(
            "() => document.querySelector('#as-map img').scrollIntoView({block: 'center'})"
        )
        cx, cy, enlarged = page.wait_for_function(
            _SCREEN_POINT, arg=[float(x), float(y)], timeout=20000
        ).json_value()
        # Gradio maps clicks right only on a map shown at most at its natural size.
        assert enlarged <= 1.0
        page.mouse.click(cx, cy)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    config = load_config()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        port = _free_port()
        demo, ws = serve(
            [neurofinder_store],
            port=port,
            prevent_thread_lock=True,
            quiet=True,
            annotator="browser",
            config=config,
            export_dir=tmp_path / "exports",
        )
        try:
            page = _open_page(browser, port)
            # No pause after the mode change: the mode travels with the click.
            page.get_by_label("Box: two corners").check()
            corner(page, ws, r0, c0)
            _wait_status(page, f"Box corner at ({r0}, {c0})")
            corner(page, ws, r1, c1)
            _wait_status(page, f"{n_box} candidates selected")
            page.screenshot(path=str(ARTIFACTS / "10_box_selected.png"), full_page=True)
            page.keyboard.press("ArrowDown")
            _wait_status(page, f"Saved: {n_box} candidates")
            page.screenshot(path=str(ARTIFACTS / "11_box_labelled.png"), full_page=True)
        finally:
            demo.close()
            ws.close()
        lines = [json.loads(x) for x in journal.read_text().splitlines()][n_lines:]
        assert len(lines) >= 5 and len({x["action"] for x in lines}) == 1
        assert lines[0]["action_size"] == len(lines) and {x["label"] for x in lines} == {-1}
        port = _free_port()  # a new server process state
        demo, ws = serve(
            [neurofinder_store],
            port=port,
            prevent_thread_lock=True,
            quiet=True,
            annotator="browser",
            config=config,
            export_dir=tmp_path / "exports",
        )
        try:
            page = _open_page(browser, port)
            page.keyboard.press("z")
            _wait_status(page, "Undo")
            page.screenshot(path=str(ARTIFACTS / "12_box_undone_after_restart.png"), full_page=True)
            human = ws.human(0)
        finally:
            demo.close()
            ws.close()
            browser.close()
    for x in lines:
        assert human[x["candidate"]] == x["previous"]
    after = [json.loads(x) for x in journal.read_text().splitlines()][n_lines + len(lines) :]
    assert [x["origin"] for x in after] == ["undo"] * len(lines)


_BOXES = """(ids) => Object.fromEntries(ids.map((id) => {
    const e = document.getElementById(id);
    if (!e) return [id, null];
    const r = e.getBoundingClientRect();
    return [id, [r.left, r.top, r.right, r.bottom]];
}))"""
EVIDENCE = ("as-map", "as-footprint", "as-snapshots", "as-trace")


def _assert_on_first_screen(page, width: int, height: int) -> dict:
    """The map and the evidence panels lie inside the viewport, without scrolling."""
    page.evaluate("() => window.scrollTo(0, 0)")
    boxes = page.evaluate(_BOXES, list(EVIDENCE))
    for name, box in boxes.items():
        assert box is not None, f"#{name} missing"
        left, top, right, bottom = box
        assert right - left > 50 and bottom - top > 50, f"#{name} collapsed: {box}"
        assert left >= 0 and top >= 0 and right <= width and bottom <= height, (
            f"#{name} {box} is not inside the {width}x{height} viewport"
        )
    return boxes


def test_first_screen_1366x768_keyboard_only_50_candidates(neurofinder_store, tmp_path):
    """Issue 15: at 1366x768 the map, footprint, snapshots and trace are on the first screen;
    50 candidates sorted with the keyboard only (arrows, U for unsure, Z to undo); after a
    reload the page and the journal hold exactly those labels. Screenshots at 1366x768 and
    1440x900 go to artifacts/browser/."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (never playwright install)")
    from playwright.sync_api import sync_playwright

    from actsort_gpu import UNSURE
    from actsort_gpu.config import load_config
    from actsort_gpu.ui import serve

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    journal = neurofinder_store / "labels" / "journal.jsonl"
    n_lines = len(journal.read_text().splitlines()) if journal.exists() else 0
    port = _free_port()
    demo, ws = serve(
        [neurofinder_store],
        port=port,
        prevent_thread_lock=True,
        quiet=True,
        annotator="keyboard",
        config=load_config(),
        export_dir=tmp_path / "exports",
    )
    labels = {int(i): int(v) for i, v in enumerate(ws.human(0))}
    labels.update({int(i): UNSURE for i in np.flatnonzero(ws.unsure(0))})
    done: list[tuple[int, int, int]] = []  # (candidate, label, previous) of each action
    keys_pressed, timings = [], []
    words = {"ArrowUp": 1, "ArrowDown": -1, "u": UNSURE}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function(
                "() => { const s = document.querySelector('#as-status');"
                " return s && s.innerText.includes('Resumed') &&"
                " Array.from(document.images).every(i => i.complete && i.naturalWidth > 0); }",
                timeout=30000,
            )
            _assert_on_first_screen(page, 1366, 768)
            page.screenshot(path=str(ARTIFACTS / "20_first_screen_1366x768.png"))
            n_sorted = 0
            step = 0
            while n_sorted < 50:
                step += 1
                if step % 9 == 0 and done:  # now and then: undo the last label with Z
                    cand, _, previous = done.pop()
                    labels[cand] = previous
                    timings.append(_press_and_wait(page, "z", "Undo"))
                    keys_pressed.append("z")
                    assert int(_index(page)) == cand  # the undone candidate is shown again
                    n_sorted -= 1
                    continue
                key = "u" if step % 7 == 0 else ("ArrowUp" if step % 3 else "ArrowDown")
                cand = int(_index(page))
                done.append((cand, words[key], labels.get(cand, 0)))
                labels[cand] = words[key]
                timings.append(_press_and_wait(page, key, "Saved"))
                keys_pressed.append(key)
                n_sorted += 1
                if n_sorted == 25:
                    _assert_on_first_screen(page, 1366, 768)
                    page.screenshot(path=str(ARTIFACTS / "21_sorting_1366x768.png"))
            shown = int(_index(page))
            page.reload()
            n_lab = sum(1 for v in labels.values() if v in (1, -1))
            page.wait_for_function(
                "(w) => { const s = document.querySelector('#as-status');"
                " return s && s.innerText.includes(w); }",
                arg=f"Resumed: {n_lab} labels",
                timeout=30000,
            )
            page.wait_for_function(
                "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
            )
            assert int(_index(page)) == shown
            _assert_on_first_screen(page, 1366, 768)
            page.screenshot(path=str(ARTIFACTS / "22_reloaded_1366x768.png"))
            wide = browser.new_page(viewport={"width": 1440, "height": 900})
            wide.goto(f"http://127.0.0.1:{port}/")
            wide.wait_for_function(
                "() => { const s = document.querySelector('#as-status');"
                " return s && s.innerText.includes('Resumed') &&"
                " Array.from(document.images).every(i => i.complete && i.naturalWidth > 0); }",
                timeout=30000,
            )
            _assert_on_first_screen(wide, 1440, 900)
            wide.screenshot(path=str(ARTIFACTS / "23_first_screen_1440x900.png"))
            browser.close()
        human, unsure = ws.human(0), ws.unsure(0)
    finally:
        demo.close()
        ws.close()
    for cand, value in labels.items():
        expected_human = value if value in (1, -1) else 0
        assert human[cand] == expected_human and unsure[cand] == (value == UNSURE), cand
    assert "z" in keys_pressed and "u" in keys_pressed and len(keys_pressed) >= 50
    lines = [json.loads(x) for x in journal.read_text().splitlines()][n_lines:]
    assert [x["origin"] for x in lines] == ["undo" if k == "z" else "human" for k in keys_pressed]
    assert all(x["annotator"] == "keyboard" for x in lines)
    assert [x["label"] for x in lines if x["origin"] == "human"] == [
        words[k] for k in keys_pressed if k != "z"
    ]
    assert UNSURE in {x["label"] for x in lines}
    (ARTIFACTS / "timings_1366x768_ms.json").write_text(
        json.dumps(
            {
                "key_to_shown_ms": [round(t, 1) for t in timings],
                "median_ms": round(float(np.median(timings)), 1),
                "p95_ms": round(float(np.percentile(timings, 95)), 1),
            },
            indent=1,
        )
    )


def test_two_tabs_undo_their_own_labels(neurofinder_store, tmp_path):
    """Two tabs of one page: each opens on its own candidate, Z in one leaves the other's
    label alone while that tab is open, and once it is closed (Gradio's unload event ends
    its session) the label is anyone's to undo."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (never playwright install)")
    from playwright.sync_api import sync_playwright

    store = tmp_path / "tabs.actsort"
    shutil.copytree(neurofinder_store, store, ignore=shutil.ignore_patterns("labels"))
    with _served(store) as (port, ws), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        a = _open_page(browser, port)
        b = _open_page(browser, port)
        shown_a, shown_b = int(_index(a)), int(_index(b))
        assert shown_a != shown_b
        a.bring_to_front()
        _press_and_wait(a, "ArrowUp", "Saved")
        b.bring_to_front()
        _press_and_wait(b, "ArrowDown", "Saved")
        a.bring_to_front()
        a.keyboard.press("z")
        _wait_status(a, "given in another open tab")
        assert ws.human(0)[shown_b] == -1
        b.close()
        time.sleep(1.0)
        deadline = time.monotonic() + 20
        while ws.human(0)[shown_b] != 0 and time.monotonic() < deadline:
            a.keyboard.press("z")  # the unload reaches the server within a moment
            time.sleep(1.0)
        assert ws.human(0)[shown_b] == 0 and ws.human(0)[shown_a] == 1
        browser.close()


def test_load_labels_typed_in_the_page(neurofinder_store, tmp_path):
    """The page's Load labels: typing a path (with letters that are shortcuts elsewhere: z,
    u) labels nothing by key, Enter loads the file and gives the keys back to the page, and Z
    reverts the import as one action."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (never playwright install)")
    from playwright.sync_api import sync_playwright

    from actsort_gpu.store import SortStore

    store = tmp_path / "load.actsort"
    shutil.copytree(neurofinder_store, store, ignore=shutil.ignore_patterns("labels"))
    n_rows = int(SortStore.open(store).source_index().max()) + 1
    labels = np.zeros(n_rows, np.int8)
    labels[:6], labels[6:10] = 1, -1
    source = tmp_path / "zu_old_LABELS.npy"
    np.save(source, labels)
    with _served(store) as (port, ws), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = _open_page(browser, port)
        page.get_by_role("tab", name="Load labels").click()
        box = page.locator("#as-load-source textarea, #as-load-source input").first
        box.click()
        box.type(str(source))
        assert (ws.human(0) != 0).sum() == 0  # no key reached the shortcuts
        box.press("Enter")
        _wait_status(page, "Loaded zu_old_LABELS.npy")
        assert "10 labels imported (6 cells, 4 not cells)" in page.inner_text("#as-status")
        src = SortStore.open(store).source_index()
        np.testing.assert_array_equal(ws.human(0), labels[src])
        page.keyboard.press("z")  # the page took the keys back from the text box
        _wait_status(page, "Undo")
        assert (ws.human(0) != 0).sum() == 0
        browser.close()


def test_ctrl_s_exports_like_actsorts_save(neurofinder_store, tmp_path):
    """Ctrl+S (ActSort's Save) exports the store in the Export tab's format, without the
    browser's save dialog, and the status line says where; also before the tab was opened."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (never playwright install)")
    from playwright.sync_api import sync_playwright

    store = tmp_path / "save.actsort"
    shutil.copytree(neurofinder_store, store, ignore=shutil.ignore_patterns("labels"))
    exports = tmp_path / "exports"
    with _served(store, export_dir=exports) as (port, ws), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = _open_page(browser, port)
        shown = int(_index(page))
        _press_and_wait(page, "ArrowUp", "Saved")
        page.keyboard.press("Control+s")
        _wait_status(page, "Wrote")
        written = list(exports.rglob("*.csv"))
        assert len(written) == 1 and written[0].name in page.inner_text("#as-status")
        with written[0].open() as fh:
            rows = {int(r["candidate"]): r for r in csv.DictReader(fh)}
        assert rows[shown]["human_label"] == "1"  # the label just given
        assert sum(r["human_label"] == "1" for r in rows.values()) == 1
        # a jump by number, then Up labels that candidate (the number box lets go of the
        # keys; before, Up raised the number instead)
        target = (shown + 5) % 100
        number = page.locator("#as-index input")
        number.fill(str(target))
        number.press("Enter")
        page.wait_for_function(
            "(n) => document.querySelector('#as-info')?.innerText.includes('candidate ' + n)",
            arg=str(target),
            timeout=20000,
        )
        _press_and_wait(page, "ArrowUp", "Saved")
        assert ws.human(0)[target] == 1
        # a slider with the focus (just moved) leaves the arrows to the labels
        slider = page.locator("#as-zoom input[type=range]")
        slider.focus()
        before = slider.input_value()
        now = int(_index(page))
        _press_and_wait(page, "ArrowDown", "Saved")
        assert ws.human(0)[now] == -1 and slider.input_value() == before
        browser.close()


def test_store_buttons_step_through_the_stores(neurofinder_store, tmp_path):
    """ActSort's dataset << / >>: with two stores served, >> shows the second store's
    candidates and labels go to its journal; << (and >> again, wrapping) come back."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (never playwright install)")
    from playwright.sync_api import sync_playwright

    stores = [tmp_path / "a.actsort", tmp_path / "b.actsort"]
    for store in stores:
        shutil.copytree(neurofinder_store, store, ignore=shutil.ignore_patterns("labels"))
    with _served(stores) as (port, ws), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = _open_page(browser, port)
        shown = page.locator("#as-store input")
        assert shown.input_value() == "a.actsort"
        for button, name in [("next", "b.actsort"), ("next", "a.actsort"), ("prev", "b.actsort")]:
            page.click(f"#as-store-{button}")
            page.wait_for_function(
                "(n) => document.querySelector('#as-store input')?.value === n",
                arg=name,
                timeout=20000,
            )
        page.wait_for_function(  # the store's candidate is on screen
            "() => document.querySelector('#as-info')?.innerText.includes('b.actsort')",
            timeout=20000,
        )
        _press_and_wait(page, "ArrowUp", "Saved")
        assert (ws.human(1) != 0).sum() == 1 and (ws.human(0) != 0).sum() == 0
        browser.close()
