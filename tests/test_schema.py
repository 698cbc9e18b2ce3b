"""The store schema: the committed doc is the generated one, and writes are checked against it."""

from pathlib import Path

import numpy as np
import pytest

from actsort_gpu import schema
from actsort_gpu.store import SortStore

DOC = Path(__file__).resolve().parents[1] / "docs" / "store_schema.md"


def test_committed_doc_is_generated_from_the_schema():
    assert DOC.read_text() == schema.render_markdown(), (
        "docs/store_schema.md is stale: run `python -m actsort_gpu.schema > docs/store_schema.md`"
    )


def test_every_spec_is_consistent():
    for name, spec in schema.ARRAYS.items():
        assert spec.name == name
        assert spec.stage in ("ingest", "preprocess", "features", "embed", "apply", "truth")
        assert all(d in schema.AXES for d in spec.dims), name
        for dtype in spec.allowed_dtypes:
            np.dtype(dtype)
        assert f"`{spec.pattern}`" in DOC.read_text()


def test_spec_for_groups_and_reserved_names():
    assert schema.spec_for(schema.TRACES).dtype == "float32"
    member = schema.spec_for(f"{schema.SOURCE_METRICS}/suite2p_iscell_prob")
    assert member is schema.ARRAYS[schema.SOURCE_METRICS]
    assert schema.spec_for(f"{schema.SOURCE_METRICS}/a/b") is None
    assert schema.is_reserved("candidates/centres")  # misspelt: refused
    assert schema.is_reserved(f"{schema.FOOTPRINTS}/indptr")  # only write_csr writes it
    assert not schema.is_reserved("scratch/x")


@pytest.fixture
def store(tmp_path):
    s = SortStore.create(tmp_path / "s.actsort")
    s.update_attrs(n_candidates=3, n_frames=10, height=4, width=5)
    return s


def test_writes_are_checked_against_the_spec(store):
    arr = store.write_array(schema.TRACES, np.zeros((3, 10), np.float32))
    assert arr.attrs["dims"] == ["candidates", "frames"]
    assert arr.attrs["units"] == schema.ARRAYS[schema.TRACES].units
    with pytest.raises(ValueError, match="candidates/traces: dtype float64"):
        store.write_array(schema.TRACES, np.zeros((3, 10)))
    with pytest.raises(ValueError, match=r"candidates/crops: dims \['candidates', 'box'\]"):
        store.write_array(schema.CROPS, np.zeros((3, 4), np.int32), dims=["candidates", "box"])
    with pytest.raises(ValueError, match="candidates/events: 2 dims"):
        store.write_array(schema.EVENTS, np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="candidates/centres: not an array of the store schema"):
        store.write_array("candidates/centres", np.zeros((3, 2), np.float32), dims=["a", "b"])
    with pytest.raises(ValueError, match="write_csr"):
        store.write_array(schema.FOOTPRINTS, np.zeros((3, 20), np.float32))
    with pytest.raises(ValueError, match="snapshots/data: dtype int16"):
        store.create_array(schema.SNAPSHOTS_DATA, (10,), np.int16)
    store.create_array(schema.SNAPSHOTS_DATA, (10,), np.uint16)  # one of the allowed dtypes


def test_group_members_follow_the_group_spec(store):
    store.write_source_metric("caiman_snr", [1, 2, 3])
    assert store.source_metric_names() == ["caiman_snr"]
    assert store.source_metric("caiman_snr").dtype == np.float32
    with pytest.raises(ValueError, match="source_metrics/x: dtype float64"):
        store.write_array(f"{schema.SOURCE_METRICS}/x", np.zeros(3))
    store.write_source_image("meanImg", np.ones((4, 5)))
    assert list(store.source_images()) == ["meanImg"]


def test_ragged_spec_defaults_and_checks(store):
    store.write_ragged(schema.NEIGHBORS, [np.array([1, 2]), np.array([], np.int32), [0]])
    assert [n.tolist() for n in store.neighbors()] == [[1, 2], [], [0]]
    assert store.attrs_of(f"{schema.NEIGHBORS}/data")["units"] == "candidate index"
    with pytest.raises(ValueError, match="candidates/outlines: dims"):
        store.write_ragged(schema.OUTLINES, [np.zeros((2, 2))], dims=["points", "xy"])
    store.write_ragged(schema.OUTLINES, [])
    assert store.outlines() == []
