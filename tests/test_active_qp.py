"""The L1 quadratic model of the learner's Newton steps: the compiled loop against its NumPy
twin, known answers, and the KKT conditions on problems captured from real fits."""

from __future__ import annotations

import numpy as np
import pytest

from actsort_gpu.active import linear, qp

needs_numba = pytest.mark.skipif(qp.qp_unusable() is not None, reason="compiled QP unusable")


def _kkt(hess, lin, lam, v) -> float:
    """Largest violation of the optimality conditions of 0.5 v'Hv + lin'v + lam|v| at v."""
    grad = hess @ v + lin
    on = np.where(v != 0, np.abs(grad + lam * np.sign(v)), np.maximum(np.abs(grad) - lam, 0))
    return float(on.max() / (1 + np.abs(grad).max()))


def _problem(rng, d, coupled=True):
    a = rng.normal(size=(3 * d, d)) if coupled else np.diag(rng.uniform(0.5, 2, d))
    hess = a.T @ a / (3 * d) + 1e-3 * np.eye(d) if coupled else a
    lin = rng.normal(size=d)
    lam = np.abs(rng.normal(0.5, 0.4, size=d))
    lam[-1] = 0.0  # the intercept is not penalised
    return hess, lin, lam


@pytest.mark.parametrize("impl", ["numpy", pytest.param("compiled", marks=needs_numba)])
def test_known_answer_diagonal_soft_threshold(impl):
    """Diagonal H: v_j = -sign(lin_j) max(|lin_j| - lam_j, 0) / H_jj."""
    rng = np.random.default_rng(0)
    hess, lin, lam = _problem(rng, 12, coupled=False)
    solve = qp.l1_qp_numpy if impl == "numpy" else qp.l1_qp
    v = solve(hess, lin, lam, np.zeros(12))
    expected = -np.sign(lin) * np.maximum(np.abs(lin) - lam, 0) / np.diag(hess)
    np.testing.assert_allclose(v, expected, rtol=1e-12, atol=1e-14)
    assert (v == 0).sum() == (np.abs(lin) <= lam).sum()  # exact zeros, not tiny residues


@needs_numba
@pytest.mark.parametrize("d", [1, 2, 5, 20, 77])
def test_compiled_matches_numpy_twin(d):
    rng = np.random.default_rng(d)
    for trial in range(25):
        hess, lin, lam = _problem(rng, d)
        if trial % 5 == 0:
            lam[:] = 0  # unpenalised: the Newton step itself
        starts = [np.zeros(d), rng.normal(size=d), np.where(rng.random(d) < 0.5, 0, 1.0)]
        for v0 in starts:
            a = qp.l1_qp_numpy(hess, lin, lam, v0.copy())
            b = qp.l1_qp(hess, lin, lam, v0.copy())
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
            np.testing.assert_array_equal(b == 0, a == 0)  # same active set
            assert _kkt(hess, lin, lam, b) < 1e-9


def test_fit_problems_solved_by_both(monkeypatch):
    """The QPs a warm-started fit actually poses (captured), solved by both to the same point;
    the fit with either reaches the same coefficients."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 30)).astype(np.float32)
    y = np.where(x[:, :5].sum(1) + rng.normal(size=400) > 0, 1.0, -1.0)
    captured = []
    real = qp.l1_qp

    def spy(hess, lin, lam, v0, max_steps=500):
        captured.append((hess.copy(), lin.copy(), lam.copy(), v0.copy()))
        return real(hess, lin, lam, v0, max_steps)

    monkeypatch.setattr(linear, "l1_qp", spy)
    theta, _, kkt = linear.fit_l1_logistic(x[:300], y[:300], lam=3 / 300)
    linear.fit_l1_logistic(x, y, lam=3 / 400, init=theta)  # warm start after more labels
    assert len(captured) >= 4 and kkt < 1e-9
    for hess, lin, lam, v0 in captured:
        a = qp.l1_qp_numpy(hess, lin, lam, v0)
        np.testing.assert_allclose(real(hess, lin, lam, v0), a, rtol=1e-9, atol=1e-12)
        assert _kkt(hess, lin, lam, a) < 1e-9
    monkeypatch.setattr(linear, "l1_qp", qp.l1_qp_numpy)
    theta_np, _, _ = linear.fit_l1_logistic(x[:300], y[:300], lam=3 / 300)
    np.testing.assert_allclose(theta.numpy(), theta_np.numpy(), atol=1e-8)


def test_warm_in_background_runs_each_check_on_a_daemon_thread():
    from actsort_gpu.jit import warm_in_background

    seen = []
    thread = warm_in_background(lambda: seen.append(1), lambda: seen.append(2))
    thread.join(5)
    assert thread.daemon and not thread.is_alive() and seen == [1, 2]


def test_the_page_warms_the_compiled_l1_step_when_it_opens(tmp_path, monkeypatch):
    """The page's workspace loads (or compiles, ~11 s after an install) the L1 step while the
    user looks at the first candidate, not at the first label."""
    from ui_fixtures import make_test_store

    import actsort_gpu.jit as jit
    from actsort_gpu.active.qp import qp_unusable
    from actsort_gpu.ui import open_workspace

    asked = []
    monkeypatch.setattr(jit, "warm_in_background", lambda *checks: asked.extend(checks))
    open_workspace([make_test_store(tmp_path, n=20)]).close()
    assert asked == [qp_unusable]
