"""What a ScanImage TIFF says about its pages: the channels it saved, the pages of each volume
(planes, then flyback frames) and the ROIs stacked down a multi-ROI (mesoscope) page.

ScanImage 2016 and later write their settings into every file: as a block after the BigTIFF
header (tifffile's ``scanimage_metadata``), and in each page's Software tag (MATLAB lines,
``SI.hChannels.channelSave = [1;2]``) and Artist tag (the ROI groups, JSON); ScanImage 5 wrote
``scanimage.SI.`` lines into the ImageDescription. :func:`scanimage_layout` reads whichever the
file has (the first file of a folder of parts), so that ingest can fill in what the user did
not say: ``--channel 2`` needs no ``--channels``, ``--plane 1`` no ``--planes``, and ``--roi 3``
finds the ROI's rows.

Pages follow ScanImage's order (:mod:`.interleave`): channels fastest, then the volume's pages,
then time. A volume (fast-z, ``hStackManager.enable`` or ``hFastZ.enable``) holds its planes
and then its flyback frames (``numFramesPerVolumeWithFlyback - numFramesPerVolume``); the
count with flyback is the page stride, as Suite2p's ``nplanes`` with ``ignore_flyback``. The
slice counts are read only when the stack is on (they may be left over from an earlier setup).
A multi-ROI page stacks its ROIs top to bottom in the ROI group's order, each
``pixelResolutionXY[1]`` rows, with the same number of fly-to lines between neighbours (the
page's spare rows shared out, as Suite2p's mesoscope reader and scanreader find them).
"""

from __future__ import annotations

import json
import logging
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from .interleave import Interleave

__all__ = ["ScanImageLayout", "ScanImageRoi", "scanimage_layout"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanImageRoi:
    """One ROI of a multi-ROI page: its name and its rows of the page, [first, stop)."""

    name: str
    rows: tuple[int, int]


@dataclass(frozen=True)
class ScanImageLayout:
    """The page layout a ScanImage file records.

    channels_saved : the channel numbers saved, in page order (ScanImage's ``channelSave``)
    pages_per_volume : pages of each channel per time point (planes + flyback frames; 1 when
        the recording is not a volume)
    planes : imaging planes of a volume (the first ``planes`` of its pages)
    rois : the ROIs of a multi-ROI page, top to bottom; () when multi-ROI is off
    rois_unknown : why a multi-ROI page's rows could not be worked out (None when they could,
        or when multi-ROI is off)
    fs_hz : time points per second of one channel of one plane (``scanVolumeRate`` of a
        volume, else ``scanFrameRate`` over ``logAverageFactor``, the frames averaged into each
        saved one; a multi-ROI frame holds every ROI), None when not given
    """

    path: Path
    channels_saved: tuple[int, ...]
    pages_per_volume: int = 1
    planes: int = 1
    rois: tuple[ScanImageRoi, ...] = ()
    rois_unknown: str | None = None
    fs_hz: float | None = None

    @property
    def channels(self) -> int:
        return len(self.channels_saved)

    @property
    def multi_roi(self) -> bool:
        """Several ROIs down each page (or ones whose rows are not known)."""
        return len(self.rois) > 1 or self.rois_unknown is not None

    @property
    def needs_choice(self) -> bool:
        """Whether a frame of the extraction is one part of each time point's pages."""
        return self.channels > 1 or self.pages_per_volume > 1 or self.multi_roi

    def describe(self) -> str:
        """'ScanImage saved channels 1, 2; 4 pages per volume (3 planes + 1 flyback frame)'."""
        numbers = ", ".join(map(str, self.channels_saved))
        parts = [f"ScanImage saved channel{'s' if self.channels > 1 else ''} {numbers}"]
        if self.pages_per_volume > 1:
            flyback = self.pages_per_volume - self.planes
            parts.append(
                f"{self.pages_per_volume} pages per volume ({self.planes} planes"
                + (f" + {flyback} flyback frame{'s' if flyback > 1 else ''})" if flyback else ")")
            )
        if self.rois:
            strips = ", ".join(
                f"{k} {r.name!r} rows {r.rows[0]}:{r.rows[1]}" for k, r in enumerate(self.rois, 1)
            )
            parts.append(f"{len(self.rois)} ROIs down each page ({strips})")
        elif self.rois_unknown is not None:
            parts.append(f"multi-ROI pages whose ROI rows are not known ({self.rois_unknown})")
        return "; ".join(parts)

    def roi_rows(self, roi: int) -> tuple[int, int]:
        """The rows of ROI ``roi`` (1-based, top to bottom)."""
        if not self.rois:
            why = self.rois_unknown or "multi-ROI imaging is off"
            raise ValueError(
                f"{self.path}: --roi {roi} needs the rows of a multi-ROI page, which the file "
                f"does not give ({why}); give --rows FIRST:STOP instead"
            )
        if not 1 <= roi <= len(self.rois):
            raise ValueError(
                f"{self.path}: --roi {roi} outside 1..{len(self.rois)} ({self.describe()})"
            )
        return self.rois[roi - 1].rows

    def _check_channel_number(self, channel: int) -> None:
        """``--channel`` counts the saved channels (1-based, page order): refuse one that names
        another saved channel by ScanImage's number (saved channels 2 and 3: ``--channel 2``
        would read ScanImage's channel 3)."""
        saved = self.channels_saved
        if channel in saved and saved.index(channel) + 1 != channel:
            numbers = ", ".join(map(str, saved))
            raise ValueError(
                f"{self.path}: ScanImage saved channels {numbers}: --channel counts the saved "
                f"channels in page order (1..{len(saved)}), so ScanImage's channel {channel} "
                f"is --channel {saved.index(channel) + 1}"
                + (
                    f" and --channel {channel} is ScanImage's channel {saved[channel - 1]}"
                    if channel <= len(saved)
                    else ""
                )
            )

    def choices(self, *, channels=None, channel=None, planes=None, plane=None, rows=None) -> list:
        """The flags still to give, each with its range (['--channel K (1..2)', ...]), for the
        parts the file holds several of and the choices given leave open."""
        roi_flag = f"--roi K (1..{len(self.rois)}) or --rows" if self.rois else "--rows"
        return [
            flag
            for flag, chosen, several in (
                (f"--channel K (1..{self.channels})", channel, self.channels > 1 and not channels),
                (
                    f"--plane K (0..{self.planes - 1})",
                    plane,
                    self.pages_per_volume > 1 and not planes,
                ),
                (roi_flag, rows, self.multi_roi),
            )
            if several and chosen is None
        ]

    def complete(
        self,
        *,
        channels: int | None,
        channel: int | None,
        planes: int | None,
        plane: int | None,
        rows: tuple[int, int] | None,
        roi: int | None,
    ) -> Interleave:
        """The :class:`Interleave` of the choices given, with the counts the file records for
        those not given. Each part the file holds several of must be chosen (a channel, a
        plane, a ROI): picking the first one unasked would read another recording than the
        extraction's without a word."""
        if roi is not None:
            if rows is not None:
                raise ValueError("give --roi or --rows, not both")
            rows = self.roi_rows(roi)
        if channel is not None and channels is None:
            self._check_channel_number(channel)
        if planes is not None and planes != self.pages_per_volume:
            log.warning(
                "%s: --planes %d given, but %s; reading %d pages per time point as asked",
                self.path,
                planes,
                self.describe(),
                planes,
            )
        missing = self.choices(
            channels=channels, channel=channel, planes=planes, plane=plane, rows=rows
        )
        if missing:
            raise ValueError(f"{self.path}: {self.describe()}: choose {' and '.join(missing)}")
        if plane is not None and planes is None and plane >= self.planes:
            raise ValueError(
                f"{self.path}: plane {plane} is a flyback frame ({self.describe()}); the "
                f"planes are 0..{self.planes - 1}"
            )
        return Interleave(
            channels=channels or self.channels,
            channel=1 if channel is None else channel,
            planes=planes or self.pages_per_volume,
            plane=0 if plane is None else plane,
            rows=rows,
        )


def scanimage_layout(path: str | Path) -> ScanImageLayout | None:
    """The layout a ScanImage TIFF records (a folder: its first TIFF in name order), None when
    the path is not a ScanImage TIFF or records no channels. Raises ``ValueError`` naming the
    file when its settings contradict each other (a volume whose planes exceed its pages, a
    slow z-stack of several frames per slice: not a time series of planes)."""
    import tifffile

    path = Path(path)
    first = _first_tiff(path)
    if first is None:
        return None
    try:
        tif = tifffile.TiffFile(first)
    except (tifffile.TiffFileError, OSError, ValueError, IndexError):
        return None  # the movie reader says what is wrong with the file
    with tif:
        try:
            if not tif.is_scanimage:
                return None
            page_height = tif.pages.first.shape[0]
        except (tifffile.TiffFileError, OSError, ValueError, IndexError):
            return None
        try:
            settings, roi_groups = _settings(tif)
        except Exception as exc:  # noqa: BLE001 - unreadable settings only lose the defaults
            log.warning(
                "%s: its ScanImage settings are unreadable (%s); give --channels / --planes / "
                "--rows by hand",
                first,
                exc,
            )
            return None
    channels = _numbers(settings.get("SI.hChannels.channelSave"))
    if not channels:
        return None
    pages, planes = _volume(first, settings)
    rois, unknown = (), None
    if _true(settings.get("SI.hRoiManager.mroiEnable")):
        rois, unknown = _roi_strips(roi_groups, page_height, planes)
    rate = settings.get(
        "SI.hRoiManager.scanVolumeRate" if pages > 1 else "SI.hRoiManager.scanFrameRate"
    )
    fs_hz = float(rate) if _number(rate) and 0 < rate < float("inf") else None
    averaged = _whole(settings, "SI.hScan2D.logAverageFactor") or 1
    if fs_hz is not None and pages == 1:  # frames averaged in blocks before they were saved
        fs_hz /= averaged
    return ScanImageLayout(first, tuple(channels), pages, planes, rois, unknown, fs_hz)


#: ScanImage's saved channels, in its settings text
_CHANNEL_SAVE = re.compile(r"SI\.hChannels\.channelSave = ([^\r\n]*)")


def saved_channel_count(tif) -> int:
    """How many channels an open ScanImage TIFF saved (its pages interleave them), 1 when it
    does not say. Reads only the ``channelSave`` line (the first page's Software tag or, as
    ScanImage 5 wrote it, its ImageDescription, else the header block), not every setting: a
    folder of thousands of parts asks it of each part, and parsing all of a file's settings
    takes ~40 ms per 100 KB of them."""
    from tifffile.tifffile import matlabstr2py

    first = tif.pages.first
    match = _CHANNEL_SAVE.search(first.software) or _CHANNEL_SAVE.search(first.description)
    if match is None and tif.is_bigtiff:
        fh = tif.filehandle
        fh.seek(16)
        head = fh.read(16)
        if len(head) == 16:
            magic, _, size, _ = struct.unpack("<IIII", head)
            if magic == 0x07030301:
                match = _CHANNEL_SAVE.search(fh.read(size).decode("utf-8", "replace"))
    if match is None:
        return 1
    try:
        return max(1, len(_numbers(matlabstr2py(match.group(1)))))
    except Exception:  # noqa: BLE001 - an unreadable value: the pages as they are
        return 1


def _first_tiff(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix.lower() in (".tif", ".tiff") else None
    if not path.is_dir():
        return None
    from .tiff_folder import tiff_files

    files = tiff_files(path)
    return files[0] if files else None


#: a settings line: ``SI.hChannels.channelSave = [1;2]`` (ScanImage 5: ``scanimage.SI.``)
_LINE = re.compile(r"^\s*(?:scanimage\.)?(SI\.[\w.]+)\s*=\s*(.*?)\s*$")


def _settings(tif) -> tuple[dict, dict | None]:
    """(The settings as {'SI.x.y': value}, the ROI groups or None), from the header block, or
    else from the first page's Software / Artist tags or its ImageDescription."""
    meta = tif.scanimage_metadata or {}
    settings = meta.get("FrameData") or {}
    roi_groups = meta.get("RoiGroups")
    page = tif.pages.first
    if not settings:
        text = page.software if page.software.startswith("SI.") else page.description
        settings = _parse_lines(text)
    if roi_groups is None:
        artist = page.tags.valueof(315)  # Artist: {"RoiGroups": {...}}
        if isinstance(artist, str) and artist.lstrip().startswith("{"):
            try:
                roi_groups = json.loads(artist).get("RoiGroups")
            except (ValueError, AttributeError):
                roi_groups = None
    return settings, roi_groups


def _parse_lines(text: str) -> dict:
    from tifffile.tifffile import matlabstr2py

    settings = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            try:
                settings[match.group(1)] = matlabstr2py(match.group(2))
            except Exception:  # one unreadable value must not hide the others
                settings[match.group(1)] = match.group(2)
    return settings


def _true(value) -> bool:
    return value is True or (isinstance(value, (int, float)) and value == 1) or value == "true"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(value) -> list[int]:
    """[1, 2] from MATLAB's 1, [1 2] or [1;2] (a column: [[1], [2]])."""
    if _number(value):
        return [int(value)]
    if isinstance(value, list):
        return [n for item in value for n in _numbers(item)]
    return []


def _whole(settings: dict, *keys: str) -> int | None:
    """The first of ``keys`` that holds a whole number (ScanImage writes Inf and [] too)."""
    for key in keys:
        value = settings.get(key)
        if key.endswith(".zs"):  # the depths: one number, or a list of them
            value = len(_numbers(value)) or None
        if _number(value) and value == int(value) and value >= 1:  # Inf and NaN are not
            return int(value)
    return None


def _volume(path: Path, settings: dict) -> tuple[int, int]:
    """(Pages per volume with the flyback frames, imaging planes); (1, 1) when not a volume."""
    stack = settings.get("SI.hStackManager.enable", settings.get("SI.hFastZ.enable"))
    if not _true(stack):
        return 1, 1
    planes = _whole(
        settings,
        "SI.hStackManager.actualNumSlices",
        "SI.hStackManager.numFramesPerVolume",
        "SI.hStackManager.zs",
        "SI.hStackManager.numSlices",
    )
    per_slice = settings.get("SI.hStackManager.framesPerSlice", 1)
    if isinstance(per_slice, (int, float)) and 1 < per_slice < float("inf") and (planes or 1) > 1:
        raise ValueError(
            f"{path}: a z-stack of {int(per_slice)} frames at each of {planes} depths "
            "(ScanImage's framesPerSlice), not a time series of planes"
        )
    pages = _whole(
        settings, "SI.hStackManager.numFramesPerVolumeWithFlyback", "SI.hFastZ.numFramesPerVolume"
    )
    # the flyback frames are written at the end of each volume, whatever discardFlybackFrames
    # says (roiextractors found it True in files that hold them)
    flyback = _whole(settings, "SI.hFastZ.numDiscardFlybackFrames") or 0
    if planes is None:
        planes = pages - flyback if pages is not None and pages > flyback else None
    if planes is None:
        raise ValueError(
            f"{path}: ScanImage's stack is on but its settings give no plane count; give "
            "--planes N (the pages of each volume) and --plane K"
        )
    pages = pages or planes + flyback
    if pages < planes:
        raise ValueError(
            f"{path}: ScanImage's settings give {planes} planes but {pages} pages per volume; "
            "give --planes N (the pages of each volume) and --plane K"
        )
    return pages, planes


def _as_list(value) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def _roi_strips(
    roi_groups: dict | None, page_height: int, planes: int
) -> tuple[tuple[ScanImageRoi, ...], str | None]:
    """(The ROIs' strips of the page, None), or ((), why they are not known)."""
    group = roi_groups.get("imagingRoiGroup") if isinstance(roi_groups, dict) else None
    entries = _as_list(group.get("rois")) if isinstance(group, dict) else []
    if not all(isinstance(r, dict) for r in entries):
        return (), "its ROI groups are unreadable"
    rois = [r for r in entries if r.get("enable", 1) not in (0, False)]
    if not rois:
        return (), "the file holds no imaging ROI group"
    heights = []
    for roi in rois:
        fields = _as_list(roi.get("scanfields"))
        if not fields or not all(isinstance(f, dict) for f in fields):
            return (), f"ROI {roi.get('name')!r} has no readable scanfield"
        sizes = {tuple(_numbers(f.get("pixelResolutionXY"))) for f in fields}
        size = next(iter(sizes))
        if len(sizes) != 1 or len(size) != 2 or min(size) < 1:
            return (), f"ROI {roi.get('name')!r} has scanfields of several or no sizes"
        if planes > 1 and _true(roi.get("discretePlaneMode")):
            return (), f"ROI {roi.get('name')!r} is imaged in some planes only"
        heights.append(size[1])
    spare = page_height - sum(heights)
    gaps = len(heights) - 1
    if spare < 0 or (gaps and spare % gaps) or (not gaps and spare):
        return (), (
            f"ROIs of {'+'.join(map(str, heights))} rows do not fit pages of {page_height} rows "
            "with equal fly-to lines between them"
        )
    fly_to = spare // gaps if gaps else 0
    strips, first = [], 0
    for roi, height in zip(rois, heights):
        strips.append(ScanImageRoi(str(roi.get("name") or ""), (first, first + height)))
        first += height + fly_to
    return tuple(strips), None
