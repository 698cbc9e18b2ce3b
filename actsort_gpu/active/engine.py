"""The active-learning core shared by the learner (page, CLI) and the simulator.

``Policy`` holds every choice that changes what is queried or decided; ``Engine`` holds the
z-scored feature matrix on the device, the current labels, the warm-started classifier and the
discriminator, and answers: fit, probabilities, decisions, next query.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import torch

from .linear import L1Logistic
from .model_select import LAMBDA_GRID, balanced_weights, cv_lambda_scale
from .strategies import STRATEGIES, Discriminator, audit_order, cold_start_strategy, query

log = logging.getLogger(__name__)

__all__ = ["Policy", "Engine", "parse_policy", "FAITHFUL", "product_policy"]

BALANCE_MODES = ("none", "weights")


@dataclass(frozen=True)
class Policy:
    """What the learner does.

    strategy : random | ordered | cal | dal | dcal
    dcal_weight : user weight w of DCAL
    clip_weight : clip the adaptive DCAL weight at 0 (bug B13); False = ActSort as published
    threshold : decision threshold on P(cell) (strict >)
    balance : "none" (ActSort) | "weights" (each class carries half the loss: class-prior
        correction, makes 0.5 the balanced-accuracy threshold)
    cold_start_per_class : random, then DAL, until this many cells and non-cells are labelled
    lambda_scale : lam = lambda_scale / n_labelled (1 = fitclinear 'auto')
    diverse_batches : k > 1 queries penalise near-duplicates
    disc_refresh : DAL/DCAL discriminator: 1 = fresh unlabelled subsample every query (ActSort);
        K > 1 = keep it, redraw every K queries, at most 5 warm-started Newton steps per query
        (same decisions to within run-to-run noise, benchmarks/RESULTS.md; ~10x cheaper)
    lambda_cv : choose lambda_scale x {1, 2, 4, 8} by 5-fold CV of the (balanced) deviance on
        the labelled rows once >= 50 labels with >= 10 per class, redone every 10 new labels
        (``model_select``); before that, lambda_scale (ActSort: off, lam = 1/n always)
    pseudo_weight : self-training (off at 0): once each class has >= 10 labels, after each fit
        the unlabelled candidates with P(cell) >= pseudo_confidence or <= 1 - pseudo_confidence
        (the most confident first, at most pseudo_max_ratio x the number of labels) join the
        training rows as pseudo-labels with this weight (class-balanced among themselves when
        ``balance`` is "weights") and the classifier is refitted once (warm start)
    pseudo_confidence : see pseudo_weight, in (0.5, 1)
    pseudo_max_ratio : see pseudo_weight, > 0
    """

    strategy: str = "dcal"
    dcal_weight: float = 0.5
    clip_weight: bool = True
    threshold: float = 0.5
    balance: str = "weights"
    cold_start_per_class: int = 3
    lambda_scale: float = 1.0
    diverse_batches: bool = True
    disc_refresh: int = 20
    lambda_cv: bool = True
    pseudo_weight: float = 0.0
    pseudo_confidence: float = 0.95
    pseudo_max_ratio: float = 2.0

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.balance not in BALANCE_MODES:
            raise ValueError(f"balance must be one of {BALANCE_MODES}, got {self.balance!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {self.threshold}")
        if not 0.0 <= self.dcal_weight <= 1.0:
            raise ValueError(f"dcal_weight must lie in [0, 1], got {self.dcal_weight}")
        if self.disc_refresh < 1:
            raise ValueError(f"disc_refresh must be >= 1, got {self.disc_refresh}")
        if not 0.0 <= self.pseudo_weight <= 1.0:
            raise ValueError(f"pseudo_weight must lie in [0, 1], got {self.pseudo_weight}")
        if not 0.5 < self.pseudo_confidence < 1.0:
            raise ValueError(
                f"pseudo_confidence must lie in (0.5, 1), got {self.pseudo_confidence}"
            )
        if not self.pseudo_max_ratio > 0:
            raise ValueError(f"pseudo_max_ratio must be > 0, got {self.pseudo_max_ratio}")


# ActSort's benchmark scripts (reference section 7): threshold 0.65, no balancing, no clipping.
FAITHFUL = Policy(
    strategy="dcal",
    dcal_weight=0.5,
    clip_weight=False,
    threshold=0.65,
    balance="none",
    diverse_batches=False,
    disc_refresh=1,
    lambda_cv=False,
)


def product_policy(config=None) -> Policy:
    """The product default, from ``ActiveConfig`` (or its defaults)."""
    if config is None:
        from ..config import ActiveConfig

        config = ActiveConfig()
    return Policy(
        strategy=config.strategy,
        dcal_weight=config.dcal_weight,
        clip_weight=True,
        threshold=config.threshold,
        balance=config.balance,
        cold_start_per_class=config.cold_start_per_class,
        lambda_scale=config.lambda_scale,
        disc_refresh=getattr(config, "disc_refresh", Policy.disc_refresh),
        lambda_cv=getattr(config, "lambda_cv", Policy.lambda_cv),
    )


def parse_policy(spec: str, threshold: float | None = None, config=None) -> Policy:
    """A simulator strategy name -> Policy.

    ``default`` : the product policy (its own threshold);
    ``faithful-dcal`` : ActSort DCAL, w = 0.5, unclipped;
    ``random|ordered|cal|dal|dcal`` : ActSort semantics (balance none), DCAL clipped, w = 0.5;
    ``dcal-0.3`` : DCAL with w = 0.3 (ActSort naming).
    Options after ``+``: ``bal`` (class-balanced weights), ``thrX`` (threshold X),
    ``noclip``, ``lamX`` (lambda_scale X), ``refreshK`` (discriminator subsample kept K
    queries), ``cv``/``nocv`` (lambda by cross-validation), ``pseudoW`` (self-training with
    pseudo-label weight W), ``pconfX`` (its confidence), ``pmaxR`` (its cap, x labels);
    e.g. ``dal+bal``, ``default+thr0.5``, ``default+pseudo0.2``.
    ``threshold`` (the --threshold argument) applies to non-default specs without ``thrX``.
    """
    base, *opts = spec.strip().split("+")
    if base == "default":
        pol = product_policy(config)
    elif base == "faithful-dcal":
        pol = replace(FAITHFUL, threshold=FAITHFUL.threshold if threshold is None else threshold)
    else:
        w = 0.5
        name = base
        if base.startswith("dcal-"):
            name, w = "dcal", float(base[5:])
        if name not in STRATEGIES:
            raise ValueError(
                f"strategy {spec!r}: unknown name {base!r}; expected one of "
                f"{STRATEGIES + ('default', 'faithful-dcal')} or dcal-<w>"
            )
        pol = replace(
            FAITHFUL,
            strategy=name,
            dcal_weight=w,
            clip_weight=True,
            threshold=FAITHFUL.threshold if threshold is None else threshold,
        )
    for opt in opts:
        if opt == "bal":
            pol = replace(pol, balance="weights")
        elif opt == "nobal":
            pol = replace(pol, balance="none")
        elif opt == "noclip":
            pol = replace(pol, clip_weight=False)
        elif opt.startswith("thr"):
            pol = replace(pol, threshold=float(opt[3:]))
        elif opt.startswith("lam"):
            pol = replace(pol, lambda_scale=float(opt[3:]))
        elif opt == "cv":
            pol = replace(pol, lambda_cv=True)
        elif opt == "nocv":
            pol = replace(pol, lambda_cv=False)
        elif opt.startswith("refresh"):
            pol = replace(pol, disc_refresh=int(opt[7:]))
        elif opt.startswith("pseudo"):
            pol = replace(pol, pseudo_weight=float(opt[6:]))
        elif opt.startswith("pconf"):
            pol = replace(pol, pseudo_confidence=float(opt[5:]))
        elif opt.startswith("pmax"):
            pol = replace(pol, pseudo_max_ratio=float(opt[4:]))
        else:
            raise ValueError(
                f"strategy {spec!r}: unknown option {opt!r} (known: bal, nobal, "
                "noclip, thrX, lamX, refreshK, cv, nocv, pseudoW, pconfX, pmaxR)"
            )
    return pol


class Engine:
    """Labels, classifier and queries over one (N, F) feature matrix.

    features : (N, F) float32, already z-scored per dataset (several datasets concatenated)
    policy : Policy
    device : torch device string
    seed : seeds the random draws of random queries and of the discriminator subsample
    pretrained : optional (features (M, F), labels (M,) +1/-1) rows from other animals, combined
        with the new labels by the paper-era fine-tuning rule (each new human label discards
        the most conflicting pretrained row).
    """

    def __init__(
        self,
        features,
        policy: Policy = Policy(),
        device: str = "cpu",
        seed: int = 0,
        pretrained=None,
    ):
        x = torch.as_tensor(np.asarray(features, dtype=np.float32), device=device)
        if x.ndim != 2:
            raise ValueError(f"features: expected (N, F), got {tuple(x.shape)}")
        self.x = x
        self.device = device
        self.policy = policy
        self.rng = np.random.default_rng(seed)
        self.labels = np.zeros(x.shape[0], dtype=np.int8)
        self.clf = L1Logistic(lambda_scale=policy.lambda_scale, device=device)
        self.disc = self._make_discriminator(policy)
        self.proba: torch.Tensor | None = None
        self._dirty = True
        self.pre_x = self.pre_y = None
        if pretrained is not None:
            px, py = pretrained
            self.pre_x = torch.as_tensor(np.asarray(px, dtype=np.float32), device=device)
            self.pre_y = np.asarray(py, dtype=np.int8).copy()
            if self.pre_x.shape[1] != x.shape[1]:
                raise ValueError(
                    f"pretrained rows have {self.pre_x.shape[1]} features, the data {x.shape[1]}"
                )
            self.pre_active = self.pre_y != 0

    @property
    def n(self) -> int:
        return self.x.shape[0]

    def _make_discriminator(self, policy: Policy) -> Discriminator:
        return Discriminator(
            device=self.device,
            refresh_every=policy.disc_refresh,
            max_iter=100 if policy.disc_refresh == 1 else 5,
        )

    def set_policy(self, policy: Policy) -> None:
        if policy.lambda_scale != self.policy.lambda_scale:
            self.clf = L1Logistic(lambda_scale=policy.lambda_scale, device=self.device)
        if policy.disc_refresh != self.policy.disc_refresh:
            self.disc = self._make_discriminator(policy)
        self.policy = policy
        self._dirty = True

    def set_label(self, index: int, label: int) -> None:
        """label in {+1, -1, 0}; the fit happens lazily (``fit``) so batches of labels cost one."""
        previous = self.labels[index]
        self.labels[index] = label
        if label != 0 and previous == 0 and self.pre_y is not None:
            self._n_new_labels = getattr(self, "_n_new_labels", 0) + 1
            self._discard_pending = getattr(self, "_discard_pending", 0) + 1
        self._dirty = True

    def set_labels(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int8)
        if labels.shape != self.labels.shape:
            raise ValueError(f"labels: expected shape {self.labels.shape}, got {labels.shape}")
        self.labels = labels.copy()
        self._dirty = True

    def _training_rows(self):
        idx = np.flatnonzero(self.labels)
        x = self.x[torch.as_tensor(idx, device=self.device)]
        y = self.labels[idx].astype(np.float64)
        if self.pre_y is not None and self.pre_active.any():
            pidx = np.flatnonzero(self.pre_active)
            x = torch.cat([x, self.pre_x[torch.as_tensor(pidx, device=self.device)]])
            y = np.concatenate([y, self.pre_y[pidx].astype(np.float64)])
        return x, y

    def fit(self) -> torch.Tensor | None:
        """Refit (warm start) on the labelled rows and rescore all N; returns P(cell) or None
        while one class is missing (the classifier is not trained then: ActSort leaves
        probabilities at 0, we return None and decisions are all 'not cell')."""
        if not self._dirty:
            return self.proba
        x, y = self._training_rows()
        if (y > 0).sum() == 0 or (y < 0).sum() == 0:
            self.proba = None
            self._dirty = False
            return None
        w = balanced_weights(y) if self.policy.balance == "weights" else None
        self.clf.lambda_scale = self._lambda_scale(x, y)
        self.clf.fit(
            x,
            torch.as_tensor(y, device=self.device),
            None if w is None else torch.as_tensor(w, device=self.device),
        )
        if self.pre_y is not None and getattr(self, "_discard_pending", 0):
            self._discard_conflicting()
        self.proba = self.clf.predict_proba(self.x)
        if self.policy.pseudo_weight > 0:
            self._self_train(x, y, w)
        self._dirty = False
        return self.proba

    PSEUDO_MIN_PER_CLASS = 10

    def pseudo_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Self-training rows from the current probabilities: (indices (m,) int64, labels (m,)
        +1/-1) of the unlabelled candidates with P(cell) >= c or <= 1 - c (c =
        policy.pseudo_confidence), most confident first, at most pseudo_max_ratio x the
        number of labelled rows; empty before a fit or with < 10 labels of either class."""
        pol = self.policy
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int8))
        n_pos, n_neg = int((self.labels > 0).sum()), int((self.labels < 0).sum())
        if self.proba is None or min(n_pos, n_neg) < self.PSEUDO_MIN_PER_CLASS:
            return empty
        p = self.proba.detach().cpu().numpy().astype(np.float64)
        conf = np.abs(p - 0.5)
        cand = np.flatnonzero((self.labels == 0) & (conf >= pol.pseudo_confidence - 0.5))
        cap = int(pol.pseudo_max_ratio * (n_pos + n_neg))
        cand = cand[np.argsort(-conf[cand], kind="stable")][:cap]
        return cand.astype(np.int64), np.where(p[cand] > 0.5, 1, -1).astype(np.int8)

    def _self_train(self, x, y, w) -> None:
        """Refit once with the pseudo-labelled rows added (weight policy.pseudo_weight)."""
        idx, py = self.pseudo_labels()
        if idx.size == 0:
            return
        pw = (
            balanced_weights(py) if self.policy.balance == "weights" else np.ones(idx.size)
        ) * self.policy.pseudo_weight
        w_all = np.concatenate([np.ones(len(y)) if w is None else w, pw])
        x_all = torch.cat([x, self.x[torch.as_tensor(idx, device=self.device)]])
        y_all = np.concatenate([y, py.astype(np.float64)])
        self.clf.fit(
            x_all,
            torch.as_tensor(y_all, device=self.device),
            torch.as_tensor(w_all, device=self.device),
        )
        self.proba = self.clf.predict_proba(self.x)

    CV_MIN_LABELS = 50
    CV_MIN_PER_CLASS = 10
    CV_EVERY = 10

    def _lambda_scale(self, x, y) -> float:
        """policy.lambda_scale, times the CV choice when ``lambda_cv`` and enough labels."""
        base = self.policy.lambda_scale
        n = len(y)
        if (
            not self.policy.lambda_cv
            or n < self.CV_MIN_LABELS
            or min((y > 0).sum(), (y < 0).sum()) < self.CV_MIN_PER_CLASS
        ):
            return base
        last = getattr(self, "_cv_at", None)
        if last is None or abs(n - last[0]) >= self.CV_EVERY or last[1] != base:
            scale, _ = cv_lambda_scale(
                x,
                y,
                balanced=self.policy.balance == "weights",
                grid=tuple(base * g for g in LAMBDA_GRID),
                seed=n,
                device=self.device,
            )
            self._cv_at = (n, base, scale)
        return self._cv_at[2]

    def _discard_conflicting(self) -> None:
        """Paper-era fine_tune.m: after training, drop the pretrained row with the largest error
        (1 - p for cells, p for non-cells), one per new human label (bug B21 avoided: the error
        vector is sized by the pretrained labelled rows)."""
        while self._discard_pending and self.pre_active.any():
            pidx = np.flatnonzero(self.pre_active)
            p = self.clf.predict_proba(self.pre_x[torch.as_tensor(pidx, device=self.device)])
            p = p.detach().cpu().numpy().astype(np.float64)
            err = np.where(self.pre_y[pidx] > 0, 1.0 - p, p)
            self.pre_active[pidx[int(np.argmax(err))]] = False
            self._discard_pending -= 1
        self._discard_pending = 0

    def decisions(self) -> np.ndarray:
        """(N,) int8: +1 where P(cell) > threshold (strict), else -1; all -1 before a fit."""
        p = self.fit()
        if p is None:
            return np.full(self.n, -1, dtype=np.int8)
        return np.where((p > self.policy.threshold).cpu().numpy(), 1, -1).astype(np.int8)

    def next_query(self, k: int = 1) -> list[int]:
        """The next k unlabelled candidates to label (cold start, then the policy's strategy)."""
        pol = self.policy
        strategy = cold_start_strategy(self.labels, pol.strategy, pol.cold_start_per_class)
        proba = self.fit() if strategy in ("cal", "dcal") else None
        labels_t = torch.as_tensor(self.labels, device=self.device)
        return query(
            strategy,
            features=self.x,
            labels=labels_t,
            proba=proba,
            rng=self.rng,
            k=k,
            discriminator=self.disc,
            dcal_w=pol.dcal_weight,
            clip_weight=pol.clip_weight,
            diverse=pol.diverse_batches,
        )

    def audit(self, mode: str) -> np.ndarray:
        p = self.fit()
        if p is None:
            return np.flatnonzero(self.labels == 0)
        labels_t = torch.as_tensor(self.labels, device=self.device)
        return audit_order(mode, p, labels_t, self.policy.threshold).cpu().numpy()
