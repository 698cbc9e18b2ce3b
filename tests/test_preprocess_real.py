"""The real movies in ../shared/data preprocess end to end; montages of the event snapshots of
Suite2p-accepted candidates are saved to artifacts/ for a visual check."""

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def _montage(store, path: Path, title: str, n: int = 8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from actsort_gpu.store import SortStore

    s = SortStore.open(store)
    iscell = s.read("candidates/source_metrics/suite2p_iscell") > 0.5
    idx = np.flatnonzero(iscell)[:n]
    outlines = s.read_ragged("candidates/outlines")
    crops = s.read("candidates/crops")
    fig, axes = plt.subplots(len(idx), 5, figsize=(10, 2 * len(idx)), squeeze=False)
    for row, i in enumerate(idx):
        snaps = s.snapshots(int(i))
        for e in range(5):
            ax = axes[row, e]
            ax.imshow(snaps[e].max(axis=0), cmap="gray")
            o = outlines[i]
            ax.plot(o[:, 1] - crops[i, 2], o[:, 0] - crops[i, 0], "r-", lw=0.6)
            ax.set_xticks([]), ax.set_yticks([])
            if e == 0:
                ax.set_ylabel(f"#{i}")
    fig.suptitle(title)
    fig.tight_layout()
    ARTIFACTS.mkdir(exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return idx


MOVIES = {"neurofinder_crop": (600, 256, 256), "miniscope_1p": (1000, 480, 752)}


@pytest.fixture(scope="module", params=sorted(MOVIES))
def real(request, tmp_path_factory):
    """Each real movie ingested and preprocessed once per module: (name, shape, store path,
    summary)."""
    if not DATA.is_dir():
        pytest.fail(f"{DATA}: shared real data folder is missing")
    from actsort_gpu.config import PreprocessConfig
    from actsort_gpu.ingest import ingest_files
    from actsort_gpu.preprocess import preprocess

    name = request.param
    out = tmp_path_factory.mktemp(name) / f"{name}.actsort"
    ingest_files(DATA / name / "movie.tif", DATA / name / "suite2p", out)
    summary = preprocess(out, PreprocessConfig(max_memory_mb=256), device="cpu")
    return name, MOVIES[name], out, summary


def test_real_movie_end_to_end(real):
    from actsort_gpu.store import SortStore

    name, shape, out, summary = real
    s = SortStore.open(out)
    assert s.stage_status("preprocess") == "complete"
    n = s.n_candidates
    assert s.read("fov/max").shape == shape[1:]
    corr = s.read("fov/corr")
    assert np.isfinite(corr).all() and corr.min() >= -1 and corr.max() <= 1
    # Suite2p's own mean image equals ours up to registration (ours is of the raw movie)
    mean = s.read("fov/mean")
    ref = s.source_images()["suite2p_meanImg"]  # both real recordings come with Suite2p's ops
    assert ref.shape == mean.shape
    assert np.corrcoef(ref.ravel(), mean.ravel())[0, 1] > 0.9
    ev = s.read("candidates/events")
    assert ev.shape == (n, 5) and (ev[:, 0] >= 0).all()
    # accepted cells: the footprint region is brighter at the event than the crop on average
    iscell = s.read("candidates/source_metrics/suite2p_iscell") > 0.5
    crops = s.read("candidates/crops")
    fp = s.footprints()
    brighter = []
    for i in np.flatnonzero(iscell)[:40]:
        snaps = s.snapshots(int(i))[0, 5]  # strongest event, centre frame
        r0, r1, c0, c1 = crops[i]
        mask = fp[i].toarray().reshape(shape[1:])[r0:r1, c0:c1] > 0.3
        brighter.append(snaps[mask].mean() > snaps[~mask].mean())
    assert np.mean(brighter) > 0.8
    assert summary["n_candidates"] == n


def test_real_movie_montage(real):
    name, _, out, _ = real
    idx = _montage(
        out,
        ARTIFACTS / f"preprocess_montage_{name}.png",
        f"{name}: accepted candidates, max over 11 frames of each event",
    )
    assert len(idx) > 0 and (ARTIFACTS / f"preprocess_montage_{name}.png").stat().st_size > 0
