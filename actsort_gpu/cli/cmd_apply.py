"""``actsort apply``: classify many sort stores headlessly with a portable classifier."""

from __future__ import annotations

import argparse

from ..export import EXPORTERS, TABLE_FORMATS
from ._common import add_config_argument, add_device_argument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "apply",
        help="classify sort stores with a portable classifier (no page)",
        description="Write predictions/ (P(cell), decision, final label) into each store. "
        "Refuses stores whose feature set differs from the classifier's before "
        "writing anything. Human labels in a store's journal fine-tune the "
        "classifier (the page's policy, `active.transfer` in the config) and win over the "
        "model.",
    )
    p.add_argument("stores", nargs="+", metavar="STORE", help="sort stores (*.actsort)")
    p.add_argument(
        "--classifier",
        required=True,
        metavar="FILE",
        help="portable classifier (.npz from the page or `actsort export --format classifier`)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decision threshold on P(cell) (default: the classifier's)",
    )
    p.add_argument(
        "--export",
        choices=TABLE_FORMATS,
        default=None,
        help="also export each store's table to its default location: "
        + "; ".join(f"{k}: {EXPORTERS[k].description}" for k in TABLE_FORMATS),
    )
    add_device_argument(p)
    add_config_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..apply import apply_classifier
    from ..config import load_config

    results = apply_classifier(
        args.classifier,
        args.stores,
        threshold=args.threshold,
        export=args.export,
        config=load_config(args.config).active,
        device=args.device,
    )
    for r in results:
        line = (
            f"{r.path}: {r.n_cells:,} cells of {len(r.final):,} candidates "
            f"({r.n_human:,} human labels)"
        )
        if r.export_path is not None:
            line += f" -> {r.export_path}"
        print(line)
    return 0
