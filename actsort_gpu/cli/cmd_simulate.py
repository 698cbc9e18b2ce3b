"""``actsort simulate``: replay recorded annotators through the active-learning loop.

Output JSON::

    {"dataset": str, "n_candidates": int, "human": {"ba", "tpr", "tnr"},
     "results": {STRATEGY: {"budgets_pct": [...], "ba": [...], "ba_sd": [...], "tpr": [...],
                            "tnr": [...], "auc": [...]}},
     "oracles": [...], "repeats": int, "seed": int, "budgets_queries": [...],
     "policies": {STRATEGY: {...every option used...}}, "seconds": {STRATEGY: float}}

Each STRATEGY result also has ``ba_unlabelled`` (+ ``_sd``): BA on the candidates not labelled
at that budget. With ``--classifier``: a top-level ``"classifier": {id, sources, labels,
n_rows}`` and per strategy ``"classifier": true`` (false for names ending in ``+noclf``) and
``"model_in_use"`` per budget. ``--leave-one-out`` writes ``{"files", "labels",
"leave_one_out": [one such result per file, with "training": {cv_ba, sources}]}``.
"""

from __future__ import annotations

import argparse

from ._common import add_config_argument, add_device_argument


def _csv(kind):
    def parse(text):
        try:
            return [kind(t) for t in text.split(",") if t.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list: {exc}") from exc

    return parse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="simulate active learning with recorded annotators -> JSON (+ plot)",
        description="Each annotator in turn answers the queries; ground truth is the majority "
        "of the others; 3 cells + 3 non-cells seeded from the oracle (none with --classifier: "
        "it is the cold start); balanced accuracy, TPR, TNR and AUC of the classifier's "
        "decisions on all candidates, and BA on the candidates not yet labelled, at each "
        "budget (% of candidates), averaged over oracles and repeats "
        "(docs/actsort_reference.md section 7).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--features",
        metavar="FILE",
        help="ActSort benchmark .mat, CSV (feature + label_* columns) or sort store",
    )
    src.add_argument(
        "--leave-one-out",
        type=_csv(str),
        metavar="F1,F2,F3",
        help="the cross-animal protocol: for each file, train a classifier on the others' "
        "majority labels (as `actsort train`) and simulate on it with that classifier",
    )
    p.add_argument(
        "--classifier",
        metavar="C.npz",
        default=None,
        help="start from this portable classifier (`actsort train`): no seed labels, budget 0 "
        "allowed; strategies ending in '+noclf' run without it",
    )
    p.add_argument(
        "--labels",
        default=None,
        metavar="FILE.npy",
        dest="labels_file",
        help="labels for --features from outside: (N,) or (n_annotators, N), +1 cell, -1 not a "
        "cell, 0 unknown (left out of scoring)",
    )
    p.add_argument(
        "--oracle", default="all", metavar="NAME|all", help="the annotator who answers, or all"
    )
    p.add_argument(
        "--strategies",
        type=_csv(str),
        default=["random", "cal", "dal", "dcal"],
        help="comma list: random, ordered, cal, dal, dcal, dcal-<w>, faithful-dcal, "
        "default; options after '+' (bal, nobal, noclip, thrX, lamX, refreshK, "
        "cv, nocv, pseudoW, pconfX, pmaxR; with a classifier: select, union, discard, "
        "classifier (how it is fine-tuned) and noclf (without it); inputs: feat, emb, "
        "feat+emb (a store's embeddings; default: what the product uses))",
    )
    p.add_argument(
        "--budgets",
        type=_csv(float),
        default=None,
        metavar="PCT,...",
        help="%% of candidates labelled (default 1,2,3,5; 0,0.5,1,2,5 with a classifier)",
    )
    p.add_argument("--repeats", type=int, default=5, help="runs per oracle and strategy")
    p.add_argument("--seed", type=int, default=0, help="seed of the first run")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decision threshold of the non-default strategies (default 0.65, "
        "ActSort's scripts; 'default' always uses the product's own)",
    )
    p.add_argument(
        "--json",
        required=True,
        metavar="OUT",
        dest="json_out",
        help="write the results here (an existing file only if it is an earlier results JSON)",
    )
    p.add_argument(
        "--plot",
        default=None,
        metavar="OUT.png",
        help="also plot BA against the budget here (.png, .svg or .pdf; an existing file only "
        "if it is an earlier plot)",
    )
    add_device_argument(p)
    add_config_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..active.simulate import leave_one_out, run_simulation
    from ..config import load_config

    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    from ..backend import resolve_backend

    device = resolve_backend(args.device, uses="torch").torch_device
    transfer = args.classifier is not None or args.leave_one_out is not None
    budgets = args.budgets or ([0, 0.5, 1, 2, 5] if transfer else [1, 2, 3, 5])
    options = dict(
        oracle=args.oracle,
        repeats=args.repeats,
        seed=args.seed,
        threshold=args.threshold,
        device=device,
        config=load_config(args.config).active,
    )
    if args.leave_one_out is not None:
        if args.classifier is not None or args.labels_file is not None:
            raise ValueError(
                "--leave-one-out trains its own classifiers from the files' own labels: drop "
                "--classifier and --labels"
            )
        out = leave_one_out(
            args.leave_one_out,
            strategies=args.strategies,
            budgets_pct=budgets,
            json_out=args.json_out,
            **options,
        )
        for res in out["leave_one_out"]:
            _print(res, budgets)
        print(f"wrote {args.json_out}")
        return 0
    res = run_simulation(
        args.features,
        strategies=args.strategies,
        budgets_pct=budgets,
        json_out=args.json_out,
        plot_out=args.plot,
        classifier=args.classifier,
        labels_file=args.labels_file,
        **options,
    )
    _print(res, budgets)
    print(f"wrote {args.json_out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


def _print(res: dict, budgets) -> None:
    clf = res.get("classifier")
    head = f"{res['dataset']}: {res['n_candidates']} candidates, human BA {res['human']['ba']:.3f}"
    if clf:
        head += f"; classifier {clf['id']} from " + ", ".join(s["name"] for s in clf["sources"])
    print(head)
    for name, auc in res.get("label_leaks", {}).items():
        print(
            f"  warning: feature {name} alone separates the labels (ROC AUC {auc:.3f}): if the "
            "labels came from it, these figures measure that column, not the learner"
        )
    print(f"  BA at {budgets} % (all candidates | not yet labelled):")
    for name, r in res["results"].items():
        print(
            f"  {name:22s} "
            + " ".join(f"{v:.3f}" for v in r["ba"])
            + " | "
            + " ".join(f"{v:.3f}" for v in r["ba_unlabelled"])
        )
