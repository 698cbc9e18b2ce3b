"""Evaluate an encoder checkpoint (benchmarks/RESULTS.md, "Embeddings (issue 7)").

1. Transfer in the CytoImageNet manner: a k-nearest-neighbour classifier (k = 5) and a linear
   probe (standardised logistic regression) on the embeddings alone, 5-fold stratified cross-
   validation (balanced accuracy, ROC AUC), on
   - ../shared/data/neurofinder_crop (Suite2p candidates; labels gt_label_centroid5px.npy), and
   - synthetic recordings from seeds never used in training (truth.npz is_cell).
   The same probes on the engineered features are given for reference.
2. Active learning (actsort_gpu.active.simulate.simulate, the product policy): features alone
   vs features + embeddings (each column z-scored inside the simulator), balanced accuracy at
   1, 2, 5 % of candidates queried, the truth labels as the oracle.
3. Time to embed (CPU here; GPU where available) and the numbers per candidate.

All stores are made in --workdir (never in the shared data folder).

    python scripts/eval_embeddings.py --workdir ../eval_tmp \
        --checkpoint actsort_gpu/embed/checkpoints/default.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
EVAL_SEEDS = (2000, 2001)


def neurofinder_store(workdir: Path) -> Path:
    from actsort_gpu import schema
    from actsort_gpu.ingest import ingest_files
    from actsort_gpu.preprocess import preprocess
    from actsort_gpu.store import SortStore

    src = SHARED / "neurofinder_crop"
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: shared data not found (clone the project beside shared/)")
    out = workdir / "neurofinder_crop.actsort"
    if (
        not (out / "zarr.json").exists()
        or SortStore.open(out).stage_status("preprocess") != "complete"
    ):
        ingest_files(src / "movie.tif", src / "suite2p", out, overwrite=True)
        preprocess(out, device="cpu")
    store = SortStore.open(out, "r+")
    gt = np.load(src / "gt_label_centroid5px.npy")
    if len(gt) != store.n_candidates:
        raise ValueError(f"{src}: {len(gt)} labels for {store.n_candidates} candidates")
    store.write_array(schema.TRUTH_LABELS, np.where(gt > 0, 1, -1).astype(np.int8))
    return out


def synth_store(workdir: Path, seed: int) -> Path:
    from actsort_gpu.demo import synthetic_store
    from actsort_gpu.embed.benchdata import training_recording_config
    from actsort_gpu.store import SortStore

    out = workdir / f"synth_{seed}" / "recording.actsort"
    if (out / "zarr.json").exists() and SortStore.open(out).truth_labels() is not None:
        return out
    path, _ = synthetic_store(
        workdir / f"synth_{seed}", training_recording_config(seed), features=False, device="cpu"
    )
    return path


def probes(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """kNN (k=5) and logistic-regression probes, 5-fold stratified CV: BA and AUC."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.nan_to_num(np.asarray(x, np.float64))
    out = {}
    models = {
        "knn5": lambda: make_pipeline(StandardScaler(), KNeighborsClassifier(5)),
        "linear": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
        ),
    }
    for name, make in models.items():
        proba = np.zeros(len(y))
        for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y):
            proba[test] = make().fit(x[train], y[train]).predict_proba(x[test])[:, 1]
        pred = proba > 0.5
        out[name] = {
            "ba": float(balanced_accuracy_score(y > 0, pred)),
            "auc": float(roc_auc_score(y > 0, proba)),
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--checkpoint", default=None, help="default: the shipped checkpoint")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--strategies", default="default")
    p.add_argument("--out", default=None, help="JSON results file")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    from actsort_gpu import schema
    from actsort_gpu.active.simulate import simulate
    from actsort_gpu.embed.infer import embed
    from actsort_gpu.features import compute_features
    from actsort_gpu.store import SortStore

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stores = {"neurofinder_crop": neurofinder_store(workdir)}
    for seed in EVAL_SEEDS:
        stores[f"synthetic seed {seed}"] = synth_store(workdir, seed)
    results = {}
    for name, path in stores.items():
        store = SortStore.open(path)
        if store.stage_status("features") != "complete":
            compute_features(path, device="cpu")
        t = time.perf_counter()
        emb = embed(path, args.checkpoint, device="cpu")
        embed_s = time.perf_counter() - t
        store = SortStore.open(path)
        feats = store.feature_matrix().values
        y = store.truth_labels().astype(np.int8)
        res = {
            "n_candidates": int(len(y)),
            "n_cells": int((y > 0).sum()),
            "embed_seconds": round(embed_s, 2),
            "encoder_id": store.attrs_of(schema.EMBEDDING_MATRIX)["encoder_id"],
            "probe_embeddings": probes(emb, y),
            "probe_features": probes(feats, y),
            "probe_both": probes(np.hstack([feats, emb]), y),
        }
        sims = {}
        for label, x in (("features", feats), ("features+embeddings", np.hstack([feats, emb]))):
            x = np.nan_to_num(x.astype(np.float32))
            r = simulate(
                x,
                y[None, :],
                ["truth"],
                args.strategies.split(","),
                [1, 2, 5],
                repeats=args.repeats,
                seed=0,
                dataset=name,
            )
            sims[label] = {
                s: {"ba": v["ba"], "ba_sd": v["ba_sd"], "auc": v["auc"]}
                for s, v in r["results"].items()
            }
        res["simulate"] = sims
        results[name] = res
        print(json.dumps({name: res}, indent=1), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
