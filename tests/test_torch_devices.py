"""Torch work names its device, checked two ways by one set of tests (fixture ``rerun``):

- ``guard`` (CPU CI): the learner, the simulator and the encoder run on the CPU with torch's
  default device set to ``meta``, so a tensor created without ``device=`` (on the host by
  default, where a CUDA run would mix devices or copy every time) lands on ``meta`` and fails
  the first operation that meets the session's CPU tensors. The run must equal the plain one
  bit for bit. The CuPy stand-in (``fake_cupy``) cannot model torch; this is its torch half.
- ``cuda`` (``pytest -m gpu``, run by ``scripts/gpu_check.py``): the same work on the GPU,
  compared with the CPU within float32 tolerances.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actsort_gpu import CELL, NOT_CELL
from actsort_gpu.active.engine import Policy
from actsort_gpu.active.learner import DatasetInput, Learner
from actsort_gpu.active.simulate import simulate
from actsort_gpu.active.sources import LabelledFeatures
from actsort_gpu.active.transfer import (
    domain_auc,
    load_classifier,
    save_classifier,
    train_classifier,
)
from actsort_gpu.backend import DeviceError

NAMES = [f"f{i}" for i in range(6)]


def _data(n: int, seed: int, shift: float = 0.0):
    """(n, 6) float32 features, the first three carrying the class, and (n,) int8 +1 / -1."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.35, CELL, NOT_CELL).astype(np.int8)
    x = rng.normal(size=(n, 6)) + 1.2 * y[:, None] * (np.arange(6) < 3) + shift
    return x.astype(np.float32), y


@pytest.fixture(params=["guard", pytest.param("cuda", marks=pytest.mark.gpu)])
def rerun(request):
    """How a test reruns torch work away from the plain CPU run (see the module docstring)."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    return request.param


def _rerun(mode: str, fn, *args, **kwargs):
    """``fn(..., device=...)`` under the guard on the CPU, or on the GPU."""
    if mode == "guard":
        return _guarded(fn, *args, device="cpu", **kwargs)
    return fn(*args, device="cuda", **kwargs)


def _guarded(fn, *args, **kwargs):
    """``fn(...)`` with torch's default device set to ``meta`` (restored afterwards)."""
    before = torch.get_default_device()
    torch.set_default_device("meta")
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_default_device(before)


def test_the_guard_catches_a_tensor_created_without_a_device():
    """The check can fail: the pattern it exists for raises under it and runs without it."""
    data = torch.ones(4, device="cpu")

    def careless():
        return data * torch.arange(4)  # torch.arange on the default device

    assert careless().tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises((RuntimeError, NotImplementedError)):
        _guarded(careless)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A portable classifier trained on another recording (80 labels)."""
    x, y = _data(300, 1, shift=-0.2)
    src = Learner([DatasetInput("src", x, NAMES, "v1")], Policy(), device="cpu")
    for i in range(80):
        src.label(i, int(y[i]))
    path = save_classifier(tmp_path_factory.mktemp("clf") / "clf", src)
    src.close()
    return load_classifier(path)


def _session(journal, transfer, pretrained=None, embeddings=None, device="cpu"):
    """A page-like session: 60 labels in a fixed order (a query asked before each, so that a
    GPU run cannot drift from the CPU's labels by a near-tie), undo/redo, a batch label,
    strategy and threshold changes, audits, explanations. Returns what the page shows, as host
    arrays."""
    x, y = _data(400, 2, shift=0.3)
    ds = DatasetInput("new", x, NAMES, "v1", journal)
    if embeddings is not None:
        ds.embeddings = embeddings
    lrn = Learner([ds], Policy(transfer=transfer), device=device, pretrained=pretrained)
    try:
        queried = []
        for i in np.random.default_rng(4).permutation(len(y))[:60]:
            queried.append(lrn.next_query()[0])
            lrn.label(int(i), int(y[i]))
        lrn.undo()
        lrn.redo()
        lrn.label_many([int(j) for j in np.flatnonzero(lrn.labels == 0)[:3]], CELL)
        queried += lrn.next_query(5)
        lrn.set_strategy("cal")
        queried += lrn.next_query(5)
        lrn.set_threshold(0.6)
        return {
            "queried": np.array(queried),
            "proba": lrn.probabilities(),
            "decisions": lrn.decisions(),
            "audits": [lrn.audit(m) for m in ("cells", "non-cells", "uncertain")],
            "contrib": np.array([c[1:] for c in lrn.contributions(5)]),
            "weights": lrn.weights(),
            "status": (lrn.inputs_status(), lrn.transfer_status()),
        }
    finally:
        lrn.close()


def _assert_same(a: dict, b: dict, mode: str):
    """Bit for bit under the guard; on the GPU, the classifier within float32 tolerances and
    the decisions and queries (argmax over near-ties) nearly all the same."""
    if mode == "cuda":
        np.testing.assert_allclose(b["proba"], a["proba"], atol=1e-3)
        np.testing.assert_allclose(b["weights"], a["weights"], atol=1e-3)
        assert (b["decisions"] == a["decisions"]).mean() >= 0.99
        assert (b["queried"] == a["queried"]).mean() >= 0.8
        return
    assert a.keys() == b.keys()
    for k in a:
        if k == "status":
            assert repr(a[k]) == repr(b[k])  # NaN scores compare by text
        elif k == "audits":
            for u, v in zip(a[k], b[k], strict=True):
                np.testing.assert_array_equal(u, v)
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("transfer", ["select", "union", "discard", "classifier"])
def test_learner_session_with_a_pretrained_classifier(tmp_path, classifier, transfer, rerun):
    plain = _session(tmp_path / "plain.jsonl", transfer, classifier)
    again = _rerun(rerun, _session, tmp_path / "again.jsonl", transfer, classifier)
    _assert_same(plain, again, rerun)


def test_learner_session_with_embeddings(tmp_path, rerun):
    _, y = _data(400, 2, shift=0.3)
    emb = np.random.default_rng(5).normal(size=(400, 8)).astype(np.float32) + 0.5 * y[:, None]
    plain = _session(tmp_path / "plain.jsonl", "select", embeddings=emb)
    again = _rerun(rerun, _session, tmp_path / "again.jsonl", "select", embeddings=emb)
    _assert_same(plain, again, rerun)


def test_simulator_strategies(classifier, rerun):
    """Every query strategy, lambda by CV, self-training, embeddings and the transfer modes
    under the guard; on the GPU the first two of each group (``gpu_check`` gives its tests 150
    s), and since the queries may part from the CPU's at a near-tie, the scores are compared
    loosely."""
    x, y = _data(500, 3, shift=0.3)
    emb = np.random.default_rng(6).normal(size=(500, 8)).astype(np.float32) + 0.4 * y[:, None]
    runs = [
        (["dcal", "default+pseudo0.2", "random", "cal", "dal", "faithful-dcal"], {}),
        (["default"], {"embeddings": emb}),
        (["default", "dcal+discard", "default+union"], {"classifier": classifier}),
    ]
    for strategies, extra in runs:
        strategies = strategies if rerun == "guard" else strategies[:2]
        kw = dict(repeats=1, seed=0, feature_names=NAMES, feature_version="v1", **extra)
        args = (x, y[None], ["truth"], strategies, [2, 15])
        plain = simulate(*args, device="cpu", **kw)
        again = _rerun(rerun, simulate, *args, **kw)
        if rerun == "guard":
            assert again["results"] == plain["results"], strategies
            continue
        for name in strategies:
            ba = [np.asarray(r[name]["ba"]) for r in (plain["results"], again["results"])]
            assert np.abs(ba[0] - ba[1]).max() <= 0.05, (name, ba)


def test_training_a_portable_classifier_names_its_device(tmp_path):
    """``actsort train``'s fit and the domain check beside it (host work by design)."""
    sources = [
        LabelledFeatures(name, tmp_path / name, x, NAMES, "v1", y[None], ["truth"])
        for name, (x, y) in (("a", _data(200, 7)), ("b", _data(150, 8, shift=0.5)))
    ]
    plain, _ = train_classifier(sources)
    guarded, _ = _guarded(train_classifier, sources)
    np.testing.assert_array_equal(plain.weights, guarded.weights)
    auc = domain_auc(sources[0].features, sources[1].features)
    assert _guarded(domain_auc, sources[0].features, sources[1].features) == auc


@pytest.mark.filterwarnings("ignore:You are trying to `self.log()`")
def test_encoder_training_step_and_inference(rerun):
    """One supervised training step (augmentations, NT-Xent, the label head) and inference.
    On the GPU the augmentations draw from CUDA's generator, so the step's loss is checked for
    being finite with every gradient on the device; inference is compared with the CPU."""
    from actsort_gpu.embed.infer import embed_inputs
    from actsort_gpu.embed.model import EmbedModule

    rng = np.random.default_rng(0)
    b, n_events, frames = 16, 5, 11
    images = rng.normal(size=(b, 3, 24, 24)).astype(np.float32)
    traces = rng.normal(size=(b, n_events * frames)).astype(np.float32)
    valid = rng.random((b, n_events)) < 0.8
    valid[:, 0] = True
    labels = np.where(rng.random(b) < 0.5, CELL, NOT_CELL).astype(np.int8)
    labels[:3] = 0
    batch = [torch.from_numpy(a) for a in (images, traces, valid, labels)]

    def module():  # built on the host, as Lightning builds it before moving it to the device
        torch.manual_seed(0)
        return EmbedModule(n_events=n_events, event_frames=frames, supervised_weight=0.5)

    plain, again = module(), module()
    loss = plain.training_step(batch, 0)
    z = embed_inputs(plain.encoder, images, traces, valid, device="cpu")
    if rerun == "guard":
        assert float(_guarded(again.training_step, batch, 0).detach()) == float(loss.detach())
        z_again = _guarded(embed_inputs, plain.encoder, images, traces, valid, device="cpu")
        np.testing.assert_array_equal(z_again, z)
        return
    again = again.to("cuda")
    loss_gpu = again.training_step([t.to("cuda") for t in batch], 0)
    loss_gpu.backward()
    assert torch.isfinite(loss_gpu)
    assert all(p.grad is not None and p.grad.is_cuda for p in again.encoder.parameters())
    z_gpu = embed_inputs(plain.encoder, images, traces, valid, device="cuda")
    np.testing.assert_allclose(z_gpu, z, rtol=1e-3, atol=1e-4)


def test_encoder_training_refuses_cuda_it_cannot_honour(monkeypatch):
    """``fit_module(device="cuda")`` without torch's CUDA used to train on the CPU silently."""
    from actsort_gpu import backend
    from actsort_gpu.embed.data import EmbedDataModule
    from actsort_gpu.embed.train import fit_module

    monkeypatch.setattr(backend, "torch_cuda_unavailable_reason", lambda: "CPU-only torch")
    rng = np.random.default_rng(0)
    arrays = (
        rng.normal(size=(8, 3, 16, 16)).astype(np.float32),
        rng.normal(size=(8, 55)).astype(np.float32),
        np.ones((8, 5), bool),
        np.zeros(8, np.int8),
    )
    dm = EmbedDataModule(arrays=arrays, image_size=16, batch_size=4)
    with pytest.raises(DeviceError, match="torch models: CPU-only torch"):
        fit_module(dm, device="cuda")
