"""``actsort simulate``: replay recorded annotators through the active-learning loop.

Output JSON::

    {"dataset": str, "n_candidates": int, "human": {"ba", "tpr", "tnr"},
     "results": {STRATEGY: {"budgets_pct": [...], "ba": [...], "ba_sd": [...], "tpr": [...],
                            "tnr": [...], "auc": [...]}},
     "oracles": [...], "repeats": int, "seed": int, "budgets_queries": [...],
     "policies": {STRATEGY: {...every option used...}}, "seconds": {STRATEGY: float}}
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
        "of the others; 3 cells + 3 non-cells seeded from the oracle; balanced "
        "accuracy, TPR, TNR and AUC of the classifier's decisions on all "
        "candidates at each budget (%% of candidates), averaged over oracles and "
        "repeats (docs/actsort_reference.md section 7).",
    )
    p.add_argument(
        "--features",
        required=True,
        metavar="FILE",
        help="ActSort benchmark .mat, CSV (feature + label_* columns) or sort store",
    )
    p.add_argument("--oracle", default="all", metavar="NAME|all")
    p.add_argument(
        "--strategies",
        type=_csv(str),
        default=["random", "cal", "dal", "dcal"],
        help="comma list: random, ordered, cal, dal, dcal, dcal-<w>, faithful-dcal, "
        "default; options after '+' (bal, nobal, noclip, thrX, lamX, refreshK, "
        "cv, nocv, pseudoW, pconfX, pmaxR)",
    )
    p.add_argument("--budgets", type=_csv(float), default=[1, 2, 3, 5], metavar="PCT,...")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decision threshold of the non-default strategies (default 0.65, "
        "ActSort's scripts; 'default' always uses the product's own)",
    )
    p.add_argument("--json", required=True, metavar="OUT", dest="json_out")
    p.add_argument("--plot", default=None, metavar="OUT.png")
    add_device_argument(p)
    add_config_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..active.simulate import run_simulation
    from ..config import load_config

    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    device = "cpu" if args.device == "auto" else args.device
    if args.device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    res = run_simulation(
        args.features,
        oracle=args.oracle,
        strategies=args.strategies,
        budgets_pct=args.budgets,
        repeats=args.repeats,
        seed=args.seed,
        threshold=args.threshold,
        json_out=args.json_out,
        plot_out=args.plot,
        device=device,
        config=load_config(args.config).active,
    )
    print(
        f"{res['dataset']}: {res['n_candidates']} candidates, human BA "
        f"{res['human']['ba']:.3f}; BA at {args.budgets} %:"
    )
    for name, r in res["results"].items():
        print(f"  {name:16s} " + " ".join(f"{v:.3f}" for v in r["ba"]))
    print(f"wrote {args.json_out}" + (f" and {args.plot}" if args.plot else ""))
    return 0
