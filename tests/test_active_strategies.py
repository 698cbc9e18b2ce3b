"""Query strategies on toy data: CAL, DAL, DCAL weight, cold start, batches, audits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actsort_gpu.active.engine import Engine, Policy, parse_policy
from actsort_gpu.active.strategies import (audit_order, cal_scores, cold_start_strategy,
                                           dcal_weight, query, select_batch)


def _toy(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = np.where(x[:, 0] + 0.3 * rng.normal(size=n) > 0, 1, -1).astype(np.int8)
    return x, y


def test_cal_picks_point_closest_to_half():
    p = torch.tensor([0.9, 0.45, 0.52, 0.1, 0.5001])
    labels = torch.tensor([0, 0, 0, 0, 1], dtype=torch.int8)   # 0.5001 is labelled
    x = torch.zeros(5, 2)
    got = query("cal", features=x, labels=labels, proba=p, rng=np.random.default_rng(0))
    assert got == [2]
    np.testing.assert_allclose(cal_scores(torch.tensor([0.5, 0.0, 0.75])).numpy(), [1, 0, 0.5])


def test_cal_ties_resolve_to_lowest_index():
    p = torch.tensor([0.4, 0.6, 0.4])
    got = query("cal", features=torch.zeros(3, 1), labels=torch.zeros(3, dtype=torch.int8),
                proba=p, rng=np.random.default_rng(0))
    assert got == [0]


def test_dcal_weight_clipped_at_zero():
    assert dcal_weight(0.5, 0.3, clip=True) == 0.0
    assert dcal_weight(0.5, 0.3, clip=False) == pytest.approx(-0.2)
    assert dcal_weight(0.5, 0.9) == pytest.approx(0.4)
    assert dcal_weight(0.5, 0.5) == 0.0


def test_cold_start_sequence():
    lab = np.zeros(10, dtype=np.int8)
    assert cold_start_strategy(lab, "cal", 3) == "random"
    lab[:2] = 1
    assert cold_start_strategy(lab, "cal", 3) == "dal"
    lab[2] = 1
    lab[3:6] = -1
    assert cold_start_strategy(lab, "cal", 3) == "cal"


def test_dal_prefers_region_unlike_labelled():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 0.3, (100, 2)), rng.normal(5, 0.3, (100, 2))])
    labels = np.zeros(200, dtype=np.int8)
    labels[:20] = 1                      # all labels in the first cluster
    got = query("dal", features=torch.tensor(x, dtype=torch.float32),
                labels=torch.tensor(labels), proba=None, rng=rng)
    assert got[0] >= 100


def test_random_never_returns_labelled_even_one_left():
    labels = torch.ones(5, dtype=torch.int8)
    labels[3] = 0
    for s in range(5):   # bug B19: MATLAB randsample(v) with scalar v returns 1..v
        assert query("random", features=torch.zeros(5, 1), labels=labels, proba=None,
                     rng=np.random.default_rng(s)) == [3]


def test_batch_queries_not_redundant():
    # Candidates 0..4 are exact duplicates with the highest score: a plain top-k takes them all.
    x = torch.tensor(np.r_[np.zeros((5, 2)), np.arange(1, 21)[:, None] * [[1.0, 0.0]]],
                     dtype=torch.float32)
    scores = torch.tensor(np.r_[np.full(5, 1.0), np.linspace(0.9, 0.5, 20)])
    mask = torch.ones(25, dtype=torch.bool)
    top = select_batch(scores, mask, 3, x, diverse=False)
    assert top == [0, 1, 2]
    div = select_batch(scores, mask, 3, x, diverse=True)
    assert div[0] == 0 and len(set(div)) == 3
    assert sum(i < 5 for i in div) == 1


def test_audit_modes():
    p = torch.tensor([0.9, 0.7, 0.3, 0.55, 0.2])
    lab = torch.tensor([0, 0, 0, 0, 1], dtype=torch.int8)
    assert audit_order("cells", p, lab, 0.5).tolist() == [3, 1, 0]
    assert audit_order("non-cells", p, lab, 0.5).tolist() == [2]
    assert audit_order("uncertain", p, lab, 0.5).tolist() == [3, 1, 2, 0]
    with pytest.raises(ValueError, match="audit mode"):
        audit_order("bogus", p, lab, 0.5)


def test_engine_loop_and_policy_errors():
    x, y = _toy()
    eng = Engine(x, Policy(strategy="dcal"), seed=0)
    assert eng.fit() is None and (eng.decisions() == -1).all()
    for _ in range(30):
        i = eng.next_query(1)[0]
        assert eng.labels[i] == 0
        eng.set_label(i, int(y[i]))
    p = eng.fit().numpy()
    assert ((p > 0.5) == (y > 0)).mean() > 0.85
    with pytest.raises(ValueError, match="strategy"):
        Policy(strategy="nope")
    with pytest.raises(ValueError, match="threshold"):
        Policy(threshold=1.5)
    with pytest.raises(ValueError, match="unknown option"):
        parse_policy("dal+zzz")
    with pytest.raises(ValueError, match="unknown name"):
        parse_policy("magic")
    assert parse_policy("faithful-dcal").clip_weight is False
    assert parse_policy("dcal-0.3").dcal_weight == 0.3
    assert parse_policy("dal+bal+thr0.5").balance == "weights"


def test_fine_tune_discards_most_conflicting_row():
    x, y = _toy(100, seed=2)
    pre_x = np.r_[x[:40], x[:1] * 0 + [[4.0, 0, 0, 0]]].astype(np.float32)
    pre_y = np.r_[y[:40], [-1]].astype(np.int8)   # last row: strongly "cell" region, says not
    eng = Engine(x, Policy(balance="none"), seed=0, pretrained=(pre_x, pre_y))
    eng.set_label(50, int(y[50]))
    eng.fit()
    assert not eng.pre_active[40] and eng.pre_active.sum() == 40
    eng.set_label(51, int(y[51]))
    eng.set_label(52, int(y[52]))
    eng.fit()
    assert eng.pre_active.sum() == 38   # one pretrained row forgotten per new human label
