"""ScanImage TIFFs: the channels, volume pages and multi-ROI rows their settings record, read
from the BigTIFF header block or the pages' Software / Artist tags, and ingest filling in the
counts the user did not give."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile

from actsort_gpu.cli import main
from actsort_gpu.io.movies import Interleave, open_movie
from actsort_gpu.io.movies.scanimage import ScanImageRoi, saved_channel_count, scanimage_layout
from actsort_gpu.store import SortStore
from actsort_gpu.synth import SynthConfig, synthesize
from actsort_gpu.synth.scanimage import (
    scanimage_roi_groups,
    scanimage_settings,
    write_scanimage_tiff,
)


def _settings(**values) -> str:
    """Settings lines from keywords: ``hChannels__channelSave=2`` is hChannels.channelSave."""
    return scanimage_settings({key.replace("__", "."): value for key, value in values.items()})


def _rois(*rois: tuple[str, int, int], enable=None) -> str:
    return scanimage_roi_groups(rois, enable)


VOLUME = {
    "hChannels__channelSave": "[1;2]",
    "hStackManager__enable": "true",
    "hStackManager__actualNumSlices": 2,
    "hStackManager__numFramesPerVolume": 2,
    "hStackManager__numFramesPerVolumeWithFlyback": 3,
    "hStackManager__framesPerSlice": 1,
    "hStackManager__zs": "[0 20]",
    "hRoiManager__mroiEnable": 1,
    "hRoiManager__scanFrameRate": 30.5,
    "hRoiManager__scanVolumeRate": 10.1667,
}


def test_layouts_from_settings(tmp_path):
    """Channels, volume pages (planes, then flyback) and ROI strips, from the tags and from the
    header block alike; slice counts left over with the stack off are ignored; contradictions
    are refused or said."""
    pages = np.zeros((6, 60, 8), np.int16)
    rois = _rois(("ROI 1", 8, 20), ("ROI 2", 8, 20), ("off", 8, 99), ("ROI 3", 8, 10),
                 enable=(1, 1, 0, 1))  # fmt: skip
    write_scanimage_tiff(tmp_path / "tags.tif", pages, _settings(**VOLUME), rois)
    write_scanimage_tiff(tmp_path / "head.tif", pages, _settings(**VOLUME), rois, header=True)
    for name in ("tags.tif", "head.tif"):
        got = scanimage_layout(tmp_path / name)
        assert (got.channels_saved, got.pages_per_volume, got.planes) == ((1, 2), 3, 2), name
        # 50 rows of ROIs in 60: 5 fly-to lines between each two
        assert got.rois == (
            ScanImageRoi("ROI 1", (0, 20)),
            ScanImageRoi("ROI 2", (25, 45)),
            ScanImageRoi("ROI 3", (50, 60)),
        )
        assert "4 pages per volume" not in got.describe()
        assert "3 pages per volume (2 planes + 1 flyback frame)" in got.describe()
        assert got.fs_hz == 10.1667  # a volume's rate: each plane's
        with tifffile.TiffFile(tmp_path / name) as tif:  # its channelSave line alone
            assert saved_channel_count(tif) == 2
    folder = tmp_path / "parts"
    folder.mkdir()
    write_scanimage_tiff(folder / "rec_00002.tif", pages, _settings(hChannels__channelSave=1))
    write_scanimage_tiff(folder / "rec_00010.tif", pages, _settings(hChannels__channelSave="[1;2]"))
    assert scanimage_layout(folder).channels_saved == (1,)  # the first part, natural order
    tifffile.imwrite(tmp_path / "plain.tif", pages)
    assert scanimage_layout(tmp_path / "plain.tif") is None
    # ScanImage 5: the settings in each page's ImageDescription, 'scanimage.SI.' lines
    si5 = (
        "scanimage.SI.hChannels.channelSave = [1;2]\nscanimage.SI.hRoiManager.scanFrameRate = 30\n"
    )
    with tifffile.TiffWriter(tmp_path / "si5.tif") as tw:
        for page in pages:
            tw.write(page, contiguous=False, metadata=None, description=si5)
    got = scanimage_layout(tmp_path / "si5.tif")
    assert (got.channels_saved, got.fs_hz) == ((1, 2), 30.0)
    with tifffile.TiffFile(tmp_path / "si5.tif") as tif:
        assert saved_channel_count(tif) == 2

    def layout(**values):
        write_scanimage_tiff(tmp_path / "x.tif", pages, _settings(**values), rois)
        return scanimage_layout(tmp_path / "x.tif")

    stale = layout(hChannels__channelSave=2, hStackManager__enable="false",
                   hStackManager__numSlices=11)  # fmt: skip
    assert (stale.channels_saved, stale.pages_per_volume, stale.needs_choice) == ((2,), 1, False)
    assert stale.fs_hz is None
    assert layout(hChannels__channelSave=1, hRoiManager__scanFrameRate=30.5).fs_hz == 30.5
    assert layout(hChannels__channelSave=1, hRoiManager__scanFrameRate="Inf").fs_hz is None
    averaged = layout(
        hChannels__channelSave=1, hRoiManager__scanFrameRate=30.0, hScan2D__logAverageFactor=4
    )
    assert averaged.fs_hz == 7.5  # 4 frames averaged into each saved one
    older = layout(hChannels__channelSave="[1 3]", hFastZ__enable=1, hFastZ__numFramesPerVolume=5,
                   hFastZ__numDiscardFlybackFrames=1)  # fmt: skip
    assert (older.channels_saved, older.pages_per_volume, older.planes) == ((1, 3), 5, 4)
    slices = layout(hChannels__channelSave=1, hFastZ__enable="true", hStackManager__numSlices=3,
                    hFastZ__numDiscardFlybackFrames=1)  # fmt: skip
    assert (slices.pages_per_volume, slices.planes) == (4, 3)  # the flyback frame is written
    with pytest.raises(ValueError, match="x.tif: a z-stack of 20 frames at each of 3 depths"):
        layout(hChannels__channelSave=1, hStackManager__enable=1,
               hStackManager__actualNumSlices=3, hStackManager__framesPerSlice=20)  # fmt: skip
    with pytest.raises(ValueError, match="x.tif: .*give no plane count; give --planes"):
        layout(hChannels__channelSave=1, hStackManager__enable=1)
    write_scanimage_tiff(
        tmp_path / "x.tif",
        pages,
        _settings(**VOLUME),
        _rois(("a", 8, 40), ("b", 8, 12), ("c", 8, 5)),
    )
    misfit = scanimage_layout(tmp_path / "x.tif")
    assert misfit.rois == () and "40+12+5 rows do not fit pages of 60 rows" in misfit.rois_unknown
    with pytest.raises(ValueError, match="give --rows FIRST:STOP instead"):
        misfit.roi_rows(1)
    # ROI groups that are not what ScanImage writes: the rows are not known, nothing raises
    for groups, why in [
        ('{"RoiGroups": {"imagingRoiGroup": {"rois": [1, "x"]}}}', "unreadable"),
        ('{"RoiGroups": []}', "no imaging ROI group"),
        ('{"RoiGroups": {"imagingRoiGroup": {"rois": [{"scanfields": []}]}}}', "no readable"),
        ('{"RoiGroups": {"imagingRoiGroup": {"rois": [{"scanfields": '
         '{"pixelResolutionXY": [8, -5]}}]}}}', "several or no sizes"),
        ("{not json", "no imaging ROI group"),
    ]:  # fmt: skip
        write_scanimage_tiff(tmp_path / "x.tif", pages, _settings(**VOLUME), groups, header=True)
        assert why in scanimage_layout(tmp_path / "x.tif").rois_unknown, groups


def test_complete_fills_counts_and_asks_for_each_choice(tmp_path):
    pages = np.zeros((6, 60, 8), np.int16)
    rois = _rois(("ROI 1", 8, 20), ("ROI 2", 8, 20), ("ROI 3", 8, 10))
    write_scanimage_tiff(tmp_path / "si.tif", pages, _settings(**VOLUME), rois)
    si = scanimage_layout(tmp_path / "si.tif")
    none = dict(channels=None, channel=None, planes=None, plane=None, rows=None, roi=None)
    assert si.complete(**{**none, "channel": 2, "plane": 1, "roi": 2}) == Interleave(
        channels=2, channel=2, planes=3, plane=1, rows=(25, 45)
    )
    with pytest.raises(ValueError) as err:
        si.complete(**{**none, "channel": 2})
    assert "ScanImage saved channels 1, 2" in str(err.value)
    assert "choose --plane K (0..1) and --roi K (1..3) or --rows" in str(err.value)
    with pytest.raises(ValueError, match="plane 2 is a flyback frame"):
        si.complete(**{**none, "channel": 1, "plane": 2, "roi": 1})
    with pytest.raises(ValueError, match="--roi 4 outside 1..3"):
        si.complete(**{**none, "channel": 1, "plane": 0, "roi": 4})
    with pytest.raises(ValueError, match="--roi or --rows, not both"):
        si.complete(**{**none, "channel": 1, "plane": 0, "roi": 1, "rows": (0, 20)})
    # --channel counts the saved channels: ScanImage's channel numbers other than their
    # positions are refused naming both
    write_scanimage_tiff(tmp_path / "ch.tif", pages, _settings(hChannels__channelSave="[2;3]"))
    ch = scanimage_layout(tmp_path / "ch.tif")
    with pytest.raises(ValueError) as err:
        ch.complete(**{**none, "channel": 2})
    assert (
        "ScanImage saved channels 2, 3: --channel counts the saved channels in page order "
        "(1..2), so ScanImage's channel 2 is --channel 1 and --channel 2 is ScanImage's channel 3"
    ) in str(err.value)
    assert ch.complete(**{**none, "channel": 1}) == Interleave(channels=2, channel=1)
    write_scanimage_tiff(tmp_path / "ch.tif", pages, _settings(hChannels__channelSave=2))
    with pytest.raises(ValueError, match="ScanImage's channel 2 is --channel 1$"):
        scanimage_layout(tmp_path / "ch.tif").complete(**{**none, "channel": 2})
    # counts given by hand win (a warning says what the file records)
    hand = si.complete(**{**none, "channels": 2, "planes": 2, "plane": 1, "rows": (0, 20)})
    assert hand == Interleave(channels=2, channel=1, planes=2, plane=1, rows=(0, 20))


@pytest.fixture(scope="module")
def scanimage_recording(tmp_path_factory):
    """A synthetic recording (Suite2p layout) written as channel 2, plane 1, ROI 2 of ScanImage
    pages: 2 channels, volumes of 2 planes + 1 flyback frame, 3 ROIs stacked with 5 fly-to
    lines; the settings in the BigTIFF header block, an IFD before each page."""
    d = tmp_path_factory.mktemp("scanimage")
    cfg = SynthConfig(seed=3, n_frames=120, height=40, width=48, n_cells=6, n_false_positives=6)
    synthesize(d / "rec", cfg, formats=("suite2p",))
    green = tifffile.imread(d / "rec" / "movie.tif")
    t, h, w = green.shape
    rng = np.random.default_rng(4)
    pages = rng.integers(100, 3000, (t, 3, 2, 20 + 5 + h + 5 + 10, w)).astype(np.int16)
    pages[:, 1, 1, 25 : 25 + h] = green
    rois = _rois(("ROI 1", w, 20), ("ROI 2", w, h), ("ROI 3", w, 10))
    write_scanimage_tiff(
        d / "si.tif", pages.reshape(-1, *pages.shape[3:]), _settings(**VOLUME), rois, header=True
    )
    return d, green


def test_ingest_takes_the_counts_and_rows_from_scanimage(scanimage_recording, tmp_path, capsys):
    d, green = scanimage_recording
    plane = str(d / "rec" / "suite2p" / "plane0")
    base = ["ingest", "--movie", str(d / "si.tif"), "--extraction", plane, "--no-progress"]
    out = tmp_path / "roi2.actsort"
    assert main([*base, "--out", str(out), "--channel", "2", "--plane", "1", "--roi", "2"]) == 0
    movie = SortStore.open(out).attrs["movie"]
    assert movie["interleave"] == Interleave(channels=2, channel=2, planes=3, plane=1,
                                             rows=(25, 65)).as_dict()  # fmt: skip
    assert movie["n_frames"] == 120 and movie["fs_hz"] == 10.1667  # the volume rate
    assert main(["preprocess", str(out), "--no-progress"]) == 0
    np.testing.assert_allclose(SortStore.open(out).read("fov/mean"), green.mean(0), rtol=1e-4)
    with open_movie(d / "si.tif", interleave=Interleave(**movie["interleave"])) as reread:
        np.testing.assert_array_equal(reread.read(0, 120), green)
    capsys.readouterr()
    bad = tmp_path / "bad.actsort"
    for flags, message in [
        (
            [],
            "ScanImage saved channels 1, 2; 3 pages per volume (2 planes + 1 flyback frame); "
            "3 ROIs down each page",
        ),
        ([], "(the extraction's field of view is 40 x 48: ROI 2 has that many rows)"),
        (["--channel", "2"], "choose --plane K (0..1) and --roi K (1..3) or --rows"),
        (["--channel", "2", "--plane", "2", "--roi", "2"], "plane 2 is a flyback frame"),
        (["--channel", "2", "--plane", "1", "--roi", "1"], "40 x 48"),  # ROI 1: 20 rows
    ]:
        assert main([*base, "--out", str(bad), *flags]) == 1, flags
        err = capsys.readouterr().err
        assert message in err, (flags, err)
    assert not bad.exists()
    tifffile.imwrite(tmp_path / "plain.tif", green)
    plain = ["ingest", "--movie", str(tmp_path / "plain.tif"), "--extraction", plane]
    assert main([*plain, "--out", str(bad), "--roi", "1", "--no-progress"]) == 1
    assert "--roi 1 needs a ScanImage multi-ROI TIFF" in capsys.readouterr().err


def test_a_scanimage_movie_gives_the_frame_rate_of_the_traces(scanimage_recording, tmp_path):
    """Without --fs or a rate in the extraction, the movie's ScanImage frame rate is the
    traces'; a movie downsampled in time by 2 (block means) has half the traces' rate."""
    d, green = scanimage_recording
    plane = d / "rec" / "suite2p" / "plane0"
    ops = np.load(plane / "ops.npy", allow_pickle=True).item()
    own = tmp_path / "plane0"
    shutil.copytree(plane, own)
    np.save(own / "ops.npy", {k: v for k, v in ops.items() if k != "fs"}, allow_pickle=True)
    halves = green.reshape(-1, 2, *green.shape[1:]).mean(1).round().astype(np.int16)
    settings = _settings(hChannels__channelSave=1, hRoiManager__scanFrameRate=15.25)
    for name, frames, fs in (("full.tif", green, 15.25), ("half.tif", halves, 30.5)):
        write_scanimage_tiff(tmp_path / name, frames.astype(np.int16), settings)
        out = tmp_path / f"{name}.actsort"
        args = ["--movie", str(tmp_path / name), "--extraction", str(own), "--out", str(out)]
        assert main(["ingest", *args, "--allow-downsampling", "--no-progress"]) == 0
        assert SortStore.open(out).attrs["movie"]["fs_hz"] == fs, name


def test_info_says_what_a_movie_holds(scanimage_recording, tmp_path, capsys):
    """`actsort info MOVIE`: its pages, frame rate and, for a ScanImage file, the channels,
    volume pages and ROIs with the flags that choose one; a plain TIFF, a hyperstack and an
    HDF5 movie with a channel axis say what they hold too."""
    d, green = scanimage_recording
    assert main(["info", str(d / "si.tif")]) == 0
    out = capsys.readouterr().out
    assert "pages    720 of 80 x 48 int16" in out and "rate     10.1667 Hz" in out
    assert "layout   ScanImage saved channels 1, 2; 3 pages per volume" in out
    assert "choose   --channel K (1..2) and --plane K (0..1) and --roi K (1..3) or --rows" in out
    tifffile.imwrite(tmp_path / "plain.tif", green)
    tifffile.imwrite(tmp_path / "hyper.tif", np.stack([green, green], 1), imagej=True,
                     metadata={"axes": "TCYX"})  # fmt: skip
    assert main(["info", str(tmp_path / "plain.tif")]) == 0
    out = capsys.readouterr().out
    assert "pages    120 of 40 x 48 uint16" in out and "not recorded (ingest --fs)" in out
    assert "layout" not in out and "choose" not in out
    assert main(["info", str(tmp_path / "hyper.tif")]) == 0
    assert "axes     TC of sizes (120, 2) (a hyperstack)" in capsys.readouterr().out
    import h5py

    with h5py.File(tmp_path / "stack.h5", "w") as f:  # (T, C, H, W): a channel axis
        f.create_dataset("mov", data=np.stack([green, green], 1))
    assert main(["info", str(tmp_path / "stack.h5")]) == 0
    assert "layout   " in capsys.readouterr().out
    assert main(["info", str(tmp_path / "missing.actsort")]) == 1


def test_a_folder_of_scanimage_parts_split_inside_a_time_point(tmp_path):
    """ScanImage splits a long recording into files whose pages continue the interleaving (a
    part may end inside a time point): each part's pages are counted without walking them,
    and a channel of the folder equals the pages' slice."""
    rng = np.random.default_rng(12)
    pages = rng.integers(0, 3000, (46, 10, 12)).astype(np.int16)  # 23 time points x 2 channels
    settings = _settings(hChannels__channelSave="[1;2]")
    folder = tmp_path / "parts"
    folder.mkdir()
    for k, part in enumerate((pages[:7], pages[7:30], pages[30:])):
        write_scanimage_tiff(folder / f"scan_{k + 1:05d}.tif", part, settings, header=True)
    assert scanimage_layout(folder).channels_saved == (1, 2)
    for channel in (1, 2):
        il = Interleave(channels=2, channel=channel)
        with open_movie(folder, interleave=il) as movie:
            assert movie.shape == (23, 10, 12)
            np.testing.assert_array_equal(movie.read(0, 23), pages[channel - 1 :: 2])
