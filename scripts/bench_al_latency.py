"""Latency of one active-learning update against a scikit-learn refit of the same model.

One update = learn one new label (warm-started exact L1-logistic fit on the labelled rows),
rescore all N candidates, choose the next query, with the product policy (``ActiveConfig``
defaults: DCAL, whose discriminator is refitted, warm-started, on a balanced subsample kept for
20 queries and scores all N; lambda re-chosen by 5-fold CV every 10 labels, which shows in the
p90/max, not in the median). The scikit-learn baseline refits LogisticRegression(l1_ratio=1,
C=1, solver='saga', class_weight='balanced', defaults tol=1e-4, max_iter=100) from
scratch on the same labelled rows and rescores all N (no query step), in the same run.

Data: synthetic, 76 correlated Gaussian features, labels from a sparse logistic model, 1 % of
candidates labelled. Usage: python scripts/bench_al_latency.py [--sizes 10000,100000,1000000]
[--updates 15] [--device cpu|cuda] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import numpy as np
import torch


def make_data(n, n_feat=76, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(n_feat, n_feat)) / np.sqrt(n_feat) + np.eye(n_feat)
    x = rng.normal(size=(n, n_feat)).astype(np.float32) @ mix.astype(np.float32)
    beta = np.zeros(n_feat)
    beta[rng.choice(n_feat, 10, replace=False)] = rng.normal(size=10)
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-(x @ beta + 1.0))), 1, -1).astype(np.int8)
    return x, y


def bench_size(n, updates, device, sk_repeats):
    from actsort_gpu.active.engine import Engine, product_policy
    from actsort_gpu.active.linear import zscore_columns

    x, y = make_data(n)
    z = zscore_columns(x)
    eng = Engine(z, product_policy(), device=device, seed=0)
    rng = np.random.default_rng(1)
    first = rng.choice(n, max(6, n // 100), replace=False)
    eng.set_labels(np.where(np.isin(np.arange(n), first), y, 0))
    eng.fit()
    nxt = eng.next_query(1)[0]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    ours, ours_fit = [], []
    for _ in range(updates):
        sync()
        t0 = time.perf_counter()
        eng.set_label(nxt, int(y[nxt]))
        p = eng.fit()
        _ = p.sum().item()  # rescored all N (forces completion on a GPU)
        t1 = time.perf_counter()
        nxt = eng.next_query(1)[0]
        sync()
        t2 = time.perf_counter()
        ours.append(t2 - t0)
        ours_fit.append(t1 - t0)
    idx = np.flatnonzero(eng.labels)
    med = float(np.median(ours))
    row = {
        "n": n,
        "n_labelled": int(len(idx)),
        "ours_update_ms_median": 1e3 * med,
        "ours_update_ms_p90": 1e3 * float(np.percentile(ours, 90)),
        "ours_update_ms_max": 1e3 * float(np.max(ours)),
        "ours_fit_rescore_ms_median": 1e3 * float(np.median(ours_fit)),
    }
    if sk_repeats < 1:  # no baseline (scripts/gpu_check.py: time is short)
        return row
    from sklearn.linear_model import LogisticRegression

    sk = []
    for _ in range(sk_repeats):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = LogisticRegression(l1_ratio=1, C=1, solver="saga", class_weight="balanced").fit(
                z[idx], y[idx]
            )
        m.predict_proba(z)
        sk.append(time.perf_counter() - t0)
    return {
        **row,
        "sklearn_refit_rescore_ms_median": 1e3 * float(np.median(sk)),
        "ratio_sklearn_over_ours_update": float(np.median(sk)) / med,
        "ratio_sklearn_over_ours_fit_rescore": float(np.median(sk)) / float(np.median(ours_fit)),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--updates", type=int, default=15)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared 2-core machine more threads "
        "oversubscribe and run ~10x slower)",
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(
        f"device {args.device}, torch threads {torch.get_num_threads()}, "
        f"{platform.processor() or platform.machine()}"
    )
    print(
        f"{'N':>9} {'labelled':>8} {'ours ms (med/p90)':>18} {'fit+rescore ms':>15} "
        f"{'sklearn ms':>11} {'ratio upd':>9} {'ratio fit':>9}"
    )
    for n in [int(s) for s in args.sizes.split(",")]:
        r = bench_size(n, args.updates, args.device, sk_repeats=3 if n <= 100_000 else 1)
        rows.append(r)
        print(
            f"{n:>9} {r['n_labelled']:>8} {r['ours_update_ms_median']:>9.1f}/"
            f"{r['ours_update_ms_p90']:<8.1f} {r['ours_fit_rescore_ms_median']:>15.1f} "
            f"{r['sklearn_refit_rescore_ms_median']:>11.1f} "
            f"{r['ratio_sklearn_over_ours_update']:>9.1f} "
            f"{r['ratio_sklearn_over_ours_fit_rescore']:>9.1f}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": args.device, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
