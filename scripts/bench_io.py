"""Movie-reader throughput and memory: our ``Movie.iter_chunks`` against a raw sequential read.

Writes an uncompressed TIFF and a Suite2p ``data.bin`` (+ ops.npy) of ``--gb`` GB and of half
that (to show that memory does not grow with the movie's length) into a temporary folder (or,
with ``--formats``, any of :data:`FORMATS`: a page-chain TIFF, a folder of TIFF parts, an
unchunked HDF5 dataset, CaImAn memmaps in both orders), then, per file, alternates
(interleaved, ``--rounds`` times) a raw sequential read of the file's bytes (``readinto`` one
reusable buffer of the chunk's size; a folder's files one after another) and a full pass of
``open_movie(path).iter_chunks(...)``. Each measurement runs in its own subprocess, so its
peak resident memory (VmHWM) is its own. When run as root the page cache is dropped before
each measurement (cold reads); otherwise both sides are warm reads, which the report says.

    python scripts/bench_io.py --gb 2 [--dir DIR] [--frames-per-chunk 64] [--markdown FILE]
    python scripts/bench_io.py --gb 1 --formats tiff-chain,tiff-folder,hdf5,caiman-F,caiman-C
    python scripts/bench_io.py --gb 2 --formats tiff-chain,tiff --rois 4

``--rois R`` also reads one ROI strip (the first ``H / R`` rows of every page, as one ROI of a
ScanImage multi-ROI page) through ``Interleave(rows=...)`` and reports its time against the raw
read of the whole file: an uncompressed TIFF (page chain or contiguous) reads only the strip's
bytes of each page, one by one at their offsets.
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


#: formats --formats can write (the first two are the default, as in the recorded tables)
FORMATS = ("tiff", "suite2p", "tiff-chain", "tiff-folder", "hdf5", "caiman-F", "caiman-C")


def make_files(folder: Path, gb: float, formats=("tiff", "suite2p")) -> dict[str, Path]:
    """The same uint16/int16 frames in each of ``formats``, about ``gb`` GB each: ``tiff``
    contiguous BigTIFF; ``suite2p`` data.bin + ops.npy; ``tiff-chain`` an IFD before each frame
    (ScanImage's layout); ``tiff-folder`` four contiguous TIFF parts; ``hdf5`` an unchunked
    dataset; ``caiman-F`` / ``caiman-C`` CaImAn memmaps (float32, so twice the bytes)."""
    import tifffile

    n = int(gb * 1e9 // (H * W * 2))
    rng = np.random.default_rng(0)
    block = rng.integers(0, 4000, size=(64, H, W), dtype=np.int16)

    def frames(dtype=np.uint16):
        return (block[i % 64].astype(dtype) for i in range(n))

    out = {}
    for fmt in formats:
        if fmt == "tiff":
            out[fmt] = folder / f"movie_{gb:g}gb.tif"
            tifffile.imwrite(
                out[fmt],
                frames(),
                shape=(n, H, W),
                dtype=np.uint16,
                bigtiff=True,
                photometric="minisblack",
                contiguous=True,
            )
        elif fmt == "suite2p":
            s2p = folder / f"suite2p_{gb:g}gb"
            s2p.mkdir()
            with open(s2p / "data.bin", "wb") as fh:
                for i in range(0, n, 64):
                    fh.write(block[: min(64, n - i)].tobytes())
            np.save(s2p / "ops.npy", {"Ly": H, "Lx": W, "nframes": n, "fs": 30.0})
            out[fmt] = s2p / "data.bin"
        elif fmt == "tiff-chain":
            out[fmt] = folder / f"chain_{gb:g}gb.tif"
            with tifffile.TiffWriter(out[fmt], bigtiff=True) as tw:
                for f in frames():
                    tw.write(f, contiguous=False, metadata=None)
        elif fmt == "tiff-folder":
            out[fmt] = folder / f"parts_{gb:g}gb"
            out[fmt].mkdir()
            stream = frames()
            for k, m in enumerate(np.diff(np.linspace(0, n, 5).astype(int))):
                part = np.stack([next(stream) for _ in range(m)])
                tifffile.imwrite(out[fmt] / f"part{k + 1}.tif", part, contiguous=True)
        elif fmt == "hdf5":
            import h5py

            out[fmt] = folder / f"movie_{gb:g}gb.h5"
            with h5py.File(out[fmt], "w") as f:
                data = f.create_dataset("mov", shape=(n, H, W), dtype=np.uint16)
                for i in range(0, n, 64):
                    data[i : i + 64] = block[: min(64, n - i)].astype(np.uint16)
        elif fmt in ("caiman-F", "caiman-C"):
            order = fmt[-1]
            out[fmt] = folder / f"Yr_d1_{H}_d2_{W}_d3_1_order_{order}_frames_{n}_.mmap"
            yr = np.memmap(out[fmt], np.float32, "w+", shape=(H * W, n), order=order)
            for i in range(0, n, 64):  # pixel = row + col * H, as CaImAn's save_memmap
                m = min(64, n - i)
                yr[:, i : i + m] = block[:m].astype(np.float32).reshape(m, -1, order="F").T
            yr.flush()
            del yr
        else:
            raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return out


def _file_list(path: Path) -> list[Path]:
    """The files a raw read of ``path`` reads: the file, or a folder's files in name order."""
    return sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]


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
        for file in _file_list(Path(path)):
            with open(file, "rb", buffering=0) as fh:
                while n := fh.readinto(buf):
                    total += n
    else:
        from actsort_gpu.io.movies import Interleave

        rois = int(kind.split(":")[1]) if kind.startswith("roi:") else None
        interleave = None if rois is None else Interleave(rows=(0, H // rois))
        with open_movie(path, interleave=interleave) as movie:
            for _, frames in movie.iter_chunks(frames_per_chunk, reuse_buffer=kind != "movie"):
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
    ap.add_argument(
        "--formats",
        default="tiff,suite2p",
        help=f"comma-separated movie formats to write and read ({', '.join(FORMATS)})",
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--markdown", default=None, help="append the table to this file")
    ap.add_argument(
        "--cold",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="drop the page cache before every read (root only; default on)",
    )
    ap.add_argument(
        "--rois",
        type=int,
        default=None,
        metavar="R",
        help="also read one ROI strip (H / R rows of each page) of the TIFF files",
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
            files = make_files(folder, gb, args.formats.split(","))
            print(f"wrote {gb:g} GB files in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            for fmt, path in files.items():
                raw, ours, reuse, strip = [], [], [], []
                roi = args.rois if args.rois and fmt.startswith("tiff") else None
                for _ in range(args.rounds):  # interleaved: raw, ours, reuse, raw, ...
                    raw.append(measure("raw", path, args.frames_per_chunk, drop=args.cold))
                    ours.append(measure("movie", path, args.frames_per_chunk, drop=args.cold))
                    reuse.append(measure("reuse", path, args.frames_per_chunk, drop=args.cold))
                    if roi:
                        kind = f"roi:{roi}"
                        strip.append(measure(kind, path, args.frames_per_chunk, drop=args.cold))
                r = float(np.median([m["mb_s"] for m in raw]))
                o = float(np.median([m["mb_s"] for m in ours]))
                u = float(np.median([m["mb_s"] for m in reuse]))
                ours = ours + reuse
                rows.append(
                    {
                        "format": fmt,
                        "gb": sum(f.stat().st_size for f in _file_list(path)) / 1e9,
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
                if strip:
                    seconds = [float(np.median([m["seconds"] for m in x])) for x in (strip, raw)]
                    rows[-1].update(
                        roi_seconds=seconds[0],
                        raw_seconds=seconds[1],
                        roi_peak_rss_mb=max(m["peak_rss_mb"] for m in strip),
                    )
                print(json.dumps(rows[-1]), file=sys.stderr)
            for p in files.values():
                if p.name == "data.bin" or p.is_dir():
                    shutil.rmtree(p.parent if p.name == "data.bin" else p)
                else:
                    p.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    cold = all(r["cold"] for r in rows)
    lines = [
        f"Files of {args.gb / 2:g} and {args.gb:g} GB of frames ({H} x {W} uint16/int16; "
        "CaImAn float32, twice the bytes), "
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
    strips = [r for r in rows if "roi_seconds" in r]
    if strips:
        lines += [
            "",
            f"One ROI strip ({H // args.rois} of {H} rows of every page, `Interleave(rows=...)`) "
            "against the raw read of the whole file:",
            "",
            "| file | size GB | raw read s | ROI strip s | time ratio (1 / R reads the strip "
            "only) | ROI peak RSS MB |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['format']} | {r['gb']:.2f} | {r['raw_seconds']:.2f} | "
            f"{r['roi_seconds']:.2f} | {r['roi_seconds'] / r['raw_seconds']:.2f} | "
            f"{r['roi_peak_rss_mb']:.0f} |"
            for r in strips
        ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
