"""``actsort import-labels``: carry the labels of an earlier sort store of the same recording
(an earlier extraction) to a new one, by footprint overlap; or give a store the labels of a
file with one label per extraction row (ActSort's _LABELS.mat, an exported CSV, an .npy)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from ..label_import import MASK_LEVEL, MIN_IOU

    p = subparsers.add_parser(
        "import-labels",
        help="carry human labels from an earlier store of the same recording (re-extraction) "
        "or from a label file (ActSort _LABELS.mat, exported CSV, .npy)",
        description="After running the extraction again (other parameters, version or "
        "extractor) and ingesting it into a new store, give its candidates the human labels of "
        "the earlier store: each new candidate gets the label of the earlier candidate whose "
        "footprint it overlaps best, when each is the other's best match and their mask IoU is "
        "at least --min-iou. The labels are written to the new store's journal as one action "
        "(undo in the page reverts it), never over a label it already has. --from may also "
        "name a file with one label per row of the extraction the store was ingested from "
        "(ActSort's <name>_LABELS.mat, the CSV of `actsort export`, an .npy of +1 / -1 / 0, "
        "Suite2p's iscell.npy of a curated plane): "
        "the MATLAB app's Load labels; or another copy of the store's own journal in its "
        "labels/ folder (a synced folder's conflicted copy), by candidate number.",
    )
    p.add_argument("store", metavar="NEW.actsort", help="the store to give the labels to")
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="OLD.actsort|FILE",
        help="the labelled store of the same field of view (matched by footprints), or a file "
        "with one label per extraction row: ActSort's <name>_LABELS.mat (labels_ex), the CSV of "
        "`actsort export`, an .npy of +1 / -1 / 0, Suite2p's iscell.npy of a curated plane (the "
        "MATLAB app's Load labels), or a copy of the store's journal in its labels/ folder",
    )
    p.add_argument(
        "--min-iou",
        type=float,
        default=MIN_IOU,
        help=f"smallest mask intersection over union of a match (default {MIN_IOU})",
    )
    p.add_argument(
        "--mask-level",
        type=float,
        default=MASK_LEVEL,
        help=f"a footprint's mask: its pixels at or above this share of its peak (default "
        f"{MASK_LEVEL})",
    )
    p.add_argument(
        "--annotator",
        default=None,
        help="name written with each imported label (default import:<OLD store's name>)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..label_import import import_labels

    report = import_labels(
        args.store,
        args.source,
        min_iou=args.min_iou,
        mask_level=args.mask_level,
        annotator=args.annotator,
    )
    print(f"actsort import-labels: {args.store}: {report.summary()}")
    return 0
