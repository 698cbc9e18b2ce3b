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
