"""The annotation page (Gradio): the only package that knows Gradio.

``serve(stores, ...)`` is what ``actsort sort`` and ``python app.py`` call. The page is a thin
layer: handlers (``handlers.py``) are plain functions over a shared :class:`Workspace`
(stores + the active-learning ``Learner``) and a per-tab :class:`ViewState`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["serve", "open_workspace"]


def open_workspace(
    stores, *, classifier=None, annotator: str | None = None, config=None, device: str = "cpu"
):
    """Open the stores and the learner for the page (``Learner.open`` refuses a store given
    twice and shows stores of one folder name with their parent folders, ``m1/plane0.actsort``)."""
    from .workspace import Workspace

    paths = [Path(s) for s in stores]
    if not paths:
        raise ValueError("no sort store given")
    ui = config.ui if config is not None else None
    who = annotator or (ui.annotator if ui is not None else "anonymous")
    return Workspace.open(paths, annotator=who, classifier=classifier, config=config, device=device)


def serve(
    stores,
    *,
    classifier=None,
    annotator: str | None = None,
    host: str | None = None,
    port: int | None = None,
    auth: str | None = None,
    config=None,
    device: str = "cpu",
    export_dir=None,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
    inbrowser: bool = False,
):
    """Open the stores and serve the page; returns (demo, workspace) when
    ``prevent_thread_lock``, else blocks until the server stops. ``inbrowser`` opens the page
    in the default web browser once the server is up (``actsort demo``)."""
    from ..config import load_config
    from .layout import build_app, check_address, launch

    config = config or load_config()
    ui = config.ui
    ui = replace(ui, host=host or ui.host, port=int(port or ui.port))
    if ui.host not in ("127.0.0.1", "localhost", "::1") and not auth:
        log.warning("serving on %s without --auth: anyone on the network can label", ui.host)
    check_address(ui.host, ui.port)  # before the stores are opened and their journals locked
    ws = open_workspace(
        stores, classifier=classifier, annotator=annotator, config=config, device=device
    )
    try:
        demo = build_app(ws, ui, export_dir=export_dir)
        launch(
            demo,
            ui,
            auth=auth,
            prevent_thread_lock=prevent_thread_lock,
            quiet=quiet,
            inbrowser=inbrowser,
        )
    except BaseException:
        ws.close()  # the journals' locks go with it: the next try in this process can open them
        raise
    return demo, ws
