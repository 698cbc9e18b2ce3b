"""Movie-reader throughput and memory: our ``Movie.iter_chunks`` against a raw sequential read.

Writes an uncompressed TIFF and a Suite2p ``data.bin`` (+ ops.npy) of ``--gb`` GB and of half
that (to show that memory does not grow with the movie's length) into a temporary folder,
then, per file, alternates (interleaved, ``--rounds`` times) a raw sequential read of the file's
bytes (``readinto`` one reusable buffer of the chunk's size) and a full pass of
``open_movie(path).iter_chunks(...)``. Each measurement runs in its own subprocess, so its
peak resident memory (VmHWM) is its own. When run as root the page cache is dropped before
each measurement (cold reads); otherwise both sides are warm reads, which the report says.

    python scripts/bench_io.py --gb 2 [--dir DIR] [--frames-per-chunk 64] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

H = W = 512


def _status_mb(key: str) -> float:
    """A memory line of /proc/self/status (``VmHWM``, ``VmRSS``) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _hwm_mb() -> float:
    return _status_mb("VmHWM")


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def make_files(folder: Path, gb: float) -> dict[str, Path]:
    import tifffile

    n = int(gb * 1e9 // (H * W * 2))
    rng = np.random.default_rng(0)
    block = rng.integers(0, 4000, size=(64, H, W), dtype=np.int16)
    tif = folder / f"movie_{gb:g}gb.tif"
    frames = (block[i % 64].astype(np.uint16) for i in range(n))
    tifffile.imwrite(
        tif,
        frames,
        shape=(n, H, W),
        dtype=np.uint16,
        bigtiff=True,
        photometric="minisblack",
        contiguous=True,
    )
    s2p = folder / f"suite2p_{gb:g}gb"
    s2p.mkdir()
    with open(s2p / "data.bin", "wb") as fh:
        for i in range(0, n, 64):
            fh.write(block[: min(64, n - i)].tobytes())
    np.save(s2p / "ops.npy", {"Ly": H, "Lx": W, "nframes": n, "fs": 30.0}, allow_pickle=True)
    return {"tiff": tif, "suite2p": s2p / "data.bin"}


def _drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("1\n")
        return True
    except OSError:
        return False


def worker(kind: str, path: str, frames_per_chunk: int) -> dict:
    """One measurement in this process: 'raw' or 'movie'. Returns MB/s and memory."""
    from actsort_gpu.io.movies import open_movie

    base = _rss_mb()
    t0 = time.perf_counter()
    total = 0
    if kind == "raw":
        chunk = frames_per_chunk * H * W * 2
        buf = bytearray(chunk)
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                total += n
    else:
        with open_movie(path) as movie:
            for _, frames in movie.iter_chunks(frames_per_chunk, reuse_buffer=kind == "reuse"):
                total += frames.nbytes
    seconds = time.perf_counter() - t0
    return {
        "mb_s": total / 1e6 / seconds,
        "bytes": total,
        "seconds": seconds,
        "rss_before_mb": base,
        "peak_rss_mb": _hwm_mb(),
    }


def measure(kind: str, path: Path, frames_per_chunk: int, drop: bool) -> dict:
    dropped = _drop_caches() if drop else False
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            kind,
            str(path),
            "--frames-per-chunk",
            str(frames_per_chunk),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["cold"] = dropped
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.0, help="size of the larger files (GB)")
    ap.add_argument("--dir", default=None, help="where to write the files (default: $TMPDIR)")
    ap.add_argument("--frames-per-chunk", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--markdown", default=None, help="append the table to this file")
    ap.add_argument(
        "--cold",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="drop the page cache before every read (root only; default on)",
    )
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.frames_per_chunk)))
        return 0

    folder = Path(tempfile.mkdtemp(prefix="actsort_bench_io_", dir=args.dir))
    rows = []
    try:
        for gb in (args.gb / 2, args.gb):
            t0 = time.perf_counter()
            files = make_files(folder, gb)
            print(f"wrote {gb:g} GB files in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            for fmt, path in files.items():
                raw, ours, reuse = [], [], []
                for _ in range(args.rounds):  # interleaved: raw, ours, reuse, raw, ...
                    raw.append(measure("raw", path, args.frames_per_chunk, drop=args.cold))
                    ours.append(measure("movie", path, args.frames_per_chunk, drop=args.cold))
                    reuse.append(measure("reuse", path, args.frames_per_chunk, drop=args.cold))
                r = float(np.median([m["mb_s"] for m in raw]))
                o = float(np.median([m["mb_s"] for m in ours]))
                u = float(np.median([m["mb_s"] for m in reuse]))
                ours = ours + reuse
                rows.append(
                    {
                        "format": fmt,
                        "gb": path.stat().st_size / 1e9,
                        "raw_mb_s": r,
                        "movie_mb_s": o,
                        "ratio": o / r,
                        "reuse_mb_s": u,
                        "reuse_ratio": u / r,
                        "peak_rss_mb": max(m["peak_rss_mb"] for m in ours),
                        "rss_before_mb": min(m["rss_before_mb"] for m in ours),
                        "raw_peak_rss_mb": max(m["peak_rss_mb"] for m in raw),
                        "cold": all(m["cold"] for m in raw + ours),
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr)
            for p in files.values():
                (shutil.rmtree(p.parent) if p.name == "data.bin" else p.unlink())
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    cold = all(r["cold"] for r in rows)
    lines = [
        f"Files of {args.gb / 2:g} and {args.gb:g} GB ({H} x {W} uint16/int16 frames), "
        f"{args.frames_per_chunk} frames per chunk, median of {args.rounds} interleaved "
        f"rounds, "
        + (
            "page cache dropped before every read (cold)."
            if cold
            else "page cache NOT dropped (warm reads on both sides)."
        ),
        "",
        "| file | size GB | raw read MB/s | iter_chunks MB/s (ratio) | iter_chunks "
        "reuse_buffer MB/s (ratio; goal >= 0.9) | peak RSS MB (goal < 1024) | RSS after "
        "imports MB | raw-read peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['format']} | {r['gb']:.2f} | {r['raw_mb_s']:,.0f} | "
            f"{r['movie_mb_s']:,.0f} ({r['ratio']:.2f}) | {r['reuse_mb_s']:,.0f} "
            f"({r['reuse_ratio']:.2f}) | {r['peak_rss_mb']:.0f} | "
            f"{r['rss_before_mb']:.0f} | {r['raw_peak_rss_mb']:.0f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
