"""Active-learning simulation with recorded annotators (docs/actsort_reference.md section 7).

Protocol: each annotator in turn is the oracle that answers queries; the ground truth is the
majority vote of the other annotators (a tie counts as "not cell", as MATLAB ``mode`` returns
the smaller value); each run is seeded with 3 random oracle-cells and 3 random oracle-non-cells;
after each query the classifier is refitted; at each budget (% of candidates queried after the
seed) the classifier's decisions on all candidates are scored against the ground truth (human
labels already given are NOT substituted, bug B14, as in ActSort). Results are means over
oracles x repeats; the human baseline is each oracle's own labels against the same majority.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import schema
from ..labels import class_rates
from .engine import Engine, parse_policy
from .linear import zscore_columns

log = logging.getLogger(__name__)

__all__ = ["load_labelled_features", "simulate", "binary_metrics", "auc_actsort", "plot_results"]


def load_labelled_features(path) -> tuple[str, np.ndarray, np.ndarray, list[str]]:
    """Read features and annotator labels.

    path : ActSort benchmark ``.mat`` (v7.3: ``metrics`` + ``*_choices``), a CSV (feature columns
        + ``label_<annotator>`` columns, +1/-1), or a sort store directory with ``truth/labels``
        (N,) int8 or ``truth/annotators`` (n_annotators, N) int8 (attr ``names``).
    Returns (dataset name, features (N, F) float32 raw, labels (n_annotators, N) int8 in
    {+1, -1}, annotator names).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: features file not found")
    if path.is_dir():
        return _load_store(path)
    if path.suffix.lower() == ".mat":
        import h5py

        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise ValueError(f"{path}: not a MATLAB v7.3 (HDF5) file ({exc})") from exc
        with f:
            if "metrics" not in f:
                raise ValueError(f"{path}: no 'metrics' dataset (found {sorted(f.keys())})")
            x = np.asarray(f["metrics"][()], dtype=np.float32)
            names = sorted(k[: -len("_choices")] for k in f if k.endswith("_choices"))
            if not names:
                raise ValueError(f"{path}: no '*_choices' annotator labels")
            labs = [np.asarray(f[n + "_choices"][()]).ravel() for n in names]
        n = labs[0].size
        if x.shape[0] != n and x.shape[1] == n:
            x = x.T
        if x.shape[0] != n:
            raise ValueError(f"{path}: metrics {x.shape} does not match {n} labels")
        return path.stem, x, np.sign(np.stack(labs)).astype(np.int8), names
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        if len(rows) < 2:
            raise ValueError(f"{path}: expected a header and at least one row")
        header = rows[0]
        lab_cols = [i for i, h in enumerate(header) if h.startswith("label_")]
        feat_cols = [i for i, h in enumerate(header) if not h.startswith("label_")]
        if not lab_cols:
            raise ValueError(f"{path}: no 'label_<annotator>' column in the header")
        data = np.array(rows[1:], dtype=np.float64)
        return (
            path.stem,
            data[:, feat_cols].astype(np.float32),
            np.sign(data[:, lab_cols].T).astype(np.int8),
            [header[i][len("label_") :] for i in lab_cols],
        )
    raise ValueError(f"{path}: expected a .mat, a .csv or a sort store directory")


def _load_store(path: Path):
    from ..store import SortStore

    store = SortStore.open(path)
    if not store.has(schema.FEATURE_MATRIX):
        raise ValueError(
            f"{path}: sort store has no {schema.FEATURE_MATRIX}; run `actsort features` first"
        )
    x = np.asarray(store.read(schema.FEATURE_MATRIX), dtype=np.float32)
    if store.has(schema.TRUTH_ANNOTATORS):
        ann = np.asarray(store.read(schema.TRUTH_ANNOTATORS), dtype=np.int8)
        names = list(
            store.array(schema.TRUTH_ANNOTATORS).attrs.get(
                "names", [f"annotator{i}" for i in range(ann.shape[0])]
            )
        )
    elif store.has(schema.TRUTH_LABELS):
        ann = np.asarray(store.read(schema.TRUTH_LABELS), dtype=np.int8)[None, :]
        names = ["truth"]
    else:
        raise ValueError(
            f"{path}: sort store has no {schema.TRUTH_LABELS!r} or "
            f"{schema.TRUTH_ANNOTATORS!r} "
            "to simulate with"
        )
    ann = np.where(ann > 0, 1, -1).astype(np.int8)
    return path.name, x, ann, names


def binary_metrics(pred: np.ndarray, truth: np.ndarray) -> dict:
    """pred, truth : (N,) +1/-1. TPR, TNR, balanced accuracy (NaN-free: empty class -> 0)."""
    tpr, tnr = class_rates(pred, truth)
    tpr, tnr = tpr or 0.0, tnr or 0.0
    return {"tpr": tpr, "tnr": tnr, "ba": 0.5 * (tpr + tnr)}


def auc_actsort(proba: np.ndarray, truth: np.ndarray) -> float:
    """ROC AUC as ActSort's calculate_roc.m: 100 thresholds linspace(1, 0, 100), strict '>',
    trapezoid rule."""
    pos, neg = truth > 0, truth < 0
    thr = np.linspace(1.0, 0.0, 100)
    hits = proba[None, :] > thr[:, None]
    tpr = hits[:, pos].mean(1) if pos.any() else np.zeros(100)
    fpr = hits[:, neg].mean(1) if neg.any() else np.zeros(100)
    return float(np.trapezoid(tpr, fpr))


def _majority(others: np.ndarray) -> np.ndarray:
    return np.where(others.sum(0) > 0, 1, -1).astype(np.int8)


def _run(features, oracle, truth, policy, budgets_q, seed, device, n_seed=3):
    eng = Engine(features, policy, device=device, seed=seed)
    rng = np.random.default_rng(seed + 7919)
    pos, neg = np.flatnonzero(oracle > 0), np.flatnonzero(oracle < 0)
    for i in np.concatenate(
        [
            rng.choice(pos, min(n_seed, len(pos)), replace=False),
            rng.choice(neg, min(n_seed, len(neg)), replace=False),
        ]
    ):
        eng.set_label(int(i), int(oracle[i]))
    out = []
    q_done = 0
    for q_target in budgets_q:
        while q_done < q_target:
            nxt = eng.next_query(1)
            if not nxt:
                break
            eng.set_label(nxt[0], int(oracle[nxt[0]]))
            q_done += 1
        p = eng.fit()
        proba = np.zeros(eng.n) if p is None else p.detach().cpu().numpy().astype(np.float64)
        pred = np.where(proba > policy.threshold, 1, -1)
        m = binary_metrics(pred, truth)
        m["auc"] = auc_actsort(proba, truth)
        out.append(m)
    return out


def simulate(
    features: np.ndarray,
    annotations: np.ndarray,
    annotator_names: list[str],
    strategies: list[str],
    budgets_pct: list[float],
    *,
    oracle: str = "all",
    repeats: int = 5,
    seed: int = 0,
    threshold: float | None = None,
    device: str = "cpu",
    dataset: str = "dataset",
    config=None,
    progress=None,
) -> dict:
    """Run the protocol; returns the JSON-ready result dict (schema in the module docstring of
    ``actsort_gpu.cli.cmd_simulate``).

    features : (N, F) raw (z-scored here, ddof=1, as ActSort)
    annotations : (n_annotators, N) +1/-1
    strategies : names accepted by ``engine.parse_policy`` (random, cal, dal, dcal,
        faithful-dcal, default, dcal-0.3, options after '+')
    budgets_pct : % of candidates queried after the 6 seed labels
    oracle : an annotator name or "all"
    threshold : decision threshold for non-default strategies (None: 0.65, ActSort scripts)
    """
    ann = np.asarray(annotations)
    n_ann, n = ann.shape
    if features.shape[0] != n:
        raise ValueError(f"features have {features.shape[0]} rows, labels {n} candidates")
    if oracle == "all":
        oracles = list(range(n_ann))
    elif oracle in annotator_names:
        oracles = [annotator_names.index(oracle)]
    else:
        raise ValueError(f"--oracle {oracle!r}: expected 'all' or one of {annotator_names}")
    if n_ann < 2:
        # One label column (e.g. synthetic truth): it is both the oracle and the ground truth.
        log.info("one annotator: the oracle's labels are also the ground truth")
    budgets_q = [int(math.floor(b / 100.0 * n + 0.5)) for b in budgets_pct]
    if sorted(budgets_q) != budgets_q:
        raise ValueError(f"--budgets must increase, got {budgets_pct}")
    z = zscore_columns(features)
    human = []
    setups = []
    for o in oracles:
        others = np.delete(ann, o, axis=0) if n_ann > 1 else ann
        truth = _majority(others)
        human.append(binary_metrics(ann[o], truth))
        setups.append((o, truth))
    result = {
        "dataset": dataset,
        "n_candidates": int(n),
        "human": {k: float(np.mean([h[k] for h in human])) for k in ("ba", "tpr", "tnr")},
        "results": {},
        "oracles": [annotator_names[o] for o in oracles],
        "repeats": int(repeats),
        "seed": int(seed),
        "budgets_queries": budgets_q,
        "policies": {},
        "seconds": {},
    }
    for spec in strategies:
        policy = parse_policy(spec, threshold, config)
        t0 = time.perf_counter()
        runs = []
        for o, truth in setups:
            for r in range(repeats):
                runs.append(
                    _run(
                        z,
                        ann[o],
                        truth,
                        policy,
                        budgets_q,
                        seed=seed + 1000 * r + 17 * o,
                        device=device,
                    )
                )
                if progress is not None:
                    progress(spec, len(runs), len(setups) * repeats)
        arr = {
            k: np.array([[m[k] for m in run] for run in runs]) for k in ("ba", "tpr", "tnr", "auc")
        }
        result["results"][spec] = {
            "budgets_pct": [float(b) for b in budgets_pct],
            "ba": arr["ba"].mean(0).tolist(),
            "ba_sd": arr["ba"].std(0).tolist(),
            "tpr": arr["tpr"].mean(0).tolist(),
            "tnr": arr["tnr"].mean(0).tolist(),
            "auc": arr["auc"].mean(0).tolist(),
        }
        result["policies"][spec] = asdict(policy)
        result["seconds"][spec] = round(time.perf_counter() - t0, 2)
        log.info(
            "%s: BA %s (%.1f s)",
            spec,
            np.round(arr["ba"].mean(0), 3).tolist(),
            result["seconds"][spec],
        )
    return result


def plot_results(result: dict, path) -> None:
    """BA against budget, one line per strategy, the human baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, res in result["results"].items():
        ax.errorbar(
            res["budgets_pct"],
            res["ba"],
            yerr=np.array(res["ba_sd"])
            / math.sqrt(max(1, result.get("repeats", 1) * len(result.get("oracles", [1])))),
            marker="o",
            capsize=3,
            label=name,
        )
    ax.axhline(result["human"]["ba"], ls="--", color="k", label="human")
    ax.set_xlabel("candidates labelled (%)")
    ax.set_ylabel("balanced accuracy")
    ax.set_title(f"{result['dataset']} (N = {result['n_candidates']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_simulation(
    features_path,
    *,
    oracle: str = "all",
    strategies=("random", "cal", "dal", "dcal"),
    budgets_pct=(1, 2, 3, 5),
    repeats: int = 5,
    seed: int = 0,
    threshold: float | None = None,
    json_out=None,
    plot_out=None,
    device: str = "cpu",
    config=None,
) -> dict:
    """Load ``features_path``, simulate, write the JSON (and the plot); returns the result."""
    import json

    name, x, ann, names = load_labelled_features(features_path)
    result = simulate(
        x,
        ann,
        names,
        list(strategies),
        list(budgets_pct),
        oracle=oracle,
        repeats=repeats,
        seed=seed,
        threshold=threshold,
        device=device,
        dataset=name,
        config=config,
    )
    if json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(result, indent=1))
    if plot_out is not None:
        plot_results(result, plot_out)
    return result
