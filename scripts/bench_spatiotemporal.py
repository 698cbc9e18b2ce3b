"""Micro-benchmark of ``spatiotemporal_features`` (features 47-76) on synthetic candidates.

Prints seconds per 1,000 candidates for a few crop / footprint sizes, for the working-tree
implementation and (unless ``--no-baseline``) for the version committed at a git revision
(default 9bc120f, the batched module before the speed-up), loaded from
``git show REV:actsort_gpu/features/spatiotemporal.py`` into a temporary module, plus the
largest relative difference between the two outputs (|new - old| / max(|old|, 1e-3)).

    python scripts/bench_spatiotemporal.py [-n 500] [--rev 9bc120f] [--no-baseline] [--repeat 1]

Times are wall-clock (and process CPU time, which includes spinning BLAS threads) on whatever
the machine is doing; the 1-minute load average is printed alongside so that runs on a shared
machine can be judged.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BASELINE_REV = "9bc120f"  # "Features 37-76 ...": the batched module before the speed-up
sys.path.insert(0, str(REPO))

from actsort_gpu.features.spatiotemporal import spatiotemporal_features  # noqa: E402

# (label, crop height, crop width, footprint Gaussian sd, cut below which the footprint is 0)
CASES = (
    ("25x25 crop, ~137-px footprint", 25, 25, 3.0, 0.1),
    ("25x25 crop, full-crop footprint", 25, 25, 3.0, 0.0),
    ("mixed 15-31 px crops, ~60-250-px footprints", None, None, None, 0.1),
)


def _candidates(rng, n, h, w, sd, cut, n_events=5):
    """n synthetic candidates: Gaussian footprint x event trace + noise, 1-5 real events."""
    snaps, fps, trs, vals = [], [], [], []
    for _ in range(n):
        hh = h if h is not None else int(rng.integers(15, 32))
        ww = w if w is not None else int(rng.integers(15, 32))
        sdd = sd if sd is not None else float(rng.uniform(2.0, 4.5))
        yy, xx = np.mgrid[:hh, :ww]
        fp = np.exp(-((yy - hh / 2) ** 2 + (xx - ww / 2) ** 2) / (2 * sdd**2))
        fp[fp < cut] = 0
        fp = (fp / fp.max()).astype(np.float32)
        n_valid = int(rng.integers(1, n_events + 1)) if h is None else n_events
        snap = np.zeros((n_events, 11, hh, ww), np.float32)
        tr = np.zeros((n_events, 11), np.float32)
        for e in range(n_valid):
            t = np.exp(-0.5 * ((np.arange(11) - 5) / 1.5) ** 2) * (2 + rng.random())
            tr[e] = t
            snap[e] = t[:, None, None] * fp + 0.2 * rng.standard_normal((11, hh, ww))
        snaps.append(snap)
        fps.append(fp)
        trs.append(tr)
        vals.append(np.arange(n_events) < n_valid)
    return snaps, fps, np.stack(trs), np.stack(vals)


def _load_revision(rev):
    """The module spatiotemporal.py as committed at ``rev``, imported under a private name."""
    src = subprocess.run(
        ["git", "show", f"{rev}:actsort_gpu/features/spatiotemporal.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    tmp = Path(tempfile.mkdtemp()) / "spatiotemporal_baseline.py"
    tmp.write_text(src)
    spec = importlib.util.spec_from_file_location("spatiotemporal_baseline", tmp)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.spatiotemporal_features


def _time(fn, args, repeat):
    """Best wall-clock and process CPU seconds over ``repeat`` runs, and the output."""
    best, cpu, out = np.inf, np.inf, None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return best, cpu, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=500, help="candidates per case (default 500)")
    ap.add_argument(
        "--rev", default=BASELINE_REV, help=f"git revision of the baseline (default {BASELINE_REV})"
    )
    ap.add_argument("--no-baseline", action="store_true", help="time only the working tree")
    ap.add_argument("--repeat", type=int, default=1, help="best of this many runs (default 1)")
    args = ap.parse_args(argv)
    baseline = None if args.no_baseline else _load_revision(args.rev)
    rng = np.random.default_rng(0)
    print(f"load average at start: {os.getloadavg()[0]:.2f} (1 min), cpus {os.cpu_count()}")
    for label, h, w, sd, cut in CASES:
        data = _candidates(rng, args.n, h, w, sd, cut)
        support = np.mean([(f > 0).sum() for f in data[1]])
        t_new, c_new, new = _time(spatiotemporal_features, data, args.repeat)
        line = (
            f"{label:45s} support {support:5.1f} px | new {1000 * t_new / args.n:6.2f} "
            f"s/1000 (cpu {1000 * c_new / args.n:6.2f})"
        )
        if baseline is not None:
            t_old, c_old, old = _time(baseline, data, args.repeat)
            with np.errstate(invalid="ignore"):
                rel = np.nanmax(np.abs(new - old) / np.maximum(np.abs(old), 1e-3))
            same_nan = bool((np.isnan(new) == np.isnan(old)).all())
            line += (
                f" | {args.rev} {1000 * t_old / args.n:6.2f} s/1000 (cpu "
                f"{1000 * c_old / args.n:6.2f}) | speed-up "
                f"{t_old / t_new:5.1f}x | max rel diff {rel:.1e} | "
                f"NaN pattern equal {same_nan}"
            )
        print(line, flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f} (1 min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
