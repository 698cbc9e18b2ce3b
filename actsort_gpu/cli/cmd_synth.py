"""``actsort synth``: write a synthetic recording with ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_progress_argument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic recording + Suite2p/EXTRACT outputs + truth",
        description="Write movie.tif, suite2p/plane0, extract_output.mat, truth.npz and "
        "README.txt into --out (see README.txt there).",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--frames", type=int, default=1800, help="number of frames (default 1800)")
    p.add_argument("--height", type=int, default=256, help="frame height in px (default 256)")
    p.add_argument("--width", type=int, default=256, help="frame width in px (default 256)")
    p.add_argument("--cells", type=int, default=150, help="true cells (default 150)")
    p.add_argument(
        "--false-positives", type=int, default=150, help="false-positive candidates (default 150)"
    )
    p.add_argument(
        "--fragments",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share (0-1) of the false positives that are small active neurite fragments, "
        "the commonest false positive of Suite2p on two-photon data (default 0)",
    )
    p.add_argument("--fs", type=float, default=15.0, help="frame rate in Hz (default 15)")
    p.add_argument(
        "--formats",
        default="suite2p,extract",
        help="comma-separated extraction layouts: suite2p, extract",
    )
    p.add_argument("--h5", action="store_true", help="also write movie.h5 (dataset 'mov')")
    p.add_argument(
        "--motion",
        type=float,
        default=0.0,
        metavar="PX",
        help="max rigid motion in px (default 0: none)",
    )
    p.add_argument("--subpixel", action="store_true", help="subpixel (bilinear) motion")
    p.add_argument(
        "--annotators",
        type=int,
        default=None,
        metavar="K",
        help="number of simulated annotators (default 4; cycles the default specs)",
    )
    p.add_argument("--chunk-frames", type=int, default=None, help="frames per render chunk")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier synthetic recording in --out (never a folder of other files)",
    )
    add_progress_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..synth import DEFAULT_ANNOTATORS, AnnotatorSpec, SynthConfig, synthesize

    annotators = DEFAULT_ANNOTATORS
    if args.annotators is not None:
        if args.annotators < 0:
            raise ValueError(f"--annotators: expected >= 0, found {args.annotators}")
        annotators = tuple(
            AnnotatorSpec(
                f"ann{i}",
                DEFAULT_ANNOTATORS[i % len(DEFAULT_ANNOTATORS)].leniency,
                DEFAULT_ANNOTATORS[i % len(DEFAULT_ANNOTATORS)].noise,
            )
            for i in range(args.annotators)
        )
    cfg = SynthConfig(
        seed=args.seed,
        n_frames=args.frames,
        height=args.height,
        width=args.width,
        n_cells=args.cells,
        n_false_positives=args.false_positives,
        fs_hz=args.fs,
        motion_px=args.motion,
        motion_subpixel=args.subpixel,
        annotators=annotators,
        chunk_frames=args.chunk_frames,
    ).with_fragment_share(args.fragments)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    res = synthesize(
        args.out, cfg, formats=formats, h5=args.h5, overwrite=args.overwrite, progress=args.progress
    )
    print(
        f"wrote {res.out_dir}: {res.n_candidates} candidates ({cfg.n_cells} cells), "
        f"{cfg.n_frames} frames of {cfg.height}x{cfg.width}, {res.n_chunks} chunks, "
        f"{res.seconds:.1f} s ({res.mb_per_s:.0f} MB/s of movie)"
    )
    for name, path in res.files.items():
        print(f"  {name:10s} {path}")
    extraction = res.files.get("suite2p") or res.files.get("extract")
    if extraction is not None:
        print(
            f"next: actsort ingest --movie {res.files['movie']} --extraction {extraction} "
            f"--out {Path(res.out_dir) / 'recording.actsort'} --truth {res.files['truth']}"
        )
    return 0
