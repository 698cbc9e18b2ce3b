"""A real browser (headless Debian Chromium through Playwright) on a store built from the
neurofinder crop: label with the arrow keys, undo with Z, reload the tab, check the journal.

Screenshots of each step go to artifacts/browser/ (gitignored). Needs /usr/bin/chromium
(`apt-get install chromium`; never `playwright install`).
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


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


def _index(page) -> str:
    return page.locator("#as-index input").input_value()


def _press_and_wait(page, key: str, status_word: str) -> float:
    """Press ``key``; wait until the status shows ``status_word`` and every image has loaded.
    Returns milliseconds from the key press to the fully shown page."""
    page.evaluate("() => { const s = document.querySelector('#as-status');"
                  " if (s) s.setAttribute('data-old', s.innerText); }")
    t0 = time.perf_counter()
    page.keyboard.press(key)
    page.wait_for_function(
        """(word) => {
            const s = document.querySelector('#as-status');
            if (!s || !s.innerText.includes(word) || s.innerText === s.getAttribute('data-old'))
                return false;
            if (document.querySelector('.progress-text, .eta-bar')) return false;
            return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0);
        }""", arg=status_word, timeout=20000)
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
    demo, ws = serve([neurofinder_store], port=port, prevent_thread_lock=True, quiet=True,
                     annotator="browser", config=load_config(), export_dir=tmp_path / "exports")
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
                timeout=30000)
            page.screenshot(path=str(ARTIFACTS / "01_opened.png"), full_page=True)
            labelled = []
            for k, key in enumerate(["ArrowUp", "ArrowDown", "ArrowDown", "ArrowUp",
                                     "ArrowDown"]):
                labelled.append(int(_index(page)))
                timings.append(_press_and_wait(page, key, "Saved"))
                page.screenshot(path=str(ARTIFACTS / f"02_label_{k + 1}_{key}.png"),
                                full_page=True)
            assert int(_index(page)) not in labelled
            _press_and_wait(page, "z", "Undo")
            page.screenshot(path=str(ARTIFACTS / "03_undo.png"), full_page=True)
            assert int(_index(page)) == labelled[-1]
            # Reload the tab: the page resumes at the same candidate with the same labels.
            page.reload()
            page.wait_for_function(
                "() => { const s = document.querySelector('#as-status');"
                " return s && s.innerText.includes('Resumed: 4 labels'); }", timeout=30000)
            page.wait_for_function(
                "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(ARTIFACTS / "04_reloaded.png"), full_page=True)
            assert int(_index(page)) == labelled[-1]
            # Box selection mode + zoom, for the record.
            page.get_by_role("tab", name="Active learning").click()
            page.screenshot(path=str(ARTIFACTS / "05_active_learning_tab.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
        ws.close()
    lines = [json.loads(x) for x in
             (neurofinder_store / "labels" / "journal.jsonl").read_text().splitlines()]
    assert [x["origin"] for x in lines] == ["human"] * 5 + ["undo"]
    assert [x["candidate"] for x in lines[:5]] == labelled
    assert [x["label"] for x in lines[:5]] == [1, -1, -1, 1, -1]
    assert lines[5]["candidate"] == labelled[-1] and lines[5]["label"] == 0
    (ARTIFACTS / "timings_ms.json").write_text(json.dumps(
        {"key_to_shown_ms": [round(t, 1) for t in timings]}, indent=1))
