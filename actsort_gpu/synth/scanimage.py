"""Pages written as ScanImage writes them, for tests and fault cases of the ScanImage reader
(``io.movies.scanimage``): the settings as MATLAB lines, the ROI groups as JSON, in a BigTIFF
header block (ScanImage 2016 and later) or in the first page's Software / Artist tags, with an
IFD before each page."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["scanimage_settings", "scanimage_roi_groups", "write_scanimage_tiff"]

#: ScanImage's header block: magic number, then the version (3 or 4)
_MAGIC, _VERSION = 0x07030301, 3


def scanimage_settings(values: Mapping[str, object]) -> str:
    """ScanImage's settings lines: ``{"hChannels.channelSave": "[1;2]"}`` becomes
    ``SI.hChannels.channelSave = [1;2]`` (values written as MATLAB text)."""
    lines = ["SI.LINE_FORMAT_VERSION = 1", "SI.VERSION_MAJOR = '2022'"]
    return "\n".join(lines + [f"SI.{key} = {value}" for key, value in values.items()])


def scanimage_roi_groups(rois: Sequence[tuple[str, int, int]], enabled=None) -> str:
    """The ROI groups as JSON: ROIs (name, width, height) of one scanfield each, in the order
    they lie down the page; ``enabled`` : one flag per ROI (default all on)."""
    enabled = [True] * len(rois) if enabled is None else list(enabled)
    entries = [
        {
            "name": name,
            "enable": int(on),
            "discretePlaneMode": 0,
            "scanfields": {"pixelResolutionXY": [width, height], "centerXY": [0, k]},
        }
        for k, ((name, width, height), on) in enumerate(zip(rois, enabled))
    ]
    return json.dumps({"RoiGroups": {"imagingRoiGroup": {"rois": entries}}})


def write_scanimage_tiff(
    path: str | Path,
    pages: np.ndarray,
    settings: str,
    roi_groups: str | None = None,
    *,
    header: bool = False,
) -> None:
    """Write ``pages`` ((n_pages, H, W), in ScanImage's page order) with an IFD before each.

    header : put the settings and ROI groups in the BigTIFF header block (the first page's
        Software tag then holds one line only), pages as int16, as ScanImage 2016+ does;
        False: a BigTIFF of the pages' dtype without the block, the settings in every page's
        Software tag and the ROI groups in its Artist tag (a classic TIFF tagged so is read by
        tifffile at the spacing of its first two pages, as ScanImage 5 files, which this
        writer's pages do not keep).
    """
    path = Path(path)
    if header:
        path.write_bytes(_bigtiff_with_header(pages, settings, roi_groups or "{}"))
        return
    import tifffile

    artist = [(315, "s", 0, roi_groups, True)] if roi_groups else []
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for page in pages:  # every page carries the tags, as ScanImage writes them
            tw.write(page, contiguous=False, metadata=None, software=settings, extratags=artist)


def _bigtiff_with_header(pages: np.ndarray, settings: str, roi_groups: str) -> bytes:
    frame_bytes, roi_bytes = settings.encode() + b"\0", roi_groups.encode()
    buf = bytearray(struct.pack("<2sHHHQ", b"II", 43, 8, 0, 0))  # first IFD: patched below
    buf += struct.pack("<IIII", _MAGIC, _VERSION, len(frame_bytes), len(roi_bytes))
    buf += frame_bytes + roi_bytes
    software = b"SI.LINE_FORMAT_VERSION = 1\0"
    _, height, width = pages.shape
    next_ifd = 8  # where the offset of the next IFD goes
    for page in np.asarray(pages).astype("<i2"):
        software_at = len(buf)
        buf += software
        ifd = len(buf)
        struct.pack_into("<Q", buf, next_ifd, ifd)
        tags = [  # (tag, type, count, value); types LONG 4, SHORT 3, LONG8 16, ASCII 2
            (256, 4, 1, width),
            (257, 4, 1, height),
            (258, 3, 1, 16),  # bits per sample
            (259, 3, 1, 1),  # no compression
            (262, 3, 1, 1),  # black is zero
            (273, 16, 1, ifd + 8 + 20 * 11 + 8),  # the page's data, after its IFD
            (277, 3, 1, 1),
            (278, 4, 1, height),
            (279, 16, 1, page.nbytes),
            (305, 2, len(software), software_at),
            (339, 3, 1, 2),  # signed integers
        ]
        buf += struct.pack("<Q", len(tags))
        for tag in tags:
            buf += struct.pack("<HHQQ", *tag)
        next_ifd = len(buf)
        buf += struct.pack("<Q", 0)
        buf += page.tobytes()
    return bytes(buf)
