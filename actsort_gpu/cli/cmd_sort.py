"""``actsort sort``: open one or more sort stores in the annotation page (Gradio)."""

from __future__ import annotations

import os
from pathlib import Path

from ._common import add_config_argument, add_device_argument


def add_sort_arguments(p) -> None:
    """Arguments shared by ``actsort sort`` and ``python app.py``."""
    p.add_argument(
        "stores",
        nargs="+",
        metavar="S.actsort",
        help="sort store(s) to curate (one per animal / session)",
    )
    p.add_argument(
        "--classifier",
        metavar="FILE.npz",
        default=None,
        help="portable classifier file to fine-tune from (from another animal)",
    )
    p.add_argument("--annotator", default=None, help="name written with every label")
    p.add_argument(
        "--host", default=None, help="bind address (default 127.0.0.1: this computer only)"
    )
    p.add_argument("--port", type=int, default=None, help="port (default 7860)")
    p.add_argument(
        "--auth",
        metavar="USER:PASS",
        default=None,
        help="require a login (use it whenever --host is not 127.0.0.1); visible to other "
        "local users in `ps`: prefer --auth-file or $ACTSORT_AUTH",
    )
    p.add_argument(
        "--auth-file",
        metavar="FILE",
        default=None,
        help="read USER:PASS from the first line of FILE (keep it readable only by you)",
    )
    p.add_argument(
        "--export-dir",
        default=None,
        help="folder for the page's exports (default <first store>/exports)",
    )
    add_device_argument(p)
    add_config_argument(p)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sort",
        help="curate candidates in the browser",
        description="Serve the annotation page for the given sort stores. "
        "Every label is saved in <store>/labels/journal.jsonl "
        "before the page shows it.",
    )
    add_sort_arguments(p)
    p.set_defaults(func=run)


def resolve_auth(args, environ=None) -> str | None:
    """USER:PASS from --auth, else --auth-file (first line), else $ACTSORT_AUTH, else None.

    --auth on the command line is visible to every local user (``ps``): a warning says so.
    """
    import logging

    environ = os.environ if environ is None else environ
    if args.auth:
        logging.getLogger(__name__).warning(
            "--auth: the password is visible to other users of this computer (ps); prefer "
            "--auth-file FILE or the ACTSORT_AUTH environment variable"
        )
        return args.auth
    if getattr(args, "auth_file", None):
        path = Path(args.auth_file)
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the --auth-file ({exc})") from exc
        if not lines or ":" not in lines[0]:
            raise ValueError(f"{path}: expected USER:PASS on the first line (--auth-file)")
        return lines[0].strip()
    return environ.get("ACTSORT_AUTH") or None


def run(args) -> int:
    from ..backend import resolve_backend
    from ..config import load_config
    from ..ui import serve

    auth = resolve_auth(args)
    config = load_config(args.config)
    host = args.host or config.ui.host
    port = args.port or config.ui.port
    # the page's only GPU work is the active learner (torch): resolved once, here
    backend = resolve_backend(args.device, uses="torch")
    demo, ws = serve(
        args.stores,
        classifier=args.classifier,
        annotator=args.annotator,
        host=args.host,
        port=args.port,
        auth=auth,
        config=config,
        device=backend.name,
        export_dir=args.export_dir,
        prevent_thread_lock=True,
        quiet=True,
    )
    # Only now, with the stores open, their journals locked and the server up: a missing store
    # or a held lock has failed before anything said "serving" (issue 15).
    url = demo.local_url or f"http://{host}:{port}/"
    print(
        f"actsort sort: serving {len(args.stores)} store(s) on {url} (Ctrl+C stops; labels are "
        f"saved as you go); active learner on {backend.describe()}",
        flush=True,
    )
    try:
        demo.block_thread()
    finally:
        ws.close()
    return 0
