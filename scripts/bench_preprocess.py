"""Benchmark of the preprocessing pass (issue 3).

For each movie size (GB) the script writes a uint16 ``.npy`` movie (FOV ``--fov`` x ``--fov``)
with ``--candidates`` random disk-shaped candidates, ingests it, then, each in its own
subprocess (so peak resident memory is per measurement), with the file evicted from the page
cache before each (``posix_fadvise DONTNEED``):

- a raw sequential read of the file (64 MiB ``preadv`` blocks) through the page cache,
- the same read with ``O_DIRECT`` (as the pass reads an uncached movie; cold only), and
- ``preprocess`` on the store (CPU unless ``--device``),

and prints one JSON line per size and accumulator method (``--accumulators``, side by side on
the same file; ``--warm`` adds a second raw read and pass with the file in the page cache, which
measures the pass's own speed apart from the disk's): both raw MB/s (``raw_direct_read_mb_s``
None where the file system refuses ``O_DIRECT``), pass MB/s, its ratio to the faster raw read, peak
RSS of the pass (``VmHWM``, which counts mapped file pages, and the anonymous part), peak GPU
memory of the pass (``--device cuda``), store size / movie size, the whole stage's CPU seconds
(all threads; comparable across machine loads, unlike the wall-clock ratio), the 1-minute load
average at its end, and the share of the movie left in the page cache before each read
(``mincore``: 0 = the eviction worked; where ``posix_fadvise`` leaves pages and this process
may, it drops the whole cache). Files are deleted afterwards unless ``--keep``.
``--gen-workers`` writes the movie with that many processes (the movie is the same).
``--channels C`` interleaves C channels in the movie's pages (ScanImage's order: the cells in
channel 1, background in the others) and ingests channel 1: the pass reads every page of the
file and keeps one in C, and its MB/s counts the whole file, as the raw read does.

    python scripts/bench_preprocess.py --sizes 1,4,8 --dir ../bench_tmp
    python scripts/bench_preprocess.py --sizes 2 --accumulators compiled,blocked --warm
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def write_movie(
    path: Path,
    n_frames: int,
    fov: int,
    n_cand: int,
    seed: int = 0,
    workers: int = 1,
    channels: int = 1,
):
    """uint16 movie with noise and disk-shaped cells firing at random frames; returns the
    candidates' footprints (CSR) and traces (N, T). ``workers`` processes write disjoint
    blocks of frames (same content for any number). ``channels`` > 1: that many pages per
    frame, the cells in the first, the background in the others."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    centres = rng.integers(8, fov - 8, size=(n_cand, 2))
    radii = rng.uniform(3.0, 5.0, n_cand)
    rows, cols, vals = [], [], []
    for i, ((r, c), rad) in enumerate(zip(centres, radii)):
        k = int(np.ceil(rad))
        yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
        inside = yy**2 + xx**2 <= rad**2
        pix = (r + yy[inside]) * fov + (c + xx[inside])
        rows.append(np.full(pix.size, i))
        cols.append(pix)
        vals.append(np.ones(pix.size, np.float32))
    fp = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_cand, fov * fov),
    )
    fp.data[:] = 1.0
    traces = rng.normal(0, 0.05, size=(n_cand, n_frames)).astype(np.float32)
    n_ev = 8
    ev = rng.integers(10, n_frames - 10, size=(n_cand, n_ev))
    for j in range(4):
        np.add.at(traces, (np.arange(n_cand)[:, None], ev + j), np.exp(-j / 1.5))
    shape = (n_frames * channels, fov, fov)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=shape)
    del mm  # header written; the blocks are filled through their own maps
    base = rng.integers(90, 110, size=(16, fov, fov), dtype=np.uint16)
    _GEN.update(path=path, base=base, fpT=fp.T.tocsr(), traces=traces, fov=fov, channels=channels)
    step = 64
    blocks = [(a, min(n_frames, a + step)) for a in range(0, n_frames, step)]
    if workers > 1:
        import multiprocessing

        # fork: the workers inherit _GEN (footprints, traces, background) without pickling
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pool.starmap(_write_block, blocks, chunksize=1)
    else:
        for a, b in blocks:
            _write_block(a, b)
    _GEN.clear()
    return fp, traces


_GEN: dict = {}


def _write_block(a: int, b: int) -> None:
    g = _GEN
    mm = np.load(g["path"], mmap_mode="r+")
    block = g["base"][np.arange(a, b) % 16].astype(np.float32)
    act = (g["fpT"] @ g["traces"][:, a:b]).T.reshape(b - a, g["fov"], g["fov"])  # (t, H, W)
    block += 60.0 * act
    c = g["channels"]
    mm[a * c : b * c : c] = np.clip(block, 0, 65535).astype(np.uint16)
    for k in range(1, c):  # the other channels: background only
        mm[a * c + k : b * c : c] = g["base"][(np.arange(a, b) + k) % 16]
    mm.flush()
    del mm


def resident_fraction(path: Path) -> float | None:
    """Share of the file's pages in the page cache (``mincore``); None where it cannot be
    told."""
    from actsort_gpu.io.direct import cached_share

    return cached_share(path, samples=None)


def evict(path: Path) -> dict:
    """Drop ``path`` from the page cache; returns how (``posix_fadvise``, else the whole
    cache through ``/proc/sys/vm/drop_caches`` where this process may) and the share of its
    pages still resident (``resident``; None: unknown)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    left = resident_fraction(path)
    how = "posix_fadvise"
    if left is None or left > 0.01:
        try:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as fh:
                fh.write("1\n")
            how = "drop_caches"
        except OSError as exc:
            how = f"posix_fadvise only (drop_caches: {exc.strerror or exc})"
        left = resident_fraction(path)
    return {"method": how, "resident": left}


_RAW = r"""
import mmap, os, sys, time, json
path, how = sys.argv[1], sys.argv[2]; n = 0
if how == 'direct':  # O_DIRECT into a page-aligned buffer, as the pass reads an uncached file
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except (OSError, AttributeError) as exc:
        print(json.dumps({'seconds': None, 'bytes': 0, 'rss_mb': 0, 'refused': str(exc)}))
        sys.exit()
    buf = mmap.mmap(-1, 64 * 2**20)
else:
    fd = os.open(path, os.O_RDONLY)
    buf = bytearray(64 * 2**20)
mv = memoryview(buf)
t = time.perf_counter()
try:
    while True:
        k = os.preadv(fd, [mv], n)
        if not k: break
        n += k
except OSError as exc:  # a file system that opens O_DIRECT but refuses the read
    print(json.dumps({'seconds': None, 'bytes': 0, 'rss_mb': 0, 'refused': str(exc)}))
    sys.exit()
dt = time.perf_counter() - t
os.close(fd)
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(json.dumps({'seconds': dt, 'bytes': n, 'rss_mb': int(hwm) / 1024}))
"""

_PASS = r"""
import os, sys, json, resource, threading, time
from actsort_gpu.config import PreprocessConfig
from actsort_gpu.preprocess import kernels, preprocess
if sys.argv[4] != 'default':
    kernels.default_cpu_method = lambda: sys.argv[4]  # the NumPy accumulator to measure
cfg = PreprocessConfig(max_memory_mb=(float(sys.argv[3]) if sys.argv[3] != 'none' else None))
peak = {'anon': 0, 'rss': 0, 'dev': 0}
stop = threading.Event()
mem_info = None
if sys.argv[2] != 'cpu':
    import cupy
    mem_info = cupy.cuda.runtime.memGetInfo  # whole GPU: (free, total)
    free0, total = mem_info()
def sample():
    for l in open('/proc/self/status'):
        if l.startswith('RssAnon:'):
            peak['anon'] = max(peak['anon'], int(l.split()[1]) * 1024)
        elif l.startswith('VmRSS:'):
            peak['rss'] = max(peak['rss'], int(l.split()[1]) * 1024)
    if mem_info is not None:
        peak['dev'] = max(peak['dev'], free0 - mem_info()[0])
def loop():
    while not stop.wait(0.05):
        sample()
th = threading.Thread(target=loop, daemon=True); th.start()
c0 = time.process_time()
s = preprocess(sys.argv[1], cfg, device=sys.argv[2])
s['cpu_s'] = time.process_time() - c0
stop.set(); th.join(); sample()
s['load_avg'] = os.getloadavg()[0]
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
s['rss_mb'] = int(hwm) / 1024   # VmHWM: peak of this process image (ru_maxrss survives exec)
# without the mapped file pages (movie, scratch); None where the kernel does not split RSS
s['anon_rss_mb'] = peak['anon'] / 2**20 if peak['anon'] else None
s['sampled_rss_mb'] = peak['rss'] / 2**20
s['device_peak_mb'] = peak['dev'] / 2**20 if mem_info is not None else None
print(json.dumps(s))
"""


def _run(code: str, *args) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def prepare(size_gb: float, args) -> dict:
    """Write the movie of ``size_gb`` GB and ingest it; returns its paths, frames and the
    seconds it took to write."""
    from actsort_gpu.ingest import ingest
    from actsort_gpu.io.candidates import Candidates
    from actsort_gpu.io.movies import Interleave, InterleavedMovie, NpyMovie

    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    channels = getattr(args, "channels", 1)
    frame_bytes = args.fov * args.fov * 2 * channels
    n_frames = int(size_gb * 1e9 // frame_bytes)
    movie = work / f"movie_{size_gb:g}GB.npy"
    store = work / f"movie_{size_gb:g}GB.actsort"
    t = time.perf_counter()
    fp, traces = write_movie(
        movie,
        n_frames,
        args.fov,
        args.candidates,
        workers=getattr(args, "gen_workers", 1),
        channels=channels,
    )
    t_write = time.perf_counter() - t
    cands = Candidates(fp, traces, args.fov, args.fov, "npz", work / "synthetic.npz")
    opened = NpyMovie(movie)
    if channels > 1:
        opened = InterleavedMovie(opened, Interleave(channels=channels))
    ingest(opened, cands, store, overwrite=True)
    return {
        "movie": str(movie),
        "store": str(store),
        "n_frames": n_frames,
        "write_s": t_write,
        "size_gb": size_gb,
    }


def measure(prep: dict, args, method: str = "default", warm: bool = False) -> dict:
    """The raw read and the pass of a :func:`prepare`d movie with the accumulator ``method``,
    each from a cold page cache, or (``warm``) each after the file was read into it."""
    movie, store = Path(prep["movie"]), Path(prep["store"])
    cache_raw = warm_up(movie) if warm else evict(movie)
    raw = _run(_RAW, movie, "buffered")
    direct = None  # cold only: a direct read of a cached file still reads the disk
    if not warm:
        evict(movie)
        direct = _run(_RAW, movie, "direct")
    cache_pass = warm_up(movie) if warm else evict(movie)
    res = _run(_PASS, store, args.device, args.max_memory or "none", method)
    movie_bytes = movie.stat().st_size
    raw_mbs = raw["bytes"] / raw["seconds"] / 1e6
    direct_mbs = direct["bytes"] / direct["seconds"] / 1e6 if direct and direct["seconds"] else None
    best_raw_mbs = max(raw_mbs, direct_mbs or 0.0)
    pass_mbs = movie_bytes / res["pass_seconds"] / 1e6
    return {
        "size_gb": round(movie_bytes / 1e9, 2),
        "frames": prep["n_frames"],
        "channels": getattr(args, "channels", 1),
        "fov": args.fov,
        "candidates": args.candidates,
        "accumulator": res["accumulator"],
        "page_cache": "warm" if warm else "cold",
        "write_s": round(prep["write_s"], 1),
        "raw_read_mb_s": round(raw_mbs, 1),
        "raw_direct_read_mb_s": None if direct_mbs is None else round(direct_mbs, 1),
        "pass_mb_s": round(pass_mbs, 1),
        "ratio_pass_over_raw": round(pass_mbs / best_raw_mbs, 3),
        "pass_s": round(res["pass_seconds"], 1),
        "checkpoint_s": round(res.get("checkpoint_seconds", 0.0), 1),
        "total_s": round(res["seconds"], 1),
        "chunk_frames": res["chunk_frames"],
        "budget_mb": round(res["budget_mb"]),
        "peak_rss_mb": round(res["rss_mb"]),
        "peak_anon_rss_mb": None if res["anon_rss_mb"] is None else round(res["anon_rss_mb"]),
        "peak_sampled_rss_mb": round(res["sampled_rss_mb"]),
        "device_peak_mb": (None if res["device_peak_mb"] is None else round(res["device_peak_mb"])),
        "raw_rss_mb": round(raw["rss_mb"]),
        "store_over_movie": round(dir_size(store) / movie_bytes, 4),
        "device": res["device"],
        "cpu_s": round(res["cpu_s"], 1),
        "cpu_s_per_gb": round(res["cpu_s"] / (movie_bytes / 1e9), 1),
        "load_avg_end": round(res["load_avg"], 1),
        "cache_before_raw": cache_raw,
        "cache_before_pass": cache_pass,
    }


def warm_up(path: Path) -> dict:
    """Read ``path`` once so that it sits in the page cache; returns the share resident."""
    _run(_RAW, path, "buffered")
    return {"method": "read", "resident": resident_fraction(path)}


def cleanup(prep: dict) -> None:
    Path(prep["movie"]).unlink(missing_ok=True)
    shutil.rmtree(prep["store"], ignore_errors=True)


def bench(size_gb: float, args) -> list[dict]:
    """One row per accumulator method (and page-cache state with ``--warm``), printed as
    measured."""
    prep = prepare(size_gb, args)
    rows = []
    try:
        for warm in (False, True) if args.warm else (False,):
            for method in args.accumulators.split(","):
                rows.append(measure(prep, args, method, warm))
                print(json.dumps(rows[-1]), flush=True)
        return rows
    finally:
        if not args.keep:
            cleanup(prep)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1", help="comma-separated movie sizes in GB")
    p.add_argument("--fov", type=int, default=1024)
    p.add_argument("--candidates", type=int, default=5000)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--max-memory", type=float, default=None, help="MB (default: automatic)")
    p.add_argument("--dir", default="bench_preprocess_tmp")
    p.add_argument("--keep", action="store_true")
    p.add_argument(
        "--gen-workers", type=int, default=1, help="processes writing the movie (default 1)"
    )
    p.add_argument(
        "--accumulators",
        default="default",
        help="comma-separated CPU accumulator methods to measure side by side on the same file "
        "(compiled, blocked, einsum; default: what preprocess picks)",
    )
    p.add_argument(
        "--warm", action="store_true", help="also measure with the movie in the page cache"
    )
    p.add_argument(
        "--channels",
        type=int,
        default=1,
        help="channels interleaved in the movie's pages; the pass reads channel 1 (default 1)",
    )
    args = p.parse_args(argv)
    for s in args.sizes.split(","):
        bench(float(s), args)


if __name__ == "__main__":
    main()
