"""Per-feature AUC against the drawn-cell labels of ../shared/data/neurofinder_crop.

Builds the store (ingest the Suite2p output + movie, preprocess, features) in a temporary
folder, then prints a markdown table: feature, group, AUC vs ``gt_label_centroid5px.npy``
(1 = candidate centre within 5 px of a drawn cell). AUC >= 0.65 or <= 0.35 counts as signal.

    python scripts/feature_auc.py [--data ../shared/data/neurofinder_crop] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "neurofinder_crop"))
    ap.add_argument("--labels", default="gt_label_centroid5px.npy")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args(argv)

    import numpy as np
    from sklearn.metrics import roc_auc_score

    from actsort_gpu import schema
    from actsort_gpu.features import compute_features
    from actsort_gpu.ingest import ingest_files
    from actsort_gpu.preprocess import preprocess
    from actsort_gpu.store import SortStore

    data = Path(args.data)
    if not data.is_dir():
        print(f"{data}: data folder not found", file=sys.stderr)
        return 1
    y = np.load(data / args.labels)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "neurofinder.actsort"
        ingest_files(data / "movie.tif", data / "suite2p", store)
        preprocess(store, device=args.device)
        m = compute_features(store, device=args.device)
        attrs = SortStore.open(store).attrs_of(schema.FEATURE_MATRIX)
        names, groups, version = list(attrs["names"]), list(attrs["groups"]), attrs["version"]
    auc = [roc_auc_score(y, m[:, j]) if np.ptp(m[:, j]) > 0 else 0.5 for j in range(m.shape[1])]
    signal = [a >= 0.65 or a <= 0.35 for a in auc]
    print(
        f"neurofinder_crop: {m.shape[0]} candidates ({int(y.sum())} positives in "
        f"{args.labels}), {m.shape[1]} features ({version}); NaN/Inf in matrix: "
        f"{int((~np.isfinite(m)).sum())}; features with signal (AUC >= 0.65 or <= 0.35): "
        f"{sum(signal)}\n"
    )
    print("| # | feature | group | AUC | signal |")
    print("|---|---|---|---|---|")
    for j, (name, group, a, s) in enumerate(zip(names, groups, auc, signal), start=1):
        print(f"| {j} | {name} | {group} | {a:.3f} | {'yes' if s else ''} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
