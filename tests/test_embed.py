"""Tests of actsort_gpu.embed: inputs, augmentations, encoder, training, checkpoints, CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from actsort_gpu import schema
from actsort_gpu.embed.inputs import (
    CHANNELS,
    candidate_inputs,
    event_summaries,
    fit_events,
    percentile_normalise,
    robust_trace_stats,
    square_resize,
)
from actsort_gpu.store import crop_footprints

N_EVENTS, EVENT_FRAMES = 5, 11


# ---------------------------------------------------------------- helpers
def _disc(h, w, r, center=None):
    cy, cx = center if center is not None else ((h - 1) / 2, (w - 1) / 2)
    yy, xx = np.mgrid[:h, :w]
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).astype(np.float32)


def _toy_candidates(n, rng, size=(15, 15)):
    """n candidates: even ones are discs with transients, odd ones noise blobs without."""
    snaps, fps, traces, valid = [], [], [], []
    t = np.arange(EVENT_FRAMES)
    for i in range(n):
        h, w = size
        cell = i % 2 == 0
        fp = _disc(h, w, 4) if cell else rng.random((h, w)).astype(np.float32)
        kernel = np.exp(-np.abs(t - 5) / 2.0).astype(np.float32)
        s = rng.normal(0, 0.1, (N_EVENTS, EVENT_FRAMES, h, w)).astype(np.float32)
        if cell:
            s += 3 * kernel[None, :, None, None] * fp[None, None]
        tr = rng.normal(0, 0.3, (N_EVENTS, EVENT_FRAMES)).astype(np.float32)
        if cell:
            tr += 4 * kernel
        va = np.ones(N_EVENTS, bool)
        va[rng.integers(1, N_EVENTS + 1) :] = False
        snaps.append(s * va[:, None, None, None])
        fps.append(fp)
        traces.append(tr * va[:, None])
        valid.append(va)
    return snaps, fps, np.stack(traces), np.stack(valid)


def _toy_arrays(n=64, seed=0, size=16):
    rng = np.random.default_rng(seed)
    snaps, fps, tr, va = _toy_candidates(n, rng)
    images, traces = candidate_inputs(snaps, fps, tr, va, size)
    labels = np.where(np.arange(n) % 2 == 0, 1, -1).astype(np.int8)
    return images, traces, va, labels


def _fake_store(path, n=40, height=48, width=64, seed=0, n_frames=200, events_missing=True):
    """A store with the arrays ingest + preprocess write (docs/store_schema.md), filled by hand
    through the schema-checked writers."""
    from actsort_gpu.store import SortStore, quantise

    rng = np.random.default_rng(seed)
    store = SortStore.create(path)
    store.update_attrs(n_candidates=n, n_frames=n_frames, height=height, width=width)
    rows, crops, blocks, scales, frames = [], [], [], [], []
    events = np.full((n, N_EVENTS), -1, np.int32)
    for i in range(n):
        r0 = int(rng.integers(0, height - 12))
        c0 = int(rng.integers(0, width - 16))
        h, w = 12, 16 if i % 3 else 12
        fp = np.zeros((height, width), np.float32)
        fp[r0 : r0 + h, c0 : c0 + w] = _disc(h, w, 4)
        rows.append(fp.ravel())
        crops.append((r0, r0 + h, c0, c0 + w))
        k = N_EVENTS if not events_missing else int(rng.integers(0, N_EVENTS + 1))
        events[i, :k] = np.sort(rng.choice(np.arange(10, n_frames - 10), k, replace=False))
        block = rng.random((N_EVENTS, EVENT_FRAMES, h, w)).astype(np.float32)
        block[k:] = 0
        codes, lo_hi = quantise(block, "uint8")
        blocks.append(codes.ravel())
        scales.append(lo_hi)
        fr = np.full((N_EVENTS, EVENT_FRAMES), -1, np.int32)
        fr[:k] = events[i, :k, None] + np.arange(-5, 6)
        frames.append(fr)
    store.write_csr(schema.FOOTPRINTS, sp.csr_matrix(np.stack(rows)))
    traces = rng.normal(0, 1, (n, n_frames)).astype(np.float32)
    store.write_array(schema.TRACES, traces)
    store.write_array(schema.CROPS, np.array(crops, np.int32))
    store.write_array(schema.EVENTS, events)
    frames = np.stack(frames)
    st = np.where(frames >= 0, traces[np.arange(n)[:, None, None], np.clip(frames, 0, None)], 0)
    store.write_array(schema.SNAPSHOT_TRACES, st.astype(np.float32))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blocks])]).astype(np.int64)
    store.write_array(schema.SNAPSHOTS_DATA, np.concatenate(blocks))
    store.write_array(schema.SNAPSHOTS_OFFSETS, offsets)
    store.write_array(schema.SNAPSHOTS_SCALE, np.array(scales, np.float32))
    store.write_array(schema.SNAPSHOTS_FRAMES, frames)
    store.write_array(schema.TRUTH_LABELS, np.where(np.arange(n) % 2 == 0, 1, -1).astype(np.int8))
    store.finish_stage("ingest", 0.0)
    store.finish_stage("preprocess", 0.0)
    return store


def _tiny_config(**kw):
    from actsort_gpu.config import EmbedConfig

    base = dict(embedding_dim=8, image_size_px=16, width=4, max_epochs=2, batch_size=16, seed=3)
    base.update(kw)
    return EmbedConfig(**base)


# ---------------------------------------------------------------- inputs
def test_event_summaries_known_answer():
    ramp = np.arange(EVENT_FRAMES, dtype=np.float32)  # max 10, median 5, mean 5
    snaps = np.zeros((3, EVENT_FRAMES, 2, 2), np.float32)
    snaps[0] = ramp[:, None, None]
    snaps[1] = 2 * ramp[:, None, None]
    snaps[2] = 100.0  # invalid event: must be ignored
    mean_img, max_img = event_summaries(snaps, np.array([True, True, False]))
    per_event = 0.5 * 10 + 0.3 * 5 + 0.2 * 5  # 7.5
    np.testing.assert_allclose(mean_img, np.full((2, 2), (per_event + 2 * per_event) / 2))
    np.testing.assert_allclose(max_img, np.full((2, 2), 20.0))
    zero_mean, zero_max = event_summaries(snaps, np.zeros(3, bool))
    assert not zero_mean.any() and not zero_max.any()


def test_square_resize_identity_pad_and_scale():
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    np.testing.assert_array_equal(square_resize(img, 4), img)
    # a 2 x 4 crop is padded (edge values) to 4 x 4 before resizing: rows repeat
    wide = np.array([[[0, 1, 2, 3], [4, 5, 6, 7]]], np.float32)
    out = square_resize(wide, 4)
    np.testing.assert_array_equal(out[0, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(out[0, 3], [4, 5, 6, 7])
    # an 8 x 8 constant image halves to a 4 x 4 constant image
    np.testing.assert_allclose(square_resize(np.full((2, 8, 8), 3.0, np.float32), 4), 3.0)
    # a centred disc stays centred and symmetric
    disc = square_resize(_disc(20, 20, 6)[None], 10)[0]
    np.testing.assert_allclose(disc, disc[::-1, ::-1], atol=1e-6)


def test_percentile_normalise_known_answer():
    x = np.zeros((1, 2, 10, 100), np.float32)
    x[0, 0] = np.linspace(0, 999, 1000, dtype=np.float32).reshape(10, 100)
    out = percentile_normalise(x)
    lo, hi = np.percentile(x[0, 0], [0.1, 99.9])
    np.testing.assert_allclose(out[0, 0], np.clip((x[0, 0] - lo) / (hi - lo), 0, 1), rtol=1e-5)
    assert out[0, 0].min() == 0 and out[0, 0].max() == 1
    assert not out[0, 1].any()  # a flat channel becomes zeros


def test_candidate_inputs_shapes_ranges_and_masking():
    rng = np.random.default_rng(0)
    snaps, fps, tr, va = _toy_candidates(6, rng)
    va[1] = False  # candidate without events
    images, traces = candidate_inputs(snaps, fps, tr, va, 24)
    assert images.shape == (6, len(CHANNELS), 24, 24) and images.dtype == np.float32
    assert traces.shape == (6, N_EVENTS * EVENT_FRAMES) and traces.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    t = traces.reshape(6, N_EVENTS, EVENT_FRAMES)
    assert not t[~va].any()  # missing events are zeros
    assert not images[1, 1:].any()  # no events: empty summary channels
    # the disc footprint survives the resize: centre bright, corner dark
    assert images[0, 0, 12, 12] == 1.0 and images[0, 0, 0, 0] == 0.0


def test_candidate_inputs_robust_z_traces():
    tr = np.zeros((1, 2, EVENT_FRAMES), np.float32)
    tr[0, 0] = 12.0
    valid = np.array([[True, False]])
    fp = [np.ones((4, 4), np.float32)]
    snaps = [np.zeros((2, EVENT_FRAMES, 4, 4), np.float32)]
    _, traces = candidate_inputs(
        snaps, fp, tr, valid, 8, trace_center=np.array([2.0]), trace_scale=np.array([5.0])
    )
    t = traces.reshape(2, EVENT_FRAMES)
    np.testing.assert_allclose(t[0], np.arcsinh(2.0), rtol=1e-6)  # (12 - 2) / 5
    assert not t[1].any()


def test_candidate_inputs_errors():
    rng = np.random.default_rng(0)
    snaps, fps, tr, va = _toy_candidates(3, rng)
    with pytest.raises(ValueError, match="crop_footprints: expected 3"):
        candidate_inputs(snaps, fps[:2], tr, va, 16)
    with pytest.raises(ValueError, match="snapshot_traces: expected shape"):
        candidate_inputs(snaps, fps, tr[:2], va, 16)
    with pytest.raises(ValueError, match="event_valid: expected shape"):
        candidate_inputs(snaps, fps, tr, va[:, :2], 16)
    with pytest.raises(ValueError, match="image_size: expected >= 4"):
        candidate_inputs(snaps, fps, tr, va, 2)
    with pytest.raises(ValueError, match="candidate 0: snapshot crop"):
        candidate_inputs(snaps, [np.ones((3, 3), np.float32)] + fps[1:], tr, va, 16)


def test_footprint_crops_and_trace_stats_known_answers():
    dense = np.zeros((2, 5 * 6), np.float32)
    dense[0, 1 * 6 + 2] = 1.0  # (1, 2)
    dense[0, 4 * 6 + 5] = 0.5  # (4, 5) outside the crop
    dense[1, 3 * 6 + 0] = 0.25  # (3, 0)
    crops = np.array([[0, 3, 1, 4], [2, 5, 0, 2]])
    out = crop_footprints(sp.csr_matrix(dense), crops, 6)
    expected0 = np.zeros((3, 3), np.float32)
    expected0[1, 1] = 1.0
    np.testing.assert_array_equal(out[0], expected0)
    assert out[1].shape == (3, 2) and out[1][1, 0] == 0.25 and out[1].sum() == 0.25
    med, sd = robust_trace_stats(np.array([[1, 2, 3, 4, 100], [5, 5, 5, 5, 5]], np.float32))
    np.testing.assert_allclose(med, [3, 5])
    np.testing.assert_allclose(sd, [1.4826, 0.0], rtol=1e-5)


def test_fit_events_pads_and_truncates():
    st = np.ones((2, 3, EVENT_FRAMES), np.float32)
    va = np.ones((2, 3), bool)
    snaps = [np.ones((3, EVENT_FRAMES, 2, 2), np.float32)] * 2
    st5, va5, sn5 = fit_events(st, va, snaps, 5)
    assert st5.shape == (2, 5, EVENT_FRAMES) and not va5[:, 3:].any() and sn5[0].shape[0] == 5
    st2, va2, sn2 = fit_events(st, va, snaps, 2)
    assert st2.shape == (2, 2, EVENT_FRAMES) and va2.shape == (2, 2) and sn2[1].shape[0] == 2


# ---------------------------------------------------------------- augmentations
def test_augment_rotation_keeps_a_disc_and_traces_keep_events():
    from actsort_gpu.embed.augment import AugmentConfig, augment_images, augment_traces

    gen = torch.Generator().manual_seed(0)
    disc = torch.from_numpy(_disc(33, 33, 9))[None, None].repeat(8, 1, 1, 1)
    geo = AugmentConfig(shift_fraction=0, brightness=0, contrast=0, image_noise=0)
    rotated = augment_images(disc, gen, geo)
    # any rotation / flip of a centred disc is (up to interpolation) the disc
    assert float((rotated - disc).abs().mean()) < 0.02
    assert not torch.allclose(augment_images(disc, gen), disc)  # full config changes pixels

    traces = torch.arange(4 * 5 * 3, dtype=torch.float32).reshape(4, 5, 3) + 1
    valid = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool
    )
    only_shuffle = AugmentConfig(drop_event_p=0, trace_scale=0, trace_noise=0)
    t2, v2 = augment_traces(traces, valid, gen, only_shuffle)
    for b in range(4):  # the same set of events, each with its own frames, in another order
        kept = sorted(map(tuple, (traces[b] * valid[b, :, None]).tolist()))
        assert sorted(map(tuple, t2[b].tolist())) == kept
        assert int(v2[b].sum()) == int(valid[b].sum())
    drop_all = AugmentConfig(drop_event_p=1.0, trace_scale=0, trace_noise=0, shuffle_events=False)
    _, v3 = augment_traces(traces, valid, gen, drop_all)
    assert v3.sum(1).tolist() == [1, 1, 0, 1]  # one valid event always survives


def test_augment_is_reproducible_with_a_seed():
    from actsort_gpu.embed.augment import augment_batch

    images, traces, va, _ = _toy_arrays(8)
    args = (
        torch.from_numpy(images),
        torch.from_numpy(traces).reshape(8, N_EVENTS, -1),
        torch.from_numpy(va),
    )
    a = augment_batch(*args, torch.Generator().manual_seed(5))
    b = augment_batch(*args, torch.Generator().manual_seed(5))
    c = augment_batch(*args, torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


# ---------------------------------------------------------------- encoder + loss
def test_encoder_ignores_event_order_and_missing_events():
    from actsort_gpu.embed.encoder import CandidateEncoder

    torch.manual_seed(0)
    enc = CandidateEncoder(embedding_dim=8, width=4).eval()
    assert sum(p.numel() for p in CandidateEncoder().parameters()) < 1_000_000
    images = torch.rand(3, 3, 16, 16)
    traces = torch.randn(3, N_EVENTS, EVENT_FRAMES)
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        z = enc(images, traces.reshape(3, -1), valid)
        perm = torch.tensor([4, 2, 0, 3, 1])
        z_perm = enc(images, traces[:, perm].reshape(3, -1), valid[:, perm])
        junk = traces.clone()
        junk[~valid] = 1e3  # values at missing events must not matter
        z_junk = enc(images, junk.reshape(3, -1), valid)
    assert z.shape == (3, 8)
    torch.testing.assert_close(z, z_perm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z, z_junk, rtol=1e-5, atol=1e-6)


def test_nt_xent_known_answer():
    from actsort_gpu.embed.model import nt_xent

    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # positives identical (cos 1), the other candidate orthogonal (cos 0) and its view too:
    # each row's logits are [1/t (positive), 0, 0] -> loss = log(e^(1/t) + 2) - 1/t
    t = 0.5
    expected = math.log(math.exp(1 / t) + 2) - 1 / t
    assert abs(float(nt_xent(z1, z1.clone(), t)) - expected) < 1e-6
    assert float(nt_xent(z1, -z1, t)) > expected  # views pointing apart cost more


# ---------------------------------------------------------------- training + checkpoints
def _fit_arrays(seed=3, supervised=False, device="cpu", **config):
    from actsort_gpu.embed.data import EmbedDataModule
    from actsort_gpu.embed.train import fit_module

    images, traces, va, labels = _toy_arrays(48, size=16)
    cfg = _tiny_config(seed=seed, **config)
    dm = EmbedDataModule(
        arrays=(images, traces, va, labels), image_size=16, batch_size=cfg.batch_size, seed=seed
    )
    module = fit_module(dm, cfg, supervised=supervised, device=device)
    return module, (images, traces, va, labels)


def test_training_leaves_torch_determinism_settings_as_it_found_them(monkeypatch):
    """Lightning's deterministic=True switched torch's deterministic algorithms on for the rest
    of the process (on a GPU, a later operation without a deterministic kernel would raise)."""
    import os

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert not torch.are_deterministic_algorithms_enabled()
    seen = []
    import lightning as L

    fit = L.Trainer.fit

    def spy(self, *args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "fit", spy)
    _fit_arrays(seed=3)
    assert seen == [True]  # on while training (the weights are reproducible) ...
    assert not torch.are_deterministic_algorithms_enabled()  # ... and off again after
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert not torch.backends.cudnn.deterministic


def test_training_is_deterministic_given_a_seed():
    m1, _ = _fit_arrays(seed=3)
    m2, _ = _fit_arrays(seed=3)
    m3, _ = _fit_arrays(seed=4)
    s1, s2, s3 = (m.encoder.state_dict() for m in (m1, m2, m3))
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert any(not torch.equal(s1[k], s3[k]) for k in s1 if s1[k].is_floating_point())
    # and training moved the weights away from the seeded initialisation
    from actsort_gpu.embed.encoder import CandidateEncoder

    torch.manual_seed(0)
    assert any(
        not torch.equal(v, CandidateEncoder(8, 4).state_dict()[k])
        for k, v in s1.items()
        if v.is_floating_point()
    )


def test_supervised_fine_tuning_separates_labelled_toys(tmp_path):
    from actsort_gpu.embed.infer import embed_inputs

    module, (images, traces, va, labels) = _fit_arrays(
        seed=1, supervised=True, max_epochs=10, learning_rate=1e-2
    )
    z = embed_inputs(module.encoder, images, traces, va)
    with torch.no_grad():
        logits = module.label_head(torch.from_numpy(z))[:, 0].numpy()
    accuracy = np.mean((logits > 0) == (labels > 0))
    assert accuracy >= 0.9  # discs with transients vs noise: trivially separable


def test_checkpoint_round_trip_weights_only(tmp_path):
    from actsort_gpu.embed.encoder import encoder_id, load_checkpoint, save_checkpoint
    from actsort_gpu.embed.infer import embed_inputs

    module, (images, traces, va, _) = _fit_arrays(seed=3)
    path = tmp_path / "enc.pt"
    saved = save_checkpoint(
        path,
        module.encoder,
        image_size=16,
        training={"seed": 3, "n": np.int64(48), "tuple": (1, 2)},
    )
    raw = torch.load(path, weights_only=True)  # must not need pickled code
    assert raw["encoder_id"] == saved["encoder_id"] == encoder_id(module.encoder.state_dict())
    assert raw["training"] == {"seed": 3, "n": 48, "tuple": [1, 2]}
    enc, meta = load_checkpoint(path)
    assert meta["spec"]["image_size"] == 16 and meta["spec"]["n_events"] == N_EVENTS
    np.testing.assert_array_equal(
        embed_inputs(enc, images, traces, va), embed_inputs(module.encoder, images, traces, va)
    )


def test_load_checkpoint_errors(tmp_path):
    from actsort_gpu.embed.encoder import load_checkpoint

    with pytest.raises(FileNotFoundError, match="missing.pt: encoder checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not an actsort encoder checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(ValueError, match="expected an actsort encoder checkpoint"):
        load_checkpoint(other)


def test_shipped_checkpoint_loads_and_is_small():
    from actsort_gpu.embed.encoder import default_checkpoint_path, load_checkpoint

    path = default_checkpoint_path()
    assert path.is_file(), f"{path}: the pretrained checkpoint must ship with the package"
    assert path.stat().st_size < 3 * 2**20
    enc, meta = load_checkpoint()
    assert sum(p.numel() for p in enc.parameters()) < 1_000_000
    info = meta["training"]
    for key in ("seed", "seconds_total", "n_candidates", "stores", "description"):
        assert key in info


# ---------------------------------------------------------------- stores, embed(), CLI
def test_embed_store_writes_matrix_and_matches_in_memory(tmp_path):
    from actsort_gpu.embed.encoder import CandidateEncoder, load_checkpoint, save_checkpoint
    from actsort_gpu.embed.infer import embed, embed_inputs
    from actsort_gpu.embed.inputs import store_inputs
    from actsort_gpu.store import SortStore

    store = _fake_store(tmp_path / "s.actsort", n=30)
    torch.manual_seed(0)
    ckpt = tmp_path / "enc.pt"
    save_checkpoint(ckpt, CandidateEncoder(8, 4).eval(), image_size=16)
    emb = embed(store.path, ckpt, device="cpu", batch_size=7)  # several blocks
    assert emb.shape == (30, 8) and emb.dtype == np.float32 and np.isfinite(emb).all()
    s = SortStore.open(store.path)
    arr = s.array(schema.EMBEDDING_MATRIX)
    _, meta = load_checkpoint(ckpt)
    assert arr.attrs["encoder_id"] == meta["encoder_id"]
    assert arr.attrs["checkpoint"] == str(ckpt)
    assert arr.attrs["dims"] == ["candidates", "embedding"]
    assert s.stage_status("embed") == "complete"
    np.testing.assert_array_equal(s.embedding_matrix().values, emb)
    enc, _ = load_checkpoint(ckpt)
    im, tr, va = store_inputs(s, slice(None), 16)
    np.testing.assert_allclose(embed_inputs(enc, im, tr, va), emb, rtol=1e-5, atol=1e-6)


def test_embed_errors(tmp_path):
    from actsort_gpu.embed.infer import embed
    from actsort_gpu.embed.inputs import store_inputs
    from actsort_gpu.store import SortStore, StoreError

    s = SortStore.create(tmp_path / "bare.actsort")
    s.update_attrs(n_candidates=1, n_frames=10, height=8, width=8)
    with pytest.raises(StoreError, match="stage 'preprocess' has not been run"):
        embed(s.path, device="cpu")
    store = _fake_store(tmp_path / "s.actsort", n=4)
    with pytest.raises(ValueError, match="batch_size: expected >= 1"):
        embed(store.path, device="cpu", batch_size=0)
    with pytest.raises(ValueError, match="11 frames per event, the encoder was trained on 7"):
        store_inputs(store, slice(None), 16, event_frames=7)


@pytest.mark.filterwarnings("error::FutureWarning")  # none reaches the user
def test_train_encoder_across_stores_and_cli(tmp_path, capsys):
    from actsort_gpu.cli import main
    from actsort_gpu.embed.encoder import load_checkpoint
    from actsort_gpu.store import SortStore

    a = _fake_store(tmp_path / "a.actsort", n=24, seed=1)
    b = _fake_store(tmp_path / "b.actsort", n=20, seed=2)
    cfg = tmp_path / "embed.yaml"
    cfg.write_text(
        "embed:\n  embedding_dim: 8\n  image_size_px: 16\n  width: 4\n  batch_size: 16\n"
    )
    out = tmp_path / "enc.pt"
    rc = main(
        [
            "embed-train",
            str(a.path),
            str(b.path),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--seed",
            "2",
            "--max-per-store",
            "16",
            "--device",
            "cpu",
            "--no-progress",
            "--config",
            str(cfg),
            "--supervised",
        ]
    )
    assert rc == 0 and "32 candidates from 2 store(s)" in capsys.readouterr().out
    _, meta = load_checkpoint(out)
    assert meta["training"]["n_candidates"] == 32 and meta["training"]["supervised"] is True
    assert meta["training"]["seed"] == 2
    rc = main(["embed", str(a.path), "--checkpoint", str(out), "--device", "cpu", "--no-progress"])
    assert rc == 0 and "24 x 8" in capsys.readouterr().out
    assert SortStore.open(a.path).shape_of(schema.EMBEDDING_MATRIX) == (24, 8)
    # the store says the encoder was trained with labels (active.embeddings_start: auto)
    assert SortStore.open(a.path).embedding_matrix().encoder_supervised is True
    # fine-tuning from that checkpoint keeps its architecture and records where it started
    tuned = tmp_path / "tuned.pt"
    rc = main(
        [
            "embed-train",
            str(b.path),
            "--out",
            str(tuned),
            "--epochs",
            "1",
            "--init",
            str(out),
            "--supervised",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    enc2, meta2 = load_checkpoint(tuned)
    assert meta2["training"]["init_encoder_id"] == meta["encoder_id"]
    assert enc2.embedding_dim == 8 and meta2["spec"]["image_size"] == 16
    # a bad checkpoint path is one readable line and exit code 1
    rc = main(
        [
            "embed",
            str(a.path),
            "--checkpoint",
            str(tmp_path / "nope.pt"),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert rc == 1 and "encoder checkpoint not found" in capsys.readouterr().err


def test_supervised_without_labels_is_refused(tmp_path):
    from actsort_gpu.embed.train import train_encoder
    from actsort_gpu.store import SortStore

    store = _fake_store(tmp_path / "a.actsort", n=12)
    SortStore.open(store.path, "r+").delete(schema.TRUTH_LABELS)
    with pytest.raises(ValueError, match="--supervised needs labels"):
        train_encoder(
            [store.path], tmp_path / "x.pt", config=_tiny_config(), supervised=True, device="cpu"
        )
    with pytest.raises(ValueError, match="store_paths: expected at least one"):
        train_encoder([], tmp_path / "x.pt", config=_tiny_config(), device="cpu")


def test_checkpoint_records_the_store_names_it_is_given(tmp_path):
    """scripts/train_encoder.py names the stores relative to its work folder, so the shipped
    checkpoint carries no path of the machine that trained it."""
    from actsort_gpu.embed.encoder import load_checkpoint
    from actsort_gpu.embed.train import train_encoder

    store = _fake_store(tmp_path / "a.actsort", n=12)
    cfg = _tiny_config(max_epochs=1)
    meta = train_encoder(
        [store.path], tmp_path / "x.pt", config=cfg, device="cpu", recorded_stores=["a.actsort"]
    )
    assert meta["training"]["stores"] == ["a.actsort"]
    assert load_checkpoint(tmp_path / "x.pt")[1]["training"]["stores"] == ["a.actsort"]
    shipped = load_checkpoint()[1]["training"]["stores"]
    assert shipped and not any(Path(s).is_absolute() for s in shipped)


def test_store_labels_prefers_the_journal(tmp_path):
    from actsort_gpu.embed.data import store_labels
    from actsort_gpu.labels import Journal
    from actsort_gpu.store import SortStore

    store = _fake_store(tmp_path / "a.actsort", n=6)
    np.testing.assert_array_equal(store_labels(store), [1, -1, 1, -1, 1, -1])  # truth/labels
    j = Journal(store.journal_path)
    j.append("a", 2, -1, "ana")
    j.append("a", 4, 1, "ana")
    j.append("a", 4, 0, "ana")  # unlabelled again
    j.append("a", 5, 1, "ana")
    expected = [0, 0, -1, 0, 0, 1]
    np.testing.assert_array_equal(store_labels(SortStore.open(store.path)), expected)
    j.append("a", 9, 1, "ana")
    with pytest.raises(ValueError, match="label for candidate 9, but the store has 6"):
        store_labels(SortStore.open(store.path))


def test_inputs_invariant_to_affine_units_and_store_codes_match_dequantised(tmp_path):
    from actsort_gpu.embed.inputs import store_inputs
    from actsort_gpu.store import SortStore

    rng = np.random.default_rng(4)
    snaps, fps, tr, va = _toy_candidates(5, rng)
    a, _ = candidate_inputs(snaps, fps, tr, va, 12)
    b, _ = candidate_inputs([7.0 + 3.5 * s for s in snaps], fps, tr, va, 12)
    np.testing.assert_allclose(a, b, atol=1e-5)

    store = SortStore.open(_fake_store(tmp_path / "s.actsort", n=9).path)
    images, traces, valid = store_inputs(store, slice(2, 9), 16)
    st = store.snapshot_traces(slice(2, 9))
    v = store.events(slice(2, 9)) >= 0
    fps = crop_footprints(store.footprints(slice(2, 9)), store.crops(slice(2, 9)), store.width)
    med, sd = robust_trace_stats(store.traces(slice(2, 9)))
    im2, tr2 = candidate_inputs(
        store.snapshots_block(slice(2, 9)), fps, st, v, 16, trace_center=med, trace_scale=sd
    )
    np.testing.assert_allclose(images, im2, atol=1e-4)
    np.testing.assert_array_equal(traces, tr2)
    np.testing.assert_array_equal(valid, v)
    sub = store_inputs(store, slice(2, 9), 16, keep=np.array([0, 3]))
    for got, full in zip(sub, (images, traces, valid)):
        np.testing.assert_array_equal(got, full[[0, 3]])


# ---------------------------------------------------------------- parity with plain references
def _reference_event_summaries(snapshots, valid):
    """event_summaries written plainly (np.median / np.max / np.mean over frames per event)."""
    valid = np.asarray(valid, bool)[: snapshots.shape[0]]
    h, w = snapshots.shape[2:]
    if not valid.any():
        return np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    ev = snapshots[np.flatnonzero(valid)].astype(np.float32)
    top = ev.max(axis=1)
    per_event = 0.5 * top + 0.3 * np.median(ev, axis=1) + 0.2 * ev.mean(axis=1)
    return per_event.mean(axis=0), top.max(axis=0)


def _reference_square_resize(images, size):
    """square_resize as first written: np.pad (edge) + scipy map_coordinates per channel."""
    from scipy import ndimage

    c, h, w = images.shape
    if h == 0 or w == 0:
        return np.zeros((c, size, size), np.float32)
    side = max(h, w)
    ph, pw = side - h, side - w
    images = np.pad(images, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), "edge")
    src = np.clip((np.arange(size) + 0.5) * (side / size) - 0.5, 0, side - 1)
    rr, cc = np.meshgrid(src, src, indexing="ij")
    return np.stack(
        [
            ndimage.map_coordinates(im.astype(np.float32), [rr, cc], order=1, mode="nearest")
            for im in images
        ]
    )


def _ragged_candidates(rng, n, dtype=np.float32):
    """Random candidates with ragged crops: clipped (non-square, down to 1 px wide), square,
    exactly 16 px (the output size), larger and smaller than it; some without valid events,
    one with fewer snapshot events than valid flags."""
    shapes = [(16, 16), (16, 9), (5, 16), (1, 7), (30, 22), (40, 40), (7, 7), (3, 1), (17, 16)]
    snaps, fps = [], []
    valid = rng.random((n, N_EVENTS)) < 0.7
    valid[::5] = False
    for i in range(n):
        h, w = shapes[i % len(shapes)]
        n_ev = N_EVENTS - 1 if i == 3 else N_EVENTS
        if dtype == np.uint8:
            block = rng.integers(0, 256, (n_ev, EVENT_FRAMES, h, w)).astype(np.uint8)
        else:
            block = rng.normal(0, 1, (n_ev, EVENT_FRAMES, h, w)).astype(dtype)
        snaps.append(block)
        fps.append(rng.random((h, w)).astype(np.float32))
    return snaps, fps, valid


@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.float64])
def test_block_event_summaries_match_reference(dtype, monkeypatch):
    import actsort_gpu.embed.inputs as inputs_mod
    from actsort_gpu.embed.inputs import block_event_summaries

    monkeypatch.setattr(inputs_mod, "_BATCH_BYTES", 4096)  # many batches, one per big crop
    rng = np.random.default_rng(1)
    snaps, _, valid = _ragged_candidates(rng, 23, dtype)
    means, maxes = block_event_summaries(snaps, valid)
    for i, s in enumerate(snaps):
        ref_mean, ref_max = _reference_event_summaries(s, valid[i])
        assert means[i].dtype == np.float32 and means[i].shape == s.shape[2:]
        np.testing.assert_allclose(means[i], ref_mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(maxes[i], ref_max)
        one_mean, one_max = event_summaries(s, valid[i])
        np.testing.assert_array_equal(one_mean, means[i])
        np.testing.assert_array_equal(one_max, maxes[i])
    # an even number of frames: the median averages the two middle frames
    even = [rng.normal(0, 1, (2, 4, 3, 5)).astype(np.float32)]
    got = block_event_summaries(even, np.ones((1, 2), bool))
    for a, b in zip(got, _reference_event_summaries(even[0], np.ones(2, bool))):
        np.testing.assert_allclose(a[0], b, rtol=1e-6, atol=1e-6)


def test_square_resize_matches_map_coordinates():
    rng = np.random.default_rng(2)
    for h, w in [(16, 16), (16, 9), (5, 16), (1, 7), (7, 1), (1, 1), (30, 22), (40, 40), (17, 3)]:
        img = rng.normal(0, 1, (3, h, w)).astype(np.float32)
        got = square_resize(img, 16)
        assert got.shape == (3, 16, 16) and got.dtype == np.float32
        np.testing.assert_allclose(got, _reference_square_resize(img, 16), rtol=1e-6, atol=1e-6)
        # a constant image stays exactly constant (a flat channel must normalise to zeros)
        assert np.ptp(square_resize(np.full((1, h, w), 0.3, np.float32), 16)) == 0
    assert not square_resize(np.zeros((3, 0, 5), np.float32), 8).any()


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_candidate_inputs_match_reference(dtype):
    rng = np.random.default_rng(3)
    snaps, fps, valid = _ragged_candidates(rng, 19, dtype)
    valid[3, -1] = False  # candidate 3 has one snapshot event less
    traces = rng.normal(0, 1, (19, N_EVENTS, EVENT_FRAMES)).astype(np.float32)
    images, tr = candidate_inputs(snaps, fps, traces, valid, 16)
    ref = np.stack(
        [
            _reference_square_resize(np.stack([fp, *_reference_event_summaries(s, v)]), 16)
            for s, fp, v in zip(snaps, fps, valid)
        ]
    )
    np.testing.assert_allclose(images, percentile_normalise(ref), atol=1e-5)
    assert not images[::5, 1:].any()  # no valid event: empty summary channels


def test_snapshot_codes_block_matches_decoded_codes(tmp_path):
    from actsort_gpu.store import SortStore

    store = _fake_store(tmp_path / "s.actsort", n=12, events_missing=True)
    frames = store.snapshot_frames()
    events = store.events()
    k = int(np.flatnonzero(events[:, 0] >= 0)[0])
    frames[k, 0, :3] = -1  # an event at the start of the movie: frames outside it
    store.write_array(schema.SNAPSHOTS_FRAMES, frames)
    scale = store.read(schema.SNAPSHOTS_SCALE)
    scale[k + 1] = scale[k + 1, 0]  # a constant candidate
    store.write_array(schema.SNAPSHOTS_SCALE, scale)
    store = SortStore.open(store.path)
    codes = store.snapshot_codes_block(slice(2, 12))
    decoded = store.snapshots_block(slice(2, 12), dequantise=False)
    for j, (c, d) in enumerate(zip(codes, decoded)):
        exists = events[2 + j] >= 0
        assert c.shape == d.shape
        np.testing.assert_array_equal(c[exists].astype(np.float32), d[exists])
        decode = 2 + j == k or scale[2 + j, 1] <= scale[2 + j, 0]  # outside the movie; constant
        assert c.dtype == (np.float32 if decode else np.uint8)


def test_crop_footprints_matches_a_per_candidate_loop():
    rng = np.random.default_rng(5)
    height, width, n = 30, 40, 25
    dense = (rng.random((n, height * width)) < 0.05) * rng.random((n, height * width))
    fp = sp.csr_matrix(dense.astype(np.float32))
    r0, c0 = rng.integers(-3, height, n), rng.integers(-3, width, n)
    crops = np.stack([r0, r0 + rng.integers(0, 12, n), c0, c0 + rng.integers(0, 12, n)], 1)
    crops[3] = (5, 2, 4, 9)  # an empty (inverted) window
    got = crop_footprints(fp, crops, width)
    for k in range(n):
        a, b, c, d = crops[k]
        ref = np.zeros((max(b - a, 0), max(d - c, 0)), np.float32)
        img = dense[k].reshape(height, width)
        rows, cols = np.arange(a, b), np.arange(c, d)
        ok_r, ok_c = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
        ref[np.ix_(ok_r, ok_c)] = img[np.ix_(rows[ok_r], cols[ok_c])]
        assert got[k].dtype == np.float32
        np.testing.assert_array_equal(got[k], ref)


def test_embed_inputs_match_the_plain_encoder():
    from actsort_gpu.embed.encoder import CandidateEncoder
    from actsort_gpu.embed.infer import embed_inputs

    images, traces, va, _ = _toy_arrays(40)
    torch.manual_seed(0)
    enc = CandidateEncoder(8, 4)
    for m in enc.modules():  # non-trivial batch-norm statistics to fold
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    enc.eval()
    with torch.inference_mode():
        plain = enc(torch.as_tensor(images), torch.as_tensor(traces), torch.as_tensor(va)).numpy()
    got = embed_inputs(enc, images, traces, va, batch_size=16)
    np.testing.assert_allclose(got, plain, rtol=1e-5, atol=1e-5 * np.abs(plain).max())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules())  # caller's untouched


def test_sorting_network_sorts_every_length():
    from actsort_gpu.embed.inputs import _sorted_frames

    rng = np.random.default_rng(0)
    for n in range(1, 18):
        x = rng.integers(0, 50, (2, n, 3, 4)).astype(np.uint8)  # ties included
        np.testing.assert_array_equal(np.stack(_sorted_frames(x), 1), np.sort(x, axis=1))


def test_torch_device_choice(caplog):
    from actsort_gpu.embed.infer import torch_device

    assert torch_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        torch_device("tpu")
    if not torch.cuda.is_available():
        from actsort_gpu.backend import DeviceError

        assert torch_device("auto") == "cpu"
        # issue 12: an explicit "cuda" torch cannot honour is an error naming why, no longer
        # a CPU run with a warning
        with pytest.raises(DeviceError, match="--device cuda: cannot run torch models"):
            torch_device("cuda")


@pytest.mark.gpu
def test_embed_gpu_matches_cpu():
    from actsort_gpu.embed.encoder import CandidateEncoder
    from actsort_gpu.embed.infer import embed_inputs

    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    images, traces, va, _ = _toy_arrays(40)
    torch.manual_seed(0)
    enc = CandidateEncoder(8, 4).eval()
    cpu = embed_inputs(enc, images, traces, va, device="cpu")
    gpu = embed_inputs(enc, images, traces, va, device="cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
def test_encoder_trains_on_the_gpu(tmp_path):
    """Lightning on the GPU (supervised, so the label head runs too), then the saved checkpoint
    embeds the same on either device."""
    from actsort_gpu.embed.encoder import load_checkpoint, save_checkpoint
    from actsort_gpu.embed.infer import embed_inputs

    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    module, (images, traces, va, _) = _fit_arrays(seed=3, supervised=True, device="cuda")
    assert module.global_step > 0
    assert all(torch.isfinite(p).all() for p in module.encoder.parameters())
    save_checkpoint(tmp_path / "enc.pt", module.encoder, image_size=16)
    enc, _ = load_checkpoint(tmp_path / "enc.pt")
    cpu = embed_inputs(enc, images, traces, va, device="cpu")
    gpu = embed_inputs(enc, images, traces, va, device="cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-4)


def test_embed_adapt_fine_tunes_the_encoder_on_the_store_and_embeds_with_it(tmp_path, capsys):
    """``actsort embed S --adapt``: a self-supervised fine-tune of the given encoder on S's own
    candidates, bounded in time, saved beside the store, then used for embeddings/."""
    from actsort_gpu.cli import main
    from actsort_gpu.cli.cmd_embed import adapted_checkpoint_path
    from actsort_gpu.embed.encoder import load_checkpoint
    from actsort_gpu.store import SortStore

    a = _fake_store(tmp_path / "a.actsort", n=24, seed=1)
    cfg = tmp_path / "embed.yaml"
    cfg.write_text(
        "embed:\n  embedding_dim: 8\n  image_size_px: 16\n  width: 4\n  batch_size: 16\n"
        "  adapt_max_candidates: 20\n  adapt_seconds: 3\n"
    )
    base = tmp_path / "base.pt"
    args = ["--config", str(cfg), "--device", "cpu"]
    assert main(["embed-train", str(a.path), "--out", str(base), "--epochs", "1", *args]) == 0
    capsys.readouterr()
    rc = main(["embed", str(a.path), "--checkpoint", str(base), "--adapt", *args])
    rc_seconds = main(["embed", str(a.path), "--adapt", "--adapt-seconds", "0", *args])
    assert rc == 0 and rc_seconds == 1
    out = capsys.readouterr()
    assert "--adapt-seconds: expected > 0" in out.err
    adapted = adapted_checkpoint_path(a.path)
    assert adapted == tmp_path / "a.encoder.pt" and adapted.is_file()
    _, meta = load_checkpoint(adapted)
    _, base_meta = load_checkpoint(base)
    info = meta["training"]
    assert info["init_encoder_id"] == base_meta["encoder_id"] != meta["encoder_id"]
    assert info["n_candidates"] == 20 and info["steps"] >= 1 and info["supervised"] is False
    attrs = SortStore.open(a.path).attrs_of("embeddings/matrix")
    assert attrs["encoder_id"] == meta["encoder_id"]
    assert f"adapted encoder {meta['encoder_id']}" in out.out
