"""``actsort demo --no-browser`` end to end: synth -> ingest -> preprocess -> features ->
learner."""

import numpy as np

from actsort_gpu.cli import main
from actsort_gpu.store import SortStore


def test_demo_no_browser_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(["demo", "--out", str(out), "--no-browser", "--no-progress", "--device", "cpu"]) == 0
    )
    text = capsys.readouterr().out
    assert "balanced accuracy vs truth" in text
    store = SortStore.open(out / "recording.actsort")
    for stage in ("ingest", "preprocess", "features"):
        assert store.stage_status(stage) == "complete"
    truth = store.read("truth/labels")
    assert set(np.unique(truth)) == {-1, 1} and len(truth) == store.n_candidates
    ba = float(text.split("final labels ")[1].split(",")[0])
    assert ba > 0.75  # 5 % of labels through the learner must beat chance by far
    # A second run reuses the store once it holds labels, and never rebuilds over them.
    store.labels_dir.mkdir(exist_ok=True)
    (store.labels_dir / "journal.jsonl").write_text("")
    assert main(["demo", "--out", str(out), "--no-browser", "--no-progress", "--budget", "2"]) == 0
    assert "built" not in capsys.readouterr().out


def test_demo_rejects_bad_budget(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--no-browser", "--budget", "0"]) == 1
    assert "--budget" in capsys.readouterr().err
