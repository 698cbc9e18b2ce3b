"""``actsort info``: a readable summary of a sort store (sizes, candidates, stages done)."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="summarise a sort store",
        description="Print sizes, candidates, source metrics and which stages are complete.",
    )
    p.add_argument("store", metavar="S.actsort", help="sort store directory")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..store import SortStore

    print(SortStore.open(args.store, "r").summary())
    return 0
