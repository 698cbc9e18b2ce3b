"""scripts/label_ceiling.py: the all-labels reference on a store whose features carry the label
and whose embeddings are noise."""

import importlib.util
from pathlib import Path

import numpy as np

from actsort_gpu.store import SortStore

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "label_ceiling", REPO / "scripts" / "label_ceiling.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ceiling_separates_informative_inputs_from_noise(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 160
    truth = np.where(np.arange(n) % 3 == 0, 1, -1).astype(np.int8)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    x[:, 2] += 3.0 * (truth > 0)  # f2 separates the classes
    emb = rng.normal(size=(n, 4)).astype(np.float32)
    store = SortStore.create(tmp_path / "s.actsort")
    store.update_attrs(n_candidates=n, n_frames=10, height=8, width=8)
    names = [f"f{k}" for k in range(5)]
    store.write_array("features/matrix", x, dims=["candidates", "features"], attrs={"names": names})
    store.write_array("embeddings/matrix", emb, dims=["candidates", "embedding"])
    labels = truth.copy()
    labels[:10] = 0  # unknown: left out
    np.save(tmp_path / "y.npy", labels)

    assert _script().main([f"{tmp_path / 's.actsort'}:{tmp_path / 'y.npy'}", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    cells = [line.split(" | ") for line in out.splitlines() if "(N=150, 50 cells)" in line]
    ba = {
        c[1]: float(c[2].split(" ± ")[0])
        for c in cells
        if c[1] in ("features", "embeddings", "both")
    }
    assert ba["features"] > 0.9 and ba["both"] > 0.85 and ba["embeddings"] < 0.75
    assert "cells) | f2 0.9" in out and "| n/a |" in out  # no footprints in this store
