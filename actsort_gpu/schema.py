"""The sort store's schema, declared once: every array's name, dims, dtype, units and stage.

Code outside this module names store arrays through these constants (``schema.TRACES``), never
as string literals. ``docs/store_schema.md`` is generated from :data:`ARRAYS`, :data:`AXES` and
:data:`ROOT_ATTRS` by :func:`render_markdown`; regenerate it with

    python -m actsort_gpu.schema > docs/store_schema.md

(``tests/test_schema.py`` fails when the committed file differs from the generated one).
:class:`actsort_gpu.store.SortStore` checks every write of a declared array against its spec.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "SCHEMA_VERSION",
    "ArraySpec",
    "ARRAYS",
    "AXES",
    "ROOT_ATTRS",
    "KINDS",
    "spec_for",
    "is_reserved",
    "render_markdown",
]

# Version of the on-disk layout; bump it (and teach SortStore.open to read old stores) whenever
# a name, dims, dtype or encoding below changes.
SCHEMA_VERSION = 1
KINDS = ("dense", "csr", "ragged", "group")


@dataclass(frozen=True)
class ArraySpec:
    """One array (or CSR / ragged group) of the store.

    name : path inside the store ("candidates/traces")
    dims : axis names (for CSR / ragged groups: of the logical matrix)
    dtype : numpy dtype name ("float32"); "" when it varies (snapshots/data)
    units : units or meaning of the values
    stage : the stage that writes it
    kind : "dense" | "csr" | "ragged" | "group" (a group of per-name arrays)

    For kind "csr" the store holds ``{name}/indptr`` (N + 1,) int64, ``{name}/indices``
    (nnz,) int32 and ``{name}/data`` (nnz,) of ``dtype``, attr ``shape`` = the logical shape.
    For kind "ragged", ``dims`` and ``dtype`` are those of ``{name}/data`` (items concatenated
    along its first axis) and ``{name}/offsets`` is (n_items + 1,) int64. For kind "group",
    ``dims`` and ``dtype`` are those of every member ``{name}/<member>``.

    dtypes : the allowed dtypes when ``dtype`` is "" (e.g. the snapshot storage dtypes)
    shape : the shape column of the generated doc, when the dims do not say it
    doc : the meaning column of the generated doc (defaults to ``units``)
    """

    name: str
    dims: tuple[str, ...]
    dtype: str
    units: str
    stage: str
    kind: str = "dense"
    dtypes: tuple[str, ...] = ()
    shape: str = ""
    doc: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if not self.dtype and not self.dtypes:
            raise ValueError(f"{self.name}: give dtype or the allowed dtypes")

    @property
    def allowed_dtypes(self) -> tuple[str, ...]:
        """The dtype names a write may use."""
        return (self.dtype,) if self.dtype else self.dtypes

    @property
    def pattern(self) -> str:
        """The path(s) this spec covers, as written in the doc (``name/<name>`` for groups)."""
        if self.kind == "csr":
            return f"{self.name}/{{indptr,indices,data}}"
        if self.kind == "ragged":
            return f"{self.name}/{{data,offsets}}"
        if self.kind == "group":
            return f"{self.name}/<name>"
        return self.name


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
JOURNAL_LOCK_FILE = "labels/journal.jsonl.lock"
JOURNAL_RECORD_FILE = "labels/journal.jsonl.written"
UI_STATE_FILE = "labels/ui_state.json"

# The FOV summary images preprocess writes, by kind (the page's image choices).
FOV_IMAGES = {"max": FOV_MAX, "mean": FOV_MEAN, "std": FOV_STD, "corr": FOV_CORR}
# Storage dtypes of snapshots/data (config.PreprocessConfig.snapshot_dtype).
SNAPSHOT_DTYPES = ("uint8", "uint16", "float32")
# Members of a CSR group and of a ragged group (internal layout, written by the store only).
CSR_MEMBERS = {
    "indptr": (("rows+1",), "int64"),
    "indices": (("nonzeros",), "int32"),
    "data": (("nonzeros",), ""),
}
RAGGED_OFFSETS = (("items+1",), "int64")

# Axis names used in ``dims``, with the symbol the doc's shape column uses and their meaning.
AXES: dict[str, tuple[str, str]] = {
    "candidates": ("N", "one per candidate (ROI) of the extraction, in the store's order"),
    "frames": ("T", "trace frames at the extractor's rate"),
    "movie_frames": ("T_movie", "movie frames (T_movie = T // temporal_downsample)"),
    "rows": ("H", "rows of the field of view"),
    "cols": ("W", "columns of the field of view"),
    "pixels": ("H*W", "pixel index = row * W + col (C order)"),
    "events": ("n_events", "events per candidate (5 by default)"),
    "event_frames": ("event_frames", "frames per snapshot (11 by default)"),
    "features": ("F", "feature columns (attr `names`)"),
    "embedding": ("D", "embedding dimensions (attr `names`)"),
    "annotators": ("n_annotators", "annotators (attr `names`)"),
    "row_col": ("2", "(row, col)"),
    "row0_row1_col0_col1": ("4", "(row0, row1, col0, col1)"),
    "lo_hi": ("2", "(lo, hi)"),
    "clim": ("4", "(min, max, p10, p99.9)"),
    "points": ("M", "outline points of all candidates, concatenated"),
    "neighbors": ("K", "neighbour indices of all candidates, concatenated"),
    "snapshot_values": ("n_values", "snapshot values of all candidates, concatenated"),
    "candidates+1": ("N + 1", "offsets into a flat array, one more than candidates"),
    "items+1": ("N + 1", "offsets of a ragged array"),
    "rows+1": ("N + 1", "CSR row pointer"),
    "nonzeros": ("nnz", "CSR stored entries"),
}

_C = ("candidates",)
_SNAP = ("candidates", "events", "event_frames")
_SPECS = (
    # ---------------------------------------------------------------- ingest
    ArraySpec(
        FOOTPRINTS,
        ("candidates", "pixels"),
        "float32",
        "fraction of peak",
        "ingest",
        "csr",
        doc="max-normalised per candidate (peak 1; empty rows allowed); attrs "
        "`shape`, `height`, `width`",
    ),
    ArraySpec(
        FOOTPRINT_PEAK,
        _C,
        "float32",
        "source footprint units",
        "ingest",
        doc="original peak value; original footprint = normalised * peak",
    ),
    ArraySpec(
        TRACES,
        ("candidates", "frames"),
        "float32",
        "source trace units",
        "ingest",
        doc="extractor units, full rate",
    ),
    ArraySpec(IS_EMPTY, _C, "bool", "", "ingest", doc="footprint has no positive pixel"),
    ArraySpec(SOURCE_INDEX, _C, "int64", "", "ingest", doc="index in the extraction output"),
    ArraySpec(
        SOURCE_METRICS,
        _C,
        "float32",
        "",
        "ingest",
        "group",
        doc="metrics the source computed (e.g. `suite2p_iscell`, `suite2p_iscell_prob`, "
        "`caiman_snr`, `caiman_r_values`, `caiman_cnn_preds`)",
    ),
    ArraySpec(
        SOURCE_IMAGES,
        ("rows", "cols"),
        "float32",
        "source image units",
        "ingest",
        "group",
        shape="(h, w)",
        doc="extractor summary images (e.g. `suite2p_meanImg`, `suite2p_max_proj`)",
    ),
    # ---------------------------------------------------------------- preprocess
    ArraySpec(
        FOV_MAX,
        ("rows", "cols"),
        "float32",
        "movie units",
        "preprocess",
        doc="maximum over all movie frames",
    ),
    ArraySpec(
        FOV_MEAN,
        ("rows", "cols"),
        "float32",
        "movie units",
        "preprocess",
        doc="mean over all movie frames",
    ),
    ArraySpec(
        FOV_STD,
        ("rows", "cols"),
        "float32",
        "movie units",
        "preprocess",
        doc="standard deviation over all movie frames (ddof 0)",
    ),
    ArraySpec(
        FOV_CORR,
        ("rows", "cols"),
        "float32",
        "Pearson r",
        "preprocess",
        doc="mean Pearson correlation of each pixel with its 8 neighbours (fewer at borders)",
    ),
    ArraySpec(
        CENTERS,
        ("candidates", "row_col"),
        "float32",
        "pixels (0-based row, col)",
        "preprocess",
        doc="(row, col): unweighted mean of pixels with footprint > 0 (NaN if empty)",
    ),
    ArraySpec(
        CROPS,
        ("candidates", "row0_row1_col0_col1"),
        "int32",
        "pixels, half-open",
        "preprocess",
        doc="(row0, row1, col0, col1), half-open, 0-based, in the FOV",
    ),
    ArraySpec(
        OUTLINES,
        ("points", "row_col"),
        "float32",
        "pixels (0-based row, col)",
        "preprocess",
        "ragged",
        doc="outline points (row, col) in FOV coordinates; NaN rows separate boundaries",
    ),
    ArraySpec(
        NEIGHBORS,
        ("neighbors",),
        "int32",
        "candidate index",
        "preprocess",
        "ragged",
        doc="neighbour candidate indices",
    ),
    ArraySpec(
        EVENTS,
        ("candidates", "events"),
        "int32",
        "trace frame (0-based), -1 = none",
        "preprocess",
        doc="event frames (trace frames, full rate), in ActSort order "
        "(height descending); -1 = none",
    ),
    ArraySpec(
        SNAPSHOT_TRACES,
        _SNAP,
        "float32",
        "source trace units (downsampled)",
        "preprocess",
        doc="trace (downsampled by `temporal_downsample`) at the snapshot "
        "frames; 0 where the frame is -1",
    ),
    ArraySpec(
        SNAPSHOTS_DATA,
        ("snapshot_values",),
        "",
        "quantised movie units (see snapshots/scale)",
        "preprocess",
        dtypes=SNAPSHOT_DTYPES,
        shape="flat",
        doc="per candidate a block (n_events, event_frames, h, w) in C order, h, w from `crops`",
    ),
    ArraySpec(
        SNAPSHOTS_OFFSETS,
        ("candidates+1",),
        "int64",
        "elements",
        "preprocess",
        doc="block i = `data[offsets[i]:offsets[i+1]]`",
    ),
    ArraySpec(
        SNAPSHOTS_SCALE,
        ("candidates", "lo_hi"),
        "float32",
        "movie units",
        "preprocess",
        doc="(lo, hi): value = lo + code / code_max * (hi - lo) for integer dtypes; "
        "attrs `dtype`, `code_max`",
    ),
    ArraySpec(
        SNAPSHOTS_FRAMES,
        _SNAP,
        "int32",
        "movie frame (0-based), -1 = none",
        "preprocess",
        doc="movie frame of each snapshot frame; -1 = outside the movie or "
        "missing event (zeros in data)",
    ),
    ArraySpec(
        SNAPSHOTS_CLIMS,
        ("candidates", "clim"),
        "float32",
        "movie units",
        "preprocess",
        doc="min, max, 10th and 99.9th percentile of the candidate's snapshot pixels "
        "(display range); attr `columns`",
    ),
    # ---------------------------------------------------------------- features / embed
    ArraySpec(
        FEATURE_MATRIX,
        ("candidates", "features"),
        "float32",
        "mixed (see names)",
        "features",
        doc="attrs `names` (F strings), `groups`, `version` (feature-set "
        "version string), `nan_report`",
    ),
    ArraySpec(
        EMBEDDING_MATRIX,
        ("candidates", "embedding"),
        "float32",
        "arbitrary (encoder output)",
        "embed",
        doc="attrs `encoder_id` (short hash of the weights), `checkpoint`, `names` (`emb00`, ...)",
    ),
    # ---------------------------------------------------------------- apply
    ArraySpec(
        PREDICTED_PROBABILITY,
        _C,
        "float32",
        "P(cell)",
        "apply",
        doc="P(cell) of the portable classifier (fine-tuned on the store's human labels, if any)",
    ),
    ArraySpec(
        PREDICTED_DECISION, _C, "int8", "+1 cell / -1 not", "apply", doc="+1 / -1 at the threshold"
    ),
    ArraySpec(
        PREDICTED_FINAL,
        _C,
        "int8",
        "+1 cell / -1 not",
        "apply",
        doc="the human label where given, else the decision; attrs `classifier`, "
        "`classifier_sha256`, `threshold`, `n_human_labels`",
    ),
    # ---------------------------------------------------------------- truth (optional)
    ArraySpec(TRUTH_LABELS, _C, "int8", "+1 cell / -1 not", "truth", doc="ground truth +1/-1"),
    ArraySpec(
        TRUTH_ANNOTATORS,
        ("annotators", "candidates"),
        "int8",
        "+1 cell / -1 not",
        "truth",
        doc="simulated or real annotators' labels; attr `names`",
    ),
)

ARRAYS: dict[str, ArraySpec] = {s.name: s for s in _SPECS}

# Root attributes of a store (``SortStore.attrs``): key(s) -> meaning.
ROOT_ATTRS: dict[str, str] = {
    "`schema_version`": '1; a store with a larger number is refused with an "upgrade" message',
    "`package_version`, `created`": "writer's version, ISO UTC time",
    "`n_candidates`, `n_frames`, `height`, `width`": "N, T (trace frames), H, W",
    "`movie`": "`{path, format, dataset, n_frames (movie frames), dtype, fs_hz, "
    "temporal_downsample, axis_order, fingerprint, signature}` (`signature`: "
    "`{frames, sha256}` of a few frames' values, checked by the movie pass); a movie whose "
    "pages interleave channels / planes also `pages` and `interleave: {planes, plane, "
    "channels, channel}`, with `rows: [first, stop]` for one ROI of a multi-ROI page (the "
    "frames read: `io.movies.Interleave`)",
    "`extraction`": "`{path, format, fingerprint (size, mtime, sha256)}`",
    "`stages`": "per stage: `{status: complete|incomplete|stale, started, finished, seconds, "
    "params, ...}` (`stale`, with `stale_after` and `stale_since`: a stage whose outputs it "
    "reads ran again since, `store.STAGE_INPUTS`; readers refuse it until it runs again); the "
    "computing stages (preprocess, features, embed, apply) record where they ran in "
    "`params` (`device` cpu or cuda, `device_requested` auto, cpu or cuda, and `device_name` on "
    "a GPU or `device_reason`: why `auto` chose the CPU; `backend.Backend.provenance`) and "
    "`device` beside `seconds`",
    "`chunk_files`": "`{array path: [chunk files, bytes]}` of every array when the last stage "
    "finished (`store_chunks`): a reader refuses an array whose chunk files are missing or cut "
    "short (zarr would read them as zeros), e.g. after a copy or a sync stopped half way",
}

_STAGE_TITLES = {
    "ingest": "ingest",
    "preprocess": "preprocess",
    "features": "features",
    "embed": "embed",
    "apply": "apply (`actsort apply`, headless classification)",
    "truth": "optional: truth (synthetic recordings: `actsort ingest --truth`, the demo; "
    "benchmarks)",
}
_STAGE_NOTES = {
    "preprocess": "Read snapshots with `SortStore.snapshots(i)` / `snapshots_block(slice)`, "
    "which dequantise (`store.dequantise`, the inverse of `store.quantise`).",
}
_TOP_LEVEL = sorted({name.split("/")[0] for name in ARRAYS})


def spec_for(name: str) -> ArraySpec | None:
    """The spec covering the array path ``name``: its own, or its group's for a group member
    (``candidates/source_metrics/<name>``); None for a name the schema does not declare."""
    if name in ARRAYS:
        return ARRAYS[name]
    parent, _, member = name.rpartition("/")
    spec = ARRAYS.get(parent)
    if spec is not None and spec.kind == "group" and member and "/" not in member:
        return spec
    return None


def is_reserved(name: str) -> bool:
    """Whether ``name`` lies in the schema's namespace (its first path component is one of the
    schema's, e.g. ``candidates/...``) without being declared: writes there are refused, so a
    misspelt name cannot slip in next to the real ones. The members of CSR and ragged groups
    (``candidates/footprints/indptr``) are reserved too: only the store's CSR / ragged writers
    write them."""
    return spec_for(name) is None and name.split("/")[0] in _TOP_LEVEL


def _shape_text(spec: ArraySpec) -> str:
    if spec.shape:
        shape = spec.shape
    else:
        shape = (
            "(" + ", ".join(AXES[d][0] for d in spec.dims) + (",)" if len(spec.dims) == 1 else ")")
        )
    dtype = spec.dtype or " / ".join(spec.dtypes)
    if spec.kind == "csr":
        return f"CSR {shape} {dtype}"
    if spec.kind == "ragged":
        return f"ragged, data {shape} {dtype}"
    return f"{shape} {dtype}"


def _table(specs) -> list[str]:
    lines = ["| array | dims | shape, dtype | `units` attr | meaning |", "|---|---|---|---|---|"]
    for s in specs:
        dims = ", ".join(s.dims)
        lines.append(
            f"| `{s.pattern}` | {dims} | {_shape_text(s)} | {s.units or '-'} | {s.doc or s.units} |"
        )
    return lines


_HEADER = """\
# Sort store schema (version {version})

<!-- Generated from actsort_gpu/schema.py; do not edit by hand. Regenerate with
     `python -m actsort_gpu.schema > docs/store_schema.md`. -->

A sort store is a zarr v3 directory (conventionally `NAME.actsort/`). It is written by the
stages in order and read by every later stage; no stage needs an earlier stage's inputs (the
movie is read once, by `preprocess`). Open it with `actsort_gpu.store.SortStore.open(path, mode)`.
Code names arrays through the constants of `actsort_gpu.schema` (e.g. `schema.TRACES`) and the
typed accessors of `SortStore`; every write of a declared array is checked against the dims and
dtype below (names in the schema's namespace that it does not declare are refused).

Conventions
- Coordinates are 0-based `(row, col)` pixel centres everywhere (ActSort stores 1-based `(x; y)`).
- Every array has attrs `dims` (list of axis names) and `units`.
- Label codes: +1 cell, -1 not a cell, 0 unlabelled.

## Axis names
| dim | symbol | meaning |
|---|---|---|"""

_LABELS = """\
### labels (not zarr)
`{journal}`: append-only, one JSON object per action (label, unlabel, undo, redo: time,
dataset, candidate, label, annotator, origin, session), fsynced per line; label +1 cell, -1 not,
0 unlabelled, 2 unsure (key U: no training label); the current labels are the replay of the
journal. `{lock}` guards against two writers; `{record}` holds the journal's acknowledged
length and its CRC-32 after each action (`BYTES CRC` in hex; a journal found shorter, e.g. in a
copy made in part, or whose first bytes differ, e.g. another computer's journal kept by a sync,
is refused); `{ui_state}` keeps the page's position."""


def render_markdown() -> str:
    """The text of ``docs/store_schema.md`` (ends with a newline)."""
    lines = _HEADER.format(version=SCHEMA_VERSION).splitlines()
    lines += [f"| `{d}` | {sym} | {meaning} |" for d, (sym, meaning) in AXES.items()]
    lines += ["", "## Root attributes", "| key | meaning |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in ROOT_ATTRS.items()]
    lines += ["", "## Arrays by stage"]
    for stage, title in _STAGE_TITLES.items():
        if stage == "truth":
            lines += [
                "",
                _LABELS.format(
                    journal=JOURNAL_FILE,
                    lock=JOURNAL_LOCK_FILE,
                    record=JOURNAL_RECORD_FILE,
                    ui_state=UI_STATE_FILE,
                ),
            ]
        lines += ["", f"### {title}"]
        lines += _table(s for s in _SPECS if s.stage == stage)
        if stage in _STAGE_NOTES:
            lines += ["", _STAGE_NOTES[stage]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_markdown())
