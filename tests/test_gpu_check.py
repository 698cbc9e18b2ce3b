"""``scripts/gpu_check.py`` (issue 12): its CPU half runs end to end at tiny sizes, writes one
markdown table and one JSON file, and says first that the GPU half did not run."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


TINY = [
    "--quick",
    "--movie-gb", "0.01",
    "--fov", "128",
    "--movie-candidates", "40",
    "--n", "150",
    "--t", "300",
    "--al-n", "2000",
    "--al-updates", "2",
]  # fmt: skip


def test_cpu_half_at_tiny_sizes(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    gpu_check = _gpu_check()
    out = tmp_path / "report" / "gc"
    rc = gpu_check.main([*TINY, "--device", "cpu", "--out", str(out), "--workdir", str(tmp_path)])
    md = out.with_suffix(".md").read_text()
    report = json.loads(out.with_suffix(".json").read_text())
    assert rc == 0, md
    assert "**GPU half: DID NOT RUN" in md.splitlines()[2]
    assert report["gpu_half_ran"] is False and report["device"] == "cpu"
    assert report["parts"]["tests"]["status"] == "not run: no GPU"
    for name in ("preprocess", "al", "features", "embed"):
        part = report["parts"][name]
        assert part["status"] == "ok", (name, part)
        assert any(line.startswith(f"| {name} |") for line in md.splitlines())
    pre = report["parts"]["preprocess"]["result"]
    assert pre["device"] == "cpu" and pre["pass_mb_s"] > 0 and pre["raw_read_mb_s"] > 0
    direct = pre["raw_direct_read_mb_s"]  # None where the file system refuses O_DIRECT
    assert direct is None or direct > 0
    best_raw = max(pre["raw_read_mb_s"], direct or 0.0)  # the target compares with the faster
    assert pre["ratio_pass_over_raw"] == pytest.approx(pre["pass_mb_s"] / best_raw, abs=2e-3)
    assert pre["frames"] == int(0.01e9 // (128 * 128 * 2)) and pre["device_peak_mb"] is None
    assert {pre["cache_before_raw"]["method"], pre["cache_before_pass"]["method"]} <= {
        "posix_fadvise",
        "drop_caches",
    } or "posix_fadvise only" in str(pre["cache_before_raw"]["method"])
    feats = report["parts"]["features"]["result"]
    assert (feats["n"], feats["t"], feats["device"]) == (150, 300, "cpu") and feats["finite"]
    assert report["parts"]["al"]["result"]["n"] == 2000
    assert report["parts"]["embed"]["result"]["n"] == 150
    for part in report["parts"].values():
        if part["result"]:
            r = part["result"]
            assert (r["peak_anon_rss_mb"] or r["peak_sampled_rss_mb"]) > 0 and r["peak_rss_mb"] > 0
    assert not list(tmp_path.glob("gpu_check-*"))  # the work folder is removed
    _renders_as_a_gpu_report(gpu_check, report)


def _renders_as_a_gpu_report(gpu_check, report):
    """The GPU half's report has never been written on a GPU here: render the CPU run's
    results as if they came from one at the issue's sizes, so its branches (targets, 'met',
    the head line, the tests row) run before a lent device's minutes are spent on them."""
    import copy

    gpu = copy.deepcopy(report)
    gpu.update(gpu_half_ran=True, gpu_reason=None, device="cuda", preset="gpu")
    gpu["machine"].update(gpu="NVIDIA H100 80GB HBM3 (rendering test)", cupy="14.2.0")
    parts = gpu["parts"]
    parts["tests"] = {
        "status": "ok",
        "wall_s": 80.0,
        "summary": gpu_check._pytest_summary(["22 passed, 3 skipped in 80.0s"]),
    }
    parts["preprocess"]["result"].update(size_gb=8.1, device_peak_mb=2500.0)
    parts["features"]["result"].update(n=100_000, t=10_000, total_s=95.0, device_peak_mb=9000.0)
    parts["al"]["result"].update(n=1_000_000, ours_update_ms_median=12.0, device_peak_mb=800.0)
    md = gpu_check.markdown(gpu)
    assert "**GPU half: ran on NVIDIA H100 80GB HBM3 (rendering test)" in md
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "22 passed" in rows["tests"] and "| yes |" in rows["tests"]
    assert "| yes |" in rows["features"] and "9,000" in rows["features"]  # 95 s < 2 minutes
    assert "| yes |" in rows["al"]  # 12 ms < 50 ms at 1,000,000
    pre = parts["preprocess"]["result"]
    met = pre["ratio_pass_over_raw"] >= 0.9 and gpu_check._held_mb(pre) < 2048
    assert f"| {'yes' if met else 'no'} |" in rows["preprocess"]


def test_explicit_cuda_without_a_gpu_stops_with_the_reason(tmp_path, monkeypatch, capsys):
    from actsort_gpu import backend

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    monkeypatch.setattr(backend, "cuda_unavailable_reason", lambda: "no CuPy in this test")
    rc = _gpu_check().main(["--device", "cuda", "--out", str(tmp_path / "gc")])
    assert rc == 1 and "no CuPy in this test" in capsys.readouterr().err
    assert not (tmp_path / "gc.md").exists()
    with pytest.raises(SystemExit):
        _gpu_check().main(["--parts", "nope"])


def test_pytest_summary_is_read():
    gc = _gpu_check()
    log = [
        "tests/test_a.py::test_one[cupy] PASSED                                    [ 33%]",
        "tests/test_a.py::test_two[cuda] FAILED                                    [ 66%]",
        "tests/test_a.py::test_three SKIPPED (torch sees no CUDA GPU)              [100%]",
        "============================= slowest 8 durations ==============================",
        "12.52s call     tests/test_a.py::test_two[cuda]",
        "1.10s setup    tests/test_a.py::test_one[cupy]",
        "FAILED tests/test_a.py::test_two[cuda] - AssertionError: x",
        "ERROR tests/test_ui_render.py - ModuleNotFoundError: gradio",
        "1 failed, 1 passed, 1 skipped, 1 error in 40.12s",
    ]
    summary = gc._pytest_summary(log)
    assert summary["counts"] == {"failed": 1, "passed": 1, "skipped": 1, "error": 1}
    assert summary["problems"] == log[6:8]
    assert summary["slowest"] == [
        "12.5 s tests/test_a.py::test_two[cuda] (call)",
        "1.1 s tests/test_a.py::test_one[cupy] (setup)",
    ]
    assert summary["running"] is None
    # killed at the part's deadline: no final line; counted from the per-test lines, and the
    # test that had started names itself (pytest -v writes its id before it runs)
    cut = gc._pytest_summary(log[:3] + ["tests/test_b.py::test_slow[cuda] "])
    assert cut["counts"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert cut["running"] == "tests/test_b.py::test_slow[cuda]"
    row = gc._row("tests", {"status": "timed out after 150 s", "summary": cut}, {"gpu_half_ran": 1})
    assert row["met"] == "no" and "1 passed, 1 failed, 1 skipped" in row["result"]
    assert "timed out after 150 s while running tests/test_b.py::test_slow[cuda]" in row["notes"]


def test_a_part_out_of_time_is_reported_not_hidden(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    out = tmp_path / "gc"
    rc = _gpu_check().main(
        ["--device", "cpu", "--parts", "al", "--budget-s", "1", "--out", str(out)]
    )
    assert rc == 1
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["parts"]["al"]["status"] == "not run: out of time"
    assert "| al |  | not run: out of time |" in out.with_suffix(".md").read_text()
