"""``actsort train``: one portable classifier from labelled recordings of earlier animals."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a portable classifier from labelled sort stores, ActSort .mat or CSV files",
        description="Pool the labelled candidates of earlier recordings (features z-scored per "
        "recording) into one class-balanced L1-logistic classifier, saved as a portable .npz "
        "(no pickle) for `actsort sort --classifier`, `actsort apply` and `actsort simulate "
        "--classifier`. Prints the rows per recording and class, the cross-validated balanced "
        "accuracy on its own rows and, with two or more recordings, the balanced accuracy on "
        "each recording of a classifier trained on the others (what to expect on a new animal).",
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="sort stores (their journal's human labels), ActSort benchmark .mat files or CSV "
        "files (feature columns + label_<annotator> columns)",
    )
    p.add_argument("--out", required=True, metavar="C.npz", help="classifier file to write")
    p.add_argument(
        "--labels",
        default="majority",
        metavar="majority|ANNOTATOR|truth",
        help="which labels: 'majority' of the annotators (ties count as not a cell, as the "
        "benchmark's ground truth), one annotator's by name, or 'truth' (a store's truth/ "
        "arrays instead of its journal). Default: majority (a store's journal has one "
        "annotator column)",
    )
    p.add_argument(
        "--lambda-scale",
        type=float,
        default=1.0,
        help="L1 weight x number of rows (1 = scikit-learn C = 1; larger = sparser)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace --out if it exists (a classifier file only)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    from ..active.sources import load_labelled_many
    from ..active.transfer import classifier_path, load_classifier, train_classifier

    out = classifier_path(args.out)
    if out.exists():
        if not args.force:
            raise FileExistsError(f"{out}: exists; pass --force to replace it")
        load_classifier(out)  # refuses to replace anything but a classifier file
    if not args.lambda_scale > 0:
        raise ValueError(f"--lambda-scale must be > 0, got {args.lambda_scale}")
    store_labels = "truth" if args.labels == "truth" else "journal"
    labels = "majority" if args.labels == "truth" else args.labels
    sources = load_labelled_many(args.sources, labels=store_labels)
    clf, report = train_classifier(sources, labels=labels, lambda_scale=args.lambda_scale)
    path = clf.save(out)
    print(f"trained on {len(sources)} recording(s), {clf.meta['n_rows']:,} labelled rows:")
    for line in report.lines():
        print(line)
    print(f"wrote {path} (classifier {clf.id}, {len(clf.feature_names)} features)")
    return 0
