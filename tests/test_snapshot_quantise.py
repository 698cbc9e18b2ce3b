"""Snapshot colour limits and codes: the compiled quantiser equals its NumPy twin bit for bit,
and both give the known answers of ActSort's compute_clims and ``store.quantise_ranges``."""

import numpy as np
import pytest

from actsort_gpu.preprocess import compiled
from actsort_gpu.preprocess import run as run_mod
from actsort_gpu.store import dequantise

needs_numba = pytest.mark.skipif(not compiled.available(), reason="Numba not importable")
E, F = 2, 3  # events x frames per event: 6 slots per candidate


def _candidates(dtype, seed=0):
    """Blocks of 7 candidates: varied crop sizes, invalid slots, one with no valid slot, one
    constant; int32 values spanning more than 2**20 take the sorting branch."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    hw = np.array([12, 30, 1, 20, 9, 16, 25], np.int64)
    valid = rng.random((len(hw), E, F)) > 0.3
    valid[0] = True
    valid[2] = False  # nothing valid: clims stay 0, codes 0
    blocks = []
    for k, n in enumerate(hw):
        lo = max(info.min, -(2**24)) if dtype == "int32" else info.min
        hi = min(info.max, 2**24) if dtype == "int32" else info.max
        v = rng.integers(lo, hi, size=E * F * n, endpoint=True)
        if k == 4:
            v[:] = v[0]  # constant: codes 0, hi = lo
        blocks.append(v.astype(dtype))
    raw = np.concatenate(blocks)
    bounds = np.concatenate([[0], np.cumsum(hw * E * F)])
    return raw, bounds, valid, hw


@needs_numba
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32"])
@pytest.mark.parametrize("codes", ["uint8", "uint16"])
def test_compiled_quantiser_equals_the_numpy_one_bit_for_bit(dtype, codes):
    raw, bounds, valid, hw = _candidates(np.dtype(dtype))
    g = len(hw)
    want_clims, want_scale = np.zeros((g, 4), np.float32), np.zeros((g, 2), np.float32)
    want = run_mod._quantise_block(raw, bounds, valid, hw, want_clims, want_scale, codes)
    got_clims, got_scale = np.full((g, 4), 7, np.float32), np.full((g, 2), 7, np.float32)
    got = np.full(raw.shape, 9, codes)
    assert compiled.quantise_unusable(dtype, codes) is None
    compiled.quantise_snapshots(raw, bounds, valid.reshape(g, E * F), got, got_clims, got_scale)
    np.testing.assert_array_equal(got_clims, want_clims)
    np.testing.assert_array_equal(got_scale, want_scale)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.dtype(codes)
    assert (got_clims[2] == 0).all() and (got[bounds[2] : bounds[3]] == 0).all()
    assert got_scale[4, 0] == got_scale[4, 1]  # constant candidate


@needs_numba
@pytest.mark.parametrize("parts", [1, 2, 3, 5, 9])
def test_quantising_in_parts_equals_one_call(parts):
    """The block cut into runs of whole candidates on threads (``run._quantise_in_parts``):
    the same codes, limits and scales as one call, whatever the number of parts (more parts
    than candidates too; an empty candidate between them)."""
    from concurrent.futures import ThreadPoolExecutor

    raw, bounds, valid, hw = _candidates(np.dtype("uint16"), seed=3)
    bounds = np.insert(bounds, 3, bounds[3])  # an empty candidate (no values) at index 3
    valid = np.insert(valid, 3, True, axis=0)
    g = len(bounds) - 1
    slots = valid.reshape(g, E * F)
    one = np.zeros(raw.shape, np.uint8), np.zeros((g, 4), np.float32), np.zeros((g, 2), np.float32)
    compiled.quantise_snapshots(raw, bounds, slots, *one)
    got = (
        np.full(raw.shape, 9, np.uint8),
        np.full((g, 4), 7, np.float32),
        np.full((g, 2), 7, np.float32),
    )
    with ThreadPoolExecutor(max(parts - 1, 1)) as helpers:
        run_mod._quantise_in_parts(helpers, parts, raw, bounds, slots, *got)
    for a, b in zip(got, one):
        np.testing.assert_array_equal(a, b)


@needs_numba
def test_quantiser_known_answers():
    """Values 1..1000 in one candidate (one slot of 1000 pixels; a second slot invalid):
    the sorted values at positions round(0.1 n) = 100 and round(0.999 n) = 999; codes span
    0..255 and decode to within half a step."""
    values = np.concatenate([np.arange(1, 1001), np.full(1000, 60000)]).astype(np.uint16)
    valid = np.array([[True, False]])
    codes = np.empty(values.shape, np.uint8)
    clims, scale = np.zeros((1, 4), np.float32), np.zeros((1, 2), np.float32)
    compiled.quantise_snapshots(values, np.array([0, 2000]), valid, codes, clims, scale)
    assert clims[0].tolist() == [1, 1000, 100, 999]
    assert scale[0].tolist() == [1, 1000]
    assert codes[0] == 0 and codes[999] == 255 and (codes[1000:] == 0).all()
    back = dequantise(codes[:1000], 1.0, 1000.0)
    assert np.abs(back - np.arange(1, 1001)).max() <= 999 / 255 / 2 + 1e-3


def test_float_values_and_float_storage_take_the_numpy_path():
    assert compiled.quantise_unusable("float32", "uint8") is not None
    assert compiled.quantise_unusable("uint16", "float32") is not None
