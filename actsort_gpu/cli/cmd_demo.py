"""``actsort demo``: the whole tool on a synthetic recording, from nothing, in one command."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_device_argument, add_progress_argument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="synthesise a recording, run every stage, open the annotation page",
        description="Synthesise a 2-minute recording with known truth (150 cells, 150 false "
        "candidates), ingest its Suite2p output, preprocess, compute features and "
        "embeddings, then open the annotation page (the truth stays hidden until you "
        "ask the page to compare). With --no-browser, a simulated annotator labels "
        "5 % of the candidates through the active learner instead, and the result "
        "is scored against the truth.",
    )
    p.add_argument(
        "--out",
        default="actsort-demo",
        metavar="DIR",
        help="working folder (default ./actsort-demo, in the current folder; git ignores "
        "it); an existing labelled demo is reused, never overwritten",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the recording")
    p.add_argument(
        "--no-browser",
        action="store_true",
        help="do not serve the page: run a simulated labelling session and exit",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=5.0,
        metavar="PCT",
        help="with --no-browser: percent of candidates the simulated annotator labels (default 5)",
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="rebuild the demo store even if one with labels exists (its labels are lost)",
    )
    p.add_argument("--host", default=None, help="page bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="page port (default 7860)")
    add_device_argument(p)
    add_progress_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import build_demo_store, headless_session

    if not 0 < args.budget <= 100:
        raise ValueError(f"--budget: expected a percentage in (0, 100], got {args.budget}")
    store, times = build_demo_store(
        args.out, seed=args.seed, device=args.device, progress=args.progress, overwrite=args.rebuild
    )
    if times:
        print(
            f"built {store} in {sum(times.values()):.1f} s ("
            + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
            + ")"
        )
    if args.no_browser:
        session = headless_session(store, budget_fraction=args.budget / 100, device=args.device)
        print(
            f"simulated annotator labelled {session.n_labelled} of {session.n_candidates} "
            f"candidates ({args.budget:g} %), {session.seconds_per_update * 1e3:.0f} ms per "
            f"update"
        )
        print(
            f"balanced accuracy vs truth: final labels {session.balanced_accuracy:.3f}, "
            f"model alone {session.model_balanced_accuracy:.3f}, the annotator's own labels "
            f"{session.annotator_balanced_accuracy:.3f}"
        )
        print(f"label it yourself: actsort sort {store}")
        return 0
    from ..ui import serve

    demo, ws = serve(
        [store],
        host=args.host,
        port=args.port,
        inbrowser=True,
        device=args.device,
        prevent_thread_lock=True,
        quiet=True,
    )
    # said once the page is up (a second demo on the same store fails before this line)
    print(
        f"serving the annotation page for {Path(store).resolve()} on {demo.local_url} "
        f"(Ctrl+C stops; labels are saved as you go)",
        flush=True,
    )
    try:
        demo.block_thread()
    finally:
        ws.close()
    return 0
