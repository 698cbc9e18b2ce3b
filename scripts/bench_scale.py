"""Scaling study (issue 8): wall time and peak memory of each stage as the recording grows.

For each size the script writes a synthetic recording (a uint16 ``.npy`` movie and a generic
``.npz`` extraction), then runs ``ingest``, ``preprocess``, ``features`` (and ``embed`` when
asked), each in its own subprocess so that the peak resident memory (``VmHWM``; with Dask, the
largest of the stage process and its reaped worker processes, ``RUSAGE_CHILDREN``) belongs to
that stage alone. It prints one JSON line per stage and, at the end, a table of seconds per GB,
seconds per 1,000 candidates, seconds per (1,000 candidates x 1,000 frames) and peak RSS, with
a least-squares line ``seconds = a + b * GB`` per stage, and writes everything to ``--json``.

Sizes: ``--gb 0.25,0.5,1,2`` (a ladder: ``--candidates-per-gb`` candidates per GB, ``--frames``
frames, the field of view grown so that frames x height x width x 2 bytes = the size, i.e.
the candidate density stays constant), or ``--sizes FRAMES:HEIGHT:WIDTH:CANDIDATES,...``.
``--dask-compare GB`` repeats ``preprocess`` and ``features`` at one size with a LocalCluster
of 1 and of 2 workers (``--workers``).

Generators: ``fast`` (default; vectorised: disk footprints at random centres, calcium-like
traces, movie = background noise frames + 60 x footprints @ traces; generation time is linear
in the size) or ``synth`` (``actsort_gpu.synth``: realistic false positives, but its scene
placement is quadratic in the cell count: 12 s for 2,500 and 29 s for 5,000 candidates here,
so it is for small sizes).

    nice -n 10 python scripts/bench_scale.py --gb 0.25,0.5,1,2 --dask-compare 0.5 \\
        --json benchmarks/scale.json
    # the 20 GB / 100,000-candidate point (1000 x 1000 px, 10,000 frames):
    python scripts/bench_scale.py --gb 20 --candidates-per-gb 5000 --frames 10000

The work folder (``--workdir``, default ``../bench_scale_tmp`` beside the repository) is
deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

STAGES = ("ingest", "preprocess", "features", "embed")
DEFAULT_STAGES = ("ingest", "preprocess", "features")
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Size:
    """One recording: frames x height x width (uint16) with ``candidates`` candidates."""

    frames: int
    height: int
    width: int
    candidates: int

    @property
    def movie_bytes(self) -> int:
        return 2 * self.frames * self.height * self.width

    @property
    def label(self) -> str:
        return f"{self.movie_bytes / 1e9:.3g}GB_{self.candidates}c"


def ladder(gbs, candidates_per_gb: float, frames: int) -> list[Size]:
    """Sizes of ``gb`` GB each with ``gb * candidates_per_gb`` candidates and ``frames`` frames;
    the square field of view (a multiple of 8 px, >= 64) absorbs the rest."""
    out = []
    for gb in gbs:
        if gb <= 0:
            raise ValueError(f"--gb: expected sizes > 0, found {gb}")
        side = max(64, int(round(math.sqrt(gb * 1e9 / (2 * frames)) / 8)) * 8)
        out.append(Size(frames, side, side, max(2, int(round(gb * candidates_per_gb)))))
    return out


def parse_sizes(text: str) -> list[Size]:
    """``"FRAMES:HEIGHT:WIDTH:CANDIDATES,..."`` -> sizes (ValueError naming the bad item)."""
    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            vals = []
        if len(vals) != 4 or min(vals) < 1 or min(vals[1:3]) < 32:
            raise ValueError(
                f"--sizes: expected FRAMES:HEIGHT:WIDTH:CANDIDATES with positive "
                f"integers and height, width >= 32, found {item!r}"
            )
        out.append(Size(*vals))
    return out


# ----------------------------------------------------------------------------- generators


def write_fast(folder: Path, size: Size, seed: int = 0, fs_hz: float = 15.0):
    """Movie ``movie.npy`` (T, H, W) uint16 and extraction ``extraction.npz`` (generic layout).

    Footprints: disks of radius 3-6 px at uniform random centres (overlaps allowed), values
    1 at the centre falling to 0.3 at the rim. Traces: Poisson spikes (0.05-1 Hz) through a
    0.7 s exponential kernel plus Gaussian noise (sd 0.05), float32. The movie is 16 background
    noise frames (counts 90-110) repeated, plus 60 x footprints @ traces, in 64-frame chunks.
    Returns the two paths.
    """
    import scipy.sparse as sp
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    T, H, W, N = size.frames, size.height, size.width, size.candidates
    radii = rng.uniform(3.0, 6.0, N)
    k = 6
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    d2 = (yy**2 + xx**2).ravel()
    cy = rng.integers(k, H - k, N)
    cx = rng.integers(k, W - k, N)
    inside = d2[None, :] <= radii[:, None] ** 2  # (N, 169)
    vals = 1.0 - 0.7 * np.sqrt(d2[None, :]) / radii[:, None]
    rows = np.nonzero(inside)[0]
    cols = ((cy[:, None] + yy.ravel()[None, :]) * W + cx[:, None] + xx.ravel()[None, :])[inside]
    fp = sp.csr_matrix((vals[inside].astype(np.float32), (rows, cols)), shape=(N, H * W))
    rate = np.exp(rng.uniform(np.log(0.05), np.log(1.0), N)) / fs_hz
    spikes = rng.random((N, T), dtype=np.float32) < rate[:, None].astype(np.float32)
    decay = math.exp(-1.0 / (0.7 * fs_hz))
    traces = lfilter([1.0], [1.0, -decay], spikes.astype(np.float32), axis=1).astype(np.float32)
    del spikes
    traces += rng.normal(0, 0.05, size=(N, T)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    ext = folder / "extraction.npz"
    np.savez(
        ext,
        footprints_data=fp.data,
        footprints_indices=fp.indices.astype(np.int64),
        footprints_indptr=fp.indptr.astype(np.int64),
        height=H,
        width=W,
        traces=traces,
        fs_hz=fs_hz,
    )
    movie = folder / "movie.npy"
    mm = np.lib.format.open_memmap(movie, mode="w+", dtype=np.uint16, shape=(T, H, W))
    base = rng.integers(90, 110, size=(16, H, W), dtype=np.uint16).astype(np.float32)
    fpT = fp.T.tocsr()
    for a in range(0, T, 64):
        b = min(T, a + 64)
        block = base[np.arange(a, b) % 16]
        block += 60.0 * (fpT @ traces[:, a:b]).T.reshape(b - a, H, W)
        mm[a:b] = np.clip(block, 0, 65535).astype(np.uint16)
    mm.flush()
    del mm
    return movie, ext


def write_synth(folder: Path, size: Size, seed: int = 0):
    """``actsort_gpu.synth`` recording (Suite2p layout); half cells, half false positives."""
    from actsort_gpu.synth import SynthConfig, synthesize

    cfg = SynthConfig(
        seed=seed,
        n_frames=size.frames,
        height=size.height,
        width=size.width,
        n_cells=size.candidates // 2,
        n_false_positives=size.candidates - size.candidates // 2,
    )
    rec = synthesize(folder, cfg, formats=("suite2p",), overwrite=True)
    return Path(rec.files["movie"]), Path(rec.files["suite2p"])


# ----------------------------------------------------------------------------- stages


def _peak_rss_mb() -> tuple[float, float]:
    """(VmHWM of this process, largest ru_maxrss of its reaped children), MB."""
    with open("/proc/self/status") as fh:
        hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM"))
    return hwm / 1024, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


class _RssSampler:
    """Peak ``RssAnon`` and ``RssFile`` of this process (MB), sampled every ``interval_s``.

    ``VmHWM`` counts file pages mapped by the process (a memory-mapped movie or scratch file)
    as resident although the kernel can drop them at any time; the anonymous part is the
    memory the stage really holds. ``rss_mb``: peak ``VmRSS`` (both), for kernels that do not
    split it (gVisor: ``anon_mb`` stays 0)."""

    def __init__(self, interval_s: float = 0.1):
        import threading

        self.anon_mb = self.file_mb = self.rss_mb = 0.0
        self._stop = threading.Event()
        self._interval = interval_s
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    self.anon_mb = max(self.anon_mb, int(line.split()[1]) / 1024)
                elif line.startswith("RssFile:"):
                    self.file_mb = max(self.file_mb, int(line.split()[1]) / 1024)
                elif line.startswith("VmRSS:"):
                    self.rss_mb = max(self.rss_mb, int(line.split()[1]) / 1024)

    def _run(self):
        while not self._stop.wait(self._interval):
            self.sample()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.sample()


def run_stage(
    name: str, store: str, movie: str, extraction: str, device: str, workers: int | None
) -> dict:
    """Run one stage in this process; returns seconds, CPU seconds, peak RSS and a summary."""
    sampler = _RssSampler()
    t0, c0 = time.perf_counter(), time.process_time()
    extra: dict = {}
    if name == "ingest":
        from actsort_gpu.ingest import ingest_files

        ingest_files(movie, extraction, store, overwrite=True)
    elif name == "preprocess":
        from actsort_gpu.preprocess import preprocess

        s = preprocess(store, device=device, workers=workers)
        extra = {
            "setup_s": s["setup_seconds"],
            "pass_s": s["pass_seconds"],
            "output_s": s["output_seconds"],
            "pass_mb_s": s["mb_per_s"],
            "pieces": s.get("pieces", 1),
        }
    elif name == "features":
        from actsort_gpu.features import compute_features

        m = compute_features(store, device=device, workers=workers)
        extra = {"n_features": int(m.shape[1])}
    elif name == "embed":
        from actsort_gpu.embed import embed

        embed(store, device=device)
    else:
        raise ValueError(f"stage: expected one of {STAGES}, found {name!r}")
    wall = time.perf_counter() - t0
    sampler.stop()
    self_mb, children_mb = _peak_rss_mb()
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "stage": name,
        "seconds": wall,
        "cpu_s": time.process_time() - c0,
        "children_cpu_s": ch.ru_utime + ch.ru_stime,
        "rss_mb": self_mb,
        "workers_rss_mb": children_mb,
        "peak_rss_mb": max(self_mb, children_mb),
        "peak_anon_mb": sampler.anon_mb,
        "peak_file_mb": sampler.file_mb,
        "workers": workers or 0,
        "load_avg_end": os.getloadavg()[0],
        **extra,
    }


def stage_subprocess(
    name: str, store: Path, movie: Path, extraction: Path, device: str, workers: int | None = None
) -> dict:
    """:func:`run_stage` in a fresh Python process (so its peak RSS is the stage's alone)."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--_stage",
        name,
        "--_store",
        str(store),
        "--_movie",
        str(movie),
        "--_extraction",
        str(extraction),
        "--device",
        device,
    ]
    if workers:
        cmd += ["--_workers", str(workers)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(
            f"stage {name} on {store} failed (exit {out.returncode}):\n{out.stderr[-3000:]}"
        )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_s"] = time.perf_counter() - t0  # includes interpreter start and imports
    return res


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(
    size: Size,
    workdir: Path,
    *,
    stages=DEFAULT_STAGES,
    device: str = "cpu",
    generator: str = "fast",
    seed: int = 0,
    keep: bool = False,
    dask_workers: tuple[int, ...] = (),
    log=print,
) -> list[dict]:
    """Generate one recording and run ``stages`` on it; one dict per stage run.

    dask_workers : after the in-process runs, repeat preprocess and features with a
        LocalCluster of each of these worker counts (rows carry ``workers``).
    """
    bad = [s for s in stages if s not in STAGES]
    if bad or "ingest" not in stages:
        raise ValueError(
            f"stages: expected 'ingest' plus a subset of {STAGES}, found {list(stages)}"
        )
    folder = workdir / size.label
    t0 = time.perf_counter()
    if generator == "fast":
        movie, extraction = write_fast(folder, size, seed)
    elif generator == "synth":
        movie, extraction = write_synth(folder, size, seed)
    else:
        raise ValueError(f"generator: expected 'fast' or 'synth', found {generator!r}")
    gen_s = time.perf_counter() - t0
    store = folder / "recording.actsort"
    common = {"size": size.label, **asdict(size), "gb": size.movie_bytes / 1e9, "generate_s": gen_s}
    rows = []
    order = [s for s in STAGES if s in stages]
    for name in order:
        r = {**common, **stage_subprocess(name, store, movie, extraction, device)}
        r["store_mb"] = dir_bytes(store) / 1e6
        rows.append(r)
        log(json.dumps(_rounded(r)))
    for k in dask_workers:
        for name in ("preprocess", "features"):
            if name in order:
                r = {**common, **stage_subprocess(name, store, movie, extraction, device, k)}
                rows.append(r)
                log(json.dumps(_rounded(r)))
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


# ----------------------------------------------------------------------------- report


def _rounded(d: dict) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


def linear_fit(x, y) -> dict:
    """Least squares ``y = a + b x``; a, b, R^2 and the largest relative residual."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0:
        return dict.fromkeys(("a", "b", "r2", "max_rel_resid"), float("nan"))
    b, a = np.polyfit(x, y, 1)
    pred = a + b * x
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else 1.0
    return {
        "a": float(a),
        "b": float(b),
        "r2": r2,
        "max_rel_resid": float(np.max(np.abs(y - pred) / np.maximum(y, 1e-9))),
    }


def summarise(rows: list[dict], extrapolate: Size | None = None) -> dict:
    """Per stage (in-process rows): ratios per size, the linear fit in GB and in candidates,
    the spread of seconds per GB, and (optional) the fit evaluated at ``extrapolate``."""
    out: dict = {"stages": {}, "dask": []}
    for name in STAGES:
        rs = sorted(
            [r for r in rows if r["stage"] == name and not r["workers"]], key=lambda r: r["gb"]
        )
        if not rs:
            continue
        per_gb = [r["seconds"] / r["gb"] for r in rs]
        st = {
            "rows": [
                {
                    "size": r["size"],
                    "gb": r["gb"],
                    "candidates": r["candidates"],
                    "frames": r["frames"],
                    "hw": f"{r['height']} x {r['width']}",
                    "seconds": r["seconds"],
                    "s_per_gb": r["seconds"] / r["gb"],
                    "s_per_1000_candidates": 1000 * r["seconds"] / r["candidates"],
                    "s_per_1000_cand_x_1000_frames": 1e6
                    * r["seconds"]
                    / (r["candidates"] * r["frames"]),
                    "cpu_s": r["cpu_s"],
                    "peak_rss_mb": r["peak_rss_mb"],
                    "peak_anon_mb": r.get("peak_anon_mb", float("nan")),
                    "load_avg_end": r["load_avg_end"],
                }
                for r in rs
            ],
            "fit_gb": linear_fit([r["gb"] for r in rs], [r["seconds"] for r in rs]),
            "fit_candidates": linear_fit([r["candidates"] for r in rs], [r["seconds"] for r in rs]),
            "fit_cpu_gb": linear_fit([r["gb"] for r in rs], [r["cpu_s"] for r in rs]),
            "s_per_gb_spread": (max(per_gb) - min(per_gb)) / float(np.mean(per_gb)),
            "peak_rss_mb_range": [
                min(r["peak_rss_mb"] for r in rs),
                max(r["peak_rss_mb"] for r in rs),
            ],
        }
        st["fit_cand_frames"] = linear_fit(
            [r["candidates"] * r["frames"] / 1e6 for r in rs], [r["seconds"] for r in rs]
        )
        if extrapolate is not None:
            # movie-bound stages scale with the bytes read, candidate-bound ones with
            # candidates x frames (the traces); a fit on a ladder with constant frames assumes
            # linearity in frames for the latter.
            if name in ("ingest", "preprocess"):
                f, x = st["fit_gb"], extrapolate.movie_bytes / 1e9
            else:
                f, x = st["fit_cand_frames"], extrapolate.candidates * extrapolate.frames / 1e6
            st["extrapolated_by"] = "GB" if name in ("ingest", "preprocess") else "cand x frames"
            st["extrapolated_s"] = f["a"] + f["b"] * x
        out["stages"][name] = st
    for r in rows:
        if r["workers"]:
            base = [
                b
                for b in rows
                if b["stage"] == r["stage"] and b["size"] == r["size"] and not b["workers"]
            ]
            out["dask"].append(
                {
                    "stage": r["stage"],
                    "size": r["size"],
                    "workers": r["workers"],
                    "seconds": r["seconds"],
                    "peak_rss_mb": r["peak_rss_mb"],
                    "in_process_s": base[0]["seconds"] if base else None,
                    "load_avg_end": r["load_avg_end"],
                }
            )
    return out


#: regressors of the joint model per stage: movie-bound stages read every byte once and do
#: per-candidate work; features do per-candidate, per-sample (N x T) and, for feature 35's
#: trace-similarity tiles, N^2 x T work.
MODEL_TERMS = {
    "ingest": ("1", "N/1e3", "GB"),
    "preprocess": ("1", "N/1e3", "GB"),
    "features": ("1", "N/1e3", "NT/1e9", "N2T/1e12"),
    "embed": ("1", "N/1e3", "NT/1e9"),
}


def _terms(r: dict, names) -> list[float]:
    n, t = r["candidates"], r["frames"]
    val = {
        "1": 1.0,
        "N/1e3": n / 1e3,
        "GB": r["gb"],
        "NT/1e9": n * t / 1e9,
        "N2T/1e12": n * n * t / 1e12,
    }
    return [val[k] for k in names]


def joint_model(rows: list[dict], at: Size | None = None, key: str = "seconds") -> dict:
    """Least squares of ``key`` (seconds or cpu_s) on :data:`MODEL_TERMS` over all in-process
    rows of each stage (e.g. a ladder in N and one in T together); coefficients >= 0 (NNLS),
    the largest relative residual, and the prediction at ``at``. Stages with fewer distinct
    sizes than terms are left out."""
    from scipy.optimize import nnls

    out = {}
    for name, names in MODEL_TERMS.items():
        rs = [r for r in rows if r["stage"] == name and not r["workers"]]
        if len({(r["candidates"], r["frames"], r["height"], r["width"]) for r in rs}) < len(names):
            continue
        x = np.array([_terms(r, names) for r in rs])
        y = np.array([r[key] for r in rs], float)
        coef, _ = nnls(x, y)
        pred = x @ coef
        m = {
            "terms": list(names),
            "coef": coef.tolist(),
            "max_rel_resid": float(np.max(np.abs(y - pred) / np.maximum(y, 1e-9))),
            "n_rows": len(rs),
        }
        if at is not None:
            r_at = {"candidates": at.candidates, "frames": at.frames, "gb": at.movie_bytes / 1e9}
            parts = np.array(_terms(r_at, names)) * coef
            m["predicted"] = float(parts.sum())
            m["predicted_parts"] = dict(zip(names, parts.tolist()))
        out[name] = m
    return out


def model_table(models: dict, key: str) -> str:
    lines = [
        f"| stage | model of {key} (coefficients) | max rel. resid | rows | prediction (parts) |",
        "|---|---|---|---|---|",
    ]
    for name, m in models.items():
        terms = " + ".join(f"{c:.3g} {t}" for c, t in zip(m["coef"], m["terms"]))
        pred = m.get("predicted")
        parts = ", ".join(f"{t}: {v:.0f}" for t, v in m.get("predicted_parts", {}).items())
        lines.append(
            f"| {name} | {terms} | {m['max_rel_resid']:.2f} | {m['n_rows']} | "
            f"{'-' if pred is None else f'{pred:.0f} ({parts})'} |"
        )
    return "\n".join(lines)


def table(summary: dict) -> str:
    """Markdown tables of the summary."""
    lines = [
        "| stage | size | frames | H x W | s | s / GB | s / 1,000 cand | "
        "s / (1,000 cand x 1,000 frames) | CPU s | peak RSS MB (anon) | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, st in summary["stages"].items():
        for r in st["rows"]:
            lines.append(
                f"| {name} | {r['gb']:.2f} GB, {r['candidates']:,} cand | "
                f"{r['frames']:,} | {r['hw']} | {r['seconds']:.1f} | "
                f"{r['s_per_gb']:.1f} | "
                f"{r['s_per_1000_candidates']:.2f} | "
                f"{r['s_per_1000_cand_x_1000_frames']:.2f} | {r['cpu_s']:.1f} | "
                f"{r['peak_rss_mb']:.0f} ({r['peak_anon_mb']:.0f}) | "
                f"{r['load_avg_end']:.1f} |"
            )
    lines += [
        "",
        "| stage | fit s = a + b GB (a, b) | R^2 | max rel. resid | s/GB spread | "
        "CPU fit b (s/GB) | peak RSS MB range | extrapolated s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, st in summary["stages"].items():
        f = st["fit_gb"]
        ex = st.get("extrapolated_s")
        by = st.get("extrapolated_by", "")
        lines.append(
            f"| {name} | {f['a']:.1f}, {f['b']:.1f} | {f['r2']:.3f} | "
            f"{f['max_rel_resid']:.2f} | {100 * st['s_per_gb_spread']:.0f} % | "
            f"{st['fit_cpu_gb']['b']:.1f} | {st['peak_rss_mb_range'][0]:.0f}-"
            f"{st['peak_rss_mb_range'][1]:.0f} | "
            f"{'-' if ex is None else f'{ex:.0f} (by {by})'} |"
        )
    if summary["dask"]:
        lines += [
            "",
            "| stage | size | workers | s | in-process s | peak RSS MB (max process) | load |",
            "|---|---|---|---|---|---|---|",
        ]
        for d in summary["dask"]:
            ip = d["in_process_s"]
            lines.append(
                f"| {d['stage']} | {d['size']} | {d['workers']} | {d['seconds']:.1f} | "
                f"{'-' if ip is None else f'{ip:.1f}'} | {d['peak_rss_mb']:.0f} | "
                f"{d['load_avg_end']:.1f} |"
            )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", default="0.25,0.5,1,2", help="ladder of movie sizes in GB")
    p.add_argument("--candidates-per-gb", type=float, default=10000)
    p.add_argument("--frames", type=int, default=1000, help="frames of every ladder size")
    p.add_argument(
        "--sizes", default=None, help="FRAMES:HEIGHT:WIDTH:CANDIDATES,... (instead of --gb)"
    )
    p.add_argument(
        "--stages",
        default=",".join(DEFAULT_STAGES),
        help=f"comma-separated subset of {','.join(STAGES)} (ingest is required)",
    )
    p.add_argument(
        "--dask-compare",
        type=float,
        default=None,
        metavar="GB",
        help="at the ladder size closest to GB, rerun preprocess and features with "
        "--workers 1 and 2",
    )
    p.add_argument("--workers", default="1,2", help="worker counts for --dask-compare")
    p.add_argument("--generator", default="fast", choices=("fast", "synth"))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument(
        "--extrapolate",
        default="10000:1000:1000:100000",
        help="FRAMES:HEIGHT:WIDTH:CANDIDATES to evaluate the fits at (20 GB)",
    )
    p.add_argument("--workdir", default=str(REPO.parent / "bench_scale_tmp"))
    p.add_argument("--json", default=None, help="write rows, summary and machine info here")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--report",
        default=None,
        metavar="JSON[,JSON...]",
        help="only print the tables of earlier runs' --json files (rows pooled; "
        "with the joint model over all of them)",
    )
    p.add_argument("--_stage", help=argparse.SUPPRESS)
    p.add_argument("--_store", help=argparse.SUPPRESS)
    p.add_argument("--_movie", help=argparse.SUPPRESS)
    p.add_argument("--_extraction", help=argparse.SUPPRESS)
    p.add_argument("--_workers", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._stage:
        print(
            json.dumps(
                run_stage(
                    args._stage,
                    args._store,
                    args._movie,
                    args._extraction,
                    args.device,
                    args._workers,
                )
            )
        )
        return 0
    extrapolate = parse_sizes(args.extrapolate)[0] if args.extrapolate else None
    if args.report:
        rows = []
        for f in args.report.split(","):
            data = json.loads(Path(f).read_text())
            rows += data["rows"]
            m = data["machine"]
            print(f"{f}: load average start {m['load_avg_start']}, end {m['load_avg_end']}")
        print(table(summarise(rows, extrapolate)))
        for key in ("seconds", "cpu_s"):
            print(model_table(joint_model(rows, extrapolate, key), key))
        return 0
    sizes = (
        parse_sizes(args.sizes)
        if args.sizes
        else ladder([float(g) for g in args.gb.split(",")], args.candidates_per_gb, args.frames)
    )
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    workers = tuple(int(w) for w in args.workers.split(","))
    cmp_i = (
        None
        if args.dask_compare is None
        else int(np.argmin([abs(s.movie_bytes / 1e9 - args.dask_compare) for s in sizes]))
    )
    workdir = Path(args.workdir)
    made = not workdir.exists()
    info = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_avg_start": os.getloadavg(),
        "cpus": os.cpu_count(),
        "argv": sys.argv[1:] if argv is None else list(argv),
    }
    rows = []
    try:
        for i, size in enumerate(sizes):
            rows += measure(
                size,
                workdir,
                stages=stages,
                device=args.device,
                generator=args.generator,
                seed=args.seed,
                keep=args.keep,
                dask_workers=workers if i == cmp_i else (),
            )
    finally:
        if made and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    info["load_avg_end"] = os.getloadavg()
    summary = summarise(rows, extrapolate)
    print(table(summary))
    print(f"load average start {info['load_avg_start']}, end {info['load_avg_end']}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": info, "rows": rows, "summary": summary}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
