"""Movie readers: every format gives the same (T, H, W) frames, windows, errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from mapped_pages import SMAPS, mapped_rss_kb

from actsort_gpu.io.movies import (
    HDF5Movie,
    NpyMovie,
    Suite2pBinMovie,
    TiffFolderMovie,
    TiffMovie,
    ZarrMovie,
    open_movie,
    resolve_axis_order,
)

T, H, W = 12, 6, 9  # H != W so that a transposed read cannot pass by accident


@pytest.fixture()
def movie():
    return np.arange(T * H * W, dtype=np.uint16).reshape(T, H, W)


def _check(m, movie, fmt):
    assert m.shape == (T, H, W) and m.format == fmt
    np.testing.assert_array_equal(m.read(3, 7), movie[3:7])
    chunks = list(m.iter_chunks(5))
    assert [c[0] for c in chunks] == [0, 5, 10]
    np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]), movie)
    reused = [c.copy() for _, c in m.iter_chunks(5, reuse_buffer=True)]
    np.testing.assert_array_equal(np.concatenate(reused), movie)
    # one frame alone (tifffile hands (H, W) back for one page): still (1, H, W), also as the
    # last chunk of a pass, in a reused buffer
    np.testing.assert_array_equal(m.read(T - 1, T), movie[T - 1 : T])
    for reuse in (False, True):
        last = [c.copy() for _, c in m.iter_chunks(T - 1, reuse_buffer=reuse)]
        assert [c.shape for c in last] == [(T - 1, H, W), (1, H, W)]
        np.testing.assert_array_equal(np.concatenate(last), movie)
    with pytest.raises(IndexError):
        m.read(0, T + 1)


def test_tiff_uncompressed_and_zlib(tmp_path, movie):
    import tifffile

    tifffile.imwrite(tmp_path / "raw.tif", movie, contiguous=True)
    tifffile.imwrite(tmp_path / "zlib.tif", movie, compression="zlib")
    tifffile.imwrite(tmp_path / "big.tif", movie.astype(">u2"), bigtiff=True, byteorder=">")
    for name, uses_raw in (("raw.tif", True), ("zlib.tif", False), ("big.tif", True)):
        with open_movie(tmp_path / name) as m:
            assert isinstance(m, TiffMovie) and (m._raw is not None) == uses_raw, name
            assert m.dtype == np.uint16
            _check(m, movie, "tiff")


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_tiff_page_chain_is_read_by_its_page_table(tmp_path, movie, byteorder, monkeypatch):
    """An IFD before each frame (ScanImage's layout): frames read at their offsets, as one
    span per window or frame by frame, equal tifffile's; compressed chains stay tifffile's."""
    import tifffile

    from actsort_gpu.io.movies import tiff
    from actsort_gpu.preprocess.reader import ChunkReader

    path = tmp_path / "chain.tif"
    with tifffile.TiffWriter(path, byteorder=byteorder) as tw:
        for f in movie:
            tw.write(f, contiguous=False, metadata=None)
    for gap in (tiff.PAGE_GAP_BYTES, -(10**9)):  # one span per window; frame by frame
        monkeypatch.setattr(tiff, "PAGE_GAP_BYTES", gap)
        with open_movie(path) as m:
            assert isinstance(m, TiffMovie) and m._raw is None and m._pages is not None
            assert m.dtype == np.uint16 and m.dtype.isnative
            _check(m, movie, "tiff")
            got = np.concatenate([f.copy() for _, f in ChunkReader(m, 5)])
            np.testing.assert_array_equal(got, movie)
    zlib = tmp_path / "zchain.tif"
    with tifffile.TiffWriter(zlib) as tw:
        for f in movie:
            tw.write(f, contiguous=False, metadata=None, compression="zlib")
    with open_movie(zlib) as m:
        assert m._pages is None
        _check(m, movie, "tiff")


@pytest.mark.parametrize("bigtiff", [False, True])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_a_uniform_page_chain_is_counted_without_walking_it(tmp_path, bigtiff, byteorder):
    """An IFD before each frame at one stride (the first page may differ: tifffile writes its
    metadata there): the page table from the first three pages and the file size equals
    tifffile's walk of the chain; a chain whose spacing changes, a cut-off file, a compressed,
    shaped or two-page file are left to the walk (None), and still read right."""
    import tifffile

    from actsort_gpu.io.movies.tiff import uniform_chain

    rng = np.random.default_rng(11)
    frames = rng.integers(0, 4000, (300, 6, 9), dtype=np.uint16)

    def chain(name, pages, extra=None, **kw):
        with tifffile.TiffWriter(tmp_path / name, bigtiff=bigtiff, byteorder=byteorder) as tw:
            for k, f in enumerate(pages):
                more = extra(k) if extra else {}
                tw.write(f, contiguous=False, metadata=None, **kw, **more)
        return tmp_path / name

    def table(path):
        with tifffile.TiffFile(path) as tif:
            found = uniform_chain(tif, path)
            walked = np.array([p.dataoffsets[0] for p in tif.pages])
        return found, walked

    found, walked = table(
        chain("even.tif", frames, lambda k: {"software": "x" * 40} if k == 0 else {})
    )
    assert found is not None and found.shape == (300, 6, 9) and found.axes == "IYX"
    np.testing.assert_array_equal(found.offsets, walked)
    with open_movie(tmp_path / "even.tif") as m:
        np.testing.assert_array_equal(m.read(0, 300), frames)
    # page 150 carries a longer IFD: every later page moves, the last one is not where
    # the stride puts it
    odd = chain("odd.tif", frames, lambda k: {"software": "y" * 40} if k == 150 else {})
    assert table(odd)[0] is None
    with open_movie(odd) as m:
        np.testing.assert_array_equal(m.read(0, 300), frames)
    # cut inside the last page, and inside an IFD: counted short, the walk reports it
    data = (tmp_path / "even.tif").read_bytes()
    for cut in (len(data) - 20, len(data) - 108 - 20):
        (tmp_path / "cut.tif").write_bytes(data[:cut])
        with tifffile.TiffFile(tmp_path / "cut.tif") as tif:
            assert uniform_chain(tif, tmp_path / "cut.tif") is None
    for name, path in (
        ("zlib", chain("zlib.tif", frames, compression="zlib")),
        ("shaped", chain("shaped.tif", frames[:5])),
        ("two pages", chain("two.tif", frames[:2])),
    ):
        if name == "shaped":
            tifffile.imwrite(path, frames, contiguous=False)
        assert table(path)[0] is None, name


def test_tiff_folder_natural_order(tmp_path, movie):
    import tifffile

    for i in range(T):
        tifffile.imwrite(tmp_path / f"frame{i}.tif", movie[i])  # frame10 after frame9
    m = open_movie(tmp_path)
    assert isinstance(m, TiffFolderMovie)
    _check(m, movie, "tiff-folder")


def test_tiff_folder_of_multipage_files(tmp_path, movie):
    import tifffile

    tifffile.imwrite(tmp_path / "part1.tif", movie[:7])
    tifffile.imwrite(tmp_path / "part2.tif", movie[7:])
    _check(open_movie(tmp_path), movie, "tiff-folder")


def test_tiff_folder_reads_each_multipage_file_through_one_open_reader(tmp_path, monkeypatch):
    import tifffile

    from actsort_gpu.io import movies
    from actsort_gpu.preprocess.reader import ChunkReader

    frames = np.random.default_rng(0).integers(0, 60000, (40, H, W), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a1.tif", frames[:15], contiguous=True)  # read as a raw file
    tifffile.imwrite(tmp_path / "a2.tif", frames[15:31], compression="zlib")
    with tifffile.TiffWriter(tmp_path / "a10.tif") as tw:  # a page chain (ScanImage-like)
        for f in frames[31:]:
            tw.write(f, contiguous=False, metadata=None)
    opened = []
    real_init = movies.TiffMovie.__init__

    def counting_init(self, path, **kw):
        opened.append(path.name)
        real_init(self, path, **kw)

    monkeypatch.setattr(movies.TiffMovie, "__init__", counting_init)
    with open_movie(tmp_path) as m:
        assert isinstance(m, TiffFolderMovie) and m.shape == (40, H, W)
        got = np.concatenate([f.copy() for _, f in ChunkReader(m, 4)])  # windows cross files
        np.testing.assert_array_equal(got, frames)
        assert opened == ["a1.tif", "a2.tif", "a10.tif"]  # once each, in natural order
        assert m.read_mode == "buffered"  # small files: through the page cache
        with TiffMovie(tmp_path / "a1.tif") as a1:  # where a chunk's buffer should start
            a1_shift = a1.buffer_shift(3)
        assert a1_shift is not None and m.buffer_shift(3) == a1_shift
        assert m.buffer_shift(20) is None and m.buffer_shift(35) is None  # zlib, page chain
        np.testing.assert_array_equal(m.read(13, 33), frames[13:33])
        np.testing.assert_array_equal(m.read(35, 36), frames[35:36])
    assert m._open is None  # closed with the movie


def test_tiff_folder_refuses_a_file_unlike_the_first(tmp_path, movie):
    import tifffile

    tifffile.imwrite(tmp_path / "part1.tif", movie[:7])
    tifffile.imwrite(tmp_path / "part2.tif", movie[7:].astype(np.float32))
    with pytest.raises(ValueError, match=r"part2.tif: frames of 6 x 9 float32, expected 6 x 9 "):
        open_movie(tmp_path)
    tifffile.imwrite(tmp_path / "part2.tif", movie[7:, :, :5])
    with pytest.raises(ValueError, match=r"part2.tif: frames of 6 x 5 uint16, expected 6 x 9 "):
        open_movie(tmp_path)
    for old in tmp_path.iterdir():
        old.unlink()
    for i in range(T):  # one frame per file: only the first is read at open
        tifffile.imwrite(tmp_path / f"f{i}.tif", movie[i] if i != 4 else movie[i].astype(np.int32))
    with open_movie(tmp_path) as m:
        np.testing.assert_array_equal(m.read(0, 4), movie[:4])
        with pytest.raises(ValueError, match=r"f4.tif: frame of 6 x 9 int32, expected 6 x 9 uint"):
            m.read(2, 6)
    tifffile.imwrite(tmp_path / "f4.tif", movie[4:6])  # a two-frame file among one-frame files
    with open_movie(tmp_path) as m, pytest.raises(ValueError, match=r"f4.tif: holds 2 frames, "):
        m.read(0, T)


@pytest.mark.parametrize("order", ["THW", "TWH", "HWT", "WHT"])
def test_hdf5_axis_orders(tmp_path, movie, order, caplog):
    import h5py

    stored = movie.transpose(["THW".index(a) for a in order])
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["mov"] = stored
        f["F_per_pixel"] = np.zeros((3, 4, 5))  # EXTRACT by-product: never the movie
    with caplog.at_level(logging.INFO):
        m = open_movie(tmp_path / "m.h5", expected_hw=(H, W))
    assert isinstance(m, HDF5Movie) and m.axis_order == order and m.dataset == "mov"
    assert (m._raw is not None) == (order in ("THW", "TWH"))  # frames one after another
    _check(m, movie, "hdf5")
    if order != "THW":
        assert order in caplog.text
    m.close()


def test_matlab_v73_movie_prefers_reversed_order(tmp_path):
    """MATLAB [H W T] with H == W reads as (T, W, H); the tie goes to MATLAB's order."""
    import h5py

    mov = np.random.default_rng(0).random((5, 4, 4)).astype(np.float32)  # (T, H, W)
    path = tmp_path / "movie.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f["Y"] = mov.transpose(0, 2, 1)
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, written by a test")
    with open_movie(path, expected_hw=(4, 4)) as m:
        assert m.axis_order == "TWH" and m._raw is not None  # offset past the user block
        np.testing.assert_array_equal(m.read(0, 5), mov)


def _nwb_like(path, series: dict, external: tuple = ()):
    """An HDF5 file laid out as NWB: each series a group with ``neurodata_type`` and ``data``,
    plus a 3-D image mask table that must not be taken for the movie."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["nwb_version"] = "2.8.0"
        for name, (kind, data) in series.items():
            g = f.create_group(name)
            g.attrs["neurodata_type"] = kind
            g["data"] = data
        for name in external:
            g = f.create_group(name)
            g.attrs["neurodata_type"] = "TwoPhotonSeries"
            g["external_file"] = np.array([b"frames_0.tif"])
        f["processing/ophys/seg/plane/image_mask"] = np.zeros((3, H, W), np.float32)
    return path


def test_nwb_movie_is_its_imaging_series(tmp_path, movie):
    import h5py

    path = _nwb_like(tmp_path / "s.nwb", {"acquisition/movie": ("TwoPhotonSeries", movie)})
    with open_movie(path, expected_hw=(H, W)) as m:
        assert isinstance(m, HDF5Movie) and m.dataset == "acquisition/movie/data"
        assert m.fs_hz is None  # neither starting_time nor timestamps
        _check(m, movie, "nwb")
    with h5py.File(path, "a") as f:  # the frame rate: timestamps (s), then starting_time's rate
        f["acquisition/movie/timestamps"] = 3.0 + np.arange(T) / 12.5
    with open_movie(path) as m:
        assert m.fs_hz == pytest.approx(12.5)
    with h5py.File(path, "a") as f:
        f["acquisition/movie/starting_time"] = 0.0
        f["acquisition/movie/starting_time"].attrs["rate"] = 30.0
    with open_movie(path) as m:
        assert m.fs_hz == 30.0 and m.describe()["fs_hz"] == 30.0
    two = {
        "acquisition/a": ("TwoPhotonSeries", movie),
        "acquisition/b": ("OnePhotonSeries", movie),
    }
    with pytest.raises(ValueError, match=r"2 imaging series with frames .*--dataset"):
        open_movie(_nwb_like(tmp_path / "two.nwb", two))
    with open_movie(tmp_path / "two.nwb", dataset="acquisition/b/data") as m:
        np.testing.assert_array_equal(m.read(0, T), movie)
    external = _nwb_like(tmp_path / "ext.nwb", {}, external=("acquisition/movie",))
    with pytest.raises(ValueError, match=r"ext.nwb: .*external files .*pass those files"):
        open_movie(external)


def test_nwb_movie_written_by_pynwb(tmp_path, movie):
    pynwb = pytest.importorskip("pynwb")
    from datetime import UTC, datetime

    from pynwb.ophys import OpticalChannel, TwoPhotonSeries

    nwb = pynwb.NWBFile("test", "id", datetime(2024, 1, 1, tzinfo=UTC))
    channel = OpticalChannel(name="ch", description="green", emission_lambda=510.0)
    plane = nwb.create_imaging_plane(
        name="plane",
        optical_channel=channel,
        description="test",
        device=nwb.create_device("scope"),
        excitation_lambda=500.0,
        imaging_rate=7.0,
        indicator="GCaMP",
        location="cortex",
    )
    nwb.add_acquisition(
        TwoPhotonSeries(name="movie", data=movie, imaging_plane=plane, rate=7.0, unit="a.u.")
    )
    with pynwb.NWBHDF5IO(str(tmp_path / "p.nwb"), "w") as io:
        io.write(nwb)
    with open_movie(tmp_path / "p.nwb", expected_hw=(H, W)) as m:
        assert m.format == "nwb" and m.dataset == "acquisition/movie/data"
        assert m.fs_hz == 7.0  # the series' rate
        np.testing.assert_array_equal(m.read(0, T), movie)


def test_hdf5_contiguous_datasets_are_read_as_raw_files(tmp_path, movie):
    import h5py

    from actsort_gpu.preprocess.reader import ChunkReader

    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["contiguous"] = movie
        f.create_dataset("gzip", data=movie, chunks=(4, H, W), compression="gzip")
        f["big_endian"] = movie.astype(">u2")
        f["float"] = movie.astype(np.float32) / 7
    for name, raw in (("contiguous", True), ("gzip", False), ("big_endian", False)):
        with open_movie(tmp_path / "m.h5", dataset=name) as m:
            assert (m._raw is not None) == raw, name
            _check(m, movie, "hdf5")
            got = np.concatenate([f.copy() for _, f in ChunkReader(m, 5)])
            np.testing.assert_array_equal(got, movie)
    with open_movie(tmp_path / "m.h5", dataset="float") as m:
        assert m._raw is not None and m.dtype == np.float32
        np.testing.assert_array_equal(m.read(0, T), movie.astype(np.float32) / 7)


def test_hdf5_raw_reads_are_checked_against_h5py(tmp_path, movie, monkeypatch):
    """A dataset whose offset does not point at its first frame is read by h5py."""
    import h5py

    from actsort_gpu.io import movies

    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["mov"] = movie
    real = movies.RawFileMovie.__init__

    def off_by_one_frame(self, path, shape, dtype, offset=0):
        real(self, path, (shape[0] - 1, *shape[1:]), dtype, offset + H * W * 2)

    monkeypatch.setattr(movies.RawFileMovie, "__init__", off_by_one_frame)
    with open_movie(tmp_path / "m.h5") as m:
        assert m._raw is None
        _check(m, movie, "hdf5")


def test_hdf5_dataset_choice_errors(tmp_path, movie):
    import h5py

    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = movie
        f["b"] = movie
    with pytest.raises(ValueError, match="2 3-D datasets.*--dataset"):
        open_movie(tmp_path / "two.h5")
    assert open_movie(tmp_path / "two.h5", dataset="b").shape == (T, H, W)
    with pytest.raises(KeyError, match="no dataset 'c'"):
        open_movie(tmp_path / "two.h5", dataset="c")
    with pytest.raises(ValueError, match="does not contain frames of 7 x 7"):
        open_movie(tmp_path / "two.h5", dataset="a", expected_hw=(7, 7))
    with h5py.File(tmp_path / "channel.h5", "w") as f:  # two channels: one must be chosen
        f["mov"] = np.stack([movie, movie], axis=-1)
    with pytest.raises(ValueError, match=r"no 3-D .* it holds mov \(12, 6, 9, 2\)"):
        open_movie(tmp_path / "channel.h5")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_array_and_group(tmp_path, movie, zarr_format):
    import zarr

    zarr.save_array(str(tmp_path / "a.zarr"), movie, zarr_format=zarr_format)
    _check(open_movie(tmp_path / "a.zarr"), movie, "zarr")
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=zarr_format)
    g.create_array("frames", data=movie.transpose(1, 2, 0), chunks=(H, W, 4))
    g.create_array("image", data=movie[0])
    m = open_movie(tmp_path / "g.zarr", expected_hw=(H, W))
    assert isinstance(m, ZarrMovie) and m.axis_order == "HWT" and m.dataset == "frames"
    _check(m, movie, "zarr")


def test_suite2p_bin(tmp_path, movie):
    data = movie.astype(np.int16)
    data.tofile(tmp_path / "data.bin")
    np.save(tmp_path / "ops.npy", {"Ly": H, "Lx": W, "nframes": T, "fs": 30.0})
    for path in (tmp_path / "data.bin", tmp_path):
        m = open_movie(path)
        assert isinstance(m, Suite2pBinMovie) and m.fs_hz == 30.0
        assert m.describe()["fs_hz"] == 30.0
        _check(m, data, "suite2p-bin")
        m.close()


def _caiman_mmap(folder, movie, order, dtype=np.float32, name=None):
    """The movie as CaImAn's save_memmap writes it: (H * W, T), pixel = row + col * H."""
    t, h, w = movie.shape
    path = folder / (name or f"Yr_d1_{h}_d2_{w}_d3_1_order_{order}_frames_{t}_.mmap")
    yr = np.memmap(path, dtype=dtype, mode="w+", shape=(h * w, t), order=order)
    yr[:] = np.reshape(movie, (t, h * w), order="F").T
    yr.flush()
    del yr
    return path


@pytest.mark.parametrize("order", ["C", "F"])
def test_caiman_mmap_both_orders(tmp_path, movie, order):
    from actsort_gpu.io.movies import CaimanMmapMovie
    from actsort_gpu.preprocess.reader import ChunkReader

    path = _caiman_mmap(tmp_path, movie, order)
    with open_movie(path) as m:
        assert isinstance(m, CaimanMmapMovie) and m.dtype == np.float32
        assert m.axis_order == {"F": "TWH", "C": "WHT"}[order]
        _check(m, movie.astype(np.float32), "caiman-mmap")
        got = np.concatenate([f.copy() for _, f in ChunkReader(m, 5)])
        np.testing.assert_array_equal(got, movie)
        if order == "F":  # CaImAn's own reading of the file: reshape(Yr.T, (T, H, W), 'F')
            yr = np.memmap(path, np.float32, "r", shape=(H * W, T), order="F")
            np.testing.assert_array_equal(np.reshape(yr.T, (T, H, W), order="F"), m.read(0, T))
    # CaImAn's GUI allows uint16 files; older names lack the final underscore
    other = _caiman_mmap(
        tmp_path, movie, order, np.uint16, f"m_d1_{H}_d2_{W}_d3_1_order_{order}_frames_{T}.mmap"
    )
    with open_movie(other) as m:
        assert m.dtype == np.uint16
        np.testing.assert_array_equal(m.read(0, T), movie)


def test_caiman_mmap_errors(tmp_path, movie):
    path = _caiman_mmap(tmp_path, movie, "F")
    truncated = tmp_path / f"t_d1_{H}_d2_{W}_d3_1_order_F_frames_{T}_.mmap"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(OSError, match=r"t_d1_.*do not hold 6 x 9 x 12 float32 .*truncated"):
        open_movie(truncated)
    volume = tmp_path / "v_d1_3_d2_3_d3_4_order_F_frames_2_.mmap"
    volume.write_bytes(bytes(3 * 3 * 4 * 2 * 4))
    with pytest.raises(ValueError, match=r"a volume of 4 planes"):
        open_movie(volume)
    nameless = tmp_path / "movie.mmap"
    nameless.write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match=r"movie.mmap: not a CaImAn memmap name"):
        open_movie(nameless)


def test_npy_c_and_fortran(tmp_path, movie):
    np.save(tmp_path / "c.npy", movie)
    np.save(tmp_path / "f.npy", np.asfortranarray(movie))
    for name in ("c.npy", "f.npy"):
        m = open_movie(tmp_path / name)
        assert isinstance(m, NpyMovie)
        _check(m, movie, "npy")


def test_truncated_tiff(tmp_path, movie):
    import tifffile

    chain = tmp_path / "chain.tif"  # an IFD before each frame, read from a page table
    with tifffile.TiffWriter(chain) as tw:
        for f in movie:
            tw.write(f, contiguous=False, metadata=None)
    for name, kw in (
        ("raw.tif", {"contiguous": True}),
        ("zlib.tif", {"compression": "zlib"}),
        ("chain.tif", None),
    ):
        if kw is not None:
            tifffile.imwrite(tmp_path / name, movie, **kw)
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) * 2 // 3])
        with (
            pytest.raises(OSError, match=f"{name}.*(truncated|corrupt)"),
            open_movie(tmp_path / name) as m,
        ):
            for _ in m.iter_chunks(4):
                pass


def test_truncated_suite2p_bin(tmp_path, movie):
    movie.astype(np.int16)[:-2].tofile(tmp_path / "data.bin")
    np.save(tmp_path / "ops.npy", {"Ly": H, "Lx": W, "nframes": T})
    with pytest.raises(OSError, match=r"data.bin: file is truncated.*last 2 frame"):
        open_movie(tmp_path / "data.bin")


def test_single_frame_and_unknown_format(tmp_path, movie):
    import tifffile

    tifffile.imwrite(tmp_path / "one.tif", movie[0])
    with pytest.raises(ValueError, match="single 6 x 9 image"):
        open_movie(tmp_path / "one.tif")
    np.save(tmp_path / "one.npy", movie[0])
    with pytest.raises(ValueError, match="single frame is not a movie"):
        open_movie(tmp_path / "one.npy")
    (tmp_path / "m.avi").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"m.avi: unknown movie format '.avi'; supported: tiff"):
        open_movie(tmp_path / "m.avi")
    with pytest.raises(FileNotFoundError, match="movie not found"):
        open_movie(tmp_path / "missing.tif")


def test_axis_order_rules():
    assert resolve_axis_order((10, 4, 4), None, matlab=True, where="x") == "TWH"
    assert resolve_axis_order((10, 4, 4), (4, 4), matlab=False, where="x") == "THW"
    assert resolve_axis_order((4, 5, 10), (5, 4), matlab=False, where="x") == "WHT"


def test_real_tiffs_open(shared_data):
    with open_movie(shared_data / "neurofinder_crop" / "movie.tif") as m:
        assert m.shape == (600, 256, 256) and m.dtype == np.uint16
        first = m.read(0, 2)
        assert first.std() > 0


@pytest.mark.skipif(not SMAPS.exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("release", [True, False])
def test_pixel_major_pages_leave_the_resident_set(tmp_path, monkeypatch, release):
    """Every window of a pixel-major file touches nearly all of its pages; they are released
    tile by tile, so none stays resident after a read (and they would without the release)."""
    from actsort_gpu.io.movies import pixel_major

    movie = np.random.default_rng(0).integers(0, 60000, (600, 40, 70), dtype=np.uint16)
    path = tmp_path / "f.npy"  # 3.4 MB, each pixel's 600 values (1,200 bytes) together
    np.save(path, np.asfortranarray(movie))
    if not release:
        monkeypatch.setattr(pixel_major.PixelMajorMovie, "_release", lambda self, lo, hi: None)
    with open_movie(path) as m:
        np.testing.assert_array_equal(m.read(100, 300), movie[100:300])
        out = np.empty((200, 40, 70), np.uint16)
        np.testing.assert_array_equal(m.read_into(300, 500, out), movie[300:500])
        resident = mapped_rss_kb(path)
    assert (resident == 0) if release else (resident > 1000)


def test_pixel_major_dtypes_and_errors(tmp_path, movie):
    from actsort_gpu.io.movies import PixelMajorMovie

    big = tmp_path / "big.npy"  # big-endian Fortran file: native values out
    np.save(big, np.asfortranarray(movie.astype(">i4")))
    with open_movie(big) as m:
        assert m.dtype == np.dtype("int32") and m.dtype.isnative
        _check(m, movie.astype(np.int32), "npy")
    raw = tmp_path / "pixels.raw"  # a (T, H, W) Fortran-order array after a 24-byte header
    raw.write_bytes(bytes(24) + np.asfortranarray(movie).tobytes(order="F"))
    with PixelMajorMovie(raw, movie.shape, movie.dtype, 24) as m:
        np.testing.assert_array_equal(m.read(0, T), movie)
    with pytest.raises(OSError, match=r"pixels.raw: .* needs .*truncated"):
        PixelMajorMovie(raw, (T + 1, H, W), movie.dtype, 24)


def test_pixel_major_refused_release_reads_on(tmp_path, movie, caplog):
    """A kernel that refuses madvise: the frames are still read, with one warning."""

    class Refusing:
        def __init__(self, mapped):
            self.mapped = mapped

        def __len__(self):
            return len(self.mapped)

        def madvise(self, *args):
            raise OSError(22, "Invalid argument")

        def close(self):
            self.mapped.close()

    np.save(tmp_path / "f.npy", np.asfortranarray(movie))
    with open_movie(tmp_path / "f.npy") as m:
        m._pixels._map = Refusing(m._pixels._map)
        with caplog.at_level(logging.WARNING):
            np.testing.assert_array_equal(m.read(0, T), movie)
            np.testing.assert_array_equal(m.read(2, 5), movie[2:5])
    assert sum("cannot release the pages" in r.getMessage() for r in caplog.records) == 1


def test_movies_with_axes_of_size_one(tmp_path):
    """A (T, H, W, 1) or (1, T, H, W) dataset (a channel or batch axis of size 1, as Keras-era
    pipelines write) is the (T, H, W) movie: HDF5 contiguous (read like a raw file) and
    chunked, and zarr; a MATLAB [H W 1 T] file is found in its reversed order too."""
    import h5py
    import zarr

    rng = np.random.default_rng(4)
    movie = rng.integers(0, 4000, (12, 7, 9), dtype=np.uint16)
    cases = {
        "last.h5": movie[..., None],
        "first.h5": movie[None],
        "middle.h5": movie[:, None],
    }
    for name, data in cases.items():
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("mov", data=data)
            f.create_dataset("chunked", data=data, chunks=True, compression="gzip")
        for dataset in ("mov", "chunked"):
            with open_movie(tmp_path / name, dataset=dataset) as m:
                assert m.shape == movie.shape, (name, dataset)
                np.testing.assert_array_equal(m.read(2, 9), movie[2:9])
                if dataset == "mov":
                    assert m._raw is not None  # contiguous: read at its offset
    with h5py.File(tmp_path / "only.h5", "w") as f:  # the only movie-shaped dataset is found
        f.create_dataset("data", data=movie[..., None])
        f.create_dataset("other", data=np.zeros((3, 4)))
    with open_movie(tmp_path / "only.h5") as m:
        np.testing.assert_array_equal(m.read(0, 12), movie)
    with h5py.File(tmp_path / "matlab.mat", "w", userblock_size=512) as f:
        f.create_dataset("Y", data=np.ascontiguousarray(movie.transpose(0, 2, 1))[:, None])
    with open_movie(tmp_path / "matlab.mat", expected_hw=(7, 9)) as m:  # [H W 1 T] in MATLAB
        np.testing.assert_array_equal(m.read(0, 12), movie)
    zarr.save_array(str(tmp_path / "m.zarr"), movie[:, None])
    with open_movie(tmp_path / "m.zarr") as m:
        np.testing.assert_array_equal(m.read(3, 12), movie[3:])
