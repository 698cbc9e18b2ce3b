"""A synthetic recording's truth carried into the sort store ingested from it.

``write_truth(store, truth.npz)`` writes ``truth/labels`` (+1 cell / -1 not) and, when the
recording has simulated annotators, ``truth/annotators``, row for row through the store's
``candidates/source_index``. What the page compares with on request, what ``actsort simulate``
and ``actsort train --labels truth`` read.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .. import schema
from .api import load_truth

__all__ = ["write_truth", "MIN_SUPPORT_IOU"]

# Median IoU of the supports of the store's footprints and the truth's, below which the truth
# is refused as another recording's: 1.0 for the recording's own (the extraction's footprints
# are the truth's), 0.0-0.3 for another seed of the same size.
MIN_SUPPORT_IOU = 0.5
# a footprint's support: its positive pixels (the smallest normal float32: every one)
SUPPORT_LEVEL = float(np.finfo(np.float32).tiny)


def write_truth(store_path: str | Path, truth_path: str | Path) -> None:
    """Copy a synthetic recording's truth (``truth.npz`` of ``actsort synth``) into the store.

    Raises ValueError naming the file when it is not such a truth file, or when it is the
    truth of another recording (other frame size, fewer candidates, or footprints that do not
    match the store's candidates)."""
    from ..store import SortStore

    store = SortStore.open(store_path, "r+")
    what = "not the truth.npz of `actsort synth`"
    if not zipfile.is_zipfile(truth_path):
        raise ValueError(f"{truth_path}: {what} (not an .npz file)")
    try:
        truth = load_truth(truth_path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{truth_path}: {what} ({type(exc).__name__}: {exc})") from None
    src = store.source_index()
    n_truth = len(truth["is_cell"])
    if src.size and (src.max() >= n_truth or src.min() < 0):
        raise ValueError(
            f"{truth_path}: truth for {n_truth} candidates, but {store_path} "
            f"refers to source rows up to {int(src.max())}"
        )
    _check_footprints(store, truth["footprints"], src, truth_path)
    store.write_array(
        schema.TRUTH_LABELS,
        np.asarray(truth["is_cell"], np.int8)[src],
        dims=["candidates"],
        units="+1 cell / -1 not",
    )
    annotators = np.asarray(truth["annotators"], np.int8)
    if annotators.size:
        store.write_array(
            schema.TRUTH_ANNOTATORS,
            annotators[:, src],
            dims=["annotators", "candidates"],
            attrs={"names": [str(n) for n in truth["annotator_names"]]},
        )


def _check_footprints(store, footprints, src: np.ndarray, truth_path) -> None:
    """Refuse the truth of another recording: its frame size, or the supports of its
    footprints against the store's (median IoU < ``MIN_SUPPORT_IOU``)."""
    pixels = store.height * store.width
    if footprints.shape[1] != pixels:
        raise ValueError(
            f"{truth_path}: footprints of {footprints.shape[1]} pixels, but {store.path}'s frames "
            f"are {store.height} x {store.width}: the truth of another recording"
        )
    if not src.size:
        return
    from ..label_import import mask_iou

    # every pixel of a footprint in its mask (its support); pairs sharing none: IoU 0
    pairs = mask_iou(store.footprints(), footprints[src], mask_level=SUPPORT_LEVEL).tocsr()
    iou = float(np.median(pairs.diagonal()))
    if iou < MIN_SUPPORT_IOU:
        raise ValueError(
            f"{truth_path}: its footprints do not match {store.path}'s candidates (median "
            f"overlap {iou:.2f}, IoU of the supports): the truth of another recording"
        )
