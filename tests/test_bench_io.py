"""scripts/bench_io.py: every format it writes holds the same frames, read back by open_movie
(what its throughput table compares), and a folder's raw read covers all its files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from actsort_gpu.io.movies import open_movie

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_io.py"


def _bench_io():
    spec = importlib.util.spec_from_file_location("bench_io", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_format_holds_the_same_frames(tmp_path):
    bench_io = _bench_io()
    files = bench_io.make_files(tmp_path, 0.003, bench_io.FORMATS)  # 5 frames of 512 x 512
    assert set(files) == set(bench_io.FORMATS)
    with open_movie(files["tiff"]) as m:
        reference = m.read(0, m.n_frames).astype(np.float32)
    assert reference.shape == (5, 512, 512) and reference.std() > 0
    for fmt, path in files.items():
        with open_movie(path) as m:
            got = np.concatenate([f.astype(np.float32) for _, f in m.iter_chunks(2)])
        np.testing.assert_array_equal(got, reference, err_msg=fmt)
    parts = bench_io._file_list(files["tiff-folder"])
    assert [p.name for p in parts] == ["part1.tif", "part2.tif", "part3.tif", "part4.tif"]
    raw = bench_io.worker("raw", str(files["tiff-folder"]), 2)
    assert raw["bytes"] == sum(p.stat().st_size for p in parts)
