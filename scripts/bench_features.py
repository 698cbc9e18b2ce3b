"""Benchmark the feature stage: seconds per 1,000 candidates by feature group.

Builds a synthetic store (actsort_gpu.features.synthetic: disk / elongated footprints, traces
with transients, uint8 snapshots) for each N, runs ``compute_features`` and prints the stage's
per-group timings (wall seconds; with ``FeatureConfig.threads`` > 1 "temporal" and
"temporal_peaks" are sums over the chunk threads, "temporal_wall" is the group's wall time, and
"spatiotemporal", "extra" and "read_snapshots" are sums over the threads that run the snapshot
parts, "snapshot_wall" their wall time),
the process CPU seconds and the load average. The FOV grows with N (about 40
candidates per 64 x 64 px). Building the store and the feature stage each run in their own
subprocess, so each one's peak memory (sampled anonymous RSS, and ``VmHWM``) is its own.

    python scripts/bench_features.py --n 10000 100000 --t 10000 --device cuda
    python scripts/bench_features.py --n 2000 --t 10000 --device cpu      # quick
    python scripts/bench_features.py --n 100000 --similarity exact,sketch   # side by side
    python scripts/bench_features.py --n 20000 --threads 2,8 --device cpu   # threads, memory

Groups: temporal (per-trace array work), temporal_peaks (host findpeaks / prominences /
widths), similarity (feature 35, tiled N x N), spatial, spatiotemporal, extra, read_* (store
I/O), policy_write. Feature 35 is O(N^2 T): its share grows with N.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(n: int, t: int, work: Path) -> tuple[Path, int, float]:
    """The synthetic store of ``n`` candidates x ``t`` frames in ``work``: (path, FOV side,
    seconds to build). The FOV grows with N (about 40 candidates per 64 x 64 px)."""
    from actsort_gpu.features.synthetic import make_feature_store

    side = int(64 * math.ceil(math.sqrt(n / 40)))
    path = work / f"bench_{n}_{t}.actsort"
    t0 = time.perf_counter()
    make_feature_store(path, n_candidates=n, n_frames=t, height=side, width=side, seed=0)
    return path, side, time.perf_counter() - t0


def measure(
    path: Path, device: str, batch: int | None = None, similarity: str = "auto", threads: int = 0
) -> dict:
    """``compute_features`` on the store at ``path``: wall and CPU seconds, per-group timings
    (the stage's record), the device it ran on and the load average before / after."""
    import numpy as np

    from actsort_gpu.config import FeatureConfig
    from actsort_gpu.features import compute_features, read_feature_matrix
    from actsort_gpu.store import SortStore

    batching = {} if batch is None else {"batch_candidates": batch}
    cfg = FeatureConfig(similarity_method=similarity, threads=threads, **batching)
    load_before = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    m = compute_features(path, cfg, device=device)
    _, names, _ = read_feature_matrix(path)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    store = SortStore.open(path)
    stage = store.attrs["stages"]["features"]
    return {
        "n": store.n_candidates,
        "t": store.n_frames,
        "device": stage["device"],
        "similarity_method": stage["similarity_method"],
        "similarity_sketch": stage.get("similarity_sketch"),
        "total_s": round(total, 2),
        "cpu_s": round(cpu, 1),
        "threads": stage.get("threads", cfg.threads),
        "loadavg_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "finite": bool(np.isfinite(m).all()),
        # to compare feature 35 between methods: a hash of its column
        "feature35_sha256": hashlib.sha256(
            np.ascontiguousarray(m[:, names.index("trace_similarity")]).tobytes()
        ).hexdigest()[:16],
        "timings_s": stage["timings_s"],
    }


def _in_subprocess(phase: str, **params) -> dict:
    """Run :func:`build` (``phase="build"``) or :func:`measure` (``"features"``) in a fresh
    Python process; returns its result with the phase's peak memory (MB): ``peak_anon_mb``
    (sampled ``RssAnon``: what the phase holds) and ``peak_rss_mb`` (``VmHWM``, which also
    counts file pages the process mapped)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_phase", phase, json.dumps(params)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{phase} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run_phase(phase: str, params: dict) -> dict:
    """The body of :func:`_in_subprocess`: one phase with its peak memory sampled."""
    sys.path[:0] = [str(Path(__file__).resolve().parent)]
    from bench_scale import _peak_rss_mb, _RssSampler

    sampler = _RssSampler(0.1)
    if phase == "build":
        path, side, build_s = build(params["n"], params["t"], Path(params["work"]))
        row = {"path": str(path), "fov": side, "build_s": round(build_s, 1)}
    else:
        row = measure(
            Path(params["path"]),
            params["device"],
            params["batch"],
            params["similarity"],
            params.get("threads", 0),
        )
    sampler.stop()
    return {
        **row,
        "peak_anon_mb": round(sampler.anon_mb) or None,  # None where RSS is not split
        "peak_rss_mb": round(_peak_rss_mb()[0]),
    }


def main(argv=None) -> int:
    if argv is None and sys.argv[1:2] == ["--_phase"]:
        print(json.dumps(_run_phase(sys.argv[2], json.loads(sys.argv[3]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10000, 100000], help="candidates")
    ap.add_argument("--t", type=int, default=10000, help="frames per trace")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=None, help="FeatureConfig.batch_candidates")
    ap.add_argument("--workdir", default=None, help="where to build the stores (default: tmp)")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    ap.add_argument(
        "--similarity",
        default="auto",
        help="feature 35 methods to run on the same store, comma-separated: auto, exact, sketch",
    )
    ap.add_argument(
        "--threads",
        default="0",
        help="features.threads values to run on the same store, comma-separated (0: one per "
        "core, at most 8)",
    )
    args = ap.parse_args(argv)
    methods = args.similarity.split(",")
    thread_counts = [int(v) for v in args.threads.split(",")]

    from actsort_gpu.backend import resolve_backend

    backend = resolve_backend(args.device)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-features-"))
    results = []
    for n in args.n:
        built = _in_subprocess("build", n=n, t=args.t, work=str(work))
        for method, threads in [(m, k) for m in methods for k in thread_counts]:
            row = _in_subprocess(
                "features",
                path=built["path"],
                device=backend.name,
                batch=args.batch,
                similarity=method,
                threads=threads,
            )
            row.update(
                fov=built["fov"],
                build_s=built["build_s"],
                build_peak_anon_mb=built["peak_anon_mb"],
                build_peak_rss_mb=built["peak_rss_mb"],
            )
            results.append(row)
            print(json.dumps(row), flush=True)
        shutil.rmtree(built["path"], ignore_errors=True)

    groups = sorted({g for r in results for g in r["timings_s"]})
    print(f"\nseconds per 1,000 candidates (T = {args.t}, device {backend.name})")
    print(
        "| group | "
        + " | ".join(
            f"N={r['n']:,}, feature 35 {r['similarity_method']}, {r['threads']} threads"
            for r in results
        )
        + " |"
    )
    print("|---|" + "---|" * len(results))
    for g in groups:
        print(
            f"| {g} | "
            + " | ".join(f"{r['timings_s'].get(g, 0.0) / r['n'] * 1000:.3f}" for r in results)
            + " |"
        )
    print(
        "| **total** | "
        + " | ".join(f"**{r['total_s'] / r['n'] * 1000:.3f}**" for r in results)
        + " |"
    )
    print("| total seconds | " + " | ".join(f"{r['total_s']:.1f}" for r in results) + " |")
    print("| process CPU seconds | " + " | ".join(f"{r['cpu_s']:.1f}" for r in results) + " |")
    print(
        "| load average (1 min) before / after | "
        + " | ".join("{} / {}".format(*r["loadavg_before_after"]) for r in results)
        + " |"
    )
    print(
        "| peak memory MB, features: anon / VmHWM | "
        + " | ".join(f"{r['peak_anon_mb']} / {r['peak_rss_mb']}" for r in results)
        + " |"
    )
    print(
        "| peak memory MB, building the store: anon / VmHWM | "
        + " | ".join(f"{r['build_peak_anon_mb']} / {r['build_peak_rss_mb']}" for r in results)
        + " |"
    )
    for n in args.n:
        by = {r["similarity_method"]: r for r in results if r["n"] == n}
        if {"exact", "sketch"} <= set(by):
            f35 = [by[m]["timings_s"]["similarity"] for m in ("exact", "sketch")]
            whole = [by[m]["total_s"] for m in ("exact", "sketch")]
            same = by["exact"]["feature35_sha256"] == by["sketch"]["feature35_sha256"]
            print(
                f"N={n:,}: feature 35 exact / sketch = {f35[0]:.1f} / {f35[1]:.1f} s "
                f"({f35[0] / f35[1]:.1f}x); whole stage {whole[0]:.1f} / {whole[1]:.1f} s "
                f"({whole[0] / whole[1]:.2f}x); feature 35 "
                + ("identical" if same else "DIFFERS")
                + "; the sketch left "
                f"{100 * by['sketch']['similarity_sketch']['exact_work']:.0f} % of the exact "
                "products to compute"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
