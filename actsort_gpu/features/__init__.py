"""Feature stage: the 76 ActSort features (+ extras) of every candidate, from the store only.

``compute_features(store_path)`` (:mod:`.run`, the driver) computes the three ActSort families
(:mod:`.temporal` 1-36, :mod:`.spatial` 37-46, :mod:`.spatiotemporal` 47-76) and the extras
(:mod:`.extra`) block by block, places every named column (:mod:`.columns`) by its name in the
order of :mod:`.registry`, applies the NaN/Inf policy once (:mod:`.policy`) and writes
``features/matrix`` (N, F) float32 with attrs ``names``, ``groups``, ``version``,
``nan_report``.

Adding a feature touches two files: the family module that computes it under its name, and
:mod:`.registry`, which gives its place, group and the feature-set version.
"""

from __future__ import annotations

from .columns import NamedColumns
from .registry import EXTRA_COMPUTED_NAMES, check_compatible, feature_names, feature_set
from .run import compute_features, crop_footprints, read_feature_matrix, trace_similarity

__all__ = [
    "EXTRA_COMPUTED_NAMES",
    "NamedColumns",
    "check_compatible",
    "compute_features",
    "crop_footprints",
    "feature_names",
    "feature_set",
    "read_feature_matrix",
    "trace_similarity",
]
