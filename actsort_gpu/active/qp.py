"""The exact L1 quadratic model of each Newton step of the learner's logistic fits.

Minimise ``0.5 v'Hv + lin'v + sum_j lam_j |v_j|`` for a positive definite H of the size of the
feature vector (77 for ActSort's 76 features + intercept) by feature-sign search (Lee et al.
2007, generalised to any positive definite quadratic): solve on the active set with fixed
signs, then a discrete line search over the zero crossings between the old and the new point;
a finite active-set method, exact to rounding.

Two implementations of the same steps: :func:`l1_qp_numpy` (NumPy; about 0.8 ms per call,
almost all of it the Python overhead of ~100 small array operations) and the same loop
compiled with Numba (:func:`l1_qp`, used when :func:`qp_unusable` is None), which a warm-started
update of the learner calls five or six times per label and the lambda cross-validation about
fifty times. They agree to rounding (the BLAS / LAPACK builds under NumPy and Numba may sum in
different orders; tested to 1e-10 and on the KKT conditions).
"""

from __future__ import annotations

import logging
from functools import cache

import numpy as np

from ..jit import available, jitted, why

log = logging.getLogger(__name__)

__all__ = ["l1_qp", "l1_qp_numpy", "qp_unusable"]

#: a coordinate enters the active set when its violation exceeds this
_ENTER = 1e-12
#: optimality tolerance, relative to 1 + max |gradient|
_TOL = 1e-10
#: coordinates smaller than this after a step are snapped to 0
_SNAP = 1e-14


def l1_qp(hess, lin, lam, v0, max_steps: int = 500) -> np.ndarray:
    """argmin_v 0.5 v'Hv + lin'v + sum_j lam_j |v_j|, compiled when Numba runs.

    hess : (d, d) positive definite float64; lin : (d,); lam : (d,) >= 0 (0 = unpenalised);
    v0 : (d,) warm start. Returns v (d,) float64 (a new array).
    """
    hess = np.ascontiguousarray(hess, dtype=np.float64)
    lin = np.ascontiguousarray(lin, dtype=np.float64)
    lam = np.ascontiguousarray(lam, dtype=np.float64)
    v0 = np.ascontiguousarray(v0, dtype=np.float64)
    if qp_unusable() is not None:
        return l1_qp_numpy(hess, lin, lam, v0, max_steps)
    v, done = jitted(_l1_qp_py)(hess, lin, lam, v0, max_steps)
    if not done:
        log.debug("l1_qp: step limit reached")
    return v


@cache
def qp_unusable() -> str | None:
    """None when the compiled QP runs (compiled once per process on a 2 x 2 problem), else why
    not (the caller then uses :func:`l1_qp_numpy`)."""
    if not available():
        return "Numba does not import"
    try:
        jitted(_l1_qp_py)(np.eye(2), np.ones(2), np.zeros(2), np.zeros(2), 10)
    except Exception as exc:  # a Numba typing / lowering error, or a broken llvmlite
        log.info("learner: the compiled L1 step does not run (%s); using NumPy", why(exc))
        return why(exc)
    return None


def l1_qp_numpy(hess, lin, lam, v0, max_steps: int = 500) -> np.ndarray:
    """:func:`l1_qp` in NumPy (the twin of the compiled loop)."""
    v = v0.copy()
    free_always = lam == 0
    for _ in range(max_steps):
        grad = hess @ v + lin
        active = (v != 0) | free_always
        viol = np.where(active, 0.0, np.abs(grad) - lam)
        j = int(np.argmax(viol))
        sign = np.sign(v)
        if viol[j] > _ENTER:
            active[j] = True
            sign[j] = -np.sign(grad[j])
        elif _optimal_on_active(grad, lam, sign, active):
            return v
        # Feature-sign step on the active set (repeat until the signs are consistent).
        for _inner in range(2 * len(v) + 2):
            idx = np.flatnonzero(active)
            rhs = -(lin[idx] + lam[idx] * sign[idx])
            h_sub = hess[np.ix_(idx, idx)]
            try:
                new_a = np.linalg.solve(h_sub, rhs)
            except np.linalg.LinAlgError:
                new_a = np.linalg.lstsq(h_sub, rhs, rcond=None)[0]
            old_a = v[idx]
            # Candidate points: the new point and every zero crossing on the segment
            # old + t (new - old), t in (0, 1]. Along the segment the smooth part is the scalar
            # quadratic c2 t^2 + c1 t (+ const), so all candidates are scored at once.
            step = new_a - old_a
            hd = h_sub @ step
            c2 = 0.5 * step @ hd
            c1 = old_a @ hd + lin[idx] @ step
            pen = ~free_always[idx]
            cross = pen & (old_a != 0) & (np.sign(new_a) != np.sign(old_a))
            ts = np.append(old_a[cross] / (old_a[cross] - new_a[cross]), 1.0)
            pts = old_a[None, :] + ts[:, None] * step[None, :]
            pts[np.arange(len(ts) - 1), np.flatnonzero(cross)] = 0.0
            vals = c2 * ts**2 + c1 * ts + np.abs(pts) @ lam[idx]
            t_best = ts[int(np.argmin(vals))]
            best = np.zeros_like(v)
            best[idx] = pts[int(np.argmin(vals))] if t_best != 1.0 else new_a
            # Snap coordinates that reached zero (tiny residues) and drop them from the set.
            best = np.where(free_always | (np.abs(best) > _SNAP), best, 0.0)
            v = best
            active = (v != 0) | free_always
            sign = np.sign(v)
            grad = hess @ v + lin
            if _optimal_on_active(grad, lam, sign, active, check_zero=False):
                break
    log.debug("l1_qp_numpy: step limit reached")
    return v


def _optimal_on_active(grad, lam, sign, active, check_zero=True, tol=_TOL):
    scale = 1.0 + np.abs(grad).max()
    resid = np.where(active, grad + lam * sign, 0.0)
    if np.abs(resid).max() > tol * scale:
        return False
    if check_zero:
        return bool((np.where(active, 0.0, np.abs(grad) - lam) <= tol * scale).all())
    return True


def _l1_qp_py(hess, lin, lam, v0, max_steps):  # pragma: no cover (compiled; the twin is tested)
    """The loop of :func:`l1_qp_numpy`, element by element; returns (v, converged)."""
    d = v0.shape[0]
    v = v0.copy()
    active = np.empty(d, np.bool_)
    sign = np.empty(d)
    for _ in range(max_steps):
        grad = hess @ v + lin
        j = 0
        worst = -np.inf
        for i in range(d):
            active[i] = v[i] != 0 or lam[i] == 0
            sign[i] = np.sign(v[i])
            viol = 0.0 if active[i] else abs(grad[i]) - lam[i]
            if viol > worst:
                worst = viol
                j = i
        entered = worst > _ENTER
        if entered:
            active[j] = True
            sign[j] = -np.sign(grad[j])
        # _optimal_on_active (check_zero: nothing entered, so every inactive |grad| <= lam)
        scale = 1.0 + np.abs(grad).max()
        optimal = not entered
        for i in range(d):
            if active[i] and abs(grad[i] + lam[i] * sign[i]) > _TOL * scale:
                optimal = False
        if optimal:
            return v, True
        for _inner in range(2 * d + 2):
            idx = np.flatnonzero(active)
            k = idx.shape[0]
            h_sub = np.empty((k, k))
            rhs = np.empty(k)
            old_a = np.empty(k)
            for a in range(k):
                rhs[a] = -(lin[idx[a]] + lam[idx[a]] * sign[idx[a]])
                old_a[a] = v[idx[a]]
                for b in range(k):
                    h_sub[a, b] = hess[idx[a], idx[b]]
            try:
                new_a = np.linalg.solve(h_sub, rhs)
            except Exception:  # singular: least squares, as the twin
                new_a = np.linalg.lstsq(h_sub, rhs)[0]
            step = new_a - old_a
            hd = h_sub @ step
            c2 = 0.5 * (step @ hd)
            c1 = old_a @ hd + lin[idx] @ step
            # Candidates: each penalised coordinate's zero crossing (in coordinate order), then
            # t = 1; the first with the least value wins, as np.argmin
            n_cross = 0
            cross_at = np.empty(k, np.int64)
            for a in range(k):
                if lam[idx[a]] != 0 and old_a[a] != 0 and np.sign(new_a[a]) != np.sign(old_a[a]):
                    cross_at[n_cross] = a
                    n_cross += 1
            best_r = 0
            best_val = np.inf
            for r in range(n_cross + 1):
                c = cross_at[r] if r < n_cross else -1
                t = 1.0 if r == n_cross else old_a[c] / (old_a[c] - new_a[c])
                pen = 0.0
                for a in range(k):
                    pen += abs(0.0 if a == c else old_a[a] + t * step[a]) * lam[idx[a]]
                val = c2 * t**2 + c1 * t + pen
                if val < best_val or r == 0:
                    best_val = val
                    best_r = r
            c = cross_at[best_r] if best_r < n_cross else -1
            t = 1.0 if best_r == n_cross else old_a[c] / (old_a[c] - new_a[c])
            v[:] = 0.0
            for a in range(k):
                if t == 1.0:
                    v[idx[a]] = new_a[a]
                else:
                    v[idx[a]] = 0.0 if a == c else old_a[a] + t * step[a]
            for i in range(d):
                if lam[i] != 0 and abs(v[i]) <= _SNAP:
                    v[i] = 0.0
                active[i] = v[i] != 0 or lam[i] == 0
                sign[i] = np.sign(v[i])
            grad = hess @ v + lin
            scale = 1.0 + np.abs(grad).max()
            consistent = True
            for i in range(d):
                if active[i] and abs(grad[i] + lam[i] * sign[i]) > _TOL * scale:
                    consistent = False
            if consistent:
                break
    return v, False
