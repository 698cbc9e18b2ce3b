"""``actsort ingest``: check a movie against an extraction output and create a sort store."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io.extraction import EXTRACTION_FORMATS, EXTRACTION_READERS
from ..io.movies import MOVIE_FORMATS
from ._common import add_config_argument, add_progress_argument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="create a sort store from a movie and an extraction output",
        description=f"Read the extraction output ({', '.join(EXTRACTION_FORMATS)}), check it "
        f"against the movie ({', '.join(MOVIE_FORMATS)}) and write a new sort store. "
        "Suite2p's stat.npy / ops.npy are pickles: only ingest folders you trust.",
    )
    p.add_argument(
        "--movie",
        required=True,
        metavar="M",
        help=f"movie file or folder ({', '.join(MOVIE_FORMATS)}; detected from the path)",
    )
    p.add_argument(
        "--extraction", required=True, metavar="E", help="extraction output file or folder"
    )
    p.add_argument("--out", required=True, metavar="S.actsort", help="sort store to create")
    p.add_argument(
        "--format",
        default=None,
        choices=("auto", *EXTRACTION_FORMATS),
        help="extraction format (default auto: from the path): "
        + "; ".join(f"{r.name}: {r.accepts}" for r in EXTRACTION_READERS.values()),
    )
    p.add_argument(
        "--dataset",
        default=None,
        metavar="NAME",
        help="HDF5 dataset / zarr array of the movie (default: the only 3-D one)",
    )
    p.add_argument(
        "--channels",
        type=int,
        default=None,
        metavar="N",
        help="channels interleaved in the movie's pages (ScanImage: every time point holds "
        "each plane's channels in turn); default: from Suite2p's ops when the movie has that "
        "many times the traces' frames, else 1",
    )
    p.add_argument(
        "--channel",
        type=int,
        default=None,
        metavar="K",
        help="the functional channel, 1-based as ScanImage and Suite2p's functional_chan "
        "(default 1, or Suite2p's)",
    )
    p.add_argument(
        "--rows",
        type=_rows,
        default=None,
        metavar="FIRST:STOP",
        help="read rows FIRST to STOP-1 (0-based) of each page: one ROI of a ScanImage "
        "multi-ROI (mesoscope) page (default: a Suite2p mesoscope plane's ops lines when the "
        "pages are taller than its field of view, else whole pages)",
    )
    p.add_argument(
        "--roi",
        type=int,
        default=None,
        metavar="K",
        help="read ROI K (1-based, top to bottom) of a ScanImage multi-ROI (mesoscope) page: "
        "its rows from the file's ROI settings (instead of --rows)",
    )
    p.add_argument(
        "--planes",
        type=int,
        default=None,
        metavar="N",
        help="planes interleaved in the movie's pages (default: Suite2p's nplanes, else 1)",
    )
    p.add_argument(
        "--plane",
        type=int,
        default=None,
        metavar="K",
        help="the plane, 0-based as Suite2p's planeK folders (default 0, or the Suite2p folder's)",
    )
    p.add_argument(
        "--fs",
        type=_frame_rate,
        default=None,
        metavar="HZ",
        help="frame rate of the traces, a number > 0 (default: the movie's (ScanImage's settings), "
        "else the extraction's, else unknown)",
    )
    p.add_argument(
        "--allow-downsampling",
        action="store_true",
        default=None,
        help="accept a movie with fewer frames than the traces (temporal downsampling by an "
        "integer factor) even when it has fewer than 100 frames; also silences the warning "
        "logged for any downsampling",
    )
    p.add_argument(
        "--skip-image-check",
        dest="check_mean_image",
        action="store_false",
        default=None,
        help="ingest even when the movie's frames do not look like the extraction's mean image "
        "(Suite2p meanImg; pixel correlation below 0.2: another recording, channel or plane?)",
    )
    p.add_argument(
        "--suite2p-trace",
        default=None,
        choices=["F", "F-0.7Fneu", "spks"],
        help="Suite2p signal used as the trace (default F-0.7Fneu)",
    )
    p.add_argument(
        "--caiman-trace",
        default=None,
        choices=["C+YrA", "C"],
        help="CaImAn signal used as the trace (default C+YrA)",
    )
    p.add_argument(
        "--nonfinite",
        default=None,
        choices=["error", "zero"],
        help="NaN/Inf in traces: stop with an error (default) or replace by 0",
    )
    p.add_argument(
        "--truth",
        default=None,
        metavar="TRUTH.npz",
        help="a synthetic recording's truth.npz (`actsort synth`): copied into the store as "
        "truth/labels and truth/annotators, for `actsort simulate`, `train --labels truth` and "
        "the page's comparison with truth",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing sort store (never one holding labels; never an input, a "
        "file or a folder that is not a sort store)",
    )
    add_config_argument(p)
    add_progress_argument(p)
    p.set_defaults(func=run)


def _frame_rate(text: str) -> float:
    """argparse type of --fs: a finite number > 0."""
    from ..ingest import check_fs_hz

    try:
        return check_fs_hz(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--fs: ")) from None


def _rows(text: str) -> list[int]:
    """'FIRST:STOP' -> [FIRST, STOP] (two whole numbers, 0 <= FIRST < STOP)."""
    parts = text.split(":")
    try:
        first, stop = (int(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FIRST:STOP, e.g. 0:512") from None
    if not 0 <= first < stop:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 <= FIRST < STOP")
    return [first, stop]


def run(args) -> int:
    from ..config import load_config
    from ..ingest import ingest_files

    overrides = {
        k: v
        for k, v in (
            ("format", args.format),
            ("movie_dataset", args.dataset),
            ("movie_channels", args.channels),
            ("movie_channel", args.channel),
            ("movie_planes", args.planes),
            ("movie_plane", args.plane),
            ("movie_rows", args.rows),
            ("movie_roi", args.roi),
            ("fs_hz", args.fs),
            ("suite2p_trace", args.suite2p_trace),
            ("caiman_trace", args.caiman_trace),
            ("nonfinite", args.nonfinite),
            ("allow_downsampling", args.allow_downsampling),
            ("check_mean_image", args.check_mean_image),
        )
        if v is not None
    }
    config = load_config(args.config, **({"ingest": overrides} if overrides else {})).ingest
    # Both inputs checked before either is read, so one run names every missing path.
    inputs = [("movie", args.movie), ("extraction", args.extraction), ("truth", args.truth)]
    missing = [
        f"--{flag} {path}: not found"
        for flag, path in inputs
        if path is not None and not Path(path).exists()
    ]
    if missing:
        raise FileNotFoundError("; ".join(missing))
    store = ingest_files(
        args.movie,
        args.extraction,
        args.out,
        config=config,
        overwrite=args.overwrite,
        progress=args.progress,
    )
    if args.truth is not None:
        _add_truth(store.path, args.truth)
    print(store.summary())
    return 0


def _add_truth(store_path: Path, truth: str) -> None:
    """Copy the synthetic truth into the store just made; a truth that is not this
    recording's removes that store again (it holds no label yet) and says why."""
    import shutil

    from ..synth import write_truth

    try:
        write_truth(store_path, truth)
    except ValueError as exc:
        shutil.rmtree(store_path)
        raise ValueError(f"{exc}; {store_path} was not kept") from None
