"""``actsort info``: a readable summary of a sort store (sizes, candidates, stages done and the
device each ran on); without a store, what ``--device auto`` would use on this machine."""

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
        "store", metavar="S.actsort", nargs="?", default=None, help="sort store directory"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    if args.store is None:
        from ..backend import device_report

        for part, where in device_report().items():
            print(f"{part:<7} {where}")
        return 0
    from ..store import SortStore

    print(SortStore.open(args.store, "r").summary())
    return 0
