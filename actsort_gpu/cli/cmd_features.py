"""``actsort features``: the 76 ActSort features (+ extras) of every candidate -> features/."""

from __future__ import annotations

import argparse
import dataclasses

from ._common import add_config_argument, add_device_argument, add_progress_argument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "features",
        help="engineered features of every candidate -> features/matrix",
        description="Compute ActSort's 76 features (temporal, spatial, spatiotemporal) and the "
        "extra Suite2p/CaImAn-style columns from the store (traces, footprints, "
        "snapshots) and write features/matrix (N, F) with its names and "
        "feature-set version. Needs `actsort preprocess` first. NaN/Inf values "
        "are replaced once (ActSort's policy) and reported.",
    )
    p.add_argument("store", metavar="STORE", help="sort store (*.actsort)")
    add_device_argument(p)
    add_config_argument(p)
    add_progress_argument(p)
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="address of a running Dask scheduler (tcp://host:8786): candidate "
        "blocks run as pieces on its workers, each reading the store",
    )
    p.add_argument(
        "--workers",
        metavar="N",
        type=int,
        default=None,
        help="start a local Dask cluster with N worker processes",
    )
    p.add_argument(
        "--threads",
        metavar="N",
        type=int,
        default=None,
        help="CPU threads for the host work (default features.threads: 0 = one per core "
        "this process may use, at most 8); each thread holds about 120 MB",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import schema
    from ..config import load_config
    from ..features import compute_features
    from ..features.policy import format_nan_report
    from ..store import SortStore

    cfg = load_config(args.config).features
    if args.threads is not None:
        cfg = dataclasses.replace(cfg, threads=args.threads)  # checked with the rest of cfg
    matrix = compute_features(
        args.store,
        cfg,
        device=args.device,
        progress=args.progress,
        scheduler=args.scheduler,
        workers=args.workers,
    )
    store = SortStore.open(args.store)
    attrs = store.array(schema.FEATURE_MATRIX).attrs
    stage = store.attrs["stages"]["features"]
    threads = f", {stage['threads']} CPU threads" if stage.get("threads") else ""
    print(
        f"{args.store}: {schema.FEATURE_MATRIX} {matrix.shape[0]} x {matrix.shape[1]} "
        f"({attrs['version']}) on {stage['device']}{threads} in {stage['seconds']:.1f} s"
    )
    report = attrs.get("nan_report") or {}
    if report:
        print(f"NaN/Inf replaced in {len(report)} feature(s):")
        print(format_nan_report(report))
    return 0
