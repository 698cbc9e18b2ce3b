"""The full loop through the served page with gradio_client: label 50, undo 5, compare with the
truth, export, restart, check. One server (plus its restart) for the whole loop."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from ui_fixtures import make_test_store

from actsort_gpu.config import load_config
from actsort_gpu.ui import serve

gradio_client = pytest.importorskip("gradio_client")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(path, tmp_path):
    port = _free_port()
    demo, ws = serve(
        [path],
        port=port,
        prevent_thread_lock=True,
        quiet=True,
        annotator="client",
        config=load_config(),
        export_dir=tmp_path / "exports",
    )
    client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
    return demo, ws, client


def _status(out) -> str:
    return out[7]


def _candidate(out) -> int:
    return int(out[8])


def _sent(x) -> bool:
    """Whether an output carries content (a skipped, unchanged panel comes as an update)."""
    return not (isinstance(x, dict) and x.get("__type__") == "update")


def test_label_50_undo_5_restart(tmp_path):
    from actsort_gpu.labels import Journal, JournalLockedError

    path = make_test_store(tmp_path, n=70)
    demo, ws, client = _start(path, tmp_path)
    try:
        truth = ws.stores[0].store.read("truth/labels")
        out = client.predict(api_name="/load")
        assert "Resumed: 0 labels" in _status(out)
        assert all(_sent(x) for x in out[:7])  # first load: every panel sent
        assert out[0]["path"].endswith(".jpg") and out[2]["path"].endswith(".png")
        shown = []
        for _ in range(50):
            cur = _candidate(out)
            shown.append(cur)
            out = client.predict(api_name="/cell" if truth[cur] > 0 else "/not_cell")
            assert "Saved" in _status(out)
        for _ in range(5):
            out = client.predict(api_name="/undo")
            assert "Undo" in _status(out)
        expected = np.zeros(70, np.int8)
        expected[shown[:45]] = truth[shown[:45]]
        assert np.array_equal(ws.human(0), expected)
        position = _candidate(out)
        assert position == shown[45]  # the last undo shows the candidate it reverted
        # The truth stays hidden until asked; then the labels (all true) agree 100 %.
        out = client.predict(True, api_name="/errors")  # refused before the comparison
        assert "Compare with truth first" in _status(out)
        assert not any(_sent(x) for x in out[:7])  # nothing changed: nothing re-sent
        report, _ = client.predict(api_name="/truth")
        assert "45 (100.0 % right)" in report
        ws.set_threshold(0.0)  # every unlabelled candidate called a cell: errors exist
        out = client.predict(True, api_name="/errors")
        ws.set_threshold(0.5)
        assert _sent(out[0]) and not any(_sent(x) for x in out[1:5])  # only the map changes
        exported = client.predict("csv", api_name="/export")
        assert exported[0] is not None and "Wrote" in exported[1]
        # A second server (a second writer) on the same store is refused while this one runs.
        with pytest.raises(JournalLockedError, match="another process|open for writing"):
            Journal(path / "labels" / "journal.jsonl")
    finally:
        demo.close()
        ws.close()
    lines = [json.loads(x) for x in (path / "labels" / "journal.jsonl").read_text().splitlines()]
    assert len(lines) == 55 and [x["origin"] for x in lines[-5:]] == ["undo"] * 5
    # Restart the server: labels, undo history and position are back.
    demo, ws, client = _start(path, tmp_path)
    try:
        assert np.array_equal(ws.human(0), expected)
        out = client.predict(api_name="/load")
        assert _candidate(out) == position and "45 labels" in _status(out)
        out = client.predict(api_name="/redo")
        assert ws.human(0)[shown[45]] == truth[shown[45]]
    finally:
        demo.close()
        ws.close()


def test_serve_passes_inbrowser_to_gradio(tmp_path, monkeypatch):
    """``actsort demo`` serves with inbrowser=True: it reaches Gradio's launch (no browser is
    opened here: launch is replaced)."""
    import gradio as gr

    calls = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: calls.append(kw))
    path = make_test_store(tmp_path, n=10)
    for flag in (True, False):
        demo, ws = serve(
            [path],
            port=_free_port(),
            prevent_thread_lock=True,
            quiet=True,
            inbrowser=flag,
            export_dir=tmp_path / "exports",
        )
        ws.close()
    assert [c["inbrowser"] for c in calls] == [True, False]
    assert all(c["server_name"] == "127.0.0.1" for c in calls)


def test_auth_argument_validation(tmp_path):
    path = make_test_store(tmp_path, n=10)
    with pytest.raises(ValueError, match="USER:PASS"):
        serve([path], port=_free_port(), auth="nopassword", prevent_thread_lock=True, quiet=True)
