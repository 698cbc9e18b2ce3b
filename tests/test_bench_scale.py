"""scripts/bench_scale.py: the scaling study runs end to end on a tiny recording."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_scale.py"


@pytest.fixture(scope="module")
def bs():
    spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_scale"] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("bench_scale", None)


def test_ladder_keeps_frames_and_scales_candidates_and_fov(bs):
    sizes = bs.ladder([0.25, 1.0], candidates_per_gb=10000, frames=1000)
    assert [s.frames for s in sizes] == [1000, 1000]
    assert [s.candidates for s in sizes] == [2500, 10000]
    assert (sizes[0].height, sizes[1].height) == (352, 704)  # 353.6, 707.1 -> x 8 px
    assert sizes[1].movie_bytes == 2 * 1000 * 704 * 704
    with pytest.raises(ValueError, match="--gb"):
        bs.ladder([0.0], 10000, 1000)


def test_parse_sizes_and_errors(bs):
    assert bs.parse_sizes("100:64:80:7") == [bs.Size(100, 64, 80, 7)]
    for bad in ("100:64:80", "100:16:80:7", "a:64:64:7"):
        with pytest.raises(ValueError, match="FRAMES:HEIGHT:WIDTH:CANDIDATES"):
            bs.parse_sizes(bad)


def test_linear_fit_known_line(bs):
    f = bs.linear_fit([1, 2, 4], [3.0, 5.0, 9.0])  # y = 1 + 2 x
    assert f["a"] == pytest.approx(1.0) and f["b"] == pytest.approx(2.0)
    assert f["r2"] == pytest.approx(1.0) and f["max_rel_resid"] < 1e-9
    assert np.isnan(bs.linear_fit([1], [2.0])["b"])


def test_fast_generator_matches_extraction(bs, tmp_path):
    size = bs.Size(70, 48, 40, 9)
    movie, ext = bs.write_fast(tmp_path, size)
    mov = np.load(movie, mmap_mode="r")
    assert mov.shape == (70, 48, 40) and mov.dtype == np.uint16
    z = np.load(ext)
    assert z["traces"].shape == (9, 70) and int(z["height"]) == 48 and int(z["width"]) == 40
    assert len(z["footprints_indptr"]) == 10 and np.all(np.diff(z["footprints_indptr"]) > 0)


def test_measure_rejects_bad_stages(bs, tmp_path):
    with pytest.raises(ValueError, match="stages"):
        bs.measure(bs.Size(50, 64, 64, 4), tmp_path, stages=("preprocess",))
    with pytest.raises(ValueError, match="stages"):
        bs.measure(bs.Size(50, 64, 64, 4), tmp_path, stages=("ingest", "sort"))


def test_measure_tiny_pipeline_and_report(bs, tmp_path, capsys):
    sizes = [bs.Size(120, 64, 64, 12), bs.Size(240, 64, 64, 24)]
    rows = []
    for s in sizes:
        rows += bs.measure(
            s,
            tmp_path,
            stages=("ingest", "preprocess", "features"),
            device="cpu",
            log=lambda line: None,
        )
    assert [r["stage"] for r in rows] == ["ingest", "preprocess", "features"] * 2
    for r in rows:
        assert r["seconds"] > 0 and r["peak_rss_mb"] > 20 and r["workers"] == 0
    assert rows[2]["n_features"] >= 76
    assert not any(p.is_dir() for p in tmp_path.iterdir())  # removed without keep
    summary = bs.summarise(rows, bs.Size(10000, 1000, 1000, 100000))
    st = summary["stages"]["features"]
    assert [r["candidates"] for r in st["rows"]] == [12, 24]
    assert st["rows"][1]["s_per_1000_candidates"] == pytest.approx(1000 * rows[5]["seconds"] / 24)
    assert np.isfinite(st["extrapolated_s"]) and st["extrapolated_by"] == "cand x frames"
    text = bs.table(summary)
    assert "| features |" in text and "fit s = a + b GB" in text
    out = tmp_path / "r.json"
    out.write_text(
        json.dumps(
            {
                "rows": rows,
                "summary": summary,
                "machine": {"load_avg_start": [1], "load_avg_end": [2]},
            }
        )
    )
    assert bs.main(["--report", str(out)]) == 0
    assert "| preprocess |" in capsys.readouterr().out


def test_joint_model_recovers_known_coefficients(bs):
    rows = []
    for n, t in [(1000, 1000), (2000, 1000), (4000, 1000), (2000, 4000), (4000, 8000)]:
        r = {
            "stage": "features",
            "workers": 0,
            "candidates": n,
            "frames": t,
            "height": 64,
            "width": 64,
            "gb": 2 * t * 64 * 64 / 1e9,
        }
        r["seconds"] = 2.0 + 3.0 * n / 1e3 + 5.0 * n * t / 1e9 + 7.0 * n * n * t / 1e12
        rows.append(r)
    m = bs.joint_model(rows, bs.Size(10000, 100, 100, 100000))["features"]
    assert m["coef"] == pytest.approx([2.0, 3.0, 5.0, 7.0], rel=1e-6)
    assert m["predicted"] == pytest.approx(2 + 300 + 5 * 1e9 / 1e9 + 7 * 1e14 / 1e12, rel=1e-6)
    assert "preprocess" not in bs.joint_model(rows)  # no preprocess rows
