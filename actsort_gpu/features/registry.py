"""Feature registry: names, order, groups and the feature-set version of ``features/matrix``.

The 76 ActSort features keep the reference order (docs/actsort_reference.md section 3.2, as
``get_features.m`` writes them); our extra columns follow. A classifier trained on one store
records the names and version of its matrix, and :func:`check_compatible` refuses to apply it to
a matrix with other columns (ActSort's fast-feature mode silently shifted columns: bug B1).

Version string: ``"actsort76-v1"``, then ``"+extra-v1"`` when the computed extras are present, then
``"+src[a,b]"`` listing the source metrics passed through (they depend on the extractor).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ACTSORT_VERSION",
    "EXTRA_VERSION",
    "TEMPORAL_NAMES",
    "SPATIAL_NAMES",
    "SPATIOTEMPORAL_NAMES",
    "ACTSORT_NAMES",
    "EXTRA_COMPUTED_NAMES",
    "SOURCE_PREFIX",
    "LOCAL_FIX_NAMES",
    "GROUPS",
    "feature_set",
    "feature_names",
    "check_compatible",
    "FEATURE_TEXT",
    "describe_feature",
]

ACTSORT_VERSION = "actsort76-v1"
EXTRA_VERSION = "extra-v1"
SOURCE_PREFIX = "source_"
GROUPS = ("temporal", "spatial", "spatiotemporal", "extra")

EVENT_SCALES = (1, 3, 10, 30, 100, 300)
_QUANTILES = ("0.01", "0.25", "0.5", "0.75", "0.99")

TEMPORAL_NAMES: tuple[str, ...] = (
    "trace_snr",
    "temporal_corruption",
    "n_small_peaks",
    "top10_std",
    "isi_good",
    "isi_bad",
    "isi_all",
    # ActSort calls 8-9 avg_width_*, but they are sums (bug B11): named for what they are.
    "width_sum_all",
    "width_sum_prominent",
    "width_std_all",
    "width_std_prominent",
    *[
        f"{kind}_c{c}"
        for c in EVENT_SCALES
        for kind in ("event_power", "event_fraction", "n_events")
    ],
    "spec_0_0.05",
    "spec_0.05_0.95",
    "spec_0.5_1",
    "spec_0_0.5",
    "spec_0.95_1",
    "trace_similarity",
    "spike_fluorescence",
)
SPATIAL_NAMES: tuple[str, ...] = (
    "area",
    "multiple_bodies",
    "footprint_sum",
    "support_perimeter",
    "edge_distance",
    "circularity",
    "axis_ratio",
    "footprint_mean",
    "spatial_corruption",
    "max_pos_corr",
)
SPATIOTEMPORAL_NAMES: tuple[str, ...] = (
    "eps_mean",
    "eps_min",
    "eps_q10",
    "eps_q20",
    "spurious_corr_score",
    *[f"resid{k}_q{q}" for k in (1, 2, 3) for q in _QUANTILES],
    *[f"tqm_{t}" for t in ("0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9")],
)
ACTSORT_NAMES = TEMPORAL_NAMES + SPATIAL_NAMES + SPATIOTEMPORAL_NAMES

# Computed by us for any source (actsort_gpu.features.extra).
EXTRA_COMPUTED_NAMES: tuple[str, ...] = (
    "skew",
    "compact",
    "npix_norm",
    "aspect_ratio",
    "event_snr",
    "r_value",
)

# Columns that get ActSort's local fix (+-Inf -> 10 x max finite, NaN -> mean) before the
# final one: features 42, 45, 51, 52-66 (reference section 3.1).
LOCAL_FIX_NAMES: frozenset[str] = frozenset(
    (
        "circularity",
        "spatial_corruption",
        "spurious_corr_score",
        *[f"resid{k}_q{q}" for k in (1, 2, 3) for q in _QUANTILES],
    )
)

assert len(TEMPORAL_NAMES) == 36 and len(SPATIAL_NAMES) == 10
assert len(SPATIOTEMPORAL_NAMES) == 30 and len(set(ACTSORT_NAMES)) == 76

# What each column means, for people: name -> (plain name, one-sentence description). The page
# shows the plain name with the exact name and the description in a tooltip; written once here,
# next to the names (docs/actsort_reference.md section 3 for the ActSort 76).
_Q_WORD = {
    "0.01": "1st pct",
    "0.25": "25th pct",
    "0.5": "median",
    "0.75": "75th pct",
    "0.99": "99th pct",
}
_RESID = {
    1: ("Movie above trace inside", "movie signal inside the footprint in excess of the trace"),
    2: ("Trace above surround", "trace in excess of the signal just around the footprint"),
    3: ("Inside above surround", "signal inside the footprint in excess of its surround"),
}
FEATURE_TEXT: dict[str, tuple[str, str]] = {
    "trace_snr": (
        "Trace signal-to-noise",
        "peak of the 3-point median-filtered trace over its high-frequency noise level",
    ),
    "temporal_corruption": (
        "Trace corruption",
        "mean relative jump of the trace away from its "
        "3-point median over its active frames (spiky noise is high)",
    ),
    "n_small_peaks": (
        "Small peaks (count)",
        "peaks in the trace that are weaker than half its 90th percentile",
    ),
    "top10_std": (
        "Spread of the brightest 10 %",
        "standard deviation of the z-scored trace over its top 10 % of values",
    ),
    "isi_good": ("Spacing of strong peaks", "mean interval (frames) between prominent peaks"),
    "isi_bad": ("Spacing of weak peaks", "mean interval (frames) between non-prominent peaks"),
    "isi_all": ("Spacing of all peaks", "mean interval (frames) between all trace peaks"),
    "width_sum_all": ("Total peak width", "sum of the half-height widths of all peaks (frames)"),
    "width_sum_prominent": (
        "Total width of strong peaks",
        "sum of the half-height widths of the prominent peaks (frames)",
    ),
    "width_std_all": ("Peak width variability", "standard deviation of all peak widths"),
    "width_std_prominent": (
        "Strong-peak width variability",
        "standard deviation of the prominent peaks' widths",
    ),
    **{
        f"event_power_c{c}": (
            f"Event power above {c}x noise",
            f"share of the trace's power in samples above {c} times the noise level",
        )
        for c in EVENT_SCALES
    },
    **{
        f"event_fraction_c{c}": (
            f"Time above {c}x noise",
            f"fraction of frames above {c} times the noise level",
        )
        for c in EVENT_SCALES
    },
    **{
        f"n_events_c{c}": (
            f"Events above {c}x noise",
            f"number of transients rising above {c} times the noise level",
        )
        for c in EVENT_SCALES
    },
    "spec_0_0.05": (
        "Slowest power share",
        "fraction of the trace's spectral power in the lowest 5 % of frequencies (drift)",
    ),
    "spec_0.05_0.95": (
        "Mid-frequency power share",
        "fraction of spectral power between 5 % and 95 % of the frequency range",
    ),
    "spec_0.5_1": (
        "Fast power share",
        "fraction of spectral power in the upper half of the frequencies (noise)",
    ),
    "spec_0_0.5": (
        "Slow power share",
        "fraction of spectral power in the lower half of the frequencies (signal)",
    ),
    "spec_0.95_1": (
        "Fastest power share",
        "fraction of spectral power in the top 5 % of the frequencies",
    ),
    "trace_similarity": (
        "Look-alike traces",
        "fraction of other candidates whose trace "
        "correlates above 0.7 with this one (duplicates, neuropil)",
    ),
    "spike_fluorescence": (
        "Top-1 % trace mass",
        "sum of the normalised trace over its top 1 % of frames (sparse, strong events are high)",
    ),
    "area": ("Footprint area", "pixels where the footprint exceeds 0.1 of its peak"),
    "multiple_bodies": (
        "Several blobs",
        "1 when the thresholded footprint has no or several separate parts, else 0",
    ),
    "footprint_sum": ("Footprint total weight", "sum of all footprint pixel weights"),
    "support_perimeter": (
        "Footprint perimeter",
        "length of the outer boundary of the footprint's support (px)",
    ),
    "edge_distance": (
        "Distance to the image edge",
        "pixels from the footprint's peak to the nearest field-of-view edge",
    ),
    "circularity": (
        "Roundness",
        "4 pi area / perimeter squared of the footprint's main body (1 = a disc)",
    ),
    "axis_ratio": ("Elongation", "major over minor axis length of the footprint's main body"),
    "footprint_mean": (
        "Footprint mean weight",
        "footprint weight averaged over the whole field of view",
    ),
    "spatial_corruption": (
        "Footprint graininess",
        "local over global variance of the footprint (speckled footprints are high)",
    ),
    "max_pos_corr": (
        "Overlap with a neighbour",
        "highest correlation with an overlapping candidate's footprint",
    ),
    "eps_mean": (
        "Movie contamination (mean)",
        "mean fraction of the movie crop not explained "
        "by this footprint around its events (EXTRACT's robust epsilon)",
    ),
    "eps_min": ("Movie contamination (min)", "lowest contamination epsilon over the event frames"),
    "eps_q10": (
        "Movie contamination (10th pct)",
        "10th percentile of the contamination epsilon over the event frames",
    ),
    "eps_q20": (
        "Movie contamination (20th pct)",
        "20th percentile of the contamination epsilon over the event frames",
    ),
    "spurious_corr_score": (
        "Activity matches footprint",
        "cosine similarity between the event-weighted movie image and the footprint",
    ),
    **{
        f"resid{k}_q{q}": (
            f"{_RESID[k][0]} ({_Q_WORD[q]})",
            f"{_Q_WORD[q]} over events of the {_RESID[k][1]}",
        )
        for k in (1, 2, 3)
        for q in _QUANTILES
    },
    **{
        f"tqm_{t}": (
            f"Movie matches footprint (>{round(100 * float(t))} %)",
            f"activity-weighted "
            f"match between movie frames and the footprint over frames where the trace "
            f"exceeds {round(100 * float(t))} % of its peak",
        )
        for t in ("0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9")
    },
    "skew": ("Trace skewness", "skewness of the trace (Suite2p's skew)"),
    "compact": (
        "Compactness",
        "Suite2p's compactness: mean pixel distance from the centre "
        "relative to a disc of the same area (1 = a disc)",
    ),
    "npix_norm": (
        "Relative size",
        "footprint pixel count over the median of all candidates (Suite2p's npix_norm)",
    ),
    "aspect_ratio": ("Aspect ratio", "Suite2p's aspect ratio of the footprint"),
    "event_snr": (
        "Transient significance",
        "CaImAn's SNR: how unlikely the trace's largest transients are under noise alone",
    ),
    "r_value": (
        "Footprint-movie correlation",
        "CaImAn's r value: correlation of the footprint with the mean movie frame during events",
    ),
}
assert set(ACTSORT_NAMES) | set(EXTRA_COMPUTED_NAMES) <= set(FEATURE_TEXT)


def describe_feature(name: str) -> tuple[str, str]:
    """(plain name, description) of a feature column for people, from :data:`FEATURE_TEXT`;
    source metrics (``source_<metric>``) and embedding columns (``emb<k>``) are named after
    their origin; an unknown name is returned as is."""
    if name in FEATURE_TEXT:
        return FEATURE_TEXT[name]
    if name.startswith(SOURCE_PREFIX):
        metric = name[len(SOURCE_PREFIX) :]
        words = metric.replace("_", " ")
        return f"From the extraction: {words}", f"metric {metric!r} passed through as is"
    if name.startswith("emb") and name[3:].isdigit():
        return f"Learned feature {name[3:]}", "dimension of the self-supervised embedding"
    return name, name


def feature_set(
    source_metrics: Sequence[str] = (), *, include_extra: bool = True
) -> tuple[list[str], list[str], str]:
    """Names, groups and version of the matrix for a store with ``source_metrics``.

    source_metrics : names under ``candidates/source_metrics`` (``SortStore.source_metric_names``;
        ignored when not include_extra)
    Returns (names (F,), groups (F,), version).
    """
    names = list(ACTSORT_NAMES)
    groups = (
        ["temporal"] * len(TEMPORAL_NAMES)
        + ["spatial"] * len(SPATIAL_NAMES)
        + ["spatiotemporal"] * len(SPATIOTEMPORAL_NAMES)
    )
    version = ACTSORT_VERSION
    if include_extra:
        src = sorted(source_metrics)
        names += list(EXTRA_COMPUTED_NAMES) + [SOURCE_PREFIX + s for s in src]
        groups += ["extra"] * (len(EXTRA_COMPUTED_NAMES) + len(src))
        version += f"+{EXTRA_VERSION}" + (f"+src[{','.join(src)}]" if src else "")
    return names, groups, version


def feature_names(store, config=None) -> list[str]:
    """The column names ``compute_features`` writes for ``store`` (a SortStore or its path).

    config : FeatureConfig (default: FeatureConfig()); only ``include_extra`` matters.
    """
    from ..config import FeatureConfig
    from ..store import SortStore

    config = config or FeatureConfig()
    if not isinstance(store, SortStore):
        store = SortStore.open(store, "r")
    return feature_set(store.source_metric_names(), include_extra=config.include_extra)[0]


def check_compatible(
    names_a: Sequence[str], version_a: str, names_b: Sequence[str], version_b: str
) -> None:
    """Raise ValueError unless two feature matrices have the same columns in the same order.

    (names_a, version_a) is typically what a classifier was trained on, (names_b, version_b)
    the matrix it is applied to. The message says which columns are missing, extra or moved.
    """
    names_a, names_b = list(names_a), list(names_b)
    if names_a == names_b and version_a == version_b:
        return
    problems = []
    if version_a != version_b:
        problems.append(f"feature-set version {version_a!r} vs {version_b!r}")
    missing = [n for n in names_a if n not in set(names_b)]
    extra = [n for n in names_b if n not in set(names_a)]
    if missing:
        problems.append(f"missing columns {missing}")
    if extra:
        problems.append(f"unexpected columns {extra}")
    if not missing and not extra and names_a != names_b:
        moved = [n for i, n in enumerate(names_a) if names_b[i] != n]
        problems.append(f"same columns in a different order (first moved: {moved[:5]})")
    raise ValueError(
        f"feature matrices are not compatible: expected {len(names_a)} columns "
        f"({version_a}), found {len(names_b)} ({version_b}): "
        + "; ".join(problems)
        + ". Recompute features with the same actsort-gpu feature set (`actsort features`)."
    )
