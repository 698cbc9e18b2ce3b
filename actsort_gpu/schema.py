"""The sort store's schema, declared once: every array's name, dims, dtype, units and stage.

Code outside this module names store arrays through these constants (``schema.TRACES``), never
as string literals. ``docs/store_schema.md`` is generated from :data:`ARRAYS`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ArraySpec", "ARRAYS"]


@dataclass(frozen=True)
class ArraySpec:
    """One array (or CSR / ragged group) of the store.

    name : path inside the store ("candidates/traces")
    dims : axis names (for CSR / ragged groups: of the logical matrix)
    dtype : numpy dtype name ("float32"); "" when it varies (snapshots/data)
    units : units or meaning of the values
    stage : the stage that writes it
    kind : "dense" | "csr" | "ragged" | "group" (a group of per-name arrays)
    """

    name: str
    dims: tuple[str, ...]
    dtype: str
    units: str
    stage: str
    kind: str = "dense"


# ingest
FOOTPRINTS = "candidates/footprints"
FOOTPRINT_PEAK = "candidates/footprint_peak"
TRACES = "candidates/traces"
IS_EMPTY = "candidates/is_empty"
SOURCE_INDEX = "candidates/source_index"
SOURCE_METRICS = "candidates/source_metrics"
SOURCE_IMAGES = "source_images"
# preprocess
FOV = "fov"
FOV_MAX = "fov/max"
FOV_MEAN = "fov/mean"
FOV_STD = "fov/std"
FOV_CORR = "fov/corr"
CENTERS = "candidates/centers"
CROPS = "candidates/crops"
OUTLINES = "candidates/outlines"
NEIGHBORS = "candidates/neighbors"
EVENTS = "candidates/events"
SNAPSHOT_TRACES = "candidates/snapshot_traces"
SNAPSHOTS_DATA = "snapshots/data"
SNAPSHOTS_OFFSETS = "snapshots/offsets"
SNAPSHOTS_SCALE = "snapshots/scale"
SNAPSHOTS_FRAMES = "snapshots/frames"
SNAPSHOTS_CLIMS = "snapshots/clims"
# features / embed / apply
FEATURE_MATRIX = "features/matrix"
EMBEDDING_MATRIX = "embeddings/matrix"
PREDICTED_PROBABILITY = "predictions/probability"
PREDICTED_DECISION = "predictions/decision"
PREDICTED_FINAL = "predictions/final"
# optional truth (synthetic recordings, benchmarks)
TRUTH_LABELS = "truth/labels"
TRUTH_ANNOTATORS = "truth/annotators"
# labels (files, not zarr), relative to the store root
LABELS_DIR = "labels"
JOURNAL_FILE = "labels/journal.jsonl"
UI_STATE_FILE = "labels/ui_state.json"
