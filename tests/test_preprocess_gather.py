"""The movie pass as one code path (issue 12): the host side of the GPU path runs on the CPU.

- ``stream.gather_into`` (segment batching, offset rebasing, buffer reuse, the scatter into the
  scratch map) is exact for every movie dtype the readers produce, at any batch size;
- the pass's device branch runs on the CPU with NumPy posing as the device module and the
  NumPy twin as the launch: same scratch bytes, images within float32 rounding;
- the einsum accumulator (the CuPy path, kept as the reference) equals the blocked one;
- the CUDA source of the gather compiles for Hopper (nvcc) and, run by a C++ shim that plays
  the grid serially (g++), equals the NumPy twin; on a GPU (``-m gpu``) the kernel itself does.
"""

import shutil
import subprocess
import types

import numpy as np
import pytest

from actsort_gpu.io.movies import ArrayMovie
from actsort_gpu.preprocess import compiled, kernels, stream
from actsort_gpu.preprocess.kernels import (
    HostGather,
    ProjectionAccumulator,
    gather_kernel_source,
    gather_segments_numpy,
)
from actsort_gpu.preprocess.plan import plan_pass, segments_for_chunk

# the dtypes the movie readers produce, and a float64 one (float32 scratch)
DTYPES = ["uint8", "uint16", "int16", "int32", "float32", "float64"]


def _movie(dtype, t=37, h=19, w=23, seed=0):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        # values float32 cannot hold in fewer bits, NaN-free
        return (rng.normal(size=(t, h, w)) * 1e6).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=(t, h, w), endpoint=True).astype(dt)


def _plan(t=37, h=19, w=23, n=9, seed=1):
    """Random crops and windows of snapshot frames (some clipped with -1 slots)."""
    rng = np.random.default_rng(seed)
    r0 = rng.integers(0, h - 4, n)
    c0 = rng.integers(0, w - 4, n)
    crops = np.stack(
        [r0, r0 + rng.integers(1, 5, n), c0, c0 + rng.integers(1, 5, n)], axis=1
    ).astype(np.int32)
    events = rng.integers(-3, t + 3, size=(n, 3))
    frames = events[:, :, None] + np.arange(-2, 3)[None, None, :]
    frames = np.where((frames >= 0) & (frames < t), frames, -1).astype(np.int32)
    return plan_pass(frames, crops)


def _expected_scratch(movie, plan, dtype):
    """The scratch snapshots worked out directly from the plan (block per candidate,
    (event, slot, row, col) order; slots without a frame stay 0)."""
    out = np.zeros(max(plan.total_elements, 1), dtype)
    n, e, f = plan.frames.shape
    for i in range(n):
        r0, r1, c0, c1 = plan.crops[i]
        block = out[plan.block_offsets[i] : plan.block_offsets[i + 1]].reshape(e, f, r1 - r0, -1)
        for k in range(e):
            for s in range(f):
                fr = plan.frames[i, k, s]
                if fr >= 0:
                    block[k, s] = movie[fr, r0:r1, c0:c1]
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_elements", [1, 7, 50, 10**6])
def test_gather_into_is_exact_at_any_batch_size(dtype, batch_elements):
    movie = _movie(dtype)
    plan = _plan()
    sdt = stream.scratch_dtype(movie.dtype)
    snaps = np.zeros(max(plan.total_elements, 1), sdt)
    launch = HostGather(sdt)
    n_batches = 0
    for a in range(0, movie.shape[0], 8):  # chunks of 8 frames
        b = min(a + 8, movie.shape[0])
        seg, dst, sizes = segments_for_chunk(plan, a, b, plan.frames.shape[2])
        n_batches += stream.gather_into(movie[a:b], seg, dst, sizes, snaps, launch, batch_elements)
    expected = _expected_scratch(movie, plan, sdt)
    # bit for bit: int32 values beyond 2**24 and float32 mantissas included
    np.testing.assert_array_equal(snaps.view(f"u{sdt.itemsize}"), expected.view(f"u{sdt.itemsize}"))
    if batch_elements == 1:
        assert n_batches > 9  # one segment per batch
    if batch_elements == 10**6:
        assert launch.host.size >= 1  # one buffer, reused by every chunk


def test_gather_batches_rebase_offsets_and_reuse_one_buffer():
    movie = _movie("uint16", t=6, h=9, w=11)
    seg = np.array([[1, 3, 2, 4, 3, 5, 0], [0, 1, 0, 0, 9, 11, 45], [5, 1, 8, 10, 1, 1, 144]])
    sizes = np.array([45, 99, 1])
    dst = np.array([200, 0, 150])  # anywhere in the scratch, in any order
    seen = []

    class Recording(HostGather):
        def __call__(self, chunk, segments, total):
            packed = super().__call__(chunk, segments, total)
            seen.append((segments[:, 6].tolist(), total, id(self.host)))  # the buffer used
            return packed

    launch = Recording(np.uint16, capacity=50)
    snaps = np.zeros(300, np.uint16)
    assert stream.gather_into(movie, seg, dst, sizes, snaps, launch, 50) == 3
    # each batch's offsets start at 0; the 99-value segment is a batch alone and grows the
    # buffer once (to twice its size at least), which the next batch reuses
    assert [s[:2] for s in seen] == [([0], 45), ([0], 99), ([0], 1)]
    assert seen[0][2] != seen[1][2] and seen[1][2] == seen[2][2]
    assert launch.host.size >= 100
    np.testing.assert_array_equal(snaps[200:245].reshape(3, 3, 5), movie[1:4, 2:5, 4:9])
    np.testing.assert_array_equal(snaps[0:99].reshape(9, 11), movie[0])
    assert snaps[150] == movie[5, 8, 10]
    seen.clear()
    assert stream.gather_into(movie, seg, dst, sizes, snaps, launch, 10**6) == 1
    assert seen[0][:2] == ([0, 45, 144], 145)


def test_gather_twin_keeps_the_dtype_or_casts_into_out():
    chunk = _movie("int32", t=2, h=3, w=4)
    seg = np.array([[0, 2, 0, 0, 3, 4, 0]])
    out = gather_segments_numpy(chunk, seg)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, chunk.ravel())
    buf = np.zeros(30, np.float64)
    view = gather_segments_numpy(chunk, seg, out=buf)
    assert view.base is buf and view.size == 24
    np.testing.assert_array_equal(view, chunk.ravel().astype(np.float64))


def _host_posing_as_device():
    """NumPy under another name: the pass takes its device branch (``xp is not np``)."""
    mod = types.ModuleType("device_on_host")
    mod.__getattr__ = lambda name: getattr(np, name)
    return mod


@pytest.mark.parametrize("dtype", DTYPES)
def test_device_branch_of_the_pass_runs_on_the_cpu(tmp_path, monkeypatch, dtype):
    """Every line of the GPU pass but the kernel launch: device copy of the chunk, the
    einsum accumulator, the scratch-dtype conversion, batching and scatter."""
    movie = _movie(dtype, t=40)
    plan = _plan(t=40)
    launches = []

    class TwinLaunch(HostGather):  # stands in for kernels.DeviceGather (the CuPy launch)
        def __call__(self, chunk, segments, total):
            launches.append(chunk.dtype)
            return super().__call__(chunk, segments, total)

    monkeypatch.setattr(kernels, "DeviceGather", TwinLaunch)
    dev = _host_posing_as_device()
    mv = ArrayMovie(movie)
    host_img, host_info = stream.run_pass(
        mv, plan, tmp_path / "host", chunk_frames=7, gather_bytes=64
    )
    dev_img, dev_info = stream.run_pass(
        mv, plan, tmp_path / "dev", chunk_frames=7, xp=dev, gather_bytes=64
    )
    sdt = np.dtype(host_info["scratch_dtype"])
    assert dev_info["scratch_dtype"] == str(sdt) and set(launches) == {sdt}
    a = np.fromfile(tmp_path / "host" / stream.SCRATCH_NAME, sdt)
    b = np.fromfile(tmp_path / "dev" / stream.SCRATCH_NAME, sdt)
    np.testing.assert_array_equal(a.view(f"u{sdt.itemsize}"), b.view(f"u{sdt.itemsize}"))
    np.testing.assert_array_equal(
        b[: plan.total_elements], _expected_scratch(movie, plan, sdt)[: plan.total_elements]
    )
    for k, v in host_img.items():
        np.testing.assert_allclose(dev_img[k], v, rtol=2e-5, atol=1e-5 * np.abs(v).max(), err_msg=k)


@pytest.mark.parametrize("dtype", ["uint16", "int32", "float32"])
@pytest.mark.parametrize("chunks", [(70,), (1, 69), (5, 16, 49)])
def test_einsum_reference_equals_the_blocked_accumulator(monkeypatch, dtype, chunks):
    rng = np.random.default_rng(4)
    movie = (rng.normal(1000, 50, size=(70, 13, 9))).astype(dtype)
    monkeypatch.setattr(kernels, "_BLOCK_PIXELS", 3 * 9)  # 3-row blocks, several per frame
    monkeypatch.setattr(kernels, "_FLUSH_FRAMES", 16)
    blocked = ProjectionAccumulator(13, 9, threads=2, method="blocked")
    einsum = ProjectionAccumulator(13, 9, method="einsum")
    assert blocked.method == "blocked" and einsum.method == "einsum"
    a = 0
    for n in chunks:
        blocked.update(movie[a : a + n])
        einsum.update(movie[a : a + n])
        a += n
    blocked.close()
    for name in ("s1", "s2"):
        np.testing.assert_allclose(getattr(einsum, name), getattr(blocked, name), rtol=1e-5)
    for pe, pb in zip(einsum.p, blocked.p):
        # float32 sums in another order: compare at the scale of the sums
        np.testing.assert_allclose(pe, pb, rtol=1e-5, atol=1e-6 * np.abs(pb).max())
    np.testing.assert_array_equal(einsum.max, blocked.max)
    for k, v in blocked.images().items():
        np.testing.assert_allclose(einsum.images()[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
    m = movie.astype(np.float64)
    np.testing.assert_allclose(einsum.images()["mean"], m.mean(0), rtol=1e-6)
    np.testing.assert_allclose(einsum.images()["std"], m.std(0), rtol=1e-4)
    for method in ("blocked", "compiled"):
        with pytest.raises(ValueError, match="with NumPy only"):
            ProjectionAccumulator(3, 3, xp=_host_posing_as_device(), method=method)


@pytest.mark.skipif(not compiled.available(), reason="Numba not importable")
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "float32"])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_accumulator_equals_the_blocked_one_bit_for_bit(monkeypatch, dtype, threads):
    """Numba's loop does the blocked method's float32 arithmetic in the same order: every
    total, and the NaN a float movie can carry, identical; several row blocks per frame,
    flushes inside and across chunks, odd chunk sizes."""
    rng = np.random.default_rng(7)
    movie = rng.normal(100, 20, size=(75, 14, 11)).clip(0, 250).astype(dtype)
    if dtype == "float32":
        movie[30, 2, 3] = np.nan
    monkeypatch.setattr(kernels, "_BLOCK_PIXELS", 4 * 11)  # 4-row blocks, the last one short
    monkeypatch.setattr(kernels, "_FLUSH_FRAMES", 16)
    acc = {
        m: ProjectionAccumulator(14, 11, threads=threads, method=m) for m in ("compiled", "blocked")
    }
    a = 0
    for n in (1, 40, 34):
        for one in acc.values():
            one.update(movie[a : a + n])
        a += n
    got, want = acc["compiled"], acc["blocked"]
    for name in ("max", "s1", "s2"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    for pc, pb in zip(got.p, want.p):
        np.testing.assert_array_equal(pc, pb)
    if dtype == "float32":
        assert np.isnan(got.max[2, 3]) and np.isnan(got.s1[2, 3])
    for one in acc.values():
        one.close()


def test_default_cpu_accumulator_is_compiled_when_numba_imports(monkeypatch):
    assert ProjectionAccumulator(4, 4).method == ("compiled" if compiled.available() else "blocked")
    monkeypatch.setattr(compiled, "available", lambda: False)
    assert ProjectionAccumulator(4, 4).method == "blocked"
    with pytest.raises(ValueError, match="needs Numba"):
        ProjectionAccumulator(4, 4, method="compiled")


# ------------------------------------------------------------------ the CUDA source itself
_SHIM = r"""
#include <cstdio>
#include <vector>
struct Dim3 { unsigned int x, y, z; };
static Dim3 blockDim, blockIdx, threadIdx, gridDim;
#define __global__
%(kernels)s
template <typename T, typename K>
static void play(K kernel, const long long* hdr, const std::vector<long long>& seg) {
    // hdr: itemsize, n_seg, t, h, w, total, grid blocks
    std::vector<T> chunk(hdr[2] * hdr[3] * hdr[4]);
    std::vector<T> out(hdr[5] > 0 ? hdr[5] : 1);
    if (fread(chunk.data(), sizeof(T), chunk.size(), stdin) != chunk.size()) return;
    blockDim.x = 256; gridDim.x = (unsigned int)hdr[6];
    for (unsigned int b = 0; b < gridDim.x; ++b)
        for (unsigned int t = 0; t < blockDim.x; ++t) {
            blockIdx.x = b; threadIdx.x = t;
            kernel(chunk.data(), seg.data(), hdr[1], hdr[3], hdr[4], hdr[5], out.data());
        }
    fwrite(out.data(), sizeof(T), hdr[5], stdout);
}
int main() {
    long long hdr[7];
    if (fread(hdr, sizeof(long long), 7, stdin) != 7) return 1;
    std::vector<long long> seg(hdr[1] * 7);
    if (fread(seg.data(), sizeof(long long), seg.size(), stdin) != seg.size()) return 1;
    if (hdr[0] == 1) play<unsigned char>(gather_segments_u8, hdr, seg);
    if (hdr[0] == 2) play<unsigned short>(gather_segments_u16, hdr, seg);
    if (hdr[0] == 4) play<unsigned int>(gather_segments_u32, hdr, seg);
    return 0;
}
"""


def _all_sources() -> str:
    return "".join(gather_kernel_source(k)[0] for k in (1, 2, 4))


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler (g++) here")
def test_cuda_gather_source_played_serially_equals_the_twin(tmp_path):
    src = tmp_path / "shim.cpp"
    src.write_text(_SHIM % {"kernels": _all_sources()})
    exe = tmp_path / "shim"
    subprocess.run(["g++", "-O1", "-o", str(exe), str(src)], check=True, capture_output=True)
    plan = _plan()
    for dtype in DTYPES[:-1]:  # the scratch dtypes: the kernel copies 1-, 2- and 4-byte values
        movie = _movie(dtype)
        seg, _, _ = segments_for_chunk(plan, 8, 30, plan.frames.shape[2])
        assert len(seg) > 3
        expected = gather_segments_numpy(movie[8:30], seg)
        chunk = np.ascontiguousarray(movie[8:30])
        # 1 block of 256 threads for more values than that: the grid-stride loop is played too
        hdr = np.array([chunk.itemsize, len(seg), *chunk.shape, expected.size, 1], np.int64)
        run = subprocess.run(
            [str(exe)],
            input=hdr.tobytes() + seg.astype(np.int64).tobytes() + chunk.tobytes(),
            capture_output=True,
            check=True,
        )
        got = np.frombuffer(run.stdout, dtype=movie.dtype)
        assert expected.size > 256
        np.testing.assert_array_equal(
            got.view(f"u{chunk.itemsize}"), expected.view(f"u{chunk.itemsize}")
        )


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no CUDA compiler (nvcc) here")
def test_cuda_gather_source_compiles_for_hopper(tmp_path):
    src = tmp_path / "gather.cu"
    src.write_text(_all_sources())
    out = tmp_path / "gather.ptx"
    subprocess.run(
        ["nvcc", "-arch=sm_90", "-ptx", "-Werror", "all-warnings", "-o", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    entries = [line for line in out.read_text().splitlines() if ".entry" in line]
    assert len(entries) == 3
    with pytest.raises(ValueError, match="itemsize must be one of"):
        gather_kernel_source(8)


# ------------------------------------------------------------------ on a GPU
@pytest.mark.parametrize("dtype", DTYPES[:-1])
def test_cupy_gather_is_bit_exact(dtype, cp):
    from actsort_gpu.preprocess.kernels import DeviceGather, gather_segments_cupy

    movie = _movie(dtype)
    plan = _plan()
    seg, _, _ = segments_for_chunk(plan, 8, 30, plan.frames.shape[2])
    expected = gather_segments_numpy(movie[8:30], seg)
    got = gather_segments_cupy(cp.asarray(movie[8:30]), seg).get()
    assert got.dtype == movie.dtype
    np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), expected.view(f"u{got.itemsize}"))
    launch = DeviceGather(movie.dtype, capacity=4)  # grows on the first batch
    host = launch(cp.asarray(movie[8:30]), seg, expected.size)
    np.testing.assert_array_equal(host.view(f"u{got.itemsize}"), expected.view(f"u{got.itemsize}"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_pass_equals_cpu_pass(tmp_path, dtype, cp):
    movie = _movie(dtype, t=40)
    plan = _plan(t=40)
    mv = ArrayMovie(movie)
    cpu_img, info = stream.run_pass(mv, plan, tmp_path / "cpu", chunk_frames=7, gather_bytes=64)
    gpu_img, _ = stream.run_pass(mv, plan, tmp_path / "gpu", chunk_frames=7, xp=cp, gather_bytes=64)
    sdt = np.dtype(info["scratch_dtype"])
    a = np.fromfile(tmp_path / "cpu" / stream.SCRATCH_NAME, sdt)
    b = np.fromfile(tmp_path / "gpu" / stream.SCRATCH_NAME, sdt)
    np.testing.assert_array_equal(a.view(f"u{sdt.itemsize}"), b.view(f"u{sdt.itemsize}"))
    for k, v in cpu_img.items():
        np.testing.assert_allclose(gpu_img[k], v, rtol=2e-5, atol=1e-5 * np.abs(v).max(), err_msg=k)


@pytest.mark.skipif(not compiled.available(), reason="Numba not importable")
def test_compiled_kernel_is_built_without_a_disk_cache_where_none_is_writable(monkeypatch):
    import numba

    real = numba.njit

    def njit(**kw):
        if kw.get("cache"):
            raise RuntimeError("cannot cache function: no locator available for file")
        return real(**kw)

    monkeypatch.setattr(numba, "njit", njit)
    compiled._jitted.cache_clear()
    try:
        movie = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
        got = ProjectionAccumulator(3, 4, threads=1, method="compiled")
        want = ProjectionAccumulator(3, 4, threads=1, method="blocked")
        got.update(movie)
        want.update(movie)
        np.testing.assert_array_equal(got.s2, want.s2)
    finally:
        compiled._jitted.cache_clear()


def test_compiled_accumulator_that_cannot_run_falls_back_before_touching_a_total(
    monkeypatch, caplog
):
    def broken(*args):
        raise RuntimeError("LLVM ERROR: no target for this CPU")

    monkeypatch.setattr(compiled, "available", lambda: True)
    monkeypatch.setattr(compiled, "accumulate_rows", broken)
    compiled.unusable.cache_clear()
    try:
        movie = np.random.default_rng(1).integers(0, 999, size=(9, 5, 6)).astype(np.uint16)
        acc = ProjectionAccumulator(5, 6, threads=1, method="compiled")
        with caplog.at_level("WARNING", logger="actsort_gpu.preprocess.kernels"):
            acc.update(movie)
        assert acc.method == "blocked" and "no target for this CPU" in caplog.text
        want = ProjectionAccumulator(5, 6, threads=1, method="blocked")
        want.update(movie)
        np.testing.assert_array_equal(acc.s2, want.s2)
        np.testing.assert_array_equal(acc.p[0], want.p[0])
    finally:
        compiled.unusable.cache_clear()
