"""Labelled sort stores from synthetic recordings, for training the shipped encoder and for
benchmarks (scripts/train_encoder.py, scripts/eval_embeddings.py). Not used by the pipeline.

``training_recording_config(seed)`` draws a varied recording; ``actsort_gpu.demo.synthetic_store``
carries it through synth -> ingest -> truth -> preprocess.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RECORDING_KINDS", "training_recording_config"]


RECORDING_KINDS = ("2p", "1p", "2p_fragments")


def training_recording_config(
    seed: int, *, size_px: int = 384, n_frames: int = 1200, kind: str = "2p"
):
    """A varied synthetic recording for encoder training or evaluation, drawn from ``seed`` so
    that the encoder sees several "animals".

    kind "2p": two-photon-like somata (6-20 px) on a dim background; frame rate, soma size,
    brightness, noise and motion drawn from the seed (the recordings of the first shipped
    encoder). kind "2p_fragments": the "2p" configuration of the same seed (the same cells,
    optics and noise) with 30-60 % of its false positives small active neurite fragments,
    the commonest false positive of Suite2p on two-photon data. kind "1p": one-photon-like
    (miniscope) large cells (14-34 px) on a strong, slowly modulated background and neuropil,
    lower contrast, more bleaching, densities and false-positive mixes drawn from the seed
    (never fragments).
    """
    from ..synth import FP_KINDS, SynthConfig

    # 1p mixes draw every kind before "fragment", so their seeds give what they gave before it
    assert FP_KINDS[-1] == "fragment"

    if kind not in RECORDING_KINDS:
        raise ValueError(f"kind must be one of {RECORDING_KINDS}, got {kind!r}")
    rng = np.random.default_rng(seed)
    if kind in ("2p", "2p_fragments"):
        d_lo = float(rng.uniform(6, 10))
        n_cells = int(size_px * size_px / 256 / 256 * 150 * rng.uniform(1.0, 1.6))
        cfg = SynthConfig(
            seed=seed,
            n_frames=n_frames,
            height=size_px,
            width=size_px,
            fs_hz=float(rng.choice([7.5, 10.0, 15.0, 20.0, 30.0])),
            n_cells=n_cells,
            n_false_positives=int(n_cells * rng.uniform(0.7, 1.3)),
            diameter_px=(d_lo, d_lo + float(rng.uniform(4, 10))),
            brightness_counts=(float(rng.uniform(30, 80)), float(rng.uniform(120, 300))),
            read_noise_counts=float(rng.uniform(3, 12)),
            motion_px=float(rng.choice([0.0, 1.0, 2.0])),
        )
        if kind == "2p":
            return cfg
        return cfg.with_fragment_share(float(rng.uniform(0.3, 0.6)))  # after the "2p" draws
    d_lo = float(rng.uniform(14, 20))
    area = size_px * size_px / 256 / 256
    n_cells = int(area * 60 * rng.uniform(0.6, 1.6))
    return SynthConfig(
        seed=seed,
        n_frames=n_frames,
        height=size_px,
        width=size_px,
        fs_hz=float(rng.choice([10.0, 15.0, 20.0, 30.0])),
        n_cells=n_cells,
        n_false_positives=int(n_cells * rng.uniform(0.6, 1.4)),
        fp_fractions=(*rng.dirichlet(np.full(len(FP_KINDS) - 1, 2.0)).tolist(), 0.0),
        diameter_px=(d_lo, d_lo + float(rng.uniform(6, 14))),
        nucleus_fraction=0.0,
        brightness_counts=(float(rng.uniform(20, 50)), float(rng.uniform(60, 140))),
        amplitude_dff=(float(rng.uniform(0.2, 0.5)), float(rng.uniform(0.8, 1.5))),
        background_counts=float(rng.uniform(400, 1200)),
        neuropil_counts=float(rng.uniform(150, 400)),
        neuropil_modulation=float(rng.uniform(0.3, 0.6)),
        n_neuropil_patches=16,
        read_noise_counts=float(rng.uniform(4, 15)),
        bleach_fraction=float(rng.uniform(0.1, 0.4)),
        motion_px=float(rng.choice([0.0, 1.0, 2.0])),
    )
