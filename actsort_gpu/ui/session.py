"""Per-browser-tab view state (held in ``gr.State``): light, immutable, copied on change.

Labels, the classifier and the journal are not here: they live in the shared
:class:`~actsort_gpu.ui.workspace.Workspace` (one per server process), so every tab sees the
same labels and the journal is the only record.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = ["ViewState", "IMAGE_KINDS", "STRATEGY_CHOICES", "CLICK_MODES", "COLOUR_MODES"]

IMAGE_KINDS = ("max", "mean", "corr", "std")
# Page names of the query modes -> (learner mode). Audits walk the model's decisions.
STRATEGY_CHOICES = {
    "DCAL (default)": "dcal",
    "CAL (uncertainty)": "cal",
    "DAL (diversity)": "dal",
    "Random": "random",
    "In order": "ordered",
    "Audit: predicted cells": "audit:cells",
    "Audit: predicted non-cells": "audit:non-cells",
    "Audit: most uncertain": "audit:uncertain",
    "Review: unsure candidates": "audit:unsure",
}
CLICK_MODES = ("Select one", "Add to selection", "Box: two corners")
# Page names of the map's outline colours -> (ViewState.colour_by).
COLOUR_MODES = {
    "Labels and decisions": "labels",
    "P(cell)": "probability",
    "A feature (below)": "feature",
}


@dataclass(frozen=True)
class ViewState:
    """What one tab shows.

    store : index of the store (animal) in the workspace
    current : candidate shown in the panel (-1 before the first query)
    selected : candidates selected on the map for a group label (empty: the current one)
    box_corner : first corner (row, col) of a box selection awaiting its second click
    history_pos : position in the store's labelling order when browsing back (None: at the end)
    image, lo_pct, hi_pct : FOV image and its contrast percentiles
    snap_lo_pct, snap_hi_pct : the event snapshots' contrast: percentiles of the candidate's
        snapshot values shown black and white (ActSort's defaults: 10 and 99.9)
    zoom : 0 (whole field of view) .. 100 (10 px around the current candidate)
    show_model : colour unlabelled candidates by the model's decision
    hide_cells, hide_not, hide_outlines : leave out of the map your cells, your non-cells, or
        every candidate but the current and selected ones (ActSort's "NO BORDER": the image
        unobstructed; clicks still select)
    fill_opacity : ActSort's cell transparency slider, 0..1 (0.5: the page's default fills)
    border : the outline colour of unlabelled candidates and of the snapshots' neighbours (a
        name of ``render.BORDER_COLOURS``; ActSort's cell border colour)
    playing, frame : snapshot playback
    truth_shown : the user asked to compare with the truth (demo stores; never before)
    show_errors : colour the map by errors against the truth (only once ``truth_shown``)
    colour_by : map outlines by "labels" (and decisions), "probability" (P(cell)) or "feature"
    feature : exact name of the feature to colour by and to filter on ('' : the first one)
    feature_lo_pct, feature_hi_pct : show only candidates whose feature lies between these
        percentiles of its values (0, 100: no filter)
    hide_rejected : hide candidates whose final label is "not a cell" (yours, else the model's)
    sent : fingerprints of the panels this tab shows (the page re-sends only changed ones)
    tab : this tab's id (given when it opens): its labels are its own to undo
    """

    store: int = 0
    current: int = -1
    selected: tuple[int, ...] = ()
    box_corner: tuple[int, int] | None = None
    click_mode: str = CLICK_MODES[0]
    history_pos: int | None = None
    image: str = "max"
    lo_pct: float = 1.0
    hi_pct: float = 99.7
    snap_lo_pct: float = 10.0
    snap_hi_pct: float = 99.9
    zoom: float = 0.0
    show_model: bool = True
    hide_cells: bool = False
    hide_not: bool = False
    hide_outlines: bool = False
    fill_opacity: float = 0.5
    border: str = "Light blue"
    playing: bool = False
    frame: int = 0
    truth_shown: bool = False
    show_errors: bool = False
    colour_by: str = "labels"
    feature: str = ""
    feature_lo_pct: float = 0.0
    feature_hi_pct: float = 100.0
    hide_rejected: bool = False
    message: str = ""
    tab: str = ""
    extra: dict = field(default_factory=dict, compare=False)
    sent: dict = field(default_factory=dict, compare=False)  # panel -> fingerprint on screen

    def with_(self, **changes) -> ViewState:
        return replace(self, **changes)
