"""Extraction readers: each real on-disk layout gives the same footprints, traces, metrics."""

from __future__ import annotations

from datetime import UTC

import numpy as np
import pytest
import scipy.sparse as sp

from actsort_gpu.config import IngestConfig
from actsort_gpu.io.candidates import RowBlockTraces
from actsort_gpu.io.extraction import MissingShapeError, detect_extraction_format, read_extraction

N, H, W, T = 4, 5, 7, 30  # H != W: a transposed reader cannot pass


@pytest.fixture()
def truth():
    rng = np.random.default_rng(1)
    fp = np.zeros((N, H, W), np.float32)
    fp[0, 1:3, 2:5] = rng.random((2, 3)) + 0.5
    fp[1, 0, 0] = 2.0  # a corner pixel: catches row/col or order mix-ups
    fp[2, 4, 6] = 3.0
    fp[2, 3, 1] = 1.5
    fp[3, 2, :] = 0.25
    traces = rng.standard_normal((N, T)).astype(np.float32)
    image = rng.random((H, W)).astype(np.float32)
    return fp, traces, image


def _same(c, fp, traces, fmt):
    assert c.source_format == fmt and (c.height, c.width) == (H, W)
    assert sp.isspmatrix_csr(c.footprints) and c.footprints.dtype == np.float32
    np.testing.assert_allclose(c.footprints.toarray(), fp.reshape(N, -1), rtol=1e-6)
    np.testing.assert_allclose(c.traces, traces, rtol=1e-6)


# ------------------------------------------------------------------ EXTRACT
def test_extract_v5_dense_nested_struct(tmp_path, truth):
    import scipy.io

    fp, traces, image = truth
    output = {
        "info": {
            "max_image": image,
            "cellcheck": {
                "is_bad": np.array([0, 1, 0, 0.0]),
                "metrics": np.arange(2 * N).reshape(2, N),
            },
        },
        "spatial_weights": fp.transpose(1, 2, 0),
        "temporal_weights": traces.T,
    }
    scipy.io.savemat(tmp_path / "out.mat", {"output": output})
    c = read_extraction(tmp_path / "out.mat")
    _same(c, fp, traces, "extract")
    np.testing.assert_allclose(c.images["extract_max_image"], image)
    np.testing.assert_array_equal(c.metrics["extract_is_bad"], [0, 1, 0, 0])
    np.testing.assert_array_equal(c.metrics["extract_cellcheck_1"], np.arange(N, 2 * N))


def test_extract_v5_sparse_column_major(tmp_path, truth):
    import scipy.io

    fp, traces, image = truth
    sw = sp.csc_matrix(fp.transpose(1, 2, 0).reshape(H * W, N, order="F"))  # MATLAB (H*W) x N
    scipy.io.savemat(
        tmp_path / "s.mat", {"res": {"filters": sw, "traces": traces.T, "summary_image": image}}
    )
    _same(read_extraction(tmp_path / "s.mat"), fp, traces, "extract")
    scipy.io.savemat(tmp_path / "noimg.mat", {"filters": sw, "traces": traces.T})
    with pytest.raises(MissingShapeError, match="height and width"):
        read_extraction(tmp_path / "noimg.mat")
    _same(read_extraction(tmp_path / "noimg.mat", hw=(H, W)), fp, traces, "extract")


def _write_v73(path, write):
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        write(f)
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, test")


def test_extract_v73_dense_reversed_order(tmp_path, truth, monkeypatch):
    from actsort_gpu.io import candidates

    fp, traces, image = truth

    def write(f):
        g = f.create_group("output")
        g.attrs["MATLAB_class"] = np.bytes_("struct")
        g["spatial_weights"] = fp.transpose(0, 2, 1)  # MATLAB H x W x N -> (N, W, H)
        g["temporal_weights"] = traces  # MATLAB T x N -> (N, T)
        g.create_group("info")["max_image"] = image.T  # MATLAB H x W -> (W, H)

    _write_v73(tmp_path / "v73.mat", write)
    c = read_extraction(tmp_path / "v73.mat")
    _same(c, fp, traces, "extract")
    np.testing.assert_allclose(c.images["extract_max_image"], image)
    assert isinstance(c.traces, RowBlockTraces)  # read by blocks of rows at ingest

    def write_n_by_t(f):  # MATLAB N x T (transposed by the user): read by columns, same values
        write(f)
        del f["output/temporal_weights"]
        f["output/temporal_weights"] = traces.T

    _write_v73(tmp_path / "nt.mat", write_n_by_t)
    from actsort_gpu.io import nwb as nwb_reader

    monkeypatch.setattr(candidates, "TRACE_BLOCK_VALUES", 2 * T + 1)  # 2 rows per block
    monkeypatch.setattr(nwb_reader, "OUT_OF_ORDER_WHOLE_BYTES", 0)  # blocks, whatever the size
    c = read_extraction(tmp_path / "nt.mat")
    _same(c, fp, traces, "extract")
    assert isinstance(c.traces, RowBlockTraces)
    np.testing.assert_array_equal(c.traces[1:4], traces[1:4])


def test_extract_v73_sparse(tmp_path, truth):
    fp, traces, image = truth
    csc = sp.csc_matrix(fp.transpose(1, 2, 0).reshape(H * W, N, order="F"))

    def write(f):
        g = f.create_group("output")
        s = g.create_group("spatial_weights")
        s.attrs["MATLAB_sparse"] = np.uint64(H * W)
        s["data"], s["ir"], s["jc"] = (
            csc.data,
            csc.indices.astype(np.uint64),
            csc.indptr.astype(np.uint64),
        )
        g["temporal_weights"] = traces
        g["max_im"] = image.T

    _write_v73(tmp_path / "sp.mat", write)
    _same(read_extraction(tmp_path / "sp.mat"), fp, traces, "extract")


def test_extract_missing_fields_and_corrupt(tmp_path, truth):
    import scipy.io

    scipy.io.savemat(tmp_path / "no.mat", {"x": np.ones(3)})
    with pytest.raises(ValueError, match="no.mat: no spatial footprints.*spatial_weights"):
        read_extraction(tmp_path / "no.mat")
    (tmp_path / "bad.mat").write_bytes(b"MATLAB 5.0 MAT-file garbage" + b"\x00" * 200)
    with pytest.raises(OSError, match="bad.mat: not a readable MATLAB"):
        read_extraction(tmp_path / "bad.mat")


# ------------------------------------------------------------------ CaImAn
def _caiman(path, fp, traces, with_yra=None, image=None):
    import h5py

    A = sp.csc_matrix(fp.transpose(0, 2, 1).reshape(N, H * W).T)  # pixel p = row + col * H
    with h5py.File(path, "w") as f:
        e = f.create_group("estimates")
        a = e.create_group("A")
        a["data"], a["indices"], a["indptr"], a["shape"] = A.data, A.indices, A.indptr, A.shape
        e["C"] = traces
        e["dims"] = np.array([H, W])
        e["SNR_comp"] = np.arange(N, dtype=float)
        e["r_values"] = np.linspace(0, 1, N)
        e["cnn_preds"] = "NoneType"  # CaImAn's way of saving None
        e["idx_components"] = np.array([0, 2])
        if with_yra is not None:
            e["YrA"] = with_yra
        if image is not None:
            e["Cn"] = image
        f.create_group("params/data")["fr"] = 15.0


def test_caiman(tmp_path, truth):
    fp, traces, image = truth
    yra = np.ones_like(traces)
    _caiman(tmp_path / "cm.hdf5", fp, traces, yra, image)
    assert detect_extraction_format(tmp_path / "cm.hdf5") == "caiman"
    c = read_extraction(tmp_path / "cm.hdf5")
    _same(c, fp, traces + 1, "caiman")  # default trace C + YrA
    assert c.fs_hz == 15.0 and "caiman_cnn_preds" not in c.metrics
    np.testing.assert_array_equal(c.metrics["caiman_snr"], np.arange(N))
    np.testing.assert_array_equal(c.metrics["caiman_accepted"], [1, 0, 1, 0])
    np.testing.assert_allclose(c.images["caiman_Cn"], image)
    c = read_extraction(tmp_path / "cm.hdf5", config=IngestConfig(caiman_trace="C"))
    np.testing.assert_allclose(c.traces, traces)


def test_caiman_traces_read_by_blocks(tmp_path, truth, monkeypatch):
    """C + YrA (float64 in CaImAn's files) read block by block: the values of the whole
    expression; a file changed under the reader is an error naming it, not garbage."""
    import h5py

    from actsort_gpu.io import candidates

    fp, traces, _ = truth
    c64 = traces.astype(np.float64) * 1.001
    yra = np.random.default_rng(2).normal(size=traces.shape)
    _caiman(tmp_path / "cm.hdf5", fp, c64, yra)
    from actsort_gpu.io import nwb as nwb_reader

    monkeypatch.setattr(candidates, "TRACE_BLOCK_VALUES", 2 * T + 1)  # 2 rows per block
    monkeypatch.setattr(nwb_reader, "OUT_OF_ORDER_WHOLE_BYTES", 0)  # blocks, whatever the size
    c = read_extraction(tmp_path / "cm.hdf5")
    expected = c64.astype(np.float32) + yra.astype(np.float32)
    np.testing.assert_array_equal(np.asarray(c.traces), expected)
    np.testing.assert_array_equal(c.traces[1:3], expected[1:3])
    with h5py.File(tmp_path / "cm.hdf5", "a") as f:
        del f["estimates/YrA"]
    with pytest.raises(OSError, match=r"cm.hdf5: cannot read rows 0-2 of estimates/C \+ "):
        np.asarray(c.traces)


# ------------------------------------------------------------------ minian
@pytest.mark.parametrize("layout", ["per_variable", "one_group"])
def test_minian(tmp_path, truth, layout, monkeypatch):
    import zarr

    from actsort_gpu.io import candidates

    monkeypatch.setattr(candidates, "TRACE_BLOCK_VALUES", 2 * T)  # C read 2 rows at a time
    fp, traces, image = truth
    units = np.array([10, 11, 12, 13])
    order = [2, 0, 3, 1]  # C saved in another unit order
    if layout == "per_variable":  # xarray to_zarr, zarr v2, one per var
        for name, data, ids in (("A", fp, units), ("C", traces[order], units[order])):
            g = zarr.open_group(str(tmp_path / "out" / f"{name}.zarr"), mode="w", zarr_format=2)
            g.create_array(name, data=data)
            g.create_array("unit_id", data=ids)
        g = zarr.open_group(str(tmp_path / "out" / "max_proj.zarr"), mode="w", zarr_format=2)
        g.create_array("max_proj", data=image)
    else:
        g = zarr.open_group(str(tmp_path / "out"), mode="w", zarr_format=3)
        g.create_array("A", data=fp, chunks=(1, H, W))
        g.create_array("C", data=traces)
    assert detect_extraction_format(tmp_path / "out") == "minian"
    c = read_extraction(tmp_path / "out")
    _same(c, fp, traces, "minian")
    assert isinstance(c.traces, RowBlockTraces)
    np.testing.assert_array_equal(c.traces[1:3], traces[1:3])  # reordered rows across blocks
    if layout == "per_variable":
        np.testing.assert_array_equal(c.metrics["minian_unit_id"], units)
        np.testing.assert_allclose(c.images["minian_max_proj"], image)


# ------------------------------------------------------------------ NWB
@pytest.mark.parametrize(
    ("mask", "rois"),
    [
        ("image_mask", [0, 1, 2, 3]),
        ("pixel_mask", [0, 1, 2, 3]),
        ("image_mask", [1, 3]),  # a series over some ROIs: the others' traces are NaN
        ("image_mask", [3, 0, 2]),  # ROIs out of table order: read by blocks all the same
    ],
)
def test_nwb(tmp_path, truth, mask, rois, monkeypatch):
    from actsort_gpu.io import candidates

    pynwb = pytest.importorskip("pynwb")
    from datetime import datetime

    from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel, TwoPhotonSeries

    fp, traces, _ = truth
    nwb = pynwb.NWBFile("test", "id", datetime(2024, 1, 1, tzinfo=UTC))
    device = nwb.create_device("scope")
    channel = OpticalChannel(name="ch", description="green", emission_lambda=510.0)
    plane = nwb.create_imaging_plane(
        name="plane",
        optical_channel=channel,
        description="test",
        device=device,
        excitation_lambda=500.0,
        imaging_rate=7.0,
        indicator="GCaMP",
        location="cortex",
    )
    nwb.add_acquisition(
        TwoPhotonSeries(
            name="movie",
            data=np.zeros((T, H, W), np.uint16),
            imaging_plane=plane,
            rate=7.0,
            unit="a.u.",
        )
    )
    seg = ImageSegmentation()
    ophys = nwb.create_processing_module("ophys", "optical physiology")
    ophys.add(seg)
    ps = seg.create_plane_segmentation(
        description="rois", imaging_plane=plane, name="PlaneSegmentation"
    )
    ps.add_column("iscell", "Suite2p label")
    for i in range(N):
        if mask == "image_mask":
            ps.add_roi(image_mask=fp[i], iscell=float(i % 2))
        else:
            r, cc = np.nonzero(fp[i])
            ps.add_roi(
                pixel_mask=[(int(a), int(b), float(fp[i, a, b])) for a, b in zip(r, cc)],
                iscell=float(i % 2),
            )
    region = ps.create_roi_table_region("some", region=rois)
    fl = Fluorescence(name="Fluorescence")
    fl.create_roi_response_series(name="F", data=traces[rois].T, rois=region, rate=7.0, unit="a.u.")
    ophys.add(fl)
    with pynwb.NWBHDF5IO(str(tmp_path / "s.nwb"), "w") as io:
        io.write(nwb)
    from actsort_gpu.io import nwb as nwb_reader

    monkeypatch.setattr(candidates, "TRACE_BLOCK_VALUES", 2 * T + 1)  # 2 rows per block
    monkeypatch.setattr(nwb_reader, "OUT_OF_ORDER_WHOLE_BYTES", 0)  # blocks, whatever the size
    c = read_extraction(tmp_path / "s.nwb")
    expected = np.full_like(traces, np.nan)
    expected[rois] = traces[rois]
    _same(c, fp, expected, "nwb")
    assert isinstance(c.traces, RowBlockTraces)  # (T, n_rois) read by columns, any order
    monkeypatch.setattr(nwb_reader, "OUT_OF_ORDER_WHOLE_BYTES", 1 << 20)  # small: whole
    whole = read_extraction(tmp_path / "s.nwb")
    assert isinstance(whole.traces, RowBlockTraces) == (rois == sorted(rois))
    np.testing.assert_array_equal(np.asarray(whole.traces), expected)
    np.testing.assert_array_equal(c.traces[1:4], expected[1:4])
    assert c.fs_hz == 7.0
    np.testing.assert_array_equal(c.metrics["nwb_iscell"], [0, 1, 0, 1])


# ------------------------------------------------------------------ npz
def test_npz_dense_and_csr(tmp_path, truth):
    from actsort_gpu.io.npz import write_npz

    fp, traces, image = truth
    np.savez(
        tmp_path / "d.npz",
        footprints=fp,
        traces=traces,
        fs_hz=20.0,
        metric_snr=np.arange(N),
        image_mean=image,
    )
    c = read_extraction(tmp_path / "d.npz")
    _same(c, fp, traces, "npz")
    assert c.fs_hz == 20.0 and set(c.metrics) == {"snr"} and set(c.images) == {"mean"}
    write_npz(tmp_path / "s.npz", sp.csr_matrix(fp.reshape(N, -1)), traces, H, W)
    _same(read_extraction(tmp_path / "s.npz"), fp, traces, "npz")


def test_npz_corrupt_and_incomplete(tmp_path, truth):
    fp, traces, _ = truth
    np.savez(tmp_path / "ok.npz", footprints=fp, traces=traces)
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="cut.npz: .*(corrupt|truncated)"):
        read_extraction(tmp_path / "cut.npz")
    np.savez(tmp_path / "nofp.npz", traces=traces)
    with pytest.raises(KeyError, match="no 'footprints'"):
        read_extraction(tmp_path / "nofp.npz")


def test_npz_traces_stored_uncompressed_are_memory_mapped(tmp_path, truth, monkeypatch, caplog):
    import logging
    import zipfile

    from actsort_gpu.io import npz

    fp, traces, _ = truth
    np.savez(tmp_path / "s.npz", footprints=fp, traces=traces)
    c = read_extraction(tmp_path / "s.npz")
    assert isinstance(c.traces, np.memmap) and not c.traces.flags.writeable
    _same(c, fp, traces, "npz")
    # other dtypes and Fortran order (a transposed array) are mapped too, read by blocks of
    # float32 rows, never converted whole
    for name, stored in [
        ("d.npz", traces.astype(">f8")),
        ("f.npz", np.asfortranarray(traces, ">f8")),
        ("i.npz", np.asfortranarray(np.round(traces * 100).astype("<i2"))),
    ]:
        np.savez(tmp_path / name, footprints=fp, traces=stored)
        c = read_extraction(tmp_path / name)
        assert isinstance(c.traces, RowBlockTraces), name
        np.testing.assert_array_equal(np.asarray(c.traces), stored.astype(np.float32))
        np.testing.assert_array_equal(c.traces[2:5], stored[2:5].astype(np.float32))
    # compressed in Fortran order: read whole, same values; a large one says how to avoid that
    np.savez_compressed(tmp_path / "fz.npz", footprints=fp, traces=np.asfortranarray(traces))
    monkeypatch.setattr(npz, "WHOLE_READ_NOTE_BYTES", traces.nbytes - 1)
    with caplog.at_level(logging.WARNING, logger="actsort_gpu.io.npz"):
        c = read_extraction(tmp_path / "fz.npz")
    assert "fz.npz: 'traces' (0.0 GB) is stored compressed in Fortran order" in caplog.text
    _same(c, fp, traces, "npz")
    # a stored member shorter than its .npy header says (the zip itself intact)
    with zipfile.ZipFile(tmp_path / "short.npz", "w", zipfile.ZIP_STORED) as z:
        z.writestr("traces.npy", _npy_bytes(traces)[:-40])
        z.writestr("footprints.npy", _npy_bytes(fp))
    with pytest.raises(OSError, match=r"short.npz: member traces.npy is shorter"):
        read_extraction(tmp_path / "short.npz")


@pytest.mark.parametrize("dtype", ["<f4", ">f8", "<i2"])
def test_npz_compressed_traces_are_decompressed_by_blocks(tmp_path, truth, monkeypatch, dtype):
    """numpy.savez_compressed: the trace matrix is decompressed block by block in row order
    (never held whole), a block before the stream's position restarts it, the values are
    those of the whole read; a member cut short is an error naming the file and the rows."""
    import zipfile

    from actsort_gpu.io import candidates

    fp, traces, _ = truth
    stored = (traces * 100).astype(dtype)
    np.savez_compressed(tmp_path / "z.npz", footprints=fp, traces=stored)
    monkeypatch.setattr(candidates, "TRACE_BLOCK_VALUES", T + 1)  # one row per block
    c = read_extraction(tmp_path / "z.npz")
    assert isinstance(c.traces, RowBlockTraces)
    expected = stored.astype(np.float32)
    np.testing.assert_array_equal(np.asarray(c.traces), expected)
    np.testing.assert_array_equal(c.traces[2:4], expected[2:4])  # skips rows 0-1
    np.testing.assert_array_equal(c.traces[1:2], expected[1:2])  # behind: reopened
    np.testing.assert_array_equal(np.asarray(c.traces), expected)  # a second pass
    with zipfile.ZipFile(tmp_path / "cut.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("traces.npy", _npy_bytes(stored)[: -stored.itemsize * T - 3])
        z.writestr("footprints.npy", _npy_bytes(fp))
    c = read_extraction(tmp_path / "cut.npz")
    np.testing.assert_array_equal(c.traces[0:2], expected[0:2])
    with pytest.raises(OSError, match=r"cut.npz: cannot read rows 2-3 of traces.npy .*3 bytes ea"):
        np.asarray(c.traces)


def _npy_bytes(array) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# ------------------------------------------------------------------ Suite2p
def _suite2p_plane(folder, fp, traces):
    folder.mkdir(parents=True)
    stat = []
    for i in range(N):
        r, c = np.nonzero(fp[i])
        stat.append({"ypix": r, "xpix": c, "lam": fp[i, r, c], "skew": float(i), "compact": 1.0})
    stat[1].pop("skew")  # missing value -> NaN
    np.save(folder / "stat.npy", np.array(stat, dtype=object), allow_pickle=True)
    np.save(folder / "F.npy", traces)
    np.save(folder / "Fneu.npy", np.ones_like(traces))
    np.save(folder / "spks.npy", np.maximum(traces, 0))
    np.save(folder / "iscell.npy", np.array([[1, 0.9], [0, 0.2], [1, 0.8], [0, 0.1]]))
    np.save(
        folder / "ops.npy",
        {
            "Ly": H,
            "Lx": W,
            "fs": 30.0,
            "meanImg": np.ones((H, W)),
            "max_proj": np.full((H - 2, W - 1), 5.0),
            "yrange": [1, H - 1],
            "xrange": [0, W - 1],
        },
        allow_pickle=True,
    )


def test_suite2p_layouts_and_traces(tmp_path, truth):
    fp, traces, _ = truth
    _suite2p_plane(tmp_path / "suite2p" / "plane0", fp, traces)
    plane = tmp_path / "suite2p" / "plane0"
    for path in (tmp_path / "suite2p", plane, plane / "stat.npy"):
        assert detect_extraction_format(path) == "suite2p"
        c = read_extraction(path, config=IngestConfig(suite2p_trace="F"))
        _same(c, fp, traces, "suite2p")
    assert c.fs_hz == 30.0
    np.testing.assert_array_equal(c.metrics["suite2p_iscell"], [1, 0, 1, 0])
    np.testing.assert_allclose(c.metrics["suite2p_iscell_prob"], [0.9, 0.2, 0.8, 0.1])
    np.testing.assert_array_equal(c.metrics["suite2p_skew"], [0, np.nan, 2, 3])
    mp = c.images["suite2p_max_proj"]  # padded back from yrange/xrange
    assert mp.shape == (H, W) and mp[1 : H - 1, 0 : W - 1].min() == 5.0
    c = read_extraction(plane)  # default F - 0.7 Fneu
    np.testing.assert_allclose(c.traces, traces - 0.7, rtol=1e-6)
    c = read_extraction(plane, config=IngestConfig(suite2p_trace="spks"))
    np.testing.assert_allclose(c.traces, np.maximum(traces, 0))


def test_suite2p_trace_count_mismatch(tmp_path, truth):
    fp, traces, _ = truth
    _suite2p_plane(tmp_path / "p", fp, traces)
    np.save(tmp_path / "p" / "F.npy", traces[:3])
    with pytest.raises(ValueError, match=r"F.npy: shape \(3, 30\), expected \(4, n_frames\)"):
        read_extraction(tmp_path / "p", config=IngestConfig(suite2p_trace="F"))
    np.save(tmp_path / "p" / "F.npy", traces[0])  # one row: also for the default F - 0.7 Fneu
    with pytest.raises(ValueError, match=r"F.npy: shape \(30,\), expected \(4, n_frames\)"):
        read_extraction(tmp_path / "p")


def test_suite2p_fortran_ordered_traces(tmp_path, truth):
    """F.npy / Fneu.npy saved from Fortran-ordered arrays: still mapped, read by blocks of
    rows (runs of the columns), the same values."""
    fp, traces, _ = truth
    _suite2p_plane(tmp_path / "p", fp, traces)
    fneu = np.random.default_rng(3).normal(size=traces.shape).astype(np.float32)
    np.save(tmp_path / "p" / "F.npy", np.asfortranarray(traces))
    np.save(tmp_path / "p" / "Fneu.npy", np.asfortranarray(fneu))
    c = read_extraction(tmp_path / "p")
    np.testing.assert_array_equal(np.asarray(c.traces), traces - np.float32(0.7) * fneu)
    c = read_extraction(tmp_path / "p", config=IngestConfig(suite2p_trace="F"))
    assert isinstance(c.traces, RowBlockTraces)
    np.testing.assert_array_equal(np.asarray(c.traces), traces)


def test_suite2p_real_neurofinder(shared_data):
    c = read_extraction(shared_data / "neurofinder_crop" / "suite2p")
    assert (c.n_candidates, c.n_frames, c.height, c.width) == (178, 600, 256, 256)
    assert c.footprints.nnz > 178 * 20
    assert {"suite2p_iscell_prob", "suite2p_skew", "suite2p_compact"} <= set(c.metrics)
    assert c.images["suite2p_Vcorr"].shape == (256, 256)


def test_unknown_format(tmp_path):
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(ValueError, match=r"x.csv: unknown extraction format '.csv'"):
        read_extraction(tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a Suite2p output"):
        read_extraction(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown extraction format 'foo'"):
        read_extraction(tmp_path / "x.csv", format="foo")


# ------------------------------------------------------------------ the reader table
def test_reader_table_resolves():
    import inspect

    from actsort_gpu.io.extraction import EXTRACTION_FORMATS, EXTRACTION_READERS, formats_markdown

    assert tuple(EXTRACTION_READERS) == EXTRACTION_FORMATS
    table = formats_markdown()
    for name, reader in EXTRACTION_READERS.items():
        assert reader.name == name and f"`{name}`" in table
        params = inspect.signature(reader.reader()).parameters
        assert set(reader.options) <= set(params), name


def test_formats_in_readme_and_cli():
    import re
    from pathlib import Path

    from actsort_gpu.cli import build_parser
    from actsort_gpu.io.extraction import EXTRACTION_FORMATS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text().lower()
    missing = [f for f in EXTRACTION_FORMATS if not re.search(rf"\b{re.escape(f)}\b", readme)]
    assert not missing, f"README.md does not mention the extraction formats {missing}"
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    ingest = sub.choices["ingest"]
    fmt = next(a for a in ingest._actions if a.dest == "format")
    assert set(fmt.choices) == {"auto", *EXTRACTION_FORMATS}


def test_readers_never_import_extraction():
    """extraction.py imports the readers; no module of the package imports it back."""
    import ast
    from pathlib import Path

    import actsort_gpu.io as io_pkg

    offenders = []
    for path in Path(io_pkg.__file__).parent.glob("*.py"):
        if path.stem in ("extraction", "__init__"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("extraction"):
                offenders.append(path.name)
    assert not offenders, f"modules importing extraction: {offenders}"


@pytest.mark.parametrize("fmt", ["caiman", "nwb", "npz", "extract"])
def test_a_format_given_against_the_paths_kind_is_named(tmp_path, fmt):
    """--format FILE-FORMAT on a folder (e.g. a Suite2p plane): one line saying so, not the
    reader's own HDF5 / zip error about reading a directory."""
    from actsort_gpu.io.extraction import read_extraction

    (tmp_path / "plane0").mkdir()
    with pytest.raises(ValueError, match=f"plane0: a folder, but --format {fmt} reads a file"):
        read_extraction(tmp_path / "plane0", format=fmt)
