"""Query strategies on toy data: CAL, DAL, DCAL weight, cold start, batches, audits."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from actsort_gpu.active.engine import Engine, Policy, parse_policy
from actsort_gpu.active.strategies import (
    audit_order,
    cal_scores,
    cold_start_strategy,
    dcal_weight,
    query,
    select_batch,
)


def _toy(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = np.where(x[:, 0] + 0.3 * rng.normal(size=n) > 0, 1, -1).astype(np.int8)
    return x, y


def test_cal_picks_point_closest_to_half():
    p = torch.tensor([0.9, 0.45, 0.52, 0.1, 0.5001])
    labels = torch.tensor([0, 0, 0, 0, 1], dtype=torch.int8)  # 0.5001 is labelled
    x = torch.zeros(5, 2)
    got = query("cal", features=x, labels=labels, proba=p, rng=np.random.default_rng(0))
    assert got == [2]
    np.testing.assert_allclose(cal_scores(torch.tensor([0.5, 0.0, 0.75])).numpy(), [1, 0, 0.5])


def test_cal_ties_resolve_to_lowest_index():
    p = torch.tensor([0.4, 0.6, 0.4])
    got = query(
        "cal",
        features=torch.zeros(3, 1),
        labels=torch.zeros(3, dtype=torch.int8),
        proba=p,
        rng=np.random.default_rng(0),
    )
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
    labels[:20] = 1  # all labels in the first cluster
    got = query(
        "dal",
        features=torch.tensor(x, dtype=torch.float32),
        labels=torch.tensor(labels),
        proba=None,
        rng=rng,
    )
    assert got[0] >= 100


def test_random_never_returns_labelled_even_one_left():
    labels = torch.ones(5, dtype=torch.int8)
    labels[3] = 0
    for s in range(5):  # bug B19: MATLAB randsample(v) with scalar v returns 1..v
        assert query(
            "random",
            features=torch.zeros(5, 1),
            labels=labels,
            proba=None,
            rng=np.random.default_rng(s),
        ) == [3]


def test_batch_queries_not_redundant():
    # Candidates 0..4 are exact duplicates with the highest score: a plain top-k takes them all.
    x = torch.tensor(
        np.r_[np.zeros((5, 2)), np.arange(1, 21)[:, None] * [[1.0, 0.0]]], dtype=torch.float32
    )
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
    pre_y = np.r_[y[:40], [-1]].astype(np.int8)  # last row: strongly "cell" region, says not
    eng = Engine(x, Policy(balance="none", transfer="discard"), seed=0, pretrained=(pre_x, pre_y))
    eng.set_label(50, int(y[50]))
    eng.fit()
    assert not eng.pre_active[40] and eng.pre_active.sum() == 40
    eng.set_label(51, int(y[51]))
    eng.set_label(52, int(y[52]))
    eng.fit()
    assert eng.pre_active.sum() == 38  # one pretrained row forgotten per new human label


def test_discriminator_keeps_subsample_and_replaces_labelled_rows():
    from actsort_gpu.active.strategies import Discriminator

    x, _ = _toy(300, seed=4)
    feats = torch.as_tensor(x)
    labelled = torch.zeros(300, dtype=torch.bool)
    labelled[:20] = True
    disc = Discriminator(refresh_every=3, max_iter=5)
    rng = np.random.default_rng(0)
    disc(feats, labelled, rng)
    first = disc._unl_pick.copy()
    assert len(first) == 20 and not labelled[torch.as_tensor(first)].any()
    # Label one row of the kept subsample and one more: it is replaced, m grows by 2.
    labelled[int(first[0])] = True
    labelled[299 if 299 not in first else 298] = True
    disc(feats, labelled, rng)
    second = disc._unl_pick
    assert len(second) == 22 and len(set(second.tolist())) == 22
    assert set(first[1:].tolist()) <= set(second.tolist())
    assert not labelled[torch.as_tensor(second)].any()
    # Third call (calls % 3 == 0 before it): kept; fourth: redrawn.
    disc(feats, labelled, rng)
    assert set(second.tolist()) == set(disc._unl_pick.tolist())
    kept = disc._unl_pick.copy()
    disc(feats, labelled, rng)
    assert set(kept.tolist()) != set(disc._unl_pick.tolist())
    with pytest.raises(ValueError, match="refresh_every"):
        Discriminator(refresh_every=0)


def test_discriminator_refresh_one_is_actsort_fresh_draw():
    from actsort_gpu.active.strategies import Discriminator

    x, _ = _toy(200, seed=5)
    feats = torch.as_tensor(x)
    labelled = torch.zeros(200, dtype=torch.bool)
    labelled[:10] = True
    # Same generator state -> same draw as rng.choice(unlabelled, m) (ActSort's fresh draw).
    disc = Discriminator(refresh_every=1)
    disc(feats, labelled, np.random.default_rng(9))
    expect = np.random.default_rng(9).choice(np.arange(10, 200), 10, replace=False)
    np.testing.assert_array_equal(disc._unl_pick, expect)


def test_disc_refresh_policy_and_option():
    assert parse_policy("faithful-dcal").disc_refresh == 1
    assert parse_policy("dal").disc_refresh == 1
    assert parse_policy("dal+refresh7").disc_refresh == 7
    assert parse_policy("default").disc_refresh == 20
    assert parse_policy("default").lambda_cv and not parse_policy("faithful-dcal").lambda_cv
    assert not parse_policy("default+nocv").lambda_cv and parse_policy("dal+cv").lambda_cv
    with pytest.raises(ValueError, match="disc_refresh"):
        Policy(disc_refresh=0)
    eng = Engine(_toy()[0], Policy(disc_refresh=1))
    eng.set_policy(Policy(disc_refresh=5))
    assert eng.disc.refresh_every == 5 and eng.disc.model.max_iter == 5


def test_self_training_pseudo_labels():
    x, y = _toy(300, seed=3)
    assert parse_policy("default").pseudo_weight == 0.0  # off by default
    pol = parse_policy("default+pseudo0.2+pconf0.9+pmax1.5")
    assert (pol.pseudo_weight, pol.pseudo_confidence, pol.pseudo_max_ratio) == (0.2, 0.9, 1.5)
    for bad in (dict(pseudo_weight=2.0), dict(pseudo_confidence=0.5), dict(pseudo_max_ratio=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Policy(**bad)
    eng = Engine(x, pol, seed=0)
    lab = np.r_[np.flatnonzero(y > 0)[:9], np.flatnonzero(y < 0)[:20]]
    for i in lab:
        eng.set_label(int(i), int(y[i]))
    eng.fit()
    assert eng.pseudo_labels()[0].size == 0  # < 10 cells: no pseudo rows
    i10 = int(np.flatnonzero(y > 0)[9])
    eng.set_label(i10, int(y[i10]))
    p_plain = Engine(x, replace(pol, pseudo_weight=0.0), seed=0)
    p_plain.set_labels(eng.labels)
    p_plain = p_plain.fit().numpy()
    eng.fit()
    idx, py = eng.pseudo_labels()
    assert idx.size == int(1.5 * 30)  # capped at 1.5 x 30 labels
    assert (eng.labels[idx] == 0).all()
    p = eng.proba.numpy()
    assert (np.abs(p[idx] - 0.5) >= 0.4).all()
    assert ((py > 0) == (p[idx] > 0.5)).all()
    assert not np.allclose(p, p_plain)  # the refit used them
    assert ((p > 0.5) == (y > 0)).mean() > 0.85
