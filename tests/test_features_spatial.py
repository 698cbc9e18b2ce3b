"""Spatial features 37-46: known answers and crop-versus-full-image equivalence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import ndimage

from actsort_gpu.features.spatial import (
    adaptive_threshold_mask,
    boundary_length,
    spatial_features,
    transpose_footprints,
)

AREA, MULTI, SUM, PERIM, EDGE, CIRC, RATIO, MEAN, CORRUPT, CORR = range(10)


def _csr(*images):
    return sp.csr_matrix(np.stack([np.asarray(im, np.float32).ravel() for im in images]))


def _features(*images):
    H, W = images[0].shape
    return spatial_features(_csr(*images), H, W, slice(None))


def _ellipse(H, W, cy, cx, ry, rx):
    yy, xx = np.mgrid[:H, :W]
    return ((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1).astype(np.float32)


def test_disk_area_circularity_axis_ratio():
    disk = _ellipse(64, 80, 30, 40, 10, 10)
    f = _features(disk)[0]
    assert f[AREA] == disk.sum() == f[SUM]
    assert f[MEAN] == pytest.approx(disk.sum() / (64 * 80))
    assert 0.85 < f[CIRC] < 1.1
    assert f[RATIO] == pytest.approx(1.0, abs=0.02)


def test_ellipse_axis_ratio():
    f = _features(_ellipse(80, 80, 40, 40, 20, 8))[0]
    assert f[RATIO] == pytest.approx(2.5, rel=0.03)


def test_boundary_lengths_by_hand():
    square = np.zeros((9, 9), bool)
    square[2:7, 2:7] = True
    assert boundary_length(square) == 16.0
    dot = np.zeros((5, 5), bool)
    dot[2, 2] = True
    assert boundary_length(dot) == 0.0
    line = np.zeros((5, 7), bool)
    line[2, 1:6] = True  # traced there and back
    assert boundary_length(line) == 8.0
    two = np.zeros((7, 7), bool)  # 2x2 squares touching at a corner
    two[1:3, 1:3] = True
    two[3:5, 3:5] = True
    assert boundary_length(two) == pytest.approx(8 + 2 * math.sqrt(2))
    both = np.zeros((9, 12), bool)  # two separate objects: lengths add
    both[2:7, 2:7] = True
    both[4, 9] = True
    assert boundary_length(both) == 16.0
    img = np.zeros((12, 12), np.float32)
    img[3:8, 3:8] = 0.5
    f = _features(img)[0]
    assert f[PERIM] == 16.0
    assert f[CIRC] == pytest.approx(4 * math.pi * 25 / 16**2)


def test_edge_distance_matlab_asymmetric_rule():
    H, W = 20, 30
    cases = {(H - 1, 10): 0, (0, 10): 1, (8, W - 1): 0, (8, 0): 1}
    for (r, c), expected in cases.items():
        img = np.zeros((H, W), np.float32)
        img[r, c] = 1.0
        assert _features(img)[0][EDGE] == expected, (r, c)
    img = np.zeros((H, W), np.float32)
    img[5, 3] = img[2, 7] = 1.0  # tie: first in column-major order
    assert _features(img)[0][EDGE] == min(6, H - 6, 4, W - 4)


def test_max_positive_correlation():
    a = _ellipse(40, 40, 10, 10, 4, 4) * np.linspace(0.5, 1, 40)[None, :]
    b = _ellipse(40, 40, 30, 30, 4, 4)  # does not overlap a
    c = _ellipse(40, 40, 12, 13, 5, 3)  # overlaps a
    f = _features(a, a.copy(), b)
    assert f[0, CORR] == pytest.approx(1.0, abs=1e-5)
    assert f[2, CORR] == 0.0
    f = _features(a, b, c)
    expected = np.corrcoef(a.ravel(), c.ravel())[0, 1]
    assert f[0, CORR] == pytest.approx(expected, abs=1e-5)
    assert f[2, CORR] == pytest.approx(expected, abs=1e-5)
    assert f[1, CORR] == 0.0


def test_multiple_bodies_and_zero_components():
    one = _ellipse(64, 64, 30, 30, 5, 5) * 0.8
    two = np.maximum(_ellipse(64, 64, 15, 15, 4, 4), _ellipse(64, 64, 45, 45, 4, 4))
    flat = np.ones((16, 16), np.float32)  # nothing above 1.1 x local mean
    f = _features(one, two)
    assert f[0, MULTI] == 0 and f[1, MULTI] == 1
    assert not adaptive_threshold_mask(flat, 0, 0, 16, 16).any()
    assert _features(flat)[0, MULTI] == 0  # B17: not flagged like two bodies


def _full_adaptive(S):
    H, W = S.shape
    hr, hc = H // 16, W // 16
    pad = np.pad(S.astype(np.float64), ((hr, hr), (hc, hc)), mode="edge")
    box = ndimage.uniform_filter(pad, size=(2 * hr + 1, 2 * hc + 1), mode="constant")
    box = box[hr : hr + H, hc : hc + W]
    return np.clip(1.1 * box, 0, 1) < S


def _full_corruption(S):
    S = S.astype(np.float64)
    H, W = S.shape
    pad = np.pad(S, ((1, 2), (1, 2)), mode="edge")  # 4x4 box, origin (2, 2): offsets -1..2
    local = sum(pad[i : i + H, j : j + W] for i in range(4) for j in range(4)) / 16
    m = S > 1e-3
    mu = S[m].mean()
    v_g = ((S[m] - mu) ** 2).sum() / (max(mu, 0.01) * m.sum())
    v_l = ((S[m] - local[m]) ** 2 / np.maximum(0.01, local[m])).sum() / m.sum()
    return v_l / v_g


def test_adaptive_threshold_and_corruption_crop_equal_full_image():
    rng = np.random.default_rng(3)
    H, W = 70, 90
    images = []
    for cy, cx in [(35, 45), (0, 3), (69, 89), (5, 88), (66, 2), (30, 0)]:
        img = np.zeros((H, W), np.float32)
        r0, r1 = max(cy - 9, 0), min(cy + 10, H)
        c0, c1 = max(cx - 7, 0), min(cx + 12, W)
        patch = rng.random((r1 - r0, c1 - c0)).astype(np.float32)
        patch[patch < 0.3] = 0
        img[r0:r1, c0:c1] = patch
        img /= img.max()
        images.append(img)
        full = _full_adaptive(img)
        rows, cols = np.nonzero(img)
        a0, a1, b0, b1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        crop = adaptive_threshold_mask(img[a0:a1, b0:b1], a0, b0, H, W)
        assert full.sum() > 0 and not full[~(img > 0)].any()
        np.testing.assert_array_equal(crop, full[a0:a1, b0:b1])
    f = _features(*images)
    for k, img in enumerate(images):
        n_full = ndimage.label(_full_adaptive(img), structure=np.ones((3, 3)))[1]
        assert f[k, MULTI] == (1 if n_full >= 2 else 0)
        assert f[k, CORRUPT] == pytest.approx(_full_corruption(img), rel=1e-5)


def test_blocks_and_transpose_match_one_call():
    imgs = [_ellipse(50, 60, 10 + 3 * k, 12 + 4 * k, 4, 3 + k % 3) for k in range(8)]
    F = _csr(*imgs)
    whole = spatial_features(F, 50, 60, slice(None))
    FT = transpose_footprints(F)
    parts = [
        spatial_features(F, 50, 60, slice(0, 3), footprints_t=FT),
        spatial_features(F, 50, 60, np.array([3, 4, 5, 6, 7]), footprints_t=FT),
    ]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    small_groups = spatial_features(F, 50, 60, slice(None), max_batch_pixels=200)
    np.testing.assert_array_equal(small_groups, whole)


def test_empty_footprint_row():
    img = np.zeros((10, 13), np.float32)
    f = _features(img, _ellipse(10, 13, 5, 5, 2, 2))[0]
    assert f[AREA] == 0 and f[SUM] == 0 and f[MULTI] == 0 and f[CORR] == 0
    assert f[EDGE] == min(5, 10 - 5, 7, 13 - 7)  # 65th of 130 pixels, column-major: (5, 7) 1-based
    assert np.isinf(f[CIRC]) and np.isinf(f[RATIO]) and np.isnan(f[CORRUPT])


def test_errors_name_the_argument():
    F = _csr(np.ones((4, 5)))
    with pytest.raises(ValueError, match="footprints"):
        spatial_features(F, 5, 5, slice(None))
    with pytest.raises(TypeError, match="footprints"):
        spatial_features(np.ones((1, 20)), 4, 5, slice(None))
    with pytest.raises(ValueError, match="footprints_t"):
        spatial_features(F, 4, 5, slice(None), footprints_t=F)
    with pytest.raises(ValueError, match="rows"):
        spatial_features(F, 4, 5, np.array([3]))
