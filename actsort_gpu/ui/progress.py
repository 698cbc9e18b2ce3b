"""Progress read-outs and the "labelling more no longer changes decisions" signal.

No peer tool tells the annotator when to stop. We combine two cheap, label-free-of-extra-work
measurements, both updated after every human label:

1. **Decision churn**: the fraction of all candidates whose model decision (cell / not a cell)
   differs between now and ``window`` labels ago. When the last ``window`` labels flipped fewer
   than ``churn_tol`` of the decisions, more labels of the same kind are unlikely to change the
   exported table much.
2. **Prequential accuracy**: before each human label is applied, the model's decision for that
   candidate is compared with the human's answer (a test on a point the model never trained
   on). The balanced accuracy over the last ``acc_window`` labels estimates the model's current
   accuracy; because active learning asks about the hardest candidates, it is pessimistic
   (a lower bound on the accuracy over all candidates).

The signal fires ("stable") when churn < ``churn_tol`` over the last ``window`` labels, and at
least ``min_labels`` labels have been given. scripts/bench_app.py --stopping-study validates it
on the ActSort benchmark (benchmarks/RESULTS.md, "Annotation page (issue 6)").
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..labels import CELL, NOT_CELL, balanced_accuracy, class_rates, final_labels

__all__ = [
    "StabilityTracker",
    "Stability",
    "counts",
    "labelling_speed",
    "binary_scores",
    "truth_report",
    "error_kinds",
]


@dataclass(frozen=True)
class Stability:
    """Read-out of :class:`StabilityTracker`.

    n_labels : human labels recorded so far in this session
    churn : fraction of candidates whose decision changed over the last ``window`` labels
        (None until ``window`` labels were recorded)
    prequential_ba : balanced accuracy of the model's decision on the last labelled candidates,
        taken before each label was applied (None until both classes were seen)
    stable : churn < tolerance and enough labels
    """

    n_labels: int
    window: int
    churn: float | None
    churn_tol: float
    prequential_ba: float | None
    n_scored: int
    stable: bool

    def text(self) -> str:
        if self.churn is None:
            need = self.window - self.n_labels
            return (
                f"Collecting: the stopping signal needs {max(need, 1)} more label(s) in "
                f"this session."
            )
        state = "STABLE" if self.stable else "still changing"
        return (
            f"{state}: the last {self.window} labels changed {100 * self.churn:.2f} % of "
            f"decisions (stable below {100 * self.churn_tol:.2f} %)."
        )


class StabilityTracker:
    """Records decisions and prequential outcomes label by label (one tracker per store).

    window : labels over which the decision churn is measured
    churn_tol : stable when fewer than this fraction of decisions changed over ``window``
    acc_window : labels over which the prequential balanced accuracy is averaged
    min_labels : never stable before this many labels in total (human labels in the store)
    """

    def __init__(
        self, window: int = 20, churn_tol: float = 0.005, acc_window: int = 50, min_labels: int = 30
    ):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 0 < churn_tol < 1:
            raise ValueError(f"churn_tol must lie in (0, 1), got {churn_tol}")
        self.window = int(window)
        self.churn_tol = float(churn_tol)
        self.min_labels = int(min_labels)
        self._decisions: deque = deque(maxlen=self.window + 1)
        self._outcomes: deque = deque(maxlen=int(acc_window))
        self.n_labels = 0
        self.n_total = 0

    def before_label(self, decision: int | None, label: int) -> None:
        """The model's decision (+1 / -1, None if untrained) for a candidate about to get the
        human label ``label`` (+1 / -1; 0 = unlabel and 2 = unsure: not scored, no answer)."""
        if decision is not None and label in (CELL, NOT_CELL):
            self._outcomes.append((int(decision), int(label)))

    def after_label(self, decisions: np.ndarray | None, n_human_labels: int) -> None:
        """Decisions (N,) int8 after the label was learnt (None: model not trained yet)."""
        self.n_labels += 1
        self.n_total = int(n_human_labels)
        if decisions is None:
            self._decisions.clear()
            return
        self._decisions.append(np.asarray(decisions, np.int8).copy())

    def reset_decisions(self) -> None:
        """Forget recorded decisions (after a threshold or strategy change, whose flips are
        the user's choice, not an effect of labelling)."""
        self._decisions.clear()

    def state(self) -> Stability:
        churn = None
        if len(self._decisions) == self.window + 1:
            churn = float((self._decisions[0] != self._decisions[-1]).mean())
        ba, n_scored = prequential_ba(list(self._outcomes))
        stable = churn is not None and churn < self.churn_tol and self.n_total >= self.min_labels
        return Stability(self.n_labels, self.window, churn, self.churn_tol, ba, n_scored, stable)


def prequential_ba(outcomes: list[tuple[int, int]]) -> tuple[float | None, int]:
    """Balanced accuracy of (decision, label) pairs; None while a class is missing."""
    if not outcomes:
        return None, 0
    a = np.asarray(outcomes)
    ba = balanced_accuracy(a[:, 0], a[:, 1])
    return (None if np.isnan(ba) else ba), len(a)


def counts(human: np.ndarray, decisions: np.ndarray | None) -> dict:
    """Cell / not-cell / unlabelled counts for the human labels, the model (decisions on all
    candidates) and overall (human label where given, else the model's decision)."""
    human = np.asarray(human)
    out = {
        "human": {
            "cell": int((human > 0).sum()),
            "not": int((human < 0).sum()),
            "unlabelled": int((human == 0).sum()),
        }
    }
    if decisions is None:
        out["model"] = {"cell": 0, "not": 0, "unlabelled": len(human)}
        out["overall"] = dict(out["human"])
    else:
        d = np.asarray(decisions)
        out["model"] = {"cell": int((d > 0).sum()), "not": int((d < 0).sum()), "unlabelled": 0}
        final = final_labels(human, d)
        out["overall"] = {
            "cell": int((final > 0).sum()),
            "not": int((final < 0).sum()),
            "unlabelled": 0,
        }
    return out


def labelling_speed(times_s: list[float], window: int = 20) -> float | None:
    """Labels per minute over the last ``window`` label times (seconds, increasing)."""
    t = list(times_s)[-(window + 1) :]
    if len(t) < 2 or t[-1] <= t[0]:
        return None
    return 60.0 * (len(t) - 1) / (t[-1] - t[0])


def binary_scores(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Scores of +1 / -1 predictions against +1 / -1 truth (same length).

    Returns n, accuracy, tpr (cells found), tnr (non-cells rejected), balanced accuracy
    (mean of tpr and tnr), fp (predicted cell, truly not), fn (predicted not, truly a cell).
    A rate whose class is absent is None, and so is the balanced accuracy then.
    """
    tpr, tnr = class_rates(pred, truth)
    pred, truth = np.asarray(pred), np.asarray(truth)
    pos, neg = truth > 0, truth < 0
    return {
        "n": int(pred.size),
        "accuracy": float((np.sign(pred) == np.sign(truth)).mean()) if pred.size else None,
        "tpr": tpr,
        "tnr": tnr,
        "ba": None if tpr is None or tnr is None else 0.5 * (tpr + tnr),
        "fp": int(((pred > 0) & neg).sum()),
        "fn": int(((pred < 0) & pos).sum()),
    }


def truth_report(
    human: np.ndarray, final: np.ndarray, model: np.ndarray | None, truth: np.ndarray
) -> dict:
    """How the session's labels compare with the known truth (synthetic demo stores).

    human : (N,) int8 human labels +1 / -1 / 0; final : (N,) int8 human label where given,
    else the model's decision; model : (N,) int8 decisions +1 / -1 (None: untrained);
    truth : (N,) int8 +1 cell / -1 not a cell.

    Returns {"n", "human": scores over the labelled candidates plus "n_labelled" and
    "agreement" (fraction of human labels equal to the truth), "final": scores over all,
    "model": scores over all (None when untrained)} (scores: :func:`binary_scores`).
    """
    human, final, truth = (np.asarray(a) for a in (human, final, truth))
    if not (human.shape == final.shape == truth.shape) or human.ndim != 1:
        raise ValueError(
            f"human {human.shape}, final {final.shape} and truth {truth.shape} "
            "must be equal-length 1-D arrays"
        )
    bad = np.setdiff1d(np.unique(truth), [-1, 1])
    if bad.size:
        raise ValueError(f"truth must hold only +1 / -1, found {bad.tolist()}")
    lab = human != 0
    h = binary_scores(human[lab], truth[lab])
    h["n_labelled"] = int(lab.sum())
    h["agreement"] = h.pop("accuracy")
    return {
        "n": int(truth.size),
        "human": h,
        "final": binary_scores(final, truth),
        "model": None if model is None else binary_scores(np.asarray(model), truth),
    }


def error_kinds(final: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N,) int8: +1 false positive (called a cell, truly not), -1 false negative (called not
    a cell, truly a cell), 0 correct."""
    final, truth = np.asarray(final), np.asarray(truth)
    return np.where(
        (final > 0) & (truth < 0), 1, np.where((final < 0) & (truth > 0), -1, 0)
    ).astype(np.int8)
