"""Fault campaign (issue 16): bad inputs, kills, full / read-only disks, journal corruption and
concurrent labelling, as a repeatable script printing one table row per case.

    python scripts/fault_campaign.py [--fast] [--in-process] [--markdown FILE] [--keep DIR]

Every case builds its own copy of a tiny synthetic recording (a 150 x 24 x 24 uint16 movie,
8 candidates, as a Suite2p plane folder and a generic .npz) and runs the ``actsort`` command
(in a subprocess by default, so a segfault or SIGBUS shows as a negative exit code; in this
process with ``--in-process``) or the library. Columns:

case : what was done;  exit : the command's exit code (``-9`` killed on purpose, ``-`` a
library call that returned);  message : the first line of the error (or of the outcome),
paths shortened to their file name;  clean : ``yes`` when the outcome is what it must be
(success, or one line naming the file and no traceback, no crash);  data lost : ``yes`` when
an input, an acknowledged label or a finished store changed or vanished, or a result is
silently wrong.

``--fast`` runs only the cases marked fast (the ones ``tests/test_fault_campaign.py`` runs);
the kill, tmpfs (disk full, read-only; needs root to mount) and 4-thread cases are not fast.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

T, H, W, N = 150, 24, 24, 8
CENTRES = [(5, 5), (5, 18), (12, 12), (18, 5), (18, 18), (8, 12), (15, 9), (12, 20)]


# ---------------------------------------------------------------------------- results
@dataclass
class Outcome:
    case: str
    exit: str
    message: str
    clean: bool
    lost: bool


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Ctx], Outcome]
    fast: bool = True
    root: bool = False  # needs to mount a tmpfs


def _short(text: str, root: Path) -> str:
    """One line, temporary paths cut to their last component, at most 150 characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = re.sub(re.escape(str(root)) + r"[^\s:'\"]*/", "", line)
    line = line.replace(str(root), "")
    return line if len(line) <= 150 else line[:147] + "..."


def _digest(path: Path) -> str:
    """Content hash of a file or folder (names and bytes), '' when missing."""
    path = Path(path)
    if not path.exists():
        return ""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- inputs
def make_inputs(root: Path, seed: int = 0) -> dict[str, Path]:
    """The synthetic recording: movie.npy, suite2p/plane0/, ext.npz (same candidates)."""
    from actsort_gpu.io.npz import write_npz

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    movie = rng.normal(100, 2, (T, H, W)).astype(np.float32)
    fps = []
    for r, c in CENTRES:
        fp = np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 1.5**2))
        fp[fp < 0.05] = 0
        tr = rng.normal(0, 0.05, T)
        for e in rng.choice(np.arange(10, T - 10), 5, replace=False):
            tr[e : e + 6] += 8 * np.exp(-np.arange(6) / 2)
        movie += 20 * tr[:, None, None].astype(np.float32) * fp[None].astype(np.float32)
        fps.append(fp)
    movie = np.clip(np.round(movie), 0, 65535).astype(np.uint16)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "movie.npy", movie)
    plane = root / "suite2p" / "plane0"
    plane.mkdir(parents=True, exist_ok=True)
    stat = []
    for fp in fps:
        ys, xs = np.nonzero(fp)
        stat.append({"ypix": ys, "xpix": xs, "lam": fp[ys, xs].astype(np.float32), "skew": 1.0})
    np.save(plane / "stat.npy", np.array(stat, dtype=object), allow_pickle=True)
    ops = {"Ly": H, "Lx": W, "fs": 10.0, "meanImg": movie.mean(axis=0, dtype=np.float64)}
    np.save(plane / "ops.npy", ops, allow_pickle=True)
    traces = np.array([movie.reshape(T, -1) @ fp.ravel() / fp.sum() for fp in fps], np.float32)
    np.save(plane / "F.npy", traces)
    np.save(plane / "Fneu.npy", 0.1 * traces)
    np.save(plane / "iscell.npy", np.ones((N, 2), np.float32))
    footprints = sp.csr_matrix(np.array([fp.ravel() for fp in fps], np.float32))
    write_npz(root / "ext.npz", footprints, traces, H, W, fs_hz=10.0)
    return {"movie": root / "movie.npy", "suite2p": plane, "npz": root / "ext.npz"}


def _npz_parts(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


class Ctx:
    """One case's working folder, its inputs, and how to run the command."""

    def __init__(self, root: Path, template: Path, in_process: bool):
        self.root = root
        self.in_process = in_process
        shutil.copytree(template, root / "in")
        self.movie = root / "in" / "movie.npy"
        self.plane = root / "in" / "suite2p" / "plane0"
        self.npz = root / "in" / "ext.npz"
        self.store = root / "s.actsort"
        self.leave_bytes = 450_000  # free bytes left by the disk-full-mid-write case

    def inputs_digest(self) -> str:
        return _digest(self.root / "in")

    def cli(self, *args: str, timeout: float = 300) -> tuple[str, str, bool]:
        """(exit code, stderr, crashed: a signal or a traceback) of ``actsort -q ARGS``."""
        args = ("-q", *map(str, args))
        if not self.in_process:
            env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
            proc = subprocess.run(
                [sys.executable, "-m", "actsort_gpu.cli", *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
            )
            crashed = proc.returncode < 0 or "Traceback" in proc.stderr
            return str(proc.returncode), proc.stderr, crashed
        from actsort_gpu.cli import main

        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(list(args))
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException as exc:  # noqa: BLE001 - the campaign reports it as a crash
            return "exc", f"Traceback: {type(exc).__name__}: {exc}", True
        return str(code), err.getvalue(), False

    def ingest(self, *extra: str, movie=None, extraction=None, out=None):
        return self.cli(
            "ingest",
            "--movie",
            movie or self.movie,
            "--extraction",
            extraction or self.plane,
            "--out",
            out or self.store,
            *extra,
        )

    def built_store(self, features: bool = True) -> Path:
        """Ingest + preprocess (+ features) of the good inputs, through the library."""
        from actsort_gpu.ingest import ingest_files
        from actsort_gpu.preprocess import preprocess

        with _quiet_logs():
            ingest_files(self.movie, self.plane, self.store)
            preprocess(self.store, device="cpu")
            if features:
                from actsort_gpu.features import compute_features

                compute_features(self.store, device="cpu")
        return self.store


@contextlib.contextmanager
def _quiet_logs():
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "error:" in ln or ln.startswith("Traceback"):
            return ln.split("error: ", 1)[-1]
    return lines[-1] if lines else ""


def refused(
    ctx: Ctx, name: str, result, *, names: str, before: str, extra_lost: bool = False
) -> Outcome:
    """Outcome of a command that must fail with one line naming ``names`` and lose nothing."""
    code, stderr, crashed = result
    msg = _error_line(stderr)
    error_lines = [ln for ln in stderr.splitlines() if "error:" in ln]
    clean = (
        not crashed
        and code in ("1", "2")
        and names in msg
        and len(error_lines) == 1
        and "Traceback" not in stderr
    )
    lost = extra_lost or ctx.inputs_digest() != before
    return Outcome(name, code, _short(msg, ctx.root), clean, lost)


def accepted(ctx: Ctx, name: str, result, message: str, *, ok: bool, lost: bool) -> Outcome:
    code, stderr, crashed = result
    clean = not crashed and code == "0" and ok
    text = message if clean else _error_line(stderr) or message
    return Outcome(name, code, _short(text, ctx.root), clean, lost)


# ---------------------------------------------------------------------------- ingest: --out
def case_out_is_suite2p(ctx: Ctx) -> Outcome:
    before = ctx.inputs_digest()
    r = ctx.ingest("--overwrite", out=ctx.plane)
    return refused(
        ctx,
        "--overwrite --out = the Suite2p folder being ingested",
        r,
        names="plane0",
        before=before,
    )


def case_out_is_movie(ctx: Ctx) -> Outcome:
    before = ctx.inputs_digest()
    r = ctx.ingest("--overwrite", out=ctx.movie)
    return refused(ctx, "--overwrite --out = the movie", r, names="movie.npy", before=before)


def case_out_holds_movie(ctx: Ctx) -> Outcome:
    before = ctx.inputs_digest()
    r = ctx.ingest("--overwrite", out=ctx.root / "in")
    return refused(
        ctx, "--overwrite --out = the folder holding the inputs", r, names="in", before=before
    )


def case_out_is_document_folder(ctx: Ctx) -> Outcome:
    folder = ctx.root / "thesis"
    folder.mkdir()
    (folder / "chapter1.docx").write_bytes(b"years of work")
    before = ctx.inputs_digest()
    r = ctx.ingest("--overwrite", out=folder)
    lost = not (folder / "chapter1.docx").is_file()
    return refused(
        ctx,
        "--overwrite --out = a folder with a document",
        r,
        names="thesis",
        before=before,
        extra_lost=lost,
    )


def case_out_is_labelled_store(ctx: Ctx) -> Outcome:
    r = ctx.ingest()
    journal = ctx.store / "labels" / "journal.jsonl"
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text('{"candidate": 0}\n')
    before = ctx.inputs_digest() + _digest(journal)
    r = ctx.ingest("--overwrite")
    lost = ctx.inputs_digest() + _digest(journal) != before
    return refused(
        ctx,
        "--overwrite --out = a store holding labels",
        r,
        names="s.actsort",
        before=ctx.inputs_digest(),
        extra_lost=lost,
    )


def case_out_is_store(ctx: Ctx) -> Outcome:
    ctx.ingest()
    before = ctx.inputs_digest()
    r = ctx.ingest("--overwrite")
    from actsort_gpu.store import SortStore

    ok = SortStore.open(ctx.store).stage_status("ingest") == "complete"
    return accepted(
        ctx,
        "--overwrite --out = an existing store without labels (replaced)",
        r,
        "replaced",
        ok=ok,
        lost=ctx.inputs_digest() != before,
    )


_INGEST_KILLED = r"""
import sys, time
from actsort_gpu import ingest
write = ingest._write_traces
def slow(*args):
    write(*args)
    print("traces written", flush=True)
    time.sleep(60)
ingest._write_traces = slow
ingest.ingest_files(sys.argv[1], sys.argv[2], sys.argv[3], overwrite=True)
"""


def case_overwrite_fails_keeps_store(ctx: Ctx) -> Outcome:
    """--overwrite of a finished store with an extraction that fails half-way (NaN traces):
    the store there keeps its preprocess and features."""
    ctx.built_store()
    data = dict(np.load(ctx.npz))
    data["traces"] = data["traces"].astype(np.float64)
    data["traces"][-1, -1] = np.nan
    bad = ctx.root / "in" / "nan.npz"
    np.savez(bad, **data)
    before = _digest(ctx.root / "in" / "movie.npy") + _digest(ctx.store)
    r = ctx.ingest("--overwrite", extraction=bad)
    lost = _digest(ctx.root / "in" / "movie.npy") + _digest(ctx.store) != before
    left = [p.name for p in ctx.root.iterdir() if p.name.startswith(".")]
    return refused(
        ctx,
        "--overwrite of a featurised store, the new traces hold a NaN (old store kept)",
        r,
        names="nan.npz",
        before=ctx.inputs_digest(),
        extra_lost=lost or bool(left),
    )


def case_kill_ingest_overwrite(ctx: Ctx) -> Outcome:
    """kill -9 while `ingest --overwrite` writes: the featurised store there is untouched, and
    the next ingest clears the half-built folder left beside it."""
    ctx.built_store()
    before = _digest(ctx.store)
    proc = subprocess.Popen(
        [sys.executable, "-c", _INGEST_KILLED, str(ctx.movie), str(ctx.plane), str(ctx.store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    proc.stdout.readline()  # the traces are written; the store is not yet moved into place
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = sorted(p.name for p in ctx.root.iterdir() if p.name.startswith("."))
    kept = _digest(ctx.store) == before
    r = ctx.ingest("--overwrite")
    tidy = not any(p.name.startswith(".") for p in ctx.root.iterdir())
    from actsort_gpu.store import SortStore

    ok = (
        kept
        and tidy
        and bool(left)
        and SortStore.open(ctx.store).stage_status("ingest") == ("complete")
    )
    msg = (
        f"old store {'untouched' if kept else 'CHANGED'}; {len(left)} half-built folder(s) "
        f"beside it, {'removed' if tidy else 'NOT removed'} by the next ingest"
    )
    return Outcome(
        "kill -9 during ingest --overwrite of a featurised store, then ingest again",
        str(proc.returncode),
        msg,
        ok and proc.returncode == -9 and r[0] == "0",
        not kept,
    )


# ---------------------------------------------------------------------------- ingest: npz
def _npz_case(ctx: Ctx, name: str, names: str = "ext.npz", **changes) -> Outcome:
    parts = _npz_parts(ctx.npz)
    parts.update(changes)
    bad = ctx.root / "in" / "ext.npz"
    np.savez(bad, **parts)
    before = ctx.inputs_digest()
    r = ctx.ingest(extraction=bad)
    stored = ctx.store.exists()
    return refused(ctx, name, r, names=names, before=before, extra_lost=stored)


def case_npz_index_out_of_range(ctx: Ctx) -> Outcome:
    idx = _npz_parts(ctx.npz)["footprints_indices"].copy()
    idx[3] = H * W + 5
    return _npz_case(ctx, ".npz CSR index >= H*W", footprints_indices=idx)


def case_npz_negative_index(ctx: Ctx) -> Outcome:
    idx = _npz_parts(ctx.npz)["footprints_indices"].astype(np.int64)
    idx[0] = -1
    return _npz_case(ctx, ".npz CSR negative index", footprints_indices=idx)


def case_npz_indptr_decreasing(ctx: Ctx) -> Outcome:
    ptr = _npz_parts(ctx.npz)["footprints_indptr"].copy()
    ptr[2], ptr[3] = ptr[3], ptr[2]
    return _npz_case(ctx, ".npz CSR indptr not monotonic", footprints_indptr=ptr)


def case_npz_indptr_end(ctx: Ctx) -> Outcome:
    ptr = _npz_parts(ctx.npz)["footprints_indptr"].copy()
    ptr[-1] -= 3
    return _npz_case(ctx, ".npz CSR indptr[-1] != nnz", footprints_indptr=ptr)


def case_npz_huge_hw(ctx: Ctx) -> Outcome:
    return _npz_case(
        ctx,
        ".npz height x width 200000 x 200000",
        height=np.int64(200_000),
        width=np.int64(200_000),
    )


def case_npz_object_traces(ctx: Ctx) -> Outcome:
    parts = _npz_parts(ctx.npz)
    parts["traces"] = np.array([np.zeros(3), np.zeros(5)] * 4, dtype=object)
    bad = ctx.root / "in" / "ext.npz"
    np.savez(bad, **parts)  # an object array (pickled): refused by allow_pickle=False
    before = ctx.inputs_digest()
    return refused(
        ctx, ".npz object-dtype traces", ctx.ingest(extraction=bad), names="ext.npz", before=before
    )


def case_npz_wrong_trace_rows(ctx: Ctx) -> Outcome:
    tr = _npz_parts(ctx.npz)["traces"]
    return _npz_case(ctx, ".npz traces for N-1 candidates", traces=tr[:-1])


def case_npz_nan_traces(ctx: Ctx) -> Outcome:
    tr = _npz_parts(ctx.npz)["traces"].copy()
    tr[2, 7] = np.nan
    return _npz_case(ctx, ".npz NaN in traces (default --nonfinite error)", traces=tr)


def case_npz_truncated(ctx: Ctx) -> Outcome:
    data = ctx.npz.read_bytes()
    ctx.npz.write_bytes(data[: len(data) // 2])
    before = ctx.inputs_digest()
    return refused(
        ctx, ".npz truncated", ctx.ingest(extraction=ctx.npz), names="ext.npz", before=before
    )


# ---------------------------------------------------------------------------- ingest: suite2p
def _suite2p_case(ctx: Ctx, name: str, names: str, edit: Callable[[Path], None]) -> Outcome:
    edit(ctx.plane)
    before = ctx.inputs_digest()
    r = ctx.ingest()
    return refused(ctx, name, r, names=names, before=before, extra_lost=ctx.store.exists())


def _ops(plane: Path, **changes) -> None:
    ops = np.load(plane / "ops.npy", allow_pickle=True).item()
    ops.update(changes)
    np.save(plane / "ops.npy", ops, allow_pickle=True)


def case_ops_lying_30000(ctx: Ctx) -> Outcome:
    def edit(plane):
        _ops(
            plane,
            Ly=30_000,
            Lx=30_000,
            yrange=[0, 10],
            xrange=[0, 10],
            max_proj=np.zeros((10, 10), np.float32),
        )

    t0 = time.perf_counter()
    out = _suite2p_case(ctx, "Suite2p ops.npy Ly = Lx = 30,000", "ops.npy", edit)
    out.message += f" [{time.perf_counter() - t0:.1f} s]"
    return out


def case_ops_lying_200000(ctx: Ctx) -> Outcome:
    return _suite2p_case(
        ctx,
        "Suite2p ops.npy Ly = Lx = 200,000",
        "ops.npy",
        lambda plane: _ops(plane, Ly=200_000, Lx=200_000),
    )


def case_ypix_xpix_mismatch(ctx: Ctx) -> Outcome:
    def edit(plane):
        stat = np.load(plane / "stat.npy", allow_pickle=True)
        stat[3]["xpix"] = stat[3]["xpix"][:-2]
        np.save(plane / "stat.npy", stat, allow_pickle=True)

    return _suite2p_case(ctx, "Suite2p stat.npy ypix / xpix lengths differ", "stat.npy", edit)


def case_stat_garbage(ctx: Ctx) -> Outcome:
    return _suite2p_case(
        ctx,
        "Suite2p stat.npy random bytes",
        "stat.npy",
        lambda plane: (plane / "stat.npy").write_bytes(os.urandom(4000)),
    )


def case_f_truncated(ctx: Ctx) -> Outcome:
    def edit(plane):
        data = (plane / "F.npy").read_bytes()
        (plane / "F.npy").write_bytes(data[: len(data) - 100])

    return _suite2p_case(ctx, "Suite2p F.npy truncated", "F.npy", edit)


def case_f_wrong_rows(ctx: Ctx) -> Outcome:
    def edit(plane):
        np.save(plane / "F.npy", np.load(plane / "F.npy")[:-1])
        np.save(plane / "Fneu.npy", np.load(plane / "Fneu.npy")[:-1])

    return _suite2p_case(ctx, "Suite2p F.npy with N-1 rows", "F.npy", edit)


def case_ops_not_dict(ctx: Ctx) -> Outcome:
    return _suite2p_case(
        ctx,
        "Suite2p ops.npy not a dict",
        "ops.npy",
        lambda plane: np.save(plane / "ops.npy", np.arange(3)),
    )


# ---------------------------------------------------------------------------- ingest: movie
def _movie_case(ctx: Ctx, name: str, movie: Path, *extra: str, names: str) -> Outcome:
    before = ctx.inputs_digest()
    r = ctx.ingest(*extra, movie=movie)
    return refused(ctx, name, r, names=names, before=before, extra_lost=ctx.store.exists())


def case_movie_one_frame(ctx: Ctx) -> Outcome:
    one = ctx.root / "in" / "one.npy"
    np.save(one, np.load(ctx.movie)[:1])
    return _movie_case(ctx, "1-frame movie (150x 'downsampling')", one, names="one.npy")


def case_movie_seven_frames(ctx: Ctx) -> Outcome:
    seven = ctx.root / "in" / "seven.npy"
    np.save(seven, np.load(ctx.movie)[:7])
    return _movie_case(ctx, "7-frame movie (21x 'downsampling')", seven, names="seven.npy")


def case_movie_wrong_hw(ctx: Ctx) -> Outcome:
    other = ctx.root / "in" / "wide.npy"
    np.save(other, np.zeros((T, H, W + 3), np.uint16))
    return _movie_case(ctx, "movie of another H x W", other, names="wide.npy")


def case_movie_other_recording(ctx: Ctx) -> Outcome:
    """Same shape, other content (another session with the same acquisition settings: here
    the cells sit 7 and 5 px away)."""
    other = ctx.root / "in" / "other.npy"
    np.save(other, np.roll(np.load(ctx.movie), (7, 5), axis=(1, 2)))
    return _movie_case(ctx, "movie of another recording, same shape", other, names="other.npy")


def case_movie_truncated(ctx: Ctx) -> Outcome:
    data = ctx.movie.read_bytes()
    ctx.movie.write_bytes(data[: len(data) // 3])
    return _movie_case(ctx, "movie .npy truncated", ctx.movie, names="movie.npy")


def case_movie_not_tiff(ctx: Ctx) -> Outcome:
    fake = ctx.root / "in" / "fake.tif"
    fake.write_bytes(os.urandom(5000))
    return _movie_case(ctx, "movie .tif of random bytes", fake, names="fake.tif")


def case_movie_folder_mixed_parts(ctx: Ctx) -> Outcome:
    """A folder of TIFF parts whose second part holds float32 frames (the first uint16)."""
    import tifffile

    folder = ctx.root / "in" / "parts"
    folder.mkdir()
    frames = np.load(ctx.movie)
    tifffile.imwrite(folder / "part1.tif", frames[: T // 2])
    tifffile.imwrite(folder / "part2.tif", frames[T // 2 :].astype(np.float32))
    return _movie_case(ctx, "TIFF folder: part 2 float32, part 1 uint16", folder, names="part2.tif")


def _movie_choice_case(
    name: str, build: Callable[[Ctx], Path], *flags: str, names: str
) -> Callable[[Ctx], Outcome]:
    """A case that ingests the movie ``build(ctx)`` writes with ``flags`` (a channel, plane or
    rows choice that is missing or wrong): refused naming ``names``, nothing written."""

    def run(ctx: Ctx) -> Outcome:
        return _movie_case(ctx, name, build(ctx), *flags, names=names)

    return run


def _two_channels(ctx: Ctx) -> Path:
    """The movie as a two-channel ImageJ hyperstack (TCYX): the recording in channel 1,
    a structureless second channel (ScanImage's red channel without a label)."""
    import tifffile

    green = np.load(ctx.movie)
    red = np.random.default_rng(5).integers(90, 110, green.shape).astype(green.dtype)
    path = ctx.root / "in" / "two_channels.tif"
    tifffile.imwrite(path, np.stack([green, red], 1), imagej=True, metadata={"axes": "TCYX"})
    return path


def _multi_roi(ctx: Ctx) -> Path:
    """The movie as the middle ROI of ScanImage multi-ROI pages: 20 rows of another ROI above
    it and 20 below (structureless)."""
    import tifffile

    movie = np.load(ctx.movie)
    noise = np.random.default_rng(6).integers(90, 110, (T, 20, W)).astype(movie.dtype)
    path = ctx.root / "in" / "meso.tif"
    tifffile.imwrite(path, np.concatenate([noise, movie, noise], axis=1))
    return path


def _scanimage_volumes(ctx: Ctx) -> Path:
    """The movie as channel 1 of plane 0 of ScanImage pages (2 channels, volumes of 2 planes
    and a flyback frame; the settings in the BigTIFF header block)."""
    from actsort_gpu.synth.scanimage import scanimage_settings, write_scanimage_tiff

    movie = np.load(ctx.movie)
    pages = np.random.default_rng(7).integers(90, 110, (T, 3, 2, H, W)).astype(np.int16)
    pages[:, 0, 0] = movie
    settings = {
        "hChannels.channelSave": "[1;2]",
        "hStackManager.enable": "true",
        "hStackManager.actualNumSlices": 2,
        "hStackManager.numFramesPerVolumeWithFlyback": 3,
    }
    path = ctx.root / "in" / "si_00001.tif"
    write_scanimage_tiff(path, pages.reshape(-1, H, W), scanimage_settings(settings), header=True)
    return path


def case_movie_deflate_corrupt(ctx: Ctx) -> Outcome:
    """A zlib-compressed TIFF movie with one page's data damaged: found by preprocess."""
    import tifffile

    tif = ctx.root / "in" / "movie.tif"
    tifffile.imwrite(tif, np.load(ctx.movie), compression="zlib")
    with tifffile.TiffFile(tif) as t:
        off, cnt = t.pages[60].dataoffsets[0], t.pages[60].databytecounts[0]
    data = bytearray(tif.read_bytes())
    data[off + 2 : off + cnt - 2] = bytes(cnt - 4)
    tif.write_bytes(bytes(data))
    r = ctx.ingest(movie=tif)
    if r[0] != "0":
        return refused(
            ctx,
            "zlib TIFF movie with a damaged page",
            r,
            names="movie.tif",
            before=ctx.inputs_digest(),
        )
    before = ctx.inputs_digest()
    res = ctx.cli("preprocess", ctx.store, "--device", "cpu", "--no-progress")
    out = refused(
        ctx,
        "zlib TIFF movie with a damaged page, at preprocess",
        res,
        names="movie.tif",
        before=before,
    )
    out.clean &= "frame 60" in res[1]
    return out


def case_fs_negative(ctx: Ctx) -> Outcome:
    return _movie_case(ctx, "--fs -5", ctx.movie, "--fs", "-5", names="--fs")


def case_fs_nan(ctx: Ctx) -> Outcome:
    return _movie_case(ctx, "--fs nan", ctx.movie, "--fs", "nan", names="--fs")


def case_downsampling_allowed(ctx: Ctx) -> Outcome:
    movie = np.load(ctx.movie)
    half = ctx.root / "in" / "half.npy"
    np.save(half, movie[:75])
    before = ctx.inputs_digest()
    r = ctx.ingest("--allow-downsampling", movie=half)
    from actsort_gpu.store import SortStore

    ok = r[0] == "0" and SortStore.open(ctx.store).attrs["movie"]["temporal_downsample"] == 2
    return accepted(
        ctx,
        "75-frame movie, --allow-downsampling (2x)",
        r,
        "ingested, factor 2",
        ok=ok,
        lost=ctx.inputs_digest() != before,
    )


# ---------------------------------------------------------------------------- stages
_PREPROCESS_KILLED = r"""
import sys, time
from actsort_gpu.config import PreprocessConfig
from actsort_gpu.preprocess import preprocess, stream
stream.CHECKPOINT_S = 0.0
preprocess(sys.argv[1], PreprocessConfig(max_memory_mb=1), device="cpu",
           progress=lambda stats: time.sleep(0.03))
"""

_PASS_ARRAYS = (
    "fov/max",
    "fov/mean",
    "fov/std",
    "fov/corr",
    "snapshots/data",
    "snapshots/scale",
    "snapshots/clims",
    "candidates/events",
    "candidates/crops",
)


def _kill_preprocess(ctx: Ctx) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-c", _PREPROCESS_KILLED, str(ctx.store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    meta = ctx.store / ".scratch" / "preprocess" / "meta.json"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if meta.exists() and json.loads(meta.read_text() or "{}").get("next_frame", 0) >= 40:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.returncode


def _same_arrays(a: Path, b: Path) -> bool:
    from actsort_gpu.store import SortStore

    sa, sb = SortStore.open(a), SortStore.open(b)
    return all(np.array_equal(sa.read(n), sb.read(n)) for n in _PASS_ARRAYS)


def case_kill_preprocess_resume(ctx: Ctx) -> Outcome:
    from actsort_gpu.ingest import ingest_files
    from actsort_gpu.preprocess import preprocess

    ref = ctx.root / "ref.actsort"
    with _quiet_logs():
        ingest_files(ctx.movie, ctx.plane, ctx.store)
        ingest_files(ctx.movie, ctx.plane, ref)
        preprocess(ref, device="cpu")
    code = _kill_preprocess(ctx)
    with _quiet_logs():
        summary = preprocess(ctx.store, device="cpu")
    same = _same_arrays(ctx.store, ref)
    msg = f"resumed from frame {summary['resumed_from']}; {len(_PASS_ARRAYS)} arrays " + (
        "bit-identical to an uninterrupted run" if same else "DIFFER from an uninterrupted run"
    )
    return Outcome(
        "kill -9 during preprocess, then resume",
        str(code),
        msg,
        code == -9 and summary["resumed_from"] > 0,
        not same,
    )


def case_kill_preprocess_movie_edited(ctx: Ctx) -> Outcome:
    """The movie is edited in place between a kill and the resume: the pass must refuse it
    (the store's traces came from the old frames) naming the file, keep its checkpoint, and
    resume once the original is back, equal to an uninterrupted run."""
    from actsort_gpu.ingest import ingest_files
    from actsort_gpu.preprocess import preprocess

    with _quiet_logs():
        ingest_files(ctx.movie, ctx.plane, ctx.store)
    code = _kill_preprocess(ctx)
    original, stat = ctx.movie.read_bytes(), ctx.movie.stat()
    movie = np.load(ctx.movie)
    np.save(ctx.movie, (movie[::-1] + 7).astype(movie.dtype))  # same shape, new content
    try:
        with _quiet_logs():
            preprocess(ctx.store, device="cpu")
        refusal = ""
    except ValueError as exc:
        refusal = str(exc)
    ctx.movie.write_bytes(original)  # put back as `cp -p` would (the checkpoint checks mtime)
    os.utime(ctx.movie, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    ref = ctx.root / "ref.actsort"
    with _quiet_logs():
        ingest_files(ctx.movie, ctx.plane, ref)
        preprocess(ref, device="cpu")
        summary = preprocess(ctx.store, device="cpu")
    same = _same_arrays(ctx.store, ref)
    refused_ok = "movie.npy" in refusal and "differ" in refusal
    msg = (
        ("edited movie refused" if refused_ok else "edited movie NOT refused")
        + f"; original back: resumed from frame {summary['resumed_from']}, "
        + ("arrays equal an uninterrupted run" if same else "arrays DIFFER")
    )
    return Outcome(
        "kill -9 during preprocess, movie edited in place, resume",
        str(code),
        msg,
        code == -9 and refused_ok and summary["resumed_from"] > 0,
        not same,
    )


def case_features_interrupted(ctx: Ctx) -> Outcome:
    from actsort_gpu.labels import Journal
    from actsort_gpu.store import SortStore

    ctx.built_store()
    with Journal(ctx.store / "labels" / "journal.jsonl") as j:
        j.append_many(ctx.store.name, [0, 1, 2, 3], [1, -1, 1, -1], "ana")
    clf = ctx.root / "clf.npz"
    made = ctx.cli("export", ctx.store, "--format", "classifier", "--out", clf)[0] == "0"
    SortStore.open(ctx.store, "r+").begin_stage("features", {"killed": True})  # as a kill does
    codes, lines, clean = [], [], made
    for args in (
        ("export", ctx.store, "--format", "csv"),
        ("apply", "--classifier", clf, ctx.store),
        ("info", ctx.store),
    ):
        code, stderr, crashed = ctx.cli(*args)
        codes.append(code)
        if args[0] != "info":
            msg = _error_line(stderr)
            lines.append(msg)
            clean &= code == "1" and "actsort features" in msg and "again" in msg and not crashed
        else:
            clean &= code == "0" and not crashed
    return Outcome(
        "features killed (stage incomplete), then export / apply / info",
        "/".join(codes),
        _short(lines[0], ctx.root),
        clean,
        False,
    )


def case_features_interrupted_sort(ctx: Ctx) -> Outcome:
    from actsort_gpu.store import SortStore, StoreError
    from actsort_gpu.ui import open_workspace

    ctx.built_store()
    SortStore.open(ctx.store, "r+").begin_stage("features", {"killed": True})
    try:
        open_workspace([ctx.store]).close()
    except StoreError as exc:
        msg = str(exc)
        ok = "actsort features" in msg and "again" in msg
        return Outcome(
            "features killed, then the page (sort) opens the store",
            "-",
            _short(msg, ctx.root),
            ok,
            False,
        )
    return Outcome(
        "features killed, then the page (sort) opens the store",
        "-",
        "opened: the partial matrix would be used",
        False,
        True,
    )


def _mount(path: Path, size: str, ro: bool = False) -> None:
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=False)


def case_disk_full_preprocess(ctx: Ctx) -> Outcome:
    """A store on a 300 kB tmpfs: the snapshot scratch cannot fit."""
    mnt = ctx.root / "small"
    _mount(mnt, "300k")
    try:
        ctx.store = mnt / "s.actsort"
        r = ctx.ingest()
        if r[0] != "0":
            return Outcome(
                "disk full (300 kB tmpfs) at preprocess",
                r[0],
                _short(_error_line(r[1]), ctx.root),
                False,
                False,
            )
        before = ctx.inputs_digest()
        res = ctx.cli("preprocess", ctx.store, "--device", "cpu", "--no-progress")
        return refused(
            ctx, "disk full (300 kB tmpfs) during preprocess", res, names="GB", before=before
        )
    finally:
        _umount(mnt)


def case_disk_full_mid_write(ctx: Ctx) -> Outcome:
    """The scratch fits but the store's outputs do not (a 1 MB tmpfs)."""
    mnt = ctx.root / "mid"
    _mount(mnt, "1m")
    try:
        ctx.store = mnt / "s.actsort"
        r = ctx.ingest()
        if r[0] != "0":
            return Outcome(
                "disk full (1 MB tmpfs) while writing",
                r[0],
                _short(_error_line(r[1]), ctx.root),
                False,
                False,
            )
        filler = mnt / "filler"
        free = shutil.disk_usage(mnt).free
        filler.write_bytes(b"\0" * max(free - ctx.leave_bytes, 0))
        before = ctx.inputs_digest()
        res = ctx.cli("preprocess", ctx.store, "--device", "cpu", "--no-progress")
        out = refused(
            ctx,
            "disk full (1 MB tmpfs, 450 kB left) while preprocess writes",
            res,
            names="s.actsort",
            before=before,
        )
        filler.unlink()
        res2 = ctx.cli("preprocess", ctx.store, "--device", "cpu", "--no-progress")
        if res2[0] != "0":
            out.clean = False
            out.message += " | rerun after freeing space failed"
        else:
            out.message += " | rerun after freeing space: complete"
        return out
    finally:
        _umount(mnt)


def case_read_only_store(ctx: Ctx) -> Outcome:
    mnt = ctx.root / "ro"
    _mount(mnt, "4m")
    try:
        ctx.store = mnt / "s.actsort"
        ctx.ingest()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        before = ctx.inputs_digest()
        res = ctx.cli("preprocess", ctx.store, "--device", "cpu", "--no-progress")
        return refused(
            ctx,
            "read-only filesystem (tmpfs remounted ro) at preprocess",
            res,
            names="s.actsort",
            before=before,
        )
    finally:
        _umount(mnt)


# ---------------------------------------------------------------------------- journal
_GOOD_LINE = {
    "time": "2025-01-01T00:00:00+00:00",
    "dataset": "s.actsort",
    "candidate": 1,
    "label": 1,
    "previous": 0,
    "annotator": "ana",
    "origin": "human",
    "session": "x",
}


def _journal(ctx: Ctx, lines: list[dict], *, last_newline: bool = True, tail: bytes = b""):
    path = ctx.store / "labels" / "journal.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(json.dumps(ln) for ln in lines) + ("\n" if last_newline else "")
    path.write_bytes(text.encode() + tail)
    return path


def _exported(ctx: Ctx) -> tuple[tuple[str, str, bool], dict[int, int]]:
    import csv

    out = ctx.root / "labels.csv"
    r = ctx.cli("export", ctx.store, "--format", "csv", "--out", out)
    labels = {}
    if r[0] == "0":
        with open(out) as fh:
            for row in csv.DictReader(fh):
                if int(row["human_label"]):
                    labels[int(row["candidate"])] = int(row["human_label"])
    return r, labels


_TWO_LABELS = [_GOOD_LINE, {**_GOOD_LINE, "candidate": 2, "label": -1}]


def _two_labels_exported(ctx: Ctx, name: str) -> Outcome:
    """Outcome of exporting a store whose journal holds :data:`_TWO_LABELS`."""
    r, labels = _exported(ctx)
    kept = labels == {1: 1, 2: -1}
    return accepted(ctx, name, r, f"export has both labels: {kept}", ok=kept, lost=not kept)


def case_journal_no_final_newline(ctx: Ctx) -> Outcome:
    ctx.built_store()
    _journal(ctx, _TWO_LABELS, last_newline=False)
    return _two_labels_exported(ctx, "journal: complete last line without its newline")


def case_store_renamed(ctx: Ctx) -> Outcome:
    """The user renames the store's folder: its labels (journal lines written under the old
    name) must still be its labels."""
    ctx.built_store()
    _journal(ctx, _TWO_LABELS)
    renamed = ctx.root / "mouse3_day1.actsort"
    shutil.move(ctx.store, renamed)
    ctx.store = renamed
    return _two_labels_exported(ctx, "store folder renamed after labelling")


def _store_copied_in_part(ctx: Ctx, name: str, array: str, cut, *command: str) -> Outcome:
    """A labelled store whose ``array`` lost or cut a chunk file (``cut``: the file -> None),
    as an interrupted copy or a folder still syncing leaves it; ``command`` must refuse it
    naming the array, and the labels stay."""
    ctx.built_store()
    _journal(ctx, _TWO_LABELS)
    journal = (ctx.store / "labels" / "journal.jsonl").read_bytes()
    cut(next(p for p in sorted((ctx.store / array / "c").rglob("*")) if p.is_file()))
    before = ctx.inputs_digest()
    r = ctx.cli(*command)
    kept = (ctx.store / "labels" / "journal.jsonl").read_bytes() == journal
    return refused(ctx, name, r, names=array, before=before, extra_lost=not kept)


def _labelled_journal(journal: Path, candidates) -> bytes:
    """Label ``candidates`` through the library (so the journal has its record); its bytes."""
    from actsort_gpu.labels import Journal

    with Journal(journal) as j:
        for cand in candidates:
            j.append("s.actsort", cand, 1 if cand % 2 else -1, "ana")
    return journal.read_bytes()


def _journal_replaced(ctx: Ctx, name: str, replacement: Callable[[bytes], bytes]) -> Outcome:
    """A labelled store whose journal was then replaced by ``replacement(its bytes)``; export
    must refuse it, not export other labels, and leave the file as it found it."""
    ctx.built_store()
    journal = ctx.store / "labels" / "journal.jsonl"
    found = replacement(_labelled_journal(journal, range(6)))
    journal.write_bytes(found)
    before = ctx.inputs_digest()
    r = ctx.cli("export", ctx.store, "--format", "csv", "--out", ctx.root / "labels.csv")
    kept = journal.read_bytes() == found
    return refused(ctx, name, r, names="journal.jsonl", before=before, extra_lost=not kept)


def case_journal_copied_in_part(ctx: Ctx) -> Outcome:
    """A store copied in part: its journal cut mid-file."""
    return _journal_replaced(
        ctx,
        "store copied in part: the journal cut mid-file, then export",
        lambda b: b[: len(b) // 2],
    )


def case_journal_synced_over(ctx: Ctx) -> Outcome:
    """A sync kept another computer's journal of as many bytes (the same candidates labelled
    in another order) in place of this one."""
    other = ctx.root / "other" / "journal.jsonl"
    return _journal_replaced(
        ctx,
        "journal replaced by another computer's of as many bytes, then export",
        lambda _: _labelled_journal(other, reversed(range(6))),
    )


def case_store_chunk_missing(ctx: Ctx) -> Outcome:
    return _store_copied_in_part(
        ctx,
        "store copied in part: a features chunk file missing, then export",
        "features/matrix",
        Path.unlink,
        *("export", ctx.store, "--format", "csv", "--out", ctx.root / "labels.csv"),
    )


def case_store_chunk_cut(ctx: Ctx) -> Outcome:
    return _store_copied_in_part(
        ctx,
        "store copied in part: a traces chunk file cut short, then features",
        "candidates/traces",
        lambda p: p.write_bytes(p.read_bytes()[:50]),
        *("features", ctx.store, "--device", "cpu", "--no-progress"),
    )


def case_journal_torn_tail(ctx: Ctx) -> Outcome:
    ctx.built_store()
    _journal(ctx, [_GOOD_LINE], tail=b'{"time": "2025-01-01T00:0')
    r, labels = _exported(ctx)
    kept = labels == {1: 1}
    return accepted(
        ctx,
        "journal: torn last line (crash mid-write, never acknowledged)",
        r,
        f"acknowledged label kept, torn line ignored: {kept}",
        ok=kept,
        lost=not kept,
    )


def _bad_journal(ctx: Ctx, name: str, bad: dict) -> Outcome:
    ctx.built_store()
    path = _journal(ctx, [_GOOD_LINE, {**_GOOD_LINE, **bad}])
    before = _digest(path)
    r, _ = _exported(ctx)
    out = refused(
        ctx,
        name,
        r,
        names="journal.jsonl",
        before=ctx.inputs_digest(),
        extra_lost=_digest(path) != before,
    )
    out.clean &= "byte" in r[1]
    return out


def case_journal_label_7(ctx: Ctx) -> Outcome:
    return _bad_journal(ctx, 'journal: "label": 7', {"candidate": 2, "label": 7})


def case_journal_candidate_text(ctx: Ctx) -> Outcome:
    return _bad_journal(ctx, 'journal: "candidate": "abc"', {"candidate": "abc"})


def case_journal_candidate_range(ctx: Ctx) -> Outcome:
    """export and the page (sort) replay with one policy: the same error from both."""
    out = _bad_journal(ctx, "journal: candidate 500 of 8 (export and sort)", {"candidate": 500})
    from actsort_gpu.ui import open_workspace

    try:
        open_workspace([ctx.store]).close()
        out.clean = False
        out.message += " | sort accepted it"
    except ValueError as exc:
        out.clean &= "out of range" in str(exc) and "byte" in str(exc)
    return out


def case_journal_garbage_middle(ctx: Ctx) -> Outcome:
    ctx.built_store()
    path = _journal(ctx, [_GOOD_LINE])
    with open(path, "ab") as fh:
        fh.write(
            b"\x00\xff garbage\n" + json.dumps({**_GOOD_LINE, "candidate": 3}).encode() + b"\n"
        )
    before = _digest(path)
    r, _ = _exported(ctx)
    return refused(
        ctx,
        "journal: unreadable line in the middle",
        r,
        names="journal.jsonl",
        before=ctx.inputs_digest(),
        extra_lost=_digest(path) != before,
    )


# ---------------------------------------------------------------------------- export
def case_export_suite2p_before_training(ctx: Ctx) -> Outcome:
    """No label yet, so no final label: Suite2p's own classification must come back as it was
    (it was overwritten with 'not a cell' for every ROI)."""
    ctx.built_store()
    target = ctx.plane / "iscell.npy"
    before = np.load(target)
    r = ctx.cli("export", ctx.store, "--format", "suite2p")
    after = np.load(target)
    same = after.shape == before.shape and np.array_equal(after, before)
    return accepted(
        ctx,
        "export --format suite2p before any label",
        r,
        "iscell.npy: Suite2p's rows kept",
        ok=same,
        lost=not same,
    )


def case_export_suite2p_other_folder(ctx: Ctx) -> Outcome:
    ctx.built_store()
    other = ctx.root / "plane1"
    other.mkdir()
    np.save(other / "iscell.npy", np.ones((3, 2), np.float32))
    before = _digest(other)
    r = ctx.cli("export", ctx.store, "--format", "suite2p", "--out", other)
    return refused(
        ctx,
        "export --format suite2p --out another extraction's folder (3 ROIs)",
        r,
        names="iscell.npy",
        before=ctx.inputs_digest(),
        extra_lost=_digest(other) != before,
    )


def case_preprocess_after_features(ctx: Ctx) -> Outcome:
    """preprocess run again (other event settings) after features: the features describe the
    old snapshots; export must refuse them, not serve the old decisions."""
    ctx.built_store()
    _journal(ctx, _TWO_LABELS)
    config = ctx.root / "events.yaml"
    config.write_text("preprocess:\n  n_events: 3\n")
    res = ctx.cli("preprocess", ctx.store, "--config", config, "--device", "cpu", "--no-progress")
    if res[0] != "0":
        return accepted(ctx, "preprocess again after features", res, "", ok=False, lost=False)
    before = ctx.inputs_digest()
    r = ctx.cli("export", ctx.store, "--format", "csv", "--out", ctx.root / "labels.csv")
    return refused(
        ctx,
        "preprocess run again after features, then export",
        r,
        names="out of date",
        before=before,
    )


def case_export_suite2p_rerun(ctx: Ctx) -> Outcome:
    """Suite2p run again in the ingested plane folder: as many ROIs, elsewhere (moved by
    7 rows); the export must not write the store's labels into the new ROIs' rows."""
    ctx.built_store()
    _journal(ctx, _TWO_LABELS)
    stat = np.load(ctx.plane / "stat.npy", allow_pickle=True)
    for roi in stat:
        roi["ypix"] = (np.asarray(roi["ypix"]) + 7) % H
    np.save(ctx.plane / "stat.npy", stat, allow_pickle=True)
    before = _digest(ctx.plane)
    r = ctx.cli("export", ctx.store, "--format", "suite2p")
    return refused(
        ctx,
        "export --format suite2p after Suite2p ran again in the folder (other ROIs)",
        r,
        names="stat.npy",
        before=ctx.inputs_digest(),
        extra_lost=_digest(ctx.plane) != before,
    )


def case_export_over_the_movie(ctx: Ctx) -> Outcome:
    ctx.built_store()
    before = ctx.inputs_digest()
    r = ctx.cli("export", ctx.store, "--format", "parquet", "--out", ctx.movie)
    return refused(
        ctx,
        "export --format parquet --out the movie (a mistyped name)",
        r,
        names="movie.npy",
        before=before,
    )


def case_synth_over_extraction(ctx: Ctx) -> Outcome:
    before = ctx.inputs_digest()
    args = ("--frames", "40", "--height", "64", "--width", "64", "--cells", "3")
    r = ctx.cli("synth", "--out", ctx.root / "in", *args, "--overwrite", "--no-progress")
    return refused(
        ctx,
        "synth --out a folder holding a real Suite2p plane, --overwrite",
        r,
        names="not a synthetic recording",
        before=before,
    )


def case_ui_state_malformed(ctx: Ctx) -> Outcome:
    from actsort_gpu.ui import open_workspace
    from actsort_gpu.ui.handlers import on_load

    ctx.built_store()
    (ctx.store / "labels").mkdir(exist_ok=True)
    (ctx.store / "labels" / "ui_state.json").write_text('{"current": [1, 2')
    ws = open_workspace([ctx.store])
    try:
        with _quiet_logs():
            st, panels = on_load(ws)
        ok = st.current >= 0
    finally:
        ws.close()
    return Outcome(
        "labels/ui_state.json malformed, page loads",
        "-",
        "ignored with a warning; the page shows the next query" if ok else "failed",
        ok,
        False,
    )


def _ws(ctx: Ctx, annotator: str = "ana"):
    from actsort_gpu.ui import open_workspace

    return open_workspace([ctx.store], annotator=annotator)


def case_append_fails(ctx: Ctx) -> Outcome:
    """A failed journal write (ENOSPC injected) is cut back; memory and disk stay equal."""
    from actsort_gpu.labels import Journal

    ctx.built_store()
    ws = _ws(ctx)
    journal = ws.learner._journals[0]
    real = os.write

    def half_then_enospc(fd, data):
        real(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    try:
        ws.label(0, [0], 1)
        os.write = half_then_enospc
        try:
            ws.label(0, [1], -1)
            msg = "the failing write was reported as saved"
        except OSError as exc:
            msg = str(exc)
        finally:
            os.write = real
        ws.label(0, [2], -1)
        memory = {c: int(v) for c, v in enumerate(ws.human(0)) if v}
    finally:
        ws.close()
    disk = {c: v for (_, c), v in Journal(journal.path, read_only=True).labels.items()}
    ok = memory == disk == {0: 1, 2: -1}
    return Outcome(
        "journal append fails (ENOSPC mid-write), then the next label",
        "-",
        _short(msg, ctx.root),
        ok and "journal.jsonl" in msg,
        not ok,
    )


def case_ui_state_write_fails(ctx: Ctx) -> Outcome:
    """Bookkeeping after the append fails (ui_state.json on a full disk): label still saved."""
    from actsort_gpu.ui.handlers import on_label, on_load

    ctx.built_store()
    ws = _ws(ctx)
    real = Path.write_text

    def full(self, *a, **k):
        if self.name.startswith("ui_state"):
            raise OSError(28, "No space left on device", str(self))
        return real(self, *a, **k)

    try:
        with _quiet_logs():
            st, _ = on_load(ws)
            cur = st.current
            Path.write_text = full
            try:
                st, panels = on_label(ws, st, 1)
                status = panels.status
            except OSError as exc:
                status = f"label reported failed: {exc}"
            finally:
                Path.write_text = real
        saved = int(ws.human(0)[cur]) == 1
    finally:
        ws.close()
    ok = saved and status.startswith("Saved")
    return Outcome(
        "ui_state.json write fails after a label (disk full)",
        "-",
        _short(status, ctx.root),
        ok,
        not saved,
    )


def case_disagreement(ctx: Ctx) -> Outcome:
    ctx.built_store()
    ws = _ws(ctx, "ana")
    ws.label(0, [4], 1)
    ws.close()
    ws = _ws(ctx, "bob")
    try:
        new = ws.label(0, [4], -1)
        count = ws.disagreement_count(0)
    finally:
        ws.close()
    r, labels = _exported(ctx)
    import csv

    with open(ctx.root / "labels.csv") as fh:
        col = {int(row["candidate"]): row["disagreement"] for row in csv.DictReader(fh)}
    ok = new == 1 and count == 1 and col[4] == "ana +1 -> bob -1" and labels == {4: -1}
    return Outcome(
        "bob relabels ana's cell as not a cell",
        r[0],
        f"{count} disagreement; export column: {col[4]!r}",
        ok,
        False,
    )


def case_four_threads(ctx: Ctx) -> Outcome:
    """4 threads (tabs) query and label through the Workspace at once."""
    from actsort_gpu.labels import Journal

    ctx.built_store()
    ws = _ws(ctx)
    held: dict[int, int] = {}  # thread -> candidate it holds (shown, not yet labelled)
    guard = threading.Lock()
    clashes, acked, errors = [], [], []

    def tab(k: int):
        cur = -1
        try:
            for _ in range(2):
                cur = ws.next_query(0, "dcal", cur)
                if cur is None:
                    return
                with guard:
                    if cur in held.values():
                        clashes.append(cur)
                    held[k] = cur
                time.sleep(0.01)
                y = 1 if (cur + k) % 2 else -1
                ws.label(0, [cur], y)
                with guard:
                    held.pop(k, None)
                    acked.append((cur, y))
        except Exception as exc:  # noqa: BLE001 - reported in the table
            errors.append(repr(exc))

    threads = [threading.Thread(target=tab, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    path = ws.learner._journals[0].path
    ws.close()
    disk = {c: v for (_, c), v in Journal(path, read_only=True).labels.items()}
    last = dict(acked)
    lost = any(disk.get(c) != y for c, y in last.items())
    dupes = len(acked) - len({c for c, _ in acked})
    ok = not clashes and not errors and not lost and dupes == 0
    msg = (
        f"{len(acked)} labels, {len(clashes)} candidates served to two tabs at once, "
        f"{dupes} duplicate labels, {len(errors)} errors"
    )
    return Outcome("4 threads query + label through the Workspace at once", "-", msg, ok, lost)


CASES = [
    Case("out_suite2p", case_out_is_suite2p),
    Case("out_movie", case_out_is_movie),
    Case("out_holds_inputs", case_out_holds_movie),
    Case("out_document", case_out_is_document_folder),
    Case("out_labelled_store", case_out_is_labelled_store),
    Case("out_store", case_out_is_store),
    Case("overwrite_fails", case_overwrite_fails_keeps_store),
    Case("kill_ingest", case_kill_ingest_overwrite, fast=False),
    Case("npz_index", case_npz_index_out_of_range),
    Case("npz_negative", case_npz_negative_index),
    Case("npz_indptr", case_npz_indptr_decreasing),
    Case("npz_indptr_end", case_npz_indptr_end),
    Case("npz_huge_hw", case_npz_huge_hw),
    Case("npz_object", case_npz_object_traces),
    Case("npz_rows", case_npz_wrong_trace_rows),
    Case("npz_nan", case_npz_nan_traces),
    Case("npz_truncated", case_npz_truncated),
    Case("ops_30000", case_ops_lying_30000),
    Case("ops_200000", case_ops_lying_200000),
    Case("ypix_xpix", case_ypix_xpix_mismatch),
    Case("stat_garbage", case_stat_garbage),
    Case("f_truncated", case_f_truncated),
    Case("f_rows", case_f_wrong_rows),
    Case("ops_not_dict", case_ops_not_dict),
    Case("movie_1", case_movie_one_frame),
    Case("movie_7", case_movie_seven_frames),
    Case("movie_hw", case_movie_wrong_hw),
    Case("movie_other", case_movie_other_recording),
    Case("movie_truncated", case_movie_truncated),
    Case("movie_not_tiff", case_movie_not_tiff),
    Case("movie_folder_parts", case_movie_folder_mixed_parts),
    Case(
        "movie_two_channels",
        _movie_choice_case(
            "two-channel hyperstack, no channel chosen", _two_channels, names="two_channels.tif"
        ),
    ),
    Case(
        "movie_wrong_channel",
        _movie_choice_case(
            "two-channel hyperstack, the other channel chosen",
            _two_channels,
            *("--channels", "2", "--channel", "2"),
            names="two_channels.tif",
        ),
    ),
    Case(
        "movie_rows_outside_pages",
        _movie_choice_case(
            f"multi-ROI pages, --rows 20:{20 + H + 30} past the page",
            _multi_roi,
            *("--rows", f"20:{20 + H + 30}"),
            names="meso.tif",
        ),
    ),
    Case(
        "movie_wrong_roi",
        _movie_choice_case(
            "multi-ROI pages, the rows of another ROI",
            _multi_roi,
            *("--rows", f"0:{H}"),
            names="meso.tif",
        ),
    ),
    Case(
        "movie_scanimage_no_choice",
        _movie_choice_case(
            "ScanImage volumes of 2 channels, nothing chosen",
            _scanimage_volumes,
            names="si_00001.tif",
        ),
    ),
    Case(
        "movie_scanimage_flyback",
        _movie_choice_case(
            "ScanImage volumes, the flyback frame chosen as plane",
            _scanimage_volumes,
            *("--channel", "1", "--plane", "2"),
            names="si_00001.tif",
        ),
    ),
    Case("movie_deflate", case_movie_deflate_corrupt),
    Case("fs_negative", case_fs_negative),
    Case("fs_nan", case_fs_nan),
    Case("downsampling_allowed", case_downsampling_allowed),
    Case("kill_preprocess", case_kill_preprocess_resume, fast=False),
    Case("kill_preprocess_edited", case_kill_preprocess_movie_edited, fast=False),
    Case("features_interrupted", case_features_interrupted),
    Case("features_interrupted_sort", case_features_interrupted_sort, fast=False),
    Case("disk_full", case_disk_full_preprocess, fast=False, root=True),
    Case("disk_full_mid_write", case_disk_full_mid_write, fast=False, root=True),
    Case("read_only", case_read_only_store, fast=False, root=True),
    Case("journal_newline", case_journal_no_final_newline),
    Case("journal_torn", case_journal_torn_tail),
    Case("journal_label_7", case_journal_label_7),
    Case("journal_candidate_text", case_journal_candidate_text),
    Case("journal_candidate_range", case_journal_candidate_range, fast=False),
    Case("journal_garbage", case_journal_garbage_middle),
    Case("store_renamed", case_store_renamed),
    Case("journal_copied_in_part", case_journal_copied_in_part),
    Case("journal_synced_over", case_journal_synced_over),
    Case("store_chunk_missing", case_store_chunk_missing),
    Case("store_chunk_cut", case_store_chunk_cut),
    Case("export_untrained", case_export_suite2p_before_training),
    Case("export_other_folder", case_export_suite2p_other_folder),
    Case("preprocess_after_features", case_preprocess_after_features),
    Case("export_suite2p_rerun", case_export_suite2p_rerun),
    Case("export_over_movie", case_export_over_the_movie),
    Case("synth_over_extraction", case_synth_over_extraction),
    Case("ui_state_malformed", case_ui_state_malformed, fast=False),
    Case("append_fails", case_append_fails, fast=False),
    Case("ui_state_write_fails", case_ui_state_write_fails, fast=False),
    Case("disagreement", case_disagreement, fast=False),
    Case("four_threads", case_four_threads, fast=False),
]


# ---------------------------------------------------------------------------- driver
def can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        ok = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d], capture_output=True
            ).returncode
            == 0
        )
        if ok:
            _umount(Path(d))
    return ok


def run_case(case: Case, work: Path, template: Path, in_process: bool) -> Outcome:
    root = work / case.name
    root.mkdir(parents=True)
    ctx = Ctx(root, template, in_process)
    try:
        return case.run(ctx)
    except Exception as exc:  # noqa: BLE001 - a case that breaks is a finding, not a crash
        return Outcome(
            case.name, "exc", f"{type(exc).__name__}: {_short(str(exc), root)}", False, False
        )


def run(
    names: list[str] | None = None,
    *,
    fast: bool = False,
    in_process: bool = False,
    work: Path | None = None,
    progress: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run the cases (all, the fast ones, or those named) and return their outcomes."""
    cases = [c for c in CASES if (names is None or c.name in names) and (c.fast or not fast)]
    mount_ok = any(c.root for c in cases) and can_mount()
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="actsort-faults-")) if own else Path(work)
    template = work / "_template"
    make_inputs(template)
    out = []
    try:
        for case in cases:
            if case.root and not mount_ok:
                o = Outcome(case.name, "skip", "needs root to mount a tmpfs", True, False)
            else:
                o = run_case(case, work, template, in_process)
            out.append(o)
            if progress is not None:
                progress(o)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return out


def table(outcomes: list[Outcome]) -> str:
    rows = [
        "| case | exit | message (first line) | clean | data lost |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        msg = o.message.replace("|", "\\|")
        rows.append(
            f"| {o.case} | {o.exit} | {msg} | {'yes' if o.clean else 'NO'} | "
            f"{'YES' if o.lost else 'no'} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("cases", nargs="*", help="case names (default: all)")
    p.add_argument("--fast", action="store_true", help="only the fast cases (as in CI)")
    p.add_argument("--in-process", action="store_true", help="run actsort in this process")
    p.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = p.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    t0 = time.perf_counter()
    outcomes = run(
        args.cases or None,
        fast=args.fast,
        in_process=args.in_process,
        work=Path(args.keep) if args.keep else None,
        progress=lambda o: print(
            f"{o.case:<60.60} {o.exit:>5} {'ok ' if o.clean else 'BAD'} "
            f"{'LOST' if o.lost else '    '} {o.message[:90]}",
            file=sys.stderr,
            flush=True,
        ),
    )
    text = table(outcomes)
    bad = [o for o in outcomes if not o.clean or o.lost]
    summary = (
        f"{len(outcomes)} cases in {time.perf_counter() - t0:.0f} s: "
        f"{sum(o.lost for o in outcomes)} with data lost, "
        f"{sum(not o.clean for o in outcomes)} not clean"
    )
    print(text)
    print()
    print(summary)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n\n" + summary + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
