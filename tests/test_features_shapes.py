"""The compiled shape loop (features 38, 40, 42, 43) against its Python / SciPy twin."""

from __future__ import annotations

import numpy as np
import pytest

from actsort_gpu.features import spatial
from actsort_gpu.features.shapes import crop_shapes, shapes_unusable
from actsort_gpu.features.synthetic import make_feature_store
from actsort_gpu.store import SortStore

pytestmark = pytest.mark.skipif(shapes_unusable() is not None, reason="Numba does not run here")


def _twin(crop, adaptive):
    """The Python loop of ``spatial._image_features`` for one crop."""
    bodies = 1.0 if spatial._n_components(adaptive) >= 2 else 0.0
    return (bodies, spatial._support_perimeter(crop != 0), *spatial._region_shape(crop > 0.3))


def _special_crops():
    """Shapes where labelling and tracing go wrong first: (crop, adaptive) pairs."""
    ring = np.zeros((7, 7))
    ring[1:6, 1:6] = 1.0
    ring[2:5, 2:5] = 0.0  # a hole: only the outer boundary counts
    diagonal = np.eye(6)  # 8-connected: one component, traced both ways
    checker = (np.indices((5, 6)).sum(0) % 2).astype(float)  # one 8-connected component
    touching = np.zeros((5, 5))  # two blocks touching at a corner pixel (Jacob's rule)
    touching[0:2, 0:2] = touching[2:5, 2:5] = 0.8
    ties = np.zeros((4, 9))  # two equal components: the first in column-major order wins
    ties[1:3, 1:3] = ties[1:3, 5:7] = 0.9
    faint = np.full((3, 4), 0.2)  # nothing above 0.3: no region (Inf)
    negative = np.array([[-0.5, 0.0, 0.7], [0.0, -0.2, 0.0]])  # S != 0 counts negatives
    at_threshold = np.array([[0.3, 0.3001, 0.3], [0.3, 0.3, 0.31]])  # > 0.3 is strict
    single = np.ones((1, 1))
    line = np.ones((1, 7))
    shapes = [ring, diagonal, checker, touching, ties, faint, negative, at_threshold, single, line]
    return [(s, s > 0.5) for s in shapes] + [(s, s != 0) for s in shapes]


def _random_crops(rng, n):
    out = []
    for _ in range(n):
        h, w = rng.integers(1, 24, size=2)
        density = rng.uniform(0.05, 0.9)
        crop = np.where(rng.random((h, w)) < density, rng.uniform(-0.2, 1.0, (h, w)), 0.0)
        crop[rng.integers(h), rng.integers(w)] = 1.0  # a footprint's max-normalised peak
        out.append((crop, rng.random((h, w)) < rng.uniform(0.1, 0.8)))
    return out


def _group(pairs, rng):
    """Pad the crops into one group as ``_image_features`` does, with junk beyond each crop's
    size (the kernel must read only inside it)."""
    hp = max(c.shape[0] for c, _ in pairs)
    wp = max(c.shape[1] for c, _ in pairs)
    crops = rng.uniform(0.5, 1.0, (len(pairs), hp, wp))
    adaptive = np.ones((len(pairs), hp, wp), bool)
    for k, (c, a) in enumerate(pairs):
        crops[k, : c.shape[0], : c.shape[1]] = c
        adaptive[k, : c.shape[0], : c.shape[1]] = a
    hw = np.array([c.shape for c, _ in pairs])
    return crops, adaptive, hw[:, 0], hw[:, 1]


@pytest.mark.parametrize("kind", ["special", "random"])
def test_compiled_shapes_equal_the_python_twin(kind):
    rng = np.random.default_rng(7)
    pairs = _special_crops() if kind == "special" else _random_crops(rng, 400)
    bodies, perimeter, circ, ratio = crop_shapes(*_group(pairs, rng))
    want = np.array([_twin(c, a) for c, a in pairs])
    np.testing.assert_array_equal(bodies, want[:, 0])
    np.testing.assert_array_equal(perimeter, want[:, 1])  # the same additions, same order
    # moments: sequential sums here, NumPy's pairwise ones in the twin
    np.testing.assert_allclose(circ, want[:, 2], rtol=1e-12, atol=0)
    np.testing.assert_allclose(ratio, want[:, 3], rtol=1e-12, atol=0)
    assert np.isinf(want[:, 2]).any() and (want[:, 0] == 1).any() and (want[:, 0] == 0).any()


def test_known_answers():
    ring = np.zeros((7, 7))
    ring[1:6, 1:6] = 1.0
    ring[2:5, 2:5] = 0.0
    two = np.zeros((3, 5))
    two[1, 0] = two[1, 4] = 1.0
    crops, adaptive, h, w = _group([(ring, ring > 0), (two, two > 0)], np.random.default_rng(0))
    bodies, perimeter, circ, ratio = crop_shapes(crops, adaptive, h, w)
    assert bodies.tolist() == [0.0, 1.0]  # a ring is one body; two separate pixels are two
    assert perimeter.tolist() == [16.0, 0.0]  # a 5 x 5 square's outline; isolated pixels: 0
    assert circ[0] == pytest.approx(4 * np.pi * 16 / 16**2)
    assert ratio[0] == pytest.approx(1.0)
    # the largest region of the second is one pixel: no boundary length, moments of 1/12 each
    assert circ[1] == np.inf and ratio[1] == pytest.approx(1.0)


def test_feature_matrix_equal_with_and_without_the_compiled_loop(tmp_path, monkeypatch):
    path = tmp_path / "s.actsort"
    make_feature_store(path, n_candidates=80, n_frames=50, height=64, width=64, seed=3)
    store = SortStore.open(path)
    fp = store.footprints()
    args = (fp, store.height, store.width, slice(None))
    compiled = spatial.spatial_features(*args)
    monkeypatch.setattr(spatial, "shapes_unusable", lambda: "switched off by the test")
    np.testing.assert_array_equal(compiled, spatial.spatial_features(*args))


@pytest.mark.parametrize("recording", ["neurofinder_crop", "miniscope_1p"])
def test_real_footprints_equal_with_and_without_the_compiled_loop(
    recording, shared_data, monkeypatch
):
    from actsort_gpu.ingest import normalise_footprints
    from actsort_gpu.io.suite2p import read_suite2p

    cands = read_suite2p(shared_data / recording / "suite2p")
    fp, _, _ = normalise_footprints(cands.footprints)
    args = (fp, cands.height, cands.width, slice(None))
    compiled = spatial.spatial_features(*args)
    monkeypatch.setattr(spatial, "shapes_unusable", lambda: "switched off by the test")
    np.testing.assert_array_equal(compiled, spatial.spatial_features(*args))
