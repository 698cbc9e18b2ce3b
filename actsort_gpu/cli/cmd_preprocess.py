"""``actsort preprocess``: geometry, events, FOV images and event snapshots (one movie pass)."""

from __future__ import annotations

import argparse

from ._common import add_config_argument, add_device_argument, add_progress_argument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "preprocess",
        help="one pass over the movie -> fov/, candidate geometry, snapshots/",
        description="Find each candidate's events from its trace, then read the movie once, "
        "in time chunks, to compute the max/mean/std/correlation images and the "
        "event snapshots (crop x 11 frames per event). A killed run resumes from "
        "the last completed chunk when started again.",
    )
    p.add_argument("store", metavar="STORE", help="sort store (*.actsort) from `actsort ingest`")
    p.add_argument(
        "--movie",
        metavar="PATH",
        default=None,
        help="the movie, if it moved since ingest (default: the path recorded then)",
    )
    p.add_argument(
        "--max-memory",
        metavar="MB",
        type=float,
        default=None,
        help="memory budget for the movie chunks (default: preprocess.max_memory_mb, else "
        "what the candidates' arrays leave of 1.75 GiB for the whole process, at most 25%% of "
        "free RAM (and of free GPU memory on a GPU))",
    )
    p.add_argument(
        "--snapshot-dtype",
        choices=("uint8", "uint16", "float32"),
        default=None,
        help="snapshot storage (default: preprocess.snapshot_dtype of the config)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="run the movie pass on this Dask scheduler (e.g. tcp://host:8786); "
        "the movie and the store must be on a filesystem the workers see",
    )
    p.add_argument(
        "--workers",
        metavar="N",
        type=int,
        default=None,
        help="run the movie pass on a local Dask cluster of N worker processes",
    )
    add_device_argument(p)
    add_config_argument(p)
    add_progress_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..config import load_config
    from ..preprocess import preprocess

    cfg = load_config(args.config).preprocess
    if args.max_memory is not None:
        cfg = replace(cfg, max_memory_mb=args.max_memory)
    if args.snapshot_dtype is not None:
        cfg = replace(cfg, snapshot_dtype=args.snapshot_dtype)
    s = preprocess(
        args.store,
        cfg,
        device=args.device,
        progress=args.progress,
        movie_path=args.movie,
        scheduler=args.scheduler,
        workers=args.workers,
    )
    resumed = f", resumed at frame {s['resumed_from']}" if s["resumed_from"] else ""
    if s["pieces"] > 1:
        resumed += f", {s['pieces']} Dask pieces"
    print(
        f"{args.store}: preprocessed {s['n_candidates']:,} candidates in {s['seconds']:.1f} s "
        f"on {s['device']} (setup {s['setup_seconds']:.1f} s, movie pass "
        f"{s['pass_seconds']:.1f} s, outputs {s['output_seconds']:.1f} s, {s['frames_per_s']:.0f} "
        f"frames/s, {s['mb_per_s']:.0f} MB/s, {s['chunk_frames']} frames per chunk"
        + (f", {s['read_mode']} reads" if s.get("read_mode") else "")
        + f"{resumed})"
    )
    return 0
