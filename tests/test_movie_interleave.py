"""Movies whose pages interleave channels and planes (ScanImage's order, ImageJ hyperstacks):
one channel of one plane read as a movie, chosen by ingest from the flags or Suite2p's ops."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile

from actsort_gpu.cli import main
from actsort_gpu.io.movies import ArrayMovie, Interleave, InterleavedMovie, open_movie
from actsort_gpu.io.movies import interleave as interleave_mod
from actsort_gpu.store import SortStore
from actsort_gpu.synth import SynthConfig, synthesize


def test_page_arithmetic_is_suite2ps_slicing():
    """Frame t of (plane, channel) is page t * planes * channels + plane * channels +
    channel - 1; an incomplete last time point counts as numpy's [offset::stride] does."""
    for planes, channels in [(1, 2), (3, 1), (2, 3)]:
        for plane in range(planes):
            for channel in range(1, channels + 1):
                il = Interleave(planes=planes, plane=plane, channels=channels, channel=channel)
                for n_pages in range(1, 3 * il.stride + 2):
                    assert il.n_frames(n_pages) == len(range(n_pages)[il.offset :: il.stride])
    assert Interleave(planes=3, plane=2, channels=2, channel=2).offset == 5
    assert Interleave().is_plain and Interleave(channels=2).stride == 2
    for bad, message in [
        ({"channels": 2, "channel": 0}, "channel 0 outside 1..2"),
        ({"channels": 2, "channel": 3}, "channel 3 outside 1..2"),
        ({"planes": 2, "plane": 2}, "plane 2 outside 0..1"),
        ({"planes": 0}, "must be >= 1"),
        ({"channels": 1.5}, "whole number"),
    ]:
        with pytest.raises(ValueError, match=message):
            Interleave(**bad)
    assert Interleave.from_dict(Interleave(channels=2).as_dict()) == Interleave(channels=2)
    assert Interleave.from_dict(None) is None


def test_windows_of_one_channel_in_pieces(monkeypatch):
    """Any window equals the array's [offset::stride] slice, also when it is read in several
    pieces of bounded size and into a placed buffer."""
    rng = np.random.default_rng(0)
    pages = rng.integers(0, 60000, (47, 5, 6), dtype=np.uint16)
    monkeypatch.setattr(interleave_mod, "INNER_WINDOW_BYTES", 3 * 5 * 6 * 2 * 6)  # 3 frames
    il = Interleave(planes=2, plane=1, channels=3, channel=2)
    want = pages[il.offset :: il.stride]
    with InterleavedMovie(ArrayMovie(pages), il) as movie:
        assert movie.shape == want.shape and movie.dtype == pages.dtype
        for start, stop in [(0, len(want)), (1, 2), (2, 7), (len(want) - 1, len(want))]:
            np.testing.assert_array_equal(movie.read(start, stop), want[start:stop])
        got = np.concatenate([c.copy() for _, c in movie.iter_chunks(4, reuse_buffer=True)])
        np.testing.assert_array_equal(got, want)
        assert movie.describe()["interleave"] == il.as_dict()
        assert movie.describe()["pages"] == 47


def test_tiff_pages_and_hyperstacks(tmp_path):
    """A plain multi-page TIFF of interleaved pages and an ImageJ hyperstack (TZCYX) give the
    same channel and plane; a hyperstack without a choice, or with the wrong number of
    channels, is refused naming the file."""
    rng = np.random.default_rng(1)
    t, planes, channels = 9, 2, 3
    stack = rng.integers(0, 4000, (t, planes, channels, 8, 10), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "pages.tif", stack.reshape(-1, 8, 10))
    tifffile.imwrite(tmp_path / "hyper.tif", stack, imagej=True, metadata={"axes": "TZCYX"})
    tifffile.imwrite(tmp_path / "hyperz.tif", stack, compression="zlib", photometric="minisblack")
    with tifffile.TiffWriter(tmp_path / "chain.tif") as tw:  # an IFD before each page
        for page in stack.reshape(-1, 8, 10):
            tw.write(page, contiguous=False, metadata=None)
    il = Interleave(planes=planes, plane=1, channels=channels, channel=3)
    for name in ("pages.tif", "hyper.tif", "hyperz.tif", "chain.tif"):
        kw = {"interleave": il}
        with open_movie(tmp_path / name, **kw) as movie:
            np.testing.assert_array_equal(movie.read(0, t), stack[:, 1, 2])
    # the page chain and the compressed file read (decode) only the chosen pages
    from actsort_gpu.io.movies import TiffMovie

    for name in ("chain.tif", "hyperz.tif"):
        with TiffMovie(tmp_path / name, pages=True) as pages:
            out = np.empty((t, 8, 10), np.uint16)
            assert pages.read_pages_into(range(il.offset, t * il.stride, il.stride), out) is out
            np.testing.assert_array_equal(out, stack[:, 1, 2])
    with TiffMovie(tmp_path / "pages.tif") as contiguous:  # one run of bytes: the span is read
        assert contiguous.read_pages_into(range(0, 9, 2), np.empty((5, 8, 10), np.uint16)) is None
    with pytest.raises(ValueError, match=r"hyper.tif: .*2 planes and 3 channels interleaved"):
        open_movie(tmp_path / "hyper.tif")
    with pytest.raises(ValueError, match=r"hyper.tif: the TIFF holds 3 channels .*not 2"):
        open_movie(tmp_path / "hyper.tif", interleave=Interleave(planes=2, channels=2))
    with open_movie(tmp_path / "hyper.tif", interleave=Interleave()) as movie:
        assert movie.shape == (t * planes * channels, 8, 10)  # its pages, as they are
    # tifffile shapes a ScanImage file ZTCYX, Z outermost: in a fast-z recording Z counts
    # time points x planes, so only an ImageJ-style Z (after T) is a plane count
    from types import SimpleNamespace

    from actsort_gpu.io.movies import _check_stack

    fast_z = SimpleNamespace(path=tmp_path / "si.tif", stack=("ZTC", (400, 1, 2)))
    _check_stack(fast_z, Interleave(planes=4, plane=1, channels=2, channel=1))
    with pytest.raises(ValueError, match="holds 2 channels"):
        _check_stack(fast_z, Interleave(planes=4, channels=3))


@pytest.fixture(scope="module")
def two_channels(tmp_path_factory):
    """A small synthetic recording (Suite2p layout) and the same movie with a second, unrelated
    channel after each frame, as ScanImage writes two channels."""
    d = tmp_path_factory.mktemp("two_channels")
    cfg = SynthConfig(seed=5, n_frames=240, height=64, width=72, n_cells=10, n_false_positives=10)
    synthesize(d / "rec", cfg, formats=("suite2p",))
    green = tifffile.imread(d / "rec" / "movie.tif")
    red = np.random.default_rng(2).integers(100, 200, green.shape).astype(green.dtype)
    pages = np.stack([green, red], 1)
    tifffile.imwrite(d / "pages.tif", pages.reshape(-1, *green.shape[1:]))
    tifffile.imwrite(d / "hyper.tif", pages, imagej=True, metadata={"axes": "TCYX"})
    import h5py

    with h5py.File(d / "stack.h5", "w") as f:  # (T, C, H, W): a channel axis
        f.create_dataset("mov", data=pages, chunks=(16, 1, *green.shape[1:]))
    return d


def _ingest(*args) -> int:
    return main(["ingest", *args, "--no-progress"])


def test_ingest_reads_the_functional_channel(two_channels, tmp_path, capsys):
    """The flags choose the channel; the store equals one ingested from the single-channel
    movie (same frames, same snapshots after preprocess); the wrong channel fails the
    mean-image check; without a choice the error says how the frame counts relate."""
    d = two_channels
    plane = str(d / "rec" / "suite2p" / "plane0")
    ref = tmp_path / "ref.actsort"
    assert (
        _ingest("--movie", str(d / "rec" / "movie.tif"), "--extraction", plane, "--out", str(ref))
        == 0
    )
    assert main(["preprocess", str(ref), "--no-progress"]) == 0
    for name in ("pages.tif", "hyper.tif", "stack.h5"):
        out = tmp_path / f"{name}.actsort"
        flags = ["--channels", "2", "--channel", "1"]
        assert (
            _ingest("--movie", str(d / name), "--extraction", plane, "--out", str(out), *flags) == 0
        )
        movie = SortStore.open(out).attrs["movie"]
        assert movie["interleave"] == Interleave(channels=2).as_dict() and movie["n_frames"] == 240
        assert main(["preprocess", str(out), "--no-progress"]) == 0
        a, b = SortStore.open(ref), SortStore.open(out)
        for key in ("fov/max", "fov/mean", "fov/corr"):
            np.testing.assert_array_equal(a.read(key), b.read(key), err_msg=key)
        np.testing.assert_array_equal(a.snapshots(3), b.snapshots(3))
    # the Dask pieces reopen the movie with the channel the store recorded
    from actsort_gpu.preprocess import preprocess

    split = tmp_path / "split.actsort"
    shutil.copytree(tmp_path / "pages.tif.actsort", split)
    preprocess(split, device="cpu", workers=2)
    np.testing.assert_allclose(
        SortStore.open(split).read("fov/mean"), SortStore.open(ref).read("fov/mean"), rtol=1e-6
    )
    np.testing.assert_array_equal(
        SortStore.open(split).snapshots(3), SortStore.open(ref).snapshots(3)
    )
    capsys.readouterr()
    wrong = tmp_path / "wrong.actsort"
    args = ["--movie", str(d / "pages.tif"), "--extraction", plane, "--out", str(wrong)]
    assert _ingest(*args, "--channels", "2", "--channel", "2") == 1
    assert "do not look like the mean image" in capsys.readouterr().err
    assert _ingest(*args) == 1
    err = capsys.readouterr().err
    assert "has 480" in err and "2x the traces' frames" in err and "--channels" in err
    assert _ingest(*args[:-2], "--out", str(wrong), "--channel", "3") == 1
    assert "channel 3 outside 1..1" in capsys.readouterr().err
    # a single-channel movie with a channel chosen: every 2nd frame would look like 2x
    # temporal downsampling; refused
    one = ["--movie", str(d / "rec" / "movie.tif"), "--extraction", plane, "--out", str(wrong)]
    assert _ingest(*one, "--channels", "2", "--channel", "1") == 1
    assert "its 240 pages match the 240 trace frames" in capsys.readouterr().err
    assert not wrong.exists()


def test_ingest_takes_the_channel_from_suite2ps_ops(two_channels, tmp_path, caplog, capsys):
    """Suite2p run on the two-channel movie records nchannels and functional_chan in its
    ops: ingest then reads that channel without flags (and says so)."""
    d = two_channels
    plane = tmp_path / "suite2p" / "plane0"
    shutil.copytree(d / "rec" / "suite2p" / "plane0", plane)
    ops = np.load(plane / "ops.npy", allow_pickle=True).item()
    np.save(plane / "ops.npy", {**ops, "nchannels": 2, "functional_chan": 1}, allow_pickle=True)
    out = tmp_path / "auto.actsort"
    with caplog.at_level("INFO", logger="actsort_gpu.ingest"):
        assert (
            _ingest("--movie", str(d / "hyper.tif"), "--extraction", str(plane), "--out", str(out))
            == 0
        )
    assert "reading channel 1 of 2 of" in caplog.text
    assert main(["info", str(out)]) == 0
    assert "channel 1 of 2 of its 480 pages" in capsys.readouterr().out
    assert SortStore.open(out).attrs["movie"]["interleave"]["channels"] == 2
    # the raw single-channel movie with the same ops: every frame is read (no choice needed)
    out2 = tmp_path / "plain.actsort"
    assert (
        _ingest(
            "--movie", str(d / "rec" / "movie.tif"), "--extraction", str(plane), "--out", str(out2)
        )
        == 0
    )
    assert "interleave" not in SortStore.open(out2).attrs["movie"]


def test_ops_choose_the_channel_of_an_array_or_a_bruker_folder(two_channels, tmp_path, caplog):
    """An HDF5 movie with a channel axis and a Bruker folder of _Ch<k>_ files cannot be opened
    before a channel is chosen: ingest reads the extraction first and takes the channel its
    ops record (functional_chan), the same frames as with the flags."""
    d = two_channels
    plane = tmp_path / "suite2p" / "plane0"
    shutil.copytree(d / "rec" / "suite2p" / "plane0", plane)
    ops = np.load(plane / "ops.npy", allow_pickle=True).item()
    green = tifffile.imread(d / "rec" / "movie.tif")
    folder = tmp_path / "TSeries-002"
    folder.mkdir()
    for t in range(green.shape[0]):  # the functional channel is Ch2 here
        tifffile.imwrite(
            folder / f"TSeries-002_Cycle00001_Ch1_{t + 1:06d}.ome.tif", 150 + 0 * green[t]
        )
        tifffile.imwrite(folder / f"TSeries-002_Cycle00001_Ch2_{t + 1:06d}.ome.tif", green[t])
    snapshots = {}
    for name, movie, channel in [("h5", d / "stack.h5", 1), ("bruker", folder, 2)]:
        np.save(
            plane / "ops.npy",
            {**ops, "nchannels": 2, "functional_chan": channel},
            allow_pickle=True,
        )
        out = tmp_path / f"{name}.actsort"
        caplog.clear()
        with caplog.at_level("INFO", logger="actsort_gpu.ingest"):
            args = ["--movie", str(movie), "--extraction", str(plane), "--out", str(out)]
            assert _ingest(*args) == 0
        assert f"reading channel {channel} of 2 of {movie}," in caplog.text
        assert SortStore.open(out).attrs["movie"]["interleave"]["channel"] == channel
        assert main(["preprocess", str(out), "--no-progress"]) == 0
        snapshots[name] = SortStore.open(out).read("fov/mean")
    np.testing.assert_allclose(snapshots["h5"], snapshots["bruker"], rtol=1e-6)
    np.testing.assert_allclose(snapshots["h5"], green.mean(0), rtol=1e-4, atol=1e-3)


def test_ingest_warns_when_a_registered_extraction_gets_the_raw_movie(
    two_channels, tmp_path, caplog
):
    """Suite2p registered the frames with shifts up to 6 px (ops yoff / xoff): given another
    movie than its data.bin, ingest warns that snapshots will drift; given data.bin, or with
    shifts of 1 px, it does not."""
    d = two_channels
    plane = tmp_path / "suite2p" / "plane0"
    shutil.copytree(d / "rec" / "suite2p" / "plane0", plane)
    ops = np.load(plane / "ops.npy", allow_pickle=True).item()
    movie = tifffile.imread(d / "rec" / "movie.tif")
    movie.astype(np.int16).tofile(plane / "data.bin")
    shifts = np.zeros(movie.shape[0], np.int32)
    for top, expect in [(6, True), (1, False)]:
        shifts[17] = -top
        np.save(plane / "ops.npy", {**ops, "yoff": shifts, "xoff": 0 * shifts}, allow_pickle=True)
        for given, warned in [(d / "rec" / "movie.tif", expect), (plane / "data.bin", False)]:
            caplog.clear()
            out = tmp_path / f"s{top}_{given.suffix[1:]}.actsort"
            with caplog.at_level("WARNING", logger="actsort_gpu.ingest"):
                assert (
                    _ingest("--movie", str(given), "--extraction", str(plane), "--out", str(out))
                    == 0
                )
            assert ("snapshots will drift" in caplog.text) == warned, (top, given)
            if warned:
                assert "up to 6.0 px" in caplog.text and "data.bin" in caplog.text


def test_bruker_folder_of_channel_files(two_channels, tmp_path, capsys):
    """A folder of one-frame files per channel, as Bruker's PrairieView names them
    (``..._Cycle00001_Ch2_000001.ome.tif``): refused without a channel (naming how many files
    each holds); with --channels 2 --channel 2 the Ch2 files are the movie, in frame order,
    and preprocess reopens the same files."""
    d = two_channels
    green = tifffile.imread(d / "rec" / "movie.tif")
    red = np.random.default_rng(3).integers(100, 200, green.shape).astype(green.dtype)
    folder = tmp_path / "TSeries-001"
    folder.mkdir()
    for t in range(green.shape[0]):
        for ch, frames in ((1, red), (2, green)):
            tifffile.imwrite(
                folder / f"TSeries-001_Cycle00001_Ch{ch}_{t + 1:06d}.ome.tif", frames[t]
            )
    # PrairieView's XML: the frames' relativeTime (s) gives the frame rate; another XML not
    (folder / "notes.xml").write_text("<notes><Frame relativeTime='0'/></notes>")
    frames = "".join(
        f'<Frame relativeTime="{t / 29.75:.6f}" index="{t + 1}"><File channel="2"/></Frame>'
        for t in range(green.shape[0])
    )
    (folder / "TSeries-001.xml").write_text(
        '<?xml version="1.0"?><PVScan version="5.4"><PVStateShard><PVStateValue '
        'key="framePeriod" value="0.0336"/></PVStateShard><Sequence type="TSeries Timed '
        f'Element" cycle="1">{frames}</Sequence></PVScan>'
    )
    with pytest.raises(ValueError, match=r"2 channels \(Ch1: 240 files, Ch2: 240 files"):
        open_movie(folder)
    with open_movie(folder, interleave=Interleave(channels=2, channel=2)) as movie:
        np.testing.assert_array_equal(movie.read(0, movie.n_frames), green)
        assert movie.describe()["interleave"]["channel"] == 2
        assert movie.fs_hz == pytest.approx(29.75, rel=1e-4)
    plane = str(d / "rec" / "suite2p" / "plane0")
    out = tmp_path / "bruker.actsort"
    args = ["--movie", str(folder), "--extraction", plane, "--out", str(out)]
    assert _ingest(*args) == 1
    assert "--channels 2 --channel K" in capsys.readouterr().err
    assert _ingest(*args, "--channels", "2", "--channel", "2") == 0
    assert main(["preprocess", str(out), "--no-progress"]) == 0
    movie = SortStore.open(out).attrs["movie"]
    assert movie["interleave"]["channel"] == 2
    assert movie["fs_hz"] == pytest.approx(29.75, rel=1e-4)  # the movie's, not ops' 15 Hz
    from actsort_gpu.io.movies.tiff_folder import bruker_frame_rate

    xml = (folder / "TSeries-001.xml").read_text()
    (folder / "TSeries-001.xml").write_text(xml.replace("TSeries Timed", "TSeries ZSeries"))
    assert bruker_frame_rate(folder) is None  # a volume series: its frames are planes


def test_a_channel_or_plane_axis_of_an_array(tmp_path):
    """HDF5 / zarr movies with a channel or plane axis ((T, C, H, W), (T, H, W, C), NWB's
    volumetric (T, X, Y, Z)): the axis whose size is the count chosen reads the channel /
    plane; the store records the choice; without one they are refused (no 3-D dataset)."""
    import h5py
    import zarr

    rng = np.random.default_rng(6)
    four = rng.integers(0, 4000, (10, 3, 8, 9), dtype=np.uint16)  # (T, C, H, W)
    with h5py.File(tmp_path / "tchw.h5", "w") as f:
        f.create_dataset("mov", data=four)
        f.create_dataset("last", data=np.ascontiguousarray(four.transpose(0, 2, 3, 1)))
    il = Interleave(channels=3, channel=2)
    for name in ("mov", "last"):
        with open_movie(tmp_path / "tchw.h5", dataset=name, interleave=il) as movie:
            assert movie.shape == (10, 8, 9) and not isinstance(movie, InterleavedMovie)
            np.testing.assert_array_equal(movie.read(0, 10), four[:, 1])
            assert movie.describe()["interleave"] == il.as_dict()
            assert movie._raw is None  # a channel's frames are not one run of bytes
    with pytest.raises(ValueError, match="no 3-D"):
        open_movie(tmp_path / "tchw.h5")
    planes = Interleave(planes=3, plane=0)  # a (T, Z, H, W) zarr array: a plane
    zarr.save_array(str(tmp_path / "tzhw.zarr"), four)
    with open_movie(tmp_path / "tzhw.zarr", interleave=planes) as movie:
        np.testing.assert_array_equal(movie.read(2, 6), four[2:6, 0])
    # the plane from the array's axis, two channels interleaved in its frames
    both = Interleave(planes=3, plane=2, channels=2, channel=2)
    with open_movie(tmp_path / "tzhw.zarr", interleave=both) as movie:
        assert isinstance(movie, InterleavedMovie) and movie.shape == (5, 8, 9)
        np.testing.assert_array_equal(movie.read(0, 5), four[1::2, 2])
        assert movie.describe()["interleave"] == both.as_dict()


@pytest.mark.parametrize("layout", ["contiguous", "chain", "zlib", "one_frame_files"])
def test_tiff_folder_of_interleaved_parts(tmp_path, layout, monkeypatch):
    """ScanImage splits a long recording into parts whose pages continue the interleaving
    (a part may end inside a time point): a channel of the folder equals the pages' slice,
    read part by part, choosing pages, also in pieces smaller than a part."""
    rng = np.random.default_rng(7)
    pages = rng.integers(0, 4000, (46, 6, 7), dtype=np.uint16)  # 23 time points x 2 channels
    folder = tmp_path / layout
    folder.mkdir()
    if layout == "one_frame_files":
        parts = [pages[k : k + 1] for k in range(len(pages))]
    else:
        parts = [pages[:7], pages[7:30], pages[30:]]  # 7 pages: part 1 ends mid time point
    for k, part in enumerate(parts):
        name = folder / f"file_{k + 1:05d}.tif"
        if layout == "contiguous" or layout == "one_frame_files":
            tifffile.imwrite(name, part)
        else:
            with tifffile.TiffWriter(name) as tw:
                for page in part:
                    extra = {"compression": "zlib"} if layout == "zlib" else {}
                    tw.write(page, contiguous=False, metadata=None, **extra)
    monkeypatch.setattr(interleave_mod, "INNER_WINDOW_BYTES", 2 * 6 * 7 * 2 * 5)  # 5 frames
    for channel in (1, 2):
        il = Interleave(channels=2, channel=channel)
        with open_movie(folder, interleave=il) as movie:
            assert movie.shape == (23, 6, 7)
            np.testing.assert_array_equal(movie.read(0, 23), pages[channel - 1 :: 2])
            np.testing.assert_array_equal(movie.read(3, 11), pages[channel - 1 :: 2][3:11])


def test_rows_of_a_multi_roi_page(tmp_path, monkeypatch):
    """One ROI strip of ScanImage multi-ROI pages: the rows of the chosen pages, through the
    span of pages and through a page chain that decodes only the chosen pages, in pieces."""
    rng = np.random.default_rng(8)
    pages = rng.integers(0, 4000, (22, 30, 7), dtype=np.uint16)  # 11 time points x 2 channels
    tifffile.imwrite(tmp_path / "span.tif", pages)
    with tifffile.TiffWriter(tmp_path / "chain.tif") as tw:
        for page in pages:
            tw.write(page, contiguous=False, metadata=None)
    monkeypatch.setattr(interleave_mod, "INNER_WINDOW_BYTES", 2 * 30 * 7 * 2 * 4)  # 4 frames
    il = Interleave(channels=2, channel=2, rows=(9, 21))
    for name in ("span.tif", "chain.tif"):
        with open_movie(tmp_path / name, interleave=il) as movie:
            assert movie.shape == (11, 12, 7)
            np.testing.assert_array_equal(movie.read(0, 11), pages[1::2, 9:21])
            np.testing.assert_array_equal(movie.read(3, 10), pages[7:21:2, 9:21])
            assert movie.describe()["interleave"]["rows"] == [9, 21]
    with open_movie(tmp_path / "span.tif", interleave=Interleave(rows=(0, 5))) as movie:
        np.testing.assert_array_equal(movie.read(0, 22), pages[:, :5])
    assert Interleave.from_dict(il.as_dict()) == il
    assert "rows" not in Interleave(channels=2).as_dict()  # stores before rows read the same
    for bad, message in [((5, 5), "0 <= first < stop"), ((-1, 4), "0 <= first"), ((1,), "got")]:
        with pytest.raises(ValueError, match=message):
            Interleave(rows=bad)
    with pytest.raises(ValueError, match="rows 20:40 asked for, but its pages have 30 rows"):
        open_movie(tmp_path / "span.tif", interleave=Interleave(rows=(20, 40)))


def test_a_roi_strip_reads_only_its_rows(tmp_path, monkeypatch):
    """Of an uncompressed page chain, a contiguous TIFF or a .npy, a ROI strip is read as its
    rows' bytes of each chosen page (a mesoscope page of 4 ROIs: a quarter of the bytes), and
    one channel of large frames frame by frame; compressed pages are decoded and cut; a folder
    of parts passes the rows on; all equal the pages' rows."""
    from actsort_gpu.io import direct

    rng = np.random.default_rng(10)
    pages = rng.integers(0, 4000, (12, 4 * 64, 512), dtype=np.uint16)  # 6 time points x 2 ch
    with tifffile.TiffWriter(tmp_path / "chain.tif") as tw:
        for page in pages:
            tw.write(page, contiguous=False, metadata=None)
    with tifffile.TiffWriter(tmp_path / "zlib.tif") as tw:
        for page in pages:
            tw.write(page, contiguous=False, metadata=None, compression="zlib")
    tifffile.imwrite(tmp_path / "contiguous.tif", pages)  # frames one after another
    np.save(tmp_path / "pages.npy", pages)
    (tmp_path / "parts").mkdir()
    tifffile.imwrite(tmp_path / "parts" / "p1.tif", pages[:5])
    with tifffile.TiffWriter(tmp_path / "parts" / "p2.tif") as tw:
        for page in pages[5:]:
            tw.write(page, contiguous=False, metadata=None)
    read = []
    real = direct.FileBytes.read_into

    def counted(self, dest, pos, what=""):
        read.append(len(dest))
        return real(self, dest, pos, what)

    monkeypatch.setattr(direct.FileBytes, "read_into", counted)
    il = Interleave(channels=2, channel=2, rows=(128, 192))  # ROI 3 of channel 2
    strips = 9 * 64 * 512 * 2  # the bytes of the 9 strips the two reads below ask for
    for name in ("chain.tif", "zlib.tif", "parts", "contiguous.tif", "pages.npy"):
        read.clear()
        with open_movie(tmp_path / name, interleave=il) as movie:
            np.testing.assert_array_equal(movie.read(0, 6), pages[1::2, 128:192], err_msg=name)
            np.testing.assert_array_equal(movie.read(2, 5), pages[5:10:2, 128:192], err_msg=name)
        if name == "chain.tif":  # strips only (the first page's check reads a whole page)
            assert sum(read[1:]) == strips, read
        if name in ("contiguous.tif", "pages.npy"):  # strips at their offsets too
            assert sum(read) == strips, (name, read)
    # one channel of two, whole frames: each frame at its offset (the other channel unread)
    read.clear()
    with open_movie(tmp_path / "pages.npy", interleave=Interleave(channels=2)) as movie:
        np.testing.assert_array_equal(movie.read(0, 6), pages[0::2])
    assert sum(read) == 6 * pages[0].nbytes


def test_suite2p_mesoscope_ops_give_plane_and_rows():
    """Suite2p's mesoscope folders: nplanes counts planes x ROIs, iplane is the plane (the
    folder's planeJ number counts ROIs too, so it is not used), lines the ROI's rows."""
    from pathlib import Path

    from actsort_gpu.io.suite2p import _movie_layout

    base = {"nrois": 3, "nplanes": 6, "lines": np.arange(45, 109), "nchannels": 2}
    got = _movie_layout({**base, "iplane": 1, "functional_chan": 2}, Path("plane4"))
    assert got == Interleave(planes=2, plane=1, channels=2, channel=2, rows=(45, 109))
    assert _movie_layout(base, Path("plane4")) is None  # which plane: not said
    assert _movie_layout({**base, "nplanes": 4, "iplane": 0}, Path("plane1")) is None
    assert _movie_layout({"nrois": 1, "lines": [0, 1], "nplanes": 1}, Path("plane0")) is None


def test_ingest_reads_a_mesoscope_roi_from_suite2ps_ops(two_channels, tmp_path, caplog, capsys):
    """Suite2p's plane folder of one ROI of a multi-ROI recording records the ROI's lines of
    the page (ops nrois, lines; nplanes counts planes x ROIs): given the raw pages (two
    channels, three ROIs stacked with fly-to lines between), ingest reads that strip of the
    functional channel; given the ROI's own data.bin, whole frames; --rows does the same by
    hand."""
    d = two_channels
    plane = tmp_path / "suite2p" / "plane1"
    shutil.copytree(d / "rec" / "suite2p" / "plane0", plane)
    ops = np.load(plane / "ops.npy", allow_pickle=True).item()
    green = tifffile.imread(d / "rec" / "movie.tif")  # (240, 64, 72): ROI 2 of each page
    t, h, w = green.shape
    rng = np.random.default_rng(9)
    page = np.zeros((t, 2, 40 + 5 + h + 5 + 30, w), green.dtype)  # ROI 1, gap, ROI 2, gap, 3
    page[:] = rng.integers(100, 200, page.shape).astype(green.dtype)
    page[:, 0, 45 : 45 + h] = green
    tifffile.imwrite(tmp_path / "meso.tif", page.reshape(-1, *page.shape[2:]))
    lines = np.arange(45, 45 + h)
    meso = {**ops, "nrois": 3, "nplanes": 3, "iplane": 0, "lines": lines, "nchannels": 2}
    np.save(plane / "ops.npy", meso, allow_pickle=True)
    out = tmp_path / "meso.actsort"
    with caplog.at_level("INFO", logger="actsort_gpu.ingest"):
        args = ["--movie", str(tmp_path / "meso.tif"), "--extraction", str(plane)]
        assert _ingest(*args, "--out", str(out)) == 0
    assert "channel 1 of 2, rows 45:109 (one ROI of a multi-ROI page)" in caplog.text
    assert SortStore.open(out).attrs["movie"]["interleave"]["rows"] == [45, 109]
    assert main(["preprocess", str(out), "--no-progress"]) == 0
    np.testing.assert_allclose(SortStore.open(out).read("fov/mean"), green.mean(0), rtol=1e-4)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "rows 45:109" in capsys.readouterr().out
    # the ROI's own registered movie: every frame whole (the rows are of the raw page)
    green.astype(np.int16).tofile(plane / "data.bin")
    own = tmp_path / "own.actsort"
    assert (
        _ingest("--movie", str(plane / "data.bin"), "--extraction", str(plane), "--out", str(own))
        == 0
    )
    assert "interleave" not in SortStore.open(own).attrs["movie"]
    # by hand, from an extraction that does not say
    np.save(plane / "ops.npy", ops, allow_pickle=True)
    hand = tmp_path / "hand.actsort"
    flags = ["--rows", "45:109", "--channels", "2", "--channel", "1", "--out", str(hand)]
    assert _ingest(*args, *flags) == 0
    assert SortStore.open(hand).attrs["movie"]["interleave"]["rows"] == [45, 109]
    with pytest.raises(SystemExit):
        _ingest(*args, "--rows", "45", "--out", str(tmp_path / "bad.actsort"))
    assert "expected FIRST:STOP" in capsys.readouterr().err
