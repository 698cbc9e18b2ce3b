"""Learned embeddings of candidates (images + event traces) for the active learner.

``embed(store_path, checkpoint=None)`` writes ``embeddings/matrix``; ``train_encoder(stores,
out)`` trains an encoder self-supervised across stores. Torch and lightning are imported only
when these are called (``import actsort_gpu.embed`` stays cheap).
"""

from __future__ import annotations

from .inputs import CHANNELS, candidate_inputs

__all__ = [
    "embed",
    "train_encoder",
    "load_checkpoint",
    "candidate_inputs",
    "CHANNELS",
    "default_checkpoint_path",
]


def embed(*args, **kwargs):
    """See :func:`actsort_gpu.embed.infer.embed`."""
    from .infer import embed as _embed

    return _embed(*args, **kwargs)


def train_encoder(*args, **kwargs):
    """See :func:`actsort_gpu.embed.train.train_encoder`."""
    from .train import train_encoder as _train

    return _train(*args, **kwargs)


def load_checkpoint(*args, **kwargs):
    """See :func:`actsort_gpu.embed.encoder.load_checkpoint`."""
    from .encoder import load_checkpoint as _load

    return _load(*args, **kwargs)


def default_checkpoint_path():
    """See :func:`actsort_gpu.embed.encoder.default_checkpoint_path`."""
    from .encoder import default_checkpoint_path as _path

    return _path()
