"""Query strategies: random, ordered, CAL, DAL, DCAL, cold start, non-redundant batches, audits.

All functions work on torch tensors on one device (CPU or CUDA):

features : (N, F) float32, z-scored per dataset (the learner owns it)
labels : (N,) int8 in {+1, -1, 0} (0 = unlabelled)
proba : (N,) P(cell) from the current classifier

Semantics follow docs/actsort_reference.md section 5 (ties resolve to the lowest index, as
MATLAB's stable sort), except where noted: the DCAL weight is clipped at 0 unless
``clip_weight=False`` (bug B13), and k > 1 queries can be made non-redundant.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from .linear import L1Logistic

log = logging.getLogger(__name__)

__all__ = [
    "STRATEGIES",
    "AUDIT_MODES",
    "Discriminator",
    "cal_scores",
    "dcal_weight",
    "cold_start_strategy",
    "select_batch",
    "query",
    "audit_order",
]

STRATEGIES = ("random", "ordered", "cal", "dal", "dcal")
AUDIT_MODES = ("cells", "non-cells", "uncertain")


def cal_scores(proba: torch.Tensor) -> torch.Tensor:
    """CAL uncertainty 1 - 2|p - 0.5| (1 on the boundary, 0 when certain). Always centred at
    0.5 whatever the decision threshold, as ActSort."""
    return 1.0 - 2.0 * (proba - 0.5).abs()


def dcal_weight(weight: float, accuracy: float, clip: bool = True) -> float:
    """Adaptive DCAL weight w' = w * 2 (acc - 0.5); clipped at 0 when ``clip`` (bug B13)."""
    w = weight * 2.0 * (accuracy - 0.5)
    return max(w, 0.0) if clip else w


def cold_start_strategy(labels, strategy: str, per_class: int) -> str:
    """Strategy actually used: random with no label, DAL until ``per_class`` cells and non-cells
    are labelled, then ``strategy`` (ActSort step_al.m)."""
    n_pos = int((labels > 0).sum())
    n_neg = int((labels < 0).sum())
    if n_pos >= per_class and n_neg >= per_class:
        return strategy
    if n_pos + n_neg == 0:
        return "random"
    return "dal"


@dataclass
class DiscriminatorResult:
    proba_labelled: torch.Tensor  # (N,) P_D(labelled | x)
    accuracy: float  # fraction of all N whose (P_D > 0.5) matches labelled status


class Discriminator:
    """DAL/DCAL discriminator: L1 logistic, labelled (1) vs a balanced random unlabelled subset
    (0); m = min(#labelled, #unlabelled) rows of each, lam = 1/(2m). Warm-started from the
    previous query's solution (same convex problem family).

    refresh_every : 1 = ActSort (fresh random draw of both subsets every query); K > 1 = the
        unlabelled subsample is kept between queries (rows that got labelled are replaced, new
        rows are added as m grows) and redrawn every K queries, so the warm start is close
        and a query costs one or two Newton steps.
    max_iter : cap on the Newton steps per query (the fit to ``tol`` usually needs fewer).
    """

    def __init__(
        self,
        device="cpu",
        lambda_scale: float = 1.0,
        refresh_every: int = 1,
        max_iter: int = 100,
        tol: float = 1e-5,
    ):
        if refresh_every < 1:
            raise ValueError(f"refresh_every must be >= 1, got {refresh_every}")
        self.model = L1Logistic(
            lambda_scale=lambda_scale, device=device, tol=tol, max_iter=max_iter
        )
        self.refresh_every = int(refresh_every)
        self._calls = 0
        self._unl_pick: np.ndarray | None = None

    def _unlabelled_subset(
        self, unl_idx: np.ndarray, m: int, n: int, rng: np.random.Generator
    ) -> np.ndarray:
        fresh = (
            self.refresh_every == 1
            or self._unl_pick is None
            or (self._calls % self.refresh_every == 0)
        )
        if fresh:
            return rng.choice(unl_idx, m, replace=False)
        is_unl = np.zeros(n, dtype=bool)
        is_unl[unl_idx] = True
        keep = self._unl_pick[is_unl[self._unl_pick]][:m]
        need = m - len(keep)
        if need > 0:
            is_unl[keep] = False  # candidates for the top-up: unlabelled, not kept
            pool = np.flatnonzero(is_unl)
            keep = np.concatenate([keep, rng.choice(pool, need, replace=False)])
        return keep

    def __call__(
        self, features: torch.Tensor, labelled: torch.Tensor, rng: np.random.Generator
    ) -> DiscriminatorResult:
        is_lab = labelled.cpu().numpy()  # NumPy's flatnonzero: 7x torch.nonzero's speed on a CPU
        lab_idx, unl_idx = np.flatnonzero(is_lab), np.flatnonzero(~is_lab)
        m = min(len(lab_idx), len(unl_idx))
        if m == 0:
            n = labelled.shape[0]
            return DiscriminatorResult(torch.full((n,), 0.5, device=features.device), 0.5)
        if m < len(lab_idx):
            lab_idx = rng.choice(lab_idx, m, replace=False)
        unl_pick = self._unlabelled_subset(unl_idx, m, labelled.shape[0], rng)
        self._unl_pick = unl_pick
        self._calls += 1
        rows = torch.as_tensor(np.concatenate([lab_idx, unl_pick]), device=features.device)
        y = torch.ones(2 * m, device=features.device)
        y[m:] = -1.0
        self.model.fit(features.index_select(0, rows), y)  # 4x faster than features[rows]
        p = self.model.predict_proba(features)
        acc = float(((p > 0.5) == labelled).float().mean())
        return DiscriminatorResult(p, acc)


def select_batch(
    scores: torch.Tensor,
    candidates: torch.Tensor,
    k: int,
    features: torch.Tensor | None = None,
    diverse: bool = True,
    pool_factor: int = 10,
) -> list[int]:
    """Pick k indices with the highest score among ``candidates`` (bool mask).

    With ``diverse`` and k > 1 (beyond ActSort, which takes the top k): greedy selection from the
    top ``pool_factor * k`` candidates, each next pick maximising
    score' * (1 - max over already-picked of exp(-d^2 / (2 h^2))), score' = score rescaled to
    [0.5, 1] in the pool, h^2 = median squared nearest-neighbour distance in the pool; an exact
    duplicate of an earlier pick scores 0, so near-duplicates are not queried twice.
    Ties resolve to the lowest index.
    """
    n_cand = int(candidates.sum())
    k = min(k, n_cand)
    if k <= 0:
        return []
    masked = torch.where(
        candidates,
        scores.to(torch.float64),
        torch.tensor(-math.inf, dtype=torch.float64, device=scores.device),
    )
    if k == 1:
        return [int(torch.argmax(masked))]
    # Stable descending order: sort ascending on (-score) with stable=True.
    order = torch.sort(-masked, stable=True).indices
    if not diverse or features is None:
        return [int(i) for i in order[:k]]
    pool = order[: min(n_cand, pool_factor * k)]
    xs = features[pool].to(torch.float64)
    s = masked[pool]
    span = float(s.max() - s.min())
    s = 0.5 + 0.5 * ((s - s.min()) / span if span > 0 else torch.zeros_like(s))
    d2 = torch.cdist(xs, xs).pow(2)
    # Bandwidth: the median squared nearest-neighbour distance in the pool (duplicates -> 0).
    off = d2 + torch.diag(torch.full((len(pool),), math.inf, dtype=d2.dtype, device=d2.device))
    nn = off.min(1).values
    nn = nn[torch.isfinite(nn) & (nn > 0)]
    scale2 = float(nn.median()) if nn.numel() else 1.0
    sim = torch.exp(-d2 / (2 * scale2))
    chosen: list[int] = []
    penalty = torch.zeros_like(s)
    available = torch.ones_like(s, dtype=torch.bool)
    for _ in range(k):
        value = torch.where(
            available, s * (1.0 - penalty), torch.tensor(-math.inf, dtype=s.dtype, device=s.device)
        )
        j = int(torch.argmax(value))
        chosen.append(j)
        available[j] = False
        penalty = torch.maximum(penalty, sim[j])
    return [int(pool[j]) for j in chosen]


def query(
    strategy: str,
    *,
    features: torch.Tensor,
    labels: torch.Tensor,
    proba: torch.Tensor | None,
    rng: np.random.Generator,
    k: int = 1,
    discriminator: Discriminator | None = None,
    dcal_w: float = 0.5,
    clip_weight: bool = True,
    diverse: bool = True,
) -> list[int]:
    """Indices of the next ``k`` candidates to ask about (unlabelled only).

    strategy : one of STRATEGIES; proba is needed for cal/dcal (None before the first fit:
    CAL/DCAL then fall back to DAL). Cold start is the caller's business
    (see ``cold_start_strategy``).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    unl = labels == 0
    n_unl = int(unl.sum())
    if n_unl == 0:
        return []
    k = min(k, n_unl)
    if strategy == "random":
        # Bug B19 avoided: draw from the unlabelled indices themselves, even when one is left.
        idx = torch.nonzero(unl).squeeze(1).cpu().numpy()
        return [int(i) for i in rng.choice(idx, k, replace=False)]
    if strategy == "ordered":
        return [int(i) for i in torch.nonzero(unl).squeeze(1)[:k]]
    if strategy in ("cal", "dcal") and proba is None:
        strategy = "dal"
    if strategy == "cal":
        return select_batch(cal_scores(proba), unl, k, features, diverse)
    disc = discriminator if discriminator is not None else Discriminator(device=features.device)
    res = disc(features, labels != 0, rng)
    dal = 1.0 - res.proba_labelled  # P_D(unlabelled): highest = most unlike the labelled pool
    if strategy == "dal":
        return select_batch(dal, unl, k, features, diverse)
    w = dcal_weight(dcal_w, res.accuracy, clip_weight)
    score = w * dal + (1.0 - w) * cal_scores(proba)
    return select_batch(score, unl, k, features, diverse)


def audit_order(
    mode: str, proba: torch.Tensor, labels: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Unlabelled candidates to review, most doubtful first.

    mode : "cells" (predicted cells, lowest P first), "non-cells" (predicted non-cells, highest
    P first) or "uncertain" (all unlabelled, by |P - threshold|).
    Returns a 1-D int64 tensor of candidate indices.
    """
    if mode not in AUDIT_MODES:
        raise ValueError(f"audit mode must be one of {AUDIT_MODES}, got {mode!r}")
    unl = labels == 0
    if mode == "cells":
        mask, key = unl & (proba > threshold), proba
    elif mode == "non-cells":
        mask, key = unl & (proba <= threshold), -proba
    else:
        mask, key = unl, (proba - threshold).abs()
    idx = torch.nonzero(mask).squeeze(1)
    order = torch.sort(key[idx], stable=True).indices
    return idx[order]
