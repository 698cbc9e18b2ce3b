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
from .model_select import LAMBDA_GRID, balanced_weights, cv_balanced_accuracy, cv_lambda_scale
from .strategies import STRATEGIES, Discriminator, audit_order, cold_start_strategy, query

log = logging.getLogger(__name__)

__all__ = ["Policy", "Engine", "parse_policy", "FAITHFUL", "product_policy"]

BALANCE_MODES = ("none", "weights")
# How a pretrained classifier (another animal's) combines with this animal's labels:
# select : the model with the best prequential balanced accuracy on the labels of random probe
#   queries (every TRANSFER_PROBE_EVERY-th query; each label scored before it is learned) among
#   the classifier alone, the classifier's rows + the new labels (``union``) and the new labels
#   alone; the classifier unless another beats it on the probes by TRANSFER_MARGIN and by
#   TRANSFER_Z standard errors of the paired difference, once the probes hold
#   TRANSFER_MIN_PER_CLASS labels of each class (benchmarks/RESULTS.md, issue 11)
# union : the classifier's rows and the new labels in one class-balanced fit
# discard : the paper-era rule (each new label discards the most conflicting pretrained row)
# classifier : the classifier alone, never updated (zero-shot)
TRANSFER_MODES = ("select", "union", "discard", "classifier")
# Every 4th query is a random probe; another model answers once the probes hold this many
# labels of each class and it beats the classifier alone on them by TRANSFER_MARGIN balanced
# accuracy and by TRANSFER_Z standard errors of the paired gain, shrunk by one pseudo-probe
# each way per class (3 probes of a class and a bare margin switched twophoton_motion to a
# worse model in 1 of 12 runs at 1 % of labels; so did a z-test on 4 + 3 probes, where the
# classifier happened to miss 5 of 7).
TRANSFER_PROBE_EVERY = 4
TRANSFER_MIN_PER_CLASS = 4
TRANSFER_MARGIN = 0.05
TRANSFER_Z = 2.5
# Which inputs the classifier sees when learned embeddings are given beside the features:
# features : the features alone; both : features + the embedding block; auto : both once 5-fold
#   cross-validation on the labelled rows (>= INPUTS_MIN_PER_CLASS per class) gives them at
#   least INPUTS_MARGIN more balanced accuracy than the features alone, redone as the labels
#   grow by INPUTS_EVERY (a fraction); before that, ``inputs_start``
INPUT_MODES = ("features", "both", "auto")
# What ``inputs="auto"`` uses before the labels can decide (``Policy.inputs_start``): both,
# features, or auto = both when the embeddings' encoder was trained with labels (its
# checkpoint's ``training.supervised``; :func:`resolve_inputs_start`), else the features.
# Measured (benchmarks/RESULTS.md, issue 14): with the shipped label-trained encoder starting
# from both gains +0.01-0.07 and was never worse; with a self-supervised one it cost up to 0.01.
INPUT_STARTS = ("auto", "both", "features")
INPUTS_MIN_PER_CLASS = 8
INPUTS_MARGIN = 0.02
INPUTS_EVERY = 0.2
# The embedding block is z-scored and multiplied by this: with an L1 penalty a column scaled by
# s needs a 1/s larger weight for the same effect, so 32 embedding columns cost more than 76
# features to use and cannot swamp them with few labels.
EMBEDDING_BLOCK_SCALE = 0.5


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
    transfer : with a pretrained classifier, one of TRANSFER_MODES (see there); without one it
        has no effect
    inputs : with learned embeddings given to the Engine, one of INPUT_MODES (see there);
        without them it has no effect
    inputs_start : one of INPUT_STARTS (see there; ``active.embeddings_start``): what
        ``inputs="auto"`` uses before the labels can decide; "auto" is resolved per session by
        :func:`resolve_inputs_start` (unresolved, the Engine starts from the features)
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
    transfer: str = "select"
    inputs: str = "auto"
    inputs_start: str = "auto"

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
        if self.transfer not in TRANSFER_MODES:
            raise ValueError(f"transfer must be one of {TRANSFER_MODES}, got {self.transfer!r}")
        if self.inputs not in INPUT_MODES:
            raise ValueError(f"inputs must be one of {INPUT_MODES}, got {self.inputs!r}")
        if self.inputs_start not in INPUT_STARTS:
            raise ValueError(
                f"inputs_start must be one of {INPUT_STARTS}, got {self.inputs_start!r}"
            )


def embedding_inputs(use_embeddings) -> str:
    """``active.use_embeddings`` (true | false | "auto") -> Policy.inputs."""
    if use_embeddings is True or use_embeddings == "both":
        return "both"
    if use_embeddings is False or use_embeddings in ("features", None):
        return "features"
    if use_embeddings == "auto":
        return "auto"
    raise ValueError(f"use_embeddings must be true, false or auto, got {use_embeddings!r}")


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
    transfer="discard",
)


def resolve_inputs_start(policy: Policy, encoder_supervised: bool) -> Policy:
    """``policy`` with ``inputs_start="auto"`` made concrete: "both" when the embeddings come
    from an encoder trained with labels (``encoder_supervised``), else "features"."""
    if policy.inputs_start != "auto":
        return policy
    return replace(policy, inputs_start="both" if encoder_supervised else "features")


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
        transfer=getattr(config, "transfer", Policy.transfer),
        inputs=embedding_inputs(getattr(config, "use_embeddings", Policy.inputs)),
        inputs_start=getattr(config, "embeddings_start", Policy.inputs_start),
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
    pseudo-label weight W), ``pconfX`` (its confidence), ``pmaxR`` (its cap, x labels),
    ``select``/``union``/``discard``/``classifier`` (how a pretrained classifier is fine-tuned,
    TRANSFER_MODES); e.g. ``dal+bal``, ``default+thr0.5``, ``default+pseudo0.2``.
    ``noclf`` (run without the simulator's ``--classifier``) is the simulator's, not a policy's.
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
        elif opt in TRANSFER_MODES:
            pol = replace(pol, transfer=opt)
        else:
            raise ValueError(
                f"strategy {spec!r}: unknown option {opt!r} (known: bal, nobal, "
                "noclip, thrX, lamX, refreshK, cv, nocv, pseudoW, pconfX, pmaxR, "
                + ", ".join(TRANSFER_MODES)
                + ")"
            )
    return pol


SELECT_MODELS = ("classifier", "union", "labels")


def prequential_ba(record: list[tuple[int, int]]) -> float:
    """Balanced accuracy of (decision, label) pairs; the accuracy on the one class present
    when the other has none yet; NaN when empty."""
    if not record:
        return float("nan")
    pred, label = np.array(record).T
    rates = [float((pred[label == c] == c).mean()) for c in (1, -1) if (label == c).any()]
    return float(np.mean(rates))


def paired_ba_gain(record: list[tuple[int, int]], base: list[tuple[int, int]]):
    """(gain, standard error) of the balanced accuracy of ``record`` over ``base``, two
    prequential records of the same labels in the same order: per class, the mean and the
    variance of the paired differences of correctness (each in {-1, 0, 1}), with one
    pseudo-difference of +1 and one of -1 added (shrinks small samples towards no gain and
    keeps the variance above 0); the gain is half the sum of the two class means, its
    variance a quarter of the sum of var / n. Both NaN when a class has no label."""
    pred, label = np.array(record).reshape(-1, 2).T
    pred_base, label_base = np.array(base).reshape(-1, 2).T
    if not np.array_equal(label, label_base):
        raise ValueError("paired_ba_gain: the two records score different labels")
    gain = var = 0.0
    for c in (1, -1):
        cls = label == c
        if not cls.any():
            return float("nan"), float("nan")
        d = (pred[cls] == c).astype(float) - (pred_base[cls] == c).astype(float)
        d = np.concatenate([d, [1.0, -1.0]])
        gain += d.mean() / 2
        var += d.var() / d.size / 4
    return float(gain), float(np.sqrt(var))


class Engine:
    """Labels, classifier and queries over one (N, F) feature matrix.

    features : (N, F) float32, already z-scored per dataset (several datasets concatenated)
    policy : Policy
    device : torch device string
    seed : seeds the random draws of random queries and of the discriminator subsample
    pretrained : optional classifier from other animals: (features (M, F), labels (M,) +1/-1)
        training rows, or (rows, labels, weights (F + 1,)) with its own [coef..., intercept]
        (a ``transfer.PortableClassifier``). How it combines with the new labels is
        ``policy.transfer`` (TRANSFER_MODES). Without weights the classifier alone is a fit on
        its rows with this policy.
    extra : optional (N, D) float32 learned embeddings, z-scored per dataset; the classifier
        sees the features alone or the features + this block (times EMBEDDING_BLOCK_SCALE) as
        ``policy.inputs`` says (``inputs_in_use``). Not with ``pretrained`` (the classifier
        fixes its inputs).
    """

    def __init__(
        self,
        features,
        policy: Policy = Policy(),
        device: str = "cpu",
        seed: int = 0,
        pretrained=None,
        extra=None,
    ):
        x = torch.as_tensor(np.asarray(features, dtype=np.float32), device=device)
        if x.ndim != 2:
            raise ValueError(f"features: expected (N, F), got {tuple(x.shape)}")
        self._inputs = {"features": x}
        self.inputs_in_use = "features"
        self.inputs_cv: dict[str, float] = {}  # CV balanced accuracy per input set, last check
        self._inputs_at = 0  # labelled rows at the last check
        if extra is not None:
            if pretrained is not None:
                raise ValueError("extra inputs: not with a pretrained classifier (it fixes inputs)")
            e = torch.as_tensor(np.asarray(extra, dtype=np.float32), device=device)
            if e.ndim != 2 or e.shape[0] != x.shape[0]:
                raise ValueError(f"extra: expected ({x.shape[0]}, D), got {tuple(e.shape)}")
            self._inputs["both"] = torch.cat([x, EMBEDDING_BLOCK_SCALE * e], dim=1)
            mode = policy.inputs
            start = "features" if policy.inputs_start == "auto" else policy.inputs_start
            self.inputs_in_use = start if mode == "auto" else mode
        self.x = self._inputs[self.inputs_in_use]
        self.device = device
        self.policy = policy
        self.rng = np.random.default_rng(seed)
        self.labels = np.zeros(x.shape[0], dtype=np.int8)
        self.clf = L1Logistic(lambda_scale=policy.lambda_scale, device=device)
        self.disc = self._make_discriminator(policy)
        self.proba: torch.Tensor | None = None
        self._dirty = True
        self.pre_x = self.pre_y = None
        self._probes: set[int] = set()  # random queries whose labels score the models
        self._n_queries = 0
        self.model_in_use = "labels"  # which model answers (see ``transfer`` in Policy)
        if pretrained is not None:
            px, py, *theta = pretrained
            self.pre_x = torch.as_tensor(np.asarray(px, dtype=np.float32), device=device)
            self.pre_y = np.asarray(py, dtype=np.int8).copy()
            if self.pre_x.shape[1] != x.shape[1]:
                raise ValueError(
                    f"pretrained rows have {self.pre_x.shape[1]} features, the data {x.shape[1]}"
                )
            self.pre_active = self.pre_y != 0
            self.pre_theta = self._prior_theta(theta[0] if theta else None)
            # Separate warm-started models of the 'select' mode, and its prequential record:
            # per model, (decision, label) of every new label before it was learned.
            self.clf_labels = L1Logistic(lambda_scale=policy.lambda_scale, device=device)
            self.prequential: dict[str, list[tuple[int, int]]] = {m: [] for m in SELECT_MODELS}
            self._candidates: dict[str, torch.Tensor | None] = {}
            self.model_in_use = "classifier"

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def has_prior(self) -> bool:
        """Whether a pretrained classifier is loaded."""
        return self.pre_y is not None

    def _prior_theta(self, theta) -> torch.Tensor:
        """The classifier's own (F + 1,) weights, or a fit on its rows with this policy."""
        if theta is not None:
            theta = np.asarray(theta, dtype=np.float64)
            if theta.shape != (self.x.shape[1] + 1,):
                raise ValueError(
                    f"pretrained weights: expected ({self.x.shape[1] + 1},), got {theta.shape}"
                )
            return torch.as_tensor(theta, device=self.device)
        keep = np.flatnonzero(self.pre_active)
        y = self.pre_y[keep].astype(np.float64)
        if (y > 0).sum() == 0 or (y < 0).sum() == 0:
            raise ValueError("pretrained rows: need both cells and non-cells")
        w = balanced_weights(y) if self.policy.balance == "weights" else None
        model = L1Logistic(lambda_scale=self.policy.lambda_scale, device=self.device)
        model.fit(
            self.pre_x[torch.as_tensor(keep, device=self.device)],
            torch.as_tensor(y, device=self.device),
            None if w is None else torch.as_tensor(w, device=self.device),
        )
        return model.theta_

    def prior_proba(self) -> torch.Tensor:
        """(N,) P(cell) of the pretrained classifier alone."""
        th = self.pre_theta.to(dtype=self.x.dtype)
        return torch.sigmoid(self.x @ th[:-1] + th[-1])

    @property
    def theta(self) -> torch.Tensor | None:
        """(F + 1,) float64 [coef..., intercept] of the model that answers now, or None."""
        if self.fit() is None:
            return None
        if self.model_in_use == "classifier":
            return self.pre_theta
        if self.model_in_use == "labels" and self.has_prior:
            return self.clf_labels.theta_
        return self.clf.theta_

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
        """label in {+1, -1, 0}; the fit happens lazily (``fit``) so batches of labels cost one
        (with ``transfer="select"``, the label of a probe query is first scored by every
        candidate model)."""
        previous = self.labels[index]
        probe = index in self._probes
        self._probes.discard(index)
        if label != 0 and previous == 0 and probe and self.policy.transfer == "select":
            self.fit()
            for name, proba in self._candidates.items():
                p = None if proba is None else float(proba[index])
                pred = -1 if p is None or p <= self.policy.threshold else 1
                self.prequential[name].append((pred, int(label)))
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

    def _training_rows(self, with_prior: bool = True):
        idx = np.flatnonzero(self.labels)
        x = self.x.index_select(0, torch.as_tensor(idx, device=self.device))
        y = self.labels[idx].astype(np.float64)
        if with_prior and self.pre_y is not None and self.pre_active.any():
            pidx = np.flatnonzero(self.pre_active)
            x = torch.cat([x, self.pre_x[torch.as_tensor(pidx, device=self.device)]])
            y = np.concatenate([y, self.pre_y[pidx].astype(np.float64)])
        return x, y

    def _union_rows(self):
        """(x, y, weights, lambda_scale) of the union fit: this animal's labelled rows and all
        of the classifier's rows (a subsample changes the model that transfers: a 3,000-row
        sample of 16,776 moved twophoton_motion's zero-shot BA from 0.83 to 0.69), class-
        balanced when ``balance`` is "weights", lam = lambda_scale / rows. With no new label
        this is exactly the objective ``train_classifier`` solved, so the first fit starts
        from the classifier's weights and the later ones from the previous fit."""
        if not hasattr(self, "_union_prior"):
            keep = torch.as_tensor(np.flatnonzero(self.pre_active), device=self.device)
            self._union_prior = (self.pre_x[keep], self.pre_y[keep.cpu().numpy()].astype(float))
        px, py = self._union_prior
        x, y = self._training_rows(with_prior=False)
        x = torch.cat([x, px])
        y = np.concatenate([y, py])
        w = balanced_weights(y) if self.policy.balance == "weights" else None
        if self.clf.theta_ is None:
            self.clf.theta_ = self.pre_theta.clone()
        return x, y, w, self.policy.lambda_scale

    def fit(self) -> torch.Tensor | None:
        """Refit (warm start) on the labelled rows and rescore all N; returns P(cell) or None
        while one class is missing (the classifier is not trained then: ActSort leaves
        probabilities at 0, we return None and decisions are all 'not cell')."""
        if not self._dirty:
            return self.proba
        if self.has_extra_inputs and self.policy.inputs == "auto":
            self._choose_inputs()
        mode = self.policy.transfer
        if self.has_prior and mode != "discard":
            self.proba = self._fit_with_prior(mode)
            self._dirty = False
            return self.proba
        self.proba = self._fit_model(self.clf, with_prior=self.has_prior)
        if self.proba is not None:
            self.model_in_use = "union" if self.has_prior else "labels"
        self._dirty = False
        return self.proba

    def _fit_model(self, clf: L1Logistic, with_prior: bool) -> torch.Tensor | None:
        """Fit ``clf`` on the labelled rows (and the pretrained rows when ``with_prior``);
        P(cell) of all N, or None while a class is missing."""
        if with_prior and self.policy.transfer != "discard":
            x, y, w, clf.lambda_scale = self._union_rows()
        else:
            x, y = self._training_rows(with_prior)
            if (y > 0).sum() == 0 or (y < 0).sum() == 0:
                return None
            w = balanced_weights(y) if self.policy.balance == "weights" else None
            # lambda by CV on this animal's labels only (with the classifier's rows: its own
            # lambda; CV over thousands of rows at every label would cost seconds)
            clf.lambda_scale = self.policy.lambda_scale if with_prior else self._lambda_scale(x, y)
        clf.fit(
            x,
            torch.as_tensor(y, device=self.device),
            None if w is None else torch.as_tensor(w, device=self.device),
        )
        if (
            with_prior
            and self.policy.transfer == "discard"
            and getattr(self, "_discard_pending", 0)
        ):
            self._discard_conflicting()
        proba = clf.predict_proba(self.x)
        if self.policy.pseudo_weight > 0:
            proba = self._self_train(clf, x, y, w)
        return proba

    def _fit_with_prior(self, mode: str) -> torch.Tensor:
        """P(cell) with a pretrained classifier under ``mode`` (not 'discard')."""
        n_pos, n_neg = int((self.labels > 0).sum()), int((self.labels < 0).sum())
        prior = self.prior_proba()
        if mode == "classifier" or n_pos + n_neg == 0:
            self.model_in_use = "classifier"
            self._candidates = {"classifier": prior, "union": prior, "labels": None}
            return prior
        union = self._fit_model(self.clf, with_prior=True)
        if mode == "union":
            self.model_in_use = "union"
            return union
        labels_only = self._fit_model(self.clf_labels, with_prior=False)
        self._candidates = {"classifier": prior, "union": union, "labels": labels_only}
        self.model_in_use = self._select_model()
        return self._candidates[self.model_in_use]

    @property
    def has_extra_inputs(self) -> bool:
        """Whether learned embeddings were given beside the features (``extra``)."""
        return len(self._inputs) > 1

    @property
    def inputs_checked_at(self) -> int:
        """Labelled rows at the last input-set comparison (0: none yet)."""
        return self._inputs_at

    def _choose_inputs(self) -> None:
        """``inputs="auto"``: once each class has INPUTS_MIN_PER_CLASS labels, and again each
        time the labels grew by INPUTS_EVERY, compare the input sets by cross-validated
        balanced accuracy on the labelled rows (``inputs_cv``); features + embeddings when they
        win by INPUTS_MARGIN, else the features alone."""
        idx = np.flatnonzero(self.labels)
        y = self.labels[idx].astype(np.float64)
        if min((y > 0).sum(), (y < 0).sum()) < INPUTS_MIN_PER_CLASS:
            return
        if self._inputs_at and len(idx) < self._inputs_at * (1 + INPUTS_EVERY):
            return
        self._inputs_at = len(idx)
        rows = torch.as_tensor(idx, device=self.device)
        self.inputs_cv = {
            name: cv_balanced_accuracy(
                x[rows],
                y,
                lambda_scale=self.policy.lambda_scale,
                balanced=self.policy.balance == "weights",
                threshold=self.policy.threshold,
                seed=len(idx),
                device=self.device,
            )
            for name, x in self._inputs.items()
        }
        better = self.inputs_cv["both"] >= self.inputs_cv["features"] + INPUTS_MARGIN
        self._use_inputs("both" if better else "features")

    def _use_inputs(self, name: str) -> None:
        """Switch the classifier's inputs (a new model: the weights' length changes)."""
        if name == self.inputs_in_use:
            return
        log.info("inputs: %s -> %s (CV BA %s)", self.inputs_in_use, name, self.inputs_cv)
        self.inputs_in_use = name
        self.x = self._inputs[name]
        self.clf = L1Logistic(lambda_scale=self.policy.lambda_scale, device=self.device)
        self.disc = self._make_discriminator(self.policy)
        self._cv_at = None
        self._dirty = True

    def _select_model(self) -> str:
        """The candidate with the best prequential balanced accuracy (ties: the earlier in
        SELECT_MODELS) on the probes' labels, if it beats the classifier alone by
        TRANSFER_MARGIN and by TRANSFER_Z standard errors of the paired gain; the classifier
        until the probes hold TRANSFER_MIN_PER_CLASS labels of each class."""
        probe_labels = np.array([lab for _, lab in self.prequential["classifier"]])
        if min((probe_labels > 0).sum(), (probe_labels < 0).sum()) < TRANSFER_MIN_PER_CLASS:
            return "classifier"
        scores = {
            m: np.nan_to_num(prequential_ba(self.prequential[m]), nan=-1.0) for m in SELECT_MODELS
        }
        best = max(SELECT_MODELS, key=lambda m: (scores[m], -SELECT_MODELS.index(m)))
        if best == "classifier":
            return best
        gain, se = paired_ba_gain(self.prequential[best], self.prequential["classifier"])
        return best if gain >= TRANSFER_MARGIN and gain >= TRANSFER_Z * se else "classifier"

    def prequential_scores(self) -> dict[str, float]:
        """Prequential balanced accuracy of each candidate model (``transfer="select"``) on
        the labels given so far, each scored before it was learned (NaN with no label)."""
        if not self.has_prior:
            return {}
        return {m: prequential_ba(self.prequential[m]) for m in SELECT_MODELS}

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

    def _self_train(self, clf: L1Logistic, x, y, w) -> torch.Tensor:
        """Refit ``clf`` once with the pseudo-labelled rows added (weight
        policy.pseudo_weight); returns P(cell) of all N."""
        self.proba = clf.predict_proba(self.x)
        idx, py = self.pseudo_labels()
        if idx.size == 0:
            return self.proba
        pw = (
            balanced_weights(py) if self.policy.balance == "weights" else np.ones(idx.size)
        ) * self.policy.pseudo_weight
        w_all = np.concatenate([np.ones(len(y)) if w is None else w, pw])
        x_all = torch.cat([x, self.x[torch.as_tensor(idx, device=self.device)]])
        y_all = np.concatenate([y, py.astype(np.float64)])
        clf.fit(
            x_all,
            torch.as_tensor(y_all, device=self.device),
            torch.as_tensor(w_all, device=self.device),
        )
        return clf.predict_proba(self.x)

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

    def query_strategy(self) -> str:
        """The strategy the next query uses: the cold start (random, then DAL) until each class
        has ``cold_start_per_class`` labels, then the policy's. With a pretrained classifier
        there is no cold start: CAL on its probabilities until the first label (where it is
        least sure on this animal), then the policy's strategy."""
        pol = self.policy
        if self.has_prior:
            return "cal" if not self.labels.any() and pol.strategy == "dcal" else pol.strategy
        return cold_start_strategy(self.labels, pol.strategy, pol.cold_start_per_class)

    def next_query(self, k: int = 1) -> list[int]:
        """The next k unlabelled candidates to label (``query_strategy``). With a pretrained
        classifier and ``transfer="select"``, every TRANSFER_PROBE_EVERY-th query is a random
        unlabelled candidate (a probe): only probes score the candidate models, because the
        strategy's own queries sit where the classifier is least sure, so scores on them say
        nothing about its accuracy on the rest (measured: ~0.5 for a classifier with BA 0.83)."""
        pol = self.policy
        self._n_queries += 1
        if (
            self.has_prior
            and pol.transfer == "select"
            and self._n_queries % TRANSFER_PROBE_EVERY == 0
        ):
            todo = np.flatnonzero(self.labels == 0)
            if todo.size:
                pick = [int(i) for i in self.rng.choice(todo, min(k, todo.size), replace=False)]
                self._probes.update(pick)
                return pick
        strategy = self.query_strategy()
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
