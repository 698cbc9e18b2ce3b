"""Labelled sort stores from synthetic recordings, for training the shipped encoder and for
benchmarks (scripts/train_encoder.py, scripts/eval_embeddings.py). Not used by the pipeline.

``training_recording_config(seed)`` draws a varied recording; ``actsort_gpu.demo.synthetic_store``
carries it through synth -> ingest -> truth -> preprocess.
"""

from __future__ import annotations

import numpy as np

__all__ = ["training_recording_config"]


def training_recording_config(seed: int, *, size_px: int = 384, n_frames: int = 1200):
    """A varied synthetic recording for encoder training: frame rate, soma size, brightness,
    noise and motion are drawn from ``seed`` so that the encoder sees several "animals"."""
    from ..synth import SynthConfig

    rng = np.random.default_rng(seed)
    d_lo = float(rng.uniform(6, 10))
    n_cells = int(size_px * size_px / 256 / 256 * 150 * rng.uniform(1.0, 1.6))
    return SynthConfig(
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
