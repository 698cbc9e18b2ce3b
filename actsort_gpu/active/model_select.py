"""Choice of the L1 strength by cross-validation on the labelled rows (beyond ActSort).

ActSort fixes lam = 1/n (fitclinear 'auto'). With tens to a few hundred labels from one
(biased, noisy) annotator and 76 correlated features that is weak regularisation; which
strength is best depends on the data and on n, so it is chosen on the labelled rows themselves:
stratified k-fold cross-validation of the class-balanced deviance (the loss the model is
trained on when ``balance='weights'``) over a small grid of ``lambda_scale`` values.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .linear import L1Logistic

log = logging.getLogger(__name__)

__all__ = ["balanced_weights", "cv_lambda_scale", "cv_balanced_accuracy", "LAMBDA_GRID"]

LAMBDA_GRID = (1.0, 2.0, 4.0, 8.0)


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """(n,) weights n / (2 n_class): each class carries half of the loss (y in {+1, -1})."""
    y = np.asarray(y)
    n, n_pos = len(y), int((y > 0).sum())
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.ones(n)
    return np.where(y > 0, n / (2.0 * n_pos), n / (2.0 * n_neg))


def stratified_folds(y: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) fold index in [0, folds) of each row, each class spread evenly over the folds."""
    fold = np.empty(len(y), dtype=np.int64)
    for c in (1.0, -1.0):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % folds
    return fold


def cv_balanced_accuracy(
    features,
    labels,
    *,
    lambda_scale: float = 1.0,
    balanced: bool = True,
    threshold: float = 0.5,
    folds: int = 5,
    repeats: int = 2,
    seed: int = 0,
    device="cpu",
) -> float:
    """Balanced accuracy of the L1-logistic on held-out rows: stratified k-fold CV, repeated
    with ``repeats`` fold draws (seeds seed, seed + 1, ...), predictions pooled per repeat.

    features : (n, F) tensor or array; labels : (n,) +1/-1 (each class needs >= ``folds``
    rows); lam = lambda_scale / n_train, class-balanced weights when ``balanced``.
    """
    x = torch.as_tensor(features, device=device)
    y = np.asarray(labels, dtype=np.float64)
    if min((y > 0).sum(), (y < 0).sum()) < folds:
        raise ValueError(f"cv_balanced_accuracy: each class needs >= {folds} rows")
    scores = []
    for r in range(repeats):
        fold = stratified_folds(y, folds, np.random.default_rng(seed + r))
        pred = np.zeros(len(y))
        for f in range(folds):
            tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            w = balanced_weights(y[tr]) if balanced else None
            model = L1Logistic(lambda_scale=lambda_scale, tol=1e-6, device=device)
            model.fit(
                x[torch.as_tensor(tr, device=x.device)],
                torch.as_tensor(y[tr], device=device),
                None if w is None else torch.as_tensor(w, device=device),
            )
            p = model.predict_proba(x[torch.as_tensor(te, device=x.device)])
            pred[te] = np.where(p.double().cpu().numpy() > threshold, 1.0, -1.0)
        scores.append(0.5 * ((pred[y > 0] > 0).mean() + (pred[y < 0] < 0).mean()))
    return float(np.mean(scores))


def cv_lambda_scale(
    features,
    labels,
    *,
    balanced: bool = True,
    grid=LAMBDA_GRID,
    folds: int = 5,
    seed: int = 0,
    device="cpu",
) -> tuple[float, list[float]]:
    """Pick ``lambda_scale`` (lam = scale / n_train) by stratified k-fold CV.

    features : (n, F) tensor or array; labels : (n,) +1/-1 (each class needs >= ``folds`` rows)
    balanced : weight classes equally in training and in the held-out deviance
    Returns (best scale, held-out deviance per grid value). Ties -> the smaller scale.
    """
    x = torch.as_tensor(features, device=device)
    y = np.asarray(labels, dtype=np.float64)
    n_pos, n_neg = int((y > 0).sum()), int((y < 0).sum())
    if min(n_pos, n_neg) < folds:
        raise ValueError(
            f"cv_lambda_scale: each class needs >= {folds} rows, got "
            f"{n_pos} cells and {n_neg} non-cells"
        )
    fold = stratified_folds(y, folds, np.random.default_rng(seed))
    w_all = balanced_weights(y) if balanced else np.ones(len(y))
    dev = np.zeros(len(grid))
    for f in range(folds):
        tr, te = fold != f, fold == f
        ytr = y[tr]
        wtr = balanced_weights(ytr) if balanced else None
        model = L1Logistic(tol=1e-6, device=device)  # warm-started along the grid
        xtr = x[torch.as_tensor(np.flatnonzero(tr), device=x.device)]
        xte = x[torch.as_tensor(np.flatnonzero(te), device=x.device)]
        for scale in sorted(grid, reverse=True):
            model.lambda_scale = scale
            model.fit(
                xtr,
                torch.as_tensor(ytr, device=device),
                None if wtr is None else torch.as_tensor(wtr, device=device),
            )
            p = model.predict_proba(xte).double().cpu().numpy().clip(1e-7, 1 - 1e-7)
            k = list(grid).index(scale)
            dev[k] += -(w_all[te] * np.where(y[te] > 0, np.log(p), np.log1p(-p))).sum()
    best = float(grid[int(np.argmin(dev))])
    log.debug("cv_lambda_scale: n=%d deviance %s -> %.3g", len(y), np.round(dev, 3), best)
    return best, dev.tolist()
