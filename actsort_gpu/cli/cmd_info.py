"""``actsort info``: a readable summary of a sort store (sizes, candidates, stages done and the
device each ran on); without a store, what ``--device auto`` would use on this machine and
whether the host loops run compiled."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="summarise a sort store (or this machine's devices)",
        description="Print sizes, candidates, source metrics and which stages are complete, "
        "with the device each stage ran on. Without a store: which device --device auto "
        "gives the array work (CuPy) and the torch models on this machine, and why.",
    )
    p.add_argument(
        "store",
        metavar="S.actsort",
        nargs="?",
        default=None,
        help="sort store directory, or a movie (what it holds before `actsort ingest`: frames, "
        "dtype, frame rate, channels / planes / ROIs and the flags to choose one)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    if args.store is None:
        from ..backend import device_report

        for part, where in device_report().items():
            print(f"{part:<7} {where}")
        print(f"{'loops':<7} {_compiled_loops_line()}")
        print(f"{'cores':<7} {_cores_line()}")
        return 0
    from .. import schema
    from ..labels import journal_holder
    from ..store import SortStore, StoreError

    if _is_movie(args.store):
        print("\n".join(movie_lines(args.store)))
        return 0
    store = SortStore.open(args.store, "r")
    print(store.summary())
    holder = journal_holder(store.journal_path)
    if holder is not None:
        print(f"page     open for labelling ({holder})")
    if store.has(schema.FEATURE_MATRIX):
        try:
            print(_learner_line(args.store))
        except (StoreError, ValueError) as exc:  # e.g. an interrupted features stage
            print(f"learner  not available: {exc}")
    return 0


def _learner_line(path) -> str:
    """What the page's learner does with this store's labels now: its inputs (features alone
    or with the learned embeddings, and why), from a read-only replay of the journal."""
    from ..active.learner import Learner

    learner = Learner.read_only(path)
    learner.probabilities()
    n = int((learner.human() != 0).sum())
    return f"learner  {n} human labels; {learner.inputs_status()}"


def _compiled_loops_line() -> str:
    """Whether the host loops run compiled (Numba) or as their NumPy / SciPy twins, without
    compiling anything (``actsort info`` stays quick)."""
    from ..jit import available

    if not available():
        return (
            "Numba does not import: the NumPy / SciPy twins run (the same results to rounding; "
            "the movie pass, the spatial features and the learner are several times slower)"
        )
    import numba

    return (
        f"Numba {numba.__version__}: the movie pass, events, outlines, snapshot quantiser, "
        "spatial shapes and the learner's L1 step run compiled (compiled once after an "
        "install, then loaded from Numba's cache; a loop that fails to compile is logged and "
        "its NumPy / SciPy twin runs)"
    )


def _cores_line() -> str:
    """The CPU cores this process may use and the threads the feature stage takes by default."""
    from ..backend import cpu_cores, cpu_threads
    from ..config import FeatureConfig

    return (
        f"{cpu_cores()} CPU cores usable here; the feature stage's host work runs on "
        f"{cpu_threads(FeatureConfig().threads)} threads by default (features.threads)"
    )


def _is_movie(path) -> bool:
    """A path the movie readers take and that is not a sort store."""
    from pathlib import Path

    from ..io.movies import _detect_movie_format

    path = Path(path)
    if (path / "zarr.json").exists() and path.suffix == ".actsort":
        return False
    try:
        _detect_movie_format(path)
    except ValueError:
        return False
    return path.exists()


def movie_lines(path) -> list[str]:
    """What a movie holds, before ingest: its pages (as they are), dtype and size, frame rate,
    TIFF hyperstack axes, ScanImage's channels / volume pages / ROIs and the flags they need."""
    from ..io.movies import Interleave, LayoutNeeded, open_movie
    from ..io.movies.scanimage import scanimage_layout

    try:
        movie = open_movie(path, interleave=Interleave())
    except LayoutNeeded as exc:  # an array with a channel axis, a Bruker folder
        return [f"movie    {path}", f"layout   {exc}"]
    with movie:
        info = movie.describe()
        size = movie.n_frames * movie.frame_bytes
        lines = [
            f"movie    {path} [{info['format']}]"
            + (f", dataset {info['dataset']}" if info.get("dataset") else ""),
            f"pages    {movie.n_frames:,} of {movie.height} x {movie.width} {movie.dtype} "
            + (f"({size / 2**30:.2f} GiB)" if size >= 2**30 else f"({size / 2**20:.1f} MiB)"),
        ]
        stack = getattr(movie, "stack", None)
    scanimage = scanimage_layout(path)
    if stack is not None and scanimage is None:  # tifffile's axes of a ScanImage file mislead
        lines.append(f"axes     {stack[0]} of sizes {stack[1]} (a hyperstack)")
    fs_hz = movie.fs_hz or (scanimage.fs_hz if scanimage else None)
    lines.append(f"rate     {fs_hz:g} Hz" if fs_hz else "rate     not recorded (ingest --fs)")
    if scanimage is not None:
        lines.append(f"layout   {scanimage.describe()}")
        flags = scanimage.choices()
        lines.append(
            "choose   " + (" and ".join(flags) if flags else "nothing: every page is a frame")
        )
    return lines
