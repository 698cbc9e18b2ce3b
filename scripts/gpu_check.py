"""Every GPU figure in one short run (issue 12): ``pytest -m gpu``, then each GPU benchmark,
written to one markdown table and one JSON file.

    python scripts/gpu_check.py                       # full sizes; < 8 minutes on an H100/H200
    python scripts/gpu_check.py --quick               # a small smoke run
    python scripts/gpu_check.py --out benchmarks/gpu_check   # -> .md + .json (the default)

Parts, each in its own process (so its peak memory is its own), each with a time budget inside
one deadline (``--budget-s``, default 465 s), reusing the benchmark scripts beside this one:

- ``tests``: ``python -m pytest -m gpu`` (the CuPy / torch parity tests);
- ``preprocess``: a >= 8 GB synthetic uint16 movie (``bench_preprocess.py``): raw sequential
  reads of the file (through the page cache and with ``O_DIRECT``; the faster counts) against
  the movie pass, each from a cold page cache (``posix_fadvise``, else
  ``drop_caches`` where permitted; the report gives the share of the file still cached before
  each read, measured with ``mincore``), with peak host memory (anonymous RSS, and VmHWM which
  counts mapped file pages) and peak GPU memory;
- ``features``: 100,000 candidates x 10,000 frames (``bench_features.py``);
- ``al``: one active-learning update + next query at 1,000,000 candidates
  (``bench_al_latency.py``, no scikit-learn baseline);
- ``embed``: the shipped encoder over the 100,000 candidates of the features' store.

The movie and the feature store are written while the GPU tests run (their writing is not
timed). With ``--device auto`` (the default) on a machine where the GPU cannot run both CuPy
and torch, the CPU halves run at small sizes and the report says first, in bold, that the GPU
half did not run and why; ``--device cuda`` there stops with that reason. Exit status: 0 when
every part ran (whether or not it met its target), 1 when a part failed or ran out of time.

On a lent device machine (no network): ``../shared/tools/gpu_wheels.sh`` here, then one run
with ``carry=[".whl"]`` (see the README, "GPU workstations").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
PARTS = ("tests", "preprocess", "features", "al", "embed")


@dataclass(frozen=True)
class Sizes:
    movie_gb: float  # synthetic uint16 movie (decimal GB)
    fov: int  # its height = width (px)
    movie_candidates: int
    n: int  # feature / embedding candidates
    t: int  # frames per trace
    al_n: int  # active-learning candidates
    al_updates: int


SIZES = {
    # the targets: >= 8 GB movie, 100,000 x 10,000 features, 1,000,000 candidates
    "gpu": Sizes(8.1, 1024, 5000, 100_000, 10_000, 1_000_000, 15),
    "gpu-quick": Sizes(0.5, 512, 1000, 10_000, 2_000, 100_000, 8),
    "cpu": Sizes(1.0, 1024, 2000, 5_000, 2_000, 100_000, 8),
    "cpu-quick": Sizes(0.2, 512, 500, 1_000, 1_000, 20_000, 6),
}
#: seconds each part may take at most (the preparation jobs run beside the GPU tests)
BUDGET_S = {
    "prep_movie": 170,
    "prep_features": 260,
    "tests": 150,
    "preprocess": 150,
    "al": 60,
    "features": 160,
    "embed": 120,
}
#: seconds kept for each later part when an earlier one gets its timeout
MIN_S = {"preprocess": 30, "al": 20, "features": 40, "embed": 30}
TARGETS = {
    "tests": "all pass",
    "preprocess": "pass >= 0.9 x raw read; host memory < 2 GB",
    "features": "< 120 s at 100,000 x 10,000",
    "al": "update + next query < 50 ms at 1,000,000",
    "embed": "(no target: measured)",
}
CPU_TARGETS = {
    "preprocess": "CPU: pass >= 1.2 GB/s on 2 idle cores",
    "features": "CPU: < 600 s, < 2 GB at 100,000 x 10,000",
    "al": "CPU: < 50 ms at 100,000",
}


# ----------------------------------------------------------------------------- measuring
class _DevicePeak:
    """Peak used GPU memory (whole device, above its use at the start; MB), sampled every
    50 ms through CuPy (``arrays``) or torch; None on the CPU."""

    def __init__(self, device: str, part: str):
        self.peak = 0
        self._info = None
        if device == "cuda":
            if part == "arrays":
                import cupy

                self._info = cupy.cuda.runtime.memGetInfo
            else:
                import torch

                self._info = torch.cuda.mem_get_info
            self._free0 = self._info()[0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self):
        if self._info is not None:
            self.peak = max(self.peak, self._free0 - self._info()[0])

    def _run(self):
        while not self._stop.wait(0.05):
            self._sample()

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join()
        self._sample()
        return None if self._info is None else self.peak / 2**20


def _measured(fn, device: str, part: str) -> dict:
    """Run ``fn()`` -> dict with peak host memory (anonymous RSS sampled, and VmHWM) and peak
    GPU memory, the wall seconds and the load average before / after."""
    from bench_scale import _peak_rss_mb, _RssSampler

    load0 = os.getloadavg()[0]
    rss = _RssSampler(0.05)
    dev = _DevicePeak(device, part)
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    dev_mb = dev.stop()
    rss.stop()
    return {
        **out,
        "seconds": round(seconds, 2),
        # anonymous RSS: None where the kernel does not split RSS (gVisor); then sampled VmRSS
        "peak_anon_rss_mb": round(rss.anon_mb) if rss.anon_mb else None,
        "peak_sampled_rss_mb": round(rss.rss_mb),
        "peak_rss_mb": round(_peak_rss_mb()[0]),
        "device_peak_mb": None if dev_mb is None else round(dev_mb),
        "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


# ----------------------------------------------------------------------------- the jobs
def job_prep_movie(p: dict) -> dict:
    import bench_preprocess

    args = argparse.Namespace(
        dir=p["work"], fov=p["fov"], candidates=p["candidates"], gen_workers=p["gen_workers"]
    )
    return bench_preprocess.prepare(p["movie_gb"], args)


def job_preprocess(p: dict) -> dict:
    import bench_preprocess

    args = argparse.Namespace(
        device=p["device"], max_memory=None, fov=p["fov"], candidates=p["candidates"]
    )
    t0 = time.perf_counter()
    row = bench_preprocess.measure(p["prep"], args)
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def job_prep_features(p: dict) -> dict:
    import bench_features

    path, side, build_s = bench_features.build(p["n"], p["t"], Path(p["work"]))
    return {"path": str(path), "fov": side, "build_s": round(build_s, 1)}


def job_features(p: dict) -> dict:
    import bench_features

    return _measured(
        lambda: bench_features.measure(Path(p["path"]), p["device"]), p["device"], "arrays"
    )


def job_al(p: dict) -> dict:
    import bench_al_latency

    return _measured(
        lambda: bench_al_latency.bench_size(p["n"], p["updates"], p["device"], sk_repeats=0),
        p["device"],
        "torch",
    )


def job_embed(p: dict) -> dict:
    from actsort_gpu.embed import embed
    from actsort_gpu.store import SortStore

    def run():
        out = embed(p["path"], device=p["device"])
        stage = SortStore.open(p["path"]).attrs["stages"]["embed"]
        return {"n": int(out.shape[0]), "dims": int(out.shape[1]), "device": stage["device"]}

    return _measured(run, p["device"], "torch")


JOBS = {
    "prep_movie": job_prep_movie,
    "preprocess": job_preprocess,
    "prep_features": job_prep_features,
    "features": job_features,
    "al": job_al,
    "embed": job_embed,
}


def _run_job(name: str, params_json: str, result_path: str) -> int:
    """Worker side: run one job, write its result JSON to ``result_path``."""
    sys.path[:0] = [str(SCRIPTS), str(REPO)]
    params = json.loads(params_json)
    if params.get("torch_threads"):
        import torch

        torch.set_num_threads(int(params["torch_threads"]))
    out = JOBS[name](params)
    Path(result_path).write_text(json.dumps(out, default=str))
    return 0


class Job:
    """A part running in its own process group (killed whole when it runs out of time)."""

    def __init__(self, name: str, work: Path, params: dict | None = None, cmd=None):
        self.name = name
        self.result_path = work / f"{name}.result.json"
        self.log_path = work / f"{name}.log"
        if cmd is None:
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--job",
                name,
                "--params",
                json.dumps(params),
                "--result",
                str(self.result_path),
            ]
        self.t0 = time.perf_counter()
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # a killed part's log is complete
        )
        self.outcome: dict | None = None

    def wait(self, timeout_s: float) -> dict:
        if self.outcome is not None:
            return self.outcome
        try:
            rc = self.proc.wait(timeout=max(timeout_s, 0.1))
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            status = f"timed out after {time.perf_counter() - self.t0:.0f} s"
        self._log.close()
        result = None
        if status == "ok" and self.result_path.is_file():
            result = json.loads(self.result_path.read_text())
        log_tail = self.log_path.read_text(errors="replace").splitlines()[-25:]
        self.outcome = {
            "status": status,
            "wall_s": round(time.perf_counter() - self.t0, 1),
            "result": result,
            "log_tail": log_tail if status != "ok" else log_tail[-5:],
        }
        return self.outcome


_TEST_LINE = re.compile(r"^(\S+::\S+)(?: (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b)?")
_SLOW_LINE = re.compile(r"^([\d.]+)s (setup|call|teardown) +(\S+)")


def _pytest_summary(lines: list[str]) -> dict:
    """Counts, failures and the slowest tests of a ``pytest -v --durations`` log. A run cut
    short (no final line) is counted from its per-test lines, and ``running`` names the test
    that had started and not finished."""
    counts: dict[str, int] = {}
    for line in reversed(lines):
        found = re.findall(
            r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", line
        )
        if found:
            for k, v in found:
                counts[v.rstrip("s") if v.startswith("error") else v] = int(k)
            break
    running = None
    if not counts:
        for line in lines:
            m = _TEST_LINE.match(line)
            if m is None:
                continue
            running = None if m.group(2) else m.group(1)
            if m.group(2):
                counts[m.group(2).lower()] = counts.get(m.group(2).lower(), 0) + 1
    bad = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    slowest = []
    for line in lines:
        m = _SLOW_LINE.match(line)
        if m:
            slowest.append(f"{float(m.group(1)):.1f} s {m.group(3)} ({m.group(2)})")
    return {"counts": counts, "problems": bad[:20], "slowest": slowest[:8], "running": running}


# ----------------------------------------------------------------------------- the run
def _machine(backend) -> dict:
    from actsort_gpu.backend import device_report

    info = {
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "devices": device_report(),
        "gpu": backend.gpu_name,
    }
    for mod in ("numpy", "torch", "cupy"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    return info


def _free_gb(path: Path) -> float:
    return shutil.disk_usage(path).free / 1e9


def run_check(args) -> dict:
    from actsort_gpu.backend import resolve_backend

    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    backend = resolve_backend(args.device, uses=("arrays", "torch"))  # cuda: DeviceError
    gpu = backend.is_gpu
    device = "cuda" if gpu else "cpu"
    preset = ("gpu" if gpu else "cpu") + ("-quick" if args.quick else "")
    sizes = SIZES[preset]
    overrides = {k: getattr(args, k) for k in asdict(sizes) if getattr(args, k, None) is not None}
    sizes = replace(sizes, **overrides)
    parts = [p for p in PARTS if p in args.parts]
    skipped = {}
    if not gpu and "tests" in parts:
        parts.remove("tests")
        skipped["tests"] = {"status": "not run: no GPU", "result": None}
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check-", dir=args.workdir))
    report = {
        "gpu_half_ran": gpu,
        "gpu_reason": backend.reason,
        "device": device,
        "preset": preset,
        "sizes": asdict(sizes),
        "budget_s": args.budget_s,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": _machine(backend),
        "load_avg_start": round(os.getloadavg()[0], 2),
        "parts": dict(skipped),
    }
    threads = None if gpu else 1  # torch on a shared CPU: 1 thread (docs/environment.md)
    gen_workers = max(1, min(8, (os.cpu_count() or 2) - 4))
    common = {"device": device, "torch_threads": threads}
    jobs: dict[str, Job] = {}
    need_gb = (
        ("preprocess" in parts) * sizes.movie_gb * 1.1
        + (bool({"features", "embed"} & set(parts))) * sizes.n * sizes.t * 4.4 / 1e9
        + 1.0
    )
    if _free_gb(work) < need_gb:
        report["note"] = f"{work}: {_free_gb(work):.1f} GB free, {need_gb:.1f} GB needed"
        parts = [p for p in parts if p in ("tests", "al")]
    # --------------------------------------------- phase A: preparation beside the GPU tests
    if "preprocess" in parts:
        jobs["prep_movie"] = Job(
            "prep_movie",
            work,
            {
                "work": str(work),
                "movie_gb": sizes.movie_gb,
                "fov": sizes.fov,
                "candidates": sizes.movie_candidates,
                "gen_workers": gen_workers,
            },
        )
    if {"features", "embed"} & set(parts):
        jobs["prep_features"] = Job(
            "prep_features", work, {"work": str(work), "n": sizes.n, "t": sizes.t}
        )
    if "tests" in parts:
        jobs["tests"] = Job(
            "tests",
            work,
            cmd=[
                sys.executable,
                "-m",
                "pytest",
                "-m",
                "gpu",
                "-v",  # one line per test: a run cut short shows what finished and what hung
                "--durations=8",
                "--durations-min=1",
                "-rfEs",
                "-p",
                "no:cacheprovider",
                "--continue-on-collection-errors",
                str(REPO / "tests"),
            ],
        )

    def remaining(after: list[str]) -> float:
        return deadline - time.perf_counter() - sum(MIN_S.get(p, 0) for p in after)

    def own_budget(job: Job) -> float:
        """What is left of ``job``'s budget, counted from its start."""
        return BUDGET_S[job.name] - (time.perf_counter() - job.t0)

    def run_part(name: str, params: dict, after: list[str]) -> dict:
        left = min(BUDGET_S[name], remaining(after))
        if left < MIN_S.get(name, 10):
            return {"status": "not run: out of time", "result": None}
        return Job(name, work, {**common, **params}).wait(left)

    if "tests" in parts:
        out = jobs["tests"].wait(min(own_budget(jobs["tests"]), remaining(parts[1:])))
        out["summary"] = summary = _pytest_summary(jobs["tests"].log_path.read_text().splitlines())
        counts = summary["counts"]
        if out["status"] == "failed (exit 1)" and counts.get("passed") and not counts.get("failed"):
            # pytest exits 1 for collection errors alone: modules that import what this
            # machine lacks (gradio); they hold no GPU test, and the notes list them
            out["status"] = "ok"
        elif out["status"] == "ok" and not counts.get("passed"):
            out["status"] = "failed (no GPU test passed)"
        report["parts"]["tests"] = out
    # --------------------------------------------- phase B: measurements, one at a time
    if "preprocess" in parts:
        prep = jobs["prep_movie"].wait(
            min(own_budget(jobs["prep_movie"]), remaining([p for p in parts if p != "tests"]))
        )
        if prep["status"] != "ok":
            report["parts"]["preprocess"] = {**prep, "status": f"preparation {prep['status']}"}
        else:
            out = run_part(
                "preprocess",
                {"prep": prep["result"], "fov": sizes.fov, "candidates": sizes.movie_candidates},
                [p for p in ("al", "features", "embed") if p in parts],
            )
            out["prep"] = prep["result"]
            report["parts"]["preprocess"] = out
    if "al" in parts:
        report["parts"]["al"] = run_part(
            "al",
            {"n": sizes.al_n, "updates": sizes.al_updates},
            [p for p in ("features", "embed") if p in parts],
        )
    if {"features", "embed"} & set(parts):
        prep = jobs["prep_features"].wait(
            min(
                own_budget(jobs["prep_features"]),
                remaining([p for p in ("features", "embed") if p in parts]),
            )
        )
        for name in ("features", "embed"):
            if name not in parts:
                continue
            if prep["status"] != "ok":
                report["parts"][name] = {**prep, "status": f"preparation {prep['status']}"}
                continue
            out = run_part(
                name, {"path": prep["result"]["path"]}, ["embed"] if name == "features" else []
            )
            out["prep"] = prep["result"]
            report["parts"][name] = out
    for job in jobs.values():  # a preparation no part waited for: stopped now
        job.wait(0.1)
    report["seconds_total"] = round(time.perf_counter() - t_start, 1)
    report["load_avg_end"] = round(os.getloadavg()[0], 2)
    if args.keep:
        report["workdir"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return report


# ----------------------------------------------------------------------------- the report
def _fmt_mb(v) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _held_mb(r: dict) -> float:
    """Host memory a part held: anonymous RSS, else (kernels that do not split RSS) VmRSS."""
    anon = r.get("peak_anon_rss_mb")
    return (r.get("peak_sampled_rss_mb") or 0) if anon is None else anon


def _host_mb(r: dict) -> str:
    if r.get("peak_anon_rss_mb") is None:
        return f"VmRSS {_fmt_mb(r.get('peak_sampled_rss_mb'))} / {_fmt_mb(r['peak_rss_mb'])}"
    return f"{_fmt_mb(r['peak_anon_rss_mb'])} / {_fmt_mb(r['peak_rss_mb'])}"


def _row(name: str, part: dict, report: dict) -> dict:
    """One table row: size, headline result, target, met, memory, seconds, load, notes."""
    gpu = report["gpu_half_ran"]
    r = part.get("result") or {}
    row = {
        "part": name,
        "status": part["status"],
        "size": "",
        "result": "",
        "target": TARGETS[name] if gpu else CPU_TARGETS.get(name, "-"),
        "met": "n/a",
        "host_mb": "-",
        "device_mb": "-",
        "seconds": f"{part.get('wall_s', 0):.0f}",
        "load": "",
        "notes": "",
    }
    if name == "tests" and part["status"].startswith("not run"):
        row.update(size="pytest -m gpu", result=part["status"], met="not run")
        row["notes"] = report["gpu_reason"] or "CPU asked for (--device cpu)"
        return row
    if name == "tests":
        c = part.get("summary", {}).get("counts", {})
        row["size"] = "pytest -m gpu"
        row["result"] = ", ".join(f"{v} {k}" for k, v in c.items()) or part["status"]
        row["met"] = "yes" if c.get("passed") and not c.get("failed") else "no"
        summary = part.get("summary", {})
        notes = list(summary.get("problems", [])[:5])
        if summary.get("running"):
            notes.append(f"{part['status']} while running {summary['running']}")
        if summary.get("slowest"):
            notes.append("slowest: " + ", ".join(summary["slowest"][:3]))
        row["notes"] = "; ".join(notes)
        return row
    if part["status"] != "ok":
        row["result"] = part["status"]
        row["met"] = "not run"
        row["notes"] = " / ".join(part.get("log_tail", [])[-3:])
        return row
    row["seconds"] = f"{r.get('seconds', part.get('wall_s', 0)):.1f}"
    if name == "preprocess":
        row["size"] = (
            f"{r['size_gb']} GB uint16, {r['frames']:,} x {r['fov']} x {r['fov']}, "
            f"{r['candidates']:,} candidates"
        )
        direct = r.get("raw_direct_read_mb_s")
        row["result"] = (
            f"pass {r['pass_mb_s']:,.0f} MB/s vs raw read {r['raw_read_mb_s']:,.0f} MB/s"
            + (f" buffered, {direct:,.0f} direct" if direct else "")
            + f": ratio to the faster {r['ratio_pass_over_raw']:.2f}"
        )
        row["host_mb"] = _host_mb(r)
        row["device_mb"] = _fmt_mb(r.get("device_peak_mb"))
        row["seconds"] = f"{r['pass_s']:.1f} pass, {r['total_s']:.1f} stage"
        row["load"] = f"{r['load_avg_end']}"
        if gpu and r["size_gb"] >= 8:
            ok = r["ratio_pass_over_raw"] >= 0.9 and _held_mb(r) < 2048
            row["met"] = "yes" if ok else "no"
        cached = [
            (k, (r.get(k) or {}).get("resident"), (r.get(k) or {}).get("method"))
            for k in ("cache_before_raw", "cache_before_pass")
        ]
        note = []
        for k, frac, how in cached:
            what = k.replace("cache_before_", "")
            if frac is None:
                note.append(f"{what}: page cache state unknown ({how})")
            elif frac > 0.01:
                note.append(f"{what}: page cache NOT dropped ({frac:.0%} cached; {how})")
            else:
                note.append(f"{what}: cold ({how})")
        row["notes"] = (
            "; ".join(note) + f"; {r['cpu_s_per_gb']} CPU-s/GB; movie written in {r['write_s']} s"
        )
    elif name == "features":
        row["size"] = f"{r['n']:,} x {r['t']:,}"
        row["result"] = f"{r['total_s']:.1f} s ({r['total_s'] / r['n'] * 1000:.3f} s per 1,000)"
        row["host_mb"] = _host_mb(r)
        row["device_mb"] = _fmt_mb(r.get("device_peak_mb"))
        row["load"] = "{} / {}".format(*r["load_avg"])
        if gpu and r["n"] >= 100_000 and r["t"] >= 10_000:
            row["met"] = "yes" if r["total_s"] < 120 else "no"
        top = sorted(r["timings_s"].items(), key=lambda kv: -kv[1])[:3]
        sketch = r.get("similarity_sketch")
        row["notes"] = (
            f"ran on {r['device']} with {r.get('threads', '?')} CPU threads for the host work; "
            f"feature 35 {r.get('similarity_method', 'exact')}"
            + (f" ({100 * sketch['exact_work']:.0f} % of the exact products)" if sketch else "")
            + "; slowest: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in top)
            + f"; store built in {part['prep']['build_s']} s"
        )
    elif name == "al":
        row["size"] = f"{r['n']:,} candidates, {r['n_labelled']:,} labelled"
        row["result"] = (
            f"median {r['ours_update_ms_median']:.1f} ms (p90 {r['ours_update_ms_p90']:.1f}, "
            f"max {r['ours_update_ms_max']:.1f})"
        )
        row["host_mb"] = _host_mb(r)
        row["device_mb"] = _fmt_mb(r.get("device_peak_mb"))
        row["load"] = "{} / {}".format(*r["load_avg"])
        if gpu and r["n"] >= 1_000_000:
            row["met"] = "yes" if r["ours_update_ms_median"] < 50 else "no"
        row["notes"] = f"fit + rescore median {r['ours_fit_rescore_ms_median']:.1f} ms"
    elif name == "embed":
        row["size"] = f"{r['n']:,} candidates -> {r['dims']} dims"
        row["result"] = (
            f"{r['seconds']:.1f} s ({r['n'] / max(r['seconds'], 1e-9):,.0f} candidates/s)"
        )
        row["host_mb"] = _host_mb(r)
        row["device_mb"] = _fmt_mb(r.get("device_peak_mb"))
        row["load"] = "{} / {}".format(*r["load_avg"])
        row["notes"] = f"encoder on {r['device']}; inputs built on the CPU"
    return row


def markdown(report: dict) -> str:
    m = report["machine"]
    if report["gpu_half_ran"]:
        head = (
            f"**GPU half: ran on {m['gpu']} (CuPy {m['cupy']}, torch {m['torch']}), "
            f"sizes '{report['preset']}'.**"
        )
    else:
        head = (
            f"**GPU half: DID NOT RUN ({report['gpu_reason'] or 'CPU asked for'}). Only the CPU "
            f"halves ran, at small sizes ('{report['preset']}'): no figure below is a GPU figure, "
            f"and `pytest -m gpu` was not run.**"
        )
    lines = [
        "# GPU check (`scripts/gpu_check.py`)",
        "",
        head,
        "",
        f"- started {report['started']} on {m['host']} ({m['cpu']}, {m['cpu_count']} CPUs), "
        f"Python {m['python']}, numpy {m['numpy']}, torch {m['torch']}, CuPy {m['cupy']}",
        f"- devices (`--device auto`): arrays {m['devices']['arrays']}; torch "
        f"{m['devices']['torch']}",
        f"- total {report['seconds_total']} s (budget {report['budget_s']} s); load average "
        f"(1 min) {report['load_avg_start']} at the start, {report['load_avg_end']} at the end",
    ]
    if report.get("note"):
        lines.append(f"- {report['note']}")
    lines += [
        "",
        "| part | size | result | target | met | peak host MB (anon / VmHWM) | peak GPU MB "
        "| seconds | load avg | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, part in report["parts"].items():
        r = _row(name, part, report)
        cells = [
            r["part"],
            r["size"],
            r["result"],
            r["target"],
            r["met"],
            r["host_mb"],
            r["device_mb"],
            r["seconds"],
            r["load"],
            r["notes"],
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    lines += [
        "",
        "Peak host memory: anonymous RSS sampled every 50 ms (the memory a part holds; 'VmRSS' "
        "where the kernel does not report it, e.g. gVisor) / VmHWM (also counts mapped file "
        "pages: the movie, the scratch file). Peak GPU memory: whole "
        "device in use above its use at the part's start (CUDA contexts included). 'met' is "
        "judged only at the issue's sizes on a GPU.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out",
        default=str(REPO / "benchmarks" / "gpu_check"),
        help="path stem: writes STEM.md and STEM.json (default benchmarks/gpu_check)",
    )
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    p.add_argument("--budget-s", type=float, default=465.0, help="deadline of the whole run")
    p.add_argument("--workdir", default=None, help="where the movie and stores go (default tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    for k, kind in (
        ("movie_gb", float),
        ("fov", int),
        ("movie_candidates", int),
        ("n", int),
        ("t", int),
        ("al_n", int),
        ("al_updates", int),
    ):
        p.add_argument(
            f"--{k.replace('_', '-')}",
            dest=k,
            type=kind,
            default=None,
            help="override the preset's size",
        )
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("--params", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.job:
        return _run_job(args.job, args.params, args.result)
    sys.path[:0] = [str(SCRIPTS), str(REPO)]
    # the parts' processes (and the scripts' own subprocesses) import actsort_gpu from here
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
    )
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    bad = [s for s in args.parts if s not in PARTS]
    if bad:
        p.error(f"--parts: unknown {bad}; choose from {PARTS}")
    from actsort_gpu.backend import DeviceError

    try:
        report = run_check(args)
    except DeviceError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 1
    stem = Path(args.out)
    if stem.suffix in (".md", ".json"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    print(text)
    print(f"wrote {stem.with_suffix('.md')} and {stem.with_suffix('.json')}")
    failed = [k for k, v in report["parts"].items() if v["status"] not in ("ok", "not run: no GPU")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
