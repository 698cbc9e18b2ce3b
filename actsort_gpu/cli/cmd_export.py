"""``actsort export``: write a store's curation as a table, Suite2p iscell.npy, NWB columns or
a portable classifier file."""

from __future__ import annotations

from ..export import EXPORT_FORMATS, EXPORTERS
from ._common import add_config_argument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export labels / classifier",
        description="Export human labels, model probabilities and final labels of a sort store. "
        "Reads the label journal without locking it (works beside a running page).",
    )
    p.add_argument("store", metavar="S.actsort", help="sort store directory")
    p.add_argument(
        "--format",
        required=True,
        choices=EXPORT_FORMATS,
        help="; ".join(f"{k}: {e.description}" for k, e in EXPORTERS.items()),
    )
    p.add_argument(
        "--out",
        default=None,
        help="output file (csv/parquet/classifier/nwb), or an existing folder to put the "
        "format's file in, or the Suite2p plane folder (default: <store>/exports/..., "
        "Suite2p: the source folder)",
    )
    p.add_argument(
        "--predictions",
        action="store_true",
        help="export the decisions `actsort apply` wrote into the store (its classifier's, "
        "your labels winning) instead of those of a classifier trained on your labels",
    )
    add_config_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import logging

    from .. import schema
    from ..config import load_config
    from ..export import export_labels, export_predictions
    from ..store import SortStore

    if args.predictions:
        path = export_predictions(args.store, args.format, args.out)
    else:
        path = export_labels(args.store, args.format, args.out, config=load_config(args.config))
        if SortStore.open(args.store).has(schema.PREDICTED_FINAL):
            logging.getLogger(__name__).info(
                "%s also holds the decisions of `actsort apply`; --predictions exports those",
                args.store,
            )
    print(f"actsort export: wrote {path}")
    return 0
