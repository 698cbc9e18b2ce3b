"""The GPU path on CPU CI: tests/fake_cupy.py keeps CuPy's rules, and the pipeline obeys them.

The fake only earns its place if it fails where CuPy fails, so its rules are tested first
(each with the host-leaking code it must catch); then the whole movie pass and feature stage
run with ``--device cuda`` on it and must give the CPU's store.
"""

from __future__ import annotations

import fake_cupy
import numpy as np
import pytest
import scipy.ndimage

from actsort_gpu._xp import get_xp, is_cupy, to_numpy


@pytest.fixture
def fcp(monkeypatch):
    return fake_cupy.install(monkeypatch)


def test_no_implicit_conversion_to_numpy(fcp):
    x = fcp.arange(6, dtype=fcp.float32)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
        np.asarray(x)
    with pytest.raises(TypeError, match="Implicit conversion"):
        scipy.ndimage.uniform_filter1d(x, 3)  # a SciPy call on device data: the usual leak
    np.testing.assert_array_equal(x.get(), np.arange(6))
    np.testing.assert_array_equal(fcp.asnumpy(x), np.arange(6))
    assert is_cupy(x) and get_xp(x) is fcp and isinstance(to_numpy(x), np.ndarray)


def test_host_arrays_lists_and_tuples_are_not_operands(fcp):
    x = fcp.ones(3, dtype=fcp.float32)
    for host in (np.ones(3), [1, 2, 3], (1, 2, 3)):
        with pytest.raises(TypeError, match="Unsupported type"):
            x + host
        with pytest.raises(TypeError, match="Unsupported type"):
            fcp.maximum(x, host)
    with pytest.raises(TypeError, match="Unsupported type"):
        fcp.concatenate([x, np.ones(2)])
    assert float((x * 2.0 + np.float32(1)).sum()) == 9.0  # scalars are fine


def test_reductions_are_0d_arrays_without_index(fcp):
    x = fcp.arange(5)
    n = x.max()
    assert isinstance(n, fcp.ndarray) and n.shape == () and int(n) == 4
    with pytest.raises(TypeError):
        range(n)
    with pytest.raises(TypeError):
        x[:n]
    assert x[: int(n)].shape == (4,)


def test_only_what_cupy_has(fcp):
    x = fcp.asarray(np.array([1.0, np.nan, 3.0]))
    assert isinstance(np.nanmean(x), fcp.ndarray)  # NumPy functions dispatch to CuPy's
    with pytest.raises(TypeError, match="nanquantile"):
        np.nanquantile(x, 0.5)  # CuPy 14 has none
    assert not hasattr(fcp, "errstate") and not hasattr(fcp, "nanquantile")
    assert hasattr(fcp, "quantile")
    with pytest.raises(TypeError, match="unexpected keyword"):
        fcp.sum(x, initial=0.0)  # NumPy takes initial=, CuPy 14 does not
    with pytest.raises(TypeError, match="unexpected keyword"):
        np.sort(x, stable=True)  # NumPy 2 has it, CuPy 14 does not
    assert float(fcp.quantile(x[fcp.isfinite(x)], 0.5, method="linear")) == 2.0
    # the array's methods too: only CuPy's, with CuPy's keywords
    assert x.argsort(axis=-1, kind=None).shape == x.cumsum(axis=0, dtype=None).shape == (3,)
    with pytest.raises(TypeError, match="unexpected keywords"):
        x.argsort(stable=True)  # NumPy 2's method takes it, CuPy 14's does not
    with pytest.raises(TypeError, match="unexpected keywords"):
        x.max(initial=0.0)
    with pytest.raises(AttributeError, match="setflags"):
        x.setflags(write=False)  # NumPy's array has it, CuPy's has not


def test_device_copies_and_in_place_ufuncs(fcp):
    host = np.zeros(4, np.float32)
    dev = fcp.asarray(host)
    host[0] = 7
    assert float(dev[0]) == 0  # asarray copied to the "device"
    fcp.add.at(dev, fcp.asarray(np.array([1, 1, 3])), 1)
    np.testing.assert_array_equal(dev.get(), [0, 2, 0, 1])
    dev[np.array([0, 2])] = 5  # host index arrays are accepted, as by CuPy
    np.testing.assert_array_equal(dev.get(), [5, 2, 5, 1])
    with pytest.raises(ValueError, match="cannot be used for fill"):
        dev[:2] = np.ones(2, np.float32)  # a host array through a basic index
    dev[:2] = fcp.asarray(np.ones(2, np.float32))
    np.testing.assert_array_equal(dev.get(), [1, 1, 5, 1])


def test_raw_kernels_need_a_numpy_twin(fcp):
    with pytest.raises(NotImplementedError, match="no NumPy twin"):
        fcp.RawKernel('extern "C" __global__ void other() {}', "other")


def test_backend_hands_out_the_fake_for_cuda_and_forgets_it_after(monkeypatch):
    from actsort_gpu import backend

    with monkeypatch.context() as m:
        cp = fake_cupy.install(m)
        b = backend.resolve_backend("cuda")
        assert b.is_gpu and b.xp is cp and "fake" in b.describe()
    if backend.cuda_unavailable_reason() is not None:  # a machine without a real GPU
        assert not backend.resolve_backend("auto").is_gpu


@pytest.fixture(scope="module")
def cpu_store(tmp_path_factory):
    """A small synthetic recording carried through preprocess and features on the CPU."""
    from actsort_gpu import demo
    from actsort_gpu.embed import benchdata

    cfg = benchdata.training_recording_config(2000, size_px=96, n_frames=240, kind="2p")
    path, _ = demo.synthetic_store(tmp_path_factory.mktemp("cpu"), cfg, features=True, device="cpu")
    return path


def _copy(store, tmp_path):
    """A copy of the store (its movie stays where it is) for a rerun of its stages."""
    import shutil

    return shutil.copytree(store, tmp_path / store.name)


def _assert_gpu_store_equals_cpu(cpu, gpu):
    from actsort_gpu.store import SortStore

    a, b = SortStore.open(cpu, "r"), SortStore.open(gpu, "r")
    for stage in ("preprocess", "features"):
        assert b.attrs["stages"][stage]["device"] == "cuda", stage
        assert a.attrs["stages"][stage]["device"] == "cpu", stage
    for key in ("snapshots/data", "snapshots/frames", "candidates/traces", "candidates/events"):
        np.testing.assert_array_equal(a.read(key), b.read(key), err_msg=key)
    for key in ("fov/mean", "fov/max", "fov/std", "fov/corr", "snapshots/clims"):
        np.testing.assert_allclose(a.read(key), b.read(key), rtol=1e-5, atol=1e-6, err_msg=key)
    fa, fb = a.read("features/matrix"), b.read("features/matrix")
    assert fa.shape[0] > 20
    np.testing.assert_allclose(fb, fa, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_preprocess_and_features_on_the_fake_gpu_equal_the_cpu(cpu_store, tmp_path, monkeypatch):
    """The whole GPU path of the movie pass and the feature stage (every CuPy branch, the
    gather's batching and device buffers, the snapshot parts read one ahead on a host thread)
    on the fake, against the CPU run of the same recording."""
    from actsort_gpu.features import compute_features
    from actsort_gpu.preprocess import preprocess

    gpu = _copy(cpu_store, tmp_path)
    with monkeypatch.context() as m:
        cp = fake_cupy.install(m)
        m.setattr("actsort_gpu.features.run.SNAPSHOT_ROWS", 9)  # several parts per block
        preprocess(gpu, device="cuda")
        compute_features(gpu, device="cuda")
    # each array stage hands CuPy's cached blocks back when it ends (torch may need them next)
    assert cp.get_default_memory_pool().freed == 2
    assert cp.get_default_pinned_memory_pool().freed == 2
    _assert_gpu_store_equals_cpu(cpu_store, gpu)


def test_dask_pieces_on_the_fake_gpu_equal_the_cpu(cpu_store, tmp_path, monkeypatch):
    """The GPU path of the Dask pieces (time pieces of the movie pass, candidate blocks and
    similarity tile pairs of the features), on threaded workers that share the fake."""
    distributed = pytest.importorskip("distributed")
    from actsort_gpu.config import FeatureConfig, PreprocessConfig
    from actsort_gpu.features import compute_features
    from actsort_gpu.preprocess import preprocess

    gpu = _copy(cpu_store, tmp_path)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        monkeypatch.context() as m,
    ):
        fake_cupy.install(m)
        done = preprocess(
            gpu,
            PreprocessConfig(max_memory_mb=1.2),
            device="cuda",
            scheduler=cluster.scheduler_address,
        )
        compute_features(
            gpu,
            FeatureConfig(batch_candidates=25, similarity_tile=20),
            device="cuda",
            scheduler=cluster.scheduler_address,
        )
    assert done["pieces"] > 1
    _assert_gpu_store_equals_cpu(cpu_store, gpu)


def test_compiled_kernels_are_kept_per_cupy_module(fcp, monkeypatch):
    """A kernel built by one CuPy module (the stand-in in a test) is never launched by another
    (the real CuPy later in the same process)."""
    from actsort_gpu.preprocess import kernels

    chunk = np.arange(2 * 4 * 5, dtype=np.uint16).reshape(2, 4, 5)
    seg = np.array([[0, 2, 1, 1, 2, 3, 0]])
    expected = kernels.gather_segments_numpy(chunk, seg)
    first = kernels.gather_segments_cupy(fcp.asarray(chunk), seg).get()
    other = type("OtherRawKernel", (fake_cupy.RawKernel,), {})
    monkeypatch.setattr(fcp, "RawKernel", other)
    second = kernels.gather_segments_cupy(fcp.asarray(chunk), seg).get()
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)
    assert type(kernels._KERNELS[(other, 2)]) is other
    assert type(kernels._KERNELS[(fake_cupy.RawKernel, 2)]) is fake_cupy.RawKernel


def test_feature_blocks_fit_the_gpus_free_memory(tmp_path, monkeypatch):
    """A block's device memory grows with the recording's length; on a GPU the block shrinks
    to half its free memory (``device_block``) and the matrix does not change."""
    import gc

    from actsort_gpu.config import FeatureConfig
    from actsort_gpu.features import compute_features
    from actsort_gpu.features.run import device_block
    from actsort_gpu.features.synthetic import make_feature_store

    path = tmp_path / "s.actsort"
    make_feature_store(path, n_candidates=1000, n_frames=4000, height=256, width=256)
    cpu = compute_features(path, device="cpu")
    cp = fake_cupy.install(monkeypatch)
    peaks = {}
    for mib in (1024, 96):
        gc.collect()
        base = fake_cupy.MEMORY.in_use  # what earlier tests still hold
        fake_cupy.MEMORY.reset(base + mib * 2**20)
        np.testing.assert_array_equal(compute_features(path, device="cuda"), cpu)
        peaks[mib] = (fake_cupy.MEMORY.peak - base) / 2**20
        if mib == 96:
            assert device_block(FeatureConfig(), 4000, cp) < 1000
    # the whole recording in one block needs more than the small device has; blocks fit it
    assert peaks[1024] > 96 > peaks[96], peaks
