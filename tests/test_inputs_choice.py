"""The learner's per-session choice between the features alone and features + learned
embeddings (``active.use_embeddings: auto``), and the paired-gain statistic of the transfer
policy."""

import numpy as np
import pytest

from actsort_gpu.active.engine import (
    EMBEDDING_BLOCK_SCALE,
    INPUTS_MIN_PER_CLASS,
    Engine,
    Policy,
    paired_ba_gain,
)
from actsort_gpu.active.learner import Learner
from actsort_gpu.active.linear import zscore_columns
from actsort_gpu.labels import CELL, NOT_CELL
from actsort_gpu.store import SortStore


def _data(seed, n=500, *, emb_signal):
    """(features (n, 12) weakly informative, embeddings (n, 6), truth (n,)); the embeddings
    carry the label when ``emb_signal`` else they are pure noise."""
    rng = np.random.default_rng(seed)
    truth = np.where(rng.random(n) < 0.4, CELL, NOT_CELL).astype(np.int8)
    x = rng.normal(size=(n, 12)).astype(np.float32)
    x[:, 0] += 0.7 * (truth == CELL)
    emb = rng.normal(size=(n, 6)).astype(np.float32)
    if emb_signal:
        emb[:, :2] += 2.0 * (truth == CELL)[:, None]
    return x, emb, truth


def _store(path, x, emb, *, supervised=False):
    store = SortStore.create(path)
    store.update_attrs(n_candidates=len(x), n_frames=10, height=8, width=8)
    names = [f"f{k}" for k in range(x.shape[1])]
    store.write_array(
        "features/matrix",
        x,
        dims=["candidates", "features"],
        attrs={"names": names, "version": "test-v1"},
    )
    store.write_array(
        "embeddings/matrix",
        emb,
        dims=["candidates", "embedding"],
        attrs={"encoder_id": "enc-test", "encoder_supervised": supervised},
    )
    return path


def _sort(learner, truth, n_labels):
    for _ in range(n_labels):
        i = learner.next_query()[0]
        learner.label(i, int(truth[i]))
    learner.probabilities()


@pytest.mark.parametrize("signal, expected", [(True, True), (False, False)])
def test_learner_chooses_embeddings_only_when_they_carry_the_label(tmp_path, signal, expected):
    x, emb, truth = _data(0, emb_signal=signal)
    path = _store(tmp_path / "s.actsort", x, emb)
    learner = Learner.open([path], annotator="ana", device="cpu")  # product policy: auto
    assert not learner.uses_embeddings  # before the labels can decide: the features (auto:
    # this encoder was not trained with labels)
    assert "until each class has" in learner.inputs_status()
    _sort(learner, truth, 60)
    assert learner.uses_embeddings is expected
    status = learner.inputs_status()
    assert ("features + learned embeddings" in status) is expected
    assert "cross-validated BA on your" in status
    names = learner.feature_names
    assert (names[-1] == "emb5") is expected and names[0] == "f0"
    assert ("+emb:enc-test" in learner.feature_version) is expected
    learner.close()


def test_features_alone_when_told_and_when_the_store_has_no_embeddings(tmp_path):
    x, emb, truth = _data(1, emb_signal=True)
    path = _store(tmp_path / "s.actsort", x, emb)
    learner = Learner.open([path], Policy(inputs="features"), annotator="ana", device="cpu")
    _sort(learner, truth, 40)
    assert not learner.uses_embeddings
    assert learner.inputs_status() == "Inputs: features (use_embeddings: false)"
    learner.close()
    bare = SortStore.create(tmp_path / "bare.actsort")
    bare.update_attrs(n_candidates=len(x), n_frames=10, height=8, width=8)
    bare.write_array(
        "features/matrix",
        x,
        dims=["candidates", "features"],
        attrs={"names": [f"f{k}" for k in range(12)], "version": "test-v1"},
    )
    learner = Learner.open([tmp_path / "bare.actsort"], annotator="ana", device="cpu")
    _sort(learner, truth, 40)
    assert not learner.uses_embeddings and "no embeddings in the store" in learner.inputs_status()
    learner.close()


def test_embedding_block_is_scaled_down_and_the_choice_waits_for_both_classes():
    x, emb, truth = _data(2, emb_signal=True)
    eng = Engine(zscore_columns(x), Policy(inputs="both"), extra=zscore_columns(emb))
    assert eng.x.shape[1] == 18
    np.testing.assert_allclose(
        eng.x[:, 12:].numpy(), EMBEDDING_BLOCK_SCALE * zscore_columns(emb), rtol=1e-6
    )
    auto = Engine(zscore_columns(x), Policy(), extra=zscore_columns(emb))
    cells = np.flatnonzero(truth == CELL)[: INPUTS_MIN_PER_CLASS - 1]
    others = np.flatnonzero(truth == NOT_CELL)[:20]
    for i in [*cells, *others]:
        auto.set_label(int(i), int(truth[i]))
    auto.fit()
    assert auto.inputs_cv == {} and auto.inputs_in_use == "features"  # start "auto" unresolved
    both = Engine(zscore_columns(x), Policy(inputs_start="both"), extra=zscore_columns(emb))
    assert both.inputs_in_use == "both"
    with pytest.raises(ValueError, match="pretrained"):
        Engine(zscore_columns(x), extra=emb, pretrained=(x, truth, None))


def test_paired_ba_gain_known_answer():
    labels = [1, 1, 1, 1, -1, -1, -1, -1]
    base = list(zip([1, -1, -1, 1, -1, -1, 1, 1], labels))  # BA 0.5
    better = list(zip([1, 1, 1, 1, -1, -1, -1, 1], labels))  # BA 0.875
    gain, se = paired_ba_gain(better, base)
    # per class with the +1 / -1 pseudo-differences: cells [0,1,1,0,1,-1] -> mean 1/3,
    # non-cells [0,0,1,0,1,-1] -> mean 1/6; gain (1/3 + 1/6) / 2
    assert gain == pytest.approx(0.25)
    var_c = (4 / 6 - (1 / 3) ** 2) / 6
    var_n = (3 / 6 - (1 / 6) ** 2) / 6
    assert se == pytest.approx(np.sqrt((var_c + var_n) / 4))
    assert np.isnan(paired_ba_gain(better[:4], base[:4])[0])  # one class only
    with pytest.raises(ValueError, match="different labels"):
        paired_ba_gain(better, base[::-1])


def test_info_says_which_inputs_the_learner_uses(tmp_path, capsys):
    from actsort_gpu.cli import main

    x, emb, truth = _data(3, emb_signal=True)
    path = _store(tmp_path / "s.actsort", x, emb)
    learner = Learner.open([path], annotator="ana", device="cpu")
    _sort(learner, truth, 60)
    learner.close()
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("learner  60 human labels; Inputs: features + learned embeddings")


def test_embeddings_start_setting_decides_the_inputs_before_the_labels_can(tmp_path):
    """auto: features + embeddings from the first label when the store's encoder was trained
    with labels, else the features; both / features as told; the CV decides later whatever the
    start (noise embeddings: features)."""
    from actsort_gpu.active.engine import product_policy
    from actsort_gpu.config import ActiveConfig

    x, emb, truth = _data(3, emb_signal=False)
    cases = [("auto", True, True), ("auto", False, False), ("both", False, True)]
    cases += [("features", True, False)]
    for k, (start, supervised, uses) in enumerate(cases):
        path = _store(tmp_path / f"s{k}.actsort", x, emb, supervised=supervised)
        policy = product_policy(ActiveConfig(embeddings_start=start))
        learner = Learner.open([path], policy, annotator="ana", device="cpu")
        assert learner.uses_embeddings is uses, (start, supervised)
        _sort(learner, truth, 60)
        assert not learner.uses_embeddings
        learner.close()
    with pytest.raises(ValueError, match="inputs_start must be one of"):
        product_policy(ActiveConfig(embeddings_start="embeddings"))


def test_simulator_starts_where_the_learner_does(tmp_path):
    from actsort_gpu.active.simulate import simulate
    from actsort_gpu.active.sources import load_labelled

    x, emb, truth = _data(4, n=200, emb_signal=True)
    for supervised in (True, False):
        path = _store(tmp_path / f"{supervised}.actsort", x, emb, supervised=supervised)
        np.save(tmp_path / "y.npy", truth)
        data = load_labelled(path, labels_file=tmp_path / "y.npy")
        assert data.embeddings_supervised is supervised
        r = simulate(
            data.features,
            data.annotations,
            data.annotators,
            ["default"],
            [1],
            repeats=1,
            device="cpu",
            embeddings=data.embeddings,
            embeddings_supervised=data.embeddings_supervised,
        )
        assert r["policies"]["default"]["inputs_start"] == ("both" if supervised else "features")
