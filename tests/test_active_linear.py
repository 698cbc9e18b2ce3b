"""L1 logistic solver: sklearn agreement on real data, KKT conditions, warm start."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import torch

from actsort_gpu.active.linear import (
    L1Logistic,
    _hessian,
    _hessian_matmul,
    _hessian_syrk,
    fit_l1_logistic,
    kkt_violation,
    objective,
    zscore_columns,
)


@pytest.fixture(scope="module")
def bench(shared_data):
    path = shared_data / "actsort_benchmark" / "twophoton_motion.mat"
    with h5py.File(path, "r") as f:
        x = zscore_columns(f["metrics"][()])
        y = np.sign(f["koala_choices"][()].ravel())
    return x, y


def test_zscore_known_answer():
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    np.testing.assert_allclose(
        zscore_columns(x), [[-0.70710677, 0.0], [0.70710677, 0.0]], rtol=1e-6
    )


def test_matches_sklearn_saga(bench):
    from sklearn.linear_model import LogisticRegression

    x, y = bench
    rng = np.random.default_rng(3)
    idx = rng.choice(len(y), 60, replace=False)
    xs, ys = x[idx][:, :30].astype(np.float64), y[idx]
    theta, _, resid = fit_l1_logistic(xs, ys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LogisticRegression(l1_ratio=1, C=1, solver="saga", tol=1e-9, max_iter=200000).fit(
            xs, ys
        )
    assert resid < 1e-8
    np.testing.assert_allclose(theta[:-1].numpy(), ref.coef_.ravel(), atol=1e-3)
    assert abs(theta[-1].item() - ref.intercept_[0]) < 1e-3
    # Our optimum is at least as good as sklearn's (same objective).
    assert (
        objective(xs, ys, theta[:-1].numpy(), theta[-1].item())
        <= objective(xs, ys, ref.coef_.ravel(), ref.intercept_[0]) + 1e-9
    )


@pytest.mark.parametrize("n", [6, 200, 5276])
def test_kkt_conditions(bench, n):
    x, y = bench
    if n == 6:
        idx = np.r_[np.flatnonzero(y > 0)[:3], np.flatnonzero(y < 0)[:3]]
    else:
        idx = np.random.default_rng(n).choice(len(y), n, replace=False)
    theta, _, _ = fit_l1_logistic(x[idx], y[idx])
    coef, b = theta[:-1].numpy(), theta[-1].item()
    assert kkt_violation(x[idx], y[idx], coef, b) < 1e-7
    # Sparsity: L1 zeroes some coefficients, and zero ones satisfy |grad| <= lambda.
    assert (coef == 0).any()


def test_warm_start_same_optimum_fewer_iterations(bench):
    x, y = bench
    idx = np.random.default_rng(5).choice(len(y), 300, replace=False)
    clf = L1Logistic()
    clf.fit(x[idx[:299]], y[idx[:299]])
    clf.fit(x[idx], y[idx])
    warm_iter = clf.n_iter_
    cold = L1Logistic(warm_start=False).fit(x[idx], y[idx])
    np.testing.assert_allclose(clf.coef_, cold.coef_, atol=1e-6)
    assert warm_iter <= cold.n_iter_


def test_lambda_scale_and_weights(bench):
    x, y = bench
    idx = np.random.default_rng(7).choice(len(y), 150, replace=False)
    strong = L1Logistic(lambda_scale=20.0).fit(x[idx], y[idx])
    weak = L1Logistic(lambda_scale=1.0).fit(x[idx], y[idx])
    assert (strong.coef_ != 0).sum() < (weak.coef_ != 0).sum()
    # Integer weights = duplicated rows (same objective up to n normalisation with lam = 1/n).
    w = np.ones(len(idx))
    w[:10] = 2.0
    xd = np.concatenate([x[idx], x[idx[:10]]])
    yd = np.concatenate([y[idx], y[idx[:10]]])
    a, _, _ = fit_l1_logistic(x[idx], y[idx], weights=w, lam=1.0 / len(idx))
    b, _, _ = fit_l1_logistic(xd, yd, lam=1.0 / len(idx) * len(idx) / len(yd))
    # weighted: (1/n) sum w l + lam|b|; duplicated: (1/n') sum l + lam'|b| -> same argmin when
    # lam' = lam * n / n'.
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_predict_before_fit_raises():
    with pytest.raises(RuntimeError, match="before fit"):
        L1Logistic().predict_proba(torch.zeros(2, 3))


def test_empty_training_set_raises():
    with pytest.raises(ValueError, match="no training rows"):
        fit_l1_logistic(np.zeros((0, 3)), np.zeros(0))


def test_capped_warm_start_reaches_cold_optimum_on_shifted_rows(bench):
    """The discriminator's regime: warm start from a neighbouring problem (rows replaced),
    at most 5 Newton steps, still converges to the cold exact optimum and KKT point."""
    x, y = bench
    rng = np.random.default_rng(11)
    idx = rng.choice(len(y), 400, replace=False)
    warm = L1Logistic(tol=1e-9, max_iter=5)
    warm.fit(x[idx[:300]], y[idx[:300]])
    shifted = np.r_[idx[2:300], idx[300:303]]  # two rows dropped, three added
    warm.fit(x[shifted], y[shifted])
    cold = L1Logistic(tol=1e-9, warm_start=False).fit(x[shifted], y[shifted])
    assert warm.n_iter_ <= 5
    assert kkt_violation(x[shifted], y[shifted], warm.coef_, warm.intercept_) < 1e-7
    np.testing.assert_allclose(warm.coef_, cold.coef_, atol=1e-6)


def test_cv_lambda_scale_known_cases(bench):
    from actsort_gpu.active.model_select import balanced_weights, cv_lambda_scale

    np.testing.assert_allclose(balanced_weights(np.array([1, 1, 1, -1])), [2 / 3, 2 / 3, 2 / 3, 2])
    np.testing.assert_allclose(balanced_weights(np.array([1, 1])), [1, 1])
    # Pure-noise features: a strong penalty wins (nothing generalises; 8 and 64 may both zero
    # every coefficient and tie, ties go to the smaller).
    rng = np.random.default_rng(0)
    xn = rng.normal(size=(120, 30))
    yn = np.where(rng.random(120) < 0.5, 1.0, -1.0)
    best, dev = cv_lambda_scale(xn, yn, grid=(1.0, 8.0, 64.0))
    assert best in (8.0, 64.0) and min(dev[1:]) < dev[0]
    # Real labels, many rows: a weak penalty is chosen and the result is deterministic.
    x, y = bench
    idx = np.random.default_rng(1).choice(len(y), 600, replace=False)
    a = cv_lambda_scale(x[idx], y[idx], grid=(1.0, 64.0), seed=3)
    assert a[0] == 1.0 and a == cv_lambda_scale(x[idx], y[idx], grid=(1.0, 64.0), seed=3)
    with pytest.raises(ValueError, match="each class needs"):
        cv_lambda_scale(x[:8], np.r_[np.ones(6), -np.ones(2)])


def test_engine_lambda_cv_kicks_in_with_enough_labels(bench):
    from actsort_gpu.active.engine import Engine, Policy

    x, y = bench
    eng = Engine(x[:1500], Policy(lambda_cv=True, balance="weights"), seed=0)
    lab = np.zeros(1500, dtype=np.int8)
    lab[:30] = y[:30]
    eng.set_labels(lab)
    eng.fit()
    assert eng.clf.lambda_scale == 1.0 and getattr(eng, "_cv_at", None) is None
    lab[:200] = y[:200]
    eng.set_labels(lab)
    eng.fit()
    assert eng._cv_at[0] == 200 and eng.clf.lambda_scale in (1.0, 2.0, 4.0, 8.0)


@pytest.mark.parametrize("n_rows", [1, 77, 2000])
def test_hessian_known_answer_both_ways(n_rows):
    """X' diag(hw) X: the CPU's symmetric rank-k update and the GPU's matmul (run here on the
    CPU) both equal the explicit sum of weighted outer products, and the first is exactly
    symmetric (the L1 step's QP assumes it)."""
    rng = np.random.default_rng(n_rows)
    xa = torch.as_tensor(rng.normal(size=(n_rows, 77)))
    hw = torch.as_tensor(rng.random(n_rows) * 0.25)
    hw[0] = 0.0  # a row with no curvature (p = 0 or 1) adds nothing
    x, w = xa.numpy(), hw.numpy()
    expected = np.einsum("i,ij,ik->jk", w, x, x)
    for way in (_hessian_syrk, _hessian_matmul):
        got = way(xa, hw)
        assert got.shape == (77, 77) and got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    h = _hessian(xa, hw)
    np.testing.assert_array_equal(h, h.T)
    np.testing.assert_array_equal(h, _hessian_syrk(xa, hw))
