"""Active-learning simulation with recorded annotators (docs/actsort_reference.md section 7).

Protocol: each annotator in turn is the oracle that answers queries; the ground truth is the
majority vote of the other annotators (a tie counts as "not cell", as MATLAB ``mode`` returns
the smaller value); each run is seeded with 3 random oracle-cells and 3 random oracle-non-cells;
after each query the classifier is refitted; at each budget (% of candidates queried after the
seed) the classifier's decisions on all candidates are scored against the ground truth (human
labels already given are NOT substituted, bug B14, as in ActSort), and on the candidates not
labelled yet (``ba_unlabelled``: the all-candidates figure flatters small sets). Results are
means over oracles x repeats; the human baseline is each oracle's own labels against the same
majority.

With a pretrained classifier (``classifier=``, from other animals) no seed labels are given:
the classifier is the cold start, and budget 0 scores it alone. A strategy name ending in
``+noclf`` runs without it (seeded as usual), so one run compares both on the same seeds.
:func:`leave_one_out` runs the cross-animal protocol: for each file, a classifier trained on the
others' majority labels, simulated on it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from .. import CELL, NOT_CELL
from ..labels import class_rates
from ..outputs import check_replaceable, replace_whole
from .engine import Engine, parse_policy, resolve_inputs_start
from .linear import zscore_columns
from .sources import load_labelled, load_labelled_many, majority_labels

log = logging.getLogger(__name__)

__all__ = [
    "load_labelled_features",
    "simulate",
    "binary_metrics",
    "auc_actsort",
    "plot_results",
    "check_outputs",
]

PLOT_SUFFIXES = (".png", ".svg", ".pdf")
_PLOT_MARK = "actsort-gpu simulate"  # in every plot's metadata: an earlier plot is replaceable


def load_labelled_features(path) -> tuple[str, np.ndarray, np.ndarray, list[str]]:
    """(dataset name, raw features (N, F) float32, labels (n_annotators, N) int8 +1 / -1 / 0,
    annotator names) of a ``.mat``, a CSV or a sort store (:func:`.sources.load_labelled`)."""
    lf = load_labelled(path)
    return lf.name, lf.features, lf.annotations, lf.annotators


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


#: a feature column whose ROC AUC against the labels is within this of 0 or 1 separates them
LEAK_AUC_TOL = 0.005


def label_leaks(features: np.ndarray, feature_names, labels: np.ndarray) -> dict[str, float]:
    """{column name: ROC AUC} of the columns of ``features`` (N, F) that separate the labelled
    candidates (``labels`` (N,) +1 / -1; 0 left out) all but perfectly (AUC within
    :data:`LEAK_AUC_TOL` of 1 or 0). Labels derived from a feature (Suite2p's ``iscell`` given
    as ``--labels`` to a store that keeps its ``suite2p_iscell`` column) make a simulation
    measure that column, not the learner; {} when a class has no label."""
    from sklearn.metrics import roc_auc_score

    known = labels != 0
    y = labels[known] > 0
    if y.all() or not y.any():
        return {}
    x = np.nan_to_num(np.asarray(features, np.float64)[known])
    leaks = {}
    for name, column in zip(feature_names, x.T):
        auc = float(roc_auc_score(y, column))
        if min(auc, 1.0 - auc) <= LEAK_AUC_TOL:
            leaks[name] = round(auc, 4)
    return leaks


def _majority(others: np.ndarray) -> np.ndarray:
    return np.where(others.sum(0) > 0, 1, -1).astype(np.int8)


def _run(
    features, oracle, truth, policy, budgets_q, seed, device, n_seed=3, pretrained=None, extra=None
):
    eng = Engine(features, policy, device=device, seed=seed, pretrained=pretrained, extra=extra)
    rng = np.random.default_rng(seed + 7919)
    pos, neg = np.flatnonzero(oracle > 0), np.flatnonzero(oracle < 0)
    if pretrained is None:  # with a classifier, it is the cold start: no seed labels
        seeds = np.concatenate(
            [
                rng.choice(pos, min(n_seed, len(pos)), replace=False),
                rng.choice(neg, min(n_seed, len(neg)), replace=False),
            ]
        )
        for i in seeds:
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
        todo = eng.labels == 0
        m["ba_unlabelled"] = binary_metrics(pred[todo], truth[todo])["ba"]
        m["model"] = eng.model_in_use
        m["inputs"] = eng.inputs_in_use
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
    classifier=None,
    feature_names=None,
    feature_version: str = "",
    embeddings=None,
    embeddings_supervised: bool = False,
) -> dict:
    """Run the protocol; returns the JSON-ready result dict (schema in the module docstring of
    ``actsort_gpu.cli.cmd_simulate``).

    features : (N, F) raw (z-scored here, ddof=1, as ActSort)
    annotations : (n_annotators, N) +1/-1
    strategies : names accepted by ``engine.parse_policy`` (random, cal, dal, dcal,
        faithful-dcal, default, dcal-0.3, options after '+')
    budgets_pct : % of candidates queried after the 6 seed labels (after none with a
        classifier; 0 then scores the classifier alone)
    oracle : an annotator name or "all"
    threshold : decision threshold for non-default strategies (None: 0.65, ActSort scripts)
    classifier : a ``transfer.PortableClassifier`` to start from (strategies ending in
        ``+noclf`` run without it); its feature set must be ``feature_names`` /
        ``feature_version`` (checked when given)
    embeddings : (N, D) learned embeddings (a store's ``embeddings/matrix``) or None. A
        strategy's options name its inputs: ``+feat`` (features alone), ``+emb`` (embeddings
        alone), ``+feat+emb`` (both, the embedding block scaled as the learner does); without
        them, what the product does (``config.use_embeddings``: by default the learner chooses
        per run between features and features + embeddings, ``Engine`` inputs "auto")
    embeddings_supervised : their encoder was trained with labels: what ``inputs_start="auto"``
        (``active.embeddings_start``) starts from (``engine.resolve_inputs_start``)
    """
    ann = np.asarray(annotations)
    n_ann, n = ann.shape
    if features.shape[0] != n:
        raise ValueError(f"features have {features.shape[0]} rows, labels {n} candidates")
    if embeddings is not None and np.asarray(embeddings).shape[0] != n:
        raise ValueError(f"embeddings have {np.asarray(embeddings).shape[0]} rows, labels {n}")
    if oracle == "all":
        oracles = list(range(n_ann))
    elif oracle in annotator_names:
        oracles = [annotator_names.index(oracle)]
    else:
        raise ValueError(f"--oracle {oracle!r}: expected 'all' or one of {annotator_names}")
    if n_ann < 2:
        # One label column (e.g. synthetic truth): it is both the oracle and the ground truth.
        log.info("one annotator: the oracle's labels are also the ground truth")
    if any(not 0 <= b < 100 for b in budgets_pct):
        raise ValueError(
            f"--budgets must be >= 0 % and below 100 % (at 100 % no candidate is left to "
            f"score), got {budgets_pct}"
        )
    if classifier is not None and feature_names is not None:
        classifier.check_compatible(list(feature_names), feature_version)
    budgets_q = [int(math.floor(b / 100.0 * n + 0.5)) for b in budgets_pct]
    if sorted(budgets_q) != budgets_q:
        raise ValueError(f"--budgets must increase, got {budgets_pct}")
    inputs = _InputSets(features, embeddings, config)
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
    pretrained = None
    if classifier is not None:
        result["classifier"] = {
            "id": classifier.id,
            "sources": classifier.sources,
            "labels": classifier.meta.get("labels", ""),
            "n_rows": int(len(classifier.labels)),
        }
        pretrained = (classifier.features, classifier.labels, classifier.weights)
    for spec in strategies:
        use_clf = classifier is not None and not spec.endswith("+noclf")
        policy_spec, which = _split_inputs(spec.removesuffix("+noclf"))
        policy = resolve_inputs_start(
            parse_policy(policy_spec, threshold, config), embeddings_supervised
        )
        z, extra = inputs.get(which, policy)
        if which == "feat+emb":
            policy = replace(policy, inputs="both")
        if use_clf:
            extra = None  # the classifier fixes the inputs
        if use_clf and z.shape[1] != classifier.features.shape[1]:
            raise ValueError(
                f"strategy {spec!r}: the classifier was trained on {classifier.features.shape[1]} "
                f"feature columns, this input set has {z.shape[1]} (use '+feat' or '+noclf')"
            )
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
                        pretrained=pretrained if use_clf else None,
                        extra=extra,
                    )
                )
                if progress is not None:
                    progress(spec, len(runs), len(setups) * repeats)
        keys = ("ba", "tpr", "tnr", "auc", "ba_unlabelled")
        arr = {k: np.array([[m[k] for m in run] for run in runs]) for k in keys}
        result["results"][spec] = {
            "budgets_pct": [float(b) for b in budgets_pct],
            "ba": arr["ba"].mean(0).tolist(),
            "ba_sd": arr["ba"].std(0).tolist(),
            "tpr": arr["tpr"].mean(0).tolist(),
            "tnr": arr["tnr"].mean(0).tolist(),
            "auc": arr["auc"].mean(0).tolist(),
            "ba_unlabelled": arr["ba_unlabelled"].mean(0).tolist(),
            "ba_unlabelled_sd": arr["ba_unlabelled"].std(0).tolist(),
            "classifier": use_clf,
        }
        if use_clf:  # which model answered at each budget: {model: number of runs}
            result["results"][spec]["model_in_use"] = [
                dict(Counter(run[b]["model"] for run in runs)) for b in range(len(budgets_q))
            ]
        if extra is not None:  # which inputs the classifier used: {input set: number of runs}
            result["results"][spec]["inputs_in_use"] = [
                dict(Counter(run[b]["inputs"] for run in runs)) for b in range(len(budgets_q))
            ]
        result["policies"][spec] = {**asdict(policy), "input_set": inputs.name(which, extra)}
        result["seconds"][spec] = round(time.perf_counter() - t0, 2)
        log.info(
            "%s: BA %s (%.1f s)",
            spec,
            np.round(arr["ba"].mean(0), 3).tolist(),
            result["seconds"][spec],
        )
    return result


INPUT_OPTIONS = ("feat", "emb")


def _split_inputs(spec: str) -> tuple[str, str | None]:
    """'default+feat+emb' -> ('default', 'feat+emb'); no input option -> (spec, None)."""
    base, *opts = spec.split("+")
    chosen = [o for o in INPUT_OPTIONS if o in opts]
    rest = [o for o in opts if o not in INPUT_OPTIONS]
    return "+".join([base, *rest]), ("+".join(chosen) if chosen else None)


class _InputSets:
    """The learner's inputs of one dataset, each block z-scored once: features and embeddings."""

    def __init__(self, features, embeddings, config):
        self.features, self.embeddings = features, embeddings
        self._z: dict[str, np.ndarray] = {}

    def _block(self, name: str) -> np.ndarray:
        if name not in self._z:
            raw = self.features if name == "feat" else self.embeddings
            if raw is None:
                raise ValueError(
                    "input set with embeddings: this dataset has none (run `actsort embed`)"
                )
            self._z[name] = zscore_columns(raw)
        return self._z[name]

    @staticmethod
    def name(which: str | None, extra) -> str:
        return which or ("feat (+emb by choice)" if extra is not None else "feat")

    def get(self, which: str | None, policy) -> tuple[np.ndarray, np.ndarray | None]:
        """(inputs (N, F), extra block (N, D) or None) for the Engine: 'feat', 'emb',
        'feat+emb', or None = what ``policy.inputs`` does with this dataset."""
        if which == "emb":
            return self._block("emb"), None
        if which == "feat+emb" or (
            which is None and self.embeddings is not None and policy.inputs != "features"
        ):
            return self._block("feat"), self._block("emb")
        return self._block("feat"), None


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
    key = "Software" if Path(path).suffix.lower() == ".png" else "Creator"
    fig.savefig(path, dpi=120, metadata={key: _PLOT_MARK})  # what _is_own_plot looks for
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
    classifier=None,
    labels_file=None,
) -> dict:
    """Load ``features_path``, simulate, write the JSON (and the plot); returns the result.

    classifier : a portable classifier file (or a loaded ``PortableClassifier``) to start from
    labels_file : ``.npy`` labels replacing the input's own (``sources.load_labelled``)
    """
    from .transfer import PortableClassifier, load_classifier

    check_outputs(json_out, plot_out)
    data = load_labelled(features_path, labels_file=labels_file)
    if classifier is not None and not isinstance(classifier, PortableClassifier):
        path = classifier
        classifier = load_classifier(path)
        try:
            classifier.check_compatible(data.feature_names, data.feature_version)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc} ({features_path})") from None
    _check_both_classes(data, features_path)
    result = simulate(
        data.features,
        data.annotations,
        data.annotators,
        list(strategies),
        list(budgets_pct),
        oracle=oracle,
        repeats=repeats,
        seed=seed,
        threshold=threshold,
        device=device,
        dataset=data.name,
        config=config,
        classifier=classifier,
        feature_names=data.feature_names,
        feature_version=data.feature_version,
        embeddings=data.embeddings,
        embeddings_supervised=data.embeddings_supervised,
    )
    leaks = label_leaks(data.features, data.feature_names, majority_labels(data.annotations))
    if leaks:
        log.warning(
            "%s: feature column(s) %s separate the labels all but perfectly (ROC AUC %s): were "
            "the labels derived from them? The simulation then measures those columns",
            features_path,
            ", ".join(leaks),
            ", ".join(f"{v:.3f}" for v in leaks.values()),
        )
        result["label_leaks"] = leaks
    _write(result, json_out, plot_out)
    return result


def _check_both_classes(data, path) -> None:
    """Refuse labels a simulation cannot score (every figure would be 0.5): each annotator's
    row needs cells and not cells. A store's empty journal says where labels come from."""
    for name, row in zip(data.annotators, data.annotations):
        n_cell, n_not = int((row == CELL).sum()), int((row == NOT_CELL).sum())
        if n_cell and n_not:
            continue
        hint = ""
        if Path(path).is_dir() and name == "journal":
            hint = (
                ": the store has no truth/ arrays and its journal not both classes (a synthetic "
                "recording's truth: `actsort ingest ... --truth DIR/truth.npz`; labels from "
                "outside: --labels FILE.npy; or label with `actsort sort`)"
            )
        raise ValueError(
            f"{path}: labels {name!r} hold {n_cell} cells and {n_not} not cells; a simulation "
            f"needs both{hint}"
        )


def check_outputs(json_out, plot_out) -> None:
    """Before a simulation runs: a plot format it can write, and no existing file at either
    path that is not an earlier simulation output (``outputs.check_replaceable``)."""
    if plot_out is not None and Path(plot_out).suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(f"--plot {plot_out}: expected a {', '.join(PLOT_SUFFIXES)} file")
    if json_out is not None:
        check_replaceable(json_out, _is_own_json, "simulation JSON")
    if plot_out is not None:
        check_replaceable(plot_out, _is_own_plot, "simulation plot")


def _is_own_json(path: Path) -> bool:
    import json

    with open(path) as fh:
        data = json.load(fh)
    return isinstance(data, dict) and ("results" in data or "leave_one_out" in data)


def _is_own_plot(path: Path) -> bool:
    """A plot this module wrote carries ``_PLOT_MARK`` (PNG Software, SVG / PDF Creator)."""
    if path.suffix.lower() == ".png":
        from PIL import Image

        with Image.open(path) as image:
            return image.text.get("Software") == _PLOT_MARK
    return path.stat().st_size < 50e6 and _PLOT_MARK.encode() in path.read_bytes()


def _write(result: dict, json_out, plot_out) -> None:
    import json

    if json_out is not None:
        replace_whole(json_out, lambda tmp: tmp.write_text(json.dumps(result, indent=1)))
    if plot_out is not None and "results" in result:
        replace_whole(plot_out, lambda tmp: plot_results(result, tmp))


def leave_one_out(
    files,
    *,
    strategies=("default", "default+noclf"),
    budgets_pct=(0, 0.5, 1, 2, 5),
    labels: str = "majority",
    json_out=None,
    progress=None,
    **options,
) -> dict:
    """The cross-animal protocol: for each file, train a classifier on the others (``labels``
    of each, :func:`.transfer.train_classifier`) and simulate on it with that classifier.

    files : at least two labelled feature files (``.mat``, CSV, sort stores) with one feature set
    options : passed to :func:`simulate` (oracle, repeats, seed, threshold, device, config)
    Returns ``{"leave_one_out": [one simulate() result per file, with its classifier's
    training report under "training"], "files": [...]}``.
    """
    from .transfer import train_classifier

    check_outputs(json_out, None)
    data = load_labelled_many(files)
    if len(data) < 2:
        raise ValueError(f"--leave-one-out needs at least two files, got {list(files)}")
    out = {"files": [str(f) for f in files], "labels": labels, "leave_one_out": []}
    for k, target in enumerate(data):
        others = [d for j, d in enumerate(data) if j != k]
        clf, report = train_classifier(others, labels=labels)
        log.info("leave-one-out: %s from %s", target.name, [d.name for d in others])
        try:
            clf.check_compatible(target.feature_names, target.feature_version)
        except ValueError as exc:
            raise ValueError(f"{target.path}: {exc}") from None
        result = simulate(
            target.features,
            target.annotations,
            target.annotators,
            list(strategies),
            list(budgets_pct),
            dataset=target.name,
            classifier=clf,
            progress=progress,
            **options,
        )
        result["training"] = {"cv_ba": report.cv_ba, "sources": report.sources}
        out["leave_one_out"].append(result)
    _write(out, json_out, None)
    return out
