"""Feature columns are named by the family that computes them and placed by name.

Each family returns its registry group's names in registry order, and every column of the
driver's matrix equals the family output of the same name: a column swapped or shifted in the
driver (or mislabelled by a family) fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from actsort_gpu import schema
from actsort_gpu.config import FeatureConfig
from actsort_gpu.features import NamedColumns, compute_features, trace_similarity
from actsort_gpu.features.extra import extra_columns, footprint_shape
from actsort_gpu.features.policy import apply_nan_policy
from actsort_gpu.features.registry import (
    EXTRA_COMPUTED_NAMES,
    SOURCE_PREFIX,
    SPATIAL_NAMES,
    SPATIOTEMPORAL_NAMES,
    TEMPORAL_NAMES,
    feature_set,
)
from actsort_gpu.features.spatial import spatial_columns
from actsort_gpu.features.spatiotemporal import spatiotemporal_columns
from actsort_gpu.features.synthetic import make_feature_store
from actsort_gpu.features.temporal import temporal_columns
from actsort_gpu.store import SortStore

N = 24


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("columns") / "s.actsort"
    make_feature_store(path, n_candidates=N, n_frames=300, height=48, width=48, seed=3)
    return path


@pytest.fixture(scope="module")
def families(store_path):
    """Every family's NamedColumns for all candidates, computed straight from the store."""
    store = SortStore.open(store_path)
    cfg = FeatureConfig()
    rows = slice(0, N)
    traces = store.traces(rows)
    fp = store.footprints()
    snapshots = store.snapshots_block(rows)
    crop_fps = store.footprint_crops(rows)
    npix = footprint_shape(
        fp, store.height, store.width, pixel_fraction=cfg.suite2p_pixel_fraction
    )[0]
    return {
        "temporal": temporal_columns(traces, similarity=trace_similarity(store, cfg)),
        "spatial": spatial_columns(fp, store.height, store.width, rows),
        "spatiotemporal": spatiotemporal_columns(
            snapshots,
            crop_fps,
            store.read(schema.SNAPSHOT_TRACES, rows).astype(np.float32),
            store.read(schema.EVENTS, rows) >= 0,
        ),
        "extra": extra_columns(
            traces,
            fp,
            store.height,
            store.width,
            snapshots,
            crop_fps,
            store.read(schema.SNAPSHOTS_FRAMES, rows) >= 0,
            npix_median=float(np.median(npix[npix > 0])),
            pixel_fraction=cfg.suite2p_pixel_fraction,
            n_window=cfg.snr_window_frames,
        ),
        "source": NamedColumns.from_dict(
            {SOURCE_PREFIX + k: v.astype(np.float64) for k, v in store.source_metrics().items()},
            [SOURCE_PREFIX + k for k in store.source_metric_names()],
        ),
    }


@pytest.mark.parametrize(
    "group, names",
    [
        ("temporal", TEMPORAL_NAMES),
        ("spatial", SPATIAL_NAMES),
        ("spatiotemporal", SPATIOTEMPORAL_NAMES),
        ("extra", EXTRA_COMPUTED_NAMES),
    ],
)
def test_family_names_are_the_registry_names_in_order(families, group, names):
    cols = families[group]
    assert cols.names == tuple(names)
    assert cols.values.shape == (N, len(names))


def test_driver_columns_equal_family_outputs_by_name(store_path, families):
    m = compute_features(store_path, device="cpu")
    names, _, _ = feature_set(SortStore.open(store_path).source_metric_names())
    # the family outputs, each put under its own name, then the same NaN policy as the driver
    raw = np.full((N, len(names)), np.nan)
    for cols in families.values():
        for name, column in cols.to_dict().items():
            raw[:, names.index(name)] = column
    expected, _ = apply_nan_policy(raw, names)
    assert sum(len(c.names) for c in families.values()) == len(names)
    for j, name in enumerate(names):
        np.testing.assert_array_equal(m[:, j], expected[:, j], err_msg=name)
    # the extra columns (where a positional swap once went unnoticed) all differ, so any swap
    # among them fails above
    extra = [
        j
        for j, name in enumerate(names)
        if name in EXTRA_COMPUTED_NAMES or name.startswith(SOURCE_PREFIX)
    ]
    assert len({m[:, j].tobytes() for j in extra}) == len(extra) == 7


def test_place_into_uses_names_not_positions():
    cols = NamedColumns(("b", "a"), np.array([[2.0, 1.0], [20.0, 10.0]], np.float32))
    matrix = np.zeros((2, 3))
    assert cols.place_into(matrix, {"a": 0, "b": 1, "c": 2}) == [1, 0]
    np.testing.assert_array_equal(matrix, [[1, 2, 0], [10, 20, 0]])
    np.testing.assert_array_equal(cols["a"], [1, 10])
    np.testing.assert_array_equal(cols.select(["a", "b"]), [[1, 2], [10, 20]])
    with pytest.raises(ValueError, match=r"\['b'\]: not in the feature matrix"):
        cols.place_into(matrix, {"a": 0})


def test_named_columns_reject_wrong_names():
    with pytest.raises(ValueError, match=r"missing \['c'\], unexpected \['x'\]"):
        NamedColumns.from_dict({"a": np.zeros(2), "x": np.zeros(2)}, ["a", "c"])
    with pytest.raises(ValueError, match="duplicates"):
        NamedColumns(("a", "a"), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="one column per name"):
        NamedColumns(("a",), np.zeros((1, 2)))
    with pytest.raises(KeyError, match="'z'"):
        NamedColumns(("a",), np.zeros((1, 1)))["z"]


def test_driver_refuses_a_family_that_drops_a_column(store_path, monkeypatch):
    from actsort_gpu.features import extra

    real = extra.extra_columns

    def drops_r_value(*args, **kwargs):
        cols = real(*args, **kwargs)
        keep = [n for n in cols.names if n != "r_value"]
        return NamedColumns(tuple(keep), cols.select(keep))

    monkeypatch.setattr(extra, "extra_columns", drops_r_value)
    with pytest.raises(RuntimeError, match=r"\['r_value'\]: no feature family"):
        compute_features(store_path, device="cpu")
